//! Path confinement: every file argument must resolve, symlinks followed, inside the
//! workspace. Relative paths are relative to `workspace/files`, the working directory.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// The working directory of commands, inside the workspace.
pub const FILES_DIR: &str = "files";

/// Directories that can never be a confined workspace (a workspace of `/` confines nothing).
const SYSTEM_DIRS: &[&str] = &["/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("`{0}` is outside the workspace")]
    Outside(String),
    #[error("`{0}` leads outside the workspace through a symbolic link")]
    Symlink(String),
    #[error("`{0}` cannot be resolved (a broken symbolic link, or a file used as a directory)")]
    Unresolvable(String),
    #[error("the workspace `{0}` does not exist or cannot be opened")]
    NoWorkspace(String),
    #[error("the workspace `{0}` is a system directory, not a confined workspace")]
    SystemWorkspace(String),
    #[error("the working directory `{0}` leads outside the workspace")]
    EscapingCwd(String),
}

/// A workspace, resolved once per command.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    cwd: PathBuf,
}

impl Workspace {
    pub fn open(path: &Path) -> Result<Self, PathError> {
        let shown = || path.display().to_string();
        let root = std::fs::canonicalize(path).map_err(|_| PathError::NoWorkspace(shown()))?;
        if root == Path::new("/") || SYSTEM_DIRS.iter().any(|d| root.starts_with(d)) {
            return Err(PathError::SystemWorkspace(shown()));
        }
        let cwd = root.join(FILES_DIR);
        // `files` may not exist yet (the runner creates it); if it does, it must not be a
        // symlink out of the workspace, or every relative path would be relative to elsewhere.
        let cwd = match std::fs::canonicalize(&cwd) {
            Ok(real) if real.starts_with(&root) => real,
            Ok(_) => return Err(PathError::EscapingCwd(FILES_DIR.into())),
            Err(_) if std::fs::symlink_metadata(&cwd).is_err() => cwd,
            Err(_) => return Err(PathError::EscapingCwd(FILES_DIR.into())),
        };
        Ok(Self { root, cwd })
    }

    /// The canonical workspace directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The working directory of commands (`root/files`).
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Resolve `arg` as the kernel would, relative to the working directory, and require
    /// the result inside the workspace. Paths that do not exist yet (output files) are
    /// resolved through their longest existing ancestor.
    pub fn confine(&self, arg: &str) -> Result<PathBuf, PathError> {
        let joined = if arg.starts_with('/') { PathBuf::from(arg) } else { self.cwd.join(arg) };
        let real = resolve(&joined).ok_or_else(|| PathError::Unresolvable(arg.into()))?;
        if real.starts_with(&self.root) {
            Ok(real)
        } else if lexical(&joined).starts_with(&self.root) {
            Err(PathError::Symlink(arg.into()))
        } else {
            Err(PathError::Outside(arg.into()))
        }
    }
}

/// Canonicalize the longest existing ancestor (following every symlink in it), then append
/// the rest lexically: nothing below it exists, so there is no symlink left to follow.
fn resolve(path: &Path) -> Option<PathBuf> {
    for ancestor in path.ancestors() {
        match std::fs::symlink_metadata(ancestor) {
            Ok(_) => {
                // An entry that exists but does not canonicalize is a dangling symlink (or a
                // loop): writing through it would create its target, wherever that is.
                let base = std::fs::canonicalize(ancestor).ok()?;
                let rest = path.strip_prefix(ancestor).ok()?;
                return Some(normalize(base, rest));
            }
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            // Includes NotADirectory (`file.txt/x`): nothing sensible, so refuse.
            Err(_) => return None,
        }
    }
    None
}

fn normalize(mut base: PathBuf, rest: &Path) -> PathBuf {
    for component in rest.components() {
        match component {
            Component::Normal(part) => base.push(part),
            Component::ParentDir => {
                base.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    base
}

/// What the argument says, without asking the filesystem (only to word the refusal).
fn lexical(path: &Path) -> PathBuf {
    normalize(PathBuf::from("/"), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn confines_every_kind_of_path() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let ws = tmp.path().join("ws");
        let files = ws.join(FILES_DIR);
        std::fs::create_dir_all(files.join("sub")).unwrap();
        std::fs::write(files.join("a.txt"), "a").unwrap();
        std::fs::write(ws.join("MEMORY.md"), "m").unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path().join("secret"), files.join("escape")).unwrap();
        symlink(outside.path(), files.join("outdir")).unwrap();
        symlink("a.txt", files.join("inside-link")).unwrap();
        symlink(outside.path().join("new"), files.join("dangling")).unwrap();
        let w = Workspace::open(&ws).unwrap();

        for ok in ["a.txt", "./a.txt", "sub/../a.txt", "new-file", "sub/new/deeper", "../MEMORY.md", "..", "", "inside-link"] {
            assert!(w.confine(ok).is_ok(), "{ok}: {:?}", w.confine(ok));
        }
        let abs_inside = files.join("a.txt").display().to_string();
        assert!(w.confine(&abs_inside).is_ok());

        let table = [
            ("/etc/passwd", "is outside the workspace"),
            ("../../etc/passwd", "is outside the workspace"),
            ("../..", "is outside the workspace"),
            ("/proc/self/environ", "is outside the workspace"),
            ("escape", "through a symbolic link"),
            ("outdir/secret", "through a symbolic link"),
            ("outdir/new-file", "through a symbolic link"),
            ("outdir/..", "through a symbolic link"),
            ("dangling", "cannot be resolved"),
            ("a.txt/..", "a file used as a directory"),
            ("a.txt/new", "a file used as a directory"),
        ];
        for (arg, want) in table {
            let err = w.confine(arg).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(&format!("`{arg}`")), "{arg}: {err}");
        }
    }

    #[test]
    fn refuses_unconfined_workspaces() {
        assert!(matches!(Workspace::open(Path::new("/")), Err(PathError::SystemWorkspace(_))));
        assert!(matches!(Workspace::open(Path::new("/etc")), Err(PathError::SystemWorkspace(_))));
        assert!(matches!(Workspace::open(Path::new("/nonexistent/ws")), Err(PathError::NoWorkspace(_))));

        let tmp = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), tmp.path().join(FILES_DIR)).unwrap();
        assert!(matches!(Workspace::open(tmp.path()), Err(PathError::EscapingCwd(_))));
    }
}
