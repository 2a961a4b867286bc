//! The agent's process: the lean `moltmate-agent` binary's command line, and the runtime
//! both it and `moltmate agent` run the agent on.
//!
//! The sandbox image ships `moltmate-agent` alone: its `main` reaches only the agent and the
//! exec policy, so the linker leaves the operator, gateway, Kubernetes and Telegram clients
//! out, and each user's pod maps less code (scripts/bench, agent).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::AgentArgs;
use super::exec::cli::ExecPolicyCommand;
use crate::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(name = "moltmate-agent", version, about = "A user's agent (the program in each sandbox pod)")]
struct Cli {
    /// Log format: human-readable text or JSON lines.
    #[arg(long, global = true, env = "MOLTMATE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a user's agent, as `moltmate agent` does.
    Agent(AgentArgs),
    /// Check or run a command under the exec policy, exactly as the agent's exec tool does.
    #[command(subcommand)]
    ExecPolicy(ExecPolicyCommand),
}

/// `moltmate-agent`'s `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Agent(args) => run_agent(args, cli.log_format),
        Command::ExecPolicy(command) => {
            telemetry::init(cli.log_format);
            let result = runtime().map_err(Into::into).and_then(|rt| rt.block_on(super::exec::cli::run(command)));
            result.unwrap_or_else(|e| {
                eprintln!("moltmate-agent: {e}");
                ExitCode::FAILURE
            })
        }
    }
}

/// The agent's runtime: one thread. An agent serves one user, one turn at a time, and waits
/// on the model, its tools and the network; a worker per core would only add idle threads
/// and their stacks and allocator arenas to every user's pod. Blocking file work still goes
/// to tokio's blocking threads, which exit when idle.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

/// Run the agent until SIGTERM; an error goes to the log (JSON for log pipelines).
pub fn run_agent(args: AgentArgs, log_format: LogFormat) -> ExitCode {
    telemetry::init(log_format);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "starting the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(super::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
    }
}
