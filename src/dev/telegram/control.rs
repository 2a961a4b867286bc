//! The control API (not Telegram's): tests and the local stack play the users through it and
//! read back what the bot did. Waits long-poll on conditions (`min_count`, `timeout_ms`, ...)
//! so callers never sleep; a wait that times out answers 408 with the current state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use super::shared::{Shared, Waited, unix_now};
use super::store::{Stats, Store};
use super::types::{InjectCallback, InjectMessage};

/// Longest wait a control call may ask for.
const MAX_WAIT: Duration = Duration::from_secs(300);

pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/control/messages", post(inject))
        .route("/control/callbacks", post(inject_callback))
        .route("/control/callback_answers", get(callback_answers))
        .route("/control/chats/{chat_id}/messages", get(messages))
        .route("/control/chats/{chat_id}/actions", get(actions))
        .route("/control/commands", get(commands))
        .route("/control/stats", get(stats))
        .route("/control/reset", post(reset))
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message.to_string()}))).into_response()
}

async fn inject(State(shared): State<Arc<Shared>>, body: Result<Json<InjectMessage>, JsonRejection>) -> Response {
    let Json(msg) = match body {
        Ok(body) => body,
        Err(e) => return bad_request(e.body_text()),
    };
    match shared.update(|s| s.inject(&msg, unix_now())) {
        Ok(injected) => Json(injected).into_response(),
        Err(e) => bad_request(e),
    }
}

/// A user presses a button on a message the bot sent them.
async fn inject_callback(
    State(shared): State<Arc<Shared>>,
    body: Result<Json<InjectCallback>, JsonRejection>,
) -> Response {
    let Json(press) = match body {
        Ok(body) => body,
        Err(e) => return bad_request(e.body_text()),
    };
    match shared.update(|s| s.inject_callback(&press)) {
        Ok(injected) => Json(injected).into_response(),
        Err(e) => bad_request(e),
    }
}

async fn callback_answers(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.read(Store::callback_answers)).into_response()
}

/// Query parameters of the waiting reads.
struct WaitQuery(HashMap<String, String>);

impl WaitQuery {
    fn parse(query: Option<String>) -> Self {
        let pairs = form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
        Self(pairs)
    }

    fn number<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.0.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| format!("{name}: not a number: {v:?}")),
        }
    }

    fn timeout(&self) -> Result<Duration, String> {
        Ok(Duration::from_millis(self.number("timeout_ms")?.unwrap_or(0)).min(MAX_WAIT))
    }
}

/// Answer once `ready` holds (or at once without a timeout), with `read`'s view of the store.
async fn wait_and_read<T: Serialize>(
    shared: &Shared,
    timeout: Duration,
    ready: impl Fn(&Store) -> bool,
    read: impl Fn(&Store) -> T,
) -> Response {
    let outcome = shared.wait_until(Some(timeout), |s| ready(s).then_some(())).await;
    let body = Json(shared.read(read));
    match outcome {
        Waited::Ready(()) => body.into_response(),
        Waited::TimedOut | Waited::ShuttingDown => (StatusCode::REQUEST_TIMEOUT, body).into_response(),
    }
}

async fn messages(State(shared): State<Arc<Shared>>, Path(chat_id): Path<i64>, RawQuery(q): RawQuery) -> Response {
    let q = WaitQuery::parse(q);
    let (min_count, timeout) = match (q.number::<usize>("min_count"), q.timeout()) {
        (Ok(n), Ok(t)) => (n.unwrap_or(0), t),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    wait_and_read(&shared, timeout, |s| s.sent_count(chat_id) >= min_count, |s| s.sent_to(chat_id)).await
}

async fn actions(State(shared): State<Arc<Shared>>, Path(chat_id): Path<i64>, RawQuery(q): RawQuery) -> Response {
    let q = WaitQuery::parse(q);
    let (min_count, timeout) = match (q.number::<usize>("min_count"), q.timeout()) {
        (Ok(n), Ok(t)) => (n.unwrap_or(0), t),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    wait_and_read(&shared, timeout, |s| s.action_count(chat_id) >= min_count, |s| s.actions_in(chat_id)).await
}

async fn commands(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.read(Store::command_sets)).into_response()
}

/// Conditions a stats read may wait for; all given ones must hold.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatsCondition {
    pub max_pending_updates: Option<usize>,
    pub min_get_updates_calls: Option<u64>,
    pub min_active_polls: Option<usize>,
    pub min_webhook_deliveries: Option<u64>,
    pub min_webhook_failures: Option<u64>,
}

impl StatsCondition {
    pub fn holds(&self, s: &Stats) -> bool {
        self.max_pending_updates.is_none_or(|n| s.pending_updates <= n)
            && self.min_get_updates_calls.is_none_or(|n| s.get_updates_calls >= n)
            && self.min_active_polls.is_none_or(|n| s.active_polls >= n)
            && self.min_webhook_deliveries.is_none_or(|n| s.webhook_deliveries >= n)
            && self.min_webhook_failures.is_none_or(|n| s.webhook_failures >= n)
    }

    fn parse(q: &WaitQuery) -> Result<Self, String> {
        Ok(Self {
            max_pending_updates: q.number("max_pending_updates")?,
            min_get_updates_calls: q.number("min_get_updates_calls")?,
            min_active_polls: q.number("min_active_polls")?,
            min_webhook_deliveries: q.number("min_webhook_deliveries")?,
            min_webhook_failures: q.number("min_webhook_failures")?,
        })
    }
}

async fn stats(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let q = WaitQuery::parse(q);
    let (condition, timeout) = match (StatsCondition::parse(&q), q.timeout()) {
        (Ok(c), Ok(t)) => (c, t),
        (Err(e), _) | (_, Err(e)) => return bad_request(e),
    };
    wait_and_read(&shared, timeout, |s| condition.holds(&s.stats()), Store::stats).await
}

async fn reset(State(shared): State<Arc<Shared>>) -> Response {
    shared.update(Store::reset);
    Json(json!({"ok": true})).into_response()
}
