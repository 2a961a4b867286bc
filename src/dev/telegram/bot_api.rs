//! The Bot API over HTTP: `/bot<token>/<method>`, Telegram's envelope, status codes and
//! case-insensitive method names.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::BotApiError;
use super::params::Params;
use super::shared::{Shared, Waited, unix_now};
use super::store::{SentFields, Store};
use super::types::{BotCommand, SentDocument};
use super::validate;

/// Longest `getUpdates` wait honoured; Telegram's own cap is in this range too.
const MAX_POLL_TIMEOUT_SECS: i64 = 600;

/// What a method returns on success: `result`, and sometimes a `description` too.
struct Success {
    result: Value,
    description: Option<&'static str>,
}

impl From<Value> for Success {
    fn from(result: Value) -> Self {
        Self { result, description: None }
    }
}

type MethodResult = Result<Success, BotApiError>;

fn envelope(outcome: MethodResult) -> Response {
    match outcome {
        Ok(Success { result, description }) => {
            let mut body = json!({"ok": true, "result": result});
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(e) => {
            let body = json!({"ok": false, "error_code": e.error_code(), "description": e.to_string()});
            (e.status(), axum::Json(body)).into_response()
        }
    }
}

/// Fallback handler for every path outside the control API.
pub async fn handle(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(rest) = uri.path().strip_prefix("/file/") {
        return download(&shared, rest);
    }
    envelope(dispatch(&shared, &uri, &headers, &body).await)
}

/// `GET /file/bot<token>/<file_path>`: a file's bytes, for the path `getFile` gave. Anything
/// else (a wrong token, an unknown path) is 404, as Telegram answers it.
fn download(shared: &Shared, rest: &str) -> Response {
    let not_found = || envelope(Err(BotApiError::NotFound));
    // Clients encode the path's `/` (teloxide sends `documents%2Ffile_1.pdf`) or not.
    let Some((bot, file_path)) = rest.split_once('/') else { return not_found() };
    let (Some(token), Some(file_path)) = (bot.strip_prefix("bot").and_then(percent_decode), percent_decode(file_path))
    else {
        return not_found();
    };
    if token != shared.token {
        return not_found();
    }
    match shared.read(|s| s.file_at(&file_path)) {
        Some(bytes) => ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response(),
        None => not_found(),
    }
}

async fn dispatch(shared: &Arc<Shared>, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> MethodResult {
    let (token, method) = split_path(uri.path()).ok_or(BotApiError::NotFound)?;
    if token != shared.token {
        return Err(BotApiError::Unauthorized);
    }
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let params = Params::parse(uri.query(), content_type, body)?;
    match method.to_ascii_lowercase().as_str() {
        "getme" => Ok(shared.read(|s| get_me(s.bot()))),
        "getupdates" => get_updates(shared, &params).await,
        "sendmessage" => send_message(shared, &params),
        "sendchataction" => send_chat_action(shared, &params),
        "answercallbackquery" => answer_callback_query(shared, &params),
        "editmessagetext" => edit_message_text(shared, &params),
        "setmycommands" => set_my_commands(shared, &params),
        "getmycommands" => get_my_commands(shared, &params),
        "deletemycommands" => delete_my_commands(shared, &params),
        "setwebhook" => set_webhook(shared, &params),
        "deletewebhook" => delete_webhook(shared, &params),
        "getwebhookinfo" => Ok(shared.read(Store::webhook_info).into()),
        "getfile" => get_file(shared, &params),
        "senddocument" => send_document(shared, &params, content_type, body),
        _ => Err(BotApiError::NotFound),
    }
}

/// `/bot<token>/<method>` → (token, method); the token may arrive percent-encoded.
fn split_path(path: &str) -> Option<(String, &str)> {
    let rest = path.strip_prefix('/')?;
    let (bot, method) = rest.split_once('/')?;
    let token = percent_decode(bot.strip_prefix("bot")?)?;
    (!method.is_empty() && !method.contains('/')).then_some((token, method))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn get_me(bot: &super::types::User) -> Success {
    let mut me = serde_json::to_value(bot).unwrap_or_default();
    for (flag, value) in [
        ("can_join_groups", true),
        ("can_read_all_group_messages", false),
        ("supports_inline_queries", false),
        ("can_connect_to_business", false),
        ("has_main_web_app", false),
    ] {
        me[flag] = json!(value);
    }
    me.into()
}

/// Chat ids are integers; `@username` targets are channels, which the stand-in has none of.
fn chat_id(params: &Params) -> Result<i64, BotApiError> {
    match params.str("chat_id") {
        None => Err(BotApiError::bad_request("chat_id is empty")),
        Some(s) if s.trim().is_empty() => Err(BotApiError::bad_request("chat_id is empty")),
        Some(s) => s.trim().parse().map_err(|_| BotApiError::chat_not_found()),
    }
}

async fn get_updates(shared: &Shared, params: &Params) -> MethodResult {
    let offset = params.i64("offset")?;
    // Telegram clamps rather than refuses out-of-range values.
    let limit = params.i64("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = params.i64("timeout")?.unwrap_or(0).clamp(0, MAX_POLL_TIMEOUT_SECS) as u64;
    let allowed = params.json::<Vec<String>>("allowed_updates")?;

    let ticket = shared.update(|s| s.start_get_updates(allowed))?;
    let first = shared.update(|s| s.poll(ticket, offset, limit))?;
    if !first.is_empty() || timeout == 0 {
        return Ok(json!(first).into());
    }
    // A negative offset was applied once above; later looks just read from the front.
    let offset = offset.filter(|&o| o >= 0);
    shared.update(Store::poll_started);
    let _guard = PollGuard(shared);
    let waited = shared
        .wait_until(Some(Duration::from_secs(timeout)), |s| match s.poll(ticket, offset, limit) {
            Ok(updates) if updates.is_empty() => None,
            outcome => Some(outcome),
        })
        .await;
    match waited {
        Waited::Ready(outcome) => outcome.map(|u| json!(u).into()),
        Waited::TimedOut | Waited::ShuttingDown => Ok(json!([]).into()),
    }
}

/// Counts a long poll as active until its handler finishes or is dropped (client went away).
struct PollGuard<'a>(&'a Shared);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.update(Store::poll_ended);
    }
}

fn send_message(shared: &Shared, params: &Params) -> MethodResult {
    let chat_id = chat_id(params)?;
    let text = params.str("text");
    let parse_mode = params.str("parse_mode").filter(|m| !m.is_empty());
    let rendered = validate::message_text(text.as_deref(), parse_mode.as_deref())?;
    let reply_markup = params.value("reply_markup");
    validate::reply_markup(reply_markup.as_ref())?;
    let fields = SentFields { text: text.unwrap_or_default(), rendered, parse_mode, reply_markup };
    let message = shared.update(|s| s.send_message(chat_id, fields, unix_now()))?;
    Ok(json!(message).into())
}

fn answer_callback_query(shared: &Shared, params: &Params) -> MethodResult {
    let id = params
        .str("callback_query_id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| BotApiError::required("callback_query_id"))?;
    let text = params.str("text").filter(|t| !t.is_empty());
    validate::callback_answer_text(text.as_deref())?;
    let show_alert = params.bool("show_alert")?.unwrap_or(false);
    shared.update(|s| s.answer_callback(&id, text, show_alert))?;
    Ok(json!(true).into())
}

/// Messages the bot sent in a chat only (inline messages are not served).
fn edit_message_text(shared: &Shared, params: &Params) -> MethodResult {
    if params.str("inline_message_id").is_some() {
        return Err(BotApiError::bad_request("MESSAGE_ID_INVALID"));
    }
    let chat_id = chat_id(params)?;
    let message_id = params.i64("message_id")?.ok_or_else(|| BotApiError::required("message_id"))?;
    let text = params.str("text");
    let parse_mode = params.str("parse_mode").filter(|m| !m.is_empty());
    let rendered = validate::message_text(text.as_deref(), parse_mode.as_deref())?;
    let reply_markup = params.value("reply_markup");
    validate::inline_keyboard(reply_markup.as_ref())?;
    let fields = SentFields { text: text.unwrap_or_default(), rendered, parse_mode, reply_markup };
    let message = shared.update(|s| s.edit_message_text(chat_id, message_id, fields, unix_now()))?;
    Ok(json!(message).into())
}

/// `sendDocument` with the file uploaded in a multipart part; a `document` given as text is a file id of a file the stand-in holds, or refused as
/// Telegram refuses an unknown one.
fn send_document(shared: &Shared, params: &Params, content_type: Option<&str>, body: &[u8]) -> MethodResult {
    let chat_id = chat_id(params)?;
    let caption = params.str("caption").filter(|c| !c.is_empty());
    // The file is the part `document`, or the part `document` names as `attach://<part>`
    // (how teloxide uploads it).
    let part_name = params
        .str("document")
        .and_then(|d| d.strip_prefix("attach://").map(str::to_string))
        .unwrap_or_else(|| "document".to_string());
    let upload = content_type
        .and_then(crate::dev::multipart::boundary)
        .and_then(|boundary| crate::dev::multipart::parse(body, &boundary).ok())
        .and_then(|parts| parts.into_iter().find(|p| p.name == part_name && p.file_name.is_some()));
    let document = match upload {
        Some(part) => SentDocument {
            file_name: part.file_name.unwrap_or_default(),
            mime_type: part.content_type,
            bytes: part.bytes,
        },
        None => {
            let file_id = params.str("document").ok_or_else(|| BotApiError::required("document"))?;
            let held = shared.read(|s| s.held_file(&file_id));
            held.ok_or_else(|| BotApiError::bad_request("wrong file identifier/HTTP URL specified"))?
        }
    };
    let message = shared.update(|s| s.send_document(chat_id, document, caption, unix_now()))?;
    Ok(json!(message).into())
}

fn get_file(shared: &Shared, params: &Params) -> MethodResult {
    let file_id = params.str("file_id").filter(|f| !f.is_empty()).ok_or_else(|| BotApiError::required("file_id"))?;
    shared.read(|s| s.get_file(&file_id)).map(Success::from)
}

fn send_chat_action(shared: &Shared, params: &Params) -> MethodResult {
    let chat_id = chat_id(params)?;
    let action = validate::chat_action(params.str("action").as_deref())?;
    shared.update(|s| s.chat_action(chat_id, action, unix_now()))?;
    Ok(json!(true).into())
}

fn set_my_commands(shared: &Shared, params: &Params) -> MethodResult {
    let commands: Vec<BotCommand> = params.json("commands")?.ok_or_else(|| BotApiError::required("commands"))?;
    validate::bot_commands(&commands)?;
    let scope = params.json("scope")?;
    let language = params.str("language_code");
    shared.update(|s| s.set_commands(scope, language, commands));
    Ok(json!(true).into())
}

fn get_my_commands(shared: &Shared, params: &Params) -> MethodResult {
    let scope = params.json("scope")?;
    let language = params.str("language_code");
    Ok(json!(shared.read(|s| s.commands(scope, language))).into())
}

fn delete_my_commands(shared: &Shared, params: &Params) -> MethodResult {
    let scope = params.json("scope")?;
    let language = params.str("language_code");
    shared.update(|s| s.set_commands(scope, language, Vec::new()));
    Ok(json!(true).into())
}

fn set_webhook(shared: &Shared, params: &Params) -> MethodResult {
    let url = params.str("url").unwrap_or_default();
    if validate::webhook_url(&url)?.is_none() {
        // An empty URL removes the webhook, as in Telegram.
        return delete_webhook(shared, params);
    }
    let secret = params.str("secret_token").filter(|s| !s.is_empty());
    if let Some(secret) = &secret {
        validate::secret_token(secret)?;
    }
    let max_connections = params.i64("max_connections")?.unwrap_or(40).clamp(1, 100) as u32;
    let allowed = params.json::<Vec<String>>("allowed_updates")?;
    let drop_pending = params.bool("drop_pending_updates")?.unwrap_or(false);
    let changed = shared.update(|s| {
        if drop_pending {
            s.drop_pending_updates();
        }
        if let Some(allowed) = allowed {
            s.set_allowed_updates(allowed);
        }
        s.set_webhook(url.trim().to_owned(), secret, max_connections)
    });
    let description = if changed { "Webhook was set" } else { "Webhook is already set" };
    Ok(Success { result: json!(true), description: Some(description) })
}

fn delete_webhook(shared: &Shared, params: &Params) -> MethodResult {
    let drop_pending = params.bool("drop_pending_updates")?.unwrap_or(false);
    let existed = shared.update(|s| {
        if drop_pending {
            s.drop_pending_updates();
        }
        s.delete_webhook()
    });
    let description = if existed { "Webhook was deleted" } else { "Webhook is already deleted" };
    Ok(Success { result: json!(true), description: Some(description) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(split_path("/bot1:abc/getMe"), Some(("1:abc".into(), "getMe")));
        assert_eq!(split_path("/bot1%3Aabc/sendMessage"), Some(("1:abc".into(), "sendMessage")));
        assert_eq!(split_path("/bot1:abc/"), None);
        assert_eq!(split_path("/bot1:abc/a/b"), None);
        assert_eq!(split_path("/control/x"), None);
        assert_eq!(split_path("/bot%zz/getMe"), None);
    }
}
