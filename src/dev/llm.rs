//! `moltmate dev llm`: a local stand-in for an OpenAI-compatible LLM provider.
//!
//! No model can be reached from tests or the local stack, so this server answers
//! `POST /v1/chat/completions` in the real wire format (a `chat.completion` object with
//! `choices[0].message` holding `content` or `tool_calls`, `finish_reason` and `usage`), and
//! `GET /v1/models`, and `POST /v1/audio/transcriptions` (a multipart form with `file` and
//! `model`, as OpenAI takes it; the transcript is the file's bytes when they are text). It is
//! the provider the broker forwards to, through the same client code and base-URL
//! configuration production uses.
//!
//! Behaviour, without a script (useful for a demo):
//! - the last message is a tool result: "The `<tool>` tool returned:\n<result>";
//! - the last user message is `/tool <name> <argument>`: a call of that tool, with the
//!   agent's argument shapes (`exec` `{"command"}`, `read_file`/`list_files` `{"path"}`,
//!   `write_file <path> <content>` `{"path","content"}`, `remember` `{"text"}`, `web_fetch`
//!   `{"url"}`; a JSON object as the argument is passed as is). A tool the request does not
//!   offer gets a text answer saying so;
//! - the last message is the user's `/slow <ms> <text>`: "You said: <text>", after waiting
//!   `ms` milliseconds (at most a minute), to play a slow model;
//! - otherwise: "You said: <last user message>".
//!
//! Usage is counted as one token per 4 characters (at least 1), prompt and completion.
//!
//! Control API (no key needed; bind it to loopback): `POST /control/script` (one or a list of
//! [`Scripted`] answers, used before the rules, in order), `GET /control/requests`
//! (everything received under `/v1/`, with `?min_count=N&timeout_ms=T` to wait for N),
//! `DELETE /control/requests`, `POST /control/fail {"status", "count"}` (the next `count`
//! completions or transcriptions fail with that status and an OpenAI error body), `POST /control/reset`.
//! With an API key set, `/v1/` requests without `Authorization: Bearer <key>` get 401.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent::tools::{EXEC, LIST_FILES, READ_FILE, REMEMBER, SEND_FILE, WEB_FETCH, WRITE_FILE};

/// The model name `GET /v1/models` lists when no `--model` is given.
pub const MODEL: &str = "moltmates-dev";

#[derive(clap::Args, Debug, Clone)]
pub struct LlmArgs {
    /// Address to serve the OpenAI-compatible API and the control API on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub listen: SocketAddr,
    /// Require this API key (`Authorization: Bearer <key>`) on `/v1/` requests.
    #[arg(long, env = "MOLTMATE_DEV_LLM_API_KEY")]
    pub api_key: Option<String>,
    /// Serve only this model (repeat for several), and refuse requests for any other as a
    /// provider does (404 `model_not_found`). Without it, any model is answered.
    #[arg(long = "model")]
    pub models: Vec<String>,
}

/// Serve until SIGINT or SIGTERM. Prints the base URL (`http://ADDR/v1`) once listening.
pub async fn run(args: LlmArgs) -> std::io::Result<()> {
    let shutdown = crate::shutdown::Shutdown::on_signals()?;
    let models = (!args.models.is_empty()).then_some(args.models);
    let standin = LlmStandIn::start_serving(args.listen, args.api_key, models).await?;
    println!("{}", standin.url());
    tracing::info!(url = %standin.url(), "LLM stand-in listening");
    shutdown.requested().await;
    Ok(())
}

/// A canned answer, used (in order) before the rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Scripted {
    /// A final answer (`finish_reason: "stop"`).
    Reply {
        content: String,
        /// `usage.total_tokens` to report; by default counted from the text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_tokens: Option<u64>,
    },
    /// One tool call (`finish_reason: "tool_calls"`); `arguments` is sent as its JSON text.
    ToolCall {
        name: String,
        arguments: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        total_tokens: Option<u64>,
    },
    /// An HTTP error with an OpenAI error body.
    Error { status: u16, message: String },
    /// This status and body, whatever they are.
    Raw {
        #[serde(default = "ok_status")]
        status: u16,
        body: Value,
    },
}

fn ok_status() -> u16 {
    200
}

/// A request as the stand-in received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    /// The body as JSON; a body that is not JSON as a string; `null` without a body.
    pub body: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailNext {
    pub status: u16,
    pub count: u32,
}

