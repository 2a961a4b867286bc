//! HTTP: the turn API behind the bearer token; merged with the shared /healthz /readyz /metrics.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::OwnedMutexGuard;
use tracing::{Instrument, error, info, warn};

use super::api::{BODY_MAX, ErrorBody, FileSaved, ReminderNote, SEND_MAX, TurnRequest, TurnResponse, UPLOAD_MAX};
use super::files::FileError;
use super::service::{Agent, ForgetError};
use super::store::SessionStore;
use super::uploads::SaveError;

pub fn router(agent: Arc<Agent>) -> Router {
    Router::new()
        .route("/v1/turn", post(turn))
        .route("/v1/turn/{update_id}/delivered", post(delivered))
        .route("/v1/reminder", post(reminder))
        .route("/v1/reset", post(reset))
        .route("/v1/status", get(status))
        .route("/v1/memory", get(memory))
        .route("/v1/memory/{number}", delete(forget))
        // One route for both: the name of a file to read may hold directories.
        .route("/v1/files/{*path}", put(put_file).layer(DefaultBodyLimit::max(UPLOAD_MAX)).get(get_file))
        .layer(middleware::from_fn_with_state(agent.clone(), require_token))
        .layer(DefaultBodyLimit::max(BODY_MAX))
        .with_state(agent)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody { error: message.into() })).into_response()
}

/// Compare digests, so neither the content nor the length of the token leaks through timing.
pub fn token_matches(expected: &str, headers: &HeaderMap) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    Sha256::digest(expected.as_bytes()).ct_eq(&Sha256::digest(given.as_bytes())).into()
}

async fn require_token(State(agent): State<Arc<Agent>>, request: Request, next: Next) -> Response {
    if token_matches(agent.config.token.expose(), request.headers()) {
        return next.run(request).await;
    }
    warn!(user = %agent.config.user, path = %request.uri().path(), "request without a valid token refused");
    let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}

