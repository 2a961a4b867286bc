//! Bot API objects, shaped as Telegram sends them (only the fields the stand-in produces).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: i64,
    pub is_bot: bool,
    pub first_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_code: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ChatType {
    #[default]
    Private,
    Group,
    Supergroup,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chat {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: ChatType,
    /// Groups only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Private chats only (the other user's names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// A text message, incoming (in an [`Update`]) or sent by the bot (a method's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<User>,
    /// Unix time, seconds.
    pub date: i64,
    pub chat: Chat,
    pub text: String,
    /// Unix time of the last edit (`editMessageText`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_date: Option<i64>,
    /// The inline keyboard attached to a message the bot sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<serde_json::Value>,
}

/// A press of an inline keyboard's callback button, as Telegram sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackQuery {
    pub id: String,
    pub from: User,
    /// The bot's message that carried the button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    pub chat_instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

/// An update: a `message` or a `callback_query` (exactly one is set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_query: Option<CallbackQuery>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BotCommand {
    pub command: String,
    pub description: String,
}

/// What the bot sent to a chat, as the control API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    pub date: i64,
    /// Exactly as the bot sent it, markup included.
    pub text: String,
    /// What the user sees: the text after entity parsing (and Telegram's trimming).
    pub rendered: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<serde_json::Value>,
    /// Unix time of the last edit, if the bot edited it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_date: Option<i64>,
}

/// A user presses a callback button, as the control API injects it. Telegram only sends
/// presses of buttons on the bot's own messages, so `message_id` must be one the bot sent to
/// `chat_id`; the data is whatever the test says (a forged press included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectCallback {
    pub from_id: i64,
    pub chat_id: i64,
    pub message_id: i64,
    pub data: String,
}

/// How the bot answered a callback query (`answerCallbackQuery`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallbackAnswer {
    pub callback_query_id: String,
    pub from_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    pub show_alert: bool,
}

/// The result of injecting a press.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectedCallback {
    pub update_id: i64,
    pub callback_query_id: String,
    /// False when the bot's `allowed_updates` excludes callback queries.
    pub queued: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentAction {
    pub chat_id: i64,
    pub date: i64,
    pub action: String,
}

/// A message typed by a user, as the control API injects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectMessage {
    pub from_id: i64,
    pub text: String,
    /// Defaults to `from_id` (the private chat with that user).
    #[serde(default)]
    pub chat_id: Option<i64>,
    #[serde(default)]
    pub chat_type: ChatType,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub language_code: Option<String>,
    /// Group title (groups only).
    #[serde(default)]
    pub title: Option<String>,
}

impl InjectMessage {
    /// A private message from `from_id`.
    pub fn private(from_id: i64, text: impl Into<String>) -> Self {
        Self {
            from_id,
            text: text.into(),
            chat_id: None,
            chat_type: ChatType::Private,
            first_name: None,
            last_name: None,
            username: None,
            language_code: None,
            title: None,
        }
    }

    /// A message from `from_id` in group `chat_id` (negative, as Telegram's group ids are).
    pub fn group(chat_id: i64, from_id: i64, text: impl Into<String>) -> Self {
        Self { chat_id: Some(chat_id), chat_type: ChatType::Group, ..Self::private(from_id, text) }
    }

    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    pub fn with_first_name(mut self, first_name: impl Into<String>) -> Self {
        self.first_name = Some(first_name.into());
        self
    }
}

/// The result of an injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Injected {
    pub update_id: i64,
    pub message_id: i64,
    pub chat_id: i64,
    /// False when the bot's `allowed_updates` excludes messages: Telegram then never stores it.
    pub queued: bool,
}
