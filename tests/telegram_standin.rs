//! The Telegram stand-in, driven by teloxide (the client the gateway uses) pointed at it with
//! `set_api_url`, plus raw HTTP for what a typed client cannot show (status codes, forms,
//! the control API). Every wait is on a condition, never a fixed sleep.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use moltmates::dev::telegram::{InjectMessage, SECRET_HEADER, StatsCondition, TelegramStandIn};
use serde_json::{Value, json};
use teloxide::prelude::*;
use teloxide::types::{
    AllowedUpdate, BotCommand, ChatAction, InlineKeyboardButton, InlineKeyboardMarkup, ParseMode, UpdateKind,
};
use teloxide::{ApiError, RequestError};
use tokio::sync::mpsc;

const TOKEN: &str = "123456:TEST-stand-in-token";
/// Upper bound for a condition to come true; passing tests never wait this long.
const WAIT: Duration = Duration::from_secs(10);

async fn standin() -> TelegramStandIn {
    TelegramStandIn::start(SocketAddr::from(([127, 0, 0, 1], 0)), TOKEN).await.expect("start stand-in")
}

fn bot(standin: &TelegramStandIn) -> Bot {
    Bot::new(TOKEN).set_api_url(reqwest::Url::parse(&standin.url()).expect("stand-in URL"))
}

fn api_error(result: Result<impl std::fmt::Debug, RequestError>) -> ApiError {
    match result {
        Err(RequestError::Api(e)) => e,
        other => panic!("expected a Telegram API error, got {other:?}"),
    }
}

/// One HTTP/1.1 request; returns the status and the JSON body.
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &str,
) -> (StatusCode, Value) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header(header::HOST, addr.to_string());
    if let Some(ct) = content_type {
        request = request.header(header::CONTENT_TYPE, ct);
    }
    let request = request.body(Full::new(Bytes::from(body.to_owned()))).expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

#[tokio::test]
async fn get_me_describes_the_bot() {
    let s = standin().await;
    let me = bot(&s).get_me().await.expect("getMe");
    assert_eq!(me.id.0, 123456, "the bot id is the token's numeric prefix");
    assert!(me.is_bot);
    assert_eq!(me.username.as_deref(), Some("moltmates_dev_bot"));
}

