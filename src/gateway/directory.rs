//! Who is this Telegram sender, and where is their agent? Answered from watch caches,
//! without API calls on the message path.

use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::crd::{MoltmateUser, Phase};
use crate::names;
use crate::operator::telegram_id_holder;

/// Where a message from a Telegram user goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Not on the allowlist: a polite refusal, nothing forwarded.
    Unknown,
    /// On the allowlist but not to be served now; the text says why, for the user.
    Paused { user: String, reason: &'static str },
    /// Deliver to this user's agent.
    Agent { user: String, uid: String },
}

/// The MoltmateUser that owns `telegram_id`: the oldest one, as the operator decides, so
/// that a second object claiming the same id never receives its messages.
pub fn route(telegram_id: i64, users: &[Arc<MoltmateUser>]) -> Route {
    let claimants =
        users.iter().filter(|u| u.spec.telegram.user_id == telegram_id && u.metadata.deletion_timestamp.is_none());
    let Some(owner) = claimants.clone().find(|u| telegram_id_holder(u, users).is_none()) else {
        return Route::Unknown;
    };
    let user = owner.name_any();
    if owner.spec.suspend {
        return Route::Paused { user, reason: "Your assistant is paused by the administrator." };
    }
    match owner.status.as_ref().and_then(|s| s.phase) {
        Some(Phase::Failed) => {
            Route::Paused { user, reason: "Your assistant is not set up correctly; the administrator has been told." }
        }
        _ => Route::Agent { user, uid: owner.uid().unwrap_or_default() },
    }
}

/// The address of the user's agent: the IP of the running, ready pod `agent` in the namespace
/// the operator made for that user, looked up in the pod cache by that name and namespace. A
/// label alone proves nothing: anyone who can create a pod anywhere could label it as
/// someone's agent and receive their messages and bearer token.
pub fn agent_address(user: &str, pods: &Store<Pod>) -> Option<IpAddr> {
    serving_address(user, agent_pod(user, pods)?.as_ref())
}

/// The address of the user's agent pod once its container runs, Ready or not yet: a wake asks
/// the agent itself whether it serves (`AgentClient::ready`) rather than wait up to a probe
/// period for the kubelet to mark it Ready.
pub fn running_agent_address(user: &str, pods: &Store<Pod>) -> Option<IpAddr> {
    running_address(user, agent_pod(user, pods)?.as_ref())
}

/// The cached pod `agent` in the namespace the operator made for `user`, whatever its state.
fn agent_pod(user: &str, pods: &Store<Pod>) -> Option<Arc<Pod>> {
    let namespace = names::user_namespace(user).ok()?;
    pods.get(&ObjectRef::new(names::AGENT_POD).within(&namespace))
}

/// The pod's IP if it is `user`'s agent pod and serves.
fn serving_address(user: &str, p: &Pod) -> Option<IpAddr> {
    running_address(user, p).filter(|_| crate::k8s::pod_is_ready(p))
}

