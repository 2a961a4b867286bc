//! argv[0] -> the program file: a bare name, allowed by the security level, looked up only
//! in the trusted directories (never through an inherited PATH), and still inside them
//! after following symlinks.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::ExecPolicy;
use super::catalog;
use crate::crd::ExecSecurity;

/// Where programs come from, in lookup order.
pub const TRUSTED_DIRS: &[&str] = &["/usr/bin", "/bin"];

/// A program the security level allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    /// The name the agent asked for (`awk`).
    pub name: String,
    /// The path in a trusted directory that will be executed (`/usr/bin/awk`), so the
    /// program sees the name it was asked by (multi-call binaries dispatch on it).
    pub path: PathBuf,
    /// The file that path resolves to (`/usr/bin/mawk`).
    pub canonical: PathBuf,
}

impl Program {
    /// The file name of the resolved program (`mawk` for `awk`).
    pub fn canonical_name(&self) -> &str {
        self.canonical.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    #[error("`{0}` is a path; name a program such as `cat` instead (programs come only from /usr/bin and /bin)")]
    Path(String),
    #[error("`{0}` is not a program name")]
    BadName(String),
    #[error("`{name}` is not in safeBins (allowed: {allowed})")]
    NotAllowlisted { name: String, allowed: String },
    #[error("`{name}` {why}, which would escape the allowlist; it cannot be allowed even when listed in safeBins")]
    EscapesAllowlist { name: String, why: &'static str },
    #[error("`{name}` {why}; it is blocked under `security: blocklist`")]
    Blocked { name: String, why: &'static str },
    #[error(
        "`{0}` is not a program the policy knows; under `security: blocklist` only known programs run (an admin can list it in safeBins under `allowlist`)"
    )]
    Unclassified(String),
    #[error("`{name}` is a script run by `{interpreter}`, which {why}; it is blocked under `security: blocklist`")]
    Script { name: String, interpreter: String, why: &'static str },
    #[error("`{0}` was not found in /usr/bin or /bin")]
    NotFound(String),
    #[error("`{name}` resolves to `{target}`, outside the trusted directories /usr/bin and /bin")]
    Untrusted { name: String, target: String },
    #[error("`{0}` is not a regular executable file")]
    NotExecutable(String),
    #[error("`{0}` is setuid or setgid; privileged programs are never run")]
    Privileged(String),
}

/// Same rule as the CRD's PROGRAM_NAME_PATTERN: `^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,63}$`.
fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '.' | '-');
    name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+'))
        && name.chars().all(ok)
}

/// Whether the security level lets `name` (or the file it resolves to) run.
fn permitted(policy: &ExecPolicy, name: &str) -> Result<(), ProgramError> {
    let danger = catalog::danger(name);
    match policy.security {
        ExecSecurity::Allowlist => match danger {
            Some(d) if d.escapes_allowlist() => {
                Err(ProgramError::EscapesAllowlist { name: name.into(), why: d.describe() })
            }
            _ => Ok(()),
        },
        // Fail closed: a program nobody classified may run others (`setarch` does).
        ExecSecurity::Blocklist => match danger {
            Some(d) => Err(ProgramError::Blocked { name: name.into(), why: d.describe() }),
            None if catalog::known_safe(name) || super::rules::has_rule(name) => Ok(()),
            None => Err(ProgramError::Unclassified(name.into())),
        },
        ExecSecurity::Full => Ok(()),
    }
}

pub fn resolve(policy: &ExecPolicy, name: &str) -> Result<Program, ProgramError> {
    let dirs: Vec<PathBuf> = TRUSTED_DIRS.iter().map(PathBuf::from).collect();
    resolve_in(policy, name, &dirs)
}

/// `resolve` with the trusted directories as a parameter, for tests.
pub(super) fn resolve_in(policy: &ExecPolicy, name: &str, dirs: &[PathBuf]) -> Result<Program, ProgramError> {
    if name.contains('/') {
        return Err(ProgramError::Path(name.into()));
    }
    if !valid_name(name) {
        return Err(ProgramError::BadName(name.into()));
    }
    if policy.security == ExecSecurity::Allowlist && !policy.safe_bins.iter().any(|b| b == name) {
        let allowed = if policy.safe_bins.is_empty() { "nothing".to_string() } else { policy.safe_bins.join(", ") };
        return Err(ProgramError::NotAllowlisted { name: name.into(), allowed });
    }
    permitted(policy, name)?;

    let (path, canonical) = locate(name, dirs)?;
    let program = Program { name: name.into(), path, canonical };
    // The file behind the name matters too: `/usr/bin/pager -> less`, `cat -> busybox`.
    let real = program.canonical_name().to_string();
    if real != name {
        permitted(policy, &real)?;
    }
    // Under blocklist every unlisted program runs, and a script runs its interpreter:
    // `pdb3 x.py` is Python. (Under allowlist the admin named the program.)
    if policy.security == ExecSecurity::Blocklist
        && let Some(interpreter) = interpreter(&program.canonical)
        && let Some(danger) = catalog::danger(&interpreter)
    {
        return Err(ProgramError::Script { name: name.into(), interpreter, why: danger.describe() });
    }
    Ok(program)
}

/// The interpreter of a `#!` script (`#!/usr/bin/env python3` -> `python3`), if it is one.
fn interpreter(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let mut head = [0u8; 256];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..n].strip_prefix(b"#!")?;
    let line = String::from_utf8_lossy(line.split(|&b| b == b'\n').next()?).into_owned();
    let mut words = line.split_whitespace();
    let mut program = words.next()?.rsplit('/').next()?.to_string();
    if program == "env" {
        program = words.find(|w| !w.starts_with('-'))?.rsplit('/').next()?.to_string();
    }
    Some(program)
}

