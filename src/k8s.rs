//! Small facts about Kubernetes objects that several components read the same way.

use k8s_openapi::api::core::v1::Pod;

/// `Some` once the pod's Ready condition is True: since when, if the kubelet said.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<jiff::Timestamp>> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    let ready = conditions.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    Some(ready.last_transition_time.as_ref().map(|t| t.0))
}

pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn with_ready(status: &str, since: Option<jiff::Timestamp>) -> Pod {
        let condition = PodCondition {
            type_: "Ready".into(),
            status: status.into(),
            last_transition_time: since.map(Time),
            ..PodCondition::default()
        };
        Pod { status: Some(PodStatus { conditions: Some(vec![condition]), ..PodStatus::default() }), ..Pod::default() }
    }

    #[test]
    fn ready_only_when_the_condition_is_true() {
        let at = jiff::Timestamp::from_second(1_700_000_000).unwrap();
        assert_eq!(pod_ready_since(&with_ready("True", Some(at))), Some(Some(at)));
        assert_eq!(pod_ready_since(&with_ready("True", None)), Some(None));
        assert!(!pod_is_ready(&with_ready("False", Some(at))));
        assert!(!pod_is_ready(&Pod::default()));
    }
}