#[tokio::test]
async fn wrong_token_is_unauthorized() {
    let s = standin().await;
    let wrong = Bot::new("123456:wrong").set_api_url(reqwest::Url::parse(&s.url()).expect("url"));
    assert_eq!(api_error(wrong.get_me().await), ApiError::InvalidToken);

    let (status, body) = raw(s.addr(), "POST", "/bot123456:wrong/getMe", None, "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body, json!({"ok": false, "error_code": 401, "description": "Unauthorized"}));
}

#[tokio::test]
async fn unknown_methods_are_not_found_and_names_are_case_insensitive() {
    let s = standin().await;
    let (status, body) = raw(s.addr(), "POST", &format!("/bot{TOKEN}/sendTelepathy"), None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, json!({"ok": false, "error_code": 404, "description": "Not Found"}));
    let (status, _) = raw(s.addr(), "GET", "/nothing-here", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    for name in ["getMe", "GETME", "getme", "GetMe"] {
        let (status, body) = raw(s.addr(), "GET", &format!("/bot{TOKEN}/{name}"), None, "").await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(body["ok"], true);
        assert_eq!(body["result"]["username"], "moltmates_dev_bot");
    }
}

#[tokio::test]
async fn parameters_may_come_as_form_query_or_json() {
    let s = standin().await;
    s.inject_text(42, "hi").expect("inject");
    let path = format!("/bot{TOKEN}/sendMessage");
    let form = "chat_id=42&text=from+a+form";
    let (status, body) = raw(s.addr(), "POST", &path, Some("application/x-www-form-urlencoded"), form).await;
    assert_eq!((status, &body["result"]["text"]), (StatusCode::OK, &json!("from a form")), "{body}");
    let (status, _) = raw(s.addr(), "GET", &format!("{path}?chat_id=42&text=from%20a%20query"), None, "").await;
    assert_eq!(status, StatusCode::OK);
    let json_body = r#"{"chat_id":"42","text":"from JSON, id as a string"}"#;
    let (status, _) = raw(s.addr(), "POST", &path, Some("application/json"), json_body).await;
    assert_eq!(status, StatusCode::OK);
    let texts: Vec<String> = s.sent_to(42).into_iter().map(|m| m.text).collect();
    assert_eq!(texts, ["from a form", "from a query", "from JSON, id as a string"]);

    let (status, body) = raw(s.addr(), "POST", &path, Some("application/json"), "{broken").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error_code"], 400);
}

#[tokio::test]
async fn commands_round_trip_and_invalid_ones_are_refused() {
    let s = standin().await;
    let bot = bot(&s);
    let commands = vec![BotCommand::new("start", "Start talking to your agent"), BotCommand::new("reset_2", "Forget")];
    bot.set_my_commands(commands.clone()).await.expect("setMyCommands");
    assert_eq!(bot.get_my_commands().await.expect("getMyCommands"), commands);
    assert_eq!(s.commands().iter().map(|c| c.command.as_str()).collect::<Vec<_>>(), ["start", "reset_2"]);

    let (status, sets) = raw(s.addr(), "GET", "/control/commands", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(sets[0]["commands"][0], json!({"command": "start", "description": "Start talking to your agent"}));

    for bad in
        [BotCommand::new("Start", "uppercase"), BotCommand::new("a".repeat(33), "long"), BotCommand::new("ok", "")]
    {
        // teloxide has no variant for these; it keeps Telegram's description.
        match api_error(bot.set_my_commands(vec![bad.clone()]).await) {
            ApiError::Unknown(text) => assert!(text.starts_with("Bad Request: BOT_COMMAND"), "{bad:?}: {text}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    assert_eq!(s.commands().len(), 2, "a refused call changes nothing");
}

#[tokio::test]
async fn sent_messages_are_visible_through_the_control_api() {
    let s = standin().await;
    let bot = bot(&s);
    s.inject(InjectMessage::private(42, "hello").with_first_name("Ada")).expect("inject");
    let sent = bot.send_message(ChatId(42), "Hi Ada").await.expect("sendMessage");
    assert_eq!(sent.text(), Some("Hi Ada"));
    assert_eq!(sent.chat.id, ChatId(42));
    assert_eq!(sent.chat.first_name(), Some("Ada"));
    assert_eq!(sent.id.0, 2, "message ids count both directions of a chat");

    let (status, messages) =
        raw(s.addr(), "GET", "/control/chats/42/messages?min_count=1&timeout_ms=10000", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(messages[0]["text"], "Hi Ada");
    assert_eq!(messages[0]["message_id"], 2);

    // Like Telegram, the bot cannot write first.
    assert_eq!(api_error(bot.send_message(ChatId(7), "hello?").await), ApiError::ChatNotFound);
}

#[tokio::test]
async fn chat_actions_are_recorded() {
    let s = standin().await;
    s.inject_text(42, "hello").expect("inject");
    bot(&s).send_chat_action(ChatId(42), ChatAction::Typing).await.expect("sendChatAction");
    let actions = s.wait_for_actions(42, 1, WAIT).await.expect("action recorded");
    assert_eq!(actions[0].action, "typing");
    let (_, listed) = raw(s.addr(), "GET", "/control/chats/42/actions", None, "").await;
    assert_eq!(listed[0]["action"], "typing");
}

#[tokio::test]
async fn get_updates_confirms_with_offset() {
    let s = standin().await;
    let bot = bot(&s);
    let first = s.inject(InjectMessage::private(42, "one").with_username("ada")).expect("inject");
    s.inject_text(42, "two").expect("inject");

    let updates = bot.get_updates().await.expect("getUpdates");
    assert_eq!(updates.len(), 2);
    assert_eq!(i64::from(updates[0].id.0), first.update_id);
    let UpdateKind::Message(message) = &updates[0].kind else { panic!("not a message: {:?}", updates[0].kind) };
    assert_eq!(message.text(), Some("one"));
    assert_eq!(message.from.as_ref().map(|u| (u.id.0, u.username.as_deref())), Some((42, Some("ada"))));
    assert!(message.chat.is_private());

    // Unconfirmed updates come again.
    assert_eq!(bot.get_updates().await.expect("getUpdates").len(), 2);
    // `limit` takes from the front; an offset confirms everything below it.
    let second = bot.get_updates().offset(updates[0].id.0 as i32 + 1).limit(1).await.expect("getUpdates");
    assert_eq!(second.iter().map(|u| u.id).collect::<Vec<_>>(), [updates[1].id]);
    let next_offset = updates[1].id.0 as i32 + 1;
    assert!(bot.get_updates().offset(next_offset).await.expect("getUpdates").is_empty());
    assert!(bot.get_updates().await.expect("getUpdates").is_empty(), "confirmed updates are not returned again");
    assert_eq!(s.stats().pending_updates, 0);

    let third = s.inject_text(42, "three").expect("inject");
    let updates = bot.get_updates().offset(next_offset).await.expect("getUpdates");
    assert_eq!(updates.iter().map(|u| i64::from(u.id.0)).collect::<Vec<_>>(), [third.update_id]);
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_a_message_arrives() {
    let s = standin().await;
    let bot = bot(&s);
    let started = Instant::now();
    let poll = tokio::spawn(async move { bot.get_updates().timeout(10).await });
    s.wait_for_stats(&StatsCondition { min_active_polls: Some(1), ..Default::default() }, WAIT)
        .await
        .expect("the poll is waiting");
    let injected = s.inject_text(42, "wake up").expect("inject");
    let updates = poll.await.expect("join").expect("getUpdates");
    assert_eq!(updates.iter().map(|u| i64::from(u.id.0)).collect::<Vec<_>>(), [injected.update_id]);
    assert!(started.elapsed() < Duration::from_secs(9), "answered on arrival, not at the timeout");
}

#[tokio::test]
async fn long_poll_with_nothing_to_return_times_out_empty() {
    let s = standin().await;
    let started = Instant::now();
    assert!(bot(&s).get_updates().timeout(1).await.expect("getUpdates").is_empty());
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn a_second_get_updates_terminates_the_first() {
    let s = standin().await;
    let first = {
        let bot = bot(&s);
        tokio::spawn(async move { bot.get_updates().timeout(10).await })
    };
    s.wait_for_stats(&StatsCondition { min_active_polls: Some(1), ..Default::default() }, WAIT).await.expect("polling");
    assert!(bot(&s).get_updates().await.expect("second getUpdates").is_empty());
    assert_eq!(api_error(first.await.expect("join")), ApiError::TerminatedByOtherGetUpdates);
}

#[tokio::test]
async fn too_long_and_empty_messages_are_refused() {
    let s = standin().await;
    let bot = bot(&s);
    s.inject_text(42, "hi").expect("inject");
    assert_eq!(api_error(bot.send_message(ChatId(42), "a".repeat(4097)).await), ApiError::MessageIsTooLong);
    bot.send_message(ChatId(42), "a".repeat(4096)).await.expect("4096 characters fit");
    assert_eq!(api_error(bot.send_message(ChatId(42), "   ").await), ApiError::MessageTextIsEmpty);
    assert_eq!(s.sent_to(42).len(), 1);
}

#[tokio::test]
async fn markdown_v2_needs_reserved_characters_escaped() {
    let s = standin().await;
    let bot = bot(&s);
    s.inject_text(42, "hi").expect("inject");
    let err = api_error(bot.send_message(ChatId(42), "Done. Cost: 1-2 units!").parse_mode(ParseMode::MarkdownV2).await);
    match err {
        ApiError::CantParseEntities(text) => assert_eq!(
            text,
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
        ),
        other => panic!("expected CantParseEntities, got {other:?}"),
    }
    let escaped = "*Done\\.* Cost: 1\\-2 units\\!";
    let sent = bot.send_message(ChatId(42), escaped).parse_mode(ParseMode::MarkdownV2).await.expect("escaped text");
    assert_eq!(sent.text(), Some("Done. Cost: 1-2 units!"), "Telegram returns the text without markup");
    let recorded = s.wait_for_messages(42, 1, WAIT).await.expect("recorded");
    assert_eq!(recorded[0].text, escaped);
    assert_eq!(recorded[0].rendered, "Done. Cost: 1-2 units!");
    assert_eq!(recorded[0].parse_mode.as_deref(), Some("MarkdownV2"));
}

#[tokio::test]
async fn group_messages_carry_group_chats() {
    let s = standin().await;
    let mut message = InjectMessage::group(-1001, 42, "hello all").with_username("ada");
    message.title = Some("Crew".into());
    message.language_code = Some("de".into());
    s.inject(message).expect("inject");
    let updates = bot(&s).get_updates().await.expect("getUpdates");
    let UpdateKind::Message(message) = &updates[0].kind else { panic!("not a message") };
    assert!(message.chat.is_group());
    assert_eq!(message.chat.title(), Some("Crew"));
    let from = message.from.as_ref().expect("from");
    assert_eq!((from.id.0, from.language_code.as_deref()), (42, Some("de")));
}

/// A webhook receiver that fails its first request; records every request it gets.
async fn flaky_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<(HeaderMap, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let tx = tx.clone();
            let calls = Arc::clone(&calls);
            async move {
                let _ = tx.send((headers, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

#[tokio::test]
async fn webhook_delivers_with_the_secret_and_retries_after_a_failure() {
    let s = standin().await;
    let bot = bot(&s);
    let (receiver, mut requests) = flaky_receiver().await;
    let url = reqwest::Url::parse(&format!("http://{receiver}/hook")).expect("url");
    bot.set_webhook(url.clone()).secret_token("s3cr3t_token").await.expect("setWebhook");
    assert_eq!(s.webhook_url().as_deref(), Some(url.as_str()));

    let err = api_error(bot.get_updates().await);
    assert!(err.to_string().contains("can't use getUpdates method while webhook is active"), "{err}");

    let injected = s.inject_text(42, "via webhook").expect("inject");
    for attempt in ["first (refused)", "redelivery"] {
        let (headers, update) = tokio::time::timeout(WAIT, requests.recv()).await.expect(attempt).expect(attempt);
        assert_eq!(headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok()), Some("s3cr3t_token"), "{attempt}");
        assert_eq!(update["update_id"], injected.update_id, "{attempt}");
        assert_eq!(update["message"]["text"], "via webhook");
    }
    s.wait_for_stats(
        &StatsCondition { max_pending_updates: Some(0), min_webhook_deliveries: Some(1), ..Default::default() },
        WAIT,
    )
    .await
    .expect("delivered and confirmed");
    assert_eq!(s.stats().webhook_failures, 1);

    let info = bot.get_webhook_info().await.expect("getWebhookInfo");
    assert_eq!(info.url.as_ref(), Some(&url));
    assert_eq!(info.pending_update_count, 0);
    assert!(info.last_error_message.is_some_and(|m| m.contains("500")));

    bot.delete_webhook().await.expect("deleteWebhook");
    assert!(bot.get_updates().await.expect("polling works again").is_empty());
    assert!(requests.try_recv().is_err(), "nothing delivered twice after success");
}

#[tokio::test]
async fn control_api_injects_waits_and_counts() {
    let s = standin().await;
    let body = r#"{"from_id": 7, "text": "hi", "username": "bo"}"#;
    let (status, injected) = raw(s.addr(), "POST", "/control/messages", Some("application/json"), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(injected["chat_id"], 7);
    let (status, err) = raw(s.addr(), "POST", "/control/messages", Some("application/json"), r#"{"text": 1}"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");

    // A wait that cannot be met answers 408 with the current state.
    let (status, messages) =
        raw(s.addr(), "GET", "/control/chats/7/messages?min_count=1&timeout_ms=50", None, "").await;
    assert_eq!((status, messages), (StatusCode::REQUEST_TIMEOUT, json!([])));

    // A waiting read is answered once the bot replies.
    let addr = s.addr();
    let waiting = tokio::spawn(async move {
        raw(addr, "GET", "/control/chats/7/messages?min_count=1&timeout_ms=10000", None, "").await
    });
    let updates = bot(&s).get_updates().await.expect("getUpdates");
    assert_eq!(i64::from(updates[0].id.0), injected["update_id"].as_i64().expect("update_id"));
    bot(&s).send_message(ChatId(7), "hello Bo").await.expect("sendMessage");
    let (status, messages) = waiting.await.expect("join");
    assert_eq!((status, &messages[0]["text"]), (StatusCode::OK, &json!("hello Bo")));

    let (status, stats) = raw(s.addr(), "GET", "/control/stats", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((stats["pending_updates"].as_u64(), stats["get_updates_calls"].as_u64()), (Some(1), Some(1)));
    assert_eq!(stats["sent_messages"], 1);

    let (status, _) = raw(s.addr(), "POST", "/control/reset", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.sent_to(7).is_empty());
    let (status, _) = raw(s.addr(), "GET", "/healthz", None, "").await;
    assert_eq!(status, StatusCode::OK);
}

/// Inline keyboards the way the gateway's access buttons use them, with teloxide as the
/// client: the keyboard is kept on the sent message, a press injected through the control API
/// arrives as a `callback_query` teloxide parses (who pressed, the message, the data), is
/// answered once, and the message is edited (its buttons gone).
#[tokio::test]
async fn a_button_press_arrives_as_a_callback_query_is_answered_and_the_message_edited() {
    let s = standin().await;
    let bot = bot(&s);
    s.inject(InjectMessage::private(42, "/start")).expect("inject");
    let keyboard = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("Approve", "access:approve:X:public")]]);
    let sent = bot.send_message(ChatId(42), "Decide").reply_markup(keyboard).await.expect("sendMessage");
    let recorded = s.sent_to(42).pop().expect("recorded");
    assert_eq!(
        recorded.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"],
        "access:approve:X:public"
    );
    let too_long = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("x", "y".repeat(65))]]);
    let refused = bot.send_message(ChatId(42), "x").reply_markup(too_long).await;
    assert!(matches!(refused, Err(RequestError::Api(_))), "{refused:?}");

    let body = json!({"from_id": 42, "chat_id": 42, "message_id": sent.id.0, "data": "access:approve:X:public"});
    let (status, injected) =
        raw(s.addr(), "POST", "/control/callbacks", Some("application/json"), &body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{injected}");
    let missing = json!({"from_id": 42, "chat_id": 42, "message_id": 999, "data": "x"});
    let (status, _) = raw(s.addr(), "POST", "/control/callbacks", Some("application/json"), &missing.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "no such message to press a button on");

    let updates = bot.get_updates().allowed_updates([AllowedUpdate::Message, AllowedUpdate::CallbackQuery]).await;
    let press = updates.expect("getUpdates").into_iter().find_map(|u| match u.kind {
        UpdateKind::CallbackQuery(q) => Some(q),
        _ => None,
    });
    let press = press.expect("a callback_query update");
    assert_eq!(press.id.0, injected["callback_query_id"].as_str().unwrap());
    assert_eq!((press.from.id.0, press.data.as_deref()), (42, Some("access:approve:X:public")));
    assert_eq!(press.message.as_ref().map(|m| m.id()), Some(sent.id));
    bot.answer_callback_query(press.id.clone()).text("Approved").await.expect("answerCallbackQuery");
    assert!(matches!(bot.answer_callback_query(press.id.clone()).await, Err(RequestError::Api(_))), "once only");
    let (status, answers) = raw(s.addr(), "GET", "/control/callback_answers", None, "").await;
    assert_eq!((status, &answers[0]["text"]), (StatusCode::OK, &json!("Approved")));

    let edited = bot.edit_message_text(ChatId(42), sent.id, "Approved.").await.expect("editMessageText");
    assert_eq!((edited.text(), edited.reply_markup()), (Some("Approved."), None));
    assert_eq!(s.sent_to(42).pop().map(|m| (m.rendered, m.reply_markup)), Some(("Approved.".into(), None)));
    let unchanged = bot.edit_message_text(ChatId(42), sent.id, "Approved.").await;
    assert!(matches!(unchanged, Err(RequestError::Api(ApiError::MessageNotModified))), "{unchanged:?}");
    // Filtered like any update the bot did not ask for.
    bot.get_updates().allowed_updates([AllowedUpdate::Message]).await.expect("getUpdates");
    assert!(!s.press(42, 42, sent.id.0.into(), "again").expect("press").queued);
}

#[tokio::test]
async fn shutdown_answers_pending_long_polls_and_stops() {
    let s = standin().await;
    let addr = s.addr();
    let poll = {
        let bot = bot(&s);
        tokio::spawn(async move { bot.get_updates().timeout(10).await })
    };
    s.wait_for_stats(&StatsCondition { min_active_polls: Some(1), ..Default::default() }, WAIT).await.expect("polling");
    tokio::time::timeout(WAIT, s.shutdown()).await.expect("shutdown is prompt");
    assert!(poll.await.expect("join").expect("answered").is_empty());
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn teloxide_polling_listener_drops_pending_updates_then_streams_new_ones() {
    use futures::StreamExt;
    use teloxide::update_listeners::{AsUpdateStream, Polling};

    let s = standin().await;
    let b = bot(&s);
    s.inject_text(42, "stale").expect("inject");
    let first_update = tokio::spawn(async move {
        let mut polling =
            Polling::builder(b).timeout(Duration::from_secs(5)).drop_pending_updates().delete_webhook().await.build();
        let stream = polling.as_stream();
        futures::pin_mut!(stream);
        match stream.next().await {
            Some(Ok(Update { kind: UpdateKind::Message(m), .. })) => m.text().map(str::to_owned),
            other => panic!("unexpected {other:?}"),
        }
    });
    s.wait_for_stats(
        &StatsCondition { min_active_polls: Some(1), max_pending_updates: Some(0), ..Default::default() },
        WAIT,
    )
    .await
    .expect("the listener dropped the stale update and is polling");
    s.inject_text(42, "fresh").expect("inject");
    assert_eq!(first_update.await.expect("join").as_deref(), Some("fresh"));
}

#[tokio::test]
async fn a_teloxide_dispatcher_echo_bot_works_end_to_end() {
    let s = standin().await;
    let handler = Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        bot.send_chat_action(msg.chat.id, ChatAction::Typing).await?;
        bot.send_message(msg.chat.id, format!("echo: {}", msg.text().unwrap_or_default())).await?;
        respond(())
    });
    let mut dispatcher = Dispatcher::builder(bot(&s), handler).build();
    let running = tokio::spawn(async move { dispatcher.dispatch().await });

    s.inject_text(42, "ping").expect("inject");
    s.inject(InjectMessage::group(-77, 43, "pong")).expect("inject");
    let to_user = s.wait_for_messages(42, 1, WAIT).await.expect("reply in the private chat");
    let to_group = s.wait_for_messages(-77, 1, WAIT).await.expect("reply in the group");
    assert_eq!((to_user[0].text.as_str(), to_group[0].text.as_str()), ("echo: ping", "echo: pong"));
    assert_eq!(s.actions_in(42)[0].action, "typing");
    s.wait_for_stats(&StatsCondition { max_pending_updates: Some(0), ..Default::default() }, WAIT)
        .await
        .expect("the dispatcher confirmed what it handled");
    running.abort();
}
