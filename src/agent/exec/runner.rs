//! Running an approved command: no shell, a fixed environment, its own process group,
//! resource limits, a timeout that kills the whole group, and capped output.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::time::{Duration, Instant as Deadline};

use super::program::TRUSTED_DIRS;
use super::{Approved, ExecLimits, ExecOutcome};

/// The locale of every command, so output does not depend on the agent's environment.
pub const LOCALE: &str = "C.UTF-8";
/// RLIMIT_NPROC counts every process of the uid (node-wide without user namespaces, and
/// all agents share one uid), so this only stops runaway forking; the pod's pids limit is
/// the real bound.
const MAX_PROCESSES: u64 = 1024;
/// How long output may keep coming after the deadline (a process that left the group).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Kills the command's process group when dropped, so a cancelled `execute` (the agent
/// gave up on the tool call) leaves nothing running.
struct Group(Option<Pid>);

impl Group {
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // ESRCH (nobody left) is the normal case.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// (resource, soft, hard), clamped to the hard limits we inherited (raising them fails).
fn rlimits(limits: &ExecLimits) -> std::io::Result<Vec<(Resource, u64, u64)>> {
    // CPU time cannot exceed wall time; the limit backs up the timeout if killing fails.
    let cpu = limits.timeout.as_secs().saturating_add(1);
    let wanted = [
        (Resource::RLIMIT_CPU, cpu, cpu.saturating_add(1)),
        (Resource::RLIMIT_FSIZE, limits.max_file_bytes, limits.max_file_bytes),
        (Resource::RLIMIT_NPROC, MAX_PROCESSES, MAX_PROCESSES),
        (Resource::RLIMIT_CORE, 0, 0),
        (Resource::RLIMIT_AS, limits.max_memory_bytes, limits.max_memory_bytes),
        (Resource::RLIMIT_DATA, limits.max_memory_bytes, limits.max_memory_bytes),
    ];
    wanted
        .into_iter()
        .map(|(resource, soft, hard)| {
            let (_, inherited) = getrlimit(resource)?;
            Ok((resource, soft.min(inherited), hard.min(inherited)))
        })
        .collect()
}

#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    dropped: u64,
    cut_off: bool,
}

/// Read a stream to its end (or `until`), keeping at most `cap` bytes: the rest is read
/// and counted but not stored, so a chatty command neither blocks on a full pipe nor
/// fills the agent's memory.
async fn capture(reader: Option<impl AsyncRead + Unpin>, cap: usize, until: Deadline) -> Captured {
    let mut out = Captured::default();
    let Some(mut reader) = reader else { return out };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match tokio::time::timeout_at(until, reader.read(&mut buf)).await {
            Err(_) => {
                out.cut_off = true;
                return out;
            }
            Ok(Ok(0) | Err(_)) => return out,
            Ok(Ok(n)) => {
                let keep = n.min(cap.saturating_sub(out.kept.len()));
                out.kept.extend_from_slice(&buf[..keep]);
                out.dropped += (n - keep) as u64;
            }
        }
    }
}

/// The text the model sees, with a marker where output was cut.
fn text(captured: Captured, cap: usize) -> (String, bool) {
    let Captured { mut kept, mut dropped, .. } = captured;
    if dropped == 0 {
        return (String::from_utf8_lossy(&kept).into_owned(), false);
    }
    // Do not end on half a UTF-8 character.
    if let Err(e) = std::str::from_utf8(&kept)
        && e.error_len().is_none()
    {
        dropped += (kept.len() - e.valid_up_to()) as u64;
        kept.truncate(e.valid_up_to());
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    text.push_str(&format!("\n[output truncated: {dropped} more bytes not shown (limit {cap} bytes)]\n"));
    (text, true)
}

/// Run in `cwd` (the workspace's `files/`), which is also HOME: a program's own dotfiles
/// stay where commands may write.
pub async fn run(approved: &Approved, cwd: &Path, limits: &ExecLimits) -> std::io::Result<ExecOutcome> {
    let started = Instant::now();
    let deadline = Deadline::now() + limits.timeout;
    let rlimits = rlimits(limits)?;

    let mut command = Command::new(&approved.program);
    command
        .args(&approved.args)
        .env_clear()
        .env("PATH", TRUSTED_DIRS.join(":"))
        .env("LC_ALL", LOCALE)
        .env("HOME", cwd)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: runs in the forked child before exec. It only makes async-signal-safe system
    // calls (prctl, setrlimit, sigaction) on values computed before the fork, and allocates
    // nothing.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_no_new_privs()?;
            for &(resource, soft, hard) in &rlimits {
                setrlimit(resource, soft, hard)?;
            }
            // Past the file-size limit a write then fails with EFBIG ("File too large", which
            // the program reports) instead of SIGXFSZ killing it without a word.
            // (sigaction is async-signal-safe; SIG_IGN installs no handler.)
            nix::sys::signal::signal(Signal::SIGXFSZ, nix::sys::signal::SigHandler::SigIgn)?;
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    // The child leads its own group, so its pid is the group id.
    let mut group = Group(child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw));

    let cap = limits.max_output_bytes;
    let until = deadline + DRAIN_GRACE;
    let stdout = tokio::spawn(capture(child.stdout.take(), cap, until));
    let stderr = tokio::spawn(capture(child.stderr.take(), cap, until));

    let mut timed_out = false;
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = tokio::time::sleep_until(deadline) => {
            timed_out = true;
            // Kill before reaping: while the leader is unreaped its pid cannot be reused.
            group.kill();
            child.wait().await?
        }
    };
    // Whatever the command left running in its group dies with it. The group id stays
    // reserved while any member is alive; with none left, this finds nobody (short of the
    // pid being reused in the microseconds since the leader was reaped).
    group.kill();

    let (out, err) = (stdout.await.unwrap_or_default(), stderr.await.unwrap_or_default());
    // A pipe still open at the deadline means a process escaped the group (setsid).
    timed_out |= out.cut_off || err.cut_off;
    let (stdout, out_truncated) = text(out, cap);
    let (stderr, err_truncated) = text(err, cap);
    Ok(ExecOutcome {
        exit_code: status.code(),
        stdout,
        stderr,
        truncated: out_truncated || err_truncated,
        timed_out,
        duration: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_whole_characters_and_says_so() {
        let captured = Captured { kept: "aé".as_bytes()[..2].to_vec(), dropped: 10, cut_off: false };
        let (text, truncated) = text(captured, 2);
        assert!(truncated);
        assert!(text.starts_with("a\n[output truncated: 11 more bytes not shown (limit 2 bytes)]"), "{text}");
    }
}
