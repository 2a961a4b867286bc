//! Calls to a user's agent (its turn API on the pod IP). Single tries: the worker retries the
//! failures that mean "not yet" (no connection, or 503) after looking the address up again.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::json;

use crate::agent::api::{ResetResponse, TurnResponse};

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
    #[error("HTTP client setup: {0}")]
    Setup(String),
}

impl AgentError {
    /// Worth another try after a pause: nothing reached the agent, or it asked for a retry.
    pub fn is_retryable(&self) -> bool {
        match self {
            AgentError::Unreachable(_) => true,
            AgentError::Status { status, .. } => matches!(status, 502..=504),
            AgentError::TimedOut | AgentError::Decode(_) | AgentError::Setup(_) => false,
        }
    }
}

/// The pause before try number `attempt + 1`: 0.5 s doubling, at most 8 s.
pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1u64 << attempt.min(4)))
}

/// For the delivery confirmation: the agent only appends a line, under its turn lock.
const DELIVERED_TIMEOUT: Duration = Duration::from_secs(5);

pub struct AgentClient {
    http: reqwest::Client,
    port: u16,
}

impl AgentClient {
    pub fn new(port: u16, timeout: Duration) -> Result<Self, AgentError> {
        // Agents speak plain HTTP; a TLS config is still needed to build the client, and we
        // pick ring explicitly (two providers compiled in would make rustls refuse to choose).
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Setup(e.to_string()))?
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            // Pod IPs are reached directly, never through an egress proxy.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(timeout)
            .build()
            .map_err(|e| AgentError::Setup(e.to_string()))?;
        Ok(Self { http, port })
    }

    pub async fn turn(&self, ip: IpAddr, token: &str, update_id: i64, chat_id: i64, from: i64, text: &str) -> Result<TurnResponse, AgentError> {
        let body = json!({ "update_id": update_id, "chat_id": chat_id, "from": from, "text": text });
        self.call(ip, token, reqwest::Method::POST, "/v1/turn", Some(&body), None).await
    }

    /// The reply to `update_id` reached Telegram: the agent records it, so a redelivery of
    /// the update (after a gateway restart) is not answered twice. Quick, or not at all.
    pub async fn delivered(&self, ip: IpAddr, token: &str, update_id: i64) -> Result<(), AgentError> {
        let body = json!({});
        let path = format!("/v1/turn/{update_id}/delivered");
        self.call::<serde_json::Value>(ip, token, reqwest::Method::POST, &path, Some(&body), Some(DELIVERED_TIMEOUT)).await.map(drop)
    }

    pub async fn reset(&self, ip: IpAddr, token: &str) -> Result<ResetResponse, AgentError> {
        let body = json!({});
        self.call(ip, token, reqwest::Method::POST, "/v1/reset", Some(&body), None).await
    }

    pub async fn status(&self, ip: IpAddr, token: &str) -> Result<serde_json::Value, AgentError> {
        self.call(ip, token, reqwest::Method::GET, "/v1/status", None, None).await
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
        let response = request.send().await.map_err(|e| {
            // A timeout after connecting is not retried: the agent may still be working on it.
            if e.is_timeout() && !e.is_connect() { AgentError::TimedOut } else { AgentError::Unreachable(e.to_string()) }
        })?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.map_err(|e| if e.is_timeout() { AgentError::TimedOut } else { AgentError::Unreachable(e.to_string()) })?;
        if status != 200 {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
            return Err(AgentError::Status { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|e| AgentError::Decode(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
