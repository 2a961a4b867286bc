//! Resetting a user (the seed's "Resetting a User"): `spec.resetGeneration` reaches the agent
//! as `MOLTMATE_RESET_GENERATION`. At start, before anything reads the workspace, an agent
//! whose generation is newer than the one recorded there empties the workspace (files,
//! memory, sessions, persona) and then records the new generation, so a restart does not
//! wipe again. The wipe runs here, in the user's own sandbox with the user's own rights: no
//! privileged helper ever mounts a user's volume.
//!
//! The record, `.moltmate/reset-generation`, is out of the file tools' reach (they see
//! `files/` only) but not out of exec's, which may write anywhere in the workspace. So it
//! carries a MAC keyed with the agent's token, which the model never sees: a forged or
//! damaged record counts as none, and a pending reset wipes all the same.
//!
//! Nothing is followed: every entry is removed relative to a handle on its directory
//! (`unlinkat`), a symlink goes as a link, and directories are entered with `O_NOFOLLOW`.

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rustix::fs::{
    AtFlags, Dir, FileType, Mode, OFlags, RenameFlags, fstat, fsync, mkdirat, openat, renameat, renameat_with, statat,
    unlinkat,
};
use rustix::io::Errno;
use sha2::Sha256;

pub const RECORD_DIR: &str = ".moltmate";
pub const RECORD_FILE: &str = "reset-generation";
/// Directories entered at once; a deeper tree is moved up to the root and emptied from there,
/// so the wipe holds a bounded number of handles however deep the model nested its files.
const MAX_OPEN_DEPTH: usize = 32;
const RECORD_MAX: u64 = 256;

const DIR_FLAGS: OFlags = OFlags::RDONLY.union(OFlags::DIRECTORY).union(OFlags::NOFOLLOW).union(OFlags::CLOEXEC);

#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("workspace {path}: cannot wipe it for reset generation {generation}: {entry}: {source}")]
    Wipe { path: PathBuf, generation: u64, entry: String, source: std::io::Error },
    #[error("workspace {path}: wiped, but reset generation {generation} could not be recorded: {source}")]
    Record { path: PathBuf, generation: u64, source: std::io::Error },
}

/// What the start did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Never reset (generation 0), or the workspace already has this generation.
    UpToDate,
    /// Emptied for `generation`; `kept` lists entries that were not ours to remove.
    Wiped { generation: u64, removed: u64, kept: Vec<String> },
    /// A reset is due but the workspace is mounted read-only: nothing was wiped.
    ReadOnly { wanted: u64, recorded: u64 },
}

/// Wipe `root` if `wanted` is newer than its record; `key` is the agent's token.
pub fn apply(root: &Path, wanted: u64, writable: bool, key: &[u8]) -> Result<Outcome, ResetError> {
    if wanted == 0 {
        return Ok(Outcome::UpToDate);
    }
    let wipe_err = |entry: &str, e: Errno| ResetError::Wipe {
        path: root.into(),
        generation: wanted,
        entry: entry.into(),
        source: e.into(),
    };
    // The root is the volume mount the operator chose; it may be reached via links.
    let root_fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| wipe_err(".", e))?;
    let recorded = read_record(root_fd.as_fd()).and_then(|text| parse_record(&text, key)).unwrap_or(0);
    if wanted <= recorded {
        return Ok(Outcome::UpToDate);
    }
    if !writable {
        return Ok(Outcome::ReadOnly { wanted, recorded });
    }
    // A root made read-only by a chmod from exec (`chmod 500 ..`) is ours to open up again.
    let root_mode = fstat(&root_fd).map_err(|e| wipe_err(".", e))?.st_mode;
    if root_mode & 0o700 != 0o700 {
        match rustix::fs::fchmod(&root_fd, Mode::from_raw_mode((root_mode & 0o7777) | 0o700)) {
            Ok(()) | Err(Errno::PERM) => {}
            Err(e) => return Err(wipe_err(".", e)),
        }
    }
    let mut wipe = Wipe { root: root_fd.as_fd(), removed: 0, kept: Vec::new(), hoisted: 0 };
    wipe.run().map_err(|(entry, e)| wipe_err(&entry, e))?;
    // The removals are durable before the record says they happened.
    fsync(&root_fd).map_err(|e| wipe_err(".", e))?;
    write_record(root_fd.as_fd(), &record_text(wanted, key)).map_err(|e| ResetError::Record {
        path: root.into(),
        generation: wanted,
        source: e.into(),
    })?;
    Ok(Outcome::Wiped { generation: wanted, removed: wipe.removed, kept: wipe.kept })
}

