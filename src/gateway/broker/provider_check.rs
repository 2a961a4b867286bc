//! At start: does the provider take the broker's key, and does it serve the configured model?
//! Said in the log and on `/readyz`, so a typo in the model or the key shows before the first
//! person writes. Serving does not wait for it, nor stop over it: a provider that is down at
//! start may be up for the first message.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::ProviderConfig;
use crate::http::Health;

/// How long the check waits for the provider.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Models named in a warning, at most.
const MODELS_SHOWN: usize = 20;

/// What `GET /models` says about the configured model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Served,
    NotListed {
        listed: Vec<String>,
    },
    KeyRefused(u16),
    /// No answer, or one that is not a model list (some providers have no `/models`).
    Unknown(String),
}

impl Verdict {
    /// The `/readyz` line and whether it is worth a warning.
    pub fn describe(&self, model: &str) -> (String, bool) {
        match self {
            Verdict::Served => (format!("the provider serves the model {model:?}"), false),
            Verdict::NotListed { listed } => {
                let mut names = listed.iter().take(MODELS_SHOWN).cloned().collect::<Vec<_>>().join(", ");
                if listed.len() > MODELS_SHOWN {
                    names.push_str(", ...");
                }
                let text = format!(
                    "the provider does not list the model {model:?}; set --llm-default-model (the chart's llm.defaultModel) to one it serves: {names}"
                );
                (text, true)
            }
            Verdict::KeyRefused(status) => {
                (format!("the provider refused the API key ({status}); check the LLM API key Secret"), true)
            }
            Verdict::Unknown(why) => (format!("the provider's models could not be listed: {why}"), true),
        }
    }
}

/// The verdict on `model` from the answer to `GET /models` (OpenAI's list shape).
pub fn verdict(status: StatusCode, body: &[u8], model: &str) -> Verdict {
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Verdict::KeyRefused(status.as_u16());
    }
    if !status.is_success() {
        return Verdict::Unknown(format!("GET /models answered {}", status.as_u16()));
    }
    let listed: Option<Vec<String>> = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let data = v.get("data")?.as_array()?;
        Some(data.iter().filter_map(|m| m.get("id")?.as_str().map(str::to_string)).collect())
    });
    match listed {
        None => Verdict::Unknown("GET /models did not answer a model list".into()),
        Some(listed) if listed.iter().any(|m| m == model) => Verdict::Served,
        Some(listed) => Verdict::NotListed { listed },
    }
}

/// Check once, and report in the log and as the `llm` line of `/readyz`.
pub async fn report(provider: ProviderConfig, health: Health) {
    let Some(model) = provider.default_model.clone() else { return };
    let outcome = async {
        let mut config = provider.clone();
        config.timeout = CHECK_TIMEOUT;
        let client = super::llm::provider_client(&config)?;
        let response = client
            .get(provider.endpoint("models"))
            .bearer_auth(provider.api_key.expose())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body =
            crate::http::read_capped(response, 4 << 20).await.map_err(|_| "the list is too large".to_string())?;
        Ok::<_, String>(verdict(status, &body, &model))
    };
    let verdict = outcome.await.unwrap_or_else(Verdict::Unknown);
    let (text, warn) = verdict.describe(&model);
    if warn {
        tracing::warn!(model, base_url = %provider.base_url, "{text}");
    } else {
        tracing::info!(model, base_url = %provider.base_url, "{text}");
    }
    health.set_detail("llm", text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_list_says_whether_the_model_is_served() {
        let list =
            br#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model"},{"id":"gpt-4o","object":"model"}]}"#;
        assert_eq!(verdict(StatusCode::OK, list, "gpt-4o-mini"), Verdict::Served);
        let typo = verdict(StatusCode::OK, list, "gpt4o-mini");
        assert_eq!(typo, Verdict::NotListed { listed: vec!["gpt-4o-mini".into(), "gpt-4o".into()] });
        let (text, warn) = typo.describe("gpt4o-mini");
        assert!(warn && text.contains("llm.defaultModel") && text.contains("gpt-4o-mini, gpt-4o"), "{text}");
        assert_eq!(verdict(StatusCode::UNAUTHORIZED, b"{}", "m"), Verdict::KeyRefused(401));
        assert!(matches!(verdict(StatusCode::NOT_FOUND, b"", "m"), Verdict::Unknown(_)));
        assert!(matches!(verdict(StatusCode::OK, b"<html>", "m"), Verdict::Unknown(_)));
    }
}
