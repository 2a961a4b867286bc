//! The gateway: the broker between the agents' pods and the outside world.
pub mod access;
pub mod activity;
pub mod agent_client;
pub mod broker;
pub mod commands;
pub mod config;
pub mod delivery;
pub mod directory;
pub mod markdown;
pub mod media;
pub mod metrics;
pub mod model_choice;
pub mod queues;
pub mod reminders;
pub mod resets;
pub mod run;
pub mod split;
pub mod telegram;
pub mod usage_sync;
pub mod web_fetch;
pub mod webhook;
pub mod worker;

pub use config::GatewayArgs;
pub use run::run;
