//! Usage, shared in the cluster: one ConfigMap in the gateway's namespace holds every user's
//! LLM tokens, LLM requests, web fetches and new reminders of the current UTC day, and the tokens and
//! requests of its month (today's included), so the budgets and what `/usage` shows survive a
//! gateway restart and every replica sees the same. Pure: reading, adding to and writing out
//! the record; `gateway::usage_sync` does the I/O, in batches.
//!
//! ```yaml
//! data:
//!   day: "2026-12-03"
//!   llm-tokens.alice: "18250"
//!   llm-requests.alice: "12"
//!   fetches.alice: "4"
//!   reminders.alice: "2"
//!   month.llm-tokens.alice: "402113"
//!   month.llm-requests.alice: "318"
//! ```

use std::collections::BTreeMap;

use super::limits::{DAY_MS, Unsynced, day_of};

/// The ConfigMap's name (fixed: the chart's Role names it).
pub const RECORD_NAME: &str = "moltmate-usage";
const DAY_KEY: &str = "day";
const LLM_PREFIX: &str = "llm-tokens.";
const REQUEST_PREFIX: &str = "llm-requests.";
const FETCH_PREFIX: &str = "fetches.";
const REMINDER_PREFIX: &str = "reminders.";
const MONTH_LLM_PREFIX: &str = "month.llm-tokens.";
const MONTH_REQUEST_PREFIX: &str = "month.llm-requests.";

/// One UTC day's counts by user, and its month's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecord {
    /// Days since the epoch; day counts of a record whose day has passed are void, and month
    /// counts too once its month has.
    pub day: i64,
    pub llm_tokens: BTreeMap<String, u64>,
    pub llm_requests: BTreeMap<String, u64>,
    pub fetches: BTreeMap<String, u64>,
    /// Reminders set (each one becomes a message).
    pub reminders: BTreeMap<String, u64>,
    /// The month of `day`, today's counts included.
    pub month_llm_tokens: BTreeMap<String, u64>,
    pub month_llm_requests: BTreeMap<String, u64>,
}

/// What the limiters counted since the last write: LLM tokens, LLM requests, fetches and
/// reminders set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counted {
    pub llm_tokens: Unsynced,
    pub llm_requests: Unsynced,
    pub fetches: Unsynced,
    pub reminders: Unsynced,
}

impl Counted {
    pub fn is_empty(&self) -> bool {
        [&self.llm_tokens, &self.llm_requests, &self.fetches, &self.reminders].iter().all(|c| c.counts.is_empty())
    }
}

