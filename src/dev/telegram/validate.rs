//! Telegram's argument rules for the methods the stand-in serves, as pure functions: the point
//! of the stand-in is to refuse what Telegram refuses, with the same words.

use axum::http::Uri;

use super::error::BotApiError;
use super::markup::{self, ParseMode};
use super::types::BotCommand;

/// Longest message text, in characters after entity parsing.
pub const MAX_TEXT_CHARS: usize = 4096;
pub const MAX_COMMANDS: usize = 100;
pub const MAX_COMMAND_CHARS: usize = 32;
pub const MAX_COMMAND_DESCRIPTION_CHARS: usize = 256;
pub const MAX_SECRET_TOKEN_CHARS: usize = 256;

/// `sendChatAction` actions (the deprecated `upload_audio`/`record_audio` spellings included).
pub const CHAT_ACTIONS: &[&str] = &[
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "record_audio",
    "upload_audio",
    "upload_document",
    "choose_sticker",
    "find_location",
    "record_video_note",
    "upload_video_note",
];

/// Check a message text and return what the user will see.
pub fn message_text(text: Option<&str>, parse_mode: Option<&str>) -> Result<String, BotApiError> {
    let mode = ParseMode::from_param(parse_mode.unwrap_or("")).map_err(|e| BotApiError::bad_request(e.to_string()))?;
    let text = text.unwrap_or("");
    let rendered =
        markup::render(text, mode).map_err(|e| BotApiError::BadRequest(format!("can't parse entities: {e}")))?;
    // Telegram trims surrounding whitespace before both checks.
    let rendered = rendered.trim();
    if rendered.is_empty() {
        return Err(BotApiError::bad_request("message text is empty"));
    }
    if rendered.chars().count() > MAX_TEXT_CHARS {
        return Err(BotApiError::bad_request("message is too long"));
    }
    Ok(rendered.to_owned())
}

/// Longest `answerCallbackQuery` text.
pub const MAX_CALLBACK_ANSWER_CHARS: usize = 200;
/// Callback data of a button: 1-64 bytes.
pub const MAX_CALLBACK_DATA_BYTES: usize = 64;

/// A `reply_markup` of `sendMessage`: an inline keyboard is checked; the other keyboards
/// (reply keyboards, removal, force reply) are taken as they are.
pub fn reply_markup(markup: Option<&serde_json::Value>) -> Result<(), BotApiError> {
    match markup {
        Some(m) if m.get("inline_keyboard").is_some() => inline_keyboard(Some(m)),
        Some(m) if !m.is_object() => Err(BotApiError::bad_request("can't parse reply keyboard markup JSON object")),
        _ => Ok(()),
    }
}

/// An `InlineKeyboardMarkup`: rows of buttons, each with a text and one action; callback
/// data of 1-64 bytes. Telegram's words for what it refuses.
pub fn inline_keyboard(markup: Option<&serde_json::Value>) -> Result<(), BotApiError> {
    let Some(markup) = markup else { return Ok(()) };
    let rows = markup
        .get("inline_keyboard")
        .and_then(|k| k.as_array())
        .ok_or_else(|| BotApiError::bad_request("can't parse inline keyboard markup JSON object"))?;
    for row in rows {
        let buttons =
            row.as_array().ok_or_else(|| BotApiError::bad_request("can't parse inline keyboard button row"))?;
        for button in buttons {
            if button.get("text").and_then(|t| t.as_str()).is_none_or(str::is_empty) {
                return Err(BotApiError::bad_request(
                    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
                ));
            }
            if let Some(data) = button.get("callback_data") {
                let data = data.as_str().unwrap_or("");
                if data.is_empty() || data.len() > MAX_CALLBACK_DATA_BYTES {
                    return Err(BotApiError::bad_request("BUTTON_DATA_INVALID"));
                }
            } else if button.get("url").is_none() {
                return Err(BotApiError::bad_request(
                    "can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
                ));
            }
        }
    }
    Ok(())
}

pub fn callback_answer_text(text: Option<&str>) -> Result<(), BotApiError> {
    match text {
        Some(t) if t.chars().count() > MAX_CALLBACK_ANSWER_CHARS => Err(BotApiError::bad_request("MESSAGE_TOO_LONG")),
        _ => Ok(()),
    }
}

pub fn chat_action(action: Option<&str>) -> Result<String, BotApiError> {
    let action = action.filter(|a| !a.is_empty()).ok_or_else(|| BotApiError::required("action"))?;
    let action = action.to_ascii_lowercase();
    if CHAT_ACTIONS.contains(&action.as_str()) {
        Ok(action)
    } else {
        Err(BotApiError::bad_request("wrong parameter action in request"))
    }
}

pub fn bot_commands(commands: &[BotCommand]) -> Result<(), BotApiError> {
    if commands.len() > MAX_COMMANDS {
        return Err(BotApiError::bad_request("BOT_COMMANDS_TOO_MUCH"));
    }
    for c in commands {
        let valid_name = (1..=MAX_COMMAND_CHARS).contains(&c.command.chars().count())
            && c.command.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
        if !valid_name {
            return Err(BotApiError::bad_request("BOT_COMMAND_INVALID"));
        }
        if !(1..=MAX_COMMAND_DESCRIPTION_CHARS).contains(&c.description.trim().chars().count()) {
            return Err(BotApiError::bad_request("BOT_COMMAND_DESCRIPTION_INVALID"));
        }
    }
    Ok(())
}

