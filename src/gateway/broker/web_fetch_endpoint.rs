//! `POST /v1/fetch` `{"url": "..."}`: the SSRF-safe [`Fetcher`](crate::gateway::web_fetch::Fetcher)
//! under the calling user's `web.fetch` policy.
//!
//! 200 `{"status", "content_type", "text", "final_url", "truncated"}` (`status` is the
//! page's own); 403 `{"error": reason}` when the URL, or where it redirects, is not allowed
//! (fetch disabled, domain not allowed, private or metadata address, ...); 502 `{"error"}`
//! when an allowed fetch failed; 429 when the user already has as many fetches running as
//! allowed, 503 when the broker as a whole does.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::limits::Limited;
use super::{BrokerState, Caller, ErrorShape, RequestDecision, RequestError, RequestLog, read_body};

pub(super) const FETCH: &str = "fetch";

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

pub(super) async fn fetch(
    State(state): State<Arc<BrokerState>>,
    caller: Caller,
    body: Body,
) -> Result<(Extension<RequestLog>, Json<FetchResponse>), RequestError> {
    let fail = |decision: RequestDecision, bytes_in: usize, status: StatusCode, message: String| {
        caller.outcome(decision, bytes_in).fail(status, ErrorShape::Fetch, message)
    };
    let bytes = read_body(body, state.config.max_fetch_request_bytes, state.config.body_timeout)
        .await
        .map_err(|e| fail(RequestDecision::Refused, 0, e.status(), e.message()))?;
    let bytes_in = bytes.len();
    let request: FetchRequest = serde_json::from_slice(&bytes).map_err(|e| {
        let message = format!("the request body must be {{\"url\": \"...\"}}: {e}");
        fail(RequestDecision::Refused, bytes_in, StatusCode::BAD_REQUEST, message)
    })?;
    let limited = |status: StatusCode, message: String| fail(RequestDecision::Limited, bytes_in, status, message);

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
    if let Err(over) = admitted {
        let message = match over {
            Limited::Rate { per_minute, retry_after_secs } => {
                format!("at most {per_minute} fetches per minute; try again in {retry_after_secs} s")
            }
            Limited::Budget { per_day, .. } => {
                format!("the daily budget of {per_day} fetches is used up; it resets at 00:00 UTC")
            }
        };
        return Err(limited(StatusCode::TOO_MANY_REQUESTS, message));
    }
    let user_slots = state.user_fetch_slots(&caller.name);
    let Ok(_user_slot) = user_slots.try_acquire_owned() else {
        let message = format!(
            "at most {} fetches at a time per user; wait for the others to finish",
            state.config.fetches_per_user
        );
        return Err(limited(StatusCode::TOO_MANY_REQUESTS, message));
    };
    let wait = state.fetcher.config().timeout;
    let _slot = match tokio::time::timeout(wait, state.fetch_slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            let message = format!("the broker is busy with {} fetches; try again later", state.config.fetches_at_once);
            return Err(limited(StatusCode::SERVICE_UNAVAILABLE, message));
        }
    };

    let page = match state.fetcher.fetch(&caller.name, &caller.profile.web_fetch, &request.url).await {
        Ok(page) => page,
        Err(e) if e.is_refusal() => {
            return Err(fail(RequestDecision::Refused, bytes_in, StatusCode::FORBIDDEN, e.to_string()));
        }
        Err(e) => return Err(fail(RequestDecision::Error, bytes_in, StatusCode::BAD_GATEWAY, e.to_string())),
    };
    let outcome = RequestLog { bytes_out: page.bytes, ..caller.outcome(RequestDecision::Allowed, bytes_in) };
    let response = FetchResponse {
        status: page.status,
        content_type: page.content_type,
        text: page.text,
        final_url: page.final_url,
        truncated: page.truncated,
    };
    Ok((Extension(outcome), Json(response)))
}