/// Ran out of time waiting for requests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?} waiting for requests at the LLM stand-in")]
pub struct WaitTimeout(pub Duration);

struct Shared {
    api_key: Option<String>,
    /// The models served; `None`: any.
    models: Option<Vec<String>>,
    script: Mutex<VecDeque<Scripted>>,
    requests: Mutex<Vec<RecordedRequest>>,
    fail: Mutex<Option<FailNext>>,
    /// The number of requests received; waiters watch it.
    received: watch::Sender<usize>,
    ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        let count = {
            let mut requests = lock(&self.requests);
            requests.push(request);
            requests.len()
        };
        self.received.send_replace(count);
    }

    async fn wait_for(&self, count: usize, timeout: Duration) -> Result<Vec<RecordedRequest>, WaitTimeout> {
        let mut rx = self.received.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|n| *n >= count)).await {
            Ok(Ok(_)) => Ok(lock(&self.requests).clone()),
            _ => Err(WaitTimeout(timeout)),
        }
    }
}

/// A running stand-in. Dropping it stops the server.
pub struct LlmStandIn {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for LlmStandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LlmStandIn {
    /// Serve on `addr` (port 0 picks a free port); with `api_key`, `/v1/` requires it.
    pub async fn start(addr: SocketAddr, api_key: Option<String>) -> std::io::Result<Self> {
        Self::start_serving(addr, api_key, None).await
    }

    /// The same, serving only `models` (when given): a request for another is refused as
    /// OpenAI refuses it.
    pub async fn start_serving(
        addr: SocketAddr,
        api_key: Option<String>,
        models: Option<Vec<String>>,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            api_key: api_key.filter(|k| !k.is_empty()),
            models,
            script: Mutex::new(VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            fail: Mutex::new(None),
            received: watch::Sender::new(0),
            ids: AtomicU64::new(1),
        });
        let app = router(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "LLM stand-in stopped");
            }
        });
        Ok(Self { addr, shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The OpenAI-style base URL: `http://ADDR/v1` (append `/chat/completions`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Everything received under `/v1/` so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// Wait until at least `count` requests were received; all of them.
    pub async fn wait_for_requests(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, WaitTimeout> {
        self.shared.wait_for(count, timeout).await
    }

    pub fn clear_requests(&self) {
        lock(&self.shared.requests).clear();
        self.shared.received.send_replace(0);
    }

    /// Queue canned answers; they are used in order, before the rules.
    pub fn script(&self, steps: impl IntoIterator<Item = Scripted>) {
        lock(&self.shared.script).extend(steps);
    }

    /// The next `count` completions fail with `status`.
    pub fn fail_next(&self, status: u16, count: u32) {
        *lock(&self.shared.fail) = (count > 0).then_some(FailNext { status, count });
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/control/script", post(control_script))
        .route("/control/requests", get(control_requests).delete(control_clear))
        .route("/control/fail", post(control_fail))
        .route("/control/reset", post(control_reset))
        .with_state(shared)
}

fn openai_error(status: StatusCode, message: &str, kind: &str, code: Option<&str>) -> Response {
    (status, Json(json!({"error": {"message": message, "type": kind, "param": null, "code": code}}))).into_response()
}

/// The 401 a request without the right key gets.
fn unauthorized() -> Response {
    openai_error(
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided.",
        "invalid_request_error",
        Some("invalid_api_key"),
    )
}

/// Record the request; check the key (`None`: wrong or missing, answer [`unauthorized`]).
fn receive(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Option<Value> {
    let parsed = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
    };
    receive_parsed(shared, method, uri, headers, parsed)
}

/// [`receive`] with the body already read as JSON (a form is recorded as its fields).
fn receive_parsed(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, parsed: Value) -> Option<Value> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    shared.record(RecordedRequest {
        method: method.to_string(),
        path: uri.path().to_string(),
        authorization: authorization.clone(),
        body: parsed.clone(),
    });
    if let Some(key) = &shared.api_key {
        let sent = authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")).map(str::trim);
        if sent != Some(key.as_str()) {
            return None;
        }
    }
    Some(parsed)
}

async fn models(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if receive(&shared, &method, &uri, &headers, &[]).is_none() {
        return unauthorized();
    }
    let served = shared.models.clone().unwrap_or_else(|| vec![MODEL.to_string()]);
    let data: Vec<Value> =
        served.iter().map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "moltmates"})).collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// `POST /v1/audio/transcriptions` as OpenAI takes it: a multipart form with `file` (a file
/// part) and `model`; answers `{"text": ...}`. The transcript is the file's bytes when they
/// are UTF-8 text (so a test "says" what it injects as the voice note's bytes), else a note of
/// its size. Recorded with the form's text fields and the file's name, type and size.
async fn transcriptions(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parts = crate::dev::multipart::boundary(content_type)
        .and_then(|boundary| crate::dev::multipart::parse(&body, &boundary).ok());
    let recorded = match &parts {
        Some(parts) => Value::Object(
            parts
                .iter()
                .map(|p| match &p.file_name {
                    Some(name) => (
                        p.name.clone(),
                        json!({"file_name": name, "content_type": p.content_type, "bytes": p.bytes.len()}),
                    ),
                    None => (p.name.clone(), json!(String::from_utf8_lossy(&p.bytes))),
                })
                .collect(),
        ),
        None => Value::String(String::from_utf8_lossy(&body).into_owned()),
    };
    if receive_parsed(&shared, &method, &uri, &headers, recorded).is_none() {
        return unauthorized();
    }
    let bad = |message: &str| openai_error(StatusCode::BAD_REQUEST, message, "invalid_request_error", None);
    let Some(parts) = parts else {
        return bad("Could not parse multipart form");
    };
    let Some(model) = parts.iter().find(|p| p.name == "model").and_then(|p| p.text()) else {
        return bad("you must provide a model parameter");
    };
    let Some(file) = parts.iter().find(|p| p.name == "file" && p.file_name.is_some()) else {
        return bad("Missing required parameter: 'file'.");
    };
    if let Some(served) = &shared.models
        && !served.iter().any(|m| m == model)
    {
        return openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        );
    }
    if let Some(failure) = take_failure(&shared) {
        return failure;
    }
    let text = match std::str::from_utf8(&file.bytes) {
        Ok(text) if !text.contains('\0') => text.trim().to_string(),
        _ => format!("(audio of {} bytes)", file.bytes.len()),
    };
    Json(json!({"text": text})).into_response()
}

