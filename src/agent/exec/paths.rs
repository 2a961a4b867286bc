//! Path confinement: every file argument must resolve, symlinks followed, inside the
//! workspace's `files/`, the working directory, exactly as for the file tools. The rest of
//! the workspace is the agent's own state (SOUL.md, MEMORY.md, sessions/): a
//! command that could write there could rewrite the persona or plant a reply.

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// The working directory of commands, inside the workspace.
pub const FILES_DIR: &str = "files";

/// Directories that can never be a confined workspace (a workspace of `/` confines nothing).
const SYSTEM_DIRS: &[&str] = &["/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/boot"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("`{0}` is outside files/, the only folder commands can use")]
    Outside(String),
    #[error("`{0}` leads outside files/ through a symbolic link")]
    Symlink(String),
    #[error(
        "`{0}` looks like a URI or a descriptor (`scheme:`), which some programs open themselves; name a file in files/ without a colon before any '/'"
    )]
    Uri(String),
    #[error("`{0}` cannot be resolved (a broken symbolic link, or a file used as a directory)")]
    Unresolvable(String),
    #[error("the workspace `{0}` does not exist or cannot be opened")]
    NoWorkspace(String),
    #[error("the workspace `{0}` is a system directory, not a confined workspace")]
    SystemWorkspace(String),
    #[error("the working directory `{0}` leads outside the workspace")]
    EscapingCwd(String),
}

/// A workspace's `files/`, resolved once per command.
#[derive(Debug, Clone)]
pub struct Workspace {
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
        Ok(Self { cwd })
    }

    /// The working directory of commands (`root/files`).
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Resolve `arg` as the kernel would, relative to the working directory, and require
    /// the result inside `files/`. Paths that do not exist yet (output files) are resolved
    /// through their longest existing ancestor.
    pub fn confine(&self, arg: &str) -> Result<PathBuf, PathError> {
        if looks_like_uri(arg) {
            return Err(PathError::Uri(arg.into()));
        }
        let joined = if arg.starts_with('/') { PathBuf::from(arg) } else { self.cwd.join(arg) };
        let real = resolve(&joined).ok_or_else(|| PathError::Unresolvable(arg.into()))?;
        if real.starts_with(&self.cwd) {
            Ok(real)
        } else if lexical(&joined).starts_with(&self.cwd) {
            Err(PathError::Symlink(arg.into()))
        } else {
            Err(PathError::Outside(arg.into()))
        }
    }
}

/// `file:///x`, `fd://0`, `http://h/`, `fd:3`: a scheme (RFC 3986: a letter, then letters,
/// digits, `+`, `-`, `.`) and a colon before any `/`. Programs such as poppler's open these
/// themselves, wherever they point, so no file name of that shape is let through.
fn looks_like_uri(arg: &str) -> bool {
    let head = arg.split('/').next().unwrap_or_default();
    let Some((scheme, _)) = head.split_once(':') else { return false };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
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

        for ok in [
            "a.txt",
            "./a.txt",
            "sub/../a.txt",
            "new-file",
            "sub/new/deeper",
            ".",
            "",
            "inside-link",
            "sub/a:b",
            "notes 10:30",
        ] {
            assert!(w.confine(ok).is_ok(), "{ok}: {:?}", w.confine(ok));
        }
        let abs_inside = files.join("a.txt").display().to_string();
        assert!(w.confine(&abs_inside).is_ok());

        let table = [
            ("/etc/passwd", "is outside files/"),
            ("../../etc/passwd", "is outside files/"),
            ("../..", "is outside files/"),
            ("/proc/self/environ", "is outside files/"),
            // The agent's own state, beside files/.
            ("../MEMORY.md", "is outside files/"),
            ("../SOUL.md", "is outside files/"),
            ("../sessions/replies.jsonl", "is outside files/"),
            ("../.moltmate/reset-generation", "is outside files/"),
            ("..", "is outside files/"),
            ("file:///etc/passwd", "looks like a URI"),
            ("fd://0", "looks like a URI"),
            ("fd:3", "looks like a URI"),
            ("FILE:/x", "looks like a URI"),
            ("http://example.org/x.pdf", "looks like a URI"),
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
