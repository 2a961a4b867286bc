//! What each user's agent may run: exec security `allowlist` unless the profile is
//! `personal`, and no dangerous program in safeBins.

use kube::ResourceExt;

use super::install::Install;
use crate::audit::finding::{Finding, object};
use crate::audit::snapshot::Snapshot;
use crate::crd::{ExecSecurity, Profile};
use crate::profile::{self, ResolvedProfile};

// The agent's own catalog of dangerous programs (shells, interpreters, programs that run
// programs, process tools, network clients, destructive and archive tools): the audit and the
// exec policy judge a name by one list.
use crate::agent::exec::catalog;

pub const SECURITY: &str = "exec-security";
pub const SAFE_BINS: &str = "safe-bins";

/// What listing a program in safeBins means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It hands the agent more than reading and filtering its workspace: FAIL.
    Dangerous(String),
    /// It can run programs or write by design; the agent's per-program rules refuse those
    /// options, but one rule missed would be an escape: WARN.
    Guarded(&'static str),
    Fine,
}

/// Beyond the agent's catalog, these are destructive (the security model lists them as dangerous). The agent
/// lets them run under `allowlist` (they only touch the workspace), but in a multi-user
/// install they let a prompt-injected agent wreck its person's data.
const DESTRUCTIVE: &[(&str, &str)] = &[
    // Renames over any file: replaces SOUL.md or MEMORY.md, buries the session history.
    ("mv", "moves files over others (the security model lists it as destructive)"),
    // Makes workspace files unreadable or unwritable to the agent itself (its memory, history).
    ("chmod", "changes file permissions"),
];

/// Programs with a built-in way to run commands: GNU sed's `e` command and `s///e` flag,
/// awk's `system()` and pipes, find's `-exec`/`-ok`/`-delete`. The agent's rules refuse them.
const GUARDED: &[(&str, &str)] = &[
    ("sed", "can run shell commands (`e`, `s///e`) and write files (`w`); only the agent's sed rules stop that"),
    ("awk", "can run shell commands (`system()`, pipes); only the agent's awk rules stop that"),
    ("gawk", "can run shell commands (`system()`, pipes); only the agent's awk rules stop that"),
    ("mawk", "can run shell commands (`system()`, pipes); only the agent's awk rules stop that"),
    ("nawk", "can run shell commands (`system()`, pipes); only the agent's awk rules stop that"),
    ("find", "can run programs (`-exec`, `-ok`) and delete files (`-delete`); only the agent's find rules stop that"),
];

pub fn classify(bin: &str) -> Verdict {
    if bin.contains('/') || bin.is_empty() {
        return Verdict::Dangerous("is not a bare program name".into());
    }
    if let Some(danger) = catalog::danger(bin) {
        return Verdict::Dangerous(danger.describe().into());
    }
    let lower = bin.to_ascii_lowercase();
    if let Some((_, why)) = DESTRUCTIVE.iter().find(|(name, _)| *name == lower) {
        return Verdict::Dangerous((*why).into());
    }
    match GUARDED.iter().find(|(name, _)| *name == lower) {
        Some((_, why)) => Verdict::Guarded(why),
        None => Verdict::Fine,
    }
}

pub fn check(snap: &Snapshot, install: &Install, out: &mut Vec<Finding>) {
    let mut security = Vec::new();
    let mut bins = Vec::new();
    for user in &snap.users {
        let name = user.name_any();
        let what = object("MoltmateUser", None, &name);
        match profile::resolve_with(&user.spec, &install.cluster.profiles) {
            Ok(resolved) => {
                security.push(exec_security(&what, &name, &resolved));
                bins.push(safe_bins(&what, &name, &resolved));
            }
            Err(e) => security.push(Finding::fail(
                SECURITY,
                what,
                format!("the spec does not resolve ({e}); the operator gives this user no sandbox"),
                format!("fix the spec: kubectl edit mmu {name}"),
            )),
        }
    }
    out.extend(security);
    out.extend(bins);
}

fn security_name(s: ExecSecurity) -> &'static str {
    match s {
        ExecSecurity::Allowlist => "allowlist",
        ExecSecurity::Blocklist => "blocklist",
        ExecSecurity::Full => "full",
    }
}

