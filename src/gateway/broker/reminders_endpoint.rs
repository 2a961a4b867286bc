//! The agent's reminders: `POST /v1/reminders` `{"text", "when", "repeat"?}` sets one,
//! `GET /v1/reminders` lists them, `DELETE /v1/reminders/{id}` cancels one. Always the calling
//! user's own: the token names the user, the reminder goes to that user's private chat, and
//! the request has no field that could name another (unknown fields are refused). The limits
//! ([`schedule::LIMITS`], and at most [`CREATED_PER_MINUTE`] / [`CREATED_PER_DAY`] new ones,
//! where the profile sets no others: `reminders` in the profile defaults) are the gateway's,
//! whatever the agent was told.
//!
//! 200 with the reminder (or the list); 422 `{"error"}` with what to change; 429 over the
//! creation rate; 404 for an unknown id; 503 when the store cannot be written.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::limits::Limited;
use super::{BrokerState, Caller, ErrorShape, RequestDecision, RequestError, RequestLog, read_body};
use crate::crd::{MoltmateUser, Reminder};
use crate::gateway::reminders::schedule::{self, LIMITS};
use crate::gateway::reminders::store::StoreError;

pub(super) const REMINDERS: &str = "reminders";
/// New reminders one user may set per minute and per UTC day (each one becomes a message).
pub const CREATED_PER_MINUTE: u32 = 10;
pub const CREATED_PER_DAY: u64 = 100;
const MAX_REQUEST_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub text: String,
    pub when: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat: Option<String>,
}

/// A reminder as the agent reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderView {
    pub id: u64,
    pub text: String,
    /// RFC 3339, UTC.
    pub due: String,
    /// `#3 Fri 2026-12-04 08:00 (Europe/Berlin), daily: call mum`.
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    pub timezone: String,
    /// The time now in that zone, `2026-12-03 20:00`.
    pub now_local: String,
    pub reminders: Vec<ReminderView>,
}

/// The user's time zone (name, zone) from their object.
fn zone_of(user: &MoltmateUser) -> (String, jiff::tz::TimeZone) {
    let chosen = user.status.as_ref().and_then(|s| s.reminders.as_ref()).and_then(|b| b.timezone.as_deref());
    schedule::effective_zone(chosen, user.spec.timezone.as_deref())
}

fn view(reminder: &Reminder, user: &MoltmateUser) -> ReminderView {
    let (name, zone) = zone_of(user);
    ReminderView {
        id: reminder.id,
        text: reminder.text.clone(),
        due: reminder.due.clone(),
        description: schedule::describe(reminder, &zone, &name),
    }
}

fn store_failure(caller: &Caller, bytes_in: usize, e: StoreError) -> RequestError {
    let outcome = caller.outcome(RequestDecision::Error, bytes_in);
    match e {
        StoreError::Refused(message) => caller.outcome(RequestDecision::Refused, bytes_in).fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorShape::Fetch,
            message,
        ),
        other => outcome.fail(StatusCode::SERVICE_UNAVAILABLE, ErrorShape::Fetch, format!("{other}; try again later")),
    }
}

fn not_set_up(caller: &Caller) -> RequestError {
    caller.outcome(RequestDecision::Error, 0).fail(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorShape::Fetch,
        "reminders are not available on this gateway",
    )
}

