//! The gateway: the broker between the agents' pods and the outside world.
pub mod delivery;
pub mod directory;
pub mod broker;
pub mod fetch;
pub mod split;
