//! Everything the stand-in remembers, with no I/O and no clock of its own (callers pass `now`):
//! the update queue, the chats users wrote from, what the bot sent, its commands and webhook.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::error::BotApiError;
use super::queue::UpdateQueue;
use super::types::{
    BotCommand, CallbackAnswer, CallbackQuery, Chat, ChatType, InjectCallback, InjectMedia, InjectMessage, Injected,
    InjectedCallback, Message, SentAction, SentDocument, SentMessage, StoredFile, Update, User,
};

/// Telegram takes files of at most 50 MB from bots (`sendDocument` with an upload).
pub const UPLOAD_MAX: usize = 50 * 1000 * 1000;

/// Telegram hands bots files of at most 20 MB; `getFile` refuses larger ones.
pub const DOWNLOAD_MAX: usize = 20 * 1000 * 1000;

/// Caps on what is kept; past them the oldest entries go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Unconfirmed updates.
    pub max_updates: usize,
    /// Messages the bot sent, over all chats.
    pub max_sent_messages: usize,
    /// Chat actions the bot sent, over all chats.
    pub max_actions: usize,
    /// Distinct chats; injecting into a new chat past this is refused.
    pub max_chats: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_updates: 100_000, max_sent_messages: 100_000, max_actions: 100_000, max_chats: 100_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error("user ids are positive")]
    BadUserId,
    #[error("a private chat's id is its user's id")]
    PrivateChatMismatch,
    #[error("group chat ids are negative")]
    BadGroupId,
    #[error("too many chats (limit {0})")]
    TooManyChats(usize),
    #[error("the bot sent no message {message_id} to chat {chat_id}: a button can only be pressed on one")]
    NoSuchMessage { chat_id: i64, message_id: i64 },
}

/// The webhook as set by `setWebhook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret_token: Option<String>,
    pub max_connections: u32,
    pub last_error_date: Option<i64>,
    pub last_error_message: Option<String>,
}

/// One POST for the webhook worker to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub url: String,
    pub secret_token: Option<String>,
    pub update_id: i64,
    pub body: Vec<u8>,
    /// Which `setWebhook` this belongs to, so a stale result does not touch a newer webhook.
    pub webhook_generation: u64,
}

/// Counters for tests and the control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub pending_updates: usize,
    pub next_update_id: i64,
    pub get_updates_calls: u64,
    /// `getUpdates` calls currently waiting (long polls).
    pub active_polls: usize,
    pub sent_messages: u64,
    pub chat_actions: u64,
    pub webhook_url: Option<String>,
    pub webhook_deliveries: u64,
    pub webhook_failures: u64,
    /// Unconfirmed updates dropped because the queue was full.
    pub overflowed_updates: u64,
    /// Updates never queued because the bot's `allowed_updates` excludes them.
    pub filtered_updates: u64,
}

/// Commands registered for one scope and language.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandSet {
    pub scope: Value,
    pub language_code: String,
    pub commands: Vec<BotCommand>,
}

#[derive(Debug)]
struct ChatState {
    chat: Chat,
    last_message_id: i64,
}

/// Per-chat lists under one global cap, dropping the globally oldest entry first.
#[derive(Debug)]
struct ChatLog<T> {
    by_chat: HashMap<i64, VecDeque<T>>,
    /// Chat of each entry, oldest first, to find what to drop in O(1).
    order: VecDeque<i64>,
    cap: usize,
    total: u64,
}

impl<T: Clone> ChatLog<T> {
    fn new(cap: usize) -> Self {
        Self { by_chat: HashMap::new(), order: VecDeque::new(), cap: cap.max(1), total: 0 }
    }

    fn push(&mut self, chat_id: i64, item: T) {
        if self.order.len() >= self.cap
            && let Some(oldest) = self.order.pop_front()
            && let Some(list) = self.by_chat.get_mut(&oldest)
        {
            list.pop_front();
            if list.is_empty() {
                self.by_chat.remove(&oldest);
            }
        }
        self.by_chat.entry(chat_id).or_default().push_back(item);
        self.order.push_back(chat_id);
        self.total += 1;
    }

