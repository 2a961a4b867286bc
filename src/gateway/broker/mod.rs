//! The broker: the agents' only way out. Agents call it with their bearer token; it holds the
//! real LLM API key (agents never see it) and fetches web pages for them.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/chat/completions` | forwarded to `{provider}/chat/completions` with the real key ([`llm`]) |
//! | `GET /v1/models` | forwarded to `{provider}/models` |
//! | `POST /v1/fetch` `{"url"}` | the SSRF-safe [`Fetcher`] under the user's `web.fetch` policy ([`fetch`]) |
//! | `POST`, `GET /v1/reminders`, `DELETE /v1/reminders/{id}` | the user's own reminders ([`reminders_endpoint`]) |
//!
//! Every request: the bearer token names the user ([`auth`]); an unknown or missing token is
//! answered 401 before the body is read, and nothing is forwarded. A user being deleted,
//! suspended or with an invalid profile gets 403 with the reason. Then the profile's limits
//! ([`limits`]; the day's counts shared by every replica through [`usage`]) and the endpoint's
//! own checks. Every request is
//! logged once (`user`, `endpoint`, `decision`, `status`, bytes, duration) and counted in
//! `moltmate_broker_requests_total{endpoint,decision}` ([`metrics`]).
//!
//! Errors of the LLM routes are in OpenAI's shape (`{"error": {"message", "type", "param",
//! "code"}}`) so OpenAI clients (async-openai in the agent) parse them, retry 429 and 5xx, and
//! do not retry `insufficient_quota`. Errors of `/v1/fetch` are `{"error": "reason"}`.
//!
//! # Providers
//!
//! Any provider with an OpenAI-compatible Chat Completions API works: set the provider base
//! URL to the part before `/chat/completions` (for OpenAI and OpenRouter their API's `/v1`
//! base URL; Ollama, vLLM and llama.cpp's server serve `/v1` themselves, e.g.
//! `http://ollama:11434/v1`) and the API key (any value for servers without keys). The agent
//! asks for model `default`; the broker replaces it with the configured default model, so
//! which model runs is decided in one place, not in each sandbox.
//!
//! Anthropic models (Claude): Anthropic's native Messages API is not OpenAI-compatible, so
//! point the broker at one of these instead:
//! - Anthropic's "OpenAI SDK compatibility" endpoint: its `/v1/` base URL, your Anthropic API
//!   key, and a Claude model name as the default model (e.g. `claude-sonnet-4-5`). Anthropic
//!   offers it mainly for evaluation; tool calling works, a few OpenAI fields are ignored.
//! - OpenRouter: its OpenAI-compatible base URL, an OpenRouter key, and a model such as
//!   `anthropic/claude-sonnet-4.5`.
//! - A LiteLLM proxy next to the gateway (`litellm --model anthropic/claude-sonnet-4-5`, with
//!   `ANTHROPIC_API_KEY` in its environment): base URL `http://litellm:4000/v1`, the proxy's
//!   key as the API key; LiteLLM translates messages and tool calls to Anthropic's format.
//!
//! Either way the agents keep speaking OpenAI's format to the broker and never see a key.

pub mod auth;
pub mod limits;
pub mod llm;
pub mod metrics;
pub mod provider_check;
pub mod reminders_endpoint;
pub mod shape;
pub mod transcription;
pub mod usage;
pub mod web_fetch_endpoint;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use http_body_util::{BodyExt, LengthLimitError, Limited as LimitedBody};
use kube::runtime::reflector::Store;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::crd::MoltmateUser;
use crate::gateway::web_fetch::Fetcher;
use crate::profile::models::ModelChoice;
use crate::profile::{ProfileDefaults, ResolvedProfile};
use crate::secret::Secret;
use crate::token::MasterKey;
use auth::{CachedIndex, bearer};
use limits::{Limiter, day_of};
use metrics::BrokerMetrics;
use usage::{Counted, UsageFigures, UsageRecord};

/// The provider's API key. Never logged, never sent anywhere but the provider.
pub type ApiKey = Secret<String>;

/// Where LLM requests go.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// The OpenAI-compatible base URL, without `/chat/completions` (e.g. `.../v1`).
    pub base_url: String,
    pub api_key: ApiKey,
    /// Put in for requests whose `model` is `default` (or missing); `None` forwards as sent.
    pub default_model: Option<String>,
    /// For one provider request, connection to last byte.
    pub timeout: Duration,
}

