//! Delivering reminders when due, on the Lease holder only (like the poller), so two replicas
//! never both send one. Every second the watch cache of users is read for due reminders; each
//! is sent to the person's private chat, then recorded as delivered in the store (a one-off
//! one leaves, a repeating one moves to its next time). It is noted in the agent's
//! conversation too, so a follow-up question has the context: before it is sent when the
//! agent runs (the person's answer to it finds it there), after when the agent is idle (the
//! person is not kept waiting while it wakes, quietly, for the note).
//!
//! Never twice: an occurrence sent by this process is not sent again while it lives, whatever
//! the cache still shows; and the record in the store is written right after Telegram took the
//! message, so a new gateway sees it. What is left is the moment between the two, as for
//! replies (Telegram's sendMessage has no idempotency key): a gateway killed exactly then sends
//! that reminder again. Losing one is never the trade.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use super::schedule;
use super::store::ReminderStore;
use crate::crd::{MoltmateUser, Reminder};
use crate::gateway::telegram::Outbox;
use crate::gateway::worker::Worker;

/// How often the cache is looked at: a reminder arrives within this of its time.
pub const EVERY: Duration = Duration::from_secs(1);
/// After a failed send, the next try.
const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Tries to record a sent reminder in the store.
const RECORD_ATTEMPTS: u32 = 5;

/// Where one occurrence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    Sending,
    /// Sent by this process: never again, until the store no longer lists it.
    Sent,
    /// Telegram refused or could not be reached: again after this.
    Failed {
        retry_at: Instant,
    },
}

/// The occurrences this process is sending or has sent, by user uid and occurrence key.
#[derive(Debug, Default)]
pub struct Deliveries {
    progress: HashMap<(String, String), Progress>,
}

impl Deliveries {
    /// The occurrences to send now, given the users in the cache; each is marked as sending.
    /// Occurrences no longer pending are forgotten. Pure but for `now`.
    pub fn take_due(&mut self, users: &[Arc<MoltmateUser>], now: Timestamp, clock: Instant) -> Vec<Due> {
        let mut pending = std::collections::HashSet::new();
        let mut out = Vec::new();
        // Worked out once a tick, and only when someone has reminders.
        let owners = std::cell::LazyCell::new(|| crate::operator::telegram_id_owners(users));
        for user in users {
            let (Some(uid), Some(book)) = (user.uid(), user.status.as_ref().and_then(|s| s.reminders.as_ref())) else {
                continue;
            };
            // The chat is the Telegram id's: only its owner (the oldest claimant, as routing
            // decides) sends there, never a second object naming the same id.
            if user.metadata.deletion_timestamp.is_some()
                || owners.get(&user.spec.telegram.user_id).is_none_or(|owner| *owner != user.name_any())
            {
                continue;
            }
            for reminder in &book.pending {
                pending.insert((uid.clone(), schedule::occurrence_key(reminder)));
            }
            for reminder in schedule::due(book, now) {
                let key = (uid.clone(), schedule::occurrence_key(&reminder));
                let ready = match self.progress.get(&key) {
                    None => true,
                    Some(Progress::Failed { retry_at }) => clock >= *retry_at,
                    Some(Progress::Sending | Progress::Sent) => false,
                };
                if ready {
                    self.progress.insert(key, Progress::Sending);
                    out.push(Due {
                        user: user.name_any(),
                        uid: uid.clone(),
                        chat_id: user.spec.telegram.user_id,
                        paused: user.spec.suspend,
                        reminder,
                    });
                }
            }
        }
        // Sent and recorded (the cache shows it gone or moved on): nothing left to guard.
        self.progress.retain(|key, progress| *progress == Progress::Sending || pending.contains(key));
        out
    }

    fn set(&mut self, uid: &str, key: &str, progress: Progress) {
        self.progress.insert((uid.to_string(), key.to_string()), progress);
    }
}

/// One occurrence to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub user: String,
    pub uid: String,
    /// The person's private chat: their Telegram id, never anything an agent said.
    pub chat_id: i64,
    /// Suspended by the administrator: the person still gets it; the agent is not woken.
    pub paused: bool,
    pub reminder: Reminder,
}