/// The failure `/control/fail` asked for, if one is still due (one of them is used up).
fn take_failure(shared: &Shared) -> Option<Response> {
    let mut fail = lock(&shared.fail);
    let f = fail.as_mut()?;
    f.count -= 1;
    let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if f.count == 0 {
        *fail = None;
    }
    let kind = if status == StatusCode::TOO_MANY_REQUESTS { "requests" } else { "server_error" };
    Some(openai_error(status, &format!("the stand-in was told to fail with {}", status.as_u16()), kind, None))
}

async fn chat(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(request) = receive(&shared, &method, &uri, &headers, &body) else {
        return unauthorized();
    };
    if let Some(failure) = take_failure(&shared) {
        return failure;
    }
    if !request.is_object() || request.get("messages").and_then(Value::as_array).is_none() {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object with `messages`",
            "invalid_request_error",
            None,
        );
    }
    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        return openai_error(StatusCode::BAD_REQUEST, "the stand-in does not stream", "invalid_request_error", None);
    }
    if let Some(served) = &shared.models {
        let asked = request.get("model").and_then(Value::as_str).unwrap_or_default();
        if !served.iter().any(|m| m == asked) {
            return openai_error(
                StatusCode::NOT_FOUND,
                &format!("The model `{asked}` does not exist or you do not have access to it."),
                "invalid_request_error",
                Some("model_not_found"),
            );
        }
    }
    let id = shared.ids.fetch_add(1, Ordering::Relaxed);
    if let Some(delay) = slow_delay(&request) {
        tokio::time::sleep(delay).await;
    }
    let scripted = lock(&shared.script).pop_front();
    let answer = match scripted {
        Some(step) => step,
        None => rules(&request),
    };
    respond(&request, answer, id)
}

