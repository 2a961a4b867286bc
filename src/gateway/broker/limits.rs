//! Per-user LLM limits: requests per minute (sliding window) and tokens per UTC day. Pure:
//! every call takes the time explicitly (milliseconds since the Unix epoch), so tests need
//! no clock.
//!
//! The day's counts are shared through a record in the cluster (see `usage`): what this
//! process counted since it last wrote there is `unsynced`, taken by the writer and settled
//! with the record's totals, so a restart keeps the day and replicas share one budget. The
//! minute window stays in each process: with N replicas a user may make up to N times the
//! per-minute rate, never more than the day's budget.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::profile::LlmLimits;

pub const MINUTE_MS: i64 = 60_000;
pub const DAY_MS: i64 = 86_400_000;

/// Why a request is not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// `per_minute` requests were made in the last minute; the oldest leaves the window in
    /// `retry_after_secs` (rounded up, at least 1).
    Rate { per_minute: u32, retry_after_secs: u64 },
    /// `per_day` tokens were used today (UTC).
    Budget { per_day: u64, used: u64 },
}

impl Limited {
    /// The message the agent (and the model's operator) reads. `profile` as in the spec.
    pub fn message(&self, profile: &str) -> String {
        match self {
            Limited::Rate { per_minute, retry_after_secs } => format!(
                "rate limit: {per_minute} requests per minute for profile {profile}; try again in {retry_after_secs} s"
            ),
            Limited::Budget { per_day, .. } => {
                format!("daily token budget of {per_day} used up; resets at 00:00 UTC")
            }
        }
    }
}

#[derive(Debug, Default)]
struct Usage {
    /// Admission times within the last minute, oldest first.
    window: VecDeque<i64>,
    /// The UTC day (days since the epoch) `tokens` belongs to.
    day: i64,
    /// Today's count: the shared record's, plus what this process counted since.
    tokens: u64,
    /// What this process counted (estimates taken back included) not yet in the shared record.
    unsynced: i64,
}

impl Usage {
    fn roll(&mut self, now_ms: i64) {
        while self.window.front().is_some_and(|&t| t <= now_ms - MINUTE_MS) {
            self.window.pop_front();
        }
        let today = day_of(now_ms);
        if today != self.day {
            self.day = today;
            self.tokens = 0;
            self.unsynced = 0;
        }
    }
}

/// The UTC day of a time, in days since the epoch.
pub fn day_of(now_ms: i64) -> i64 {
    now_ms.div_euclid(DAY_MS)
}

/// Counts of one day not yet in the shared record, by user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unsynced {
    pub day: i64,
    pub counts: BTreeMap<String, i64>,
}

/// The limiter of all users, keyed by user name.
#[derive(Debug, Default)]
pub struct Limiter {
    users: HashMap<String, Usage>,
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Admit one request of `user` at `now_ms`, counting it against the minute window, or say
    /// why not. Refused requests are not counted.
    pub fn admit(&mut self, user: &str, limits: LlmLimits, now_ms: i64) -> Result<(), Limited> {
        let usage = self.users.entry(user.to_string()).or_default();
        usage.roll(now_ms);
        if usage.tokens >= limits.tokens_per_day {
            return Err(Limited::Budget { per_day: limits.tokens_per_day, used: usage.tokens });
        }
        if usage.window.len() >= limits.requests_per_minute as usize {
            let oldest = usage.window.front().copied().unwrap_or(now_ms);
            let wait_ms = (oldest + MINUTE_MS - now_ms).max(1);
            let retry_after_secs = (wait_ms as u64).div_ceil(1000);
            return Err(Limited::Rate { per_minute: limits.requests_per_minute, retry_after_secs });
        }
        usage.window.push_back(now_ms);
        Ok(())
    }

    /// Count tokens the provider reported for `user` against today's budget. Also how a
    /// request's estimate is charged before it is forwarded: an answer that never arrives whole
    /// (too large, too late) is billed by the provider all the same.
    pub fn record_tokens(&mut self, user: &str, tokens: u64, now_ms: i64) {
        let usage = self.users.entry(user.to_string()).or_default();
        usage.roll(now_ms);
        usage.tokens = usage.tokens.saturating_add(tokens);
        usage.unsynced = usage.unsynced.saturating_add_unsigned(tokens);
    }

