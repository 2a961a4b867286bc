//! Two operator replicas, the leader killed mid-provisioning and started again: one leader
//! at a time, everything converges, nothing is duplicated.

use std::time::Duration;

use crate::support::*;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use serde_json::json;

const USERS: usize = 12;

fn leader_of(procs: &[&Proc]) -> Vec<usize> {
    procs
        .iter()
        .enumerate()
        .filter(|(_, p)| std::fs::read_to_string(&p.log).unwrap_or_default().contains("became leader"))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test]
async fn killing_the_leader_mid_provisioning_converges_without_duplicates() {
    let (env, client, _node) = TestEnv::up_installed("restart").await;
    let a = env.spawn_operator("operator-a", free_port());
    let b = env.spawn_operator("operator-b", free_port());

    let leaders = wait_until("a leader", Duration::from_secs(30), || async {
        let leaders = leader_of(&[&a, &b]);
        (!leaders.is_empty()).then_some(leaders)
    })
    .await;
    assert_eq!(leaders.len(), 1, "exactly one replica leads");
    let (mut leader, standby) = if leaders[0] == 0 { (a, b) } else { (b, a) };

    for i in 0..USERS {
        apply_user(&client, &user_manifest(&format!("crowd-{i}"), 5000 + i as i64, json!({}))).await.unwrap();
    }
    // Kill the leader once provisioning is under way, not finished.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let selector = ListParams::default().labels("app.kubernetes.io/managed-by=moltmate-operator");
    wait_until("provisioning under way", Duration::from_secs(30), || async {
        let n = namespaces.list(&selector).await.ok()?.items.len();
        (n >= 1).then_some(())
    })
    .await;
    leader.kill();
    assert!(!leader.is_running());

    // The standby takes the lease over once it expires; the killed one comes back as well.
    wait_until("standby becomes leader", Duration::from_secs(40), || async {
        std::fs::read_to_string(&standby.log).ok()?.contains("became leader").then_some(())
    })
    .await;
    let _restarted = env.spawn_operator(
        if leader.log.ends_with("operator-a.log") { "operator-a2" } else { "operator-b2" },
        free_port(),
    );

    for i in 0..USERS {
        wait_phase(&client, &format!("crowd-{i}"), "Ready", Duration::from_secs(60)).await;
    }

    // Exactly one of everything per user, and one volume per claim.
    for i in 0..USERS {
        let ns = format!("moltmate-crowd-{i}");
        assert_eq!(
            Api::<Pod>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items.len(),
            1,
            "{ns} pods"
        );
        assert_eq!(
            Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
                .list(&Default::default())
                .await
                .unwrap()
                .items
                .len(),
            1,
            "{ns} claims"
        );
        assert_eq!(
            Api::<Service>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items.len(),
            1,
            "{ns} services"
        );
        assert_eq!(
            Api::<NetworkPolicy>::namespaced(client.clone(), &ns).list(&Default::default()).await.unwrap().items.len(),
            1,
            "{ns} policies"
        );
        let ours = ListParams::default().labels("app.kubernetes.io/managed-by=moltmate-operator");
        assert_eq!(
            Api::<Secret>::namespaced(client.clone(), &ns).list(&ours).await.unwrap().items.len(),
            1,
            "{ns} token secrets"
        );
    }
    assert_eq!(namespaces.list(&selector).await.unwrap().items.len(), USERS, "no orphaned namespaces");
    let volumes = Api::<PersistentVolume>::all(client.clone()).list(&Default::default()).await.unwrap().items;
    assert_eq!(volumes.len(), USERS, "one volume per workspace");
}

/// A rollout as the kubelet does it: SIGTERM to each replica, PID 1 of its container. The
/// standby, still waiting for the Lease, exits at once; the leader exits 0 and releases the
/// Lease, so the replica after it leads at once instead of after the Lease expires.
#[tokio::test]
async fn operators_as_pid_1_exit_on_sigterm_and_the_leader_hands_the_lease_on() {
    let (env, client, _node) = TestEnv::up_installed("operator-sigterm").await;
    let a = env.spawn_operator_pid1("operator-a", free_port());
    let b = env.spawn_operator_pid1("operator-b", free_port());
    let leaders = wait_until("a leader", Duration::from_secs(30), || async {
        let leaders = leader_of(&[&a, &b]);
        (!leaders.is_empty()).then_some(leaders)
    })
    .await;
    let (mut leader, mut standby) = if leaders[0] == 0 { (a, b) } else { (b, a) };
    apply_user(&client, &user_manifest("tess", 7301, json!({}))).await.unwrap();
    wait_phase(&client, "tess", "Ready", Duration::from_secs(30)).await;

    for (what, proc) in [("the standby", &mut standby), ("the leader", &mut leader)] {
        let asked = std::time::Instant::now();
        sigterm(pid1_of(proc.child.id()));
        let status = exit_within(&mut proc.child, Duration::from_secs(20)).await;
        assert!(status.is_some_and(|s| s.success()), "{what} exit {status:?}:\n{}", proc.log_tail());
        eprintln!("{what} stopped {:?} after SIGTERM", asked.elapsed());
    }
    assert_eq!(lease_holder(&client, SYSTEM_NS, "moltmate-operator").await, None, "the Lease handed on");
}
