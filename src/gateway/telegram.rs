//! Telegram in and out: the getUpdates loop and sending replies.
//!
//! The loop asks for updates from `Confirmations::offset()`, which never passes an update
//! still being handled; Telegram therefore returns unfinished updates again on every call
//! (without waiting), and those are skipped. To not spin meanwhile, after a poll that brought
//! nothing new the loop waits until some update finishes (or a short while, for newcomers),
//! and polls at most every 20 ms while any update is in flight.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use teloxide::prelude::*;
use teloxide::requests::{JsonRequest, Payload};
use teloxide::types::{
    AllowedUpdate, BotCommand, CallbackQueryId, ChatAction, FileMeta, InlineKeyboardMarkup, MediaKind, Message,
    MessageId, MessageKind, ParseMode, UpdateKind,
};
use teloxide::{ApiError, RequestError};
use tokio::sync::Notify;

use super::commands::{Attachment, COMMANDS, Content, Incoming};
use super::delivery::Confirmations;
use super::markdown::from_markdown;
use super::split::{TELEGRAM_MAX_MESSAGE, split_message};
use crate::shutdown::Shutdown;

/// How long to wait for a finished update before polling again while some are in flight.
const IN_FLIGHT_REPOLL: Duration = Duration::from_millis(300);

/// The shortest time between two polls while updates are in flight. Telegram answers such a
/// poll at once, with every unfinished update again: polled back to back, a busy gateway
/// would poll once per message and read each update in flight again every time. A message
/// that arrives meanwhile waits at most this long, a small part of any agent's turn.
const IN_FLIGHT_POLL_EVERY: Duration = Duration::from_millis(20);

/// The updates the gateway asks Telegram for: messages, and presses of its access buttons.
pub const ALLOWED_UPDATES: [AllowedUpdate; 2] = [AllowedUpdate::Message, AllowedUpdate::CallbackQuery];

/// How long an answer may take before the user sees "typing...".
pub const TYPING_AFTER: Duration = Duration::from_millis(800);

/// Which updates are being handled; the offset for the next poll.
#[derive(Default)]
pub struct Tracker {
    confirmations: Mutex<Confirmations>,
    finished: Notify,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, Confirmations> {
        self.confirmations.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket for a new update, or None if it is already being handled or done.
    pub fn begin(self: &Arc<Self>, update_id: i64) -> Option<Ticket> {
        if !self.lock().begin(update_id) {
            return None;
        }
        let tracker = Arc::clone(self);
        Some(Ticket::new(update_id, move || {
            tracker.lock().done(update_id);
            tracker.finished.notify_one();
        }))
    }
}

/// An update being handled. Dropping it marks the update done (the polling offset moves on,
/// or the webhook request is answered), so no path, error or panic included, can hold an
/// update forever.
pub struct Ticket {
    pub update_id: i64,
    pub received: Instant,
    release: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl Ticket {
    pub fn new(update_id: i64, release: impl FnOnce() + Send + Sync + 'static) -> Self {
        Self { update_id, received: Instant::now(), release: Some(Box::new(release)) }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(release) = self.release.take() {
            release();
        }
    }
}

/// Sends to Telegram, with a few retries for flood control and network errors.
#[derive(Clone)]
pub struct Outbox {
    bot: Bot,
}

impl Outbox {
    pub fn new(bot: Bot) -> Self {
        Self { bot }
    }

    /// Send `text` as plain text (no parse mode: nothing in it is markup), split to fit.
    pub async fn send_text(&self, chat_id: i64, text: &str) -> Result<(), RequestError> {
        for part in split_message(text, TELEGRAM_MAX_MESSAGE) {
            self.send_with_retries(|| self.text(chat_id, &part, None)).await?;
        }
        Ok(())
    }