impl ProviderConfig {
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        Self { base_url: base_url.into(), api_key, default_model: None, timeout: Duration::from_secs(120) }
    }

    pub(crate) fn endpoint(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url.trim_end_matches('/'))
    }
}

/// The longest LLM answer an agent may ask for unless the installation says otherwise: far more
/// than a chat reply needs, far less than the providers' own ceilings.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 4096;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub provider: ProviderConfig,
    /// Largest LLM request body an agent may send.
    pub max_request_bytes: usize,
    /// Largest provider answer read.
    pub max_response_bytes: usize,
    /// Largest `/v1/fetch` request body.
    pub max_fetch_request_bytes: usize,
    /// Fetches in progress at once, all users together.
    pub fetches_at_once: usize,
    /// Fetches in progress at once for one user.
    pub fetches_per_user: usize,
    /// For reading a request body from an agent.
    pub body_timeout: Duration,
    /// The installation's per-profile defaults (LLM limits, web_fetch policy).
    pub profiles: ProfileDefaults,
    /// The longest LLM answer an agent may ask for, in tokens (`None`: no cap).
    pub max_output_tokens: Option<u64>,
    /// The models every person may pick from unless their spec or profile names others;
    /// empty: the provider's default model alone.
    pub models: Vec<String>,
    /// `/v1/fetch` requests one user may make per minute and per UTC day.
    pub fetches_per_minute: u32,
    pub fetches_per_day: u64,
}

impl BrokerConfig {
    pub fn new(provider: ProviderConfig) -> Self {
        Self {
            provider,
            max_request_bytes: 2 * 1024 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
            max_fetch_request_bytes: 16 * 1024,
            fetches_at_once: 16,
            fetches_per_user: 2,
            body_timeout: Duration::from_secs(30),
            profiles: ProfileDefaults::default(),
            max_output_tokens: Some(DEFAULT_MAX_OUTPUT_TOKENS),
            models: Vec::new(),
            fetches_per_minute: 20,
            fetches_per_day: 500,
        }
    }
}

/// Milliseconds since the Unix epoch; replaceable in tests.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        jiff::Timestamp::now().as_millisecond()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot set up the provider client: {0}")]
    Client(String),
    #[error("provider base URL {0:?} is not an http(s) URL")]
    BaseUrl(String),
}

pub struct BrokerState {
    index: CachedIndex,
    config: BrokerConfig,
    http: reqwest::Client,
    fetcher: Arc<Fetcher>,
    clock: Arc<dyn Clock>,
    limiter: Mutex<Limiter>,
    /// Fetches per user: the minute window counts requests, the day's "tokens" count fetches.
    fetch_limiter: Mutex<Limiter>,
    /// LLM requests admitted per user, counted as the day's "tokens" (for `/usage`).
    request_counter: Mutex<Limiter>,
    /// The shared record as last read, for the month's figures.
    usage_record: Mutex<UsageRecord>,
    fetch_slots: Arc<Semaphore>,
    user_fetch_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    metrics: BrokerMetrics,
    /// Where reminders are kept; `None`: the reminder routes answer 503.
    reminders: Option<crate::gateway::reminders::store::ReminderStore>,
    /// New reminders per user (this replica's count).
    reminder_limiter: Mutex<Limiter>,
}

impl BrokerState {
    /// `users` is the gateway's watch cache of MoltmateUsers; metrics go into `registry`.
    pub fn new(
        master_key: MasterKey,
        users: Store<MoltmateUser>,
        config: BrokerConfig,
        fetcher: Arc<Fetcher>,
        clock: Arc<dyn Clock>,
        registry: &mut Registry,
    ) -> Result<Self, BrokerError> {
        let base = &config.provider.base_url;
        if !(base.starts_with("http://") || base.starts_with("https://")) || url::Url::parse(base).is_err() {
            return Err(BrokerError::BaseUrl(base.clone()));
        }
        let http = llm::provider_client(&config.provider).map_err(BrokerError::Client)?;
        Ok(Self {
            index: CachedIndex::new(master_key, users),
            fetch_slots: Arc::new(Semaphore::new(config.fetches_at_once)),
            config,
            http,
            fetcher,
            clock,
            limiter: Mutex::new(Limiter::new()),
            fetch_limiter: Mutex::new(Limiter::new()),
            request_counter: Mutex::new(Limiter::new()),
            usage_record: Mutex::new(UsageRecord::default()),
            user_fetch_slots: Mutex::new(HashMap::new()),
            metrics: BrokerMetrics::register(registry),
            reminders: None,
            reminder_limiter: Mutex::new(Limiter::new()),
        })
    }