async fn turn(State(agent): State<Arc<Agent>>, body: Result<Json<TurnRequest>, JsonRejection>) -> Response {
    let request = match body {
        Ok(Json(request)) => request,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    if let Err(message) = request.validate() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    info!(user = %agent.config.user, update_id = request.update_id, "turn received");
    // Queue for the turn lock here, in the order requests arrive (the lock is FIFO)...
    let mut session = agent.session.clone().lock_owned().await;
    // ...then run the turn in its own task: if the gateway hangs up, the turn still finishes
    // and its reply is stored for the redelivery.
    let task_agent = agent.clone();
    let task = tokio::spawn(
        async move {
            let result = task_agent.turn(&mut session, request).await;
            (result, session)
        }
        .in_current_span(),
    );
    match task.await {
        Ok((Ok(response), session)) => reply_then_release(&response, session),
        Ok((Err(e), _session)) => {
            error!(user = %agent.config.user, error = %e, "turn failed");
            error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => {
            error!(user = %agent.config.user, error = %e, "turn task failed");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the turn failed unexpectedly")
        }
    }
}

/// The reply, with the turn lock held until the connection has taken the body: the next
/// turn starts only once this reply is on its way, so replies leave in arrival order.
fn reply_then_release(response: &TurnResponse, session: OwnedMutexGuard<SessionStore>) -> Response {
    let bytes = match serde_json::to_vec(response) {
        Ok(bytes) => Bytes::from(bytes),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("the reply could not be encoded: {e}")),
    };
    // The guard lives in the stream, which the server drops after sending its only chunk.
    let body = futures::stream::iter([Ok::<_, Infallible>(bytes)]).map(move |chunk| {
        let _turn_lock = &session;
        chunk
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(body)).into_response()
}

/// The gateway sent this update's reply to Telegram: a redelivery must not send it again.
async fn delivered(State(agent): State<Arc<Agent>>, Path(update_id): Path<i64>) -> Response {
    let mut session = agent.session.clone().lock_owned().await;
    match session.record_delivered(update_id) {
        Ok(true) => Json(serde_json::json!({ "update_id": update_id })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("update {update_id} has no reply here")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// The gateway delivered a reminder: noted in the conversation, so a follow-up has context.
async fn reminder(State(agent): State<Arc<Agent>>, body: Result<Json<ReminderNote>, JsonRejection>) -> Response {
    let note = match body {
        Ok(Json(note)) => note,
        Err(rejection) => return error(rejection.status(), rejection.body_text()),
    };
    if let Err(message) = note.validate() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, message);
    }
    let mut session = agent.session.clone().lock_owned().await;
    match session.record_reminder(&note.key, &note.text) {
        Ok(noted) => {
            info!(user = %agent.config.user, key = %note.key, noted, "reminder noted in the conversation");
            Json(serde_json::json!({ "noted": noted })).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn reset(State(agent): State<Arc<Agent>>) -> Response {
    let mut session = agent.session.clone().lock_owned().await;
    match agent.reset(&mut session) {
        Ok(response) => Json(response).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// A file the person sent: saved in `files/` under a safe, unused name, within the
/// workspace's size.
async fn put_file(State(agent): State<Arc<Agent>>, Path(name): Path<String>, bytes: Bytes) -> Response {
    if !agent.workspace.writable() {
        return error(StatusCode::FORBIDDEN, "the workspace is read-only (workspaceAccess: ro)");
    }
    if let Some(disk) = agent.tools.disk
        && let Err(full) = disk.admit(agent.workspace.bytes_used_async().await, bytes.len() as u64)
    {
        warn!(user = %agent.config.user, bytes = bytes.len(), "file refused: the workspace is full");
        return error(StatusCode::INSUFFICIENT_STORAGE, full);
    }
    let workspace = agent.workspace.clone();
    let size = bytes.len() as u64;
    let saved = tokio::task::spawn_blocking(move || {
        let dir = workspace.files_dir().map_err(SaveError::from)?;
        super::uploads::save(std::os::fd::AsFd::as_fd(&dir), &name, &bytes)
    })
    .await;
    match saved {
        Ok(Ok(name)) => {
            info!(user = %agent.config.user, name = %name, bytes = size, "file saved");
            Json(FileSaved { name, size }).into_response()
        }
        Ok(Err(e @ SaveError::Full)) => error(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        Ok(Err(e @ SaveError::ReadOnly)) => error(StatusCode::FORBIDDEN, e.to_string()),
        Ok(Err(SaveError::Failed(reason))) => error(StatusCode::INTERNAL_SERVER_ERROR, reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("saving the file stopped: {e}")),
    }
}

/// A file from `files/` for the gateway to send to the person (what `send_file` queued):
/// confined to `files/` like the file tools, links not followed, at most `SEND_MAX` bytes.
async fn get_file(State(agent): State<Arc<Agent>>, Path(path): Path<String>) -> Response {
    let workspace = agent.workspace.clone();
    let read = tokio::task::spawn_blocking(move || {
        let dir = workspace.files_dir()?;
        super::files::read(std::os::fd::AsFd::as_fd(&dir), &path, 0, SEND_MAX + 1)
    })
    .await;
    match read {
        Ok(Ok(out)) if out.bytes.len() > SEND_MAX => {
            error(StatusCode::PAYLOAD_TOO_LARGE, format!("files sent are limited to {SEND_MAX} bytes"))
        }
        Ok(Ok(out)) => ([(header::CONTENT_TYPE, "application/octet-stream")], out.bytes).into_response(),
        Ok(Err(FileError::Denied(reason))) => error(StatusCode::FORBIDDEN, reason),
        Ok(Err(FileError::Failed(reason))) => error(StatusCode::NOT_FOUND, reason),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the file stopped: {e}")),
    }
}

async fn status(State(agent): State<Arc<Agent>>) -> Response {
    Json(agent.status().await).into_response()
}

/// The notes in MEMORY.md, read between turns (a turn may be writing one).
async fn memory(State(agent): State<Arc<Agent>>) -> Response {
    let _turn_lock = agent.session.clone().lock_owned().await;
    match agent.memory().await {
        Ok(memory) => Json(memory).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Remove one note, between turns.
async fn forget(State(agent): State<Arc<Agent>>, Path(number): Path<usize>) -> Response {
    let _turn_lock = agent.session.clone().lock_owned().await;
    match agent.forget(number).await {
        Ok(forgotten) => Json(forgotten).into_response(),
        Err(e @ ForgetError::NoSuchNote(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(ForgetError::File(e @ FileError::Denied(_))) => error(StatusCode::FORBIDDEN, e.to_string()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = "0123456789abcdef";
        assert!(token_matches(token, &headers("Bearer 0123456789abcdef")));
        assert!(token_matches(token, &headers("bearer 0123456789abcdef")));
        for bad in [
            "Bearer 0123456789abcdeF",
            "Bearer 0123456789abcde",
            "Basic 0123456789abcdef",
            "0123456789abcdef",
            "Bearer ",
        ] {
            assert!(!token_matches(token, &headers(bad)), "{bad}");
        }
        assert!(!token_matches(token, &HeaderMap::new()));
    }
}
