//! The reminder tools (`schedule`, `list_reminders`, `cancel_reminder`), through the broker's
//! `/v1/reminders` (`gateway::broker::reminders_endpoint`). The gateway keeps the reminders,
//! decides the person's time zone, enforces the limits and delivers them to the person's own
//! chat; the agent only asks, and reads back what the gateway decided or why it refused.

use std::time::Duration;

use reqwest::header::AUTHORIZATION;

use crate::gateway::broker::reminders_endpoint::{CreateRequest, ListResponse, ReminderView};
use crate::http::CappedRead;
use crate::secret::Secret;

const MAX_ANSWER: usize = 256 * 1024;

/// A refusal the model should read as such (the limits, a bad time), or a failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReminderError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

#[derive(Clone)]
pub struct RemindersClient {
    http: reqwest::Client,
    endpoint: String,
    token: Secret<String>,
}

impl RemindersClient {
    pub fn new(endpoint: String, token: Secret<String>, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = crate::agent::broker_client::builder(timeout).redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(Self { http, endpoint, token })
    }

    pub async fn create(&self, request: &CreateRequest) -> Result<ReminderView, ReminderError> {
        self.call(self.http.post(&self.endpoint).json(request)).await
    }

    pub async fn list(&self) -> Result<ListResponse, ReminderError> {
        self.call(self.http.get(&self.endpoint)).await
    }

    pub async fn cancel(&self, id: u64) -> Result<ReminderView, ReminderError> {
        self.call(self.http.delete(format!("{}/{id}", self.endpoint))).await
    }

    async fn call<T: serde::de::DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T, ReminderError> {
        let response = request
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .send()
            .await
            .map_err(|_| ReminderError::Failed("the gateway cannot be reached; try again later".into()))?;
        let status = response.status().as_u16();
        let bytes = crate::http::read_capped(response, MAX_ANSWER).await.map_err(|e| match e {
            CappedRead::TooLarge => ReminderError::Failed("the gateway's answer is too large".into()),
            CappedRead::Failed(e) => ReminderError::Failed(format!("reading the answer: {e}")),
        })?;
        if status == 200 {
            return serde_json::from_slice(&bytes)
                .map_err(|e| ReminderError::Failed(format!("unreadable answer: {e}")));
        }
        let reason = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
        let reason = crate::agent::history::truncate(&reason, 500).0;
        match status {
            400 | 404 | 422 | 429 => Err(ReminderError::Refused(reason)),
            other => Err(ReminderError::Failed(format!("the gateway answered {other}: {reason}"))),
        }
    }
}
