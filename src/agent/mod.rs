//! `moltmate agent`: the program in each user's pod.
//!
//! HTTP turn API (server, api) -> one turn at a time (service) -> tool loop (turn) against
//! the model (llm, via the broker) and the tools (tools, files, exec), with the conversation
//! in the workspace (workspace, store, session) and cut to a budget (history, prompt).

pub mod api;
pub mod broker_client;
pub mod config;
pub mod disk;
pub mod exec;
pub mod files;
pub mod history;
pub mod images;
pub mod isolation;
pub mod llm;
pub mod metrics;
pub mod notes;
pub mod process;
pub mod prompt;
pub mod server;
pub mod service;
pub mod session;
pub mod store;
pub mod tools;
pub mod turn;
pub mod uploads;
pub mod workspace;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tracing::Instrument;
use tracing::info;

pub use config::AgentArgs;
use config::{Config, ConfigError};
use exec::{ExecLimits, ExecPolicy};
use llm::LlmClient;
use metrics::AgentMetrics;
use service::Agent;
use store::{SessionStore, StoreError};
use tools::Tools;
use tools::web_fetch::WebFetcher;
use workspace::{Workspace, WorkspaceError};

use crate::crd::WorkspaceAccess;
use crate::http::Health;

/// How long `/readyz` waits for the isolation guard's first verdict: below the readiness
/// probe's timeout (`timeoutSeconds`, left at its default of 1 s by the operator).
const START_PROBE_HOLD: std::time::Duration = std::time::Duration::from_millis(800);

/// Exec output kept per call (the tool result is capped again before the model sees it).
const EXEC_OUTPUT_MAX: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("building the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("listening on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
    #[error("installing the SIGTERM handler: {0}")]
    Signals(#[source] std::io::Error),
    #[error("making the agent non-dumpable (prctl PR_SET_DUMPABLE): {0}")]
    Harden(String),
}

pub async fn run(args: AgentArgs) -> Result<(), Error> {
    // SIGTERM (the kubelet) or Ctrl-C: stop accepting, let running turns finish.
    let shutdown = crate::shutdown::Shutdown::on_signals().map_err(Error::Signals)?;
    // The agent's token is in its environment, and exec children run under the same uid: as a
    // non-dumpable process its /proc/PID/environ and memory are root's alone, so no child
    // (whatever program the policy let through) can read the token there.
    nix::sys::prctl::set_dumpable(false).map_err(|e| Error::Harden(e.to_string()))?;
    let config = Config::from_args(args)?;
    // Every line this agent logs, requests included, carries its user and Telegram id: one
    // user's trail is one filter across operator, gateway and agent.
    let span = tracing::info_span!("agent", user = %config.user, telegram_id = tracing::field::Empty);
    if let Some(id) = config.telegram_id {
        span.record("telegram_id", id);
    }
    serve(config, shutdown).instrument(span).await
}

async fn serve(config: Config, shutdown: crate::shutdown::Shutdown) -> Result<(), Error> {
    // reqwest is built without a default crypto provider (see Cargo.toml); ring is the one
    // the rest of the binary uses. An error means one is installed already: fine.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let writable = config.profile.workspace_access == WorkspaceAccess::Rw;
    let workspace = Workspace::open(&config.workspace, writable)?;
    // The in-memory window holds a few budgets' worth of history to trim from.
    let store = SessionStore::open(&workspace.sessions_dir(), writable, config.history_budget.saturating_mul(4))?;

    let mut registry = Registry::default();
    let metrics = AgentMetrics::register(&mut registry);
    crate::telemetry::register_build_info(&mut registry, "agent");
    let model = LlmClient::new(&config)?;
    let web = WebFetcher::new(
        config.fetch_url(),
        config.token.clone(),
        config.profile.web_fetch.clone(),
        config.web_fetch_timeout,
    )?;
    let reminders = tools::reminders::RemindersClient::new(
        config.reminders_url(),
        config.token.clone(),
        std::time::Duration::from_secs(15),
    )?;
    let tools = Tools {
        user: config.user.clone(),
        profile: config.profile.clone(),
        workspace: workspace.clone(),
        exec_policy: ExecPolicy::from_profile(&config.profile),
        exec_limits: ExecLimits {
            timeout: config.exec_timeout,
            max_output_bytes: EXEC_OUTPUT_MAX,
            max_memory_bytes: ExecLimits::memory_for_container(&config.profile.memory),
            ..ExecLimits::default()
        },
        disk: disk::DiskLimit::of(&config.profile.storage),
        web,
        reminders,
        metrics: metrics.clone(),
        outgoing: Default::default(),
    };
    let (listen, user, session) = (config.listen, config.user.clone(), store.session_id());
    let profile = config.profile.profile;
    let agent = Arc::new(Agent::new(config, workspace, tools, model, metrics, store));

    // The kubelet's first readiness probe comes as the container starts, before the isolation
    // guard's verdict: held (below the probe's 1 s timeout), it turns Ready at the verdict
    // rather than a probe period later.
    let health = Health::new().hold_start_probes(START_PROBE_HOLD);
    let span = tracing::Span::current();
    let app = crate::http::router(health.clone(), registry, Box::new(|| {})).merge(server::router(agent)).layer(
        axum::middleware::from_fn(move |request, next: axum::middleware::Next| {
            next.run(request).instrument(span.clone())
        }),
    );
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|source| Error::Bind { addr: listen, source })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr: listen, source })?;
    let probe = isolation::probe_target(
        std::env::var("KUBERNETES_SERVICE_HOST").ok().as_deref(),
        std::env::var("KUBERNETES_SERVICE_PORT").ok().as_deref(),
    );
    match probe {
        Some(target) => drop(tokio::spawn(isolation::guard(target, health.clone(), shutdown.clone()))),
        None => health.set_ready(true),
    }
    info!(user = %user, addr = %addr, session = %session, profile = ?profile, persistent = writable, "agent listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.requested().await })
        .await
        .map_err(Error::Serve)?;
    info!(user = %user, "agent stopped");
    Ok(())
}
