//! The status a user sees in `kubectl get mmu`: the phase, and conditions by the kstatus rules
//! that GitOps tools read (Flux's `wait`, Argo CD's health, `kubectl wait`):
//!
//! | phase | Ready | AgentReady | Reconciling | Stalled |
//! |---|---|---|---|---|
//! | Pending, Provisioning | False | False | True | False |
//! | Ready | True | True | False | False |
//! | Idle, Suspended | True (settled as asked) | False | False | False |
//! | Failed | False | False | False | True |

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{MoltmateUserStatus, Phase};

/// Why a user is where it is: the `reason` of every condition and of the event that
/// announces it, as `kubectl get mmu` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Ready: the agent pod runs and is ready.
    AgentReady,
    PodStarting,
    /// The pod's spec changed, or it ended: it is being replaced (the workspace is kept).
    PodReplacing,
    PodTerminating,
    /// The ResourceQuota is not yet in force; nothing runs uncharged meanwhile.
    WaitingForQuota,
    /// The broker Service does not exist yet.
    WaitingForGateway,
    Resetting,
    Suspended,
    Idle,
    InvalidName,
    InvalidSpec,
    /// An older MoltmateUser holds the same Telegram id.
    DuplicateTelegramId,
    /// The namespace exists and is not ours.
    NamespaceConflict,
    /// A retained namespace belongs to another Telegram id.
    WorkspaceOfAnotherPerson,
    ImagePullSecretMissing,
    /// An API call failed; retried with backoff.
    ApplyFailed,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::AgentReady,
        Reason::PodStarting,
        Reason::PodReplacing,
        Reason::PodTerminating,
        Reason::WaitingForQuota,
        Reason::WaitingForGateway,
        Reason::Resetting,
        Reason::Suspended,
        Reason::Idle,
        Reason::InvalidName,
        Reason::InvalidSpec,
        Reason::DuplicateTelegramId,
        Reason::NamespaceConflict,
        Reason::WorkspaceOfAnotherPerson,
        Reason::ImagePullSecretMissing,
        Reason::ApplyFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::AgentReady => "AgentReady",
            Reason::PodStarting => "PodStarting",
            Reason::PodReplacing => "PodReplacing",
            Reason::PodTerminating => "PodTerminating",
            Reason::WaitingForQuota => "WaitingForQuota",
            Reason::WaitingForGateway => "WaitingForGateway",
            Reason::Resetting => "Resetting",
            Reason::Suspended => "Suspended",
            Reason::Idle => "Idle",
            Reason::InvalidName => "InvalidName",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::DuplicateTelegramId => "DuplicateTelegramId",
            Reason::NamespaceConflict => "NamespaceConflict",
            Reason::WorkspaceOfAnotherPerson => "WorkspaceOfAnotherPerson",
            Reason::ImagePullSecretMissing => "ImagePullSecretMissing",
            Reason::ApplyFailed => "ApplyFailed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a user is where it is; the reason and message of every condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub phase: Phase,
    pub reason: Reason,
    pub message: String,
    /// Look again after this long even if nothing changes (e.g. when the user goes idle).
    pub recheck_after: Option<std::time::Duration>,
    /// The reset generation the workspace volume was made for (only once a user was reset).
    pub reset_applied: Option<i64>,
}

impl Observation {
    pub fn new(phase: Phase, reason: Reason, message: impl Into<String>) -> Self {
        Self { phase, reason, message: message.into(), recheck_after: None, reset_applied: None }
    }

    pub fn recheck_after(mut self, after: Option<std::time::Duration>) -> Self {
        self.recheck_after = after;
        self
    }
}

