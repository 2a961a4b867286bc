//! Session history on the workspace volume: `sessions/<id>.jsonl`, append-only, fsync'd
//! before a reply is returned, and `sessions/replies.jsonl`, the answered updates.
//!
//! Read-only workspace (`workspaceAccess: ro`): the history already on the volume is read so
//! the conversation continues, but new records and replies are kept in memory only (lost on
//! restart). Refusing to talk would make a read-only profile useless; the trade is that a
//! restarted read-only agent forgets what was said since it started.
//!
//! The I/O is small synchronous writes, done under the turn lock; an fsync costs
//! milliseconds, and the runtime's other threads keep serving probes meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::session::{
    Line, Record, Replies, ReplyLine, Window, parse_session_file_name, session_file_name, session_id,
};

/// Updates remembered for deduplication; the gateway redelivers within minutes, not days.
pub const REPLIES_KEPT: usize = 1024;
const REPLIES_FILE: &str = "replies.jsonl";
/// A line longer than this is not ours (records are capped well below it): skipped.
const MAX_LINE: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session history {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("session record could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), source }
}

pub struct SessionStore {
    /// `None`: read-only workspace, nothing is written.
    dir: Option<PathBuf>,
    id: u64,
    file: Option<File>,
    replies_file: Option<File>,
    pub window: Window,
    pub replies: Replies,
}

impl SessionStore {
    /// Open the newest session in `dir` (creating the first one if writable) and load its tail.
    pub fn open(dir: &Path, writable: bool, window_cap: usize) -> Result<Self, StoreError> {
        let existing = newest_session(dir)?;
        let id = existing.unwrap_or(1);
        let mut window = Window::new(window_cap);
        let path = dir.join(session_file_name(id));
        if existing.is_some() {
            read_lines::<Line>(&path, |line| window.push(line.record))?;
        }
        let mut replies = Replies::new(REPLIES_KEPT);
        let replies_path = dir.join(REPLIES_FILE);
        let mut replies_lines = 0usize;
        if replies_path.exists() {
            read_lines::<ReplyLine>(&replies_path, |line| {
                replies_lines += 1;
                line.apply(&mut replies);
            })?;
        }
        // A crash between the session's reply record and the index line loses only the line.
        let from_session: Vec<(i64, String)> = window
            .records()
            .filter_map(|r| match r {
                Record::Reply { update_id, text } => Some((*update_id, text.clone())),
                _ => None,
            })
            .collect();
        for (update_id, text) in from_session {
            if replies.get(update_id).is_none() {
                replies.insert(update_id, text, Vec::new());
            }
        }

        if !writable {
            return Ok(Self { dir: None, id, file: None, replies_file: None, window, replies });
        }
        if replies_lines > 2 * REPLIES_KEPT {
            rewrite_replies(dir, &replies)?;
        }
        let file = open_append(&path)?;
        sync_dir(dir)?;
        let replies_file = open_append(&replies_path)?;
        Ok(Self {
            dir: Some(dir.to_path_buf()),
            id,
            file: Some(file),
            replies_file: Some(replies_file),
            window,
            replies,
        })
    }

    pub fn session_id(&self) -> String {
        session_id(self.id)
    }

    pub fn persistent(&self) -> bool {
        self.dir.is_some()
    }

    /// Write the records and fsync them, then add them to the window.
    pub fn append(&mut self, records: Vec<Record>) -> Result<(), StoreError> {
        if let (Some(file), Some(dir)) = (self.file.as_mut(), self.dir.as_ref()) {
            let at = jiff::Timestamp::now().to_string();
            let mut buf = Vec::new();
            for record in &records {
                serde_json::to_writer(&mut buf, &Line::new(record.clone(), at.clone()))?;
                buf.push(b'\n');
            }
            let path = dir.join(session_file_name(self.id));
            file.write_all(&buf).map_err(io_err(&path))?;
            file.sync_data().map_err(io_err(&path))?;
        }
        for record in records {
            self.window.push(record);
        }
        Ok(())
    }

    /// Record the turn's answer in the session and in the reply index.
    pub fn record_reply(&mut self, update_id: i64, text: &str, files: &[String]) -> Result<(), StoreError> {
        self.append(vec![Record::Reply { update_id, text: text.to_string() }])?;
        let line = ReplyLine { update_id, reply: Some(text.to_string()), files: files.to_vec(), delivered: false };
        self.append_reply_line(&line)?;
        self.replies.insert(update_id, text.to_string(), files.to_vec());
        Ok(())
    }

    /// A reminder the gateway delivered, noted in the conversation once per `key` (the
    /// gateway may tell it again after a restart). False if it was noted already.
    pub fn record_reminder(&mut self, key: &str, text: &str) -> Result<bool, StoreError> {
        let noted = self.window.records().any(|r| matches!(r, Record::Reminder { key: k, .. } if k == key));
        if noted {
            return Ok(false);
        }
        self.append(vec![Record::Reminder { key: key.to_string(), text: text.to_string() }])?;
        Ok(true)
    }

    /// The gateway sent the reply to Telegram: a redelivery of the update is not answered
    /// again. False if the update is not known here.
    pub fn record_delivered(&mut self, update_id: i64) -> Result<bool, StoreError> {
        match self.replies.get(update_id) {
            None => return Ok(false),
            Some(r) if r.delivered => return Ok(true),
            Some(_) => {}
        }
        self.append_reply_line(&ReplyLine { update_id, reply: None, files: Vec::new(), delivered: true })?;
        Ok(self.replies.mark_delivered(update_id))
    }

    fn append_reply_line(&mut self, line: &ReplyLine) -> Result<(), StoreError> {
        if let (Some(file), Some(dir)) = (self.replies_file.as_mut(), self.dir.as_ref()) {
            let mut buf = serde_json::to_vec(line)?;
            buf.push(b'\n');
            let path = dir.join(REPLIES_FILE);
            file.write_all(&buf).map_err(io_err(&path))?;
            file.sync_data().map_err(io_err(&path))?;
        }
        Ok(())
    }

    /// Start a new session; the old file stays on disk.
    pub fn reset(&mut self) -> Result<String, StoreError> {
        let next = self.id + 1;
        if let Some(dir) = self.dir.as_ref() {
            let path = dir.join(session_file_name(next));
            let file = open_append(&path)?;
            sync_dir(dir)?;
            self.file = Some(file);
        }
        self.id = next;
        self.window = Window::new(self.window.cap());
        Ok(self.session_id())
    }
}

fn newest_session(dir: &Path) -> Result<Option<u64>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut newest = None;
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        if let Some(id) = entry.file_name().to_str().and_then(parse_session_file_name) {
            newest = newest.max(Some(id));
        }
    }
    Ok(newest)
}

