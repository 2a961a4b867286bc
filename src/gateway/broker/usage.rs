//! The day's usage, shared in the cluster: one ConfigMap in the gateway's namespace holds
//! every user's LLM tokens and web fetches of the current UTC day, so the budgets survive a
//! gateway restart and every replica enforces the same ones. Pure: reading, adding to and
//! writing out the record; `gateway::usage_sync` does the I/O, in batches.
//!
//! ```yaml
//! data:
//!   day: "2026-12-03"
//!   llm-tokens.alice: "18250"
//!   fetches.alice: "4"
//! ```

use std::collections::BTreeMap;

use super::limits::{DAY_MS, Unsynced, day_of};

/// The ConfigMap's name (fixed: the chart's Role names it).
pub const RECORD_NAME: &str = "moltmate-usage";
const DAY_KEY: &str = "day";
const LLM_PREFIX: &str = "llm-tokens.";
const FETCH_PREFIX: &str = "fetches.";

/// One UTC day's counts by user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageRecord {
    /// Days since the epoch; counts of a record whose day has passed are void.
    pub day: i64,
    pub llm_tokens: BTreeMap<String, u64>,
    pub fetches: BTreeMap<String, u64>,
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
            if let Some(user) = key.strip_prefix(LLM_PREFIX) {
                record.llm_tokens.insert(user.to_string(), count);
            } else if let Some(user) = key.strip_prefix(FETCH_PREFIX) {
                record.fetches.insert(user.to_string(), count);
            }
        }
        record
    }

    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::from([(DAY_KEY.to_string(), format_day(self.day))]);
        let entries = |prefix: &str, counts: &BTreeMap<String, u64>| {
            counts.iter().map(|(user, n)| (format!("{prefix}{user}"), n.to_string())).collect::<Vec<_>>()
        };
        data.extend(entries(LLM_PREFIX, &self.llm_tokens));
        data.extend(entries(FETCH_PREFIX, &self.fetches));
        data
    }

    /// The counts of `day`: this record's if it is of that day, else none.
    pub fn of_day(&self, day: i64) -> Self {
        if self.day == day { self.clone() } else { Self { day, ..Self::default() } }
    }

    /// This record with the counts taken from the limiters added. Counts of a day older than
    /// the record's are dropped (that day is over); a record of an older day starts afresh.
    pub fn add(&self, llm_tokens: &Unsynced, fetches: &Unsynced) -> Self {
        let day = self.day.max(llm_tokens.day).max(fetches.day);
        let mut next = self.of_day(day);
        for (unsynced, counts) in [(llm_tokens, &mut next.llm_tokens), (fetches, &mut next.fetches)] {
            if unsynced.day != day {
                continue;
            }
            for (user, delta) in &unsynced.counts {
                let count = counts.get(user).copied().unwrap_or(0).saturating_add_signed(*delta);
                if count == 0 {
                    counts.remove(user);
                } else {
                    counts.insert(user.clone(), count);
                }
            }
        }
        next
    }
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

    #[test]
    fn the_record_reads_back_what_it_wrote() {
        let today = day_of(NOON);
        let record = UsageRecord::default()
            .of_day(today)
            .add(&unsynced(today, &[("alice", 1200), ("bob", 7)]), &unsynced(today, &[("alice", 3)]));
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
            fetches: BTreeMap::new(),
        };
        let next = record.add(&unsynced(today, &[("alice", 200), ("bob", -50)]), &unsynced(today, &[]));
        assert_eq!(next.llm_tokens, BTreeMap::from([("alice".into(), 1200)]), "a count back at zero goes");
        let tomorrow = record.add(&unsynced(today + 1, &[("alice", 5)]), &unsynced(today + 1, &[]));
        assert_eq!((tomorrow.day, tomorrow.llm_tokens["alice"]), (today + 1, 5));
        // A replica whose clock is still on yesterday adds nothing to today's record.
        let late = tomorrow.add(&unsynced(today, &[("alice", 99)]), &unsynced(today, &[]));
        assert_eq!(late, tomorrow);
        // More given back than written (a restart lost a charge) stops at zero.
        assert_eq!(record.add(&unsynced(today, &[("bob", -80)]), &unsynced(today, &[])).llm_tokens.get("bob"), None);
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
}
