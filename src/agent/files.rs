//! File access confined to a directory handle (the workspace's `files/`).
//!
//! Paths from the model are split into plain components (no absolute paths, no `..`), then
//! walked one component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)` from the handle,
//! and the last one is opened with `O_NOFOLLOW`. No symlink is ever followed, and since each
//! step holds the directory it reached, a link swapped in during the call redirects nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, fstat, ftruncate, mkdirat, openat, statat};
use rustix::io::Errno;

pub const MAX_PATH_BYTES: usize = 1024;
pub const MAX_DEPTH: usize = 32;
const MAX_NAME_BYTES: usize = 255;
/// Entries read from one directory before giving up on listing it whole.
const MAX_SCAN: usize = 10_000;

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// Refused by policy; the reason goes back to the model.
    #[error("{0}")]
    Denied(String),
    /// Allowed, but it did not work (missing file, not a directory, ...).
    #[error("{0}")]
    Failed(String),
}

fn denied(text: impl Into<String>) -> FileError {
    FileError::Denied(text.into())
}
fn failed(text: impl Into<String>) -> FileError {
    FileError::Failed(text.into())
}

/// Split a path relative to `files/` into its components. `""` and `"."` are the directory itself.
pub fn components(path: &str) -> Result<Vec<&str>, FileError> {
    if path.contains('\0') {
        return Err(denied("the path contains a NUL byte"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(denied(format!("the path is longer than {MAX_PATH_BYTES} bytes")));
    }
    if path.starts_with('/') {
        return Err(denied(format!("absolute path {path:?} refused: paths are relative to files/ and stay inside it")));
    }
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(denied(format!("'..' in {path:?} refused: paths stay inside files/"))),
            name if name.len() > MAX_NAME_BYTES => return Err(denied("a path component is longer than 255 bytes")),
            name => out.push(name),
        }
    }
    if out.len() > MAX_DEPTH {
        return Err(denied(format!("the path is deeper than {MAX_DEPTH} directories")));
    }
    Ok(out)
}

/// Why opening `name` in `dir` failed, in words for the model.
fn explain(dir: BorrowedFd<'_>, name: &str, shown: &str, errno: Errno) -> FileError {
    if matches!(errno, Errno::LOOP | Errno::NOTDIR | Errno::NXIO)
        && let Ok(st) = statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
    {
        return match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => denied(format!("{shown:?} is a symbolic link; links are not followed")),
            FileType::Directory => failed(format!("{shown:?} is a directory")),
            FileType::RegularFile => failed(format!("{shown:?} is a file, not a directory")),
            _ => denied(format!("{shown:?} is not a regular file")),
        };
    }
    match errno {
        Errno::NOENT => failed(format!("{shown:?} does not exist")),
        Errno::ROFS => denied("the workspace is read-only"),
        Errno::ACCESS | Errno::PERM => failed(format!("{shown:?}: permission denied")),
        Errno::NOSPC | Errno::DQUOT => failed("the workspace is full"),
        Errno::ISDIR => failed(format!("{shown:?} is a directory")),
        other => failed(format!("{shown:?}: {other}")),
    }
}

/// Open the directory at `parts` under `base`, never following links; `create` makes
/// missing directories.
fn open_dir(base: BorrowedFd<'_>, parts: &[&str], create: bool) -> Result<OwnedFd, FileError> {
    let mut current = openat(base, ".", DIR_FLAGS, Mode::empty()).map_err(|e| explain(base, ".", "files/", e))?;
    for (i, name) in parts.iter().enumerate() {
        let shown = parts[..=i].join("/");
        let opened = match openat(current.as_fd(), *name, DIR_FLAGS, Mode::empty()) {
            Err(Errno::NOENT) if create => match mkdirat(current.as_fd(), *name, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => openat(current.as_fd(), *name, DIR_FLAGS, Mode::empty()),
                Err(e) => Err(e),
            },
            other => other,
        };
        current = opened.map_err(|e| explain(current.as_fd(), name, &shown, e))?;
    }
    Ok(current)
}

/// Open a file by its last component in `dir`: no link followed, no FIFO waited on.
pub fn open_file_in(dir: BorrowedFd<'_>, name: &str, shown: &str, flags: OFlags) -> Result<(File, u64), FileError> {
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    let fd = openat(dir, name, flags, Mode::from_raw_mode(0o644)).map_err(|e| explain(dir, name, shown, e))?;
    let st = fstat(&fd).map_err(|e| failed(format!("{shown:?}: {e}")))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(denied(format!("{shown:?} is not a regular file")));
    }
    // A hard link could tie a file here to one the agent must not rewrite (its history).
    if flags.contains(OFlags::WRONLY) && st.st_nlink > 1 {
        return Err(denied(format!("{shown:?} has other hard links; it is not written")));
    }
    Ok((File::from(fd), u64::try_from(st.st_size).unwrap_or(0)))
}