/// The pod's IP if it is `user`'s agent pod, running and not being deleted.
fn running_address(user: &str, p: &Pod) -> Option<IpAddr> {
    let namespace = names::user_namespace(user).ok()?;
    let ours = p.namespace().as_deref() == Some(namespace.as_str())
        && p.name_any() == names::AGENT_POD
        && p.labels().get(names::LABEL_USER).map(String::as_str) == Some(user)
        && p.metadata.deletion_timestamp.is_none()
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    if !ours {
        return None;
    }
    p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, MoltmateUserStatus, Profile};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn user(name: &str, id: i64, created: i64) -> MoltmateUser {
        let mut u = MoltmateUser::new(name, MoltmateUserSpec::new(id, Profile::Public));
        u.metadata.uid = Some(format!("uid-{name}"));
        u.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(created).unwrap()));
        u
    }

    fn all(users: Vec<MoltmateUser>) -> Vec<Arc<MoltmateUser>> {
        users.into_iter().map(Arc::new).collect()
    }

    #[test]
    fn routes_by_telegram_id_to_the_owner_only() {
        let users = all(vec![user("alice", 1, 10), user("bob", 2, 10), user("mallory", 1, 20)]);
        assert_eq!(route(1, &users), Route::Agent { user: "alice".into(), uid: "uid-alice".into() });
        assert_eq!(route(2, &users), Route::Agent { user: "bob".into(), uid: "uid-bob".into() });
        assert_eq!(route(3, &users), Route::Unknown);
        // Once alice is being deleted, her id is free for the next claimant.
        let mut leaving = user("alice", 1, 10);
        leaving.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(30).unwrap()));
        let users = all(vec![leaving, user("mallory", 1, 20)]);
        assert_eq!(route(1, &users), Route::Agent { user: "mallory".into(), uid: "uid-mallory".into() });
    }

    #[test]
    fn suspended_and_failed_users_are_told_why() {
        let mut suspended = user("sam", 5, 1);
        suspended.spec.suspend = true;
        let mut failed = user("fay", 6, 1);
        failed.status = Some(MoltmateUserStatus { phase: Some(Phase::Failed), ..Default::default() });
        let users = all(vec![suspended, failed]);
        assert!(matches!(route(5, &users), Route::Paused { user, .. } if user == "sam"));
        assert!(matches!(route(6, &users), Route::Paused { user, .. } if user == "fay"));
    }

    fn pod(user: &str, ip: &str, ready: bool, phase: &str) -> Arc<Pod> {
        pod_in(&format!("moltmate-{user}"), names::AGENT_POD, user, ip, ready, phase)
    }

    fn pod_in(namespace: &str, name: &str, user: &str, ip: &str, ready: bool, phase: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.namespace = Some(namespace.into());
        p.metadata.name = Some(name.into());
        p.metadata.labels = Some(BTreeMap::from([(names::LABEL_USER.to_string(), user.to_string())]));
        p.status = Some(PodStatus {
            phase: Some(phase.into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        Arc::new(p)
    }

    fn cache(pods: &[Arc<Pod>]) -> Store<Pod> {
        let (store, mut writer) = kube::runtime::reflector::store::<Pod>();
        for p in pods {
            writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(p.as_ref().clone()));
        }
        store
    }

    /// `agent_address` over a cache holding `pods`.
    fn address(user: &str, pods: &[Arc<Pod>]) -> Option<IpAddr> {
        agent_address(user, &cache(pods))
    }

    #[test]
    fn only_a_ready_running_pod_of_that_user_is_an_address() {
        let pods = vec![pod("alice", "127.0.0.2", false, "Running"), pod("bob", "127.0.0.3", true, "Running")];
        assert_eq!(address("alice", &pods), None, "not ready yet");
        assert_eq!(address("bob", &pods), Some("127.0.0.3".parse().unwrap()));
        assert_eq!(address("carol", &pods), None);
        let pods = vec![pod("alice", "127.0.0.4", true, "Pending")];
        assert_eq!(address("alice", &pods), None);
    }

    #[test]
    fn a_pod_labelled_as_someones_agent_elsewhere_gets_nothing() {
        let decoys = vec![
            pod_in("default", names::AGENT_POD, "alice", "10.0.0.66", true, "Running"),
            pod_in("moltmate-bob", names::AGENT_POD, "alice", "10.0.0.67", true, "Running"),
            pod_in("moltmate-alice", "impostor", "alice", "10.0.0.68", true, "Running"),
        ];
        assert_eq!(address("alice", &decoys), None);
        let mut all = decoys;
        all.push(pod("alice", "10.0.0.5", true, "Running"));
        assert_eq!(address("alice", &all), Some("10.0.0.5".parse().unwrap()));
    }

    #[test]
    fn a_running_agent_pod_not_ready_yet_is_only_a_waking_address() {
        let starting = vec![pod("alice", "10.0.0.5", false, "Running")];
        assert_eq!(address("alice", &starting), None, "not served");
        assert_eq!(running_agent_address("alice", &cache(&starting)), Some("10.0.0.5".parse().unwrap()));
        let pending = vec![pod("alice", "10.0.0.5", false, "Pending")];
        assert_eq!(running_agent_address("alice", &cache(&pending)), None, "no container yet");
        let mut leaving = (*pod("alice", "10.0.0.5", true, "Running")).clone();
        leaving.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(30).unwrap()));
        assert_eq!(running_agent_address("alice", &cache(&[Arc::new(leaving)])), None, "being deleted");
        let decoys = vec![
            pod_in("default", names::AGENT_POD, "alice", "10.0.0.66", false, "Running"),
            pod_in("moltmate-bob", names::AGENT_POD, "alice", "10.0.0.67", false, "Running"),
            pod_in("moltmate-alice", "impostor", "alice", "10.0.0.68", false, "Running"),
        ];
        assert_eq!(running_agent_address("alice", &cache(&decoys)), None, "someone else's pod");
    }
}
