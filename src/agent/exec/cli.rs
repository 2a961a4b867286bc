//! `moltmate exec-policy`: the exec policy on its own, for admins and tests.
//!
//! `check` prints `ALLOW` or `DENY: <reason>` (exit 0 or 1). `run` runs the command as the
//! agent's exec tool would and exits with its exit code; a refusal prints `DENY: <reason>`
//! on stderr and exits 1, a timeout exits 124.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{ExecLimits, ExecPolicy, check, execute};
use crate::crd::{ExecSecurity, Profile, WorkspaceAccess};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ExecPolicyCommand {
    /// Print ALLOW or DENY: <reason> for a command line (exit 0 or 1).
    Check(CheckArgs),
    /// Run a command line under the policy in a workspace, as the agent's exec tool does.
    Run(RunArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct PolicyArgs {
    /// Trust-level preset that supplies whatever is not given below.
    #[arg(long, value_enum, default_value = "public")]
    pub profile: ProfileArg,
    /// Exec security level (default: the profile's).
    #[arg(long, value_enum)]
    pub security: Option<SecurityArg>,
    /// Comma-separated program names for `allowlist` (default: the profile's).
    #[arg(long, value_delimiter = ',')]
    pub safe_bins: Option<Vec<String>>,
    /// Workspace access (default: the profile's).
    #[arg(long, value_enum)]
    pub workspace_access: Option<AccessArg>,
    /// The workspace; commands run in its `files` directory (default: the current directory).
    #[arg(long)]
    pub workspace: Option<PathBuf>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// The command line, as one argument: `-- 'grep -r foo .'`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: String,
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Kill the command (and everything it started) after this long: `10s`, `500ms`.
    #[arg(long, value_parser = crate::duration::parse_arg, default_value = "10s")]
    pub timeout: Duration,
    /// The command line, as one argument: `-- 'grep -r foo .'`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: String,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ProfileArg {
    Personal,
    Family,
    Public,
    HighSecurity,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum SecurityArg {
    Allowlist,
    Blocklist,
    Full,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum AccessArg {
    Rw,
    Ro,
}

impl PolicyArgs {
    fn policy(&self) -> ExecPolicy {
        let preset = crate::profile::preset(match self.profile {
            ProfileArg::Personal => Profile::Personal,
            ProfileArg::Family => Profile::Family,
            ProfileArg::Public => Profile::Public,
            ProfileArg::HighSecurity => Profile::HighSecurity,
        });
        ExecPolicy {
            security: match self.security {
                Some(SecurityArg::Allowlist) => ExecSecurity::Allowlist,
                Some(SecurityArg::Blocklist) => ExecSecurity::Blocklist,
                Some(SecurityArg::Full) => ExecSecurity::Full,
                None => preset.exec_security,
            },
            safe_bins: match &self.safe_bins {
                Some(bins) => bins.iter().map(|b| b.trim().to_string()).filter(|b| !b.is_empty()).collect(),
                None => preset.safe_bins,
            },
            workspace_access: match self.workspace_access {
                Some(AccessArg::Rw) => WorkspaceAccess::Rw,
                Some(AccessArg::Ro) => WorkspaceAccess::Ro,
                None => preset.workspace_access,
            },
        }
    }

    fn workspace(&self) -> std::io::Result<PathBuf> {
        match &self.workspace {
            Some(path) => Ok(path.clone()),
            None => std::env::current_dir(),
        }
    }
}

pub async fn run(command: ExecPolicyCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        ExecPolicyCommand::Check(args) => {
            match check(&args.policy.policy(), &args.policy.workspace()?, &args.command) {
                Ok(_) => {
                    println!("ALLOW");
                    Ok(ExitCode::SUCCESS)
                }
                Err(denied) => {
                    println!("DENY: {denied}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        ExecPolicyCommand::Run(args) => {
            let limits = ExecLimits { timeout: args.timeout, ..ExecLimits::default() };
            let outcome = match execute(&args.policy.policy(), &args.policy.workspace()?, &args.command, &limits).await
            {
                Ok(outcome) => outcome,
                Err(super::ExecError::Denied(denied)) => {
                    eprintln!("DENY: {denied}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) => return Err(e.into()),
            };
            std::io::stdout().write_all(outcome.stdout.as_bytes())?;
            std::io::stderr().write_all(outcome.stderr.as_bytes())?;
            if outcome.timed_out {
                eprintln!(
                    "moltmate: the command timed out after {} and was killed",
                    humantime::format_duration(args.timeout)
                );
                return Ok(ExitCode::from(124));
            }
            // Killed by a signal: 1, like a failure (the signal is not in ExecOutcome).
            let code = outcome.exit_code.and_then(|c| u8::try_from(c).ok()).unwrap_or(1);
            Ok(ExitCode::from(code))
        }
    }
}
