//! Telling a person their assistant was reset. When a MoltmateUser's `status.resetGeneration`
//! grows (the operator writes it once an agent that wiped its workspace serves), the user
//! gets one message in their private chat, whose id is their Telegram user id.
//!
//! Only a growth this process saw counts: the first sight of a user after a start records
//! its generation and says nothing, so a restarted gateway or a new Lease holder never
//! repeats a notice (a reset completed while no gateway led goes untold). A user created
//! after this process began announcing is the exception: no one before it can have told
//! them, so a reset done between two looks (user added, reset and ready within a second) is
//! told too. Run on the Lease holder only, like the poller, so two replicas never both send it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::telegram::Outbox;
use crate::crd::MoltmateUser;

pub const RESET_NOTICE: &str = "Your assistant was reset: its workspace and memory were wiped.";

/// The reset generation last seen per user uid.
#[derive(Debug)]
pub struct Resets {
    seen: HashMap<String, i64>,
    /// When this process began announcing: users created later are new to every gateway.
    since: jiff::Timestamp,
}

/// A notice to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub user: String,
    pub chat_id: i64,
    pub generation: i64,
}

impl Resets {
    pub fn new(since: jiff::Timestamp) -> Resets {
        Resets { seen: HashMap::new(), since }
    }

    /// Who is to be told now, given the users in the cache; remembers what it saw.
    pub fn due(&mut self, users: &[Arc<MoltmateUser>]) -> Vec<Notice> {
        let mut notices = Vec::new();
        let mut present = HashMap::with_capacity(users.len());
        for user in users {
            let Some(uid) = user.uid() else { continue };
            let generation = user.status.as_ref().and_then(|s| s.reset_generation).unwrap_or(0);
            let created_since = user.metadata.creation_timestamp.as_ref().is_some_and(|t| t.0 > self.since);
            let before = self.seen.get(&uid).copied().or(created_since.then_some(0));
            if let Some(before) = before
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
    let mut resets = Resets::new(jiff::Timestamp::now());
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

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const START: i64 = 1_000;

    fn user(name: &str, telegram_id: i64, reset: Option<i64>) -> Arc<MoltmateUser> {
        created_at(name, telegram_id, reset, START - 10)
    }

    fn created_at(name: &str, telegram_id: i64, reset: Option<i64>, created: i64) -> Arc<MoltmateUser> {
        let mut u = MoltmateUser::new(name, MoltmateUserSpec::new(telegram_id, Profile::Public));
        u.metadata.uid = Some(format!("uid-{name}"));
        u.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        u.status = Some(MoltmateUserStatus { reset_generation: reset, ..Default::default() });
        Arc::new(u)
    }

    #[test]
    fn one_notice_per_growth_seen_and_none_on_first_sight() {
        let mut resets = Resets::new(jiff::Timestamp::now());
        assert!(
            resets.due(&[user("alice", 11, Some(3)), user("bob", 12, None)]).is_empty(),
            "first sight says nothing"
        );
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

    #[test]
    fn a_user_created_since_the_start_and_reset_before_the_first_look_is_told() {
        let mut resets = Resets::new(jiff::Timestamp::from_second(START).unwrap());
        assert!(resets.due(&[]).is_empty());
        let due = resets.due(&[created_at("rory", 13, Some(1), START + 5), created_at("old", 14, Some(2), START - 5)]);
        assert_eq!(
            due,
            vec![Notice { user: "rory".into(), chat_id: 13, generation: 1 }],
            "only the user no one can have told"
        );
        assert!(resets.due(&[created_at("rory", 13, Some(1), START + 5)]).is_empty(), "once");
        // New since the start but never reset: nothing to say.
        assert!(resets.due(&[created_at("nina", 15, None, START + 9)]).is_empty());
    }
}
