//! `moltmate-agent`, the lean agent binary of the sandbox image: its command line and runtime.
//!
//! Its `main` reaches only the agent and the exec policy, so the linker leaves the operator,
//! the gateway and the Kubernetes and Telegram clients out, and it runs the agent on one
//! thread: each user's pod holds less (scripts/bench, agent). `moltmate agent` runs the same
//! agent from the all-in-one binary, as before: the baseline of those figures.

use std::process::ExitCode;
use std::time::Duration;

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

/// How long an idle blocking thread (file work) is kept: starting one costs far less than
/// the model call of any turn that needs it.
const BLOCKING_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// The agent's runtime: one thread. An agent serves one user, one turn at a time, and waits
/// on the model, its tools and the network; a worker per core would only add idle threads,
/// their stacks and allocator arenas to every user's pod. Blocking file work still goes to
/// tokio's blocking threads, which exit soon after.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // The static musl build of the images has no arenas; a glibc build would otherwise give
    // each blocking thread one of its own.
    crate::memory::one_malloc_arena();
    tokio::runtime::Builder::new_current_thread().enable_all().thread_keep_alive(BLOCKING_THREAD_KEEP_ALIVE).build()
}

/// Run the agent until SIGTERM; an error goes to the log (JSON for log pipelines).
fn run_agent(args: AgentArgs, log_format: LogFormat) -> ExitCode {
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
