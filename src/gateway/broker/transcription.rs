//! Voice notes to text through the provider's OpenAI-compatible
//! `POST {base}/audio/transcriptions` (multipart: `file`, `model`), called by the gateway (never
//! by an agent) with the provider key, for a user known by their agent token, and counted in
//! the same per-user limits and daily budget as their chat completions.

use axum::http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;

use super::{BrokerState, Caller};
use crate::http::CappedRead;

/// Why there is no transcript, in words for the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscribeError {
    /// The user's limits (rate or daily budget): the broker's own wording.
    #[error("{0}")]
    Limited(String),
    /// Not a user the broker serves now (suspended, deleted...).
    #[error("{0}")]
    Refused(String),
    /// The provider failed or answered something else than a transcript.
    #[error("the transcription service failed: {0}")]
    Provider(String),
}

/// The provider's answer (`json` response format): the text, and usage where the model
/// reports tokens (`gpt-4o-transcribe`; `whisper-1` reports none).
#[derive(Debug, Deserialize)]
struct Transcription {
    text: String,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(default)]
    total_tokens: Option<u64>,
}

/// What a transcript is charged when the provider reports no tokens: about four characters a
/// token, at least one (the request itself is counted in the per-minute window either way).
pub fn charged_tokens(reported: Option<u64>, text: &str) -> u64 {
    reported.unwrap_or_else(|| (text.len() as u64).div_ceil(4)).max(1)
}

impl BrokerState {
    /// Transcribe `audio` for the user whose agent token is `token`.
    pub async fn transcribe(
        &self,
        token: &str,
        model: &str,
        audio: Vec<u8>,
        file_name: &str,
        mime_type: &str,
    ) -> Result<String, TranscribeError> {
        let mut headers = HeaderMap::new();
        let bearer = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| TranscribeError::Refused("an unusable agent token".into()))?;
        headers.insert(header::AUTHORIZATION, bearer);
        let caller: Caller = self.authenticate(&headers).map_err(|r| TranscribeError::Refused(r.message))?;
        let now = self.clock.now_ms();
        self.limiter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(&caller.name, caller.profile.llm, now)
            .map_err(|limited| TranscribeError::Limited(limited.message(caller.profile_name())))?;
        let bytes_in = audio.len();
        let file = reqwest::multipart::Part::bytes(audio)
            .file_name(file_name.to_string())
            .mime_str(mime_type)
            .map_err(|e| TranscribeError::Provider(format!("audio type {mime_type:?}: {e}")))?;
        let form = reqwest::multipart::Form::new().part("file", file).text("model", model.to_string());
        let sent = self
            .http
            .post(self.config.provider.endpoint("audio/transcriptions"))
            .bearer_auth(self.config.provider.api_key.expose())
            .multipart(form)
            .send()
            .await
            .map_err(|e| TranscribeError::Provider(e.without_url().to_string()))?;
        let status = sent.status();
        let body = crate::http::read_capped(sent, self.config.max_response_bytes).await.map_err(|e| match e {
            CappedRead::TooLarge => TranscribeError::Provider("the answer is too large".into()),
            CappedRead::Failed(e) => TranscribeError::Provider(e.without_url().to_string()),
        })?;
        if !status.is_success() {
            // The provider's message may quote part of the key on a 401; the status says enough.
            tracing::warn!(user = %caller.name, status = status.as_u16(), bytes_in, "transcription refused by the provider");
            return Err(TranscribeError::Provider(format!("it answered {}", status.as_u16())));
        }
        let transcription: Transcription = serde_json::from_slice(&body)
            .map_err(|e| TranscribeError::Provider(format!("an answer without a transcript: {e}")))?;
        let tokens = charged_tokens(transcription.usage.and_then(|u| u.total_tokens), &transcription.text);
        self.limiter.lock().unwrap_or_else(|e| e.into_inner()).record_tokens(&caller.name, tokens, now);
        tracing::info!(user = %caller.name, bytes_in, tokens, "voice message transcribed");
        Ok(transcription.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transcript_is_charged_what_the_provider_reports_else_by_its_length() {
        assert_eq!(charged_tokens(Some(120), "hi"), 120);
        assert_eq!(charged_tokens(None, "remind me to buy milk"), 6);
        assert_eq!(charged_tokens(None, ""), 1);
    }
}
