//! Per-user LLM limits: requests per minute (sliding window) and tokens per UTC day. Pure:
//! every call takes the time explicitly (milliseconds since the Unix epoch), so tests need
//! no clock.
//!
//! The state lives in memory in one gateway process: a restarted gateway starts every user
//! afresh, and with several replicas each enforces the limits on its own share of the
//! requests. (The gateway runs as one replica; a shared store would be needed otherwise.)

use std::collections::{HashMap, VecDeque};

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
    tokens: u64,
}

impl Usage {
    fn roll(&mut self, now_ms: i64) {
        while self.window.front().is_some_and(|&t| t <= now_ms - MINUTE_MS) {
            self.window.pop_front();
        }
        let today = now_ms.div_euclid(DAY_MS);
        if today != self.day {
            self.day = today;
            self.tokens = 0;
        }
    }
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
    }

    /// Take back an estimate charged with `record_tokens`: the provider reported what the
    /// request really used, or never took it.
    pub fn release_tokens(&mut self, user: &str, tokens: u64, now_ms: i64) {
        let usage = self.users.entry(user.to_string()).or_default();
        usage.roll(now_ms);
        usage.tokens = usage.tokens.saturating_sub(tokens);
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
    fn retain_forgets_deleted_users() {
        let mut l = Limiter::new();
        l.admit("a", L, NOON).unwrap();
        l.admit("b", L, NOON).unwrap();
        l.retain(|n| n == "b");
        assert_eq!(l.usage("a", NOON), (0, 0));
        assert_eq!(l.usage("b", NOON), (1, 0));
    }
}