fn mac(key: &[u8], generation: u64) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(format!("moltmate reset-generation {generation}").as_bytes());
    mac
}

/// The record: the generation and its MAC.
pub fn record_text(generation: u64, key: &[u8]) -> String {
    format!("{generation} {}\n", hex::encode(mac(key, generation).finalize().into_bytes()))
}

/// The generation a record holds, if its MAC is right.
pub fn parse_record(text: &str, key: &[u8]) -> Option<u64> {
    let mut parts = text.split_whitespace();
    let (generation, tag) = (parts.next()?.parse::<u64>().ok()?, hex::decode(parts.next()?).ok()?);
    if parts.next().is_some() {
        return None;
    }
    mac(key, generation).verify_slice(&tag).ok().map(|()| generation)
}

fn read_record(root: BorrowedFd<'_>) -> Option<String> {
    let dir = openat(root, RECORD_DIR, DIR_FLAGS, Mode::empty()).ok()?;
    let fd = openat(
        &dir,
        RECORD_FILE,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    if FileType::from_raw_mode(fstat(&fd).ok()?.st_mode) != FileType::RegularFile {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(fd).take(RECORD_MAX).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Write the record through a temporary file and a rename, each step fsync'd.
fn write_record(root: BorrowedFd<'_>, text: &str) -> Result<(), Errno> {
    match mkdirat(root, RECORD_DIR, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(e),
    }
    // Fails on a symlink in its place (only if one appeared since the wipe): nothing is written.
    let dir = openat(root, RECORD_DIR, DIR_FLAGS, Mode::empty())?;
    let tmp = format!("{RECORD_FILE}.tmp");
    match unlinkat(&dir, tmp.as_str(), AtFlags::empty()) {
        Ok(()) | Err(Errno::NOENT) => {}
        Err(e) => return Err(e),
    }
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let mut file = std::fs::File::from(openat(&dir, tmp.as_str(), flags, Mode::from_raw_mode(0o644))?);
    let io = |e: std::io::Error| e.raw_os_error().map_or(Errno::IO, Errno::from_raw_os_error);
    file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(io)?;
    renameat(&dir, tmp.as_str(), &dir, RECORD_FILE)?;
    fsync(&dir)
}

/// One wipe of a workspace root. Errors name the entry, relative to the root.
struct Wipe<'a> {
    root: BorrowedFd<'a>,
    removed: u64,
    kept: Vec<String>,
    hoisted: u64,
}

type WipeResult = Result<(), (String, Errno)>;

impl Wipe<'_> {
    /// Empty the root, pass after pass while directories moved up from the depth remain.
    fn run(&mut self) -> WipeResult {
        loop {
            let progress = (self.removed, self.hoisted);
            let names = names_in(self.root).map_err(|e| (".".to_string(), e))?;
            let pending: Vec<CString> = names.into_iter().filter(|n| !self.kept.contains(&show("", n))).collect();
            if pending.is_empty() {
                return Ok(());
            }
            for name in &pending {
                self.remove(self.root, name, "", 0)?;
            }
            if (self.removed, self.hoisted) == progress {
                // Only entries that are not ours are left.
                return Ok(());
            }
        }
    }

    /// Remove `name` from `dir`, whatever it is, without following it. What the agent may not
    /// change (the volume's root-owned `lost+found`, say; nothing the model can have made,
    /// as everything it makes is the agent's) is left and listed in `kept`.
    fn remove(&mut self, dir: BorrowedFd<'_>, name: &CStr, parent: &str, depth: usize) -> WipeResult {
        let shown = show(parent, name);
        let fail = |e: Errno| (shown.clone(), e);
        let st = match statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(fail(e)),
        };
        if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
            return match unlinkat(dir, name, AtFlags::empty()) {
                Ok(()) => {
                    self.removed += 1;
                    Ok(())
                }
                Err(Errno::NOENT) => Ok(()),
                // Its directory is not ours to change.
                Err(Errno::ACCESS | Errno::PERM) => self.keep(shown),
                Err(e) => Err(fail(e)),
            };
        }
        if depth >= MAX_OPEN_DEPTH {
            return self.hoist(dir, name).map_err(fail);
        }
        // Made unreadable or read-only by a chmod from exec: ours to open up again.
        if st.st_mode & 0o700 != 0o700 {
            match make_accessible(dir, name) {
                Ok(()) => {}
                Err(Errno::PERM) => return self.keep(shown),
                Err(e) => return Err(fail(e)),
            }
        }
        let sub = match openat(dir, name, DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ACCESS | Errno::PERM) => return self.keep(shown),
            Err(e) => return Err(fail(e)),
        };
        let kept_before = self.kept.len();
        for child in names_in(sub.as_fd()).map_err(fail)? {
            self.remove(sub.as_fd(), &child, &shown, depth + 1)?;
        }
        drop(sub);
        match unlinkat(dir, name, AtFlags::REMOVEDIR) {
            Ok(()) => {
                self.removed += 1;
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(Errno::ACCESS | Errno::PERM) => self.keep(shown),
            // Something kept inside keeps the directory too.
            Err(Errno::NOTEMPTY) if self.kept.len() > kept_before => self.keep(shown),
            Err(e) => Err(fail(e)),
        }
    }

    fn keep(&mut self, shown: String) -> WipeResult {
        self.kept.push(shown);
        Ok(())
    }

    /// Move a directory nested too deep to the root, where the next pass empties it.
    fn hoist(&mut self, dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
        for _ in 0..1000 {
            let target = format!(".moltmate-wipe-{}", self.hoisted);
            self.hoisted += 1;
            match renameat_with(dir, name, self.root, target.as_str(), RenameFlags::NOREPLACE) {
                Err(Errno::EXIST) => continue,
                other => return other,
            }
        }
        Err(Errno::EXIST)
    }
}