    fn get(&self, chat_id: i64) -> Vec<T> {
        self.by_chat.get(&chat_id).map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    fn count(&self, chat_id: i64) -> usize {
        self.by_chat.get(&chat_id).map_or(0, VecDeque::len)
    }

    fn find_mut(&mut self, chat_id: i64, matches: impl Fn(&T) -> bool) -> Option<&mut T> {
        self.by_chat.get_mut(&chat_id)?.iter_mut().find(|item| matches(item))
    }
}

/// A callback query the bot has been sent, until it answers it.
#[derive(Debug)]
struct OpenCallback {
    from_id: i64,
    answered: bool,
}

#[derive(Debug)]
pub struct Store {
    bot: User,
    limits: Limits,
    queue: UpdateQueue,
    chats: HashMap<i64, ChatState>,
    users: HashMap<i64, User>,
    sent: ChatLog<SentMessage>,
    actions: ChatLog<SentAction>,
    callbacks: HashMap<String, OpenCallback>,
    callback_answers: Vec<CallbackAnswer>,
    next_callback: u64,
    commands: BTreeMap<String, CommandSet>,
    webhook: Option<Webhook>,
    webhook_generation: u64,
    /// Update types the bot asked for; empty means Telegram's default (messages included).
    allowed_updates: Vec<String>,
    /// Bumped by each `getUpdates`, so an older long poll can tell it was superseded.
    poll_generation: u64,
    active_polls: usize,
    get_updates_calls: u64,
    webhook_deliveries: u64,
    webhook_failures: u64,
    filtered_updates: u64,
    /// Files users sent, by `file_id`.
    files: HashMap<String, StoredFile>,
}

impl Store {
    pub fn new(bot: User, first_update_id: i64, limits: Limits) -> Self {
        Self {
            bot,
            limits,
            queue: UpdateQueue::new(first_update_id, limits.max_updates),
            chats: HashMap::new(),
            users: HashMap::new(),
            sent: ChatLog::new(limits.max_sent_messages),
            actions: ChatLog::new(limits.max_actions),
            callbacks: HashMap::new(),
            callback_answers: Vec::new(),
            next_callback: 0,
            commands: BTreeMap::new(),
            webhook: None,
            webhook_generation: 0,
            allowed_updates: Vec::new(),
            poll_generation: 0,
            active_polls: 0,
            get_updates_calls: 0,
            webhook_deliveries: 0,
            webhook_failures: 0,
            filtered_updates: 0,
            files: HashMap::new(),
        }
    }

    pub fn bot(&self) -> &User {
        &self.bot
    }

    /// Forget everything but the bot. Update ids keep counting up: a bot that still holds an
    /// offset from before must not have new updates confirmed away by it.
    pub fn reset(&mut self) {
        let next_id = self.queue.next_id();
        *self = Self::new(self.bot.clone(), next_id, self.limits);
    }

    /// A user writes to the bot: remember the chat and queue a `message` update.
    pub fn inject(&mut self, msg: &InjectMessage, now: i64) -> Result<Injected, InjectError> {
        if msg.from_id <= 0 {
            return Err(InjectError::BadUserId);
        }
        let chat_id = msg.chat_id.unwrap_or(msg.from_id);
        match msg.chat_type {
            ChatType::Private if chat_id != msg.from_id => return Err(InjectError::PrivateChatMismatch),
            ChatType::Group | ChatType::Supergroup if chat_id >= 0 => return Err(InjectError::BadGroupId),
            _ => {}
        }
        if !self.chats.contains_key(&chat_id) && self.chats.len() >= self.limits.max_chats {
            return Err(InjectError::TooManyChats(self.limits.max_chats));
        }
        let from = self.remember_user(msg);
        let chat = match msg.chat_type {
            ChatType::Private => Chat {
                id: chat_id,
                kind: ChatType::Private,
                title: None,
                first_name: Some(from.first_name.clone()),
                last_name: from.last_name.clone(),
                username: from.username.clone(),
            },
            kind => {
                let known = self.chats.get(&chat_id).and_then(|c| c.chat.title.clone());
                let title = msg.title.clone().or(known).unwrap_or_else(|| format!("Group {chat_id}"));
                Chat { id: chat_id, kind, title: Some(title), first_name: None, last_name: None, username: None }
            }
        };
        let state = self.chats.entry(chat_id).or_insert_with(|| ChatState { chat: chat.clone(), last_message_id: 0 });
        state.chat = chat.clone();
        state.last_message_id += 1;
        let message_id = state.last_message_id;
        let (text, caption, media) = match &msg.media {
            None => (msg.text.clone(), None, serde_json::Map::new()),
            Some(media) => {
                let caption = (!msg.text.is_empty()).then(|| msg.text.clone());
                (String::new(), caption, self.media_fields(media))
            }
        };
        let message = Message {
            message_id,
            from: Some(from),
            date: now,
            chat,
            text,
            caption,
            media,
            edit_date: None,
            reply_markup: None,
        };
        let (update_id, queued) =
            self.enqueue("message", |update_id| Update { update_id, message: Some(message), callback_query: None });
        Ok(Injected { update_id, message_id, chat_id, queued })
    }

    /// Queue the update `build` makes if the bot's `allowed_updates` takes `kind` (Telegram's
    /// default, an empty list, takes messages and callback queries); its id, and whether it was.
    fn enqueue(&mut self, kind: &str, build: impl FnOnce(i64) -> Update) -> (i64, bool) {
        let allowed = self.allowed_updates.is_empty() || self.allowed_updates.iter().any(|t| t == kind);
        if allowed {
            (self.queue.push(build), true)
        } else {
            self.filtered_updates += 1;
            (self.queue.skip_id(), false)
        }
    }

