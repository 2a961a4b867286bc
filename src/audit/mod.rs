//! `moltmate audit` (also `kubectl moltmate audit`): a read-only security check of a live
//! installation, one row per check per object, PASS / WARN / FAIL, with how to fix it.
//!
//! Three steps, each its own module: `snapshot::collect` lists what the checks need (the only
//! I/O; Secrets are reduced to the lengths of their values at once); `checks::checks` turns the
//! snapshot into findings (pure, unit-tested); `render` prints them as a table or JSON.
//! Exit status: 0 without FAIL, 1 with any FAIL, 2 when the audit could not run.

pub mod checks;
pub mod finding;
pub mod render;
pub mod snapshot;
pub mod workload;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use kube::Client;

use crate::cluster::ClusterArgs;

pub use checks::checks;
pub use finding::{AuditConfig, Finding, Status, Summary};
pub use snapshot::{Snapshot, collect};

use crate::profile::ProfileDefaults;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    /// The release namespace (where the operator, the gateway and their Secrets are).
    #[arg(long, short = 'n', default_value = "moltmate-system")]
    pub namespace: String,
    /// `text`: a table for people; `json` or `yaml`: every finding, for machines.
    #[arg(long, short = 'o', value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Report workspaces of deleted users retained longer than this (e.g. 30d, 12h).
    #[arg(long, default_value = "30d", value_parser = crate::duration::parse_arg)]
    pub retained_max_age: Duration,
    /// Per-profile defaults the operator runs with (default: read from its ConfigMap).
    #[arg(long)]
    pub profiles_file: Option<PathBuf>,
    /// List every PASS row (by default many PASS rows of one check are folded into one).
    #[arg(long, short = 'v')]
    pub verbose: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{0}")]
    Profiles(#[from] crate::profile::DefaultsError),
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("cannot reach the Kubernetes API at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error(transparent)]
    Collect(#[from] snapshot::CollectError),
}

/// Run the audit and print the report; the exit status says how it went.
pub async fn run(args: AuditArgs) -> ExitCode {
    match audit(&args).await {
        Ok(findings) => {
            let report = match args.output {
                OutputFormat::Text => render::text(&findings, args.verbose),
                OutputFormat::Json => render::json(&findings),
                OutputFormat::Yaml => render::yaml(&findings),
            };
            print!("{report}");
            if findings.iter().any(|f| f.status == Status::Fail) { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
        Err(e) => {
            eprintln!("moltmate audit: {e}");
            ExitCode::from(2)
        }
    }
}

/// Collect and check; everything but printing.
pub async fn audit(args: &AuditArgs) -> Result<Vec<Finding>, AuditError> {
    let mut config = AuditConfig::new(&args.namespace);
    config.retained_max_age = args.retained_max_age;
    if let Some(path) = &args.profiles_file {
        let defaults = ProfileDefaults::load(Some(path))?;
        config.profiles = Some((defaults, format!("--profiles-file {}", path.display())));
    }
    let client_config = args.cluster.config().await.map_err(|e| AuditError::Kubeconfig(e.0))?;
    let url = client_config.cluster_url.to_string();
    let client = Client::try_from(client_config).map_err(|e| AuditError::Kubeconfig(e.to_string()))?;
    let snapshot = collect(&client, &args.namespace).await.map_err(|e| match e {
        snapshot::CollectError::Api { source, .. } if !matches!(source, kube::Error::Api(_)) => {
            AuditError::Unreachable { url, message: root_cause(&source) }
        }
        other => other.into(),
    })?;
    config.now = jiff::Timestamp::now();
    Ok(checks(&snapshot, &config))
}

/// The innermost error message (`connection refused` rather than a chain of wrappers).
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}