impl UsageRecord {
    /// The record in a ConfigMap's data; entries it cannot read are left out (a count typed
    /// by hand wrongly is no reason to stop enforcing the others).
    pub fn from_data(data: Option<&BTreeMap<String, String>>) -> Self {
        let mut record = Self::default();
        let Some(data) = data else { return record };
        record.day = data.get(DAY_KEY).and_then(|d| parse_day(d)).unwrap_or(i64::MIN);
        for (key, value) in data {
            let Ok(count) = value.trim().parse::<u64>() else { continue };
            let (counts, user) = [
                (MONTH_LLM_PREFIX, &mut record.month_llm_tokens),
                (MONTH_REQUEST_PREFIX, &mut record.month_llm_requests),
                (LLM_PREFIX, &mut record.llm_tokens),
                (REQUEST_PREFIX, &mut record.llm_requests),
                (FETCH_PREFIX, &mut record.fetches),
                (REMINDER_PREFIX, &mut record.reminders),
            ]
            .into_iter()
            .find_map(|(prefix, counts)| Some((counts, key.strip_prefix(prefix)?)))
            .unzip();
            if let (Some(counts), Some(user)) = (counts, user) {
                counts.insert(user.to_string(), count);
            }
        }
        record
    }

    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::from([(DAY_KEY.to_string(), format_day(self.day))]);
        for (prefix, counts) in [
            (LLM_PREFIX, &self.llm_tokens),
            (REQUEST_PREFIX, &self.llm_requests),
            (FETCH_PREFIX, &self.fetches),
            (REMINDER_PREFIX, &self.reminders),
            (MONTH_LLM_PREFIX, &self.month_llm_tokens),
            (MONTH_REQUEST_PREFIX, &self.month_llm_requests),
        ] {
            data.extend(counts.iter().map(|(user, n)| (format!("{prefix}{user}"), n.to_string())));
        }
        data
    }

    /// The counts of `day`: this record's if it is of that day; a later day of the same month
    /// keeps the month's counts and starts the day's afresh; anything else starts afresh.
    pub fn of_day(&self, day: i64) -> Self {
        if self.day == day {
            return self.clone();
        }
        let mut fresh = Self { day, ..Self::default() };
        if day > self.day && month_of(day) == month_of(self.day) {
            fresh.month_llm_tokens = self.month_llm_tokens.clone();
            fresh.month_llm_requests = self.month_llm_requests.clone();
        }
        fresh
    }

    /// This record with the counts taken from the limiters added. Day counts of a day older
    /// than the record's are dropped (that day is over) but still count for its month if that
    /// is the record's; a record of an older day starts afresh.
    pub fn add(&self, counted: &Counted) -> Self {
        let day = [&counted.llm_tokens, &counted.llm_requests, &counted.fetches, &counted.reminders]
            .iter()
            .fold(self.day, |day, c| day.max(c.day));
        let mut next = self.of_day(day);
        let streams = [
            (&counted.llm_tokens, &mut next.llm_tokens, Some(&mut next.month_llm_tokens)),
            (&counted.llm_requests, &mut next.llm_requests, Some(&mut next.month_llm_requests)),
            (&counted.fetches, &mut next.fetches, None),
            (&counted.reminders, &mut next.reminders, None),
        ];
        for (unsynced, today, month) in streams {
            if unsynced.day == day {
                add_counts(today, unsynced);
            }
            if let Some(month) = month
                && unsynced.day <= day
                && month_of(unsynced.day) == month_of(day)
            {
                add_counts(month, unsynced);
            }
        }
        next
    }

    /// `user`'s figures of `today` (a record of an earlier day gives its month's, if the same).
    pub fn figures(&self, user: &str, today: i64) -> UsageFigures {
        let record = self.of_day(today);
        let count = |counts: &BTreeMap<String, u64>| counts.get(user).copied().unwrap_or(0);
        UsageFigures {
            tokens_today: count(&record.llm_tokens),
            requests_today: count(&record.llm_requests),
            tokens_month: count(&record.month_llm_tokens),
            requests_month: count(&record.month_llm_requests),
        }
    }
}

/// One user's LLM usage, as `/usage` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageFigures {
    pub tokens_today: u64,
    pub requests_today: u64,
    pub tokens_month: u64,
    pub requests_month: u64,
}

fn add_counts(counts: &mut BTreeMap<String, u64>, unsynced: &Unsynced) {
    for (user, delta) in &unsynced.counts {
        let count = counts.get(user).copied().unwrap_or(0).saturating_add_signed(*delta);
        if count == 0 {
            counts.remove(user);
        } else {
            counts.insert(user.clone(), count);
        }
    }
}

/// The UTC month of a day, as (year, month).
fn month_of(day: i64) -> Option<(i16, i8)> {
    let date = jiff::Timestamp::from_millisecond(day.checked_mul(DAY_MS)?).ok()?.to_zoned(jiff::tz::TimeZone::UTC);
    Some((date.year(), date.month()))
}

fn format_day(day: i64) -> String {
    match jiff::Timestamp::from_millisecond(day.saturating_mul(DAY_MS)) {
        Ok(t) => t.to_zoned(jiff::tz::TimeZone::UTC).date().to_string(),
        Err(_) => String::new(),
    }
}

