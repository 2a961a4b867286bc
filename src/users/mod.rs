//! `moltmate users`: the administrator's view of the allowlist, and resetting a user.
//!
//! `moltmate users` lists every MoltmateUser with what the cluster knows about it (and, with
//! `--gateway-metrics`, the gateway's queue); `moltmate users reset NAME` wipes a user's
//! workspace by bumping `spec.resetGeneration` (the operator replaces the volume).
//! The rows and the reset plan are built by pure functions (`table`, `reset`); this module
//! reads and writes.

pub mod access;
pub mod reset;
pub mod table;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::crd::MoltmateUser;
use crate::names;

#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct UsersArgs {
    #[command(subcommand)]
    pub command: Option<UsersCommand>,
    #[command(flatten)]
    pub list: ListArgs,
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterArgs,
}

#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Wipe a user's workspace (files, memory, conversation history) and keep the user:
    /// adds one to spec.resetGeneration. In GitOps, bump that field in git instead.
    Reset(ResetArgs),
    /// List the access requests people sent the bot (/request), with their codes.
    Requests(access::RequestsArgs),
    /// Approve an access request: creates the person's MoltmateUser (in GitOps mode, prints
    /// its manifest to commit); the gateway tells them.
    Approve(access::ApproveArgs),
    /// Deny an access request; the gateway tells them.
    Deny(access::DenyArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: Output,
    /// The gateway's /metrics URL (of the replica holding its Lease), for each user's queue;
    /// without it, QUEUE shows `-`.
    #[arg(long, env = "MOLTMATE_GATEWAY_METRICS")]
    pub gateway_metrics: Option<String>,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// The MoltmateUser to reset.
    pub name: String,
    /// Wait until the new agent has wiped the workspace and serves.
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits.
    #[arg(long, default_value = "5m", value_parser = crate::duration::parse_arg)]
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kubeconfig(#[from] crate::cluster::KubeconfigError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Access(#[from] crate::access::Error),
    #[error("MoltmateUser {0} not found (`moltmate users` lists them)")]
    NotFound(String),
    #[error(transparent)]
    Plan(#[from] reset::PlanError),
    #[error("MoltmateUser {0} kept changing while it was being reset; try again")]
    Contended(String),
    #[error(
        "{user}: the reset to generation {generation} was asked for, but it was not done within {timeout:?}; `kubectl describe mmu {user}` says why"
    )]
    Timeout { user: String, generation: i64, timeout: Duration },
}

pub async fn run(args: UsersArgs) -> Result<(), Error> {
    let client = args.cluster.client().await?;
    match args.command {
        Some(UsersCommand::Reset(reset)) => reset_user(&client, &reset).await,
        Some(UsersCommand::Requests(args)) => Ok(access::list(&client, &args).await?),
        Some(UsersCommand::Approve(args)) => Ok(access::approve(&client, &args).await?),
        Some(UsersCommand::Deny(args)) => Ok(access::deny(&client, &args).await?),
        None => list(&client, &args.list).await,
    }
}

async fn list(client: &Client, args: &ListArgs) -> Result<(), Error> {
    let users = Api::<MoltmateUser>::all(client.clone()).list(&ListParams::default()).await?.items;
    let agents = format!("{},{}=agent", names::managed_selector(), names::LABEL_COMPONENT);
    let pods = Api::<Pod>::all(client.clone()).list(&ListParams::default().labels(&agents)).await?.items;
    let claims = Api::<PersistentVolumeClaim>::all(client.clone())
        .list(&ListParams::default().labels(&names::managed_selector()))
        .await?
        .items;
    let queues = match &args.gateway_metrics {
        None => None,
        Some(url) => match fetch_metrics(url).await {
            Ok(text) => Some(table::queue_depths(&text)),
            // The rest of the table is still worth showing.
            Err(e) => {
                eprintln!("moltmate: reading the gateway's metrics at {url}: {e}; QUEUE shows -");
                None
            }
        },
    };
    let rows = table::rows(&users, &pods, &claims, queues.as_ref());
    match args.output {
        Output::Table => print!("{}", table::render_table(&rows, jiff::Timestamp::now())),
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows).expect("rows always serialize")),
        Output::Yaml => print!("{}", serde_saphyr::to_string(&rows).expect("rows always serialize")),
    }
    Ok(())
}

async fn fetch_metrics(url: &str) -> Result<String, reqwest::Error> {
    // reqwest is built without a crypto provider (see Cargo.toml); an error means one is set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    client.get(url).send().await?.error_for_status()?.text().await
}

async fn reset_user(client: &Client, args: &ResetArgs) -> Result<(), Error> {
    let api: Api<MoltmateUser> = Api::all(client.clone());
    let params = PatchParams { field_manager: Some(reset::FIELD_MANAGER.into()), ..PatchParams::default() };
    let mut done = None;
    for _ in 0..5 {
        let user = api.get_opt(&args.name).await?.ok_or_else(|| Error::NotFound(args.name.clone()))?;
        let plan = reset::plan(&user)?;
        match api.patch(&args.name, &params, &Patch::Merge(&plan.patch)).await {
            Ok(_) => {
                print!("{}", reset::next_steps(&plan, &user));
                done = Some(plan.to);
                break;
            }
            // Changed since it was read (another reset, say): read it again.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let generation = done.ok_or_else(|| Error::Contended(args.name.clone()))?;
    if !args.wait {
        return Ok(());
    }
    let deadline = Instant::now() + args.timeout;
    loop {
        let user = api.get_opt(&args.name).await?.ok_or_else(|| Error::NotFound(args.name.clone()))?;
        if user.status.as_ref().and_then(|s| s.reset_generation).is_some_and(|g| g >= generation) {
            println!("{}: reset done; the workspace is new and empty.", user.name_any());
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout { user: args.name.clone(), generation, timeout: args.timeout });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
