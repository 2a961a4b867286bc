//! How far a user's provisioning goes, decided from what the reconciler read. Pure, like
//! `pod::step`: the reconciler reads the caches (and, once each, the API), calls [`decide`],
//! writes up to the gate's [`Stage`], takes the gate's own step and reports its observation.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;

use super::idle::IdleState;
use super::reset::WorkspaceStep;
use super::status::{Observation, Reason};
use crate::crd::Phase;
use crate::names;

/// How soon to look again for a pull Secret the administrator has yet to create (nothing
/// watches the gateway namespace's Secrets: the operator keeps none of them in memory).
pub const PULL_SECRET_RECHECK: Duration = Duration::from_secs(10);

/// How soon to look again while a reset replaces the volume (the claim's own watch events
/// usually come first).
pub const RESET_RECHECK: Duration = Duration::from_secs(5);

/// What the reconciler read for one user. A fact an earlier gate makes moot may be left
/// unread (its default).
#[derive(Debug, Clone)]
pub struct View {
    /// Why the name makes no namespace.
    pub name_error: Option<String>,
    pub namespace: String,
    pub telegram_id: i64,
    /// An older MoltmateUser holding the same Telegram id.
    pub telegram_id_holder: Option<String>,
    /// Why the spec's profile could not be resolved.
    pub profile_error: Option<String>,
    /// The first configured image pull Secret missing from the gateway namespace.
    pub missing_pull_secret: Option<String>,
    /// Why the desired objects could not be built.
    pub build_error: Option<String>,
    /// A namespace of that name exists and is not ours.
    pub namespace_taken: bool,
    /// Our namespace of that name, as the cache has it.
    pub live_namespace: Option<Arc<Namespace>>,
    /// The quota controller reports the desired hard limits.
    pub quota_in_force: bool,
    pub workspace: WorkspaceStep,
    pub suspend: bool,
    /// The broker Service has a cluster IP.
    pub broker_found: bool,
    /// `None` without an idle timeout.
    pub idle: Option<IdleState>,
    /// For the messages: `spec.idleTimeout` as written, and where the gateway lives.
    pub idle_timeout: String,
    pub gateway_namespace: String,
    pub broker_service: String,
}

impl Default for View {
    fn default() -> Self {
        Self {
            name_error: None,
            namespace: String::new(),
            telegram_id: 0,
            telegram_id_holder: None,
            profile_error: None,
            missing_pull_secret: None,
            build_error: None,
            namespace_taken: false,
            live_namespace: None,
            quota_in_force: false,
            workspace: WorkspaceStep::Keep { generation: 0 },
            suspend: false,
            broker_found: false,
            idle: None,
            idle_timeout: String::new(),
            gateway_namespace: String::new(),
            broker_service: String::new(),
        }
    }
}

/// How far the writes go before the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Nothing is written.
    Nothing,
    /// The namespace, NetworkPolicy, quota and limits.
    GuardRails,
    /// And the service account, token, pull Secrets, Service and the workspace claim of
    /// reset `generation`.
    Workload { generation: i64 },
}

/// The gate that stops provisioning, or `Open` when the agent pod's own step decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Refused before anything is written; with `stop_agent`, an agent the user already had
    /// stops serving.
    Refused { observation: Observation, stop_agent: bool },
    /// Until the quota controller has taken the quota up, what is created is not charged.
    WaitingForQuota,
    /// A reset: delete the agent pod and the volume that predates generation `to`.
    ResetWorkspace { from: i64, to: i64 },
    /// A reset: the old volume is going once its pod has stopped (which is asked again).
    AwaitVolumeRelease { to: i64 },
    /// `spec.suspend`: the agent pod goes, the rest stays.
    Suspended { generation: i64 },
    /// The broker Service is missing: an agent could not reach it.
    WaitingForGateway { generation: i64 },
    /// No messages for `idleTimeout`: the agent pod goes until the next one.
    Idle { generation: i64 },
    /// Run the agent at workspace `generation`; look again after `idle_in` at the latest.
    Open { generation: i64, idle_in: Option<Duration> },
}

