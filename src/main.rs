//! `moltmate`: one binary, one subcommand per component.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use moltmates::telemetry::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "moltmate",
    version,
    about = "One Telegram bot, many people, each with their own sandboxed AI agent on Kubernetes"
)]
struct Cli {
    /// Log format: human-readable text or JSON lines.
    #[arg(long, global = true, env = "MOLTMATE_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Reconcile every MoltmateUser into an isolated namespace.
    Operator(Box<moltmates::operator::OperatorArgs>),
    /// Telegram in and out, routing to each user's agent, and the agents' egress broker.
    Gateway(Box<moltmates::gateway::GatewayArgs>),
    /// Print the MoltmateUser CustomResourceDefinition (as committed in crds/).
    Crd,
    /// Check a live installation's security, read-only: PASS, WARN or FAIL per check and object.
    Audit(moltmates::audit::AuditArgs),
    /// List users (Telegram id, profile, phase, pod, activity, volume, reset, queue), or reset one.
    Users(moltmates::users::UsersArgs),
    /// Run a user's agent (the program in each sandbox pod).
    Agent(moltmates::agent::AgentArgs),
    /// Check or run a command under the exec policy, exactly as the agent's exec tool does.
    #[command(subcommand)]
    ExecPolicy(moltmates::agent::exec::cli::ExecPolicyCommand),
    /// Development stand-ins for a local control plane.
    #[cfg(feature = "dev")]
    #[command(subcommand)]
    Dev(DevCommand),
    /// Print shell completions, e.g. `moltmate completions bash > /etc/bash_completion.d/moltmate`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[cfg(feature = "dev")]
#[derive(Subcommand, Debug)]
enum DevCommand {
    /// A local node that plays kubelet: registers a Node, runs its pods' status, provisions local volumes.
    Node(moltmates::dev::node::NodeArgs),
    /// A local Telegram Bot API stand-in, with a control API to play users (tests, local stack).
    Telegram(moltmates::dev::telegram::TelegramArgs),
    /// A local OpenAI-compatible LLM stand-in (echo, /tool commands, scripts) for tests and the local stack.
    Llm(moltmates::dev::llm::LlmArgs),
    /// Type as a user of the local stack (via the Telegram stand-in) and read their agent's replies.
    Chat(moltmates::dev::chat::ChatArgs),
}

#[cfg(feature = "dev")]
async fn run_dev(command: DevCommand) -> Result<ExitCode, Box<dyn std::error::Error>> {
    match command {
        DevCommand::Node(args) => moltmates::dev::node::run(args).await?,
        DevCommand::Telegram(args) => moltmates::dev::telegram::run(args).await?,
        DevCommand::Llm(args) => moltmates::dev::llm::run(args).await?,
        DevCommand::Chat(args) => return Ok(moltmates::dev::chat::run(args).await?),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = parse_cli();
    if matches!(cli.command, Command::Operator(_)) {
        moltmates::memory::one_malloc_arena();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("moltmate: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    telemetry::init(cli.log_format);
    // A server's error goes to its log (JSON for log pipelines); a command's to the terminal,
    // once.
    let server = matches!(cli.command, Command::Operator(_) | Command::Gateway(_) | Command::Agent(_));
    let result: Result<(), Box<dyn std::error::Error>> = match cli.command {
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "moltmate", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script).map_err(Into::into)
        }
        Command::Crd => {
            print!("{}", moltmates::crd::crd_yaml());
            Ok(())
        }
        Command::Operator(mut args) => {
            args.log_format = cli.log_format;
            moltmates::operator::run(*args).await.map_err(Into::into)
        }
        Command::Gateway(args) => moltmates::gateway::run(*args).await.map_err(Into::into),
        #[cfg(feature = "dev")]
        Command::Dev(command) => match run_dev(command).await {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Users(args) => moltmates::users::run(args).await.map_err(Into::into),
        Command::Agent(args) => moltmates::agent::run(args).await.map_err(Into::into),
        Command::Audit(args) => return moltmates::audit::run(args).await,
        Command::ExecPolicy(command) => match moltmates::agent::exec::cli::run(command).await {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if server => {
            tracing::error!(error = %e, "exiting");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("moltmate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Installed on PATH as `kubectl-moltmate`, the binary is a kubectl plugin: `kubectl moltmate
/// audit` runs it with the same arguments, so only the name in usage and errors changes.
fn parse_cli() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let as_plugin = std::path::Path::new(&argv0).file_name().is_some_and(|name| name == "kubectl-moltmate");
    if !as_plugin {
        return Cli::parse();
    }
    let matches = Cli::command().bin_name("kubectl moltmate").get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