    /// Take back an estimate charged with `record_tokens`: the provider reported what the
    /// request really used, or never took it.
    pub fn release_tokens(&mut self, user: &str, tokens: u64, now_ms: i64) {
        let usage = self.users.entry(user.to_string()).or_default();
        usage.roll(now_ms);
        let taken = usage.tokens.min(tokens);
        usage.tokens -= taken;
        usage.unsynced = usage.unsynced.saturating_sub_unsigned(taken);
    }

    /// Today's counts not yet in the shared record, cleared here: the caller writes them, then
    /// hands the record's totals to `settle`, or gives them back with `restore`.
    pub fn take_unsynced(&mut self, now_ms: i64) -> Unsynced {
        let day = day_of(now_ms);
        let mut counts = BTreeMap::new();
        for (user, usage) in &mut self.users {
            usage.roll(now_ms);
            if usage.unsynced != 0 {
                counts.insert(user.clone(), std::mem::take(&mut usage.unsynced));
            }
        }
        Unsynced { day, counts }
    }

    /// Counts taken but not written (the record could not be updated): unsynced again.
    pub fn restore(&mut self, taken: Unsynced, now_ms: i64) {
        for (user, count) in taken.counts {
            let usage = self.users.entry(user).or_default();
            usage.roll(now_ms);
            if usage.day == taken.day {
                usage.unsynced = usage.unsynced.saturating_add(count);
            }
        }
    }

    /// The shared record's totals of `day` (every process's counts, this one's up to its last
    /// `take_unsynced`): today's count becomes those plus what was counted here since.
    pub fn settle(&mut self, day: i64, totals: &BTreeMap<String, u64>, now_ms: i64) {
        if day != day_of(now_ms) {
            return;
        }
        for user in totals.keys() {
            self.users.entry(user.clone()).or_default();
        }
        for (user, usage) in &mut self.users {
            usage.roll(now_ms);
            let total = totals.get(user).copied().unwrap_or(0);
            usage.tokens = total.saturating_add_signed(usage.unsynced);
        }
    }

    /// (requests in the last minute, tokens used today) of `user`.
    pub fn usage(&mut self, user: &str, now_ms: i64) -> (usize, u64) {
        match self.users.get_mut(user) {
            Some(usage) => {
                usage.roll(now_ms);
                (usage.window.len(), usage.tokens)
            }
            None => (0, 0),
        }
    }

    /// Forget users not in `keep` (deleted users), so the map stays as small as the user list.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.users.retain(|name, _| keep(name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: LlmLimits = LlmLimits { requests_per_minute: 3, tokens_per_day: 1000 };
    /// Some day at 12:00 UTC.
    const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

    #[test]
    fn the_window_slides() {
        let mut l = Limiter::new();
        for i in 0..3 {
            assert_eq!(l.admit("a", L, NOON + i * 1000), Ok(()));
        }
        // The fourth within the minute is refused, and says when the first one leaves.
        assert_eq!(l.admit("a", L, NOON + 10_000), Err(Limited::Rate { per_minute: 3, retry_after_secs: 50 }));
        // Refusals are not counted: exactly when the first leaves, one more fits.
        assert_eq!(l.admit("a", L, NOON + MINUTE_MS - 1), Err(Limited::Rate { per_minute: 3, retry_after_secs: 1 }));
        assert_eq!(l.admit("a", L, NOON + MINUTE_MS), Ok(()));
        assert!(l.admit("a", L, NOON + MINUTE_MS + 1).is_err());
        assert_eq!(l.usage("a", NOON + MINUTE_MS + 1).0, 3);
        assert_eq!(l.usage("a", NOON + 10 * MINUTE_MS).0, 0);
    }

    #[test]
    fn users_do_not_share_limits() {
        let mut l = Limiter::new();
        for i in 0..3 {
            l.admit("a", L, NOON + i).unwrap();
        }
        assert!(l.admit("a", L, NOON + 5).is_err());
        assert_eq!(l.admit("b", L, NOON + 5), Ok(()));
        l.record_tokens("b", 5000, NOON + 6);
        assert!(matches!(l.admit("b", L, NOON + 7), Err(Limited::Budget { .. })));
        assert_eq!(l.usage("a", NOON + 7).1, 0);
    }

