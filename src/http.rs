//! `/healthz`, `/readyz` and `/metrics`, served by every long-running subcommand.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;

/// Called before each scrape to refresh gauges computed from caches.
pub type BeforeScrape = Box<dyn Fn() + Send + Sync>;

/// Readiness, and lines of detail that `/readyz` shows under it (a dependency's state, for
/// the admin reading it; they do not change the answer's status).
#[derive(Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    /// Ready once: the start is over.
    started: Arc<AtomicBool>,
    became_ready: Arc<tokio::sync::Notify>,
    /// How long `/readyz` waits for readiness, until the first time it is ready, before it
    /// answers "not ready" (see `hold_start_probes`).
    start_hold: Duration,
    details: Arc<Mutex<std::collections::BTreeMap<&'static str, String>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    pub fn new() -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            started: Arc::default(),
            became_ready: Arc::default(),
            start_hold: Duration::ZERO,
            details: Arc::default(),
        }
    }

    /// Until it is first ready, `/readyz` waits up to `hold` for readiness rather than answer
    /// "not ready" at once. A kubelet probes a new container once as it starts and then every
    /// `periodSeconds`; a "not ready" to that first probe, moments before readiness, costs
    /// the rest of a period (up to 1 s of a woken user's wait). `hold` must stay below the
    /// probe's `timeoutSeconds`.
    pub fn hold_start_probes(mut self, hold: Duration) -> Self {
        self.start_hold = hold;
        self
    }
    /// Show `text` as the line `name: text` of `/readyz`.
    pub fn set_detail(&self, name: &'static str, text: String) {
        self.details.lock().unwrap_or_else(|e| e.into_inner()).insert(name, text);
    }
    fn details(&self) -> String {
        let details = self.details.lock().unwrap_or_else(|e| e.into_inner());
        details.iter().map(|(name, text)| format!("{name}: {text}\n")).collect()
    }
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        if ready {
            self.started.store(true, Ordering::Relaxed);
            self.became_ready.notify_waiters();
        }
    }
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Ready now; or, while starting with a hold, ready within the hold.
    pub async fn ready_for_probe(&self) -> bool {
        if self.is_ready() || self.start_hold.is_zero() || self.started.load(Ordering::Relaxed) {
            return self.is_ready();
        }
        let deadline = tokio::time::Instant::now() + self.start_hold;
        loop {
            // Registered before the check, so that a readiness set in between is not missed.
            let became_ready = self.became_ready.notified();
            tokio::pin!(became_ready);
            became_ready.as_mut().enable();
            if self.is_ready() {
                return true;
            }
            if tokio::time::timeout_at(deadline, became_ready).await.is_err() {
                return self.is_ready();
            }
        }
    }
}

struct AppState {
    health: Health,
    registry: Registry,
    before_scrape: BeforeScrape,
}

pub fn router(health: Health, registry: Registry, before_scrape: BeforeScrape) -> Router {
    let state = Arc::new(AppState { health, registry, before_scrape });
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let ready = state.health.ready_for_probe().await;
    let details = state.health.details();
    if ready {
        (StatusCode::OK, format!("ready\n{details}"))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("not ready\n{details}"))
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (state.before_scrape)();
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body)
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Bind and serve in the background until `shutdown`; then stop accepting, and end (the
/// returned task) once the requests under way are answered. Returns the bound address too.
pub async fn serve_until(
    addr: SocketAddr,
    app: Router,
    shutdown: crate::shutdown::Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let serving = tokio::spawn(async move {
        let stopping = async move { shutdown.requested().await };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopping).await {
            tracing::error!(error = %e, addr = %bound, "server stopped");
        }
    });
    Ok((bound, serving))
}

/// Bind and serve in the background; returns the bound address (port 0 picks a free one).
pub async fn serve(addr: SocketAddr, app: Router) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "health server stopped");
        }
    });
    Ok(bound)
}

/// A client builder for peers spoken to in plain HTTP (agents on their pod IPs, the
/// stand-ins), never through a proxy. reqwest still wants a TLS config to build a client: one
/// with no roots, on ring, named here because with two providers compiled in rustls would
/// refuse to choose.
pub fn plain_http_client() -> Result<reqwest::ClientBuilder, rustls::Error> {
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls).no_proxy())
}

/// Why a capped read of an HTTP answer stopped.
#[derive(Debug)]
pub enum CappedRead {
    /// The answer is longer than the cap (announced, or read so far); the rest was not read.
    TooLarge,
    Failed(reqwest::Error),
}

/// The body of `response`, up to `cap` bytes; a longer one is refused without reading the
/// rest, so a peer that answers without end costs no more than the cap.
pub async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, CappedRead> {
    if response.content_length().is_some_and(|length| length > cap as u64) {
        return Err(CappedRead::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(CappedRead::Failed)? {
        if body.len() + chunk.len() > cap {
            return Err(CappedRead::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_starting_probe_is_held_until_ready() {
        let health = Health::new().hold_start_probes(Duration::from_secs(5));
        let setter = health.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            setter.set_ready(true);
        });
        let asked = Instant::now();
        assert!(health.ready_for_probe().await, "ready within the hold");
        assert!(asked.elapsed() < Duration::from_secs(2), "answered once ready, not at the hold's end");
    }

    #[tokio::test]
    async fn the_hold_ends_not_ready_and_holds_nothing_once_started() {
        let starting = Health::new().hold_start_probes(Duration::from_millis(100));
        let asked = Instant::now();
        assert!(!starting.ready_for_probe().await);
        assert!(asked.elapsed() >= Duration::from_millis(100), "held for the hold");

        // Ready once, then not: a later "not ready" (a policy removed) is answered at once.
        let started = Health::new().hold_start_probes(Duration::from_secs(5));
        started.set_ready(true);
        started.set_ready(false);
        let asked = Instant::now();
        assert!(!started.ready_for_probe().await);
        assert!(asked.elapsed() < Duration::from_secs(1));

        // Without a hold (the operator, the gateway): at once.
        let asked = Instant::now();
        assert!(!Health::new().ready_for_probe().await);
        assert!(asked.elapsed() < Duration::from_secs(1));
    }
}