fn respond(request: &Value, answer: Scripted, id: u64) -> Response {
    let model = request.get("model").and_then(Value::as_str).unwrap_or(MODEL).to_string();
    let prompt_tokens = tokens(&request.get("messages").map(Value::to_string).unwrap_or_default());
    let (message, finish_reason, completion_tokens, total) = match answer {
        Scripted::Reply { content, total_tokens } => {
            let c = tokens(&content);
            (json!({"role": "assistant", "content": content, "refusal": null}), "stop", c, total_tokens)
        }
        Scripted::ToolCall { name, arguments, total_tokens } => {
            let arguments = match arguments {
                Value::String(text) => text,
                other => other.to_string(),
            };
            let c = tokens(&arguments) + tokens(&name);
            let call = json!({"id": format!("call_{id}"), "type": "function", "function": {"name": name, "arguments": arguments}});
            (json!({"role": "assistant", "content": null, "tool_calls": [call]}), "tool_calls", c, total_tokens)
        }
        Scripted::Error { status, message } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let kind = if status == StatusCode::TOO_MANY_REQUESTS { "requests" } else { "server_error" };
            return openai_error(status, &message, kind, None);
        }
        Scripted::Raw { status, body } => {
            return (StatusCode::from_u16(status).unwrap_or(StatusCode::OK), Json(body)).into_response();
        }
    };
    let (prompt_tokens, completion_tokens) = match total {
        Some(total) => (total / 2, total - total / 2),
        None => (prompt_tokens, completion_tokens),
    };
    let created = jiff::Timestamp::now().as_second();
    Json(json!({
        "id": format!("chatcmpl-dev{id}"),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
    }))
    .into_response()
}

/// One token per 4 characters, at least 1.
fn tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4).max(1)
}

/// The text of a message's `content`: a string, or the text parts of a list.
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        }
        _ => String::new(),
    }
}

/// What the stand-in "sees" in a message's `image_url` parts: their type and size, from their
/// `data:` URLs (a URL of another kind is named as such).
fn describe_images(message: &Value) -> String {
    let Some(parts) = message.get("content").and_then(Value::as_array) else { return String::new() };
    let seen: Vec<String> = parts
        .iter()
        .filter(|p| p.get("type").and_then(Value::as_str) == Some("image_url"))
        .map(|p| {
            let url = p.pointer("/image_url/url").and_then(Value::as_str).unwrap_or("");
            match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
                Some((mime, data)) => {
                    let padding = data.bytes().rev().take_while(|b| *b == b'=').count();
                    format!("{mime} of {} bytes", data.len() / 4 * 3 - padding)
                }
                None => "an image by URL".to_string(),
            }
        })
        .collect();
    match seen.len() {
        0 => String::new(),
        1 => format!("\n(I see 1 image: {})", seen[0]),
        n => format!("\n(I see {n} images: {})", seen.join(", ")),
    }
}

/// `/slow <ms> <text>` as the last message: how long to wait before answering.
fn slow_command(text: &str) -> Option<(std::time::Duration, &str)> {
    let rest = text.trim().strip_prefix("/slow ")?;
    let (ms, text) = rest.trim().split_once(char::is_whitespace).unwrap_or((rest.trim(), ""));
    let ms: u64 = ms.parse().ok()?;
    Some((std::time::Duration::from_millis(ms.min(60_000)), text.trim()))
}

fn slow_delay(request: &Value) -> Option<std::time::Duration> {
    let last = request.get("messages")?.as_array()?.last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    slow_command(&text_of(last)).map(|(delay, _)| delay)
}

/// The rule-based answer to a request. Pure.
pub fn rules(request: &Value) -> Scripted {
    let messages = request.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let reply = |content: String| Scripted::Reply { content, total_tokens: None };
    let Some(last) = messages.last() else {
        return reply("Hello! Send me a message.".into());
    };
    if last.get("role").and_then(Value::as_str) == Some("tool") {
        let call_id = last.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
        let tool = messages
            .iter()
            .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
            .flatten()
            .find(|c| c.get("id").and_then(Value::as_str) == Some(call_id))
            .and_then(|c| c.pointer("/function/name").and_then(Value::as_str))
            .unwrap_or("tool");
        return reply(format!("The `{tool}` tool returned:\n{}", text_of(last)));
    }
    let Some(user) = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user")) else {
        return reply("Hello! Send me a message.".into());
    };
    let text = text_of(user);
    if let Some((_, said)) = slow_command(&text) {
        return reply(format!("You said: {said}"));
    }
    let Some(command) = text.trim().strip_prefix("/tool ") else {
        return reply(format!("You said: {text}{}", describe_images(user)));
    };
    let (name, rest) = command.trim().split_once(char::is_whitespace).unwrap_or((command.trim(), ""));
    let rest = rest.trim();
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let offered: Vec<&str> =
            tools.iter().filter_map(|t| t.pointer("/function/name").and_then(Value::as_str)).collect();
        if !offered.contains(&name) {
            let list = if offered.is_empty() { "none".to_string() } else { offered.join(", ") };
            return reply(format!("I cannot use the tool {name} here; the tools offered are: {list}"));
        }
    }
    Scripted::ToolCall { name: name.to_string(), arguments: tool_arguments(name, rest), total_tokens: None }
}

