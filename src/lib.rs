//! Moltmates: one Telegram bot, many people, each with their own sandboxed agent.
pub mod agent;
pub mod audit;
pub mod backoff;
pub mod builders;
pub mod cache;
pub mod cluster;
pub mod crd;
#[cfg(feature = "dev")]
pub mod dev;
pub mod duration;
pub mod gateway;
pub mod http;
pub mod k8s;
pub mod leader;
pub mod memory;
pub mod names;
pub mod operator;
pub mod profile;
pub mod quantity;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod token;
pub mod unicode;
pub mod users;

pub use crd::MoltmateUser;