/// `u+rwx` on the directory `name` in `dir`, reached through a handle opened without
/// following links (`O_PATH`, which needs no permission on it) and `/proc/self/fd`, so the
/// mode change lands on that very directory even if a link has taken its name since.
fn make_accessible(dir: BorrowedFd<'_>, name: &CStr) -> Result<(), Errno> {
    let handle: OwnedFd =
        openat(dir, name, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let st = fstat(&handle)?;
    let mode = (st.st_mode & 0o7777) | 0o700;
    rustix::fs::chmod(format!("/proc/self/fd/{}", handle.as_raw_fd()).as_str(), Mode::from_raw_mode(mode))
}

/// The names in a directory (without `.` and `..`), read before anything is removed.
fn names_in(dir: BorrowedFd<'_>) -> Result<Vec<CString>, Errno> {
    let mut names = Vec::new();
    for entry in Dir::read_from(dir)? {
        let name = entry?.file_name().to_owned();
        if name.as_bytes() != b"." && name.as_bytes() != b".." {
            names.push(name);
        }
    }
    Ok(names)
}

fn show(parent: &str, name: &CStr) -> String {
    let name = name.to_string_lossy();
    if parent.is_empty() { name.into_owned() } else { format!("{parent}/{name}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    const KEY: &[u8] = b"agent-token-0123456789";

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    /// A workspace as a chatty user leaves it.
    fn lived_in(dir: &Path) {
        std::fs::write(dir.join("SOUL.md"), "I am Molt.").unwrap();
        std::fs::write(dir.join("MEMORY.md"), "- likes tea\n").unwrap();
        std::fs::create_dir_all(dir.join("sessions")).unwrap();
        std::fs::write(dir.join("sessions/000001.jsonl"), "{}\n").unwrap();
        std::fs::create_dir_all(dir.join("files/notes/deep")).unwrap();
        std::fs::write(dir.join("files/notes/deep/today.txt"), "secret plans").unwrap();
    }

    #[test]
    fn records_need_the_right_key() {
        let text = record_text(3, KEY);
        assert_eq!(parse_record(&text, KEY), Some(3));
        assert_eq!(parse_record(&text, b"another-key-0123456789"), None);
        assert_eq!(parse_record(&text.replacen('3', "9", 1), KEY), None, "a forged generation");
        for junk in ["", "3", "3 zz", "x 00", &format!("{} extra", text.trim())] {
            assert_eq!(parse_record(junk, KEY), None, "{junk:?}");
        }
    }

    #[test]
    fn a_newer_generation_wipes_once_and_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        lived_in(dir.path());
        assert_eq!(apply(dir.path(), 0, true, KEY).unwrap(), Outcome::UpToDate, "never reset: untouched");
        assert!(dir.path().join("MEMORY.md").exists());

        let outcome = apply(dir.path(), 1, true, KEY).unwrap();
        assert!(
            matches!(outcome, Outcome::Wiped { generation: 1, removed, ref kept } if removed >= 8 && kept.is_empty()),
            "{outcome:?}"
        );
        assert_eq!(entries(dir.path()), [RECORD_DIR]);
        assert_eq!(entries(&dir.path().join(RECORD_DIR)), [RECORD_FILE]);

        // A restart with the same generation keeps what the fresh agent wrote since.
        std::fs::write(dir.path().join("MEMORY.md"), "- new life\n").unwrap();
        assert_eq!(apply(dir.path(), 1, true, KEY).unwrap(), Outcome::UpToDate);
        assert_eq!(apply(dir.path(), 0, true, KEY).unwrap(), Outcome::UpToDate, "a lowered generation wipes nothing");
        assert!(dir.path().join("MEMORY.md").exists());
        assert!(matches!(apply(dir.path(), 2, true, KEY).unwrap(), Outcome::Wiped { generation: 2, .. }));
        assert!(!dir.path().join("MEMORY.md").exists());
    }

    #[test]
    fn a_forged_record_does_not_stop_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        lived_in(dir.path());
        // What exec could do from files/: `sort -o ../.moltmate/reset-generation ...`.
        std::fs::create_dir(dir.path().join(RECORD_DIR)).unwrap();
        std::fs::write(dir.path().join(RECORD_DIR).join(RECORD_FILE), "99 00\n").unwrap();
        assert!(matches!(apply(dir.path(), 1, true, KEY).unwrap(), Outcome::Wiped { generation: 1, .. }));
        assert!(!dir.path().join("MEMORY.md").exists());
        // A record written with another user's token counts as none either.
        std::fs::write(dir.path().join("MEMORY.md"), "x").unwrap();
        std::fs::write(dir.path().join(RECORD_DIR).join(RECORD_FILE), record_text(5, b"someone-elses-token-0000"))
            .unwrap();
        assert!(matches!(apply(dir.path(), 2, true, KEY).unwrap(), Outcome::Wiped { generation: 2, .. }));
    }

    #[test]
    fn hostile_symlinks_are_removed_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(outside.path().join("home")).unwrap();
        std::fs::write(outside.path().join("home/precious.txt"), "keep me").unwrap();
        std::fs::write(outside.path().join("file.txt"), "keep me too").unwrap();
        lived_in(dir.path());
        symlink(outside.path().join("home"), dir.path().join("files/escape")).unwrap();
        symlink(outside.path().join("file.txt"), dir.path().join("MEMORY.md.link")).unwrap();
        symlink(outside.path(), dir.path().join("sessions/up")).unwrap();
        // The record's directory itself as a link out: neither read through nor written to.
        symlink(outside.path(), dir.path().join(RECORD_DIR)).unwrap();
        std::fs::write(outside.path().join(RECORD_FILE), record_text(7, KEY)).unwrap();

        assert!(matches!(apply(dir.path(), 1, true, KEY).unwrap(), Outcome::Wiped { generation: 1, .. }));
        assert_eq!(entries(dir.path()), [RECORD_DIR]);
        assert!(!std::fs::symlink_metadata(dir.path().join(RECORD_DIR)).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(outside.path().join("home/precious.txt")).unwrap(), "keep me");
        assert_eq!(std::fs::read_to_string(outside.path().join("file.txt")).unwrap(), "keep me too");
        assert_eq!(entries(outside.path()), ["file.txt", "home", RECORD_FILE]);
    }

    #[test]
    fn locked_and_deeply_nested_directories_are_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let mut deep = dir.path().join("files");
        for i in 0..(MAX_OPEN_DEPTH * 2 + 5) {
            deep.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("bottom.txt"), "x").unwrap();
        // `chmod 000` and `chmod 500` from exec.
        std::fs::create_dir_all(dir.path().join("files/locked/inner")).unwrap();
        std::fs::write(dir.path().join("files/locked/inner/f"), "x").unwrap();
        std::fs::set_permissions(dir.path().join("files/locked/inner"), std::fs::Permissions::from_mode(0o500))
            .unwrap();
        std::fs::set_permissions(dir.path().join("files/locked"), std::fs::Permissions::from_mode(0o000)).unwrap();

        assert!(
            matches!(apply(dir.path(), 1, true, KEY).unwrap(), Outcome::Wiped { generation: 1, ref kept, .. } if kept.is_empty())
        );
        assert_eq!(entries(dir.path()), [RECORD_DIR]);
    }

    #[test]
    fn a_read_only_workspace_is_reported_not_wiped() {
        let dir = tempfile::tempdir().unwrap();
        lived_in(dir.path());
        assert_eq!(apply(dir.path(), 2, false, KEY).unwrap(), Outcome::ReadOnly { wanted: 2, recorded: 0 });
        assert!(dir.path().join("MEMORY.md").exists());
        std::fs::create_dir(dir.path().join(RECORD_DIR)).unwrap();
        std::fs::write(dir.path().join(RECORD_DIR).join(RECORD_FILE), record_text(2, KEY)).unwrap();
        assert_eq!(apply(dir.path(), 2, false, KEY).unwrap(), Outcome::UpToDate, "done while it was writable");
    }
}