    /// A user presses a callback button on a message the bot sent: queue a `callback_query`.
    pub fn inject_callback(&mut self, press: &InjectCallback) -> Result<InjectedCallback, InjectError> {
        if press.from_id <= 0 {
            return Err(InjectError::BadUserId);
        }
        let no_message = || InjectError::NoSuchMessage { chat_id: press.chat_id, message_id: press.message_id };
        let sent = self
            .sent
            .find_mut(press.chat_id, |m| m.message_id == press.message_id)
            .map(|m| m.clone())
            .ok_or_else(no_message)?;
        let chat = self.chats.get(&press.chat_id).map(|c| c.chat.clone()).ok_or_else(no_message)?;
        let from = self.remember_user(&InjectMessage::private(press.from_id, ""));
        self.next_callback += 1;
        // Telegram's ids are opaque strings; these are unique per stand-in.
        let id = format!("{}{:012}", self.bot.id, self.next_callback);
        let message = bot_text_message(&sent, self.bot.clone(), chat);
        let query = CallbackQuery {
            id: id.clone(),
            from,
            message: Some(message),
            chat_instance: (press.chat_id.wrapping_mul(7919)).to_string(),
            data: Some(press.data.clone()),
        };
        let (update_id, queued) = self.enqueue("callback_query", |update_id| Update {
            update_id,
            message: None,
            callback_query: Some(query),
        });
        if queued {
            self.callbacks.insert(id.clone(), OpenCallback { from_id: press.from_id, answered: false });
        }
        Ok(InjectedCallback { update_id, callback_query_id: id, queued })
    }

    /// `answerCallbackQuery`: once per query, as Telegram takes it.
    pub fn answer_callback(&mut self, id: &str, text: Option<String>, show_alert: bool) -> Result<(), BotApiError> {
        let open = self.callbacks.get_mut(id).filter(|c| !c.answered).ok_or_else(BotApiError::query_too_old)?;
        open.answered = true;
        let from_id = open.from_id;
        self.callback_answers.push(CallbackAnswer { callback_query_id: id.to_owned(), from_id, text, show_alert });
        Ok(())
    }

    pub fn callback_answers(&self) -> Vec<CallbackAnswer> {
        self.callback_answers.clone()
    }

    /// `editMessageText` of a message the bot sent; the edited message.
    pub fn edit_message_text(
        &mut self,
        chat_id: i64,
        message_id: i64,
        edit: SentFields,
        now: i64,
    ) -> Result<Message, BotApiError> {
        let chat = self.chats.get(&chat_id).map(|c| c.chat.clone()).ok_or_else(BotApiError::chat_not_found)?;
        let bot = self.bot.clone();
        let sent = self
            .sent
            .find_mut(chat_id, |m| m.message_id == message_id)
            .ok_or_else(|| BotApiError::bad_request("message to edit not found"))?;
        if sent.rendered == edit.rendered && sent.reply_markup == edit.reply_markup {
            return Err(BotApiError::bad_request(
                "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message",
            ));
        }
        sent.text = edit.text;
        sent.rendered = edit.rendered;
        sent.parse_mode = edit.parse_mode;
        sent.reply_markup = edit.reply_markup;
        sent.edit_date = Some(now);
        Ok(bot_text_message(sent, bot, chat))
    }

    /// Keep a file for `getFile`; its description as in a message (`file_id`, `file_size`...).
    fn keep_file(&mut self, folder: &str, ext: &str, bytes: &[u8]) -> serde_json::Map<String, Value> {
        let n = self.files.len() + 1;
        // Opaque like Telegram's, and different for every stand-in run's file.
        let file_id = format!("BQACAgIAAxkBAAI{n:04}{}", hex_of((bytes.len() as u64) ^ ((n as u64) << 32)));
        let file_unique_id = format!("AgAD{n:04}");
        let file_path = format!("{folder}/file_{n}.{ext}");
        self.files.insert(
            file_id.clone(),
            StoredFile {
                file_id: file_id.clone(),
                file_unique_id: file_unique_id.clone(),
                file_path,
                bytes: bytes.to_vec(),
            },
        );
        let described = json!({ "file_id": file_id, "file_unique_id": file_unique_id, "file_size": bytes.len() });
        match described {
            Value::Object(map) => map,
            _ => unreachable!("an object literal"),
        }
    }