/// A webhook URL: empty removes the webhook. The stand-in delivers over plain HTTP only
/// (it runs on loopback with no certificates), unlike Telegram, which insists on HTTPS.
pub fn webhook_url(url: &str) -> Result<Option<Uri>, BotApiError> {
    let url = url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| BotApiError::BadRequest(format!("bad webhook: {why}"));
    let uri: Uri = url.parse().map_err(|_| bad("invalid URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(bad("this stand-in delivers over plain HTTP; use an http:// URL")),
        _ => return Err(bad("invalid URL")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("invalid URL"));
    }
    Ok(Some(uri))
}

/// Webhook secret: 1-256 of `A-Z a-z 0-9 _ -`.
pub fn secret_token(secret: &str) -> Result<(), BotApiError> {
    let ok = (1..=MAX_SECRET_TOKEN_CHARS).contains(&secret.len())
        && secret.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok { Ok(()) } else { Err(BotApiError::bad_request("bad webhook: secret token contains unallowed characters")) }
}

/// The bot's user id is the number before the colon of its token, as with real tokens.
pub fn bot_id_from_token(token: &str) -> Option<i64> {
    token.split_once(':').and_then(|(id, _)| id.parse().ok()).filter(|&id: &i64| id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_keyboards_follow_telegrams_rules() {
        let ok = serde_json::json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "y"}, {"text": "Docs", "url": "https://x.test"}]]});
        assert!(reply_markup(Some(&ok)).is_ok());
        let long = serde_json::json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "y".repeat(65)}]]});
        assert_eq!(reply_markup(Some(&long)), Err(BotApiError::bad_request("BUTTON_DATA_INVALID")));
        let bare = serde_json::json!({"inline_keyboard": [[{"text": "Yes"}]]});
        assert!(inline_keyboard(Some(&bare)).is_err());
        assert!(inline_keyboard(Some(&serde_json::json!({"keyboard": []}))).is_err());
        assert!(reply_markup(Some(&serde_json::json!({"remove_keyboard": true}))).is_ok());
        assert!(callback_answer_text(Some(&"x".repeat(201))).is_err());
    }

    fn cmd(command: &str, description: &str) -> BotCommand {
        BotCommand { command: command.into(), description: description.into() }
    }

    fn err(text: &str) -> Result<String, BotApiError> {
        Err(BotApiError::bad_request(text))
    }

    #[test]
    fn text_length_counts_characters_after_parsing() {
        assert_eq!(message_text(Some(&"a".repeat(4096)), None).map(|t| t.len()), Ok(4096));
        assert_eq!(message_text(Some(&"a".repeat(4097)), None), err("message is too long"));
        assert_eq!(message_text(Some(&"é".repeat(4096)), None).map(|t| t.chars().count()), Ok(4096));
        // Markup does not count.
        let bold = format!("*{}*", "a".repeat(4096));
        assert!(message_text(Some(&bold), Some("MarkdownV2")).is_ok());
        // Surrounding whitespace does not count either.
        assert!(message_text(Some(&format!("  {}\n", "a".repeat(4096))), None).is_ok());
    }

    #[test]
    fn empty_texts_are_refused() {
        assert_eq!(message_text(None, None), err("message text is empty"));
        assert_eq!(message_text(Some(" \n"), None), err("message text is empty"));
        assert_eq!(message_text(Some("**"), Some("MarkdownV2")), err("message text is empty"));
    }

    #[test]
    fn parse_errors_use_telegrams_prefix() {
        let e = message_text(Some("1.5"), Some("MarkdownV2")).unwrap_err().to_string();
        assert_eq!(
            e,
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        assert_eq!(message_text(Some("x"), Some("bbcode")), err("unsupported parse_mode"));
        assert_eq!(message_text(Some("1.5"), None), Ok("1.5".into()));
    }

    #[test]
    fn commands() {
        assert_eq!(bot_commands(&[cmd("start", "Start"), cmd("new_chat2", "x")]), Ok(()));
        assert_eq!(bot_commands(&[]), Ok(()));
        for bad in ["", "Start", "/start", "with-dash", &"a".repeat(33)] {
            assert_eq!(
                bot_commands(&[cmd(bad, "d")]).map_err(|e| e.to_string()),
                Err("Bad Request: BOT_COMMAND_INVALID".into())
            );
        }
        assert!(bot_commands(&[cmd("a", "")]).is_err());
        assert!(bot_commands(&[cmd("a", &"d".repeat(257))]).is_err());
        assert!(bot_commands(&vec![cmd("a", "d"); 101]).is_err());
    }

    #[test]
    fn chat_actions() {
        assert_eq!(chat_action(Some("typing")), Ok("typing".into()));
        assert_eq!(chat_action(None), Err(BotApiError::required("action")));
        assert_eq!(chat_action(Some("dancing")), err("wrong parameter action in request"));
    }

    #[test]
    fn webhooks() {
        assert_eq!(webhook_url(""), Ok(None));
        assert!(webhook_url("http://127.0.0.1:9000/hook").is_ok_and(|u| u.is_some()));
        assert!(webhook_url("https://127.0.0.1/hook").is_err());
        assert!(webhook_url("not a url").is_err());
        assert_eq!(secret_token("abc_DEF-123"), Ok(()));
        assert!(secret_token("no spaces").is_err());
        assert!(secret_token(&"a".repeat(257)).is_err());
    }

    #[test]
    fn bot_ids() {
        assert_eq!(bot_id_from_token("123456:ABC-def"), Some(123456));
        assert_eq!(bot_id_from_token("nocolon"), None);
        assert_eq!(bot_id_from_token("-5:x"), None);
    }
}
