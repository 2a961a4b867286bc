//! The turn API's wire types (what the gateway sends and reads).
//!
//! `POST /v1/turn` `{"update_id": 7, "chat_id": 42, "from": 42, "text": "hi"}` (`from` may also
//! be Telegram's user object `{"id": 42, ...}`; `"images": ["photo.jpg"]` names photos in
//! `files/` the model gets as image input) -> 200 `{"reply": "...", "status":
//! "answered" | "duplicate" | "already_delivered" | "model_unavailable", "session_id":
//! "000001"}`. `POST /v1/turn/{update_id}/delivered` -> 200 `{"update_id": 7}` (404 if the
//! update is unknown): the reply reached the user, never send it again. `POST /v1/reminder`
//! [`ReminderNote`]: a delivered reminder, noted in the conversation. `PUT /v1/files/{name}`
//! (the bytes as the body, at most [`UPLOAD_MAX`]) -> 200 [`FileSaved`]: a file the person
//! sent, saved in `files/` under a safe, unused name (the same name again for the same bytes);
//! 403 read-only workspace, 507 workspace full. `GET /v1/status` ->
//! 200 [`StatusResponse`], the one type the agent writes and the gateway reads. Errors are
//! `{"error": "..."}` with 401 (token), 400/413/415/422 (request), 503 (history could not be
//! saved: retry later).

use serde::{Deserialize, Serialize};

pub use super::notes::Note;

use crate::profile::ResolvedProfile;

/// Telegram allows 4096 characters in a message; this leaves room for any encoding of them.
pub const TEXT_MAX: usize = 16 * 1024;
/// Request bodies on the API, at most.
pub const BODY_MAX: usize = 64 * 1024;
/// A file sent by the person, at most: what Telegram lets a bot download (20 MB).
pub const UPLOAD_MAX: usize = 20 * 1000 * 1000;
/// A file handed back to the person (`send_file`), at most; Telegram takes 50 MB from bots.
pub const SEND_MAX: usize = 20 * 1000 * 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRequest {
    pub update_id: i64,
    pub chat_id: i64,
    pub from: Sender,
    pub text: String,
    /// Photos sent with the message, by their names in `files/` (where the gateway saved them
    /// with `PUT /v1/files/{name}`): the model gets them as image input.
    #[serde(default)]
    pub images: Vec<String>,
}

/// The sender's Telegram user id, or Telegram's user object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Sender {
    Id(i64),
    User { id: i64 },
}

impl Sender {
    pub fn id(&self) -> i64 {
        match self {
            Sender::Id(id) | Sender::User { id } => *id,
        }
    }
}

impl TurnRequest {
    pub fn validate(&self) -> Result<(), String> {
        if self.text.trim().is_empty() {
            return Err("text is empty".into());
        }
        if self.text.len() > TEXT_MAX {
            return Err(format!("text is longer than {TEXT_MAX} bytes"));
        }
        if self.images.len() > super::images::IMAGES_MAX {
            return Err(format!("at most {} images per message", super::images::IMAGES_MAX));
        }
        if let Some(bad) = self.images.iter().find(|n| !super::images::valid_name(n)) {
            return Err(format!("{bad:?} is not the name of an image in files/"));
        }
        Ok(())
    }
}

/// `POST /v1/reminder` `{"key", "text"}`: a reminder the gateway delivered, to be noted in the
/// conversation (once per key) -> 200 `{"noted": bool}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderNote {
    pub key: String,
    pub text: String,
}