/// Parse each line; a line that does not parse (a write cut short by a crash) is skipped.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path, mut each: impl FnMut(T)) -> Result<(), StoreError> {
    let file = File::open(path).map_err(io_err(path))?;
    let mut reader = BufReader::new(file);
    let mut buf = Vec::new();
    let mut number = 0usize;
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        number += 1;
        if buf.len() > MAX_LINE && !buf.ends_with(b"\n") {
            // Skip the rest of an oversized line.
            let mut rest = Vec::new();
            reader.read_until(b'\n', &mut rest).map_err(io_err(path))?;
            warn!(path = %path.display(), line = number, "skipping an oversized history line");
            continue;
        }
        match serde_json::from_slice::<T>(buf.trim_ascii()) {
            Ok(value) => each(value),
            Err(e) if buf.trim_ascii().is_empty() => drop(e),
            Err(e) => warn!(path = %path.display(), line = number, error = %e, "skipping an unreadable history line"),
        }
    }
    Ok(())
}

/// Open for appending; if a crash left a partial last line, end it so the next record
/// starts on a line of its own.
fn open_append(path: &Path) -> Result<File, StoreError> {
    let mut file = OpenOptions::new().create(true).read(true).append(true).open(path).map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(io_err(path))?;
        file.read_exact(&mut last).map_err(io_err(path))?;
        if last[0] != b'\n' {
            file.write_all(b"\n").map_err(io_err(path))?;
            file.sync_data().map_err(io_err(path))?;
        }
    }
    Ok(file)
}

fn rewrite_replies(dir: &Path, replies: &Replies) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{REPLIES_FILE}.tmp"));
    let mut buf = Vec::new();
    for (update_id, reply) in replies.entries() {
        let line = ReplyLine {
            update_id,
            reply: Some(reply.text.clone()),
            files: reply.files.clone(),
            delivered: reply.delivered,
        };
        serde_json::to_writer(&mut buf, &line)?;
        buf.push(b'\n');
    }
    let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
    file.write_all(&buf).map_err(io_err(&tmp))?;
    file.sync_all().map_err(io_err(&tmp))?;
    fs::rename(&tmp, dir.join(REPLIES_FILE)).map_err(io_err(dir))?;
    sync_dir(dir)
}