fn split_last<'a>(parts: &'a [&'a str], path: &str) -> Result<(&'a [&'a str], &'a str), FileError> {
    match parts.split_last() {
        Some((name, parents)) => Ok((parents, name)),
        None => Err(failed(format!("{path:?} is a directory; give a file path"))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOut {
    pub bytes: Vec<u8>,
    pub size: u64,
    pub offset: u64,
}

/// Read at most `max` bytes from `offset`.
pub fn read(base: BorrowedFd<'_>, path: &str, offset: u64, max: usize) -> Result<ReadOut, FileError> {
    let parts = components(path)?;
    let (parents, name) = split_last(&parts, path)?;
    let dir = open_dir(base, parents, false)?;
    let (mut file, size) = open_file_in(dir.as_fd(), name, path, OFlags::RDONLY)?;
    file.seek(SeekFrom::Start(offset)).map_err(|e| failed(format!("{path:?}: {e}")))?;
    let mut bytes = Vec::new();
    file.take(max as u64).read_to_end(&mut bytes).map_err(|e| failed(format!("{path:?}: {e}")))?;
    Ok(ReadOut { bytes, size, offset })
}

/// Write (or append) `content`; the file may not grow past `max_file` bytes.
pub fn write(base: BorrowedFd<'_>, path: &str, content: &[u8], append: bool, max_file: u64) -> Result<u64, FileError> {
    let parts = components(path)?;
    let (parents, name) = split_last(&parts, path)?;
    if content.len() as u64 > max_file {
        return Err(denied(format!("{} bytes is more than the {max_file} a file may hold", content.len())));
    }
    let dir = open_dir(base, parents, true)?;
    let (mut file, size) = open_file_in(dir.as_fd(), name, path, OFlags::WRONLY | OFlags::CREATE)?;
    let new_size = if append { size + content.len() as u64 } else { content.len() as u64 };
    if new_size > max_file {
        return Err(denied(format!("{path:?} would be {new_size} bytes; files are limited to {max_file}")));
    }
    let io = |e: std::io::Error| explain_io(path, e);
    if append {
        file.seek(SeekFrom::End(0)).map_err(io)?;
    } else {
        ftruncate(&file, 0).map_err(|e| explain(dir.as_fd(), name, path, e))?;
    }
    file.write_all(content).map_err(io)?;
    Ok(content.len() as u64)
}

fn explain_io(path: &str, e: std::io::Error) -> FileError {
    match e.raw_os_error().map(Errno::from_raw_os_error) {
        Some(Errno::NOSPC) | Some(Errno::DQUOT) => failed("the workspace is full"),
        _ => failed(format!("{path:?}: {e}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
}

/// The entries of a directory, sorted by name, at most `max`; `true` when there were more.
pub fn list(base: BorrowedFd<'_>, path: &str, max: usize) -> Result<(Vec<Entry>, bool), FileError> {
    let parts = components(path)?;
    let dir = open_dir(base, &parts, false)?;
    let (mut entries, mut more) = (Vec::new(), false);
    for entry in Dir::read_from(&dir).map_err(|e| failed(format!("{path:?}: {e}")))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        if name == "." || name == ".." {
            continue;
        }
        if entries.len() >= MAX_SCAN {
            more = true;
            break;
        }
        let (kind, size) = match statat(&dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => (
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::RegularFile => Kind::File,
                    FileType::Directory => Kind::Dir,
                    FileType::Symlink => Kind::Symlink,
                    _ => Kind::Other,
                },
                u64::try_from(st.st_size).unwrap_or(0),
            ),
            Err(_) => (Kind::Other, 0),
        };
        entries.push(Entry { name, kind, size });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    if entries.len() > max {
        entries.truncate(max);
        more = true;
    }
    Ok((entries, more))
}

/// Bytes in regular files under `dir` (links not followed), at most `max_entries` looked at.
pub fn usage(dir: BorrowedFd<'_>, max_entries: usize) -> u64 {
    fn walk(dir: BorrowedFd<'_>, depth: usize, budget: &mut usize) -> u64 {
        let Ok(reader) = Dir::read_from(dir) else { return 0 };
        let mut total = 0u64;
        let mut subdirs = Vec::new();
        for entry in reader.flatten() {
            if *budget == 0 {
                break;
            }
            *budget -= 1;
            let name = entry.file_name().to_owned();
            if name.as_bytes() == b"." || name.as_bytes() == b".." {
                continue;
            }
            let Ok(st) = statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => total += u64::try_from(st.st_size).unwrap_or(0),
                FileType::Directory if depth < 64 => subdirs.push(name),
                _ => {}
            }
        }
        // Subdirectories after the listing is closed, so open handles stay at one per level.
        for name in subdirs {
            if let Ok(fd) = openat(dir, name.as_c_str(), DIR_FLAGS, Mode::empty()) {
                total += walk(fd.as_fd(), depth + 1, budget);
            }
        }
        total
    }
    let mut budget = max_entries;
    walk(dir, 0, &mut budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root() -> (tempfile::TempDir, OwnedFd) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("files")).unwrap();
        let fd = rustix::fs::open(dir.path().join("files"), DIR_FLAGS, Mode::empty()).unwrap();
        (dir, fd)
    }

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components("a/./b//c").unwrap(), vec!["a", "b", "c"]);
        assert_eq!(components("").unwrap(), Vec::<&str>::new());
        assert_eq!(components("./").unwrap(), Vec::<&str>::new());
        for bad in ["/etc/passwd", "../x", "a/../../etc/shadow", "a/..", "a\0b"] {
            assert!(matches!(components(bad), Err(FileError::Denied(_))), "{bad}");
        }
        assert!(components(&"a/".repeat(40)).is_err());
        assert!(components(&"x".repeat(300)).is_err());
    }

    #[test]
    fn write_read_list_inside() {
        let (_dir, fd) = root();
        assert_eq!(write(fd.as_fd(), "notes/today.txt", b"one\n", false, 100).unwrap(), 4);
        write(fd.as_fd(), "notes/today.txt", b"two\n", true, 100).unwrap();
        let out = read(fd.as_fd(), "notes/today.txt", 0, 100).unwrap();
        assert_eq!((out.bytes.as_slice(), out.size), (&b"one\ntwo\n"[..], 8));
        assert_eq!(read(fd.as_fd(), "notes/today.txt", 4, 2).unwrap().bytes, b"tw");
        let (entries, more) = list(fd.as_fd(), "", 10).unwrap();
        assert_eq!(entries, vec![Entry { name: "notes".into(), kind: Kind::Dir, size: entries[0].size }]);
        assert!(!more);
        assert!(matches!(write(fd.as_fd(), "big", &[b'x'; 101], false, 100), Err(FileError::Denied(_))));
        assert!(matches!(read(fd.as_fd(), "missing", 0, 10), Err(FileError::Failed(_))));
        assert!(usage(fd.as_fd(), 1000) >= 8);
    }

    #[test]
    fn symlinks_are_never_followed() {
        let (dir, fd) = root();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s3cret").unwrap();
        symlink(outside.path(), dir.path().join("files/escape")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("files/link")).unwrap();
        for path in ["escape/secret", "link"] {
            let r = read(fd.as_fd(), path, 0, 100);
            assert!(matches!(&r, Err(FileError::Denied(m)) if m.contains("symbolic link")), "{path}: {r:?}");
        }
        for path in ["escape/new.txt", "link", "escape/deeper/new.txt"] {
            let w = write(fd.as_fd(), path, b"pwned", false, 100);
            assert!(matches!(&w, Err(FileError::Denied(m)) if m.contains("symbolic link")), "{path}: {w:?}");
        }
        assert_eq!(std::fs::read_to_string(outside.path().join("secret")).unwrap(), "s3cret");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
        let (entries, _) = list(fd.as_fd(), ".", 10).unwrap();
        assert!(entries.iter().all(|e| e.kind == Kind::Symlink));
        assert!(list(fd.as_fd(), "escape", 10).is_err());
    }

    #[test]
    fn hard_links_and_special_files_are_not_written() {
        let (dir, fd) = root();
        std::fs::write(dir.path().join("history"), "h").unwrap();
        std::fs::hard_link(dir.path().join("history"), dir.path().join("files/h")).unwrap();
        assert!(matches!(write(fd.as_fd(), "h", b"x", false, 100), Err(FileError::Denied(_))));
        assert_eq!(std::fs::read_to_string(dir.path().join("history")).unwrap(), "h");
        rustix::fs::mknodat(&fd, "fifo", FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        assert!(
            matches!(read(fd.as_fd(), "fifo", 0, 10), Err(FileError::Denied(_))),
            "a FIFO neither blocks nor reads"
        );
    }

    #[test]
    fn listing_is_capped() {
        let (_dir, fd) = root();
        for i in 0..5 {
            write(fd.as_fd(), &format!("f{i}"), b"x", false, 10).unwrap();
        }
        let (entries, more) = list(fd.as_fd(), "", 3).unwrap();
        assert_eq!(entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(), ["f0", "f1", "f2"]);
        assert!(more);
    }
}
