//! Webhook delivery: POST each update, oldest first, to the webhook URL with the secret header,
//! and retry with a capped backoff until the receiver answers 2xx, as Telegram does.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::shared::{Shared, Waited, unix_now};
use super::store::Delivery;

pub const SECRET_HEADER: &str = "X-Telegram-Bot-Api-Secret-Token";

/// Retry pacing: short, so tests see redelivery quickly, and capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// Per attempt, connect to response.
    pub request_timeout: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// Delay before retry number `failures` (1 = after the first failure): doubling, capped.
    pub fn delay(&self, failures: u32) -> Duration {
        crate::backoff::Backoff::new(self.initial, self.max).delay(failures.saturating_sub(1))
    }
}

#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("Wrong response from the webhook: {0}")]
    Status(StatusCode),
    #[error("invalid webhook URL")]
    Url,
    #[error("Connection timed out")]
    Timeout,
    #[error("{0}")]
    Connect(#[from] std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Request(#[from] axum::http::Error),
}

/// Runs until shutdown; idle while no webhook is set or nothing is pending.
pub async fn run(shared: Arc<Shared>, backoff: Backoff) {
    let mut failures = 0u32;
    let mut generation = None;
    loop {
        let delivery = match shared.wait_until(None, |s| s.next_delivery()).await {
            Waited::Ready(d) => d,
            Waited::TimedOut | Waited::ShuttingDown => return,
        };
        // A new webhook starts with a fresh backoff.
        if generation.replace(delivery.webhook_generation) != Some(delivery.webhook_generation) {
            failures = 0;
        }
        let outcome =
            tokio::time::timeout(backoff.request_timeout, post(&delivery)).await.unwrap_or(Err(DeliveryError::Timeout));
        match outcome {
            Ok(()) => {
                failures = 0;
                shared.update(|s| s.delivered(&delivery));
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(update_id = delivery.update_id, error = %e, "webhook delivery failed; will retry");
                shared.update(|s| s.delivery_failed(&delivery, e.to_string(), unix_now()));
                if !shared.sleep(backoff.delay(failures)).await {
                    return;
                }
            }
        }
    }
}

/// One HTTP/1.1 POST over a fresh connection (the stand-in only targets loopback receivers).
async fn post(delivery: &Delivery) -> Result<(), DeliveryError> {
    let uri: Uri = delivery.url.parse().map_err(|_| DeliveryError::Url)?;
    let host = uri.host().ok_or(DeliveryError::Url)?;
    let port = uri.port_u16().unwrap_or(80);
    let stream = TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let authority = uri.authority().map_or(host, |a| a.as_str());
    let mut request = Request::post(path)
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, delivery.body.len());
    if let Some(secret) = &delivery.secret_token {
        request = request.header(SECRET_HEADER, secret);
    }
    let request = request.body(Full::new(Bytes::from(delivery.body.clone())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    // Read the answer to the end (Telegram ignores it unless it is a method call).
    let _ = response.into_body().collect().await;
    connection.abort();
    if status.is_success() { Ok(()) } else { Err(DeliveryError::Status(status)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let b = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), ..Backoff::default() };
        let delays: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }
}
