//! `moltmate dev telegram`: a local stand-in for the Telegram Bot API.
//!
//! Telegram cannot be reached from tests or the local stack, so this server speaks the Bot API
//! wire protocol (`/bot<token>/<method>`, Telegram's envelope, status codes and error wording)
//! for the methods the gateway uses, and the gateway's client is pointed at it through its API
//! base URL. A control API under `/control/` plays the users and reports what the bot did.
//! Users may send media too (documents, voice, audio, photos, stickers, or any message field
//! as Telegram shapes it); their files are served by `getFile` and at
//! `/file/bot<token>/<file_path>`, as Telegram serves them, and files the bot sends
//! (`sendDocument`, multipart) are kept with their names and bytes for tests to read.
//!
//! Layout: [`store`] (state, no I/O) with [`queue`] (offset rules), [`validate`] and [`markup`]
//! (Telegram's argument rules) are pure; [`bot_api`], [`control`] and [`webhook`] are the HTTP
//! layer; [`server`] ties them into [`TelegramStandIn`].

pub mod bot_api;
pub mod control;
pub mod error;
pub mod markup;
pub mod params;
pub mod queue;
pub mod server;
mod shared;
pub mod store;
pub mod types;
pub mod validate;
pub mod webhook;

use std::net::SocketAddr;

pub use control::StatsCondition;
pub use error::BotApiError;
pub use server::{StandInConfig, StandInError, TelegramStandIn, WaitTimeout};
pub use store::{CommandSet, InjectError, Limits, Stats};
pub use types::{
    BotCommand, CallbackAnswer, ChatType, InjectCallback, InjectMedia, InjectMessage, Injected, InjectedCallback,
    SentAction, SentDocument, SentMessage, StoredFile,
};
pub use webhook::SECRET_HEADER;

#[derive(clap::Args, Debug, Clone)]
pub struct TelegramArgs {
    /// Address to serve the Bot API and control API on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: SocketAddr,
    /// The bot token clients must use (`<bot id>:<secret>`, like a real one).
    #[arg(long, env = "MOLTMATE_TELEGRAM_TOKEN")]
    pub token: String,
    /// The bot's username, as `getMe` reports it.
    #[arg(long, default_value = "moltmates_dev_bot")]
    pub bot_username: String,
}

/// Serve until SIGINT or SIGTERM. Prints the Bot API base URL on stdout once listening.
pub async fn run(args: TelegramArgs) -> Result<(), StandInError> {
    let shutdown = crate::shutdown::Shutdown::on_signals().map_err(StandInError::Signals)?;
    let mut config = StandInConfig::new(args.token);
    config.bot_username = args.bot_username;
    let mut standin = TelegramStandIn::start_with(args.listen, config).await?;
    println!("{}", standin.url());
    tracing::info!(url = %standin.url(), "Telegram stand-in listening");
    tokio::select! {
        () = shutdown.requested() => {}
        _ = standin.stopped() => return Ok(()),
    }
    standin.shutdown().await;
    Ok(())
}