    /// Serve the reminder routes from `store`.
    pub fn with_reminders(mut self, store: crate::gateway::reminders::store::ReminderStore) -> Self {
        self.reminders = Some(store);
        self
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// (requests in the last minute, tokens used today) of a user, as the limiter sees them.
    pub fn usage(&self, user: &str) -> (usize, u64) {
        let now = self.clock.now_ms();
        self.limiter.lock().unwrap_or_else(|e| e.into_inner()).usage(user, now)
    }

    /// `user`'s LLM usage today and this month: the shared record's (every replica's), with
    /// what this replica counted since it last wrote there.
    pub fn figures(&self, user: &str) -> UsageFigures {
        let now = self.clock.now_ms();
        let today = day_of(now);
        let recorded = self.usage_record.lock().unwrap_or_else(|e| e.into_inner()).figures(user, today);
        let (_, tokens_today) = self.limiter.lock().unwrap_or_else(|e| e.into_inner()).usage(user, now);
        let (_, requests_today) = self.request_counter.lock().unwrap_or_else(|e| e.into_inner()).usage(user, now);
        // The limiters hold the day's totals; the month adds what they have beyond the record.
        UsageFigures {
            tokens_today,
            requests_today,
            tokens_month: recorded.tokens_month + tokens_today.saturating_sub(recorded.tokens_today),
            requests_month: recorded.requests_month + requests_today.saturating_sub(recorded.requests_today),
        }
    }

    /// Today's counts not yet in the shared record, cleared here (see `usage`): write them,
    /// then `settle` with the record, or `restore` them.
    pub fn take_unsynced(&self) -> Counted {
        let now = self.clock.now_ms();
        Counted {
            llm_tokens: self.limiter.lock().unwrap_or_else(|e| e.into_inner()).take_unsynced(now),
            llm_requests: self.request_counter.lock().unwrap_or_else(|e| e.into_inner()).take_unsynced(now),
            fetches: self.fetch_limiter.lock().unwrap_or_else(|e| e.into_inner()).take_unsynced(now),
            reminders: self.reminder_limiter.lock().unwrap_or_else(|e| e.into_inner()).take_unsynced(now),
        }
    }

    /// Counts taken but not written: they go with the next write.
    pub fn restore(&self, counted: Counted) {
        let now = self.clock.now_ms();
        self.limiter.lock().unwrap_or_else(|e| e.into_inner()).restore(counted.llm_tokens, now);
        self.request_counter.lock().unwrap_or_else(|e| e.into_inner()).restore(counted.llm_requests, now);
        self.fetch_limiter.lock().unwrap_or_else(|e| e.into_inner()).restore(counted.fetches, now);
        self.reminder_limiter.lock().unwrap_or_else(|e| e.into_inner()).restore(counted.reminders, now);
    }

    /// The shared record's totals (every replica's counts) as today's.
    pub fn settle(&self, record: &UsageRecord) {
        let now = self.clock.now_ms();
        self.limiter.lock().unwrap_or_else(|e| e.into_inner()).settle(record.day, &record.llm_tokens, now);
        self.request_counter.lock().unwrap_or_else(|e| e.into_inner()).settle(record.day, &record.llm_requests, now);
        self.fetch_limiter.lock().unwrap_or_else(|e| e.into_inner()).settle(record.day, &record.fetches, now);
        self.reminder_limiter.lock().unwrap_or_else(|e| e.into_inner()).settle(record.day, &record.reminders, now);
        *self.usage_record.lock().unwrap_or_else(|e| e.into_inner()) = record.clone();
    }

    /// The models `profile`'s person may use, by the installation's lists and default.
    pub fn model_choice(&self, profile: &ResolvedProfile) -> ModelChoice {
        ModelChoice::new(profile.models.as_deref(), &self.config.models, self.config.provider.default_model.as_deref())
    }

    /// Forget per-user limiter and fetch state of users no longer in the store.
    pub fn prune(&self) {
        let names: std::collections::HashSet<String> = self.index.names().into_iter().collect();
        self.limiter.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| names.contains(n));
        self.fetch_limiter.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| names.contains(n));
        self.request_counter.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| names.contains(n));
        self.reminder_limiter.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| names.contains(n));
        self.user_fetch_slots.lock().unwrap_or_else(|e| e.into_inner()).retain(|n, _| names.contains(n));
    }

    /// The calling user and their profile, or the refusal to send.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let header = headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or("<not text>"));
        let Some(token) = bearer(header) else {
            return Err(Refusal::unauthenticated("missing bearer token: send Authorization: Bearer <agent token>"));
        };
        let Some(user) = self.index.lookup(token) else {
            return Err(Refusal::unauthenticated("invalid bearer token"));
        };
        let name = kube::ResourceExt::name_any(user.as_ref());
        match auth::admit(&user, &self.config.profiles) {
            Ok(profile) => {
                let chosen_model = user.status.as_ref().and_then(|s| s.model.clone());
                Ok(Caller { name, profile, chosen_model })
            }
            Err(e) => Err(Refusal {
                status: StatusCode::FORBIDDEN,
                user: Some(name),
                message: e.to_string(),
                kind: "permission_error",
            }),
        }
    }

    fn user_fetch_slots(&self, user: &str) -> Arc<Semaphore> {
        let mut slots = self.user_fetch_slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(user.to_string()).or_insert_with(|| Arc::new(Semaphore::new(self.config.fetches_per_user))).clone()
    }
}

