//! Telling a person their assistant was reset. When a MoltmateUser's `status.resetGeneration`
//! grows (the operator writes it once an agent that wiped its workspace serves), the user
//! gets one message in their private chat, whose id is their Telegram user id.
//!
//! Only a growth this process saw counts: the first sight of a user after a start records
//! its generation and says nothing, so a restarted gateway or a new Lease holder never
//! repeats a notice (a reset completed while no gateway led goes untold). Run on the Lease
//! holder only, like the poller, so two replicas never both send it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::telegram::Outbox;
use crate::crd::MoltmateUser;

pub const RESET_NOTICE: &str = "Your assistant was reset: its workspace and memory were wiped.";

/// The reset generation last seen per user uid.
#[derive(Debug, Default)]
pub struct Resets {
    seen: HashMap<String, i64>,
}

/// A notice to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub user: String,
    pub chat_id: i64,
    pub generation: i64,
}

impl Resets {
    /// Who is to be told now, given the users in the cache; remembers what it saw.
    pub fn due(&mut self, users: &[Arc<MoltmateUser>]) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut present = HashMap::with_capacity(users.len());
        for user in users {
            let Some(uid) = user.uid() else { continue };
            let generation = user.status.as_ref().and_then(|s| s.reset_generation).unwrap_or(0);
            if let Some(&before) = self.seen.get(&uid)
                && generation > before
            {
                notices.push(Notice { user: user.name_any(), chat_id: user.spec.telegram.user_id, generation });
            }
            present.insert(uid, generation);
        }
        // Users gone from the cache are forgotten; one re-created is a new uid anyway.
        self.seen = present;
        notices
    }
}

/// Look at the cache every `every` and send what is due (for as long as this replica leads).
pub async fn announce(users: Store<MoltmateUser>, outbox: Outbox, every: Duration) {
    let mut resets = Resets::default();
    loop {
        for notice in resets.due(&users.state()) {
            tracing::info!(user = %notice.user, telegram_id = notice.chat_id, generation = notice.generation, "telling the user their assistant was reset");
            outbox.say(notice.chat_id, RESET_NOTICE).await;
        }
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, MoltmateUserStatus, Profile};

    fn user(name: &str, telegram_id: i64, reset: Option<i64>) -> Arc<MoltmateUser> {
        let mut u = MoltmateUser::new(name, MoltmateUserSpec::new(telegram_id, Profile::Public));
        u.metadata.uid = Some(format!("uid-{name}"));
        u.status = Some(MoltmateUserStatus { reset_generation: reset, ..Default::default() });
        Arc::new(u)
    }

    #[test]
    fn one_notice_per_growth_seen_and_none_on_first_sight() {
        let mut resets = Resets::default();
        assert!(resets.due(&[user("alice", 11, Some(3)), user("bob", 12, None)]).is_empty(), "first sight says nothing");
        assert!(resets.due(&[user("alice", 11, Some(3)), user("bob", 12, None)]).is_empty());
        let due = resets.due(&[user("alice", 11, Some(3)), user("bob", 12, Some(1))]);
        assert_eq!(due, vec![Notice { user: "bob".into(), chat_id: 12, generation: 1 }]);
        assert!(resets.due(&[user("alice", 11, Some(3)), user("bob", 12, Some(1))]).is_empty(), "exactly once");
        // Two resets seen at once are one notice; a newcomer is a first sight.
        let due = resets.due(&[user("alice", 11, Some(5)), user("bob", 12, Some(1)), user("carol", 13, Some(2))]);
        assert_eq!(due, vec![Notice { user: "alice".into(), chat_id: 11, generation: 5 }]);
        // Gone and back (a new object, so a new uid in real life; same here): first sight again.
        assert!(resets.due(&[user("alice", 11, Some(5))]).is_empty());
        assert!(resets.due(&[user("alice", 11, Some(5)), user("bob", 12, Some(2))]).is_empty());
    }
}
