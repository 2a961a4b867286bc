//! The LLM proxy: `POST /v1/chat/completions` and `GET /v1/models`, forwarded to the
//! provider with the real API key.
//!
//! What is forwarded: the agent's JSON body as `shape` allows it (the fields an agent needs,
//! the configured model, one choice, a capped answer) and nothing else of the agent's
//! request — no header of the
//! agent's reaches the provider; the broker sends its own `Authorization` and
//! `Content-Type`. What comes back: the provider's status and JSON body; a `Retry-After`
//! header on 429/503. Provider errors that are not in OpenAI's shape are wrapped into it, and
//! a provider 401/403 (the broker's key is wrong) becomes 502: the provider's message may
//! quote part of the key, and the agent's own credentials are fine.
//!
//! Streaming is not supported (`stream: true` is refused with 400): the broker reads the
//! whole answer to count its `usage.total_tokens` against the user's daily budget.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::shape::{Fields, Shape, shape};
use super::{BrokerState, Caller, ErrorShape, ProviderConfig, RequestDecision, RequestError, read_body};
use crate::http::CappedRead;

pub(super) const CHAT: &str = "chat_completions";
pub(super) const MODELS: &str = "models";

/// A provider failure, told to the agent as the broker's own.
const UPSTREAM: ErrorShape = ErrorShape::OpenAi { kind: "upstream_error", code: None };

