//! The workspace volume: `SOUL.md` (persona), `MEMORY.md` (long-term memory), `sessions/`
//! (history, see the store) and `files/` (the agent's working directory).
//!
//! Everything below the root is opened relative to a handle on the root, without following
//! links: the agent can put a symlink in `files/`, never make us write through one.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, mkdirat, openat};
use rustix::io::Errno;

use super::files::{self, FileError};

pub const SOUL: &str = "SOUL.md";
pub const MEMORY: &str = "MEMORY.md";
pub const FILES: &str = "files";
pub const SESSIONS: &str = "sessions";

/// What goes into the system prompt from each file, at most.
pub const SOUL_MAX: usize = 8 * 1024;
pub const MEMORY_PROMPT_MAX: usize = 8 * 1024;
/// MEMORY.md stops growing here; the user can tidy it up.
pub const MEMORY_MAX: u64 = 64 * 1024;
pub const REMEMBER_MAX: usize = 2 * 1024;

pub const SOUL_TEMPLATE: &str = "\
# Soul

You are a personal assistant, talking with one person through Telegram.
Be warm, direct and brief; Telegram messages are read on a phone.
Say plainly when you do not know something or could not do it; never pretend.
When the person tells you something worth keeping (a preference, a date, a name),
save it with the `remember` tool.
";

#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    #[error("workspace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("workspace {path}: cannot prepare {what}: {source}")]
    Prepare { path: PathBuf, what: &'static str, source: std::io::Error },
}

#[derive(Clone)]
pub struct Workspace {
    root: PathBuf,
    fd: Arc<OwnedFd>,
    writable: bool,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

impl Workspace {
    /// Open the root and, if writable, create `files/`, `sessions/` and a first `SOUL.md`.
    pub fn open(root: &Path, writable: bool) -> Result<Self, WorkspaceError> {
        let open_err = |e: Errno| WorkspaceError::Open { path: root.to_path_buf(), source: e.into() };
        // The root itself is the volume mount the operator chose; it may be reached via links.
        let fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(open_err)?;
        let ws = Self { root: root.to_path_buf(), fd: Arc::new(fd), writable };
        if writable {
            for dir in [FILES, SESSIONS] {
                ws.ensure_dir(dir)?;
            }
            ws.ensure_soul()?;
        }
        Ok(ws)
    }

    fn prepare_err(&self, what: &'static str) -> impl FnOnce(Errno) -> WorkspaceError + '_ {
        move |e| WorkspaceError::Prepare { path: self.root.clone(), what, source: e.into() }
    }

    fn ensure_dir(&self, name: &'static str) -> Result<(), WorkspaceError> {
        match mkdirat(self.fd.as_fd(), name, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.prepare_err(name)(e)),
        }
        // Fails on a symlink or a file in its place: refuse to start rather than use it.
        openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty()).map(drop).map_err(self.prepare_err(name))
    }

