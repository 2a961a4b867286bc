//! Method parameters, gathered the way Telegram takes them: from the query string and from a
//! JSON, urlencoded or multipart body. Values stay JSON; form values arrive as strings, and
//! typed getters accept either ("42" and 42 are the same chat id; a list may be JSON text).

use std::collections::HashMap;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::BotApiError;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Params(HashMap<String, Value>);

impl Params {
    /// Query parameters first, then the body's, which win on a clash.
    pub fn parse(query: Option<&str>, content_type: Option<&str>, body: &[u8]) -> Result<Self, BotApiError> {
        let mut params = Self::default();
        if let Some(query) = query {
            params.extend_form(query.as_bytes());
        }
        let media_type = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(params);
        }
        match media_type.as_str() {
            "application/json" => {
                let json: Value =
                    serde_json::from_slice(body).map_err(|_| BotApiError::bad_request("can't parse JSON object"))?;
                match json {
                    Value::Object(map) => params.0.extend(map),
                    _ => return Err(BotApiError::bad_request("can't parse JSON object")),
                }
            }
            "multipart/form-data" => {
                let boundary = content_type
                    .and_then(crate::dev::multipart::boundary)
                    .ok_or_else(|| BotApiError::bad_request("can't parse multipart/form-data: boundary not found"))?;
                for (name, value) in multipart_fields(body, &boundary)? {
                    params.0.insert(name, Value::String(value));
                }
            }
            // Telegram reads an untyped body as a form, too.
            _ => params.extend_form(body),
        }
        Ok(params)
    }

    pub fn from_json(map: serde_json::Map<String, Value>) -> Self {
        Self(map.into_iter().collect())
    }

    fn extend_form(&mut self, form: &[u8]) {
        for (k, v) in form_urlencoded::parse(form) {
            self.0.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    /// A string parameter; numbers and booleans are given as their text.
    pub fn str(&self, name: &str) -> Option<String> {
        match self.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn i64(&self, name: &str) -> Result<Option<i64>, BotApiError> {
        let invalid = || BotApiError::BadRequest(format!("parameter \"{name}\" must be an integer"));
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(invalid),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => s.trim().parse().map(Some).map_err(|_| invalid()),
            Some(_) => Err(invalid()),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, BotApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::Number(n)) => Ok(Some(n.as_i64() != Some(0))),
            Some(Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "" | "false" | "0" => Ok(Some(false)),
                "true" | "1" => Ok(Some(true)),
                _ => Err(BotApiError::BadRequest(format!("parameter \"{name}\" must be a boolean"))),
            },
            Some(_) => Err(BotApiError::BadRequest(format!("parameter \"{name}\" must be a boolean"))),
        }
    }

    /// A structured parameter, given as JSON or as JSON text (as forms carry it).
    pub fn json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, BotApiError> {
        let invalid = || BotApiError::BadRequest(format!("can't parse {name} JSON object"));
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s).map(Some).map_err(|_| invalid()),
            Some(v) => T::deserialize(v).map(Some).map_err(|_| invalid()),
        }
    }

    /// The raw JSON value (for opaque parameters such as `reply_markup`).
    pub fn value(&self, name: &str) -> Option<Value> {
        match self.get(name)? {
            Value::String(s) => serde_json::from_str(s).ok().or_else(|| Some(Value::String(s.clone()))),
            v => Some(v.clone()),
        }
    }
}

/// The text fields of a multipart/form-data body; file parts are left to the methods that
/// take files (they read the body again).
fn multipart_fields(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>, BotApiError> {
    let malformed = || BotApiError::bad_request("can't parse multipart/form-data");
    let mut fields = Vec::new();
    for part in crate::dev::multipart::parse(body, boundary).map_err(|_| malformed())? {
        if part.file_name.is_some() {
            continue;
        }
        fields.push((part.name, String::from_utf8(part.bytes).map_err(|_| malformed())?));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_body_and_query_merge() {
        let p =
            Params::parse(Some("chat_id=1&text=q"), Some("application/json"), br#"{"text":"body","limit":5}"#).unwrap();
        assert_eq!(p.i64("chat_id"), Ok(Some(1)));
        assert_eq!(p.str("text").as_deref(), Some("body"));
        assert_eq!(p.i64("limit"), Ok(Some(5)));
        assert_eq!(p.i64("offset"), Ok(None));
    }

    #[test]
    fn form_values_convert() {
        let body = b"chat_id=-100&flag=true&commands=%5B%7B%22command%22%3A%22a%22%7D%5D&text=a+b";
        let p = Params::parse(None, Some("application/x-www-form-urlencoded"), body).unwrap();
        assert_eq!(p.i64("chat_id"), Ok(Some(-100)));
        assert_eq!(p.bool("flag"), Ok(Some(true)));
        assert_eq!(p.str("text").as_deref(), Some("a b"));
        let commands: Option<Vec<serde_json::Value>> = p.json("commands").unwrap();
        assert_eq!(commands.map(|c| c.len()), Some(1));
        assert!(p.i64("text").is_err());
    }

    #[test]
    fn bad_json_is_a_bad_request() {
        let err = Params::parse(None, Some("application/json"), b"{nope").unwrap_err();
        assert_eq!(err.to_string(), "Bad Request: can't parse JSON object");
        assert!(Params::parse(None, Some("application/json"), b"[1]").is_err());
        assert_eq!(Params::parse(None, Some("application/json"), b""), Ok(Params::default()));
    }

    #[test]
    fn multipart_text_fields() {
        let body = "--XyZ\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\nhttp://127.0.0.1:1/h\r\n\
                    --XyZ\r\nContent-Disposition: form-data; name=\"certificate\"; filename=\"c.pem\"\r\n\
                    Content-Type: application/octet-stream\r\n\r\n\x01\x02\r\n\
                    --XyZ\r\ncontent-disposition: form-data; name=\"secret_token\"\r\n\r\ns\r\n--XyZ--\r\n";
        let p = Params::parse(None, Some("multipart/form-data; boundary=XyZ"), body.as_bytes()).unwrap();
        assert_eq!(p.str("url").as_deref(), Some("http://127.0.0.1:1/h"));
        assert_eq!(p.str("secret_token").as_deref(), Some("s"));
        assert_eq!(p.str("certificate"), None);
        assert!(Params::parse(None, Some("multipart/form-data; boundary=XyZ"), b"--XyZ\r\ngarbage").is_err());
    }
}
