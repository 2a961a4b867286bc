//! Webhook mode: Telegram POSTs each update to us instead of being polled.
//!
//! Every replica serves the webhook (the Service and Ingress pick one); the Lease holder
//! registers it with `setWebhook`. An update is answered 200 only once it is finished
//! (answered by its agent, or refused), as the polling offset moves only then: a gateway
//! killed mid-turn never answers, so Telegram delivers the update again. A repeat of an
//! update still in flight waits for the first; a repeat of a finished one is answered at once.
//! Telegram's secret-token header is checked on every request.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use teloxide::prelude::*;
use tokio::sync::watch;

use crate::secret::Secret;

use super::telegram::{ALLOWED_UPDATES, Handler, Ticket, dispatch, read_update, register_commands};

pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Finished update ids remembered, to answer Telegram's repeats without handling them twice.
const DONE_KEPT: usize = 10_000;
/// Telegram's limit on parallel webhook connections; the most it allows.
const MAX_CONNECTIONS: u8 = 100;
/// An update body larger than this is not one Telegram sends for a text message.
pub const BODY_MAX: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub addr: SocketAddr,
    pub path: String,
    /// The public https URL Telegram POSTs to (the Ingress in front of `addr` + `path`).
    pub url: url::Url,
    pub secret: Secret<String>,
}

/// Telegram's rule for the secret token: 1-256 of `A-Z a-z 0-9 _ -`. Checked at start, so a
/// bad secret is a clear error here rather than a refused setWebhook later.
pub fn validate_secret(secret: &str) -> Result<(), String> {
    if secret.is_empty() || secret.len() > 256 {
        return Err(format!("the webhook secret must be 1 to 256 characters, not {}", secret.len()));
    }
    if !secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err("the webhook secret may hold only A-Z, a-z, 0-9, _ and -".into());
    }
    Ok(())
}

/// The webhook path: absolute, no query.
pub fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(format!("the webhook path {path:?} must start with / and hold no query"));
    }
    Ok(())
}

/// Which updates are in flight or finished, on this replica.
#[derive(Default)]
pub struct Inbox {
    state: Mutex<InboxState>,
}

#[derive(Default)]
struct InboxState {
    in_flight: HashMap<i64, watch::Receiver<bool>>,
    done: HashSet<i64>,
    done_order: VecDeque<i64>,
}

pub enum Admission {
    /// Handle it; the receiver turns true when the ticket is dropped.
    New(Ticket, watch::Receiver<bool>),
    /// Being handled: wait for it.
    InFlight(watch::Receiver<bool>),
    Done,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn admit(self: &Arc<Self>, update_id: i64) -> Admission {
        let mut state = self.lock();
        if state.done.contains(&update_id) {
            return Admission::Done;
        }
        if let Some(rx) = state.in_flight.get(&update_id) {
            return Admission::InFlight(rx.clone());
        }
        let (tx, rx) = watch::channel(false);
        state.in_flight.insert(update_id, rx.clone());
        let inbox = Arc::clone(self);
        let ticket = Ticket::new(update_id, move || {
            inbox.finish(update_id);
            tx.send_replace(true);
        });
        Admission::New(ticket, rx)
    }

    fn finish(&self, update_id: i64) {
        let mut state = self.lock();
        state.in_flight.remove(&update_id);
        if state.done.insert(update_id) {
            state.done_order.push_back(update_id);
        }
        while state.done_order.len() > DONE_KEPT {
            if let Some(old) = state.done_order.pop_front() {
                state.done.remove(&old);
            }
        }
    }
}

#[derive(Clone)]
struct Receiver {
    secret_digest: [u8; 32],
    inbox: Arc<Inbox>,
    handler: Arc<dyn Handler>,
}

/// The router serving `config.path`.
pub fn router(config: &WebhookConfig, handler: Arc<dyn Handler>) -> Router {
    let receiver = Receiver {
        secret_digest: Sha256::digest(config.secret.expose().as_bytes()).into(),
        inbox: Arc::default(),
        handler,
    };
    Router::new()
        .route(&config.path, post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(BODY_MAX))
        .with_state(receiver)
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    // Digests compared in constant time: neither content nor length of the secret leaks.
    let given = headers.get(SECRET_HEADER).map(|v| Sha256::digest(v.as_bytes()));
    if !given.is_some_and(|g| bool::from(g.as_slice().ct_eq(&receiver.secret_digest))) {
        tracing::warn!(secret_given = given.is_some(), "webhook request without the right secret token refused");
        return (StatusCode::UNAUTHORIZED, "wrong or missing secret token").into_response();
    }
    let read = serde_json::from_slice(&body).and_then(|raw| read_update(&raw));
    let (update, message) = match read {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %e, "webhook body is not a Telegram update");
            return (StatusCode::BAD_REQUEST, format!("not a Telegram update: {e}")).into_response();
        }
    };
    let update_id = i64::from(update.id.0);
    let mut finished = match receiver.inbox.admit(update_id) {
        Admission::Done => return StatusCode::OK.into_response(),
        Admission::InFlight(rx) => rx,
        Admission::New(ticket, rx) => {
            dispatch(receiver.handler.as_ref(), &update, message, ticket);
            rx
        }
    };
    // If Telegram hangs up meanwhile, this future is dropped; the update is still handled
    // and its repeat answered from the inbox.
    let _ = finished.wait_for(|done| *done).await;
    StatusCode::OK.into_response()
}

/// Register the webhook with Telegram (the Lease holder does this) and the command menu.
pub async fn register(bot: &Bot, config: &WebhookConfig) -> Result<(), teloxide::RequestError> {
    bot.set_webhook(config.url.clone())
        .secret_token(config.secret.expose().clone())
        .allowed_updates(ALLOWED_UPDATES)
        .max_connections(MAX_CONNECTIONS)
        .await?;
    register_commands(bot).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_follow_telegrams_rule() {
        assert!(validate_secret("abc_DEF-123").is_ok());
        assert!(validate_secret(&"a".repeat(256)).is_ok());
        for bad in ["", "has space", "semi;colon", "é"] {
            assert!(validate_secret(bad).is_err(), "{bad:?}");
        }
        assert!(validate_secret(&"a".repeat(257)).is_err());
        assert!(validate_path("/telegram").is_ok());
        assert!(validate_path("telegram").is_err() && validate_path("/t?x=1").is_err());
    }

    #[tokio::test]
    async fn a_repeat_waits_for_the_first_then_is_answered_from_memory() {
        let inbox = Arc::new(Inbox::default());
        let Admission::New(ticket, mut first) = inbox.admit(7) else { panic!("new") };
        let Admission::InFlight(mut repeat) = inbox.admit(7) else { panic!("in flight") };
        assert!(!*repeat.borrow());
        assert!(matches!(inbox.admit(8), Admission::New(..)), "another update is independent");
        drop(ticket);
        assert!(*first.wait_for(|d| *d).await.unwrap());
        assert!(*repeat.wait_for(|d| *d).await.unwrap());
        assert!(matches!(inbox.admit(7), Admission::Done));
    }

    #[test]
    fn finished_ids_are_forgotten_oldest_first() {
        let inbox = Arc::new(Inbox::default());
        for id in 0..(DONE_KEPT as i64 + 1) {
            let Admission::New(ticket, _) = inbox.admit(id) else { panic!() };
            drop(ticket);
        }
        assert!(matches!(inbox.admit(0), Admission::New(..)), "oldest forgotten");
        assert!(matches!(inbox.admit(DONE_KEPT as i64), Admission::Done));
    }
}