    /// The message fields for `media`, as Telegram shapes them.
    fn media_fields(&mut self, media: &InjectMedia) -> serde_json::Map<String, Value> {
        let ext_of = |name: &Option<String>, fallback: &str| {
            name.as_deref()
                .and_then(|n| n.rsplit_once('.'))
                .map(|(_, e)| e.to_ascii_lowercase())
                .filter(|e| !e.is_empty() && e.len() <= 8 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
                .unwrap_or_else(|| fallback.to_string())
        };
        let with = |mut object: serde_json::Map<String, Value>, extra: Value| {
            if let Value::Object(extra) = extra {
                object.extend(extra.into_iter().filter(|(_, v)| !v.is_null()));
            }
            Value::Object(object)
        };
        let mut fields = serde_json::Map::new();
        match media {
            InjectMedia::Document { file_name, mime_type, bytes } => {
                let file = self.keep_file("documents", &ext_of(file_name, "dat"), bytes);
                fields.insert("document".into(), with(file, json!({ "file_name": file_name, "mime_type": mime_type })));
            }
            InjectMedia::Voice { mime_type, duration, bytes } => {
                let file = self.keep_file("voice", "oga", bytes);
                fields.insert("voice".into(), with(file, json!({ "duration": duration, "mime_type": mime_type })));
            }
            InjectMedia::Audio { file_name, mime_type, duration, bytes } => {
                let file = self.keep_file("music", &ext_of(file_name, "mp3"), bytes);
                // Telegram always names an audio file's type (and teloxide requires it).
                let mime_type = mime_type.clone().unwrap_or_else(|| "audio/mpeg".to_string());
                let extra = json!({ "duration": duration, "file_name": file_name, "mime_type": mime_type });
                fields.insert("audio".into(), with(file, extra));
            }
            InjectMedia::Photo { width, height, bytes } => {
                let scale = |side: u32| side * 90 / (*width).max(*height).max(1);
                let thumb = self.keep_file("photos", "jpg", bytes);
                let large = self.keep_file("photos", "jpg", bytes);
                let sizes = vec![
                    with(thumb, json!({ "width": scale(*width), "height": scale(*height) })),
                    with(large, json!({ "width": width, "height": height })),
                ];
                fields.insert("photo".into(), Value::Array(sizes));
            }
            InjectMedia::Sticker { emoji } => {
                let file = self.keep_file("stickers", "webp", b"RIFF\0\0\0\0WEBP");
                let extra = json!({ "type": "regular", "width": 512, "height": 512, "is_animated": false,
                    "is_video": false, "emoji": emoji });
                fields.insert("sticker".into(), with(file, extra));
            }
            InjectMedia::Other { field, value } => {
                fields.insert(field.clone(), value.clone());
            }
        }
        fields
    }

    /// `getFile`: the file's description with its `file_path`, as Telegram answers it.
    pub fn get_file(&self, file_id: &str) -> Result<Value, BotApiError> {
        let file = self.files.get(file_id).ok_or_else(|| BotApiError::bad_request("invalid file_id"))?;
        if file.bytes.len() > DOWNLOAD_MAX {
            return Err(BotApiError::bad_request("file is too big"));
        }
        Ok(json!({ "file_id": file.file_id, "file_unique_id": file.file_unique_id,
            "file_size": file.bytes.len(), "file_path": file.file_path }))
    }

    /// A file the stand-in holds, by its id, to send again.
    pub fn held_file(&self, file_id: &str) -> Option<SentDocument> {
        let file = self.files.get(file_id)?;
        let file_name = file.file_path.rsplit('/').next().unwrap_or("file").to_string();
        Some(SentDocument { file_name, mime_type: None, bytes: file.bytes.clone() })
    }

    /// The bytes at a `file_path` that `getFile` handed out.
    pub fn file_at(&self, file_path: &str) -> Option<Vec<u8>> {
        self.files.values().find(|f| f.file_path == file_path).map(|f| f.bytes.clone())
    }

    fn remember_user(&mut self, msg: &InjectMessage) -> User {
        let user = self.users.entry(msg.from_id).or_insert_with(|| User {
            id: msg.from_id,
            is_bot: false,
            first_name: format!("User {}", msg.from_id),
            last_name: None,
            username: None,
            language_code: None,
        });
        // Later injections may fill in or change a user's profile.
        if let Some(v) = &msg.first_name {
            user.first_name.clone_from(v);
        }
        for (field, value) in [
            (&mut user.last_name, &msg.last_name),
            (&mut user.username, &msg.username),
            (&mut user.language_code, &msg.language_code),
        ] {
            if value.is_some() {
                field.clone_from(value);
            }
        }
        user.clone()
    }

    /// The bot sends a (validated) text message. Like Telegram, only to chats it has heard from.
    pub fn send_message(&mut self, chat_id: i64, sent: SentFields, now: i64) -> Result<Message, BotApiError> {
        let state = self.chats.get_mut(&chat_id).ok_or_else(BotApiError::chat_not_found)?;
        state.last_message_id += 1;
        let message = Message {
            message_id: state.last_message_id,
            from: Some(self.bot.clone()),
            date: now,
            chat: state.chat.clone(),
            text: sent.rendered.clone(),
            edit_date: None,
            reply_markup: sent.reply_markup.clone(),
            caption: None,
            media: Default::default(),
        };
        let record = SentMessage {
            message_id: message.message_id,
            chat_id,
            date: now,
            text: sent.text,
            rendered: sent.rendered,
            parse_mode: sent.parse_mode,
            reply_markup: sent.reply_markup,
            edit_date: None,
            document: None,
        };
        self.sent.push(chat_id, record);
        Ok(message)
    }

    /// The bot sends a file (`sendDocument` with an upload), with an optional caption.
    pub fn send_document(
        &mut self,
        chat_id: i64,
        document: SentDocument,
        caption: Option<String>,
        now: i64,
    ) -> Result<Message, BotApiError> {
        if !self.chats.contains_key(&chat_id) {
            return Err(BotApiError::chat_not_found());
        }
        if document.bytes.is_empty() {
            return Err(BotApiError::bad_request("file must be non-empty"));
        }
        if document.bytes.len() > UPLOAD_MAX {
            return Err(BotApiError::RequestEntityTooLarge);
        }
        let ext = document.file_name.rsplit_once('.').map_or("dat", |(_, e)| e).to_ascii_lowercase();
        let mut described = self.keep_file("documents", &ext, &document.bytes);
        described.insert("file_name".into(), json!(document.file_name));
        if let Some(mime) = &document.mime_type {
            described.insert("mime_type".into(), json!(mime));
        }
        let state = self.chats.get_mut(&chat_id).ok_or_else(BotApiError::chat_not_found)?;
        state.last_message_id += 1;
        let mut media = serde_json::Map::new();
        media.insert("document".into(), Value::Object(described));
        let message = Message {
            message_id: state.last_message_id,
            from: Some(self.bot.clone()),
            date: now,
            chat: state.chat.clone(),
            text: String::new(),
            caption: caption.clone(),
            media,
            edit_date: None,
            reply_markup: None,
        };
        let caption = caption.unwrap_or_default();
        let record = SentMessage {
            message_id: message.message_id,
            chat_id,
            date: now,
            text: caption.clone(),
            rendered: caption,
            parse_mode: None,
            reply_markup: None,
            document: Some(document),
            edit_date: None,
        };
        self.sent.push(chat_id, record);
        Ok(message)
    }

    pub fn chat_action(&mut self, chat_id: i64, action: String, now: i64) -> Result<(), BotApiError> {
        if !self.chats.contains_key(&chat_id) {
            return Err(BotApiError::chat_not_found());
        }
        self.actions.push(chat_id, SentAction { chat_id, date: now, action });
        Ok(())
    }

    pub fn sent_to(&self, chat_id: i64) -> Vec<SentMessage> {
        self.sent.get(chat_id)
    }

    pub fn sent_count(&self, chat_id: i64) -> usize {
        self.sent.count(chat_id)
    }

    pub fn actions_in(&self, chat_id: i64) -> Vec<SentAction> {
        self.actions.get(chat_id)
    }

    pub fn action_count(&self, chat_id: i64) -> usize {
        self.actions.count(chat_id)
    }

    pub fn set_commands(&mut self, scope: Option<Value>, language_code: Option<String>, commands: Vec<BotCommand>) {
        let (key, scope, language_code) = command_key(scope, language_code);
        if commands.is_empty() {
            self.commands.remove(&key);
        } else {
            self.commands.insert(key, CommandSet { scope, language_code, commands });
        }
    }

    pub fn commands(&self, scope: Option<Value>, language_code: Option<String>) -> Vec<BotCommand> {
        let (key, ..) = command_key(scope, language_code);
        self.commands.get(&key).map(|s| s.commands.clone()).unwrap_or_default()
    }

    pub fn command_sets(&self) -> Vec<CommandSet> {
        self.commands.values().cloned().collect()
    }

    /// Start a `getUpdates` call; returns the ticket its polls must present.
    pub fn start_get_updates(&mut self, allowed_updates: Option<Vec<String>>) -> Result<u64, BotApiError> {
        if self.webhook.is_some() {
            return Err(BotApiError::webhook_active());
        }
        if let Some(allowed) = allowed_updates {
            self.allowed_updates = allowed;
        }
        self.get_updates_calls += 1;
        self.poll_generation += 1;
        Ok(self.poll_generation)
    }

    /// One look at the queue for the `getUpdates` call holding `ticket`.
    pub fn poll(&mut self, ticket: u64, offset: Option<i64>, limit: usize) -> Result<Vec<Update>, BotApiError> {
        if ticket != self.poll_generation {
            return Err(BotApiError::terminated_by_other_get_updates());
        }
        if self.webhook.is_some() {
            return Err(BotApiError::webhook_active());
        }
        Ok(self.queue.fetch(offset, limit))
    }

    pub fn poll_started(&mut self) {
        self.active_polls += 1;
    }

    pub fn poll_ended(&mut self) {
        self.active_polls = self.active_polls.saturating_sub(1);
    }

    /// `setWebhook`; returns whether anything changed.
    pub fn set_webhook(&mut self, url: String, secret_token: Option<String>, max_connections: u32) -> bool {
        let changed = self.webhook.as_ref().is_none_or(|w| w.url != url || w.secret_token != secret_token);
        if changed {
            self.webhook_generation += 1;
            self.webhook =
                Some(Webhook { url, secret_token, max_connections, last_error_date: None, last_error_message: None });
        }
        changed
    }

    /// `deleteWebhook`; returns whether there was one.
    pub fn delete_webhook(&mut self) -> bool {
        self.webhook_generation += 1;
        self.webhook.take().is_some()
    }

    pub fn drop_pending_updates(&mut self) {
        self.queue.clear();
    }

    pub fn set_allowed_updates(&mut self, allowed: Vec<String>) {
        self.allowed_updates = allowed;
    }

    pub fn webhook(&self) -> Option<&Webhook> {
        self.webhook.as_ref()
    }

    /// `getWebhookInfo`'s result.
    pub fn webhook_info(&self) -> Value {
        let mut info = json!({
            "url": self.webhook.as_ref().map_or("", |w| w.url.as_str()),
            "has_custom_certificate": false,
            "pending_update_count": self.queue.len(),
        });
        if let Some(w) = &self.webhook {
            info["max_connections"] = json!(w.max_connections);
            if !self.allowed_updates.is_empty() {
                info["allowed_updates"] = json!(self.allowed_updates);
            }
            if let (Some(date), Some(message)) = (w.last_error_date, &w.last_error_message) {
                info["last_error_date"] = json!(date);
                info["last_error_message"] = json!(message);
            }
        }
        info
    }

    /// The next update for the webhook, oldest first, one at a time.
    pub fn next_delivery(&self) -> Option<Delivery> {
        let webhook = self.webhook.as_ref()?;
        let update = self.queue.front()?;
        Some(Delivery {
            url: webhook.url.clone(),
            secret_token: webhook.secret_token.clone(),
            update_id: update.update_id,
            body: serde_json::to_vec(update).unwrap_or_default(),
            webhook_generation: self.webhook_generation,
        })
    }

    /// The receiver answered 2xx: the update is confirmed.
    pub fn delivered(&mut self, delivery: &Delivery) {
        self.webhook_deliveries += 1;
        self.queue.confirm_below(delivery.update_id + 1);
    }

    pub fn delivery_failed(&mut self, delivery: &Delivery, error: String, now: i64) {
        self.webhook_failures += 1;
        if let Some(w) = self.webhook.as_mut().filter(|_| self.webhook_generation == delivery.webhook_generation) {
            w.last_error_date = Some(now);
            w.last_error_message = Some(error);
        }
    }

    pub fn stats(&self) -> Stats {
        Stats {
            pending_updates: self.queue.len(),
            next_update_id: self.queue.next_id(),
            get_updates_calls: self.get_updates_calls,
            active_polls: self.active_polls,
            sent_messages: self.sent.total,
            chat_actions: self.actions.total,
            webhook_url: self.webhook.as_ref().map(|w| w.url.clone()),
            webhook_deliveries: self.webhook_deliveries,
            webhook_failures: self.webhook_failures,
            overflowed_updates: self.queue.overflowed(),
            filtered_updates: self.filtered_updates,
        }
    }
}

/// The fields of a sent message the caller has validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentFields {
    pub text: String,
    pub rendered: String,
    pub parse_mode: Option<String>,
    pub reply_markup: Option<Value>,
}

fn hex_of(n: u64) -> String {
    format!("{n:012x}")
}

/// Commands are kept per scope and language; the key is built from the scope's meaningful
/// fields so that key order in the client's JSON does not matter.
fn command_key(scope: Option<Value>, language_code: Option<String>) -> (String, Value, String) {
    let scope = scope.filter(|s| s.is_object()).unwrap_or_else(|| json!({"type": "default"}));
    let language_code = language_code.unwrap_or_default();
    let field = |name: &str| scope.get(name).map(Value::to_string).unwrap_or_default();
    let key = format!("{}|{}|{}|{language_code}", field("type"), field("chat_id"), field("user_id"));
    (key, scope, language_code)
}

/// A text message the bot sent, as Telegram shows it in an update or an answer.
fn bot_text_message(sent: &SentMessage, bot: User, chat: Chat) -> Message {
    Message {
        message_id: sent.message_id,
        from: Some(bot),
        date: sent.date,
        chat,
        text: sent.rendered.clone(),
        caption: None,
        media: Default::default(),
        edit_date: sent.edit_date,
        reply_markup: sent.reply_markup.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        let bot = User {
            id: 1,
            is_bot: true,
            first_name: "Bot".into(),
            last_name: None,
            username: Some("bot".into()),
            language_code: None,
        };
        Store::new(bot, 1, Limits { max_sent_messages: 3, ..Limits::default() })
    }

    fn text(t: &str) -> SentFields {
        SentFields { text: t.into(), rendered: t.into(), parse_mode: None, reply_markup: None }
    }

    #[test]
    fn injection_shapes_private_and_group_updates() {
        let mut s = store();
        let a = s.inject(&InjectMessage::private(7, "hi").with_username("ann"), 100).unwrap();
        assert_eq!((a.update_id, a.message_id, a.chat_id, a.queued), (1, 1, 7, true));
        let g = s.inject(&InjectMessage::group(-5, 7, "yo"), 101).unwrap();
        assert_eq!((g.update_id, g.message_id, g.chat_id), (2, 1, -5));
        let ticket = s.start_get_updates(None).unwrap();
        let updates = s.poll(ticket, None, 100).unwrap();
        let value = serde_json::to_value(&updates).unwrap();
        assert_eq!(
            value[0]["message"]["chat"],
            json!({"id": 7, "type": "private", "first_name": "User 7", "username": "ann"})
        );
        assert_eq!(
            value[0]["message"]["from"],
            json!({"id": 7, "is_bot": false, "first_name": "User 7", "username": "ann"})
        );
        assert_eq!(value[1]["message"]["chat"], json!({"id": -5, "type": "group", "title": "Group -5"}));
        // The profile given earlier sticks to the user.
        assert_eq!(value[1]["message"]["from"]["username"], "ann");
    }

    #[test]
    fn media_are_shaped_as_telegram_sends_them_and_their_files_kept() {
        let mut s = store();
        s.inject(&InjectMessage::document(7, "a.pdf", "application/pdf", b"%PDF-1.4".to_vec()).with_caption("read"), 0)
            .unwrap();
        let photo = InjectMedia::Photo { width: 1280, height: 720, bytes: b"jpeg".to_vec() };
        s.inject(&InjectMessage::media(7, photo, ""), 0).unwrap();
        s.inject(&InjectMessage::media(7, InjectMedia::Sticker { emoji: Some("🙂".into()) }, ""), 0).unwrap();
        let ticket = s.start_get_updates(None).unwrap();
        let updates = serde_json::to_value(s.poll(ticket, None, 100).unwrap()).unwrap();
        let document = &updates[0]["message"];
        assert!(document.get("text").is_none(), "{document}");
        assert_eq!(document["caption"], "read");
        assert_eq!(document["document"]["file_name"], "a.pdf");
        assert_eq!(document["document"]["mime_type"], "application/pdf");
        assert_eq!(document["document"]["file_size"], 8);
        let file_id = document["document"]["file_id"].as_str().unwrap();
        let file = s.get_file(file_id).unwrap();
        assert_eq!(file["file_path"], "documents/file_1.pdf");
        assert_eq!(s.file_at("documents/file_1.pdf").unwrap(), b"%PDF-1.4");
        assert_eq!(s.get_file("nope"), Err(BotApiError::bad_request("invalid file_id")));
        let sizes = updates[1]["message"]["photo"].as_array().unwrap();
        assert_eq!((sizes[0]["width"].clone(), sizes[1]["width"].clone()), (json!(90), json!(1280)));
        assert_eq!(updates[2]["message"]["sticker"]["emoji"], "🙂");
        // teloxide, the gateway's client, reads them all (from text, as it reads a response).
        for update in updates.as_array().unwrap() {
            let parsed: teloxide::types::Update = serde_json::from_str(&update.to_string()).unwrap();
            assert!(matches!(parsed.kind, teloxide::types::UpdateKind::Message(_)), "{update}");
        }
    }

    #[test]
    fn injection_rejects_inconsistent_chats() {
        let mut s = store();
        let mut m = InjectMessage::private(7, "x");
        m.chat_id = Some(8);
        assert_eq!(s.inject(&m, 0), Err(InjectError::PrivateChatMismatch));
        assert_eq!(s.inject(&InjectMessage::group(5, 7, "x"), 0), Err(InjectError::BadGroupId));
        assert_eq!(s.inject(&InjectMessage::private(0, "x"), 0), Err(InjectError::BadUserId));
    }

    #[test]
    fn message_ids_are_shared_by_both_directions_of_a_chat() {
        let mut s = store();
        s.inject(&InjectMessage::private(7, "hi"), 0).unwrap();
        assert_eq!(s.send_message(7, text("a"), 0).unwrap().message_id, 2);
        assert_eq!(s.inject(&InjectMessage::private(7, "again"), 0).unwrap().message_id, 3);
        assert_eq!(s.send_message(8, text("b"), 0), Err(BotApiError::chat_not_found()));
    }

    #[test]
    fn sent_messages_are_capped_globally_oldest_first() {
        let mut s = store();
        s.inject(&InjectMessage::private(7, "hi"), 0).unwrap();
        s.inject(&InjectMessage::private(8, "hi"), 0).unwrap();
        s.send_message(7, text("a"), 0).unwrap();
        s.send_message(8, text("b"), 0).unwrap();
        s.send_message(7, text("c"), 0).unwrap();
        s.send_message(7, text("d"), 0).unwrap();
        let texts = |s: &Store, chat| s.sent_to(chat).into_iter().map(|m| m.text).collect::<Vec<_>>();
        assert_eq!(texts(&s, 7), ["c", "d"]);
        assert_eq!(texts(&s, 8), ["b"]);
        assert_eq!(s.stats().sent_messages, 4);
    }

    #[test]
    fn a_newer_get_updates_supersedes_and_a_webhook_blocks() {
        let mut s = store();
        let first = s.start_get_updates(None).unwrap();
        let second = s.start_get_updates(None).unwrap();
        assert_eq!(s.poll(first, None, 1), Err(BotApiError::terminated_by_other_get_updates()));
        assert_eq!(s.poll(second, None, 1), Ok(vec![]));
        s.set_webhook("http://127.0.0.1:1/".into(), None, 40);
        assert_eq!(s.poll(second, None, 1), Err(BotApiError::webhook_active()));
        assert_eq!(s.start_get_updates(None), Err(BotApiError::webhook_active()));
        assert_eq!(s.stats().get_updates_calls, 2);
    }

    #[test]
    fn allowed_updates_without_messages_filters_them() {
        let mut s = store();
        s.start_get_updates(Some(vec!["callback_query".into()])).unwrap();
        let injected = s.inject(&InjectMessage::private(7, "hi"), 0).unwrap();
        assert!(!injected.queued);
        assert_eq!(s.stats().pending_updates, 0);
        s.start_get_updates(Some(vec![])).unwrap();
        assert!(s.inject(&InjectMessage::private(7, "hi"), 0).unwrap().queued);
    }

    #[test]
    fn webhook_delivery_confirms_in_order() {
        let mut s = store();
        assert!(s.next_delivery().is_none());
        s.inject(&InjectMessage::private(7, "a"), 0).unwrap();
        s.inject(&InjectMessage::private(7, "b"), 0).unwrap();
        s.set_webhook("http://127.0.0.1:1/h".into(), Some("sec".into()), 40);
        let d = s.next_delivery().unwrap();
        assert_eq!((d.update_id, d.secret_token.as_deref()), (1, Some("sec")));
        s.delivery_failed(&d, "Connection refused".into(), 5);
        assert_eq!(s.webhook_info()["last_error_message"], "Connection refused");
        assert_eq!(s.next_delivery().unwrap().update_id, 1);
        s.delivered(&d);
        assert_eq!(s.next_delivery().unwrap().update_id, 2);
        assert_eq!(s.webhook_info()["pending_update_count"], 1);
        assert!(s.delete_webhook());
        assert!(s.next_delivery().is_none());
        assert_eq!(s.webhook_info()["url"], "");
    }

    #[test]
    fn commands_are_per_scope_and_language() {
        let mut s = store();
        let cmds = vec![BotCommand { command: "start".into(), description: "Start".into() }];
        s.set_commands(None, None, cmds.clone());
        assert_eq!(s.commands(Some(json!({"type": "default"})), Some(String::new())), cmds);
        assert_eq!(s.commands(None, Some("de".into())), vec![]);
        s.set_commands(Some(json!({"type": "chat", "chat_id": 7})), None, vec![]);
        assert_eq!(s.command_sets().len(), 1);
        s.set_commands(None, None, vec![]);
        assert!(s.command_sets().is_empty());
    }

    #[test]
    fn a_press_on_a_sent_button_is_an_update_answered_once_and_the_message_edited() {
        let mut s = store();
        s.inject(&InjectMessage::private(7, "hi"), 0).unwrap();
        let keyboard = json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "y"}]]});
        let sent = s.send_message(7, SentFields { reply_markup: Some(keyboard.clone()), ..text("Sure?") }, 1).unwrap();
        let press = InjectCallback { from_id: 7, chat_id: 7, message_id: sent.message_id, data: "y".into() };
        let missing = InjectCallback { message_id: 99, ..press.clone() };
        assert!(matches!(s.inject_callback(&missing), Err(InjectError::NoSuchMessage { .. })));
        let injected = s.inject_callback(&press).unwrap();
        let ticket = s.start_get_updates(None).unwrap();
        let updates = serde_json::to_value(s.poll(ticket, None, 100).unwrap()).unwrap();
        let query = &updates[1]["callback_query"];
        assert_eq!(query["data"], "y");
        assert_eq!(query["from"]["id"], 7);
        assert_eq!(query["message"]["reply_markup"], keyboard);
        assert_eq!(query["id"], injected.callback_query_id.as_str());
        assert!(updates[1].get("message").is_none());
        s.answer_callback(&injected.callback_query_id, Some("Done".into()), false).unwrap();
        assert_eq!(
            s.answer_callback(&injected.callback_query_id, None, false),
            Err(BotApiError::query_too_old()),
            "answered twice"
        );
        assert_eq!(s.callback_answers()[0].text.as_deref(), Some("Done"));
        let edited = s.edit_message_text(7, sent.message_id, text("Done."), 3).unwrap();
        assert_eq!((edited.edit_date, edited.reply_markup), (Some(3), None));
        assert_eq!(s.sent_to(7)[0].rendered, "Done.");
        assert!(s.edit_message_text(7, sent.message_id, text("Done."), 4).is_err(), "not modified");
        assert!(s.edit_message_text(7, 99, text("x"), 4).is_err());
        s.start_get_updates(Some(vec!["message".into()])).unwrap();
        assert!(!s.inject_callback(&press).unwrap().queued, "callback queries not asked for");
    }

    #[test]
    fn reset_keeps_update_ids_increasing() {
        let mut s = store();
        s.inject(&InjectMessage::private(7, "a"), 0).unwrap();
        s.reset();
        assert_eq!(s.stats().pending_updates, 0);
        assert_eq!(s.inject(&InjectMessage::private(7, "b"), 0).unwrap().update_id, 2);
    }
}