/// The agent's argument shape for `name` from the text after the tool's name.
fn tool_arguments(name: &str, rest: &str) -> Value {
    if let Ok(object @ Value::Object(_)) = serde_json::from_str::<Value>(rest) {
        return object;
    }
    match name {
        EXEC => json!({"command": rest}),
        READ_FILE | LIST_FILES | SEND_FILE => json!({"path": rest}),
        WRITE_FILE => {
            let (path, content) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            json!({"path": path, "content": content})
        }
        REMEMBER => json!({"text": rest}),
        WEB_FETCH => json!({"url": rest}),
        _ => json!({"input": rest}),
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Scripted>),
    One(Scripted),
}

async fn control_script(State(shared): State<Arc<Shared>>, Json(steps): Json<OneOrMany>) -> Response {
    let steps = match steps {
        OneOrMany::Many(steps) => steps,
        OneOrMany::One(step) => vec![step],
    };
    let mut script = lock(&shared.script);
    script.extend(steps);
    Json(json!({"queued": script.len()})).into_response()
}

async fn control_requests(State(shared): State<Arc<Shared>>, uri: Uri) -> Response {
    let (mut count, mut timeout_ms) = (0usize, 0u64);
    for (name, value) in form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "min_count" => count = value.parse().unwrap_or(0),
            "timeout_ms" => timeout_ms = value.parse().unwrap_or(0),
            _ => {}
        }
    }
    let timeout = Duration::from_millis(timeout_ms.min(60_000));
    match shared.wait_for(count, timeout).await {
        Ok(requests) => Json(requests).into_response(),
        Err(e) => (
            StatusCode::REQUEST_TIMEOUT,
            Json(json!({"error": e.to_string(), "requests": lock(&shared.requests).clone()})),
        )
            .into_response(),
    }
}

async fn control_clear(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.requests).clear();
    shared.received.send_replace(0);
    StatusCode::NO_CONTENT
}

async fn control_fail(State(shared): State<Arc<Shared>>, Json(fail): Json<FailNext>) -> StatusCode {
    *lock(&shared.fail) = (fail.count > 0).then_some(fail);
    StatusCode::NO_CONTENT
}