/// Times every request to a route, then logs it once and counts it, from the [`RequestLog`] its
/// handler (or the [`Caller`] extractor's refusal) left in the response's extensions.
async fn observe(State(state): State<Arc<BrokerState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let endpoint = endpoint(request.uri().path());
    let response = next.run(request).await;
    let took = started.elapsed();
    // No outcome: axum answered by itself (405), which was never logged nor counted.
    let (Some(endpoint), Some(outcome)) = (endpoint, response.extensions().get::<RequestLog>()) else {
        return response;
    };
    let status = response.status().as_u16();
    let user = outcome.user.as_deref().unwrap_or("-");
    let telegram_id = outcome.user.as_deref().and_then(|name| state.index.telegram_id(name));
    let elapsed_ms = took.as_millis() as u64;
    let decision = outcome.decision.as_str();
    let reason = outcome.reason.as_deref().unwrap_or("");
    match outcome.decision {
        RequestDecision::Allowed => tracing::info!(
            user,
            telegram_id,
            endpoint,
            decision,
            status,
            bytes_in = outcome.bytes_in,
            bytes_out = outcome.bytes_out,
            tokens = outcome.tokens,
            elapsed_ms,
            "broker request"
        ),
        _ => tracing::warn!(
            user,
            telegram_id,
            endpoint,
            decision,
            status,
            bytes_in = outcome.bytes_in,
            bytes_out = outcome.bytes_out,
            elapsed_ms,
            reason,
            "broker request"
        ),
    }
    state.metrics.request(endpoint, decision, took);
    response
}

const CHAT_PATH: &str = "/v1/chat/completions";
const MODELS_PATH: &str = "/v1/models";
const FETCH_PATH: &str = "/v1/fetch";
const REMINDERS_PATH: &str = "/v1/reminders";
const REMINDER_PATH: &str = "/v1/reminders/{id}";

/// The `endpoint` label (logs, metrics) of a route's path.
fn endpoint(path: &str) -> Option<&'static str> {
    match path {
        CHAT_PATH => Some(llm::CHAT),
        MODELS_PATH => Some(llm::MODELS),
        FETCH_PATH => Some(web_fetch_endpoint::FETCH),
        REMINDERS_PATH => Some(reminders_endpoint::REMINDERS),
        p if p.starts_with("/v1/reminders/") => Some(reminders_endpoint::REMINDERS),
        _ => None,
    }
}

/// An authenticated, admitted user.
pub(crate) struct Caller {
    pub name: String,
    pub profile: ResolvedProfile,
    /// What the person picked with `/model` (in effect only while their list allows it).
    pub chosen_model: Option<String>,
}

impl Caller {
    /// The profile's name as in the spec (`public`, `high-security`).
    pub fn profile_name(&self) -> &'static str {
        self.profile.profile.as_str()
    }

    /// The log line of this caller's request so far.
    fn outcome(&self, decision: RequestDecision, bytes_in: usize) -> RequestLog {
        RequestLog { bytes_in, ..RequestLog::new(Some(self.name.clone()), decision) }
    }
}