impl ReminderNote {
    pub fn validate(&self) -> Result<(), String> {
        if self.key.is_empty() || self.key.len() > 128 {
            return Err("key must be 1 to 128 bytes".into());
        }
        if self.text.trim().is_empty() || self.text.len() > TEXT_MAX {
            return Err(format!("text must be 1 to {TEXT_MAX} bytes"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// The model answered.
    Answered,
    /// This update was answered before; the stored reply, without asking the model again.
    Duplicate,
    /// This update was answered before and the gateway confirmed the reply reached the user
    /// (`POST /v1/turn/{update_id}/delivered`): `reply` is empty, nothing is to be sent.
    AlreadyDelivered,
    /// The model could not be reached; `reply` says so, the message is kept in the history.
    ModelUnavailable,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnResponse {
    pub reply: String,
    pub status: TurnStatus,
    pub session_id: String,
    /// Files in `files/` the model handed back with `send_file`, to send after the reply
    /// (the gateway reads them with `GET /v1/files/{path}`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetResponse {
    pub session_id: String,
    pub previous_session_id: String,
}

/// `GET /v1/status`: the agent's report of itself, which the gateway's `/status` shows. Read
/// leniently, since an agent runs the image its pod was made with and may be older than the
/// gateway: unknown fields are ignored, missing ones take their defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StatusResponse {
    pub user: String,
    pub session_id: String,
    /// User messages in the current session.
    pub turns: u64,
    pub workspace_bytes: u64,
    /// False on a read-only workspace: history since start is kept in memory only.
    pub persistent: bool,
    pub profile: ReportedProfile,
}

impl Default for StatusResponse {
    fn default() -> Self {
        Self {
            user: String::new(),
            session_id: String::new(),
            turns: 0,
            workspace_bytes: 0,
            persistent: true,
            profile: ReportedProfile::Named(None),
        }
    }
}

/// The profile in a status report: all of it from an agent of this version, else as much as
/// can be read of it (its name, when there is one).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReportedProfile {
    Resolved(Box<ResolvedProfile>),
    Named(Option<String>),
}

impl ReportedProfile {
    /// The profile's name as in the spec (`family`), if the report has one.
    pub fn name(&self) -> Option<&str> {
        match self {
            ReportedProfile::Resolved(profile) => Some(profile.profile.as_str()),
            ReportedProfile::Named(name) => name.as_deref(),
        }
    }
}

impl<'de> Deserialize<'de> for ReportedProfile {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        let name = value.get("profile").and_then(serde_json::Value::as_str).map(str::to_string);
        Ok(match serde_json::from_value(value) {
            Ok(resolved) => ReportedProfile::Resolved(Box::new(resolved)),
            Err(_) => ReportedProfile::Named(name),
        })
    }
}

/// `GET /v1/memory`: the notes in MEMORY.md, oldest first, and the file's size.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemoryResponse {
    pub notes: Vec<Note>,
    pub bytes: u64,
    /// Past this size the oldest notes are summarised into one.
    pub fold_at_bytes: u64,
}

/// `DELETE /v1/memory/{number}`: the note that was removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetResponse {
    pub forgotten: Note,
}

/// `PUT /v1/files/{name}`: where the file was saved in `files/`, and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSaved {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::Profile;

    #[test]
    fn sender_is_an_id_or_a_user_object() {
        let a: TurnRequest = serde_json::from_str(r#"{"update_id":1,"chat_id":2,"from":3,"text":"hi"}"#).unwrap();
        let b: TurnRequest =
            serde_json::from_str(r#"{"update_id":1,"chat_id":2,"from":{"id":3,"first_name":"A"},"text":"hi"}"#)
                .unwrap();
        assert_eq!((a.from.id(), b.from.id()), (3, 3));
        assert!(a.validate().is_ok());
        assert!(serde_json::from_str::<TurnRequest>(r#"{"update_id":1,"chat_id":2,"text":"hi"}"#).is_err());
    }

    #[test]
    fn text_must_be_there_and_bounded() {
        let mut r = TurnRequest { update_id: 1, chat_id: 1, from: Sender::Id(1), text: "  ".into(), images: vec![] };
        assert!(r.validate().is_err());
        r.text = "x".repeat(TEXT_MAX + 1);
        assert!(r.validate().is_err());
    }

    fn report() -> StatusResponse {
        StatusResponse {
            user: "alice".into(),
            session_id: "000002".into(),
            turns: 3,
            workspace_bytes: 2048,
            persistent: false,
            profile: ReportedProfile::Resolved(Box::new(crate::agent::config::tests::profile(Profile::Family))),
        }
    }

    #[test]
    fn a_status_report_reads_back_as_sent() {
        let sent = report();
        let wire = serde_json::to_value(&sent).unwrap();
        assert_eq!(wire["profile"]["profile"], "family", "the profile is sent whole, as before");
        assert_eq!(
            wire["profile"]["safeBins"],
            serde_json::to_value(&crate::profile::preset(Profile::Family).safe_bins).unwrap()
        );
        let read: StatusResponse = serde_json::from_value(wire.clone()).unwrap();
        assert!(matches!(read.profile, ReportedProfile::Resolved(_)), "{read:?}");
        // The profile's operator- and broker-only settings are never on the wire.
        assert_eq!(serde_json::to_value(&read).unwrap(), wire);
        assert_eq!((read.user, read.turns, read.persistent), (sent.user, sent.turns, sent.persistent));
    }

    #[test]
    fn an_older_agents_report_is_read_with_defaults() {
        // Fewer fields, a profile this version cannot read in full, and one it does not know.
        let older = r#"{"session_id":"000001","turns":2,"profile":{"profile":"family","cpu":"1"},"uptime":5}"#;
        let read: StatusResponse = serde_json::from_str(older).unwrap();
        assert_eq!((read.session_id.as_str(), read.turns, read.workspace_bytes), ("000001", 2, 0));
        assert!(read.persistent && read.user.is_empty());
        assert_eq!(read.profile.name(), Some("family"));

        let bare: StatusResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(bare, StatusResponse::default());
        assert_eq!(bare.profile.name(), None);
        let odd: StatusResponse = serde_json::from_str(r#"{"profile":"family","turns":1}"#).unwrap();
        assert_eq!((odd.profile.name(), odd.turns), (None, 1));
    }

    #[test]
    fn status_is_snake_case() {
        assert_eq!(serde_json::to_string(&TurnStatus::ModelUnavailable).unwrap(), "\"model_unavailable\"");
    }
}
