//! The gateway: the broker between the agents' pods and the outside world.
pub mod delivery;
pub mod directory;
pub mod broker;
pub mod fetch;
pub mod split;
pub mod activity;
pub mod agent_client;
pub mod commands;
pub mod config;
pub mod metrics;
pub mod queues;
pub mod resets;
pub mod run;
pub mod telegram;
pub mod webhook;
pub mod worker;

pub use config::GatewayArgs;
pub use run::run;
