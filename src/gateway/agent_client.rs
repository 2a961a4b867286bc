//! Calls to a user's agent (its turn API on the pod IP). Single tries: the worker retries the
//! failures that mean "not yet" (no connection, or 503) after looking the address up again.

use std::net::IpAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::json;

use crate::agent::api::{
    ErrorBody, FileSaved, ForgetResponse, MemoryResponse, ResetResponse, StatusResponse, TurnRequest, TurnResponse,
};
use crate::http::CappedRead;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent unreachable: {0}")]
    Unreachable(String),
    #[error("agent answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("agent did not answer in time")]
    TimedOut,
    #[error("agent answer unreadable: {0}")]
    Decode(String),
    #[error("agent answer larger than {0} bytes, not read further")]
    TooLarge(usize),
    #[error("HTTP client setup: {0}")]
    Setup(String),
}

impl AgentError {
    /// The agent's own words for a refusal meant for the person (no such note, read-only
    /// workspace), as opposed to a failure.
    pub fn refusal(&self) -> Option<String> {
        let AgentError::Status { status: 403 | 404, body } = self else { return None };
        let error: ErrorBody = serde_json::from_str(body).ok()?;
        Some(error.error)
    }

    /// Worth another try after a pause: nothing reached the agent, or it asked for a retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Unreachable(_) => true,
            AgentError::Status { status, .. } => matches!(status, 502..=504),
            AgentError::TimedOut | AgentError::Decode(_) | AgentError::TooLarge(_) | AgentError::Setup(_) => false,
        }
    }
}

/// The pause before try number `attempt + 1`: 0.5 s doubling, at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    crate::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(8)).delay(attempt)
}

/// For the delivery confirmation: the agent only appends a line, under its turn lock.
const DELIVERED_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a starting agent's `/readyz` is waited for: the agent holds its first answers up
/// to 800 ms for its isolation verdict.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The most the gateway reads of one answer: a reply is text for Telegram (a few messages of
/// 4,096 characters at most make sense), and a hostile agent must not fill the gateway's memory.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

pub struct AgentClient {
    http: reqwest::Client,
    port: u16,
}

impl AgentClient {
    pub fn new(port: u16, timeout: Duration) -> Result<Self, AgentError> {
        // Pod IPs are reached directly, never through an egress proxy.
        let http = crate::http::plain_http_client()
            .map_err(|e| AgentError::Setup(e.to_string()))?
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        Ok(Self { http, port })
    }

    /// Whether the agent says it serves: its `/readyz`, what the kubelet's readiness probe
    /// asks, answers 200 (only once the agent has found its egress blocked).
    pub async fn ready(&self, ip: IpAddr) -> bool {
        let url = format!("http://{}/readyz", std::net::SocketAddr::new(ip, self.port));
        let answer = self.http.get(url).timeout(READY_TIMEOUT).send().await;
        answer.is_ok_and(|response| response.status() == reqwest::StatusCode::OK)
    }

    pub async fn turn(&self, ip: IpAddr, token: &str, request: &TurnRequest) -> Result<TurnResponse, AgentError> {
        let body = serde_json::to_value(request).map_err(|e| AgentError::Setup(e.to_string()))?;
        self.call(ip, token, reqwest::Method::POST, "/v1/turn", Some(&body), None).await
    }

    /// The reply to `update_id` reached Telegram: the agent records it, so a redelivery of
    /// the update (after a gateway restart) is not answered twice. Quick, or not at all.
    pub async fn delivered(&self, ip: IpAddr, token: &str, update_id: i64) -> Result<(), AgentError> {
        let body = json!({});
        let path = format!("/v1/turn/{update_id}/delivered");
        self.call::<serde_json::Value>(ip, token, reqwest::Method::POST, &path, Some(&body), Some(DELIVERED_TIMEOUT))
            .await
            .map(drop)
    }

    /// A reminder reached the person: the agent notes it in the conversation (once per `key`).
    pub async fn reminder(&self, ip: IpAddr, token: &str, key: &str, text: &str) -> Result<(), AgentError> {
        let body = json!({ "key": key, "text": text });
        self.call::<serde_json::Value>(ip, token, reqwest::Method::POST, "/v1/reminder", Some(&body), None)
            .await
            .map(drop)
    }

    /// Save a file the person sent in the agent's `files/`, under `name` or (taken, or unsafe)
    /// a name the agent picks; the answer says which.
    pub async fn put_file(
        &self,
        ip: IpAddr,
        token: &str,
        name: &str,
        bytes: axum::body::Bytes,
    ) -> Result<FileSaved, AgentError> {
        let mut url = reqwest::Url::parse(&format!("http://{}/", std::net::SocketAddr::new(ip, self.port)))
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        // One path segment whatever the name holds: a `/` in it is encoded, not a directory.
        url.path_segments_mut().map_err(|()| AgentError::Setup("agent URL".into()))?.extend(["v1", "files", name]);
        let request = self
            .http
            .put(url)
            .bearer_auth(token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        self.send(request).await
    }

    /// A file from the agent's `files/` that its answer hands back (at most `SEND_MAX` bytes).
    pub async fn get_file(&self, ip: IpAddr, token: &str, path: &str) -> Result<Vec<u8>, AgentError> {
        let mut url = reqwest::Url::parse(&format!("http://{}/", std::net::SocketAddr::new(ip, self.port)))
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| AgentError::Setup("agent URL".into()))?
            .extend(["v1", "files"])
            .extend(path.split('/'));
        self.fetch(self.http.get(url).bearer_auth(token), crate::agent::api::SEND_MAX).await
    }