fn exec_security(what: &str, name: &str, p: &ResolvedProfile) -> Finding {
    let level = security_name(p.exec_security);
    let profile = p.profile.as_str();
    match (p.exec_security, p.profile) {
        (ExecSecurity::Allowlist, _) => Finding::pass(SECURITY, what, format!("allowlist ({profile})")),
        (_, Profile::Personal) => Finding::pass(
            SECURITY,
            what,
            format!("{level}: allowed for the personal profile (the operator's own agent)"),
        ),
        (_, _) => Finding::fail(
            SECURITY,
            what,
            format!(
                "exec security is `{level}` for a `{profile}` user: the agent may run {} program in /usr/bin and /bin",
                if p.exec_security == ExecSecurity::Full { "any" } else { "almost any" }
            ),
            format!(
                "kubectl patch mmu {name} --type merge -p '{{\"spec\":{{\"exec\":{{\"security\":\"allowlist\"}}}}}}' \
                 (or drop spec.exec.security, and any `exec.security` in the profile defaults for {profile})"
            ),
        ),
    }
}

fn safe_bins(what: &str, name: &str, p: &ResolvedProfile) -> Finding {
    let mut dangerous = Vec::new();
    let mut guarded = Vec::new();
    for bin in &p.safe_bins {
        match classify(bin) {
            Verdict::Dangerous(why) => dangerous.push(format!("`{bin}` {why}")),
            Verdict::Guarded(why) => guarded.push(format!("`{bin}` {why}")),
            Verdict::Fine => {}
        }
    }
    let fix = |list: &[String]| {
        let names: Vec<&str> = list.iter().filter_map(|s| s.split('`').nth(1)).collect();
        format!(
            "remove {} from spec.exec.safeBins (kubectl edit mmu {name}) or from the profile defaults; \
             the agent's file tools and the broker's web fetch cover reading, writing and fetching",
            names.join(", ")
        )
    };
    if !dangerous.is_empty() {
        let message = format!("safeBins lists {}", dangerous.join("; "));
        // The personal profile is the operator's own agent: its owner's call, but worth a look.
        return if p.profile == Profile::Personal {
            Finding::warn(SAFE_BINS, what, message, fix(&dangerous))
        } else {
            Finding::fail(SAFE_BINS, what, message, fix(&dangerous))
        };
    }
    if !guarded.is_empty() {
        return Finding::warn(SAFE_BINS, what, format!("safeBins lists {}", guarded.join("; ")), fix(&guarded));
    }
    let count = p.safe_bins.len();
    Finding::pass(SAFE_BINS, what, format!("{count} program{}, none dangerous", if count == 1 { "" } else { "s" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_programs_by_class() {
        for bin in [
            "sh",
            "bash",
            "zsh",
            "dash",
            "busybox", // shells
            "python",
            "python3.11",
            "perl",
            "ruby",
            "node",
            "php",
            "lua5.4", // interpreters
            "curl",
            "wget",
            "nc",
            "ssh",
            "scp",
            "rsync",
            "ftp",
            "telnet",
            "socat", // network
            "rm",
            "dd",
            "mkfs.ext4",
            "shred",
            "chown",
            "mv",
            "chmod", // destructive
            "env",
            "xargs",
            "sudo",
            "su",
            "timeout",
            "nice", // run other programs
            "kill",
            "ps",       // other processes
            "/bin/cat", // a path
        ] {
            assert!(matches!(classify(bin), Verdict::Dangerous(_)), "{bin}");
        }
        for bin in ["sed", "awk", "gawk", "find"] {
            assert!(matches!(classify(bin), Verdict::Guarded(_)), "{bin}");
        }
        for bin in ["cat", "head", "tail", "grep", "wc", "ls", "sort", "uniq", "cut", "tr", "pdftotext"] {
            assert_eq!(classify(bin), Verdict::Fine, "{bin}");
        }
    }

    #[test]
    fn no_preset_is_flagged() {
        for profile in [Profile::Family, Profile::Public, Profile::HighSecurity] {
            for bin in crate::profile::preset(profile).safe_bins {
                assert_eq!(classify(&bin), Verdict::Fine, "{profile:?}: {bin}");
            }
        }
    }
}