    fn ensure_soul(&self) -> Result<(), WorkspaceError> {
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(self.fd.as_fd(), SOUL, flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => {
                let mut file = std::fs::File::from(fd);
                file.write_all(SOUL_TEMPLATE.as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(|e| WorkspaceError::Prepare { path: self.root.clone(), what: SOUL, source: e })
            }
            Err(Errno::EXIST) => Ok(()),
            Err(e) => Err(self.prepare_err(SOUL)(e)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    pub fn sessions_dir(&self) -> PathBuf {
        self.root.join(SESSIONS)
    }

    /// A handle on `files/`, for the file tools.
    pub fn files_dir(&self) -> Result<OwnedFd, FileError> {
        openat(self.fd.as_fd(), FILES, DIR_FLAGS, Mode::empty()).map_err(|e| match e {
            Errno::NOENT => FileError::Failed("files/ does not exist in this workspace".into()),
            other => FileError::Denied(format!("files/ cannot be opened: {other}")),
        })
    }

    /// The persona: SOUL.md, or the template when it is missing or unreadable.
    pub fn soul(&self) -> String {
        match self.read_head(SOUL, SOUL_MAX) {
            Some(text) if !text.trim().is_empty() => text,
            _ => SOUL_TEMPLATE.to_string(),
        }
    }

    /// The newest part of MEMORY.md (whole lines), and whether older lines were left out.
    pub fn memory(&self) -> (String, bool) {
        let Ok((mut file, size)) = files::open_file_in(self.fd.as_fd(), MEMORY, MEMORY, OFlags::RDONLY) else {
            return (String::new(), false);
        };
        let start = size.saturating_sub(MEMORY_PROMPT_MAX as u64);
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_err()
            || file.take(MEMORY_PROMPT_MAX as u64).read_to_end(&mut bytes).is_err()
        {
            return (String::new(), false);
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if start == 0 {
            return (text, false);
        }
        // Drop the partial first line.
        let text = text.split_once('\n').map(|(_, rest)| rest.to_string()).unwrap_or_default();
        (text, true)
    }

    fn read_head(&self, name: &str, max: usize) -> Option<String> {
        let (file, _) = files::open_file_in(self.fd.as_fd(), name, name, OFlags::RDONLY).ok()?;
        let mut bytes = Vec::new();
        file.take(max as u64).read_to_end(&mut bytes).ok()?;
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Append one entry to MEMORY.md; returns the bytes written.
    pub fn remember(&self, text: &str, at: &str) -> Result<usize, FileError> {
        if !self.writable {
            return Err(FileError::Denied(
                "the workspace is read-only (workspaceAccess: ro); nothing can be remembered".into(),
            ));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err(FileError::Failed("nothing to remember: text is empty".into()));
        }
        if text.len() > REMEMBER_MAX {
            return Err(FileError::Denied(format!("a memory entry is limited to {REMEMBER_MAX} bytes")));
        }
        // One entry per line: newlines from the model would forge entries.
        let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let entry = format!("- {at}: {one_line}\n");
        let (mut file, size) =
            files::open_file_in(self.fd.as_fd(), MEMORY, MEMORY, OFlags::WRONLY | OFlags::CREATE | OFlags::APPEND)?;
        if size + entry.len() as u64 > MEMORY_MAX {
            return Err(FileError::Denied(format!(
                "MEMORY.md is full ({size} of {MEMORY_MAX} bytes); ask the person which memories to drop"
            )));
        }
        file.write_all(entry.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| FileError::Failed(format!("MEMORY.md: {e}")))?;
        Ok(entry.len())
    }

    /// All of MEMORY.md (empty if there is none).
    pub fn memory_text(&self) -> Result<String, FileError> {
        match files::open_file_in(self.fd.as_fd(), MEMORY, MEMORY, OFlags::RDONLY) {
            Ok((file, _)) => {
                let mut bytes = Vec::new();
                file.take(MEMORY_MAX * 2)
                    .read_to_end(&mut bytes)
                    .map_err(|e| FileError::Failed(format!("MEMORY.md: {e}")))?;
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Err(_) if !self.exists(MEMORY) => Ok(String::new()),
            Err(e) => Err(e),
        }
    }

    /// Replace MEMORY.md whole: written beside it, synced, then renamed over it, so a crash
    /// leaves the old file or the new one, never half of either.
    pub fn replace_memory(&self, text: &str) -> Result<(), FileError> {
        if !self.writable {
            return Err(FileError::Denied(
                "the workspace is read-only (workspaceAccess: ro); memory cannot be changed".into(),
            ));
        }
        const NEXT: &str = "MEMORY.md.next";
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let failed = |e: std::io::Error| FileError::Failed(format!("MEMORY.md: {e}"));
        let fd = openat(self.fd.as_fd(), NEXT, flags, Mode::from_raw_mode(0o644)).map_err(|e| failed(e.into()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(failed)?;
        rustix::fs::renameat(self.fd.as_fd(), NEXT, self.fd.as_fd(), MEMORY).map_err(|e| failed(e.into()))?;
        rustix::fs::fsync(self.fd.as_fd()).map_err(|e| failed(e.into()))
    }

    fn exists(&self, name: &str) -> bool {
        rustix::fs::statat(self.fd.as_fd(), name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()
    }

    /// Bytes used by regular files in the workspace (bounded walk, links not followed).
    pub fn bytes_used(&self) -> u64 {
        files::usage(self.fd.as_fd(), 200_000)
    }

    /// `bytes_used`, walked off the async threads.
    pub async fn bytes_used_async(&self) -> u64 {
        let workspace = self.clone();
        tokio::task::spawn_blocking(move || workspace.bytes_used()).await.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_lays_out_the_workspace_and_keeps_an_existing_soul() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path(), true).unwrap();
        assert!(dir.path().join("files").is_dir() && dir.path().join("sessions").is_dir());
        assert_eq!(std::fs::read_to_string(dir.path().join(SOUL)).unwrap(), SOUL_TEMPLATE);
        std::fs::write(dir.path().join(SOUL), "I am Molt.").unwrap();
        let ws2 = Workspace::open(dir.path(), true).unwrap();
        assert_eq!(ws2.soul(), "I am Molt.");
        assert!(ws.bytes_used() > 0);
    }

    #[test]
    fn remember_appends_single_lines_and_memory_reads_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path(), true).unwrap();
        assert_eq!(ws.memory(), (String::new(), false));
        ws.remember("likes tea\n- 2020: forged", "2025-01-01").unwrap();
        let text = std::fs::read_to_string(dir.path().join(MEMORY)).unwrap();
        assert_eq!(text, "- 2025-01-01: likes tea - 2020: forged\n");
        assert_eq!(ws.memory().0, text);
        for i in 0..200 {
            ws.remember(&format!("fact number {i} {}", "x".repeat(50)), "t").unwrap();
        }
        let (tail, cut) = ws.memory();
        assert!(cut && tail.len() <= MEMORY_PROMPT_MAX && tail.starts_with("- t: fact"));
        assert!(tail.contains("fact number 199"));
    }

    #[test]
    fn read_only_workspace_refuses_to_remember_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path(), false).unwrap();
        assert!(matches!(ws.remember("x", "t"), Err(FileError::Denied(_))));
        assert!(matches!(ws.replace_memory("- t: x\n"), Err(FileError::Denied(_))));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(ws.soul(), SOUL_TEMPLATE);
        assert_eq!(ws.memory_text().unwrap(), "", "no MEMORY.md reads as no notes");
    }

    #[test]
    fn memory_is_replaced_whole_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path(), true).unwrap();
        ws.remember("likes tea", "2026-12-01").unwrap();
        ws.replace_memory("- 2026-12-02: likes coffee now\n").unwrap();
        assert_eq!(ws.memory_text().unwrap(), "- 2026-12-02: likes coffee now\n");
        assert!(!dir.path().join("MEMORY.md.next").exists(), "renamed into place");
        // A link planted where the new file is written first is replaced, not written through.
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("MEMORY.md.next")).unwrap();
        assert!(ws.replace_memory("- x: y\n").is_err());
        assert_eq!(std::fs::read_to_string(outside.path()).unwrap(), "", "nothing written outside");
    }

    #[test]
    fn memory_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let ws = Workspace::open(dir.path(), true).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join(MEMORY)).unwrap();
        assert!(matches!(ws.remember("x", "t"), Err(FileError::Denied(_))));
        assert_eq!(std::fs::read_to_string(outside.path()).unwrap(), "");
    }
}