/// Runs before the body is read, so a stranger's body never is. The refusal is in the shape
/// of the route's other errors.
impl FromRequestParts<Arc<BrokerState>> for Caller {
    type Rejection = RequestError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<BrokerState>) -> Result<Self, RequestError> {
        state.authenticate(&parts.headers).map_err(|r| {
            let shape = match endpoint(parts.uri.path()) {
                Some(web_fetch_endpoint::FETCH | reminders_endpoint::REMINDERS) => ErrorShape::Fetch,
                _ => ErrorShape::OpenAi { kind: r.kind, code: None },
            };
            RequestLog::new(r.user, RequestDecision::Refused).fail(r.status, shape, r.message)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestDecision {
    Allowed,
    Refused,
    Limited,
    Error,
}

impl RequestDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestDecision::Allowed => "allowed",
            RequestDecision::Refused => "refused",
            RequestDecision::Limited => "limited",
            RequestDecision::Error => "error",
        }
    }
}

/// What the request log line says besides endpoint and status; handlers put it in the
/// response's extensions for [`observe`].
#[derive(Debug, Clone)]
pub(crate) struct RequestLog {
    pub user: Option<String>,
    pub decision: RequestDecision,
    pub reason: Option<String>,
    pub bytes_in: usize,
    pub bytes_out: usize,
    pub tokens: u64,
}

impl RequestLog {
    fn new(user: Option<String>, decision: RequestDecision) -> Self {
        Self { user, decision, reason: None, bytes_in: 0, bytes_out: 0, tokens: 0 }
    }
    fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
    /// The request answered `status` with `message` (also the log line's reason).
    fn fail(self, status: StatusCode, shape: ErrorShape, message: impl Into<String>) -> RequestError {
        RequestError { status, shape, message: message.into(), outcome: Box::new(self), headers: Vec::new() }
    }
}

/// A refusal before the endpoint's own work: status, the user if known, the message.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub status: StatusCode,
    pub user: Option<String>,
    pub message: String,
    /// The OpenAI error `type`.
    pub kind: &'static str,
}

impl Refusal {
    fn unauthenticated(message: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            user: None,
            message: message.to_string(),
            kind: "invalid_request_error",
        }
    }
}

/// How an endpoint words its errors.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ErrorShape {
    /// OpenAI's `{"error": {"message", "type", "param", "code"}}`, which OpenAI clients parse.
    OpenAi { kind: &'static str, code: Option<&'static str> },
    /// `/v1/fetch`'s `{"error": "reason"}`.
    Fetch,
}

impl ErrorShape {
    const INVALID_REQUEST: Self = Self::OpenAi { kind: "invalid_request_error", code: None };

    fn response(self, status: StatusCode, message: &str) -> Response {
        let body = match self {
            Self::OpenAi { kind, code } => {
                json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            }
            Self::Fetch => json!({"error": message}),
        };
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A request answered with an error: its status and message in the endpoint's shape, extra
/// headers, and the log line (the message is its reason).
#[derive(Debug)]
pub(crate) struct RequestError {
    status: StatusCode,
    shape: ErrorShape,
    message: String,
    // Boxed, with the headers in a Vec, to keep `Result<_, RequestError>` small.
    outcome: Box<RequestLog>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl RequestError {
    fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let mut response = self.shape.response(self.status, &self.message);
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response.extensions_mut().insert(self.outcome.reason(self.message));
        response
    }
}

#[derive(Debug)]
pub(crate) enum BodyError {
    TooLarge(usize),
    Read(String),
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
    fn message(&self) -> String {
        match self {
            BodyError::TooLarge(max) => format!("the request body is larger than {max} bytes"),
            BodyError::Read(e) => format!("the request body could not be read: {e}"),
        }
    }
}

/// The whole request body, at most `max` bytes (the rest is never read), within `timeout`.
pub(crate) async fn read_body(body: Body, max: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    let collect = LimitedBody::new(body, max).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(BodyError::Read(format!("not received within {timeout:?}"))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge(max)),
        Ok(Err(e)) => Err(BodyError::Read(e.to_string())),
    }
}

/// The broker's routes. Serve them on the address the agents' NetworkPolicy allows.
pub fn router(state: Arc<BrokerState>) -> Router {
    Router::new()
        .route(CHAT_PATH, post(llm::chat_completions))
        .route(MODELS_PATH, get(llm::models))
        .route(FETCH_PATH, post(web_fetch_endpoint::fetch))
        .route(REMINDERS_PATH, post(reminders_endpoint::create).get(reminders_endpoint::list))
        .route(REMINDER_PATH, delete(reminders_endpoint::cancel))
        // The routes only: an unknown path is answered 404 and neither logged nor counted.
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .fallback(|| async { ErrorShape::INVALID_REQUEST.response(StatusCode::NOT_FOUND, "no such broker endpoint") })
        .with_state(state)
}
