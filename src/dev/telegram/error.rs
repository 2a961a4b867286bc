//! Bot API errors, worded exactly as Telegram words them: clients (teloxide among them) map the
//! `description` text to typed errors, so the wording is part of the protocol.

use axum::http::StatusCode;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BotApiError {
    /// 400; the payload is the text after "Bad Request: ".
    #[error("Bad Request: {0}")]
    BadRequest(String),
    /// 401: the token does not match the bot's.
    #[error("Unauthorized")]
    Unauthorized,
    /// 404: no such method (or no `/bot<token>/` prefix).
    #[error("Not Found")]
    NotFound,
    /// 409; the payload is the text after "Conflict: ".
    #[error("Conflict: {0}")]
    Conflict(String),
    /// 413: an upload over Telegram's limit.
    #[error("Request Entity Too Large")]
    RequestEntityTooLarge,
}

impl BotApiError {
    pub fn bad_request(text: impl Into<String>) -> Self {
        Self::BadRequest(text.into())
    }

    pub fn error_code(&self) -> u16 {
        self.status().as_u16()
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// `getUpdates` while a webhook is set (Telegram's full sentence).
    pub fn webhook_active() -> Self {
        Self::Conflict(
            "can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first".into(),
        )
    }

    /// Sent to the older of two overlapping `getUpdates` calls.
    pub fn terminated_by_other_get_updates() -> Self {
        Self::Conflict("terminated by other getUpdates request; make sure that only one bot instance is running".into())
    }

    /// An unknown or already answered callback query id.
    pub fn query_too_old() -> Self {
        Self::bad_request("query is too old and response timeout expired or query ID is invalid")
    }

    pub fn chat_not_found() -> Self {
        Self::bad_request("chat not found")
    }

    pub fn required(param: &str) -> Self {
        Self::BadRequest(format!("parameter \"{param}\" is required"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_match_telegram() {
        assert_eq!(BotApiError::bad_request("message is too long").to_string(), "Bad Request: message is too long");
        assert_eq!(BotApiError::Unauthorized.to_string(), "Unauthorized");
        assert_eq!(BotApiError::NotFound.error_code(), 404);
        assert!(
            BotApiError::webhook_active()
                .to_string()
                .starts_with("Conflict: can't use getUpdates method while webhook is active")
        );
        assert_eq!(BotApiError::terminated_by_other_get_updates().error_code(), 409);
    }
}
