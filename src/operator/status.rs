//! The status a user sees in `kubectl get mmu`: phase and a kstatus-style `Ready` condition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{MoltmateUserStatus, Phase};

/// Why a user is where it is; becomes the `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub phase: Phase,
    pub reason: &'static str,
    pub message: String,
    /// Look again after this long even if nothing changes (e.g. when the user goes idle).
    pub recheck_after: Option<std::time::Duration>,
    /// The reset generation the workspace volume was made for (only once a user was reset).
    pub reset_applied: Option<i64>,
}

impl Observation {
    pub fn new(phase: Phase, reason: &'static str, message: impl Into<String>) -> Self {
        Self { phase, reason, message: message.into(), recheck_after: None, reset_applied: None }
    }

    pub fn recheck_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.recheck_after = after;
        self
    }
}

/// The status to write, keeping `lastTransitionTime` while the condition's status holds.
/// `lastActivity` is the gateway's field: carried over as it is, so that comparing with the
/// previous status sees no change there, and left out of what the operator applies.
pub fn next_status(
    previous: Option<&MoltmateUserStatus>,
    generation: Option<i64>,
    namespace: Option<String>,
    observation: &Observation,
    now: Time,
) -> MoltmateUserStatus {
    let ready = if observation.phase == Phase::Ready { "True" } else { "False" };
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let last_transition_time = match previous_ready {
        Some(c) if c.status == ready => c.last_transition_time.clone(),
        _ => now,
    };
    MoltmateUserStatus {
        observed_generation: generation,
        phase: Some(observation.phase),
        namespace,
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason: observation.reason.into(),
            message: observation.message.clone(),
            observed_generation: generation,
            last_transition_time,
        }],
        // Never goes back: a lowered spec wipes nothing, so the highest applied one stands.
        reset_generation: observation.reset_applied.max(previous.and_then(|s| s.reset_generation)),
        last_activity: previous.and_then(|s| s.last_activity.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn ready_condition_mirrors_the_phase() {
        let obs = Observation::new(Phase::Ready, "AgentReady", "agent pod is serving");
        let s = next_status(None, Some(3), Some("moltmate-a".into()), &obs, at(10));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.observed_generation, Some(3));
        let c = &s.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str(), c.reason.as_str()), ("Ready", "True", "AgentReady"));

        let failed = Observation::new(Phase::Failed, "DuplicateTelegramId", "taken");
        let s2 = next_status(Some(&s), Some(4), None, &failed, at(20));
        assert_eq!(s2.conditions[0].status, "False");
        assert_eq!(s2.conditions[0].last_transition_time, at(20));
    }

    #[test]
    fn transition_time_holds_while_status_holds() {
        let provisioning = Observation::new(Phase::Provisioning, "WaitingForPod", "x");
        let first = next_status(None, Some(1), None, &provisioning, at(10));
        let suspended = Observation::new(Phase::Suspended, "Suspended", "y");
        let second = next_status(Some(&first), Some(2), None, &suspended, at(99));
        assert_eq!(second.conditions[0].last_transition_time, at(10), "still False");
    }

    #[test]
    fn reset_generation_never_goes_back_and_the_gateways_activity_is_carried_over() {
        let applied = Observation { reset_applied: Some(2), ..Observation::new(Phase::Ready, "AgentReady", "serving") };
        let first = next_status(None, Some(1), None, &applied, at(10));
        assert_eq!(first.reset_generation, Some(2));
        assert_eq!(first.last_activity, None);
        let stamped = MoltmateUserStatus { last_activity: Some("2025-03-01T10:00:00Z".into()), ..first.clone() };
        let later = Observation::new(Phase::Idle, "Idle", "no messages");
        let second = next_status(Some(&stamped), Some(1), None, &later, at(20));
        assert_eq!(second.reset_generation, Some(2), "kept while no agent serves");
        assert_eq!(second.last_activity.as_deref(), Some("2025-03-01T10:00:00Z"), "the gateway's field, as it was");
        let lower = Observation { reset_applied: Some(1), ..Observation::new(Phase::Ready, "AgentReady", "serving") };
        assert_eq!(next_status(Some(&first), Some(2), None, &lower, at(30)).reset_generation, Some(2));
        // Unchanged inputs give an unchanged status: nothing to write in steady state.
        assert_eq!(next_status(Some(&stamped), Some(1), None, &applied, at(99)), stamped);
    }
}
