//! Files the person sent, saved in `files/` for the tools to work on.
//!
//! The name comes from the sender's app and is untrusted: only its last component is kept,
//! stripped of control characters and leading dots, and shortened; it never names a
//! directory. An existing file is never overwritten: the same bytes again (a redelivered
//! message) keep their file, other bytes get `name (2).ext`, `name (3).ext`...

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{AtFlags, Mode, OFlags, openat, unlinkat};
use rustix::io::Errno;

use super::files::FileError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SaveError {
    #[error("the workspace is full")]
    Full,
    #[error("the workspace is read-only")]
    ReadOnly,
    #[error("{0}")]
    Failed(String),
}

impl From<FileError> for SaveError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Denied(m) | FileError::Failed(m) => SaveError::Failed(m),
        }
    }
}

/// Bytes of a saved name, at most (well under the 255 a file system takes, room for ` (99)`).
pub const NAME_MAX: usize = 120;
/// Names tried before giving up (`name (2)` ... `name (999)`).
const TRIES: usize = 999;

/// A plain file name made from what the sender called the file. Pure.
pub fn safe_name(requested: &str) -> String {
    let last = requested.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    // No hidden files, no `.` or `..`; spaces at the ends only confuse.
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        return "file".to_string();
    }
    let (stem, ext) = split_extension(cleaned);
    let ext_len = ext.map_or(0, |e| e.len() + 1);
    let stem = cut(stem, NAME_MAX.saturating_sub(ext_len));
    match ext {
        Some(ext) => format!("{stem}.{ext}"),
        None => stem.to_string(),
    }
}

/// `report.pdf` -> (`report`, `pdf`); an extension is short and plain, else there is none.
fn split_extension(name: &str) -> (&str, Option<&str>) {
    match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty() && !ext.is_empty() && ext.len() <= 16 && ext.chars().all(char::is_alphanumeric) =>
        {
            (stem, Some(ext))
        }
        _ => (name, None),
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].trim_end()
}

/// The `n`th name to try: `report.pdf`, `report (2).pdf`, ...
pub fn candidate(name: &str, n: usize) -> String {
    if n <= 1 {
        return name.to_string();
    }
    match split_extension(name) {
        (stem, Some(ext)) => format!("{stem} ({n}).{ext}"),
        (stem, None) => format!("{stem} ({n})"),
    }
}

/// Save `bytes` in `dir` under a safe form of `requested`; the name used.
pub fn save(dir: BorrowedFd<'_>, requested: &str, bytes: &[u8]) -> Result<String, SaveError> {
    let name = safe_name(requested);
    for n in 1..=TRIES {
        let name = candidate(&name, n);
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        match openat(dir, name.as_str(), flags, Mode::from_raw_mode(0o644)) {
            Ok(fd) => {
                let mut file = std::fs::File::from(fd);
                if let Err(e) = file.write_all(bytes).and_then(|()| file.sync_all()) {
                    // No half file left behind to be taken for the whole one.
                    let _ = unlinkat(dir, name.as_str(), AtFlags::empty());
                    return Err(match e.raw_os_error().map(Errno::from_raw_os_error) {
                        Some(Errno::NOSPC | Errno::DQUOT | Errno::FBIG) => SaveError::Full,
                        _ => SaveError::Failed(format!("{name:?}: {e}")),
                    });
                }
                return Ok(name);
            }
            Err(Errno::EXIST) if holds(dir, &name, bytes) => return Ok(name),
            Err(Errno::EXIST) => continue,
            Err(Errno::ROFS) => return Err(SaveError::ReadOnly),
            Err(Errno::NOSPC | Errno::DQUOT) => return Err(SaveError::Full),
            Err(e) => return Err(SaveError::Failed(format!("{name:?}: {e}"))),
        }
    }
    Err(SaveError::Failed(format!("{TRIES} files named like {name:?} exist already")))
}

/// Whether `name` in `dir` is a regular file (not a link) holding exactly `bytes`.
fn holds(dir: BorrowedFd<'_>, name: &str, bytes: &[u8]) -> bool {
    let Ok((file, size)) = super::files::open_file_in(dir.as_fd(), name, name, OFlags::RDONLY) else {
        return false;
    };
    if size != bytes.len() as u64 {
        return false;
    }
    let mut held = Vec::with_capacity(bytes.len());
    file.take(size + 1).read_to_end(&mut held).is_ok() && held == bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_plain_names() {
        let cases = [
            ("report.pdf", "report.pdf"),
            ("../../etc/passwd", "passwd"),
            ("/etc/shadow", "shadow"),
            ("..\\..\\windows\\win.ini", "win.ini"),
            ("..", "file"),
            (".", "file"),
            ("", "file"),
            ("dir/", "file"),
            (".bashrc", "bashrc"),
            ("a\0b.txt", "ab.txt"),
            ("line\nbreak.md", "linebreak.md"),
            ("  spaced .txt ", "spaced.txt"),
        ];
        for (requested, expected) in cases {
            assert_eq!(safe_name(requested), expected, "{requested:?}");
        }
        let long = format!("{}.pdf", "é".repeat(300));
        let name = safe_name(&long);
        assert!(name.len() <= NAME_MAX && name.ends_with(".pdf"), "{name}");
        let no_ext = safe_name(&"x".repeat(1000));
        assert_eq!(no_ext.len(), NAME_MAX);
    }

    #[test]
    fn candidates_number_before_the_extension() {
        assert_eq!(candidate("report.pdf", 1), "report.pdf");
        assert_eq!(candidate("report.pdf", 2), "report (2).pdf");
        assert_eq!(candidate("notes", 3), "notes (3)");
        assert_eq!(candidate("archive.tar.gz", 2), "archive.tar (2).gz");
    }

    fn files_dir() -> (tempfile::TempDir, std::os::fd::OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        let fd = rustix::fs::open(dir.path(), OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        (dir, fd)
    }

    #[test]
    fn saving_never_overwrites_and_keeps_one_copy_of_the_same_bytes() {
        let (dir, fd) = files_dir();
        assert_eq!(save(fd.as_fd(), "report.pdf", b"one").unwrap(), "report.pdf");
        assert_eq!(save(fd.as_fd(), "report.pdf", b"two").unwrap(), "report (2).pdf");
        assert_eq!(save(fd.as_fd(), "report.pdf", b"one").unwrap(), "report.pdf", "the same bytes again");
        assert_eq!(save(fd.as_fd(), "../report.pdf", b"three").unwrap(), "report (3).pdf");
        assert_eq!(std::fs::read(dir.path().join("report.pdf")).unwrap(), b"one");
        assert_eq!(std::fs::read(dir.path().join("report (2).pdf")).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }

    #[test]
    fn a_link_in_the_way_is_not_followed() {
        let (dir, fd) = files_dir();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("target"), "keep").unwrap();
        std::os::unix::fs::symlink(outside.path().join("target"), dir.path().join("notes.txt")).unwrap();
        assert_eq!(save(fd.as_fd(), "notes.txt", b"keep").unwrap(), "notes (2).txt");
        assert_eq!(std::fs::read_to_string(outside.path().join("target")).unwrap(), "keep");
    }
}
