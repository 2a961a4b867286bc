//! Idle users: no messages for `idleTimeout` and the agent pod goes; a message brings it back.
//!
//! The gateway stamps each user's last message time on the MoltmateUser (an annotation,
//! at most once a minute); this decides, purely, whether that user is idle now.

use std::time::Duration;

use jiff::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleState {
    /// Keep the agent; look again after `idle_in`.
    Active { idle_in: Duration },
    /// No activity for longer than the timeout.
    Idle,
}

/// The agent pod, as far as idling goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// No pod (or one on its way out).
    Absent,
    /// Created, not Ready yet: a start, perhaps a wake, in progress.
    Starting,
    /// Ready since then.
    ReadySince(Timestamp),
}

/// Idle when neither the last message, the user's creation nor the agent becoming Ready is
/// within `timeout` of `now`. A starting agent is never idle: a message that woke it is still
/// waiting for it, however long the start takes. An unreadable annotation counts as absent
/// rather than as activity.
pub fn activity(
    now: Timestamp,
    created: Option<Timestamp>,
    last_activity: Option<&str>,
    agent: Agent,
    timeout: Duration,
) -> IdleState {
    let ready_since = match agent {
        Agent::Starting => return IdleState::Active { idle_in: timeout },
        Agent::ReadySince(at) => Some(at),
        Agent::Absent => None,
    };
    let last = last_activity.and_then(|text| text.parse::<Timestamp>().ok());
    let reference = [created, last, ready_since].into_iter().flatten().max().unwrap_or(now);
    let elapsed = now.duration_since(reference);
    let timeout_signed = jiff::SignedDuration::try_from(timeout).unwrap_or(jiff::SignedDuration::MAX);
    if elapsed >= timeout_signed {
        IdleState::Idle
    } else {
        let remaining = timeout_signed - elapsed.max(jiff::SignedDuration::ZERO);
        IdleState::Active { idle_in: Duration::try_from(remaining).unwrap_or(timeout) }
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
        let active = |s: u64| IdleState::Active { idle_in: Duration::from_secs(s) };
        let stamp = |s: i64| t(s).to_string();
        let cases = [
            // (now, created, last activity, agent, expected)
            (t(30), Some(t(0)), None, Agent::Absent, active(30)),
            (t(60), Some(t(0)), None, Agent::Absent, IdleState::Idle),
            (t(100), Some(t(0)), Some(stamp(90)), Agent::Absent, active(50)),
            (t(200), Some(t(0)), Some(stamp(90)), Agent::Absent, IdleState::Idle),
            (t(100), Some(t(0)), Some("yesterday".to_string()), Agent::Absent, IdleState::Idle),
            // A clock ahead of ours never makes the wait longer than the timeout.
            (t(100), Some(t(0)), Some(stamp(500)), Agent::Absent, active(60)),
            (t(10), None, None, Agent::Absent, active(60)),
            // A start slower than the timeout is not cut short: the message that woke the
            // agent is waiting for it, and the countdown runs from the moment it is Ready.
            (t(200), Some(t(0)), Some(stamp(90)), Agent::Starting, active(60)),
            (t(200), Some(t(0)), Some(stamp(90)), Agent::ReadySince(t(180)), active(40)),
            (t(300), Some(t(0)), Some(stamp(90)), Agent::ReadySince(t(180)), IdleState::Idle),
            (t(200), Some(t(0)), Some(stamp(190)), Agent::ReadySince(t(100)), active(50)),
        ];
        for (now, created, last, agent, expected) in cases {
            assert_eq!(
                activity(now, created, last.as_deref(), agent, min),
                expected,
                "now {now}, last {last:?}, {agent:?}"
            );
        }
    }
}