/// The HTTP client for the provider: the gateway's TLS set-up (ring, the platform's root
/// store), no redirects (the API key must not follow one elsewhere).
pub(crate) fn provider_client(config: &ProviderConfig) -> Result<reqwest::Client, String> {
    let tls = crate::gateway::web_fetch::tls_config(&[]).map_err(|e| e.0)?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(std::time::Duration::from_secs(10)))
        .user_agent(concat!("moltmates-broker/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

pub(super) async fn chat_completions(
    State(state): State<Arc<BrokerState>>,
    caller: Caller,
    body: Body,
) -> Result<Response, RequestError> {
    let refuse = |status: StatusCode, message: String, bytes_in: usize| {
        caller.outcome(RequestDecision::Refused, bytes_in).fail(status, ErrorShape::INVALID_REQUEST, message)
    };
    let bytes = read_body(body, state.config.max_request_bytes, state.config.body_timeout)
        .await
        .map_err(|e| refuse(e.status(), e.message(), 0))?;
    let bad = |message: String| refuse(StatusCode::BAD_REQUEST, message, bytes.len());
    let fields = super::shape::fields(&bytes).map_err(bad)?;
    let models = state.model_choice(&caller.profile);
    let rules = Shape {
        model: models.in_use(caller.chosen_model.as_deref()).map(str::to_string),
        allowed: models.allowed,
        max_output_tokens: state.config.max_output_tokens,
    };
    let request = shape(fields, &rules).map_err(bad)?;
    let model = super::shape::value(&request, "model").and_then(|m| m.as_str().map(str::to_string));
    // About the size it came in: growing the buffer would copy the conversation over and over.
    let mut body = Vec::with_capacity(bytes.len() + 64);
    serde_json::to_writer(&mut body, &request).map_err(|e| bad(format!("the request could not be re-encoded: {e}")))?;
    admit(&state, &caller)?;
    let estimate = estimated_tokens(&request, body.len());
    let call = Call { endpoint: CHAT, method: Method::POST, path: "chat/completions", model: model.as_deref() };
    forward(&state, &caller, call, Some(body), bytes.len(), estimate).await
}

/// The error code the broker answers when the provider does not serve the configured model.
pub const MODEL_NOT_SERVED: &str = "model_not_served";

/// Whether a provider's refusal is about the model itself (unknown, not available), as
/// OpenAI (404 `model_not_found`), Ollama (404 "model ... not found") and others word it;
/// not a 400 that merely mentions the model, such as a context-length error.
fn refuses_the_model(status: StatusCode, code: Option<&str>, message: &str) -> bool {
    if !matches!(status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST) {
        return false;
    }
    if code == Some("model_not_found") {
        return true;
    }
    let message = message.to_lowercase();
    message.contains("model")
        && ["not found", "does not exist", "not a valid model", "invalid model", "unknown model", "no such model"]
            .iter()
            .any(|phrase| message.contains(phrase))
}

/// What a request may cost at most, charged before it is forwarded and settled once the
/// provider reports its usage: the prompt (about four bytes a token) and the longest answer
/// it may get.
fn estimated_tokens(request: &Fields, body_bytes: usize) -> u64 {
    let answer = ["max_tokens", "max_completion_tokens"]
        .iter()
        .filter_map(|k| super::shape::value(request, k).and_then(|v| v.as_u64()))
        .max();
    (body_bytes as u64).div_ceil(4) + answer.unwrap_or(0)
}

pub(super) async fn models(State(state): State<Arc<BrokerState>>, caller: Caller) -> Result<Response, RequestError> {
    // Counted like a completion: it costs no tokens, but a flood of them reaches the provider.
    admit(&state, &caller)?;
    forward(&state, &caller, Call { endpoint: MODELS, method: Method::GET, path: "models", model: None }, None, 0, 0)
        .await
}

/// The user's per-minute and per-day limits: the 429 (OpenAI's shape) to send if over them.
/// The daily budget's error type is `insufficient_quota`, which OpenAI clients do not retry.
fn admit(state: &BrokerState, caller: &Caller) -> Result<(), RequestError> {
    let now = state.clock.now_ms();
    let result = state.limiter.lock().unwrap_or_else(|e| e.into_inner()).admit(&caller.name, caller.profile.llm, now);
    let Err(limited) = result else {
        state.request_counter.lock().unwrap_or_else(|e| e.into_inner()).record_tokens(&caller.name, 1, now);
        return Ok(());
    };
    let message = limited.message(caller.profile_name());
    let outcome = caller.outcome(RequestDecision::Limited, 0);
    let error = match limited {
        super::limits::Limited::Rate { retry_after_secs, .. } => {
            let shape = ErrorShape::OpenAi { kind: "requests", code: Some("rate_limit_exceeded") };
            outcome
                .fail(StatusCode::TOO_MANY_REQUESTS, shape, message)
                .header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
        }
        super::limits::Limited::Budget { .. } => {
            let shape = ErrorShape::OpenAi { kind: "insufficient_quota", code: Some("insufficient_quota") };
            outcome.fail(StatusCode::TOO_MANY_REQUESTS, shape, message)
        }
    };
    Err(error.header(HeaderName::from_static("x-moltmate-limit"), HeaderValue::from_static("broker")))
}

/// One request to the provider: the route's name (for logs and metrics), the provider's path,
/// and the model it asks for.
struct Call<'a> {
    endpoint: &'static str,
    method: Method,
    path: &'a str,
    model: Option<&'a str>,
}

async fn forward(
    state: &BrokerState,
    caller: &Caller,
    call: Call<'_>,
    body: Option<Vec<u8>>,
    bytes_in: usize,
    estimate: u64,
) -> Result<Response, RequestError> {
    let provider = &state.config.provider;
    let tokens = |charge: fn(&mut super::limits::Limiter, &str, u64, i64), amount: u64| {
        if amount > 0 {
            let now = state.clock.now_ms();
            charge(&mut state.limiter.lock().unwrap_or_else(|e| e.into_inner()), &caller.name, amount, now);
        }
    };
    // Charged now; settled below once the provider says what the request used. An answer cut
    // off (too large, too late, not JSON) keeps the estimate: the provider bills it anyway.
    tokens(super::limits::Limiter::record_tokens, estimate);
    let endpoint = call.endpoint;
    let mut request =
        state.http.request(call.method, provider.endpoint(call.path)).bearer_auth(provider.api_key.expose());
    if let Some(body) = body {
        request = request.header(header::CONTENT_TYPE, "application/json").body(body);
    }
    let mut outcome = caller.outcome(RequestDecision::Error, bytes_in);

    let upstream = match request.send().await {
        Ok(response) => response,
        Err(e) if e.is_timeout() => {
            return Err(outcome.fail(
                StatusCode::GATEWAY_TIMEOUT,
                UPSTREAM,
                format!("the model provider did not answer within {:?}", provider.timeout),
            ));
        }
        Err(e) => {
            // Nothing reached the provider.
            tokens(super::limits::Limiter::release_tokens, estimate);
            return Err(outcome.fail(
                StatusCode::BAD_GATEWAY,
                UPSTREAM,
                format!("the model provider cannot be reached: {}", innermost(&e)),
            ));
        }
    };
    let status = upstream.status();
    let retry_after = upstream.headers().get(header::RETRY_AFTER).cloned();
    let bytes = match crate::http::read_capped(upstream, state.config.max_response_bytes).await {
        Ok(bytes) => bytes,
        Err(CappedRead::TooLarge) => {
            let message =
                format!("the model provider's answer is larger than {} bytes", state.config.max_response_bytes);
            return Err(outcome.fail(StatusCode::BAD_GATEWAY, UPSTREAM, message));
        }
        Err(CappedRead::Failed(e)) if e.is_timeout() => {
            let message = format!("the model provider did not finish its answer within {:?}", provider.timeout);
            return Err(outcome.fail(StatusCode::GATEWAY_TIMEOUT, UPSTREAM, message));
        }
        Err(CappedRead::Failed(e)) => {
            return Err(outcome.fail(
                StatusCode::BAD_GATEWAY,
                UPSTREAM,
                format!("reading the model provider's answer: {}", innermost(&e)),
            ));
        }
    };
    outcome.bytes_out = bytes.len();
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();

    if status.is_success() {
        let Some(parsed) = parsed else {
            return Err(outcome.fail(StatusCode::BAD_GATEWAY, UPSTREAM, "the model provider's answer is not JSON"));
        };
        let used = parsed.pointer("/usage/total_tokens").and_then(Value::as_u64).unwrap_or(0);
        tokens(super::limits::Limiter::release_tokens, estimate);
        tokens(super::limits::Limiter::record_tokens, used);
        state.metrics.llm_tokens.inc_by(used);
        state
            .metrics
            .user_llm_tokens
            .get_or_create(&super::metrics::UserLabel { user: caller.name.clone() })
            .inc_by(used);
        outcome.tokens = used;
        outcome.decision = RequestDecision::Allowed;
        return Ok((Extension(outcome), [(header::CONTENT_TYPE, "application/json")], bytes).into_response());
    }

    // The provider refused the request: nothing to bill.
    tokens(super::limits::Limiter::release_tokens, estimate);
    let provider_message = parsed
        .as_ref()
        .and_then(|v| {
            v.pointer("/error/message").and_then(Value::as_str).or_else(|| v.get("error").and_then(Value::as_str))
        })
        .map(str::to_string)
        .unwrap_or_else(|| crate::agent::history::truncate(String::from_utf8_lossy(&bytes).trim(), 300).0);
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // Logged for the admin, not passed on: it is about the broker's key.
        tracing::error!(user = %caller.name, endpoint, status = status.as_u16(), provider_message = %provider_message, "the model provider refused the broker's API key");
        let message = format!(
            "the model provider refused the broker's credentials ({}); tell the administrator",
            status.as_u16()
        );
        return Err(outcome.fail(StatusCode::BAD_GATEWAY, UPSTREAM, message));
    }
    let provider_code = parsed.as_ref().and_then(|v| v.pointer("/error/code")).and_then(Value::as_str);
    if refuses_the_model(status, provider_code, &provider_message) {
        // A setting of this installation, not the user's doing: said to the admin in the log
        // and to the agent with its own code, so the person is told who can fix it.
        let model = call.model.unwrap_or("(as the agent sent it)");
        // The default model is the installation's to fix; another is on a person's list.
        let fix = if call.model.is_some() && call.model == provider.default_model.as_deref() {
            tracing::error!(user = %caller.name, model, status = status.as_u16(), provider_message = %provider_message, "the model provider does not serve the configured model; set --llm-default-model (the chart's llm.defaultModel) to one it serves");
            "the administrator must set the gateway's --llm-default-model (the chart's llm.defaultModel) to a model it serves"
        } else {
            tracing::error!(user = %caller.name, model, status = status.as_u16(), provider_message = %provider_message, "the model provider does not serve a model on this user's list; take it off the list (--llm-models, the profile's llm.models or spec.llm.models)");
            "the person can pick another with /model, and the administrator should take it off their list of models"
        };
        let message = format!(
            "the model provider does not serve the model {model:?} ({}: {provider_message}); {fix}",
            status.as_u16()
        );
        // 424, not a 5xx: clients retry those, and asking again cannot help.
        let shape = ErrorShape::OpenAi { kind: "upstream_error", code: Some(MODEL_NOT_SERVED) };
        return Err(outcome.fail(StatusCode::FAILED_DEPENDENCY, shape, message));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        outcome.decision = RequestDecision::Limited;
    }
    let openai_shaped = parsed.as_ref().is_some_and(|v| v.pointer("/error/message").is_some_and(Value::is_string));
    let message = format!("the model provider answered {}: {provider_message}", status.as_u16());
    let mut response = if openai_shaped {
        let outcome = Extension(outcome.reason(message));
        (status, outcome, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
    } else {
        let kind = if status.is_server_error() { "server_error" } else { "upstream_error" };
        outcome.fail(status, ErrorShape::OpenAi { kind, code: None }, message).into_response()
    };
    if let Some(value) = retry_after.filter(|_| matches!(status.as_u16(), 429 | 503)) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    Ok(response)
}

/// The innermost cause: reqwest's own message is only "error sending request".
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        message = err.to_string();
        source = err.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_of_the_model_is_told_from_other_refusals() {
        let table = [
            (
                404,
                Some("model_not_found"),
                "The model `gpt-typo` does not exist or you do not have access to it.",
                true,
            ),
            (404, None, "model \"llama9\" not found, try pulling it first", true),
            (400, None, "gpt-typo is not a valid model ID", true),
            (400, Some("invalid_request_error"), "Unknown model: gpt-typo", true),
            (400, None, "This model's maximum context length is 8192 tokens.", false),
            (404, None, "Not Found", false),
            (500, Some("model_not_found"), "internal", false),
            (429, None, "model gpt-4 not found in your rate tier", false),
        ];
        for (status, code, message, expected) in table {
            let status = StatusCode::from_u16(status).unwrap();
            assert_eq!(refuses_the_model(status, code, message), expected, "{status} {code:?} {message}");
        }
    }
}