    /// Send the agent's reply, its Markdown shown as formatting. Should Telegram refuse the
    /// markup of a part, that part goes again as plain text: the person always gets the words.
    pub async fn send_reply(&self, chat_id: i64, markdown: &str) -> Result<(), RequestError> {
        for part in from_markdown(markdown).parts(TELEGRAM_MAX_MESSAGE) {
            let formatted = self.send_with_retries(|| self.text(chat_id, &part.html, Some(ParseMode::Html)));
            match formatted.await {
                Err(RequestError::Api(ApiError::CantParseEntities(reason))) => {
                    tracing::warn!(chat_id, %reason, "Telegram refused the reply's markup; sending it as plain text");
                    self.send_with_retries(|| self.text(chat_id, &part.plain, None)).await?;
                }
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }

    /// Send `text` as plain text with an inline keyboard; the sent message's id.
    pub async fn send_with_buttons(
        &self,
        chat_id: i64,
        text: &str,
        buttons: InlineKeyboardMarkup,
    ) -> Result<MessageId, RequestError> {
        let sent = self
            .send_with_retries(|| self.bot.send_message(ChatId(chat_id), text).reply_markup(buttons.clone()))
            .await?;
        Ok(sent.id)
    }

    /// Replace the text of a message the bot sent (its buttons go), logging a failure.
    pub async fn edit(&self, chat_id: i64, message_id: i32, text: &str) {
        if let Err(e) = self.bot.edit_message_text(ChatId(chat_id), MessageId(message_id), text).await {
            tracing::warn!(chat_id, message_id, error = %e, "editing a message failed");
        }
    }

    /// Answer a button press (Telegram shows `text` briefly), logging a failure.
    pub async fn answer_press(&self, query_id: &str, text: &str) {
        if let Err(e) = self.bot.answer_callback_query(CallbackQueryId(query_id.to_string())).text(text).await {
            tracing::warn!(error = %e, "answering a button press failed");
        }
    }

    /// Send a file as a document, named `file_name`.
    pub async fn send_document(&self, chat_id: i64, file_name: &str, bytes: Vec<u8>) -> Result<(), RequestError> {
        self.send_with_retries(|| {
            let file = teloxide::types::InputFile::memory(bytes.clone()).file_name(file_name.to_string());
            self.bot.send_document(ChatId(chat_id), file)
        })
        .await
        .map(drop)
    }

    /// One request, again after flood control's wait or a network error, a few times.
    /// A sendMessage of plain `text`, or formatted in `mode`.
    fn text(&self, chat_id: i64, text: &str, parse_mode: Option<ParseMode>) -> JsonRequest<SendText> {
        JsonRequest::new(self.bot.clone(), SendText { chat_id, text: text.to_string(), parse_mode })
    }

    async fn send_with_retries<R, T>(&self, request: impl Fn() -> R) -> Result<T, RequestError>
    where
        R: std::future::IntoFuture<Output = Result<T, RequestError>>,
    {
        let mut attempt = 0u32;
        loop {
            match request().await {
                Ok(message) => return Ok(message),
                Err(RequestError::RetryAfter(after)) if attempt < 5 => tokio::time::sleep(after.duration()).await,
                Err(RequestError::Network(_) | RequestError::Io(_)) if attempt < 5 => {
                    tokio::time::sleep(super::agent_client::backoff(attempt)).await
                }
                Err(e) => return Err(e),
            }
            attempt += 1;
        }
    }

    /// Send, logging rather than returning a failure (the update is finished either way).
    pub async fn say(&self, chat_id: i64, text: &str) {
        if let Err(e) = self.send_text(chat_id, text).await {
            tracing::warn!(chat_id, error = %e, "sending a message failed");
        }
    }

    /// "typing..." from `TYPING_AFTER` on until this future is dropped (Telegram shows it for
    /// about 5 s). A reply quicker than that needs no indicator: one Telegram call less per
    /// message, and Telegram's per-bot rate limits count chat actions too.
    pub async fn typing_forever(&self, chat_id: i64) -> std::convert::Infallible {
        tokio::time::sleep(TYPING_AFTER).await;
        loop {
            let _ = self.bot.send_chat_action(ChatId(chat_id), ChatAction::Typing).await;
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
    }
}

/// What the loop hands each new message to.
pub trait Handler: Send + Sync {
    fn handle(&self, message: Incoming, ticket: Ticket);

    /// A button press (an admin deciding an access request, or a forgery).
    fn press(&self, press: ButtonPress, ticket: Ticket) {
        drop((press, ticket));
    }

    /// A getUpdates call succeeded (the liveness signal of polling, for the metrics).
    fn polled(&self) {}
}

/// A message a person sent, typed by what it carries; None for everything else (edits,
/// channel posts, service messages such as "joined the group").
pub fn incoming(update: &Update) -> Option<Incoming> {
    let UpdateKind::Message(message) = &update.kind else { return None };
    let from = message.from.as_ref()?;
    Some(Incoming {
        update_id: i64::from(update.id.0),
        chat_id: message.chat.id.0,
        from_id: i64::try_from(from.id.0).ok()?,
        private: message.chat.is_private(),
        username: from.username.clone(),
        name: crate::access::request::clean_name(&from.first_name, from.last_name.as_deref()),
        content: content(message)?,
    })
}

/// What a message is called that the gateway cannot read, in "Sorry, I can't take ...".
pub const UNREADABLE: &str = "this kind of message";

/// A new message teloxide cannot read (a kind or a field newer than it knows, or a field
/// missing that it requires): teloxide keeps nothing of it, so its sender and chat are read
/// from the update as Telegram sent it, and the person gets a reply instead of silence.
pub fn unreadable(raw: &Value) -> Option<Incoming> {
    let message = raw.get("message")?;
    let from = message.get("from")?;
    if from.get("is_bot").and_then(Value::as_bool) != Some(false) {
        return None;
    }
    let text = |value: &Value, key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    Some(Incoming {
        update_id: raw.get("update_id")?.as_i64()?,
        chat_id: message.pointer("/chat/id")?.as_i64()?,
        from_id: from.get("id")?.as_i64()?,
        private: message.pointer("/chat/type").and_then(Value::as_str) == Some("private"),
        username: text(from, "username"),
        name: crate::access::request::clean_name(
            &text(from, "first_name").unwrap_or_default(),
            text(from, "last_name").as_deref(),
        ),
        content: Content::Other(UNREADABLE),
    })
}

/// An update as teloxide reads it, and as Telegram sent it (for what teloxide cannot read).
pub fn read_update(raw: &Value) -> Result<(Update, Option<Incoming>), serde_json::Error> {
    let update = Update::deserialize(raw)?;
    let message = match &update.kind {
        UpdateKind::Error(_) => unreadable(raw),
        _ => incoming(&update),
    };
    Ok((update, message))
}

fn content(message: &Message) -> Option<Content> {
    let common = match &message.kind {
        MessageKind::Common(common) => common,
        MessageKind::Dice(_) => return Some(Content::Other("dice")),
        // What teloxide could not type (a field it requires missing, a kind newer than it):
        // a reply, not silence.
        MessageKind::Empty {} => return Some(Content::Other(UNREADABLE)),
        _ => return None,
    };
    let attachment =
        |file: &FileMeta, file_name: Option<&String>, mime: Option<String>, caption: &Option<String>| Attachment {
            file_id: file.id.0.clone(),
            file_name: file_name.cloned(),
            mime_type: mime,
            size: Some(u64::from(file.size)).filter(|s| *s > 0),
            caption: caption.clone(),
        };
    Some(match &common.media_kind {
        MediaKind::Text(text) => Content::Text(text.text.clone()),
        MediaKind::Document(d) => Content::Document(attachment(
            &d.document.file,
            d.document.file_name.as_ref(),
            d.document.mime_type.as_ref().map(ToString::to_string),
            &d.caption,
        )),
        MediaKind::Voice(v) => Content::Voice(attachment(
            &v.voice.file,
            None,
            v.voice.mime_type.as_ref().map(ToString::to_string),
            &v.caption,
        )),
        MediaKind::Audio(a) => Content::Voice(attachment(
            &a.audio.file,
            a.audio.file_name.as_ref(),
            a.audio.mime_type.as_ref().map(ToString::to_string),
            &a.caption,
        )),
        // Telegram sends every size it made; the last is the largest.
        MediaKind::Photo(p) => match p.photo.iter().max_by_key(|s| u64::from(s.width) * u64::from(s.height)) {
            Some(largest) => Content::Photo(attachment(&largest.file, None, None, &p.caption)),
            None => Content::Other("photos"),
        },
        MediaKind::Animation(_) => Content::Other("GIFs"),
        MediaKind::Contact(_) => Content::Other("contacts"),
        MediaKind::Game(_) => Content::Other("games"),
        MediaKind::Venue(_) | MediaKind::Location(_) => Content::Other("locations"),
        MediaKind::Poll(_) => Content::Other("polls"),
        MediaKind::Checklist(_) => Content::Other("checklists"),
        MediaKind::Sticker(_) => Content::Other("stickers"),
        MediaKind::Story(_) => Content::Other("stories"),
        MediaKind::Video(_) | MediaKind::VideoNote(_) | MediaKind::PaidMedia(_) => Content::Other("videos"),
        MediaKind::Migration(_) => return None,
    })
}

/// A press of an inline keyboard's callback button.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ButtonPress {
    pub update_id: i64,
    pub query_id: String,
    /// Who pressed: the only thing about a press Telegram vouches for.
    pub from_id: i64,
    /// The message the button was on.
    pub message: Option<(i64, i32)>,
    pub data: String,
}

/// The button press in an update, or None.
pub fn button_press(update: &Update) -> Option<ButtonPress> {
    let UpdateKind::CallbackQuery(query) = &update.kind else { return None };
    Some(ButtonPress {
        update_id: i64::from(update.id.0),
        query_id: query.id.0.clone(),
        from_id: i64::try_from(query.from.id.0).ok()?,
        message: query.message.as_ref().map(|m| (m.chat().id.0, m.id().0)),
        data: query.data.clone().unwrap_or_default(),
    })
}

/// Hand an update (read by [`read_update`]) to `handler`: a message, a press, or nothing
/// (the ticket confirms it).
pub fn dispatch(handler: &dyn Handler, update: &Update, message: Option<Incoming>, ticket: Ticket) {
    if let Some(message) = message {
        handler.handle(message, ticket);
    } else if let Some(press) = button_press(update) {
        handler.press(press, ticket);
    }
}

/// getUpdates with each update's JSON kept as Telegram sent it; teloxide's client, settings
/// and errors otherwise.
#[derive(Debug, Clone, Serialize)]
struct GetRawUpdates {
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<i32>,
    timeout: u32,
    allowed_updates: [AllowedUpdate; 2],
}

impl Payload for GetRawUpdates {
    // Not `RawValue`: teloxide reads the answer through an untagged enum, which cannot hold one.
    type Output = Vec<Value>;
    const NAME: &'static str = "GetUpdates";
}

impl GetRawUpdates {
    fn new(offset: Option<i64>, timeout: u32) -> Self {
        Self { offset: offset.and_then(|o| i32::try_from(o).ok()), timeout, allowed_updates: ALLOWED_UPDATES }
    }
}

/// sendMessage, text only, without reading the sent message back: the gateway needs to know
/// only whether Telegram took it (typing Telegram's whole message object cost more than the
/// rest of sending it).
#[derive(Debug, Clone, Serialize)]
pub struct SendText {
    chat_id: i64,
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parse_mode: Option<ParseMode>,
}

impl Payload for SendText {
    type Output = serde::de::IgnoredAny;
    const NAME: &'static str = "SendMessage";
}

/// The bot's command menu, as users see it in Telegram.
pub async fn register_commands(bot: &Bot) {
    let commands: Vec<BotCommand> =
        COMMANDS.iter().map(|(name, description)| BotCommand::new(*name, *description)).collect();
    if let Err(e) = bot.set_my_commands(commands).await {
        tracing::warn!(error = %e, "setMyCommands");
    }
}

/// Poll for updates and hand them to `handler` until a stop is requested; then let the
/// updates in flight finish, for at most `drain`, and confirm the finished ones to Telegram.
/// Whatever is still unfinished then is not confirmed: Telegram hands it to the next poller.
pub async fn poll(
    bot: Bot,
    tracker: Arc<Tracker>,
    handler: Arc<dyn Handler>,
    long_poll: Duration,
    shutdown: Shutdown,
    drain: Duration,
) {
    take_updates(&bot, &tracker, handler, long_poll, &shutdown).await;
    let deadline = Instant::now() + drain;
    loop {
        let in_flight = tracker.lock().in_flight();
        if in_flight == 0 {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!(in_flight, "stopping with updates unfinished; Telegram hands them to the next poller");
            break;
        }
        tracing::info!(in_flight, "no new updates taken; finishing those in flight");
        let _ = tokio::time::timeout(left.min(Duration::from_secs(5)), tracker.finished.notified()).await;
    }
    let offset = tracker.lock().offset();
    if let Some(offset) = offset.and_then(|o| i32::try_from(o).ok()) {
        // An offset confirms every update below it; what this returns is left for the next poller.
        let confirm = bot.get_updates().offset(offset).limit(1).timeout(0).allowed_updates(ALLOWED_UPDATES);
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), confirm.send()).await.unwrap_or(Ok(Vec::new())) {
            tracing::warn!(error = %e, "confirming the finished updates failed; the next poller skips them as repeats");
        }
    }
}

/// The getUpdates loop, until a stop is requested.
async fn take_updates(
    bot: &Bot,
    tracker: &Arc<Tracker>,
    handler: Arc<dyn Handler>,
    long_poll: Duration,
    shutdown: &Shutdown,
) {
    // A webhook set earlier makes getUpdates fail; polling is the mode we run in.
    if let Err(e) = bot.delete_webhook().await {
        tracing::warn!(error = %e, "deleteWebhook");
    }
    register_commands(bot).await;
    let mut failures = 0u32;
    loop {
        let (offset, in_flight) = {
            let c = tracker.lock();
            (c.offset(), c.in_flight())
        };
        // Telegram returns unfinished updates at once anyway; the long wait is for when idle.
        let timeout = if in_flight == 0 { long_poll.as_secs().min(50) as u32 } else { 0 };
        let polled_at = tokio::time::Instant::now();
        let request = JsonRequest::new(bot.clone(), GetRawUpdates::new(offset, timeout));
        let answer = tokio::select! {
            answer = request.send() => answer,
            () = shutdown.requested() => return,
        };
        let updates = match answer {
            Ok(updates) => {
                failures = 0;
                handler.polled();
                updates
            }
            Err(e) => {
                let pause = match &e {
                    RequestError::RetryAfter(after) => after.duration(),
                    RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => Duration::from_secs(5),
                    _ => super::agent_client::backoff(failures),
                };
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, pause = ?pause, "getUpdates failed");
                tokio::select! {
                    () = tokio::time::sleep(pause) => continue,
                    () = shutdown.requested() => return,
                }
            }
        };
        let mut new = 0;
        for raw in &updates {
            // Telegram sends every unconfirmed update again with each answer, those in flight
            // too: only a new one is read in full.
            let Some(update_id) = raw.get("update_id").and_then(Value::as_i64) else {
                // Without its id it cannot be confirmed; Telegram stops resending it after a day.
                tracing::error!("an update without an update_id; skipped");
                continue;
            };
            let Some(ticket) = tracker.begin(update_id) else { continue };
            new += 1;
            match read_update(raw) {
                Ok((update, message)) => dispatch(handler.as_ref(), &update, message, ticket),
                // Dropping the ticket confirms it: it would fail the same way again.
                Err(e) => tracing::error!(update_id, error = %e, "an update that is not one; skipped"),
            }
        }
        if tracker.lock().in_flight() > 0 {
            if new == 0 {
                let _ = tokio::time::timeout(IN_FLIGHT_REPOLL, tracker.finished.notified()).await;
            }
            tokio::select! {
                () = tokio::time::sleep_until(polled_at + IN_FLIGHT_POLL_EVERY) => {}
                () = shutdown.requested() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(json: serde_json::Value) -> Update {
        serde_json::from_str(&json.to_string()).unwrap()
    }

    fn from_alice(update_id: i64, fields: serde_json::Value) -> Update {
        let mut message = serde_json::json!({ "message_id": 3, "date": 0,
            "chat": { "id": 42, "type": "private", "first_name": "A" },
            "from": { "id": 42, "is_bot": false, "first_name": "A" } });
        for (k, v) in fields.as_object().unwrap() {
            message[k] = v.clone();
        }
        update(serde_json::json!({ "update_id": update_id, "message": message }))
    }

    #[test]
    fn a_message_teloxide_cannot_read_still_has_its_sender_and_gets_a_reply() {
        let raw = |update_id: i64, message: serde_json::Value| {
            let mut m = serde_json::json!({ "message_id": 3, "date": 0,
                "chat": { "id": 42, "type": "private", "first_name": "A" },
                "from": { "id": 42, "is_bot": false, "first_name": "Ann", "last_name": "Lee", "username": "ann" } });
            for (k, v) in message.as_object().unwrap() {
                m[k] = v.clone();
            }
            serde_json::json!({ "update_id": update_id, "message": m })
        };
        // An audio file without the duration teloxide requires: a message of no kind to it.
        let audio = raw(8, serde_json::json!({ "audio": { "file_id": "a", "file_unique_id": "a1" } }));
        let (_, message) = read_update(&audio).unwrap();
        assert_eq!(message.map(|m| (m.from_id, m.content)), Some((42, Content::Other(UNREADABLE))));

        // A message teloxide cannot read at all: its sender from the update as sent.
        let broken = raw(9, serde_json::json!({ "date": "yesterday", "text": "hi" }));
        let (update, message) = read_update(&broken).unwrap();
        assert!(matches!(update.kind, UpdateKind::Error(_)), "teloxide cannot read it: {update:?}");
        let message = message.expect("its sender, from the raw update");
        assert_eq!((message.update_id, message.chat_id, message.from_id, message.private), (9, 42, 42, true));
        assert_eq!((message.username.as_deref(), message.name.as_str()), (Some("ann"), "Ann Lee"));
        assert_eq!(message.content, Content::Other(UNREADABLE));

        // What it can read is read as before; what is not a person's message stays nothing.
        let text = raw(10, serde_json::json!({ "text": "hi" }));
        assert_eq!(read_update(&text).unwrap().1.unwrap().content, Content::Text("hi".into()));
        let mut from_a_bot = broken.clone();
        from_a_bot["message"]["from"]["is_bot"] = true.into();
        assert_eq!(read_update(&from_a_bot).unwrap().1, None);
        let unknown_kind = serde_json::json!({ "update_id": 11, "business_thing": { "x": 1 } });
        assert_eq!(read_update(&unknown_kind).unwrap().1, None);
        assert!(read_update(&serde_json::json!({ "no": "update" })).is_err());
    }

    #[test]
    fn media_messages_are_typed_by_what_they_carry() {
        let content = |fields| incoming(&from_alice(1, fields)).map(|m| m.content);
        let document = content(serde_json::json!({ "caption": "read this",
            "document": { "file_id": "DOC", "file_unique_id": "u1", "file_name": "a.pdf",
                "mime_type": "application/pdf", "file_size": 1234 } }));
        assert_eq!(
            document,
            Some(Content::Document(Attachment {
                file_id: "DOC".into(),
                file_name: Some("a.pdf".into()),
                mime_type: Some("application/pdf".into()),
                size: Some(1234),
                caption: Some("read this".into()),
            }))
        );
        let voice = content(serde_json::json!({ "voice": { "file_id": "V", "file_unique_id": "u2", "duration": 3,
            "mime_type": "audio/ogg", "file_size": 99 } }));
        assert!(matches!(voice, Some(Content::Voice(Attachment { ref file_id, .. })) if file_id == "V"), "{voice:?}");
        let audio = content(serde_json::json!({ "audio": { "file_id": "A", "file_unique_id": "u3", "duration": 3,
            "mime_type": "audio/mpeg" } }));
        assert!(matches!(audio, Some(Content::Voice(_))), "{audio:?}");
        let photo = content(serde_json::json!({ "photo": [
            { "file_id": "small", "file_unique_id": "s", "width": 90, "height": 60, "file_size": 10 },
            { "file_id": "large", "file_unique_id": "l", "width": 1280, "height": 853, "file_size": 1000 },
            { "file_id": "mid", "file_unique_id": "m", "width": 320, "height": 213, "file_size": 100 }] }));
        assert!(
            matches!(photo, Some(Content::Photo(Attachment { ref file_id, .. })) if file_id == "large"),
            "{photo:?}"
        );
        let sticker = content(serde_json::json!({ "sticker": { "file_id": "S", "file_unique_id": "u4",
            "type": "regular", "width": 512, "height": 512, "is_animated": false, "is_video": false, "emoji": "🙂" } }));
        assert_eq!(sticker, Some(Content::Other("stickers")));
        let location = content(serde_json::json!({ "location": { "latitude": 1.0, "longitude": 2.0 } }));
        assert_eq!(location, Some(Content::Other("locations")));
        let contact = content(serde_json::json!({ "contact": { "phone_number": "+100", "first_name": "B" } }));
        assert_eq!(contact, Some(Content::Other("contacts")));
        let joined =
            content(serde_json::json!({ "new_chat_members": [{ "id": 5, "is_bot": false, "first_name": "C" }] }));
        assert_eq!(joined, None, "service messages are nobody's message");
    }

    #[test]
    fn text_messages_become_incoming_others_do_not() {
        let private = update(serde_json::json!({
            "update_id": 9,
            "message": { "message_id": 1, "date": 0, "text": "hi",
                "chat": { "id": 42, "type": "private", "first_name": "A" },
                "from": { "id": 42, "is_bot": false, "first_name": "A" } }
        }));
        assert!(matches!(private.kind, UpdateKind::Message(_)), "{:?}", private.kind);
        assert_eq!(
            incoming(&private),
            Some(Incoming {
                update_id: 9,
                chat_id: 42,
                from_id: 42,
                private: true,
                content: Content::Text("hi".into()),
                username: None,
                name: "A".into()
            })
        );
        let group = update(serde_json::json!({
            "update_id": 10,
            "message": { "message_id": 2, "date": 0, "text": "hi all",
                "chat": { "id": -5, "type": "group", "title": "G" },
                "from": { "id": 42, "is_bot": false, "first_name": "A" } }
        }));
        assert!(matches!(incoming(&group), Some(Incoming { private: false, chat_id: -5, .. })));
        let edited = update(serde_json::json!({
            "update_id": 11,
            "edited_message": { "message_id": 3, "date": 0, "edit_date": 1, "text": "hi!",
                "chat": { "id": 42, "type": "private", "first_name": "A" },
                "from": { "id": 42, "is_bot": false, "first_name": "A" } }
        }));
        assert_eq!(incoming(&edited), None);
    }

    #[test]
    fn a_dropped_ticket_releases_the_offset() {
        let tracker = Arc::new(Tracker::default());
        let first = tracker.begin(5).unwrap();
        let second = tracker.begin(6).unwrap();
        assert!(tracker.begin(5).is_none(), "redelivered while in flight");
        drop(second);
        assert_eq!(tracker.lock().offset(), Some(5));
        drop(first);
        assert_eq!(tracker.lock().offset(), Some(7));
    }
}

#[cfg(test)]
mod reply_tests {
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::{Value, json};

    use super::*;

    /// A Bot API that refuses every `parse_mode` as Telegram refuses bad markup, and records
    /// what it was sent.
    async fn refusing_markup() -> (String, Arc<Mutex<Vec<Value>>>) {
        let sent = Arc::new(Mutex::new(Vec::new()));
        let send = |State(sent): State<Arc<Mutex<Vec<Value>>>>, Json(form): Json<Value>| async move {
            sent.lock().unwrap().push(form.clone());
            if form.get("parse_mode").is_some() {
                return Json(json!({ "ok": false, "error_code": 400,
                    "description": "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0" }));
            }
            Json(json!({ "ok": true, "result": { "message_id": 1, "date": 0, "text": form["text"],
                "chat": { "id": 42, "type": "private", "first_name": "A" } } }))
        };
        let app = Router::new().fallback(post(send)).with_state(sent.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, sent)
    }

    #[tokio::test]
    async fn a_reply_whose_markup_telegram_refuses_arrives_as_plain_text() {
        let (url, sent) = refusing_markup().await;
        let bot = Bot::new("1:token").set_api_url(reqwest::Url::parse(&url).unwrap());
        Outbox::new(bot).send_reply(42, "**Tea** at `5`").await.unwrap();
        let sent = sent.lock().unwrap().clone();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0]["parse_mode"], "HTML");
        assert_eq!(sent[0]["text"], "<b>Tea</b> at <code>5</code>");
        assert_eq!(sent[1].get("parse_mode"), None);
        assert_eq!(sent[1]["text"], "Tea at 5");
    }
}