    #[test]
    fn the_token_budget_resets_at_midnight_utc() {
        let mut l = Limiter::new();
        let limits = LlmLimits { requests_per_minute: 100, tokens_per_day: 1000 };
        l.admit("a", limits, NOON).unwrap();
        l.record_tokens("a", 999, NOON);
        // Under the budget still admits (the budget is checked before, usage counted after).
        l.admit("a", limits, NOON + 1).unwrap();
        l.record_tokens("a", 10, NOON + 2);
        assert_eq!(l.admit("a", limits, NOON + 3), Err(Limited::Budget { per_day: 1000, used: 1009 }));
        let last_ms_of_day = NOON - DAY_MS / 2 + DAY_MS - 1;
        assert!(l.admit("a", limits, last_ms_of_day).is_err());
        assert_eq!(l.admit("a", limits, last_ms_of_day + 1), Ok(()));
        assert_eq!(l.usage("a", last_ms_of_day + 1).1, 0);
    }

    #[test]
    fn zero_limits_admit_nothing() {
        let mut l = Limiter::new();
        assert!(matches!(
            l.admit("a", LlmLimits { requests_per_minute: 0, tokens_per_day: 10 }, NOON),
            Err(Limited::Rate { .. })
        ));
        assert!(matches!(
            l.admit("a", LlmLimits { requests_per_minute: 5, tokens_per_day: 0 }, NOON),
            Err(Limited::Budget { .. })
        ));
    }

    #[test]
    fn messages_give_the_reason() {
        assert_eq!(
            Limited::Rate { per_minute: 10, retry_after_secs: 7 }.message("public"),
            "rate limit: 10 requests per minute for profile public; try again in 7 s"
        );
        assert_eq!(
            Limited::Budget { per_day: 100000, used: 100020 }.message("public"),
            "daily token budget of 100000 used up; resets at 00:00 UTC"
        );
    }

    #[test]
    fn counts_are_shared_through_the_record_and_nothing_is_counted_twice() {
        let (mut here, mut there) = (Limiter::new(), Limiter::new());
        let limits = LlmLimits { requests_per_minute: 100, tokens_per_day: 1000 };
        here.record_tokens("a", 600, NOON);
        // The estimate charged before forwarding, settled after.
        here.record_tokens("a", 300, NOON);
        here.release_tokens("a", 300, NOON + 1);
        let taken = here.take_unsynced(NOON + 2);
        assert_eq!(taken, Unsynced { day: day_of(NOON), counts: BTreeMap::from([("a".to_string(), 600)]) });
        assert_eq!(here.take_unsynced(NOON + 2).counts, BTreeMap::new(), "taken once");
        // Written to the record; meanwhile 50 more here.
        let record = BTreeMap::from([("a".to_string(), 600), ("b".to_string(), 7)]);
        here.record_tokens("a", 50, NOON + 3);
        here.settle(day_of(NOON), &record, NOON + 4);
        assert_eq!(here.usage("a", NOON + 4).1, 650);
        assert_eq!(here.usage("b", NOON + 4).1, 7, "another replica's user");
        // Another replica (or this one after a restart) reads the record: the day is not reset.
        there.settle(day_of(NOON), &record, NOON + 5);
        there.record_tokens("a", 400, NOON + 6);
        assert_eq!(there.admit("a", limits, NOON + 7), Err(Limited::Budget { per_day: 1000, used: 1000 }));
        // A record of another day counts for nothing today.
        let mut fresh = Limiter::new();
        fresh.settle(day_of(NOON) - 1, &record, NOON);
        assert_eq!(fresh.usage("a", NOON).1, 0);
    }

    #[test]
    fn counts_that_could_not_be_written_are_written_later() {
        let mut l = Limiter::new();
        l.record_tokens("a", 100, NOON);
        let taken = l.take_unsynced(NOON + 1);
        l.record_tokens("a", 5, NOON + 2);
        l.restore(taken.clone(), NOON + 3);
        assert_eq!(l.take_unsynced(NOON + 4).counts["a"], 105);
        // Restored after midnight: yesterday's counts are gone with yesterday.
        l.restore(taken, NOON + DAY_MS);
        assert_eq!(l.take_unsynced(NOON + DAY_MS).counts, BTreeMap::new());
        // An estimate given back after its charge was written is written as a negative count.
        l.record_tokens("b", 300, NOON + DAY_MS);
        l.take_unsynced(NOON + DAY_MS);
        l.release_tokens("b", 300, NOON + DAY_MS);
        assert_eq!(l.take_unsynced(NOON + DAY_MS).counts["b"], -300);
    }

    #[test]
    fn retain_forgets_deleted_users() {
        let mut l = Limiter::new();
        l.admit("a", L, NOON).unwrap();
        l.admit("b", L, NOON).unwrap();
        l.retain(|n| n == "b");
        assert_eq!(l.usage("a", NOON), (0, 0));
        assert_eq!(l.usage("b", NOON), (1, 0));
    }
}
