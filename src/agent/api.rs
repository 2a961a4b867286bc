//! The turn API's wire types (what the gateway sends and reads).
//!
//! `POST /v1/turn` `{"update_id": 7, "chat_id": 42, "from": 42, "text": "hi"}` (`from` may also
//! be Telegram's user object `{"id": 42, ...}`) -> 200 `{"reply": "...", "status":
//! "answered" | "duplicate" | "already_delivered" | "model_unavailable", "session_id":
//! "000001"}`. `POST /v1/turn/{update_id}/delivered` -> 200 `{"update_id": 7}` (404 if the
//! update is unknown): the reply reached the user, never send it again. Errors are
//! `{"error": "..."}` with 401 (token), 400/413/415/422 (request), 503 (history could not be
//! saved: retry later).

use serde::{Deserialize, Serialize};

use crate::profile::ResolvedProfile;

/// Telegram allows 4096 characters in a message; this leaves room for any encoding of them.
pub const TEXT_MAX: usize = 16 * 1024;
/// Request bodies on the API, at most.
pub const BODY_MAX: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TurnRequest {
    pub update_id: i64,
    pub chat_id: i64,
    pub from: Sender,
    pub text: String,
}

/// The sender's Telegram user id, or Telegram's user object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetResponse {
    pub session_id: String,
    pub previous_session_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusResponse {
    pub user: String,
    pub session_id: String,
    /// User messages in the current session.
    pub turns: u64,
    pub workspace_bytes: u64,
    /// False on a read-only workspace: history since start is kept in memory only.
    pub persistent: bool,
    pub profile: ResolvedProfile,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut r = TurnRequest { update_id: 1, chat_id: 1, from: Sender::Id(1), text: "  ".into() };
        assert!(r.validate().is_err());
        r.text = "x".repeat(TEXT_MAX + 1);
        assert!(r.validate().is_err());
    }

    #[test]
    fn status_is_snake_case() {
        assert_eq!(serde_json::to_string(&TurnStatus::ModelUnavailable).unwrap(), "\"model_unavailable\"");
    }
}
