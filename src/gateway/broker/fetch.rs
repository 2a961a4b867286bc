//! `POST /v1/fetch` `{"url": "..."}`: the SSRF-safe [`Fetcher`](crate::gateway::fetch::Fetcher)
//! under the calling user's `web.fetch` policy.
//!
//! 200 `{"status", "content_type", "text", "final_url", "truncated"}` (`status` is the
//! page's own); 403 `{"error": reason}` when the URL, or where it redirects, is not allowed
//! (fetch disabled, domain not allowed, private or metadata address, ...); 502 `{"error"}`
//! when an allowed fetch failed; 429 when the user already has as many fetches running as
//! allowed, 503 when the broker as a whole does.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::limits::Limited;
use super::{BrokerState, Decision, Outcome, fetch_error, read_body};

const FETCH: &str = "fetch";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchResponse {
    pub status: u16,
    pub content_type: String,
    pub text: String,
    pub final_url: String,
    pub truncated: bool,
}

pub(super) async fn fetch(State(state): State<Arc<BrokerState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let caller = match state.authenticate(&headers) {
        Ok(caller) => caller,
        Err(r) => return state.finish(FETCH, started, r.outcome(), fetch_error(r.status, &r.message)),
    };
    let outcome = |decision: Decision, bytes_in: usize| {
        let mut o = Outcome::new(Some(caller.name.clone()), decision);
        o.bytes_in = bytes_in;
        o
    };
    let answer = |outcome: Outcome, status: StatusCode, message: String| {
        state.finish(FETCH, started, outcome.reason(message.clone()), fetch_error(status, &message))
    };
    let bytes = match read_body(body, state.config.max_fetch_request_bytes, state.config.body_timeout).await {
        Ok(bytes) => bytes,
        Err(e) => return answer(outcome(Decision::Refused, 0), e.status(), e.message()),
    };
    let request: FetchRequest = match serde_json::from_slice(&bytes) {
        Ok(request) => request,
        Err(e) => {
            let message = format!("the request body must be {{\"url\": \"...\"}}: {e}");
            return answer(outcome(Decision::Refused, bytes.len()), StatusCode::BAD_REQUEST, message);
        }
    };

    // A budget per user, as for the LLM: every fetch is a request out of the cluster on the
    // installation's behalf.
    let limits = crate::profile::LlmLimits {
        requests_per_minute: state.config.fetches_per_minute,
        tokens_per_day: state.config.fetches_per_day,
    };
    let admitted = {
        let now = state.clock.now_ms();
        let mut fetch_limiter = state.fetch_limiter.lock().unwrap_or_else(|e| e.into_inner());
        let admitted = fetch_limiter.admit(&caller.name, limits, now);
        if admitted.is_ok() {
            fetch_limiter.record_tokens(&caller.name, 1, now);
        }
        admitted
    };
    if let Err(limited) = admitted {
        let message = match limited {
            Limited::Rate { per_minute, retry_after_secs } => {
                format!("at most {per_minute} fetches per minute; try again in {retry_after_secs} s")
            }
            Limited::Budget { per_day, .. } => {
                format!("the daily budget of {per_day} fetches is used up; it resets at 00:00 UTC")
            }
        };
        return answer(outcome(Decision::Limited, bytes.len()), StatusCode::TOO_MANY_REQUESTS, message);
    }
    let user_slots = state.user_fetch_slots(&caller.name);
    let Ok(_user_slot) = user_slots.try_acquire_owned() else {
        let message = format!(
            "at most {} fetches at a time per user; wait for the others to finish",
            state.config.fetches_per_user
        );
        return answer(outcome(Decision::Limited, bytes.len()), StatusCode::TOO_MANY_REQUESTS, message);
    };
    let wait = state.fetcher.config().timeout;
    let _slot = match tokio::time::timeout(wait, state.fetch_slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            let message = format!("the broker is busy with {} fetches; try again later", state.config.fetches_at_once);
            return answer(outcome(Decision::Limited, bytes.len()), StatusCode::SERVICE_UNAVAILABLE, message);
        }
    };

    match state.fetcher.fetch(&caller.name, &caller.profile.web_fetch, &request.url).await {
        Ok(page) => {
            let mut o = outcome(Decision::Allowed, bytes.len());
            o.bytes_out = page.bytes;
            let response = FetchResponse {
                status: page.status,
                content_type: page.content_type,
                text: page.text,
                final_url: page.final_url,
                truncated: page.truncated,
            };
            state.finish(FETCH, started, o, axum::Json(response).into_response())
        }
        Err(e) if e.is_refusal() => {
            answer(outcome(Decision::Refused, bytes.len()), StatusCode::FORBIDDEN, e.to_string())
        }
        Err(e) => answer(outcome(Decision::Error, bytes.len()), StatusCode::BAD_GATEWAY, e.to_string()),
    }
}