pub(super) async fn create(
    State(state): State<Arc<BrokerState>>,
    caller: Caller,
    body: Body,
) -> Result<(Extension<RequestLog>, Json<ReminderView>), RequestError> {
    let Some(store) = state.reminders.clone() else { return Err(not_set_up(&caller)) };
    let bytes = read_body(body, MAX_REQUEST_BYTES, state.config.body_timeout)
        .await
        .map_err(|e| caller.outcome(RequestDecision::Refused, 0).fail(e.status(), ErrorShape::Fetch, e.message()))?;
    let bytes_in = bytes.len();
    let request: CreateRequest = serde_json::from_slice(&bytes).map_err(|e| {
        let message = format!("the request body must be {{\"text\", \"when\", \"repeat\"?}}: {e}");
        caller.outcome(RequestDecision::Refused, bytes_in).fail(StatusCode::BAD_REQUEST, ErrorShape::Fetch, message)
    })?;
    let own = caller.profile.reminders;
    let per_day = own.per_day.unwrap_or(CREATED_PER_DAY);
    let limits = crate::profile::LlmLimits { requests_per_minute: CREATED_PER_MINUTE, tokens_per_day: per_day };
    let kept = schedule::Limits {
        max_pending: own.max_pending.unwrap_or(LIMITS.max_pending),
        min_repeat: own.min_repeat.unwrap_or(LIMITS.min_repeat),
        ..LIMITS
    };
    let admitted = {
        let now = state.clock.now_ms();
        let mut limiter = state.reminder_limiter.lock().unwrap_or_else(|e| e.into_inner());
        let admitted = limiter.admit(&caller.name, limits, now);
        if admitted.is_ok() {
            limiter.record_tokens(&caller.name, 1, now);
        }
        admitted
    };
    if let Err(over) = admitted {
        let message = match over {
            Limited::Rate { per_minute, retry_after_secs } => {
                format!("at most {per_minute} new reminders per minute; try again in {retry_after_secs} s")
            }
            Limited::Budget { per_day, .. } => format!("at most {per_day} new reminders per day (UTC)"),
        };
        let outcome = caller.outcome(RequestDecision::Limited, bytes_in);
        return Err(outcome.fail(StatusCode::TOO_MANY_REQUESTS, ErrorShape::Fetch, message));
    }
    let now = Timestamp::from_millisecond(state.clock.now_ms()).unwrap_or_else(|_| Timestamp::now());
    let wanted = schedule::Request { text: request.text, when: request.when, repeat: request.repeat };
    let (reminder, user) = store
        .update(&caller.name, |user, book| {
            let (name, zone) = zone_of(user);
            schedule::add(book, &wanted, now, &name, &zone, &kept).map(|r| (r, user.clone()))
        })
        .await
        .map_err(|e| store_failure(&caller, bytes_in, e))?;
    tracing::info!(user = %caller.name, id = reminder.id, due = %reminder.due, "reminder set");
    Ok((Extension(caller.outcome(RequestDecision::Allowed, bytes_in)), Json(view(&reminder, &user))))
}

pub(super) async fn list(
    State(state): State<Arc<BrokerState>>,
    caller: Caller,
) -> Result<(Extension<RequestLog>, Json<ListResponse>), RequestError> {
    let Some(store) = state.reminders.clone() else { return Err(not_set_up(&caller)) };
    let user = store.read(&caller.name).await.map_err(|e| store_failure(&caller, 0, e))?;
    let (name, zone) = zone_of(&user);
    let book = user.status.as_ref().and_then(|s| s.reminders.clone()).unwrap_or_default();
    let now = Timestamp::from_millisecond(state.clock.now_ms()).unwrap_or_else(|_| Timestamp::now());
    let response = ListResponse {
        now_local: now.to_zoned(zone).strftime("%a %Y-%m-%d %H:%M").to_string(),
        timezone: name,
        reminders: book.pending.iter().map(|r| view(r, &user)).collect(),
    };
    Ok((Extension(caller.outcome(RequestDecision::Allowed, 0)), Json(response)))
}

pub(super) async fn cancel(
    State(state): State<Arc<BrokerState>>,
    caller: Caller,
    Path(id): Path<u64>,
) -> Result<(Extension<RequestLog>, Json<ReminderView>), RequestError> {
    let Some(store) = state.reminders.clone() else { return Err(not_set_up(&caller)) };
    let outcome = store.update(&caller.name, |user, book| schedule::cancel(book, id).map(|r| (r, user.clone()))).await;
    match outcome {
        Ok((reminder, user)) => {
            tracing::info!(user = %caller.name, id, "reminder cancelled by the agent");
            Ok((Extension(caller.outcome(RequestDecision::Allowed, 0)), Json(view(&reminder, &user))))
        }
        Err(StoreError::Refused(message)) => {
            Err(caller.outcome(RequestDecision::Refused, 0).fail(StatusCode::NOT_FOUND, ErrorShape::Fetch, message))
        }
        Err(e) => Err(store_failure(&caller, 0, e)),
    }
}