pub fn decide(view: &View) -> Gate {
    let refused = |phase, reason, message: String| Gate::Refused {
        observation: Observation::new(phase, reason, message),
        stop_agent: false,
    };
    if let Some(error) = &view.name_error {
        return refused(Phase::Failed, Reason::InvalidName, error.clone());
    }
    if let Some(holder) = &view.telegram_id_holder {
        // No sandbox for the newcomer; an agent it already had stops serving.
        let message = format!("Telegram user id {} already belongs to MoltmateUser {holder:?}", view.telegram_id);
        return Gate::Refused {
            observation: Observation::new(Phase::Failed, Reason::DuplicateTelegramId, message),
            stop_agent: true,
        };
    }
    if let Some(error) = &view.profile_error {
        return refused(Phase::Failed, Reason::InvalidSpec, error.clone());
    }
    if let Some(missing) = &view.missing_pull_secret {
        let message = format!(
            "image pull Secret {missing} (operator --agent-pod, chart value imagePullSecrets) does not \
             exist in namespace {}: create it there",
            view.gateway_namespace
        );
        return Gate::Refused {
            observation: Observation::new(Phase::Failed, Reason::ImagePullSecretMissing, message)
                .recheck_after(Some(PULL_SECRET_RECHECK)),
            stop_agent: false,
        };
    }
    if let Some(error) = &view.build_error {
        return refused(Phase::Failed, Reason::InvalidSpec, error.clone());
    }
    if view.namespace_taken {
        let message = format!(
            "namespace {} already exists and is not managed by moltmates; rename the MoltmateUser",
            view.namespace
        );
        return refused(Phase::Failed, Reason::NamespaceConflict, message);
    }
    if let Some(observation) = another_persons_workspace(view.live_namespace.as_deref(), view.telegram_id) {
        return Gate::Refused { observation, stop_agent: true };
    }
    if !view.quota_in_force {
        return Gate::WaitingForQuota;
    }
    let generation = match view.workspace {
        WorkspaceStep::Keep { generation } => generation,
        WorkspaceStep::Replace { from, to } => return Gate::ResetWorkspace { from, to },
        WorkspaceStep::AwaitRelease { to } => return Gate::AwaitVolumeRelease { to },
    };
    if view.suspend {
        return Gate::Suspended { generation };
    }
    if !view.broker_found {
        return Gate::WaitingForGateway { generation };
    }
    match view.idle {
        Some(IdleState::Idle) => Gate::Idle { generation },
        Some(IdleState::Active { idle_in }) => Gate::Open { generation, idle_in: Some(idle_in) },
        None => Gate::Open { generation, idle_in: None },
    }
}

impl Gate {
    pub fn stage(&self) -> Stage {
        match self {
            Gate::Refused { .. } => Stage::Nothing,
            Gate::WaitingForQuota | Gate::ResetWorkspace { .. } | Gate::AwaitVolumeRelease { .. } => Stage::GuardRails,
            Gate::Suspended { generation }
            | Gate::WaitingForGateway { generation }
            | Gate::Idle { generation }
            | Gate::Open { generation, .. } => Stage::Workload { generation: *generation },
        }
    }

    /// Where the user stands behind this gate; `None` for `Open`, where the pod step says.
    pub fn observation(&self, view: &View) -> Option<Observation> {
        let observation = match self {
            Gate::Refused { observation, .. } => observation.clone(),
            Gate::WaitingForQuota => Observation::new(
                Phase::Provisioning,
                Reason::WaitingForQuota,
                "waiting for the ResourceQuota to be in force",
            ),
            Gate::ResetWorkspace { from, to } => Observation::new(
                Phase::Provisioning,
                Reason::Resetting,
                format!(
                    "reset generation {to}: the agent pod and the workspace volume (of generation {from}) are being \
                     deleted; an empty volume replaces it"
                ),
            )
            .recheck_after(Some(RESET_RECHECK)),
            Gate::AwaitVolumeRelease { to } => Observation::new(
                Phase::Provisioning,
                Reason::Resetting,
                format!(
                    "reset generation {to}: waiting for the old workspace volume to be released (its agent pod must stop first)"
                ),
            )
            .recheck_after(Some(RESET_RECHECK)),
            Gate::Suspended { generation } => with_reset(
                Observation::new(Phase::Suspended, Reason::Suspended, "spec.suspend is true; the agent is paused"),
                *generation,
            ),
            Gate::WaitingForGateway { generation } => with_reset(
                Observation::new(
                    Phase::Provisioning,
                    Reason::WaitingForGateway,
                    format!(
                        "Service {}/{} not found; agents reach the broker through it",
                        view.gateway_namespace, view.broker_service
                    ),
                ),
                *generation,
            ),
            Gate::Idle { generation } => with_reset(
                Observation::new(
                    Phase::Idle,
                    Reason::Idle,
                    format!("no messages for {}; the next message starts the agent", view.idle_timeout),
                ),
                *generation,
            ),
            Gate::Open { .. } => return None,
        };
        Some(observation)
    }
}

