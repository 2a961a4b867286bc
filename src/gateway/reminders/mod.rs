//! Reminders and scheduled messages: an agent sets them through the broker
//! (`broker::reminders_endpoint`), they are kept in the person's MoltmateUser status
//! ([`store`]), the person lists and cancels them and sets their time zone in the chat
//! ([`chat`]), and the Lease holder delivers each one when due ([`delivery`]). The decisions
//! (times, limits, what is due) are pure ([`schedule`]).

pub mod chat;
pub mod delivery;
pub mod schedule;
pub mod store;