/// Deliver what is due, for as long as this replica leads.
pub async fn run(users: Store<MoltmateUser>, store: ReminderStore, outbox: Outbox, worker: Arc<Worker>) {
    let deliveries = Arc::new(Mutex::new(Deliveries::default()));
    loop {
        let due = {
            let mut d = deliveries.lock().unwrap_or_else(|e| e.into_inner());
            d.take_due(&users.state(), Timestamp::now(), Instant::now())
        };
        for due in due {
            let (store, outbox, worker, deliveries) =
                (store.clone(), outbox.clone(), worker.clone(), deliveries.clone());
            tokio::spawn(async move { deliver(due, &store, &outbox, &worker, &deliveries).await });
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn deliver(due: Due, store: &ReminderStore, outbox: &Outbox, worker: &Worker, deliveries: &Mutex<Deliveries>) {
    let key = schedule::occurrence_key(&due.reminder);
    let mark = |progress| deliveries.lock().unwrap_or_else(|e| e.into_inner()).set(&due.uid, &key, progress);
    let text = schedule::message(&due.reminder);
    let noted_first = !due.paused && worker.is_awake(&due.user);
    if noted_first {
        worker.note_reminder(&due.user, &due.uid, &key, &text).await;
    }
    if let Err(e) = outbox.send_reply(due.chat_id, &text).await {
        tracing::warn!(user = %due.user, telegram_id = due.chat_id, id = due.reminder.id, error = %e, "sending a reminder failed; trying again later");
        worker.metrics.reminder_failed();
        mark(Progress::Failed { retry_at: Instant::now() + RETRY_AFTER });
        return;
    }
    mark(Progress::Sent);
    worker.metrics.reminder_delivered();
    tracing::info!(user = %due.user, telegram_id = due.chat_id, id = due.reminder.id, due = %due.reminder.due, "reminder delivered");
    let mut attempt = 0;
    loop {
        match store.update(&due.user, |_, book| Ok(schedule::delivered(book, &key, Timestamp::now()))).await {
            Ok(_) => break,
            Err(e) if attempt + 1 < RECORD_ATTEMPTS => {
                tracing::debug!(user = %due.user, error = %e, attempt, "recording a delivered reminder failed; retrying");
                tokio::time::sleep(crate::gateway::agent_client::backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                tracing::warn!(user = %due.user, id = due.reminder.id, error = %e, "could not record a delivered reminder; this gateway will not send it again");
                break;
            }
        }
    }
    if !due.paused && !noted_first {
        worker.note_reminder(&due.user, &due.uid, &key, &text).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, MoltmateUserStatus, Profile, ReminderBook};

    fn user(name: &str, telegram_id: i64, pending: Vec<Reminder>) -> Arc<MoltmateUser> {
        let mut u = MoltmateUser::new(name, MoltmateUserSpec::new(telegram_id, Profile::Public));
        u.metadata.uid = Some(format!("uid-{name}"));
        u.status = Some(MoltmateUserStatus {
            reminders: Some(ReminderBook { pending, ..ReminderBook::default() }),
            ..MoltmateUserStatus::default()
        });
        Arc::new(u)
    }

    fn reminder(id: u64, due: &str) -> Reminder {
        Reminder { id, text: format!("r{id}"), due: due.into(), repeat: None, timezone: "UTC".into() }
    }

    #[test]
    fn each_occurrence_is_taken_once_and_goes_to_its_owners_chat() {
        let now: Timestamp = "2026-12-03T19:00:00Z".parse().unwrap();
        let clock = Instant::now();
        let users = vec![
            user("alice", 11, vec![reminder(1, "2026-12-03T18:59:59Z"), reminder(2, "2026-12-03T19:00:01Z")]),
            user("bob", 12, vec![reminder(1, "2026-12-03T19:00:00Z")]),
        ];
        let mut d = Deliveries::default();
        let due = d.take_due(&users, now, clock);
        let taken: Vec<(&str, i64, u64)> = due.iter().map(|d| (d.user.as_str(), d.chat_id, d.reminder.id)).collect();
        assert_eq!(taken, vec![("alice", 11, 1), ("bob", 12, 1)]);
        assert!(d.take_due(&users, now, clock).is_empty(), "in flight");
        d.set("uid-alice", &schedule::occurrence_key(&due[0].reminder), Progress::Sent);
        assert!(d.take_due(&users, now, clock).is_empty(), "sent, though the cache still lists it");
        // A send that failed is tried again, later.
        d.set(
            "uid-bob",
            &schedule::occurrence_key(&due[1].reminder),
            Progress::Failed { retry_at: clock + RETRY_AFTER },
        );
        assert!(d.take_due(&users, now, clock).is_empty());
        assert_eq!(d.take_due(&users, now, clock + RETRY_AFTER).len(), 1);
        // Once the store shows it gone, it is forgotten.
        let later = vec![user("alice", 11, vec![reminder(2, "2026-12-03T19:00:01Z")])];
        d.take_due(&later, now, clock);
        assert_eq!(d.progress.len(), 1, "only bob's, still sending: {:?}", d.progress);
    }

    #[test]
    fn a_second_object_claiming_someones_telegram_id_sends_nothing_there() {
        let created = |u: Arc<MoltmateUser>, at: i64| {
            let mut u = (*u).clone();
            u.metadata.creation_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::from_second(at).unwrap()));
            Arc::new(u)
        };
        let users = vec![
            created(user("alice", 11, vec![]), 10),
            created(user("mallory", 11, vec![reminder(1, "2026-12-03T10:00:00Z")]), 20),
        ];
        let mut d = Deliveries::default();
        assert!(d.take_due(&users, "2026-12-03T19:00:00Z".parse().unwrap(), Instant::now()).is_empty());
    }

    #[test]
    fn deleted_users_get_nothing() {
        let mut gone = (*user("carol", 13, vec![reminder(1, "2026-12-03T10:00:00Z")])).clone();
        gone.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::UNIX_EPOCH));
        let mut d = Deliveries::default();
        assert!(d.take_due(&[Arc::new(gone)], "2026-12-03T19:00:00Z".parse().unwrap(), Instant::now()).is_empty());
    }
}
