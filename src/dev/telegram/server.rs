//! [`TelegramStandIn`]: the server and its in-process handle for Rust tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::task::JoinHandle;

use super::bot_api;
use super::control::{self, StatsCondition};
use super::shared::{Shared, Waited, unix_now};
use super::store::{CommandSet, InjectError, Limits, Stats, Store};
use super::types::{
    BotCommand, CallbackAnswer, InjectCallback, InjectMessage, Injected, InjectedCallback, SentAction, SentMessage,
    User,
};
use super::validate;
use super::webhook::{self, Backoff};

/// Bot id used when the token has no numeric prefix.
const DEFAULT_BOT_ID: i64 = 1_000_001;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandInConfig {
    pub token: String,
    /// The bot's `username` in `getMe`.
    pub bot_username: String,
    pub bot_first_name: String,
    pub first_update_id: i64,
    pub limits: Limits,
    pub webhook_backoff: Backoff,
}

impl StandInConfig {
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            bot_username: "moltmates_dev_bot".into(),
            bot_first_name: "Moltmates".into(),
            first_update_id: 1,
            limits: Limits::default(),
            webhook_backoff: Backoff::default(),
        }
    }

    fn bot(&self) -> User {
        User {
            id: validate::bot_id_from_token(&self.token).unwrap_or(DEFAULT_BOT_ID),
            is_bot: true,
            first_name: self.bot_first_name.clone(),
            last_name: None,
            username: Some(self.bot_username.clone()),
            language_code: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    #[error("binding the stand-in: {0}")]
    Bind(#[from] std::io::Error),
    #[error("installing the SIGTERM handler: {0}")]
    Signals(#[source] std::io::Error),
}

/// Ran out of time waiting for a condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?} waiting for the Telegram stand-in")]
pub struct WaitTimeout(pub Duration);

/// A running stand-in. Dropping it stops the server and the webhook worker.
pub struct TelegramStandIn {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    webhook: JoinHandle<()>,
}

impl TelegramStandIn {
    /// Serve on `addr` (port 0 picks a free port) for the bot with this token.
    pub async fn start(addr: SocketAddr, token: impl Into<String>) -> Result<Self, StandInError> {
        Self::start_with(addr, StandInConfig::new(token)).await
    }

    pub async fn start_with(addr: SocketAddr, config: StandInConfig) -> Result<Self, StandInError> {
        let store = Store::new(config.bot(), config.first_update_id, config.limits);
        let shared = Arc::new(Shared::new(store, config.token.clone()));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = router(Arc::clone(&shared));
        let server = {
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = shared.wait_until(None, |_| None::<()>).await;
                };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                    tracing::error!(error = %e, "Telegram stand-in stopped");
                }
            })
        };
        let webhook = tokio::spawn(webhook::run(Arc::clone(&shared), config.webhook_backoff));
        Ok(Self { shared, addr, server: Some(server), webhook })
    }

    /// The Bot API base URL to give clients (`Bot::set_api_url`); methods live under
    /// `<url>/bot<token>/<method>`, the control API under `<url>/control/`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn bot(&self) -> User {
        self.shared.read(|s| s.bot().clone())
    }

    /// A user writes to the bot.
    pub fn inject(&self, message: InjectMessage) -> Result<Injected, InjectError> {
        self.shared.update(|s| s.inject(&message, unix_now()))
    }

    /// Shorthand: user `from_id` writes `text` in their private chat with the bot.
    pub fn inject_text(&self, from_id: i64, text: &str) -> Result<Injected, InjectError> {
        self.inject(InjectMessage::private(from_id, text))
    }

    /// User `from_id` presses a button with `data` on the bot's message `message_id` in
    /// `chat_id` (a test may forge any data).
    pub fn press(
        &self,
        from_id: i64,
        chat_id: i64,
        message_id: i64,
        data: &str,
    ) -> Result<InjectedCallback, InjectError> {
        let press = InjectCallback { from_id, chat_id, message_id, data: data.to_owned() };
        self.shared.update(|s| s.inject_callback(&press))
    }

    /// How the bot answered callback queries (`answerCallbackQuery`), oldest first.
    pub fn callback_answers(&self) -> Vec<CallbackAnswer> {
        self.shared.read(Store::callback_answers)
    }

    /// User `from_id` sends a file as a document, named `file_name`, holding `bytes`.
    pub fn inject_document(
        &self,
        from_id: i64,
        file_name: &str,
        mime_type: &str,
        bytes: impl Into<Vec<u8>>,
        caption: &str,
    ) -> Result<Injected, InjectError> {
        self.inject(InjectMessage::document(from_id, file_name, mime_type, bytes).with_caption(caption))
    }

    /// What the bot has sent to a chat, oldest first.
    pub fn sent_to(&self, chat_id: i64) -> Vec<SentMessage> {
        self.shared.read(|s| s.sent_to(chat_id))
    }

    pub fn actions_in(&self, chat_id: i64) -> Vec<SentAction> {
        self.shared.read(|s| s.actions_in(chat_id))
    }

    /// Commands for the default scope and no language, as the bot set them.
    pub fn commands(&self) -> Vec<BotCommand> {
        self.shared.read(|s| s.commands(None, None))
    }

    pub fn command_sets(&self) -> Vec<CommandSet> {
        self.shared.read(Store::command_sets)
    }

    pub fn stats(&self) -> Stats {
        self.shared.read(Store::stats)
    }

    /// The webhook URL, if one is set.
    pub fn webhook_url(&self) -> Option<String> {
        self.shared.read(|s| s.webhook().map(|w| w.url.clone()))
    }

    /// Wait until the bot has sent at least `n` messages to the chat; returns them all.
    pub async fn wait_for_messages(
        &self,
        chat_id: i64,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<SentMessage>, WaitTimeout> {
        self.wait(timeout, |s| (s.sent_count(chat_id) >= n).then(|| s.sent_to(chat_id))).await
    }

    pub async fn wait_for_actions(
        &self,
        chat_id: i64,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<SentAction>, WaitTimeout> {
        self.wait(timeout, |s| (s.action_count(chat_id) >= n).then(|| s.actions_in(chat_id))).await
    }

    /// Wait until the counters satisfy `condition` (e.g. a long poll is waiting, or the
    /// queue has drained).
    pub async fn wait_for_stats(&self, condition: &StatsCondition, timeout: Duration) -> Result<Stats, WaitTimeout> {
        self.wait(timeout, |s| {
            let stats = s.stats();
            condition.holds(&stats).then_some(stats)
        })
        .await
    }

    async fn wait<T>(&self, timeout: Duration, check: impl FnMut(&mut Store) -> Option<T>) -> Result<T, WaitTimeout> {
        match self.shared.wait_until(Some(timeout), check).await {
            Waited::Ready(value) => Ok(value),
            Waited::TimedOut | Waited::ShuttingDown => Err(WaitTimeout(timeout)),
        }
    }

    /// Forget all state but the bot (update ids keep increasing).
    pub fn reset(&self) {
        self.shared.update(Store::reset);
    }

    /// Stop serving: pending long polls answer at once, then the server exits.
    pub async fn shutdown(mut self) {
        self.shared.shut_down();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Resolves when the server has stopped (for the CLI, which runs until a signal).
    pub(super) async fn stopped(&mut self) {
        if let Some(server) = self.server.as_mut() {
            let _ = server.await;
            self.server = None;
        }
    }
}

impl Drop for TelegramStandIn {
    fn drop(&mut self) {
        self.shared.shut_down();
        self.webhook.abort();
    }
}

/// Bot API methods at `/bot<token>/<method>`, the control API at `/control/`, and the health
/// endpoints every moltmate server has.
fn router(shared: Arc<Shared>) -> Router {
    let health = crate::http::Health::new();
    health.set_ready(true);
    control::router().fallback(bot_api::handle).with_state(shared).merge(crate::http::router(
        health,
        Default::default(),
        Box::new(|| {}),
    ))
}