async fn control_reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    lock(&shared.script).clear();
    *lock(&shared.fail) = None;
    lock(&shared.requests).clear();
    shared.received.send_replace(0);
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(messages: Value) -> Value {
        json!({"model": "m", "messages": messages})
    }

    #[test]
    fn echoes_the_last_user_message() {
        let r = request(json!([{"role": "system", "content": "s"}, {"role": "user", "content": "hello there"}]));
        assert_eq!(rules(&r), Scripted::Reply { content: "You said: hello there".into(), total_tokens: None });
        let parts = request(json!([{"role": "user", "content": [{"type": "text", "text": "in parts"}]}]));
        assert_eq!(rules(&parts), Scripted::Reply { content: "You said: in parts".into(), total_tokens: None });
        let photo = request(json!([{"role": "user", "content": [{"type": "text", "text": "what is it?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4A=="}}]}]));
        assert_eq!(
            rules(&photo),
            Scripted::Reply {
                content: "You said: what is it?\n(I see 1 image: image/jpeg of 4 bytes)".into(),
                total_tokens: None
            }
        );
        let slow = json!({"messages": [{"role": "user", "content": "/slow 250 take your time"}]});
        assert_eq!(rules(&slow), Scripted::Reply { content: "You said: take your time".into(), total_tokens: None });
        assert_eq!(slow_delay(&slow), Some(std::time::Duration::from_millis(250)));
        assert_eq!(
            slow_delay(&json!({"messages": [{"role": "user", "content": "/slow 99999999 x"}]})),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(slow_delay(&r), None);
    }

    #[test]
    fn tool_commands_become_calls_with_the_agents_argument_shapes() {
        let call = |text: &str| rules(&request(json!([{"role": "user", "content": text}])));
        let tc = |name: &str, arguments: Value| Scripted::ToolCall { name: name.into(), arguments, total_tokens: None };
        assert_eq!(call("/tool exec wc -l notes.txt"), tc("exec", json!({"command": "wc -l notes.txt"})));
        assert_eq!(call("/tool read_file a/b.txt"), tc("read_file", json!({"path": "a/b.txt"})));
        assert_eq!(call("/tool list_files"), tc("list_files", json!({"path": ""})));
        assert_eq!(
            call("/tool write_file n.txt two words"),
            tc("write_file", json!({"path": "n.txt", "content": "two words"}))
        );
        assert_eq!(call("/tool remember likes tea"), tc("remember", json!({"text": "likes tea"})));
        assert_eq!(
            call("/tool web_fetch http://allowed.test/"),
            tc("web_fetch", json!({"url": "http://allowed.test/"}))
        );
        assert_eq!(
            call(r#"/tool read_file {"path": "x", "offset": 3}"#),
            tc("read_file", json!({"path": "x", "offset": 3}))
        );
    }

    #[test]
    fn tools_not_offered_are_not_called() {
        let r = json!({"messages": [{"role": "user", "content": "/tool web_fetch http://x.test/"}],
            "tools": [{"type": "function", "function": {"name": "exec"}}]});
        let Scripted::Reply { content, .. } = rules(&r) else { panic!("not a reply") };
        assert!(content.contains("cannot use the tool web_fetch") && content.contains("exec"), "{content}");
    }

    #[test]
    fn a_tool_result_is_summarised() {
        let r = request(json!([
            {"role": "user", "content": "/tool exec wc -l notes.txt"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "exec", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "3 notes.txt"}
        ]));
        assert_eq!(
            rules(&r),
            Scripted::Reply { content: "The `exec` tool returned:\n3 notes.txt".into(), total_tokens: None }
        );
    }

    #[test]
    fn scripted_steps_read_from_json() {
        let steps: Vec<Scripted> = serde_json::from_value(json!([
            {"kind": "reply", "content": "hi", "total_tokens": 7},
            {"kind": "tool_call", "name": "exec", "arguments": {"command": "ls"}},
            {"kind": "error", "status": 503, "message": "down"},
            {"kind": "raw", "body": {"x": 1}}
        ]))
        .unwrap();
        assert_eq!(steps[0], Scripted::Reply { content: "hi".into(), total_tokens: Some(7) });
        assert_eq!(steps[3], Scripted::Raw { status: 200, body: json!({"x": 1}) });
    }

    #[tokio::test]
    async fn answers_in_the_wire_format_and_checks_the_key() {
        let standin = LlmStandIn::start("127.0.0.1:0".parse().unwrap(), Some("sk-test".into())).await.unwrap();
        let client = crate::http::plain_http_client().unwrap().build().unwrap();
        let url = format!("{}/chat/completions", standin.url());
        let body = json!({"model": "m", "messages": [{"role": "user", "content": "/tool exec ls"}]});
        let denied = client.post(&url).bearer_auth("wrong").json(&body).send().await.unwrap();
        assert_eq!(denied.status(), 401);
        let ok: Value =
            client.post(&url).bearer_auth("sk-test").json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(ok["object"], "chat.completion");
        assert_eq!(ok["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(ok["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"command":"ls"}"#);
        let usage = &ok["usage"];
        assert_eq!(
            usage["total_tokens"],
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        );

        standin.fail_next(500, 1);
        assert_eq!(client.post(&url).bearer_auth("sk-test").json(&body).send().await.unwrap().status(), 500);
        standin.script([Scripted::Reply { content: "scripted".into(), total_tokens: Some(10) }]);
        let scripted: Value =
            client.post(&url).bearer_auth("sk-test").json(&body).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            (scripted["choices"][0]["message"]["content"].as_str(), scripted["usage"]["total_tokens"].as_u64()),
            (Some("scripted"), Some(10))
        );

        let seen = standin.wait_for_requests(4, Duration::from_secs(5)).await.unwrap();
        assert_eq!(seen[0].authorization.as_deref(), Some("Bearer wrong"));
        assert_eq!(seen[1].body, body);
        assert!(standin.wait_for_requests(5, Duration::from_millis(1)).await.is_err());
    }
}