/// The condition types, `Ready` first.
pub const READY: &str = "Ready";
pub const AGENT_READY: &str = "AgentReady";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// Each condition's status in `phase`.
pub fn condition_states(phase: Phase) -> [(&'static str, bool); 4] {
    let settled = matches!(phase, Phase::Ready | Phase::Idle | Phase::Suspended);
    [
        (READY, settled),
        (AGENT_READY, phase == Phase::Ready),
        (RECONCILING, matches!(phase, Phase::Pending | Phase::Provisioning)),
        (STALLED, phase == Phase::Failed),
    ]
}

/// The status to write, keeping each condition's `lastTransitionTime` while its status holds.
/// `lastActivity` is the gateway's field: carried over as it is, so that comparing with the
/// previous status sees no change there, and left out of what the operator applies.
pub fn next_status(
    previous: Option<&MoltmateUserStatus>,
    generation: Option<i64>,
    namespace: Option<String>,
    observation: &Observation,
    now: Time,
) -> MoltmateUserStatus {
    let conditions = condition_states(observation.phase)
        .into_iter()
        .map(|(type_, holds)| {
            let status = if holds { "True" } else { "False" };
            let previous = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_));
            let last_transition_time = match previous {
                Some(c) if c.status == status => c.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: type_.into(),
                status: status.into(),
                reason: observation.reason.as_str().into(),
                message: observation.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect();
    MoltmateUserStatus {
        observed_generation: generation,
        phase: Some(observation.phase),
        namespace,
        conditions,
        // Never goes back: a lowered spec wipes nothing, so the highest applied one stands.
        reset_generation: observation.reset_applied.max(previous.and_then(|s| s.reset_generation)),
        last_activity: previous.and_then(|s| s.last_activity.clone()),
        reminders: previous.and_then(|s| s.reminders.clone()),
        model: previous.and_then(|s| s.model.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).unwrap())
    }

    fn condition<'a>(status: &'a MoltmateUserStatus, type_: &str) -> &'a Condition {
        status.conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    /// What GitOps tools make of a status: kstatus's rules as cli-utils computes them for a
    /// custom resource (a stale observedGeneration or `Reconciling` True is InProgress,
    /// `Stalled` True is Failed), and Flux's, which also waits for `Ready` True.
    fn kstatus(status: &MoltmateUserStatus, generation: i64) -> &'static str {
        let holds = |type_: &str| status.conditions.iter().any(|c| c.type_ == type_ && c.status == "True");
        if status.observed_generation.is_none_or(|g| g < generation) {
            return "InProgress";
        }
        if holds(STALLED) {
            return "Failed";
        }
        if holds(RECONCILING) || !holds(READY) {
            return "InProgress";
        }
        "Current"
    }

    #[test]
    fn gitops_tools_see_settled_users_as_current_and_failed_ones_as_failed() {
        let cases = [
            (Phase::Pending, "InProgress"),
            (Phase::Provisioning, "InProgress"),
            (Phase::Ready, "Current"),
            (Phase::Idle, "Current"),
            (Phase::Suspended, "Current"),
            (Phase::Failed, "Failed"),
        ];
        for (phase, expected) in cases {
            let status =
                next_status(None, Some(2), None, &Observation::new(phase, Reason::InvalidSpec, "because"), at(10));
            assert_eq!(kstatus(&status, 2), expected, "{phase:?}");
            assert_eq!(kstatus(&status, 3), "InProgress", "{phase:?} not yet observed");
            assert_eq!(condition(&status, AGENT_READY).status == "True", phase == Phase::Ready, "{phase:?}");
            assert_eq!(status.conditions[0].type_, READY, "Ready first");
        }
    }

    #[test]
    fn ready_condition_mirrors_the_phase() {
        let obs = Observation::new(Phase::Ready, Reason::AgentReady, "agent pod is serving");
        let s = next_status(None, Some(3), Some("moltmate-a".into()), &obs, at(10));
        assert_eq!(s.phase, Some(Phase::Ready));
        assert_eq!(s.observed_generation, Some(3));
        let c = &s.conditions[0];
        assert_eq!((c.type_.as_str(), c.status.as_str(), c.reason.as_str()), ("Ready", "True", "AgentReady"));

        let failed = Observation::new(Phase::Failed, Reason::DuplicateTelegramId, "taken");
        let s2 = next_status(Some(&s), Some(4), None, &failed, at(20));
        assert_eq!(s2.conditions[0].status, "False");
        assert_eq!(s2.conditions[0].last_transition_time, at(20));
    }

    #[test]
    fn transition_time_holds_while_status_holds() {
        let provisioning = Observation::new(Phase::Provisioning, Reason::PodStarting, "x");
        let first = next_status(None, Some(1), None, &provisioning, at(10));
        let failed = Observation::new(Phase::Failed, Reason::NamespaceConflict, "y");
        let second = next_status(Some(&first), Some(2), None, &failed, at(99));
        assert_eq!(condition(&second, READY).last_transition_time, at(10), "still False");
        assert_eq!(condition(&second, STALLED).last_transition_time, at(99), "now True");
        assert_eq!(condition(&second, RECONCILING).last_transition_time, at(99), "now False");
    }

    #[test]
    fn reset_generation_never_goes_back_and_the_gateways_activity_is_carried_over() {
        let applied =
            Observation { reset_applied: Some(2), ..Observation::new(Phase::Ready, Reason::AgentReady, "serving") };
        let first = next_status(None, Some(1), None, &applied, at(10));
        assert_eq!(first.reset_generation, Some(2));
        assert_eq!(first.last_activity, None);
        let stamped = MoltmateUserStatus { last_activity: Some("2025-03-01T10:00:00Z".into()), ..first.clone() };
        let later = Observation::new(Phase::Idle, Reason::Idle, "no messages");
        let second = next_status(Some(&stamped), Some(1), None, &later, at(20));
        assert_eq!(second.reset_generation, Some(2), "kept while no agent serves");
        assert_eq!(second.last_activity.as_deref(), Some("2025-03-01T10:00:00Z"), "the gateway's field, as it was");
        let reminders = crate::crd::ReminderBook { timezone: Some("Europe/Berlin".into()), ..Default::default() };
        let kept =
            MoltmateUserStatus { reminders: Some(reminders.clone()), model: Some("gpt-big".into()), ..first.clone() };
        let next = next_status(Some(&kept), Some(1), None, &applied, at(20));
        assert_eq!(next.reminders, Some(reminders), "the gateway's reminders, as they were");
        assert_eq!(next.model.as_deref(), Some("gpt-big"), "the person's model choice, as it was");
        assert_eq!(next, kept, "nothing for the operator to write");
        let lower =
            Observation { reset_applied: Some(1), ..Observation::new(Phase::Ready, Reason::AgentReady, "serving") };
        assert_eq!(next_status(Some(&first), Some(2), None, &lower, at(30)).reset_generation, Some(2));
        // Unchanged inputs give an unchanged status: nothing to write in steady state.
        assert_eq!(next_status(Some(&stamped), Some(1), None, &applied, at(99)), stamped);
    }
}