fn parse_day(text: &str) -> Option<i64> {
    let date: jiff::civil::Date = text.trim().parse().ok()?;
    let start = date.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp();
    Some(day_of(start.as_millisecond()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2024-10-04 at 12:00 UTC.
    const NOON: i64 = 20_000 * DAY_MS + DAY_MS / 2;

    fn unsynced(day: i64, counts: &[(&str, i64)]) -> Unsynced {
        Unsynced { day, counts: counts.iter().map(|(u, n)| (u.to_string(), *n)).collect() }
    }

    /// Tokens and fetches of one day (no requests).
    fn counted(day: i64, tokens: &[(&str, i64)], fetches: &[(&str, i64)]) -> Counted {
        Counted {
            llm_tokens: unsynced(day, tokens),
            llm_requests: unsynced(day, &[]),
            fetches: unsynced(day, fetches),
            reminders: unsynced(day, &[]),
        }
    }

    #[test]
    fn the_record_reads_back_what_it_wrote() {
        let today = day_of(NOON);
        let record =
            UsageRecord::default().of_day(today).add(&counted(today, &[("alice", 1200), ("bob", 7)], &[("alice", 3)]));
        let data = record.to_data();
        assert_eq!(data["day"], "2024-10-04");
        assert_eq!((data["llm-tokens.alice"].as_str(), data["fetches.alice"].as_str()), ("1200", "3"));
        assert_eq!(UsageRecord::from_data(Some(&data)), record);
        assert_eq!(UsageRecord::from_data(None), UsageRecord::default());
    }

    #[test]
    fn counts_add_up_and_a_new_day_starts_afresh() {
        let today = day_of(NOON);
        let record = UsageRecord {
            day: today,
            llm_tokens: BTreeMap::from([("alice".into(), 1000), ("bob".into(), 50)]),
            ..UsageRecord::default()
        };
        let next = record.add(&counted(today, &[("alice", 200), ("bob", -50)], &[]));
        assert_eq!(next.llm_tokens, BTreeMap::from([("alice".into(), 1200)]), "a count back at zero goes");
        let tomorrow = record.add(&counted(today + 1, &[("alice", 5)], &[]));
        assert_eq!((tomorrow.day, tomorrow.llm_tokens["alice"]), (today + 1, 5));
        // A replica whose clock is still on yesterday adds nothing to today's counts, only
        // to the month's.
        let late = tomorrow.add(&counted(today, &[("alice", 99)], &[]));
        assert_eq!(
            (late.llm_tokens.clone(), late.fetches.clone()),
            (tomorrow.llm_tokens.clone(), tomorrow.fetches.clone())
        );
        assert_eq!(late.month_llm_tokens["alice"], tomorrow.month_llm_tokens["alice"] + 99);
        // More given back than written (a restart lost a charge) stops at zero.
        assert_eq!(record.add(&counted(today, &[("bob", -80)], &[])).llm_tokens.get("bob"), None);
    }

    #[test]
    fn entries_typed_wrongly_by_hand_are_left_out() {
        let data = BTreeMap::from([
            ("day".to_string(), "yesterday".to_string()),
            ("llm-tokens.alice".to_string(), "12k".to_string()),
            ("llm-tokens.bob".to_string(), " 40 ".to_string()),
            ("notes".to_string(), "hello".to_string()),
        ]);
        let record = UsageRecord::from_data(Some(&data));
        assert_eq!(record.llm_tokens, BTreeMap::from([("bob".into(), 40)]));
        assert_eq!(record.of_day(day_of(NOON)).llm_tokens, BTreeMap::new(), "a record without a day counts for none");
    }

    #[test]
    fn the_month_adds_up_the_days_and_starts_afresh_with_the_next() {
        // 2024-10-04 is day_of(NOON); the month ends 27 days later.
        let today = day_of(NOON);
        let requests = |day, n| Counted {
            llm_tokens: unsynced(day, &[("alice", n * 100)]),
            llm_requests: unsynced(day, &[("alice", n)]),
            fetches: unsynced(day, &[]),
            reminders: unsynced(day, &[("alice", n)]),
        };
        let first = UsageRecord::default().of_day(today).add(&requests(today, 2));
        let second = first.add(&requests(today + 1, 3));
        assert_eq!(
            second.figures("alice", today + 1),
            UsageFigures { tokens_today: 300, requests_today: 3, tokens_month: 500, requests_month: 5 }
        );
        let data = second.to_data();
        assert_eq!((data["month.llm-tokens.alice"].as_str(), data["llm-requests.alice"].as_str()), ("500", "3"));
        assert_eq!(data["reminders.alice"], "3", "reminders set today");
        assert_eq!(UsageRecord::from_data(Some(&data)), second);
        // Read on a later day of the month, before anyone counted: the month stands, the day is new.
        assert_eq!(
            second.figures("alice", today + 5),
            UsageFigures { tokens_today: 0, requests_today: 0, tokens_month: 500, requests_month: 5 }
        );
        // November starts afresh.
        let november = second.add(&requests(today + 28, 1));
        assert_eq!(
            november.figures("alice", today + 28),
            UsageFigures { tokens_today: 100, requests_today: 1, tokens_month: 100, requests_month: 1 }
        );
        assert_eq!(second.figures("alice", today + 28), UsageFigures::default());
        assert_eq!(second.figures("bob", today + 1), UsageFigures::default());
    }
}
