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

/// A message, incoming (in an [`Update`]) or sent by the bot (a method's result): text, or
/// media with an optional caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message_id: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<User>,
    /// Unix time, seconds.
    pub date: i64,
    pub chat: Chat,
    /// Text messages only (Telegram omits the field on media messages).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub text: String,
    /// Unix time of the last edit (`editMessageText`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edit_date: Option<i64>,
    /// The inline keyboard attached to a message the bot sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_markup: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    /// The media field(s) as Telegram names them: `document`, `voice`, `audio`, `photo` (an
    /// array of sizes), `sticker`, `location`...
    #[serde(flatten, default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub media: serde_json::Map<String, serde_json::Value>,
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

/// A file the stand-in holds for `getFile` and the download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    pub file_id: String,
    pub file_unique_id: String,
    /// Where it is downloaded from: `/file/bot<token>/<file_path>`.
    pub file_path: String,
    pub bytes: Vec<u8>,
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
    /// A file the bot sent (`sendDocument`); `text` and `rendered` are then its caption.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<SentDocument>,
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

/// A file the bot sent, as it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentDocument {
    pub file_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentAction {
    pub chat_id: i64,
    pub date: i64,
    pub action: String,
}

/// What a user sends besides text. Files carry their bytes, which the bot fetches with
/// `getFile` and a download, as from Telegram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InjectMedia {
    Document {
        #[serde(default)]
        file_name: Option<String>,
        #[serde(default)]
        mime_type: Option<String>,
        bytes: Vec<u8>,
    },
    Voice {
        #[serde(default)]
        mime_type: Option<String>,
        duration: u32,
        bytes: Vec<u8>,
    },
    Audio {
        #[serde(default)]
        file_name: Option<String>,
        #[serde(default)]
        mime_type: Option<String>,
        duration: u32,
        bytes: Vec<u8>,
    },
    /// Telegram sends several sizes; the stand-in sends a thumbnail and this, the largest
    /// (the thumbnail holds the same bytes: nothing is resized).
    Photo { width: u32, height: u32, bytes: Vec<u8> },
    Sticker {
        #[serde(default)]
        emoji: Option<String>,
    },
    /// Any other message field, given as Telegram sends it (`location`, `contact`, `poll`...).
    Other { field: String, value: serde_json::Value },
}

/// A message typed by a user, as the control API injects it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InjectMessage {
    pub from_id: i64,
    /// The text, or with `media` its caption (none when empty).
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<InjectMedia>,
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
            media: None,
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

    /// `media` from `from_id` in their private chat, with `caption` (empty: none).
    pub fn media(from_id: i64, media: InjectMedia, caption: impl Into<String>) -> Self {
        Self { media: Some(media), ..Self::private(from_id, caption) }
    }

    /// A document from `from_id`, as a file named `file_name` holding `bytes`.
    pub fn document(from_id: i64, file_name: &str, mime_type: &str, bytes: impl Into<Vec<u8>>) -> Self {
        let media = InjectMedia::Document {
            file_name: Some(file_name.to_string()),
            mime_type: Some(mime_type.to_string()),
            bytes: bytes.into(),
        };
        Self::media(from_id, media, "")
    }

    pub fn with_caption(mut self, caption: impl Into<String>) -> Self {
        self.text = caption.into();
        self
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
