//! What to do with a user's agent pod, decided from the live pod (the cache's) and the one
//! the builders want. Pure: the reconciler carries the step out.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::idle;
use super::status::{Observation, Reason};
use crate::crd::Phase;
use crate::{k8s, names};

/// The next step for the agent pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodStep {
    /// None exists: create it.
    Create,
    /// The previous pod is still stopping; a new one would clash with its name.
    AwaitTermination,
    /// Its spec changed (the hash differs) or it ended: delete it, a new one follows.
    Replace { why: String },
    /// It is the wanted pod and has not become Ready yet (its phase, e.g. Pending).
    AwaitReady { phase: String },
    /// It is the wanted pod and Ready.
    Serving,
}

pub fn step(live: Option<&Pod>, desired: &Pod) -> PodStep {
    let Some(live) = live else { return PodStep::Create };
    if live.metadata.deletion_timestamp.is_some() {
        return PodStep::AwaitTermination;
    }
    let phase = live.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
    if phase == "Failed" || phase == "Succeeded" {
        return PodStep::Replace { why: format!("agent pod ended ({phase})") };
    }
    if spec_hash(&live.metadata) != spec_hash(&desired.metadata) {
        return PodStep::Replace { why: "pod spec changed".into() };
    }
    if k8s::pod_is_ready(live) {
        PodStep::Serving
    } else {
        PodStep::AwaitReady { phase: if phase.is_empty() { "Pending".into() } else { phase } }
    }
}

impl PodStep {
    /// Where the user stands once the step is taken.
    pub fn observation(&self) -> Observation {
        match self {
            // As the new pod's first status will say: a start is one status write fewer.
            PodStep::Create => Observation::new(Phase::Provisioning, Reason::PodStarting, "agent pod is Pending"),
            PodStep::AwaitTermination => Observation::new(
                Phase::Provisioning,
                Reason::PodTerminating,
                "waiting for the previous agent pod to stop",
            ),
            PodStep::Replace { why } => Observation::new(Phase::Provisioning, Reason::PodReplacing, why.clone()),
            PodStep::AwaitReady { phase } => {
                Observation::new(Phase::Provisioning, Reason::PodStarting, format!("agent pod is {phase}"))
            }
            PodStep::Serving => Observation::new(Phase::Ready, Reason::AgentReady, "agent pod is running and ready"),
        }
    }
}

fn spec_hash(meta: &ObjectMeta) -> Option<&String> {
    meta.annotations.as_ref().and_then(|a| a.get(names::ANNOTATION_SPEC_HASH))
}

/// The agent pod as idling sees it: absent, starting, or Ready since when.
pub fn idle_view(pod: Option<&Pod>) -> idle::Agent {
    let Some(pod) = pod.filter(|p| p.metadata.deletion_timestamp.is_none()) else {
        return idle::Agent::Absent;
    };
    match k8s::pod_ready_since(pod) {
        // A Ready pod without a transition time counts from now on rather than never.
        Some(since) => idle::Agent::ReadySince(since.unwrap_or_else(jiff::Timestamp::now)),
        None => idle::Agent::Starting,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn pod(hash: &str, phase: Option<&str>, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(BTreeMap::from([(names::ANNOTATION_SPEC_HASH.into(), hash.into())]));
        let conditions = ready
            .then(|| vec![PodCondition { type_: "Ready".into(), status: "True".into(), ..PodCondition::default() }]);
        pod.status = Some(PodStatus { phase: phase.map(Into::into), conditions, ..PodStatus::default() });
        pod
    }

    #[test]
    fn no_pod_is_created() {
        assert_eq!(step(None, &pod("a", None, false)), PodStep::Create);
        assert_eq!(PodStep::Create.observation().reason, Reason::PodStarting);
    }

    #[test]
    fn a_stopping_pod_is_waited_for_even_if_it_differs() {
        let mut live = pod("old", Some("Running"), true);
        live.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(step(Some(&live), &pod("new", None, false)), PodStep::AwaitTermination);
    }

    #[test]
    fn a_changed_spec_replaces_the_pod() {
        let live = pod("old", Some("Running"), true);
        assert_eq!(step(Some(&live), &pod("new", None, false)), PodStep::Replace { why: "pod spec changed".into() });
    }

    #[test]
    fn an_ended_pod_is_replaced_whatever_its_spec() {
        for phase in ["Failed", "Succeeded"] {
            let live = pod("a", Some(phase), false);
            let step = step(Some(&live), &pod("a", None, false));
            assert_eq!(step, PodStep::Replace { why: format!("agent pod ended ({phase})") });
            assert_eq!(step.observation().phase, Phase::Provisioning);
        }
    }

    #[test]
    fn the_wanted_pod_serves_once_ready() {
        let desired = pod("a", None, false);
        let serving = step(Some(&pod("a", Some("Running"), true)), &desired);
        assert_eq!(serving, PodStep::Serving);
        assert_eq!(serving.observation().phase, Phase::Ready);
        let starting = step(Some(&pod("a", None, false)), &desired);
        assert_eq!(starting, PodStep::AwaitReady { phase: "Pending".into() });
        assert_eq!(starting.observation().message, "agent pod is Pending");
        let probing = step(Some(&pod("a", Some("Running"), false)), &desired);
        assert_eq!(probing, PodStep::AwaitReady { phase: "Running".into() });
    }

    #[test]
    fn idling_sees_absent_starting_or_ready_since() {
        assert_eq!(idle_view(None), idle::Agent::Absent);
        assert_eq!(idle_view(Some(&pod("a", Some("Running"), false))), idle::Agent::Starting);
        let mut ready = pod("a", Some("Running"), true);
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        ready.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time = Some(Time(at));
        assert_eq!(idle_view(Some(&ready)), idle::Agent::ReadySince(at));
        ready.metadata.deletion_timestamp = Some(Time(at));
        assert_eq!(idle_view(Some(&ready)), idle::Agent::Absent, "a stopping pod serves no one");
    }
}