/// The observation with the workspace's reset generation, once the user was reset.
pub fn with_reset(observation: Observation, generation: i64) -> Observation {
    Observation { reset_applied: (generation > 0).then_some(generation), ..observation }
}

/// Whose workspace a namespace of ours holds, as recorded on it.
fn workspace_owner(ns: &Namespace) -> Option<i64> {
    ns.annotations().get(names::ANNOTATION_OWNER_TELEGRAM_ID)?.parse().ok()
}

/// A retained namespace keeps a deleted user's memory, history and files. A new MoltmateUser
/// of the same name adopts it only if it is the same person (the same Telegram id); otherwise
/// it gets nothing, and the admin an explicit command to hand the workspace over or wipe it.
/// A retained namespace without the record (kept before it existed) is nobody's to assume.
pub fn another_persons_workspace(live: Option<&Namespace>, telegram_id: i64) -> Option<Observation> {
    let live = live?;
    let retained = live.labels().get(names::LABEL_RETAINED).map(String::as_str) == Some("true");
    let whose = match workspace_owner(live) {
        Some(owner) if owner == telegram_id => return None,
        Some(owner) => format!("of Telegram user {owner}"),
        None if retained => "of a deleted user (its Telegram id was not recorded)".to_string(),
        None => return None,
    };
    let ns = live.name_any();
    Some(Observation::new(
        Phase::Failed,
        Reason::WorkspaceOfAnotherPerson,
        format!(
            "namespace {ns} holds the workspace (memory, history, files) {whose}, kept when that MoltmateUser was deleted; it is not handed to Telegram user {telegram_id}. To give it to this user: kubectl annotate namespace {ns} {}={telegram_id} --overwrite. To wipe it and start afresh: kubectl delete namespace {ns}",
            names::ANNOTATION_OWNER_TELEGRAM_ID
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    /// A user every gate lets through.
    fn open() -> View {
        View {
            namespace: "moltmate-alice".into(),
            telegram_id: 8,
            quota_in_force: true,
            broker_found: true,
            idle_timeout: "30m".into(),
            gateway_namespace: "moltmate-system".into(),
            broker_service: "moltmate-broker".into(),
            ..View::default()
        }
    }

    fn refusal(view: &View) -> (Phase, Reason, String, bool) {
        match decide(view) {
            Gate::Refused { observation, stop_agent } => {
                assert_eq!(decide(view).stage(), Stage::Nothing, "a refusal writes nothing");
                (observation.phase, observation.reason, observation.message, stop_agent)
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    fn observed(view: &View) -> Observation {
        decide(view).observation(view).expect("a gate with an observation")
    }

    fn namespace(annotations: &[(&str, &str)], retained: bool) -> Namespace {
        let mut labels = names::user_labels("keeper");
        if retained {
            labels.insert(names::LABEL_RETAINED.into(), "true".into());
        }
        Namespace {
            metadata: ObjectMeta {
                name: Some("moltmate-keeper".into()),
                labels: Some(labels),
                annotations: Some(annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    #[test]
    fn a_name_without_a_namespace_is_refused() {
        let view = View { name_error: Some("name too long".into()), ..open() };
        assert_eq!(refusal(&view), (Phase::Failed, Reason::InvalidName, "name too long".into(), false));
    }

    #[test]
    fn a_second_user_with_the_same_telegram_id_is_refused_and_its_agent_stopped() {
        let view = View { telegram_id_holder: Some("bob".into()), ..open() };
        let (phase, reason, message, stop_agent) = refusal(&view);
        assert_eq!((phase, reason, stop_agent), (Phase::Failed, Reason::DuplicateTelegramId, true));
        assert_eq!(message, "Telegram user id 8 already belongs to MoltmateUser \"bob\"");
    }

    #[test]
    fn a_profile_that_does_not_resolve_is_refused() {
        let view = View { profile_error: Some("spec.idleTimeout \"soon\" ...".into()), ..open() };
        assert_eq!(refusal(&view).1, Reason::InvalidSpec);
    }

    #[test]
    fn a_missing_pull_secret_is_named_and_looked_for_again_soon() {
        let view = View { missing_pull_secret: Some("regcred".into()), ..open() };
        let observation = observed(&view);
        assert_eq!((observation.phase, observation.reason), (Phase::Failed, Reason::ImagePullSecretMissing));
        assert!(observation.message.starts_with("image pull Secret regcred (operator --agent-pod, chart value imagePullSecrets) does not exist in namespace moltmate-system"), "{}", observation.message);
        assert_eq!(observation.recheck_after, Some(PULL_SECRET_RECHECK));
    }

    #[test]
    fn objects_that_cannot_be_built_are_refused() {
        let view = View { build_error: Some("bad quantity".into()), ..open() };
        assert_eq!(refusal(&view), (Phase::Failed, Reason::InvalidSpec, "bad quantity".into(), false));
    }

    #[test]
    fn a_namespace_that_is_not_ours_is_never_adopted() {
        let view = View { namespace_taken: true, ..open() };
        let (phase, reason, message, stop_agent) = refusal(&view);
        assert_eq!((phase, reason, stop_agent), (Phase::Failed, Reason::NamespaceConflict, false));
        assert_eq!(
            message,
            "namespace moltmate-alice already exists and is not managed by moltmates; rename the MoltmateUser"
        );
    }

    #[test]
    fn another_persons_retained_workspace_is_refused_and_the_agent_stopped() {
        let owner = names::ANNOTATION_OWNER_TELEGRAM_ID;
        let view = View { live_namespace: Some(Arc::new(namespace(&[(owner, "7")], true))), ..open() };
        let (phase, reason, _, stop_agent) = refusal(&view);
        assert_eq!((phase, reason, stop_agent), (Phase::Failed, Reason::WorkspaceOfAnotherPerson, true));
        let own = View { live_namespace: Some(Arc::new(namespace(&[(owner, "8")], true))), ..open() };
        assert!(matches!(decide(&own), Gate::Open { .. }), "the same person adopts it");
    }

    #[test]
    fn a_retained_workspace_goes_only_to_the_same_person() {
        let owner = names::ANNOTATION_OWNER_TELEGRAM_ID;
        assert!(another_persons_workspace(None, 7).is_none(), "a new namespace");
        assert!(
            another_persons_workspace(Some(&namespace(&[(owner, "7")], true)), 7).is_none(),
            "the same person adopts it"
        );
        assert!(another_persons_workspace(Some(&namespace(&[(owner, "7")], false)), 7).is_none(), "their own live one");
        assert!(
            another_persons_workspace(Some(&namespace(&[], false)), 7).is_none(),
            "a live one from before the record"
        );

        let refused = another_persons_workspace(Some(&namespace(&[(owner, "7")], true)), 8).unwrap();
        assert_eq!((refused.phase, refused.reason), (Phase::Failed, Reason::WorkspaceOfAnotherPerson));
        assert!(
            refused.message.contains("of Telegram user 7") && refused.message.contains("not handed to Telegram user 8"),
            "{}",
            refused.message
        );
        assert!(
            refused
                .message
                .contains("kubectl annotate namespace moltmate-keeper moltmate.io/owner-telegram-id=8 --overwrite")
        );
        assert!(refused.message.contains("kubectl delete namespace moltmate-keeper"));
        // Even a live (not retained) namespace recorded for someone else is not taken over.
        assert!(another_persons_workspace(Some(&namespace(&[(owner, "7")], false)), 8).is_some());
        // Retained before owners were recorded: nobody's to assume.
        let unknown = another_persons_workspace(Some(&namespace(&[], true)), 7).unwrap();
        assert!(unknown.message.contains("not recorded"), "{}", unknown.message);
        assert!(another_persons_workspace(Some(&namespace(&[(owner, "not a number")], true)), 7).is_some());
    }

    #[test]
    fn the_fences_are_written_but_nothing_runs_until_the_quota_is_in_force() {
        let view = View { quota_in_force: false, ..open() };
        assert_eq!(decide(&view), Gate::WaitingForQuota);
        assert_eq!(decide(&view).stage(), Stage::GuardRails);
        let observation = observed(&view);
        assert_eq!((observation.phase, observation.reason), (Phase::Provisioning, Reason::WaitingForQuota));
    }

    #[test]
    fn a_reset_replaces_the_volume_behind_the_fences() {
        let view = View { workspace: WorkspaceStep::Replace { from: 1, to: 2 }, ..open() };
        assert_eq!(decide(&view), Gate::ResetWorkspace { from: 1, to: 2 });
        assert_eq!(decide(&view).stage(), Stage::GuardRails);
        let observation = observed(&view);
        assert_eq!((observation.reason, observation.recheck_after), (Reason::Resetting, Some(RESET_RECHECK)));
        assert!(observation.message.contains("(of generation 1) are being deleted"), "{}", observation.message);
    }

    #[test]
    fn a_reset_waits_for_the_old_volume_to_go() {
        let view = View { workspace: WorkspaceStep::AwaitRelease { to: 2 }, ..open() };
        assert_eq!(decide(&view), Gate::AwaitVolumeRelease { to: 2 });
        assert!(observed(&view).message.contains("waiting for the old workspace volume to be released"));
    }

    #[test]
    fn a_suspended_user_keeps_everything_but_the_pod() {
        let view = View { suspend: true, workspace: WorkspaceStep::Keep { generation: 3 }, ..open() };
        assert_eq!(decide(&view), Gate::Suspended { generation: 3 });
        assert_eq!(decide(&view).stage(), Stage::Workload { generation: 3 });
        let observation = observed(&view);
        assert_eq!((observation.phase, observation.reset_applied), (Phase::Suspended, Some(3)));
    }

    #[test]
    fn without_the_broker_service_no_agent_starts() {
        let view = View { broker_found: false, ..open() };
        assert_eq!(decide(&view), Gate::WaitingForGateway { generation: 0 });
        let observation = observed(&view);
        assert_eq!(
            observation.message,
            "Service moltmate-system/moltmate-broker not found; agents reach the broker through it"
        );
        assert_eq!(observation.reset_applied, None, "never reset");
    }

    #[test]
    fn an_idle_user_loses_the_pod() {
        let view = View { idle: Some(IdleState::Idle), ..open() };
        assert_eq!(decide(&view), Gate::Idle { generation: 0 });
        let observation = observed(&view);
        assert_eq!(
            (observation.phase, observation.message.as_str()),
            (Phase::Idle, "no messages for 30m; the next message starts the agent")
        );
    }

    #[test]
    fn otherwise_the_pod_step_decides() {
        let idle_in = Duration::from_secs(60);
        let view = View { idle: Some(IdleState::Active { idle_in }), ..open() };
        assert_eq!(decide(&view), Gate::Open { generation: 0, idle_in: Some(idle_in) });
        assert_eq!(decide(&open()), Gate::Open { generation: 0, idle_in: None });
        assert_eq!(decide(&open()).observation(&open()), None);
    }

    #[test]
    fn the_first_gate_in_order_wins() {
        let everything_wrong = View {
            telegram_id_holder: Some("bob".into()),
            profile_error: Some("bad".into()),
            missing_pull_secret: Some("regcred".into()),
            namespace_taken: true,
            quota_in_force: false,
            suspend: true,
            ..open()
        };
        assert_eq!(refusal(&everything_wrong).1, Reason::DuplicateTelegramId);
        let view = View { telegram_id_holder: None, ..everything_wrong };
        assert_eq!(refusal(&view).1, Reason::InvalidSpec);
        let view = View { profile_error: None, ..view };
        assert_eq!(refusal(&view).1, Reason::ImagePullSecretMissing);
        let view = View { missing_pull_secret: None, ..view };
        assert_eq!(refusal(&view).1, Reason::NamespaceConflict);
        let view = View { namespace_taken: false, ..view };
        assert_eq!(decide(&view), Gate::WaitingForQuota);
        let view = View { quota_in_force: true, ..view };
        assert_eq!(decide(&view), Gate::Suspended { generation: 0 });
    }
}