    pub async fn reset(&self, ip: IpAddr, token: &str) -> Result<ResetResponse, AgentError> {
        let body = json!({});
        self.call(ip, token, reqwest::Method::POST, "/v1/reset", Some(&body), None).await
    }

    pub async fn status(&self, ip: IpAddr, token: &str) -> Result<StatusResponse, AgentError> {
        self.call(ip, token, reqwest::Method::GET, "/v1/status", None, None).await
    }

    pub async fn memory(&self, ip: IpAddr, token: &str) -> Result<MemoryResponse, AgentError> {
        self.call(ip, token, reqwest::Method::GET, "/v1/memory", None, None).await
    }

    pub async fn forget(&self, ip: IpAddr, token: &str, number: usize) -> Result<ForgetResponse, AgentError> {
        self.call(ip, token, reqwest::Method::DELETE, &format!("/v1/memory/{number}"), None, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        ip: IpAddr,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<T, AgentError> {
        let url = format!("http://{}{path}", std::net::SocketAddr::new(ip, self.port));
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.send(request).await
    }

    async fn send<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, AgentError> {
        let bytes = self.fetch(request, MAX_ANSWER_BYTES).await?;
        serde_json::from_slice(&bytes).map_err(|e| AgentError::Decode(e.to_string()))
    }

    /// The body of a 200 answer, at most `max` bytes; any other status is an error with the
    /// start of its body.
    async fn fetch(&self, request: reqwest::RequestBuilder, max: usize) -> Result<Vec<u8>, AgentError> {
        let response = request.send().await.map_err(|e| {
            // A timeout after connecting is not retried: the agent may still be working on it.
            if e.is_timeout() && !e.is_connect() {
                AgentError::TimedOut
            } else {
                AgentError::Unreachable(e.to_string())
            }
        })?;
        let status = response.status().as_u16();
        let bytes = crate::http::read_capped(response, max).await.map_err(|e| match e {
            CappedRead::TooLarge => AgentError::TooLarge(max),
            CappedRead::Failed(e) if e.is_timeout() => AgentError::TimedOut,
            CappedRead::Failed(e) => AgentError::Unreachable(e.to_string()),
        })?;
        if status != 200 {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
            return Err(AgentError::Status { status, body });
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::api::Sender;

    #[test]
    fn backoff_doubles_and_caps() {
        let secs: Vec<f64> = (0..7).map(|a| backoff(a).as_secs_f64()).collect();
        assert_eq!(secs, vec![0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]);
    }

    #[test]
    fn what_is_retried() {
        assert!(AgentError::Unreachable("refused".into()).is_retryable());
        assert!(AgentError::Status { status: 503, body: String::new() }.is_retryable());
        assert!(!AgentError::Status { status: 401, body: String::new() }.is_retryable());
        assert!(!AgentError::Decode("x".into()).is_retryable());
        assert!(!AgentError::TooLarge(1).is_retryable());
    }

    /// A hostile agent answers without end, with or without announcing the length: the gateway
    /// stops reading at the cap, and an answer within it still comes through.
    #[tokio::test]
    async fn an_endless_answer_is_cut_off_at_the_cap() {
        use axum::body::Body;
        use axum::routing::{get, post};
        let endless = || {
            Body::from_stream(futures::stream::repeat_with(|| {
                Ok::<_, std::io::Error>(axum::body::Bytes::from(vec![b' '; 64 * 1024]))
            }))
        };
        let app = axum::Router::new()
            .route("/v1/turn", post(move || async move { endless() }))
            .route("/v1/reset", post(|| async { vec![b' '; MAX_ANSWER_BYTES + 1] }))
            .route("/v1/status", get(|| async { r#"{"turns":4,"ok":true}"# }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = AgentClient::new(port, Duration::from_secs(10)).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let turn = client
            .turn(
                ip,
                "token",
                &TurnRequest { update_id: 1, chat_id: 2, from: Sender::Id(3), text: "hi".into(), images: vec![] },
            )
            .await;
        assert!(matches!(turn, Err(AgentError::TooLarge(MAX_ANSWER_BYTES))), "{turn:?}");
        let reset = client.reset(ip, "token").await;
        assert!(matches!(reset, Err(AgentError::TooLarge(MAX_ANSWER_BYTES))), "{reset:?}");
        let status = client.status(ip, "token").await.unwrap();
        assert_eq!(status, StatusResponse { turns: 4, ..StatusResponse::default() }, "typed, unknown fields ignored");
    }

    /// The agent's own `/readyz`, as the real agent serves it: not ready while its isolation
    /// is unproven, ready once proven; a hung or absent agent is not ready.
    #[tokio::test]
    async fn an_agent_is_ready_when_its_readyz_says_so() {
        let health = crate::http::Health::new().hold_start_probes(Duration::from_millis(100));
        let app =
            crate::http::router(health.clone(), prometheus_client::registry::Registry::default(), Box::new(|| {}));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = AgentClient::new(port, Duration::from_secs(10)).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(!client.ready(ip).await, "egress not yet found blocked");
        health.set_ready(true);
        assert!(client.ready(ip).await);
        health.set_ready(false);
        assert!(!client.ready(ip).await, "egress open again");

        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_client = AgentClient::new(silent.local_addr().unwrap().port(), Duration::from_secs(10)).unwrap();
        let asked = std::time::Instant::now();
        assert!(!silent_client.ready(ip).await, "accepts but never answers");
        assert!(asked.elapsed() < Duration::from_secs(3), "bounded by its own timeout: {:?}", asked.elapsed());
        drop(silent);
        assert!(!silent_client.ready(ip).await, "nothing listens");
    }
}