/// A new file's directory entry is durable only once the directory itself is synced.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(update_id: i64, text: &str) -> Record {
        Record::User { update_id, chat_id: 1, from: 1, text: text.into(), images: vec![] }
    }

    #[test]
    fn history_and_replies_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.session_id(), "000001");
        s.append(vec![user(1, "hello")]).unwrap();
        s.record_reply(1, "hi there", &[]).unwrap();
        s.append(vec![user(2, "pending")]).unwrap();
        drop(s);

        let s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.replies.get(1).map(|r| r.text.as_str()), Some("hi there"));
        assert_eq!(s.window.turns, 2);
        assert_eq!(s.window.unanswered_update(), Some(2));
    }

    #[test]
    fn a_delivered_mark_survives_reopen_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        s.append(vec![user(1, "hello")]).unwrap();
        s.record_reply(1, "hi there", &[]).unwrap();
        s.append(vec![user(2, "again")]).unwrap();
        s.record_reply(2, "still here", &["out/report.csv".to_string()]).unwrap();
        assert!(s.record_delivered(1).unwrap());
        assert!(s.record_delivered(1).unwrap(), "idempotent");
        assert!(!s.record_delivered(99).unwrap(), "unknown update");
        drop(s);

        let s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.replies.get(1).map(|r| (r.text.as_str(), r.delivered)), Some(("hi there", true)));
        assert_eq!(
            s.replies.get(2).map(|r| r.files.as_slice()),
            Some(&["out/report.csv".to_string()][..]),
            "files kept"
        );
        assert_eq!(s.replies.get(2).map(|r| r.delivered), Some(false));
        let mut compacted = Replies::new(REPLIES_KEPT);
        s.replies.entries().for_each(|(id, r)| {
            compacted.insert(id, r.text.clone(), r.files.clone());
            if r.delivered {
                compacted.mark_delivered(id);
            }
        });
        rewrite_replies(dir.path(), &compacted).unwrap();
        drop(s);
        let s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.replies.get(1).map(|r| r.delivered), Some(true), "kept by the rewrite");
    }

    #[test]
    fn a_partial_last_line_is_skipped_and_closed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        s.append(vec![user(1, "one")]).unwrap();
        drop(s);
        let path = dir.path().join("000001.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"v\":1,\"at\":\"x\",\"type\":\"us").unwrap();
        drop(f);
        let mut s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.window.turns, 1);
        s.append(vec![user(2, "two")]).unwrap();
        drop(s);
        let s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.window.turns, 2);
    }

    #[test]
    fn a_reminder_is_noted_once_and_read_back_as_the_assistants() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        s.append(vec![user(1, "remind me")]).unwrap();
        s.record_reply(1, "done", &[]).unwrap();
        assert!(s.record_reminder("1@2026-12-04T07:00:00Z", "⏰ Reminder: call mum").unwrap());
        assert!(!s.record_reminder("1@2026-12-04T07:00:00Z", "⏰ Reminder: call mum").unwrap());
        drop(s);
        let s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        let last = s.window.messages().last().cloned();
        assert_eq!(
            last,
            Some(crate::agent::history::Message::Assistant {
                content: Some("⏰ Reminder: call mum".into()),
                tool_calls: vec![]
            })
        );
        assert_eq!(s.window.unanswered_update(), None);
    }

    #[test]
    fn reset_starts_a_new_file_and_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        s.append(vec![user(1, "old")]).unwrap();
        s.record_reply(1, "r", &[]).unwrap();
        assert_eq!(s.reset().unwrap(), "000002");
        assert!(s.window.messages().is_empty());
        assert_eq!(s.replies.get(1).map(|r| r.text.as_str()), Some("r"), "dedupe outlives a reset");
        drop(s);
        assert!(dir.path().join("000001.jsonl").exists());
        let s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.session_id(), "000002");
        assert_eq!(s.window.turns, 0);
    }

    #[test]
    fn read_only_reads_but_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        s.append(vec![user(1, "before")]).unwrap();
        drop(s);
        let before = fs::read(dir.path().join("000001.jsonl")).unwrap();
        let mut s = SessionStore::open(dir.path(), false, 10_000).unwrap();
        assert!(!s.persistent());
        assert_eq!(s.window.turns, 1);
        s.append(vec![user(2, "in memory")]).unwrap();
        s.record_reply(2, "ok", &[]).unwrap();
        assert_eq!(s.replies.get(2).map(|r| r.text.as_str()), Some("ok"));
        assert_eq!(fs::read(dir.path().join("000001.jsonl")).unwrap(), before);
        assert_eq!(fs::read(dir.path().join(REPLIES_FILE)).unwrap(), b"");
    }

    #[test]
    fn replies_index_is_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut lines = String::new();
        for i in 0..(2 * REPLIES_KEPT as i64 + 10) {
            lines.push_str(
                &serde_json::to_string(&ReplyLine {
                    update_id: i,
                    reply: Some("r".into()),
                    files: vec![],
                    delivered: false,
                })
                .unwrap(),
            );
            lines.push('\n');
        }
        fs::write(dir.path().join(REPLIES_FILE), lines).unwrap();
        let s = SessionStore::open(dir.path(), true, 10_000).unwrap();
        assert_eq!(s.replies.len(), REPLIES_KEPT);
        let kept = fs::read_to_string(dir.path().join(REPLIES_FILE)).unwrap();
        assert_eq!(kept.lines().count(), REPLIES_KEPT);
    }
}
