//! Idle users: no messages for `idleTimeout` and the agent pod goes; a message brings it back.
//!
//! The gateway stamps each user's last message time on the MoltmateUser (an annotation,
//! at most once a minute); this decides, purely, whether that user is idle now.

use std::time::Duration;

use jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Keep the agent; look again after `idle_in`.
    Active { idle_in: Duration },
    /// No activity for longer than the timeout.
    Idle,
}

/// Idle when neither the last message nor the user's creation is within `timeout` of `now`.
/// An unreadable annotation counts as absent rather than as activity.
pub fn activity(
    now: Timestamp,
    created: Option<Timestamp>,
    last_activity: Option<&str>,
    timeout: Duration,
) -> Activity {
    let last = last_activity.and_then(|text| text.parse::<Timestamp>().ok());
    let reference = match (created, last) {
        (Some(c), Some(l)) => c.max(l),
        (c, l) => c.or(l).unwrap_or(now),
    };
    let elapsed = now.duration_since(reference);
    let timeout_signed = jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX);
    if elapsed >= timeout_signed {
        Activity::Idle
    } else {
        let remaining = timeout_signed - elapsed.max(jiff::SignedDuration::ZERO);
        Activity::Active { idle_in: Duration::try_from(remaining).unwrap_or(timeout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn idle_decisions() {
        let min = Duration::from_secs(60);
        let active = |s: u64| Activity::Active { idle_in: Duration::from_secs(s) };
        let stamp = |s: i64| t(s).to_string();
        let cases = [
            // (now, created, last activity, expected)
            (t(30), Some(t(0)), None, active(30)),
            (t(60), Some(t(0)), None, Activity::Idle),
            (t(100), Some(t(0)), Some(stamp(90)), active(50)),
            (t(200), Some(t(0)), Some(stamp(90)), Activity::Idle),
            (t(100), Some(t(0)), Some("yesterday".to_string()), Activity::Idle),
            // A clock ahead of ours never makes the wait longer than the timeout.
            (t(100), Some(t(0)), Some(stamp(500)), active(60)),
            (t(10), None, None, active(60)),
        ];
        for (now, created, last, expected) in cases {
            assert_eq!(activity(now, created, last.as_deref(), min), expected, "now {now}, last {last:?}");
        }
    }
}
