//! Moltmates: one Telegram bot, many people, each with their own sandboxed agent.
pub mod crd;
pub mod names;
pub mod profile;
pub mod quantity;
pub mod token;

pub use crd::MoltmateUser;