/// Find `name` in the first trusted directory that has it; refuse anything that leaves them.
fn locate(name: &str, dirs: &[PathBuf]) -> Result<(PathBuf, PathBuf), ProgramError> {
    let trusted: Vec<PathBuf> = dirs.iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect();
    for dir in dirs {
        let candidate = dir.join(name);
        if std::fs::symlink_metadata(&candidate).is_err() {
            continue;
        }
        // The first directory that has the name decides: no falling through to the next one
        // when this entry is bad (that would make the lookup order attacker-influenced).
        let canonical = std::fs::canonicalize(&candidate).map_err(|_| ProgramError::NotFound(name.into()))?;
        if !canonical.parent().is_some_and(|p| trusted.iter().any(|t| t == p)) {
            return Err(ProgramError::Untrusted { name: name.into(), target: canonical.display().to_string() });
        }
        let meta = std::fs::metadata(&canonical).map_err(|_| ProgramError::NotFound(name.into()))?;
        let mode = meta.permissions().mode();
        if !meta.is_file() || mode & 0o111 == 0 {
            return Err(ProgramError::NotExecutable(name.into()));
        }
        if mode & 0o6000 != 0 {
            return Err(ProgramError::Privileged(name.into()));
        }
        return Ok((candidate, canonical));
    }
    Err(ProgramError::NotFound(name.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::WorkspaceAccess;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    fn policy(security: ExecSecurity, bins: &[&str]) -> ExecPolicy {
        ExecPolicy {
            security,
            safe_bins: bins.iter().map(|s| s.to_string()).collect(),
            workspace_access: WorkspaceAccess::Rw,
        }
    }

    fn executable(path: &Path, mode: u32) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn lookup_stays_in_the_trusted_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&elsewhere).unwrap();
        executable(&bin.join("good"), 0o755);
        executable(&bin.join("plain"), 0o644);
        executable(&bin.join("suid"), 0o4755);
        executable(&elsewhere.join("evil"), 0o755);
        std::fs::write(bin.join("pyscript"), "#!/usr/bin/env python3\nimport os\n").unwrap();
        std::fs::set_permissions(bin.join("pyscript"), std::fs::Permissions::from_mode(0o755)).unwrap();
        // Names the catalog knows as safe, planted as scripts.
        std::fs::copy(bin.join("pyscript"), bin.join("date")).unwrap();
        std::fs::copy(bin.join("good"), bin.join("stat")).unwrap();
        symlink(elsewhere.join("evil"), bin.join("foo")).unwrap();
        symlink("good", bin.join("alias")).unwrap();
        symlink(tmp.path().join("nowhere"), bin.join("dangling")).unwrap();
        std::fs::create_dir(bin.join("adir")).unwrap();
        let dirs = vec![bin.clone()];
        let full = policy(ExecSecurity::Full, &[]);

        let blocklist = policy(ExecSecurity::Blocklist, &[]);
        let err = resolve_in(&blocklist, "date", &dirs).unwrap_err().to_string();
        assert!(err.contains("`date` is a script run by `python3`"), "{err}");
        // `stat` is a script too, but for `sh`: the same rule.
        assert!(resolve_in(&blocklist, "stat", &dirs).unwrap_err().to_string().contains("run by `sh`"));
        // A program the catalog does not know is refused under blocklist, whatever it is.
        let err = resolve_in(&blocklist, "pyscript", &dirs).unwrap_err().to_string();
        assert!(err.contains("`pyscript` is not a program the policy knows"), "{err}");
        assert!(resolve_in(&full, "pyscript", &dirs).is_ok());

        let ok = resolve_in(&full, "alias", &dirs).unwrap();
        assert_eq!(ok.path, bin.join("alias"));
        assert_eq!(ok.canonical_name(), "good");

        let table = [
            ("foo", "outside the trusted directories"),
            ("plain", "not a regular executable"),
            ("adir", "not a regular executable"),
            ("suid", "setuid"),
            ("dangling", "not found"),
            ("missing", "not found"),
        ];
        for (name, want) in table {
            let err = resolve_in(&full, name, &dirs).unwrap_err().to_string();
            assert!(err.contains(want) && err.contains(name), "{name}: {err}");
        }
    }

    #[test]
    fn security_levels_decide_before_the_filesystem() {
        let dirs: Vec<PathBuf> = vec![];
        let table = [
            (policy(ExecSecurity::Allowlist, &["cat"]), "python3", "`python3` is not in safeBins (allowed: cat)"),
            (policy(ExecSecurity::Allowlist, &[]), "cat", "`cat` is not in safeBins (allowed: nothing)"),
            (policy(ExecSecurity::Allowlist, &["env"]), "env", "`env` runs other programs"),
            (policy(ExecSecurity::Blocklist, &[]), "bash", "`bash` is a shell; it is blocked"),
            (policy(ExecSecurity::Blocklist, &[]), "curl", "`curl` talks to the network"),
            (policy(ExecSecurity::Full, &[]), "/bin/cat", "`/bin/cat` is a path"),
            (policy(ExecSecurity::Full, &[]), "-rf", "`-rf` is not a program name"),
        ];
        for (p, name, want) in table {
            let err = resolve_in(&p, name, &dirs).unwrap_err().to_string();
            assert!(err.contains(want), "{name}: {err}");
        }
    }
}
