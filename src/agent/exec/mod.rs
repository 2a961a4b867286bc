//! The exec tool's policy and runner: no shell, ever.
//!
//! A command line goes through four pure steps, one module each, before anything runs:
//! 1. `tokenize`: argv with POSIX quoting, refusing whatever a shell would interpret;
//! 2. `program`: argv[0] allowed by the security level, found only in /usr/bin or /bin;
//! 3. `rules`: per-program options (failing closed) and which arguments name files;
//! 4. `paths`: every such file inside the workspace's `files/`, symlinks followed, and
//!    nothing written when the workspace is read-only.
//!
//! `runner` then runs the result; it is the only module that starts processes. `catalog`
//! holds what we know about programs by name.

pub mod catalog;
pub mod cli;
mod paths;
mod program;
pub(crate) mod rules;
mod runner;
mod tokenize;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use paths::FILES_DIR;
pub use program::TRUSTED_DIRS;

use crate::crd::{ExecSecurity, WorkspaceAccess};
use crate::profile::ResolvedProfile;
use rules::Access;

/// What the exec tool may run for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecPolicy {
    pub security: ExecSecurity,
    pub safe_bins: Vec<String>,
    pub workspace_access: WorkspaceAccess,
}

impl ExecPolicy {
    pub fn from_profile(profile: &ResolvedProfile) -> Self {
        Self {
            security: profile.exec_security,
            safe_bins: profile.safe_bins.clone(),
            workspace_access: profile.workspace_access,
        }
    }
}

/// Limits of one run.
#[derive(Debug, Clone)]
pub struct ExecLimits {
    pub timeout: Duration,
    /// Per stream (stdout and stderr each).
    pub max_output_bytes: usize,
    /// Address space and data segment of the command (RLIMIT_AS, RLIMIT_DATA).
    pub max_memory_bytes: u64,
    /// The largest file the command may write (RLIMIT_FSIZE; SIGXFSZ beyond).
    pub max_file_bytes: u64,
}

/// The largest file a command may write when the workspace has room.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The memory of a command when the container's limit is unknown.
const DEFAULT_EXEC_MEMORY: u64 = 256 * 1024 * 1024;

impl Default for ExecLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_output_bytes: 64 * 1024,
            max_memory_bytes: DEFAULT_EXEC_MEMORY,
            max_file_bytes: MAX_FILE_BYTES,
        }
    }
}

impl ExecLimits {
    /// A command may use half the container's memory limit (`512Mi`, as the profile gives
    /// it): one runaway command (a regex that grows without bound) then fails its own
    /// allocation, instead of the kernel killing the agent with the whole container.
    pub fn memory_for_container(container_limit: &str) -> u64 {
        crate::quantity::Quantity::parse(container_limit)
            .ok()
            .and_then(|q| q.whole())
            .map(|bytes| bytes / 2)
            .filter(|bytes| *bytes > 0)
            .unwrap_or(DEFAULT_EXEC_MEMORY)
    }
}

/// A command the policy allowed: the program's absolute path and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Why a command was refused; the text goes back to the model as the tool result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `None` when the command was killed by a signal (the timeout included).
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub timed_out: bool,
    pub duration: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("command denied: {0}")]
    Denied(#[from] Denied),
    #[error("could not run the command: {0}")]
    Io(#[from] std::io::Error),
}

fn deny(reason: impl std::fmt::Display) -> Denied {
    Denied(reason.to_string())
}

/// Decide whether `command_line` may run in `workspace` under `policy`.
pub fn check(policy: &ExecPolicy, workspace: &Path, command_line: &str) -> Result<Approved, Denied> {
    plan(policy, workspace, command_line).map(|(approved, _)| approved)
}

fn plan(policy: &ExecPolicy, workspace: &Path, command_line: &str) -> Result<(Approved, paths::Workspace), Denied> {
    let argv = tokenize::split(command_line).map_err(deny)?;
    let (name, args) = argv.split_first().ok_or_else(|| deny(tokenize::SyntaxError::Empty))?;
    let program = program::resolve(policy, name).map_err(deny)?;
    let plan = rules::analyze(&program, args).map_err(deny)?;
    let workspace = paths::Workspace::open(workspace).map_err(deny)?;

    let read_only = policy.workspace_access == WorkspaceAccess::Ro;
    if read_only
        && let Some(writer) = [name.as_str(), program.canonical_name()].into_iter().find(|n| catalog::writes(n))
    {
        return Err(Denied(format!("`{writer}` writes files, but the workspace is read-only")));
    }
    for file in &plan.files {
        workspace.confine(&file.path).map_err(deny)?;
        if read_only && file.access == Access::Write {
            return Err(Denied(format!("`{name}` would write `{}`, but the workspace is read-only", file.path)));
        }
    }
    Ok((Approved { program: program.path, args: plan.args }, workspace))
}

/// Check, then run under the limits (working directory `workspace/files`, created if
/// missing).
pub async fn execute(
    policy: &ExecPolicy,
    workspace: &Path,
    command_line: &str,
    limits: &ExecLimits,
) -> Result<ExecOutcome, ExecError> {
    let (approved, workspace) = plan(policy, workspace, command_line)?;
    match tokio::fs::create_dir(workspace.cwd()).await {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
            let context = format!("cannot create the working directory {}: {e}", workspace.cwd().display());
            return Err(ExecError::Io(std::io::Error::new(e.kind(), context)));
        }
        _ => {}
    }
    Ok(runner::run(&approved, workspace.cwd(), limits).await?)
}
