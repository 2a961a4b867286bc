//! The operator against a real kube-apiserver, controller-manager and scheduler, with the
//! local node stand-in as kubelet. One control plane and one operator for this file.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::support::*;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, PersistentVolume, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sha2::Sha256;

struct Shared {
    env: TestEnv,
    http_port: u16,
    _node: Proc,
    _operator: Proc,
}

static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();

/// Started once for all tests here; a failed start fails every test with the same reason.
fn shared() -> &'static Shared {
    let shared = SHARED.get_or_init(|| {
        std::thread::spawn(|| {
            let env = TestEnv::up("operator");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(env.install());
            let node = env.spawn_node();
            let http_port = free_port();
            let operator = env.spawn_operator("operator", http_port);
            Shared { env, http_port, _node: node, _operator: operator }
        })
        .join()
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match shared {
        Ok(shared) => shared,
        Err(reason) => panic!("the test environment did not start: {reason}"),
    }
}

/// Each condition as `Type=Status`, in order, space-separated.
fn conditions(user: &moltmates::MoltmateUser) -> String {
    let each = user.status.iter().flat_map(|s| &s.conditions).map(|c| format!("{}={}", c.type_, c.status));
    each.collect::<Vec<_>>().join(" ")
}

async fn admin() -> Client {
    shared().env.admin().await
}

fn ns_of(user: &str) -> String {
    format!("moltmate-{user}")
}

/// Wait until `get` answers Some(...) matching `check`, e.g. an object restored.
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait_until(what, Duration::from_secs(15), check).await
}

#[tokio::test]
async fn a_new_user_gets_an_isolated_sandbox_and_becomes_ready() {
    let client = admin().await;
    let name = "alice";
    let started = Instant::now();
    apply_user(&client, &user_manifest(name, 1001, json!({ "displayName": "Alice" }))).await.unwrap();
    let user = wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    eprintln!("{name} Ready after {:?}", started.elapsed());

    let status = user.status.clone().unwrap();
    assert_eq!(status.namespace.as_deref(), Some("moltmate-alice"));
    assert_eq!(status.observed_generation, user.metadata.generation);
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AgentReady"));
    assert_eq!(conditions(&user), "Ready=True AgentReady=True Reconciling=False Stalled=False");

    let ns = ns_of(name);
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    let labels = namespace.labels();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "moltmate-operator");
    assert_eq!(labels["moltmate.io/user"], name);
    let owner = &namespace.owner_references()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("MoltmateUser", user.uid().unwrap().as_str()));

    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns).get("agent").await.unwrap();
    assert_eq!(sa.automount_service_account_token, Some(false));

    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get("workspace").await.unwrap();
    let pvc_spec = pvc.spec.clone().unwrap();
    assert_eq!(pvc_spec.storage_class_name.as_deref(), Some(STORAGE_CLASS));
    assert_eq!(pvc_spec.resources.unwrap().requests.unwrap()["storage"].0, "1Gi", "public preset");

    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns).get("moltmate-quota").await.unwrap();
    let hard = quota.spec.unwrap().hard.unwrap();
    assert_eq!(hard["limits.cpu"].0, "500m");
    assert_eq!(hard["limits.memory"].0, "512Mi");
    assert_eq!(hard["requests.storage"].0, "1Gi");
    assert_eq!(hard["persistentvolumeclaims"].0, "1");
    // The quota and limits are enforced by the API server, not decoration: more than the
    // profile allows is refused.
    let quota_known = || async {
        let q = get::<ResourceQuota>(&client, &ns, "moltmate-quota").await?;
        q.status?.hard.map(|_| ())
    };
    eventually("quota status filled in by the controller-manager", quota_known).await;
    let extra_claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": { "name": "extra" },
        "spec": { "accessModes": ["ReadWriteOnce"], "resources": { "requests": { "storage": "100Mi" } } },
    }))
    .unwrap();
    let refused = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &extra_claim)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("exceeded quota"), "{refused}");
    let greedy: Pod = serde_json::from_value(json!({
        "metadata": { "name": "greedy" },
        "spec": { "containers": [{ "name": "c", "image": "busybox", "resources": { "limits": { "memory": "4Gi", "cpu": "100m" } } }] },
    }))
    .unwrap();
    let refused = Api::<Pod>::namespaced(client.clone(), &ns).create(&Default::default(), &greedy).await.unwrap_err();
    assert!(refused.to_string().contains("memory"), "{refused}");

    let limits = Api::<LimitRange>::namespaced(client.clone(), &ns).get("moltmate-limits").await.unwrap();
    assert_eq!(limits.spec.unwrap().limits[0].max.as_ref().unwrap()["memory"].0, "512Mi");

    let policy =
        Api::<NetworkPolicy>::namespaced(client.clone(), &ns).get("moltmate-isolation").await.unwrap().spec.unwrap();
    assert_eq!(policy.policy_types.unwrap(), ["Ingress", "Egress"]);
    let egress = policy.egress.unwrap();
    assert_eq!(egress.len(), 1, "network none: the broker only");
    assert!(egress[0].to.as_ref().unwrap()[0].ip_block.is_none());

    // The token is HMAC-SHA256(master key, uid), so the gateway can check it without Secrets.
    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get("agent-token").await.unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(MASTER_KEY.as_bytes()).unwrap();
    mac.update(user.uid().unwrap().as_bytes());
    assert_eq!(secret.data.unwrap()["token"].0, hex::encode(mac.finalize().into_bytes()).into_bytes());

    let service = Api::<Service>::namespaced(client.clone(), &ns).get("agent").await.unwrap().spec.unwrap();
    assert_eq!(service.ports.unwrap()[0].port, 8080);
    assert_eq!(service.type_.as_deref(), Some("ClusterIP"));

    let pod = Api::<Pod>::namespaced(client.clone(), &ns).get("agent").await.unwrap();
    let spec = pod.spec.clone().unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(spec.node_name.as_deref(), Some("moltmate-dev-node"), "bound by the real scheduler");
    let broker_ip = Api::<Service>::namespaced(client.clone(), SYSTEM_NS)
        .get("moltmate-broker")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    assert_eq!(spec.host_aliases.unwrap()[0].ip, broker_ip);
    let sc = spec.containers[0].security_context.clone().unwrap();
    assert_eq!(
        (sc.read_only_root_filesystem, sc.allow_privilege_escalation, sc.run_as_non_root),
        (Some(true), Some(false), Some(true))
    );
    assert_eq!(sc.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    let ip: std::net::Ipv4Addr = pod.status.unwrap().pod_ip.unwrap().parse().unwrap();
    assert!(ip.is_loopback(), "the node stand-in's pod network is loopback: {ip}");

    // What an admin sees.
    let out = shared().env.kubectl(&["get", "mmu", name]);
    let table = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Vec<&str>> = table.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(lines[0], ["NAME", "PROFILE", "PHASE", "READY", "REASON", "AGE"], "{table}");
    assert_eq!(lines[1][..5], ["alice", "public", "Ready", "True", "AgentReady"], "{table}");
    // The Telegram id with -o wide; every moltmates kind under `kubectl get moltmates`.
    let wide = shared().env.kubectl(&["get", "mmu", name, "-o", "wide"]);
    assert!(String::from_utf8_lossy(&wide.stdout).contains("1001"), "{}", String::from_utf8_lossy(&wide.stdout));
    let category = shared().env.kubectl(&["get", "moltmates", "-o", "name"]);
    let (listed, said) = (String::from_utf8_lossy(&category.stdout), String::from_utf8_lossy(&category.stderr));
    assert!(listed.contains("moltmateuser.moltmate.io/alice"), "{listed}{said}");
    // Selectable by Telegram id, as a field selector.
    let selected = shared().env.kubectl(&["get", "mmu", "--field-selector", "spec.telegram.userId=1001", "-o", "name"]);
    assert_eq!(String::from_utf8_lossy(&selected.stdout).trim(), "moltmateuser.moltmate.io/alice");
}

async fn get<K>(client: &Client, ns: &str, name: &str) -> Option<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns).get_opt(name).await.ok().flatten()
}

#[tokio::test]
async fn tampering_with_a_sandbox_is_undone() {
    let client = admin().await;
    let name = "tamper";
    apply_user(&client, &user_manifest(name, 1002, json!({}))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    let ns = ns_of(name);
    let patch = PatchParams::default();

    // NetworkPolicy deleted.
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .delete("moltmate-isolation", &DeleteParams::default())
        .await
        .unwrap();
    eventually("NetworkPolicy re-created", || async { get::<NetworkPolicy>(&client, &ns, "moltmate-isolation").await })
        .await;

    // NetworkPolicy opened up to all egress.
    Api::<NetworkPolicy>::namespaced(client.clone(), &ns)
        .patch("moltmate-isolation", &patch, &Patch::Merge(json!({ "spec": { "egress": [{}] } })))
        .await
        .unwrap();
    eventually("NetworkPolicy egress restored", || async {
        let p = get::<NetworkPolicy>(&client, &ns, "moltmate-isolation").await?;
        let egress = p.spec?.egress?;
        (egress.len() == 1 && egress[0].to.is_some()).then_some(())
    })
    .await;

    // Quota raised by hand.
    Api::<ResourceQuota>::namespaced(client.clone(), &ns)
        .patch("moltmate-quota", &patch, &Patch::Merge(json!({ "spec": { "hard": { "limits.memory": "64Gi" } } })))
        .await
        .unwrap();
    eventually("quota restored", || async {
        let q = get::<ResourceQuota>(&client, &ns, "moltmate-quota").await?;
        (q.spec?.hard?["limits.memory"].0 == "512Mi").then_some(())
    })
    .await;

    // Service account token mounting switched on.
    Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .patch("agent", &patch, &Patch::Merge(json!({ "automountServiceAccountToken": true })))
        .await
        .unwrap();
    eventually("service account restored", || async {
        let sa = get::<ServiceAccount>(&client, &ns, "agent").await?;
        (sa.automount_service_account_token == Some(false)).then_some(())
    })
    .await;

    // Token Secret and LimitRange deleted.
    Api::<Secret>::namespaced(client.clone(), &ns).delete("agent-token", &DeleteParams::default()).await.unwrap();
    Api::<LimitRange>::namespaced(client.clone(), &ns)
        .delete("moltmate-limits", &DeleteParams::default())
        .await
        .unwrap();
    eventually("secret and limits re-created", || async {
        get::<Secret>(&client, &ns, "agent-token").await?;
        get::<LimitRange>(&client, &ns, "moltmate-limits").await
    })
    .await;

    // Pod deleted: a new one, Ready again.
    let old = get::<Pod>(&client, &ns, "agent").await.unwrap().uid().unwrap();
    Api::<Pod>::namespaced(client.clone(), &ns).delete("agent", &DeleteParams::default()).await.unwrap();
    eventually("a new agent pod", || async {
        let pod = get::<Pod>(&client, &ns, "agent").await?;
        (pod.uid()? != old).then_some(())
    })
    .await;
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;

    // Namespace security label removed.
    Api::<Namespace>::all(client.clone())
        .patch(
            &ns,
            &patch,
            &Patch::Merge(json!({ "metadata": { "labels": { "pod-security.kubernetes.io/enforce": "privileged" } } })),
        )
        .await
        .unwrap();
    eventually("namespace label restored", || async {
        let n = Api::<Namespace>::all(client.clone()).get(&ns).await.ok()?;
        (n.labels()["pod-security.kubernetes.io/enforce"] == "restricted").then_some(())
    })
    .await;

    let out = shared().env.kubectl(&[
        "get",
        "events.events.k8s.io",
        "-n",
        "default",
        "-o",
        "jsonpath={range .items[?(@.regarding.name==\"tamper\")]}{.reason}{\"\\n\"}{end}",
    ]);
    let reasons = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(reasons.contains("Restored"), "a Restored event is recorded on the user: {reasons:?}");
}

#[tokio::test]
async fn suspend_removes_the_pod_and_resume_brings_it_back() {
    let client = admin().await;
    let name = "sleepy";
    apply_user(&client, &user_manifest(name, 1003, json!({}))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    let ns = ns_of(name);
    let pvc_uid = get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap().uid();

    apply_user(&client, &user_manifest(name, 1003, json!({ "suspend": true }))).await.unwrap();
    let user = wait_phase(&client, name, "Suspended", Duration::from_secs(10)).await;
    // Settled as asked (GitOps tools see it Current); the agent itself is not serving.
    assert_eq!(conditions(&user), "Ready=True AgentReady=False Reconciling=False Stalled=False");
    eventually("pod removed", || async { get::<Pod>(&client, &ns, "agent").await.is_none().then_some(()) }).await;
    assert!(get::<Service>(&client, &ns, "agent").await.is_some(), "everything else stays");
    assert_eq!(get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap().uid(), pvc_uid);

    apply_user(&client, &user_manifest(name, 1003, json!({ "suspend": false }))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    assert!(get::<Pod>(&client, &ns, "agent").await.is_some());
}

#[tokio::test]
async fn a_profile_change_replaces_the_pod_and_keeps_the_workspace() {
    let client = admin().await;
    let name = "climber";
    apply_user(&client, &user_manifest(name, 1004, json!({ "profile": "public" }))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    let ns = ns_of(name);
    let pvc_uid = get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap().uid();
    let pod_uid = get::<Pod>(&client, &ns, "agent").await.unwrap().uid();

    apply_user(&client, &user_manifest(name, 1004, json!({ "profile": "family" }))).await.unwrap();
    let pod = eventually("a new pod with the family profile", || async {
        let pod = get::<Pod>(&client, &ns, "agent").await?;
        (pod.uid() != pod_uid && pod.metadata.deletion_timestamp.is_none()).then_some(pod)
    })
    .await;
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    let profile = env.iter().find(|e| e.name == "MOLTMATE_PROFILE").unwrap().value.clone().unwrap();
    assert!(profile.contains("\"profile\":\"family\""), "{profile}");
    let user = wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    assert_eq!(user.status.unwrap().observed_generation, user.metadata.generation);
    // Family's storage is 5Gi, but a workspace never shrinks or gets replaced.
    let pvc = get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap();
    assert_eq!(pvc.uid(), pvc_uid);
    let quota = get::<ResourceQuota>(&client, &ns, "moltmate-quota").await.unwrap();
    assert_eq!(quota.spec.unwrap().hard.unwrap()["limits.cpu"].0, "1");
}

/// The directory backing a claim on the local node.
async fn volume_dir(client: &Client, ns: &str) -> std::path::PathBuf {
    let pvc = eventually("claim bound", || async {
        let pvc = get::<PersistentVolumeClaim>(client, ns, "workspace").await?;
        pvc.spec.as_ref()?.volume_name.is_some().then_some(pvc)
    })
    .await;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(pvc.spec.unwrap().volume_name.as_ref().unwrap())
        .await
        .unwrap();
    pv.spec.unwrap().host_path.unwrap().path.into()
}

#[tokio::test]
async fn retained_workspace_survives_deletion_and_is_adopted_again() {
    let client = admin().await;
    let name = "keeper";
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    apply_user(&client, &user_manifest(name, 1005, json!({}))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    let ns = ns_of(name);
    let pvc_uid = get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap().uid();
    let dir = volume_dir(&client, &ns).await;
    std::fs::write(dir.join("MEMORY.md"), "remember the milk\n").unwrap();

    users.delete(name, &DeleteParams::default()).await.unwrap();
    eventually("user gone", || async { users.get_opt(name).await.ok()?.is_none().then_some(()) }).await;
    eventually("pod, service and secret removed", || async {
        let gone = get::<Pod>(&client, &ns, "agent").await.is_none()
            && get::<Service>(&client, &ns, "agent").await.is_none()
            && get::<Secret>(&client, &ns, "agent-token").await.is_none();
        gone.then_some(())
    })
    .await;
    // Give the garbage collector a chance to do the wrong thing, then check nothing else went.
    let namespace = eventually("namespace retained", || async {
        let n = Api::<Namespace>::all(client.clone()).get(&ns).await.ok()?;
        (n.labels().get("moltmate.io/retained").map(String::as_str) == Some("true")).then_some(n)
    })
    .await;
    assert!(namespace.owner_references().is_empty(), "no owner left to garbage-collect it");
    assert_eq!(namespace.status.as_ref().unwrap().phase.as_deref(), Some("Active"));
    let pvc = get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap();
    assert!(pvc.owner_references().is_empty());
    assert_eq!(pvc.uid(), pvc_uid);
    assert_eq!(namespace.annotations()["moltmate.io/owner-telegram-id"], "1005", "whose workspace it is");

    // Another person under the same name gets nothing of it: no agent, the data untouched,
    // and the admin is told how to hand it over or wipe it.
    apply_user(&client, &user_manifest(name, 1105, json!({}))).await.unwrap();
    let refused = wait_phase(&client, name, "Failed", Duration::from_secs(10)).await;
    let ready = refused.status.unwrap().conditions[0].clone();
    assert_eq!(ready.reason, "WorkspaceOfAnotherPerson");
    assert!(ready.message.contains("of Telegram user 1005"), "{}", ready.message);
    let hand_over = format!("kubectl annotate namespace {ns} moltmate.io/owner-telegram-id=1105 --overwrite");
    assert!(
        ready.message.contains(&hand_over) && ready.message.contains(&format!("kubectl delete namespace {ns}")),
        "{}",
        ready.message
    );
    assert!(
        get::<Pod>(&client, &ns, "agent").await.is_none() && get::<Secret>(&client, &ns, "agent-token").await.is_none()
    );
    // Deleting the refused user leaves the workspace as it was, still the first person's.
    users.delete(name, &DeleteParams::default()).await.unwrap();
    eventually("refused user gone", || async { users.get_opt(name).await.ok()?.is_none().then_some(()) }).await;
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert_eq!(namespace.annotations()["moltmate.io/owner-telegram-id"], "1005");
    assert_eq!(namespace.labels()["moltmate.io/retained"], "true");
    assert_eq!(
        std::fs::read_to_string(volume_dir(&client, &ns).await.join("MEMORY.md")).unwrap(),
        "remember the milk\n"
    );

    // The same person comes back: the workspace is theirs again.
    apply_user(&client, &user_manifest(name, 1005, json!({}))).await.unwrap();
    let user = wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    let pvc = get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap();
    assert_eq!(pvc.uid(), pvc_uid, "same workspace adopted");
    assert_eq!(pvc.owner_references()[0].uid, user.uid().unwrap());
    let namespace = Api::<Namespace>::all(client.clone()).get(&ns).await.unwrap();
    assert!(!namespace.labels().contains_key("moltmate.io/retained"), "adopted again: {:?}", namespace.labels());
    assert_eq!(
        std::fs::read_to_string(volume_dir(&client, &ns).await.join("MEMORY.md")).unwrap(),
        "remember the milk\n"
    );
}

#[tokio::test]
async fn delete_policy_removes_the_namespace() {
    let client = admin().await;
    let name = "ephemeral";
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    apply_user(&client, &user_manifest(name, 1006, json!({ "workspace": { "deletionPolicy": "Delete" } })))
        .await
        .unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    users.delete(name, &DeleteParams::default()).await.unwrap();
    let ns = ns_of(name);
    wait_until("namespace deleted", Duration::from_secs(60), || async {
        Api::<Namespace>::all(client.clone()).get_opt(&ns).await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(users.get_opt(name).await.unwrap().is_none());
}

#[tokio::test]
async fn a_second_user_with_a_taken_telegram_id_gets_nothing() {
    let client = admin().await;
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    apply_user(&client, &user_manifest("first", 1007, json!({}))).await.unwrap();
    wait_phase(&client, "first", "Ready", Duration::from_secs(10)).await;
    apply_user(&client, &user_manifest("second", 1007, json!({}))).await.unwrap();
    let second = wait_phase(&client, "second", "Failed", Duration::from_secs(10)).await;
    assert_eq!(conditions(&second), "Ready=False AgentReady=False Reconciling=False Stalled=True");
    let ready = second.status.unwrap().conditions[0].clone();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "DuplicateTelegramId"));
    assert!(ready.message.contains("first"), "{}", ready.message);
    assert!(
        Api::<Namespace>::all(client.clone()).get_opt("moltmate-second").await.unwrap().is_none(),
        "no resources for the newcomer"
    );
    // The older one is untouched.
    wait_phase(&client, "first", "Ready", Duration::from_secs(1)).await;

    // Once the holder is gone, the id is free.
    users.delete("first", &DeleteParams::default()).await.unwrap();
    wait_phase(&client, "second", "Ready", Duration::from_secs(30)).await;
}

/// The API server's refusal of `manifest` (applied as `kubectl apply --server-side` would).
async fn refusal(client: &Client, manifest: &serde_json::Value) -> String {
    let what = manifest["metadata"]["name"].to_string();
    match apply_user(client, manifest).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{what}: {status:?}");
            status.message
        }
        Err(other) => panic!("{what}: unexpected error {other}"),
        Ok(_) => panic!("{what} must be refused"),
    }
}

/// What the schema's patterns cannot say, the CRD's CEL rules do, at `kubectl apply` time.
#[tokio::test]
async fn cel_rules_refuse_what_the_operator_could_only_report_later() {
    let client = admin().await;
    // A name that cannot make the namespace moltmate-<name>: too long, or not a DNS label.
    let message = refusal(&client, &user_manifest(&"n".repeat(55), 1008, json!({}))).await;
    assert!(message.contains("metadata.name") && message.contains("at most 54"), "{message}");
    let message = refusal(&client, &user_manifest("has.dot", 1008, json!({}))).await;
    assert!(message.contains("metadata.name") && message.contains("no dots"), "{message}");
    // 54 characters is fine.
    let longest = "l".repeat(54);
    apply_user(&client, &user_manifest(&longest, 1008, json!({}))).await.unwrap();
    wait_phase(&client, &longest, "Ready", Duration::from_secs(30)).await;

    // Zero limits match the quantity pattern but would leave the agent unable to run.
    for field in ["cpu", "memory", "storage"] {
        let manifest = user_manifest("zero-quantity", 1010, json!({ "resources": { field: "0" } }));
        let message = refusal(&client, &manifest).await;
        assert!(message.contains(&format!("spec.resources.{field}")) && message.contains("above zero"), "{message}");
        let manifest = user_manifest("zero-quantity", 1010, json!({ "resources": { field: "0.0Mi" } }));
        assert!(refusal(&client, &manifest).await.contains("above zero"));
    }

    // The Telegram id decides whose messages reach this agent and its workspace: it cannot
    // be switched to another account in place.
    apply_user(&client, &user_manifest("fixed-id", 1011, json!({}))).await.unwrap();
    let message = refusal(&client, &user_manifest("fixed-id", 1012, json!({}))).await;
    assert!(message.contains("spec.telegram.userId cannot change"), "{message}");
    // Other fields still change freely.
    apply_user(&client, &user_manifest("fixed-id", 1011, json!({ "displayName": "Fixed" }))).await.unwrap();
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    assert_eq!(users.get("fixed-id").await.unwrap().spec.telegram.user_id, 1011);
}

/// Pod Security admission enforces `restricted` in every user namespace: a pod that breaks
/// it is refused by the API server, whoever creates it; the operator's agent pods pass.
#[tokio::test]
async fn pod_security_refuses_a_pod_that_breaks_restricted_in_a_user_namespace() {
    let client = admin().await;
    apply_user(&client, &user_manifest("psa", 1013, json!({}))).await.unwrap();
    wait_phase(&client, "psa", "Ready", Duration::from_secs(30)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "moltmate-psa");
    assert!(pods.get_opt("agent").await.unwrap().is_some(), "the operator's agent pod was admitted");

    let container = json!({ "name": "c", "image": "busybox" });
    let breaking = [
        (
            "privileged",
            json!({ "containers": [{ "name": "c", "image": "busybox", "securityContext": { "privileged": true } }] }),
        ),
        (
            "host-path",
            json!({ "containers": [container.clone()], "volumes": [{ "name": "root", "hostPath": { "path": "/" } }] }),
        ),
        ("host-network", json!({ "hostNetwork": true, "containers": [container.clone()] })),
        // Baseline allows this one; only restricted refuses it (root, no seccomp, caps kept).
        ("plain", json!({ "containers": [container.clone()] })),
    ];
    for (name, spec) in breaking {
        let pod: Pod = serde_json::from_value(
            json!({ "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name }, "spec": spec }),
        )
        .unwrap();
        let err = pods.create(&Default::default(), &pod).await.expect_err(&format!("{name} must be refused"));
        let kube::Error::Api(status) = &err else { panic!("{name}: {err}") };
        assert_eq!(status.code, 403, "{name}: {err}");
        assert!(status.message.contains("violates PodSecurity \"restricted:latest\""), "{name}: {}", status.message);
    }
}

#[tokio::test]
async fn the_api_server_rejects_invalid_users_naming_the_field() {
    let client = admin().await;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("zero-id", json!({ "telegram": { "userId": 0 } }), "spec.telegram.userId"),
        ("no-telegram", json!({ "profile": "public" }), "spec.telegram"),
        ("string-id", json!({ "telegram": { "userId": "abc" } }), "spec.telegram.userId"),
        ("bad-profile", json!({ "telegram": { "userId": 5 }, "profile": "root" }), "spec.profile"),
        (
            "bad-network",
            json!({ "telegram": { "userId": 5 }, "sandbox": { "network": "host" } }),
            "spec.sandbox.network",
        ),
        (
            "bad-access",
            json!({ "telegram": { "userId": 5 }, "sandbox": { "workspaceAccess": "rwx" } }),
            "spec.sandbox.workspaceAccess",
        ),
        ("bad-security", json!({ "telegram": { "userId": 5 }, "exec": { "security": "none" } }), "spec.exec.security"),
        ("path-bin", json!({ "telegram": { "userId": 5 }, "exec": { "safeBins": ["/bin/sh"] } }), "spec.exec.safeBins"),
        (
            "space-bin",
            json!({ "telegram": { "userId": 5 }, "exec": { "safeBins": ["cat /etc/shadow"] } }),
            "spec.exec.safeBins",
        ),
        (
            "bad-domain",
            json!({ "telegram": { "userId": 5 }, "web": { "fetch": { "allowedDomains": ["http://evil.example/x"] } } }),
            "spec.web.fetch.allowedDomains",
        ),
        ("bad-cpu", json!({ "telegram": { "userId": 5 }, "resources": { "cpu": "lots" } }), "spec.resources.cpu"),
        ("zero-cpu", json!({ "telegram": { "userId": 5 }, "resources": { "cpu": 0 } }), "spec.resources.cpu"),
        ("negative-cpu", json!({ "telegram": { "userId": 5 }, "resources": { "cpu": -2 } }), "spec.resources.cpu"),
        (
            "negative-memory",
            json!({ "telegram": { "userId": 5 }, "resources": { "memory": "-1Gi" } }),
            "spec.resources.memory",
        ),
        ("bad-timeout", json!({ "telegram": { "userId": 5 }, "idleTimeout": "soon" }), "spec.idleTimeout"),
        (
            "bad-policy",
            json!({ "telegram": { "userId": 5 }, "workspace": { "deletionPolicy": "Shred" } }),
            "spec.workspace.deletionPolicy",
        ),
    ];
    assert!(cases.len() >= 10);
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    for (name, spec, field) in cases {
        let manifest = json!({ "apiVersion": "moltmate.io/v1alpha1", "kind": "MoltmateUser", "metadata": { "name": name }, "spec": spec });
        let object: moltmates::MoltmateUser = match serde_json::from_value(manifest.clone()) {
            Ok(object) => object,
            // Not even the Rust type can hold it (e.g. a string id): send the raw JSON.
            Err(_) => {
                let raw = kube::core::DynamicObject::new(
                    name,
                    &kube::core::ApiResource::erase::<moltmates::MoltmateUser>(&()),
                )
                .data(json!({ "spec": manifest["spec"].clone() }));
                let dynamic: Api<kube::core::DynamicObject> =
                    Api::all_with(client.clone(), &kube::core::ApiResource::erase::<moltmates::MoltmateUser>(&()));
                let err =
                    dynamic.create(&Default::default(), &raw).await.expect_err(&format!("{name} must be rejected"));
                let kube::Error::Api(status) = &err else { panic!("{name}: {err}") };
                assert_eq!(status.code, 422, "{name}: {err}");
                assert!(status.message.contains(field), "{name}: message should name {field}: {}", status.message);
                continue;
            }
        };
        let err = users.create(&Default::default(), &object).await.expect_err(&format!("{name} must be rejected"));
        let message = match &err {
            kube::Error::Api(status) => {
                assert_eq!(status.code, 422, "{name}: {err}");
                status.message.clone()
            }
            other => panic!("{name}: unexpected error {other}"),
        };
        assert!(message.contains(field), "{name}: message should name {field}: {message}");
    }
}

/// `cpu: 1` unquoted, as Kubernetes itself takes quantities: accepted, and the agent's
/// container gets it.
#[tokio::test]
async fn quantities_may_be_whole_numbers_as_kubernetes_takes_them() {
    let client = admin().await;
    let resources = json!({ "resources": { "cpu": 1, "memory": "768Mi" } });
    apply_user(&client, &user_manifest("whole", 1021, resources)).await.unwrap();
    wait_phase(&client, "whole", "Ready", Duration::from_secs(20)).await;
    let pod: Pod = get(&client, &ns_of("whole"), "agent").await.unwrap();
    let limits = pod.spec.unwrap().containers[0].resources.clone().unwrap().limits.unwrap();
    assert_eq!((limits["cpu"].0.as_str(), limits["memory"].0.as_str()), ("1", "768Mi"));
}

#[tokio::test]
async fn the_operator_runs_with_its_own_narrow_permissions() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let operator = shared().env.operator_client().await;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(operator);
    let can = |verb: &str, group: &str, resource: &str| {
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews = reviews.clone();
        async move { reviews.create(&Default::default(), &review).await.unwrap().status.unwrap().allowed }
    };
    assert!(can("patch", "", "pods").await);
    assert!(can("watch", "moltmate.io", "moltmateusers").await);
    assert!(!can("create", "moltmate.io", "moltmateusers").await, "the operator never invents users");
    assert!(!can("delete", "moltmate.io", "moltmateusers").await);
    assert!(!can("create", "rbac.authorization.k8s.io", "clusterrolebindings").await);
    assert!(!can("create", "", "nodes").await);
    assert!(!can("create", "apps", "deployments").await);
}

#[tokio::test]
async fn health_and_metrics_are_served() {
    let client = admin().await;
    apply_user(&client, &user_manifest("counted", 1010, json!({}))).await.unwrap();
    wait_phase(&client, "counted", "Ready", Duration::from_secs(10)).await;
    let port = shared().http_port;
    assert_eq!(http_get(port, "/healthz").await.unwrap().0, 200);
    let ready = wait_until("operator ready", Duration::from_secs(10), || async {
        http_get(port, "/readyz").await.filter(|(code, _)| *code == 200)
    })
    .await;
    assert_eq!(ready.1.trim(), "ready");
    let (code, body) = http_get(port, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    let ready_users = body
        .lines()
        .find(|l| l.starts_with("moltmate_operator_users{phase=\"Ready\"}"))
        .and_then(|l| l.split_whitespace().last()?.parse::<i64>().ok())
        .unwrap_or_else(|| panic!("no users gauge in:\n{body}"));
    assert!(ready_users >= 1);
    assert!(body.contains("moltmate_operator_reconcile_duration_seconds_bucket"), "{body}");
    assert!(body.contains("moltmate_operator_reconciles_total{result=\"ok\"}"), "{body}");
}

#[tokio::test]
async fn every_example_user_becomes_ready() {
    let client = admin().await;
    let examples = format!("{REPO}/manifests/examples");
    let out = shared().env.kubectl(&["apply", "-f", &examples]);
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    // The files at the top (one user per profile); `gitops/` is a layout of its own.
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(path).unwrap();
        let manifest: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let name = manifest["metadata"]["name"].as_str().unwrap();
        wait_phase(&client, name, "Ready", Duration::from_secs(15)).await;
    }
}

#[tokio::test]
async fn kubectl_explain_documents_the_fields() {
    shared();
    let out = shared().env.kubectl(&["explain", "moltmateuser.spec.exec"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("safeBins") && text.contains("security") && text.contains("/usr/bin"), "{text}");
}

#[tokio::test]
async fn a_user_cannot_take_over_an_existing_namespace() {
    let client = admin().await;
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    // `moltmate-system` is the release namespace: a user named "system" must neither fence it
    // nor, with deletionPolicy Delete, delete it.
    let manifest = user_manifest("system", 1011, json!({ "workspace": { "deletionPolicy": "Delete" } }));
    apply_user(&client, &manifest).await.unwrap();
    let user = wait_phase(&client, "system", "Failed", Duration::from_secs(10)).await;
    let ready = user.status.unwrap().conditions[0].clone();
    assert_eq!(ready.reason, "NamespaceConflict", "{}", ready.message);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = namespaces.get(SYSTEM_NS).await.unwrap();
    assert!(ns.owner_references().is_empty() && !ns.labels().contains_key("moltmate.io/user"), "{:?}", ns.metadata);
    assert!(get::<NetworkPolicy>(&client, SYSTEM_NS, "moltmate-isolation").await.is_none());

    users.delete("system", &DeleteParams::default()).await.unwrap();
    eventually("user gone", || async { users.get_opt("system").await.ok()?.is_none().then_some(()) }).await;
    let ns = namespaces.get(SYSTEM_NS).await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_none(), "the release namespace survives");
}

#[tokio::test]
async fn an_idle_user_loses_the_pod_and_a_message_brings_it_back() {
    let client = admin().await;
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    let name = "dozy";
    let ns = ns_of(name);
    apply_user(&client, &user_manifest(name, 1012, json!({ "idleTimeout": "6s" }))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    let pvc_uid = get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap().uid();

    let idle = wait_phase(&client, name, "Idle", Duration::from_secs(20)).await;
    assert_eq!(conditions(&idle), "Ready=True AgentReady=False Reconciling=False Stalled=False");
    eventually("idle pod removed", || async { get::<Pod>(&client, &ns, "agent").await.is_none().then_some(()) }).await;
    assert_eq!(get::<PersistentVolumeClaim>(&client, &ns, "workspace").await.unwrap().uid(), pvc_uid);

    // What the gateway does when a message arrives: stamp the activity.
    let now = jiff::Timestamp::now().to_string();
    let stamp = json!({ "metadata": { "annotations": { "moltmate.io/last-activity": now } } });
    users.patch(name, &PatchParams::default(), &Patch::Merge(&stamp)).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(10)).await;
    assert!(get::<Pod>(&client, &ns, "agent").await.is_some());
}

#[tokio::test]
async fn full_network_policies_except_every_nodes_own_public_address() {
    use k8s_openapi::api::core::v1::Node;
    let client = admin().await;
    let nodes: Api<Node> = Api::all(client.clone());
    // A node with a public address (a rented server); nothing is ever scheduled on it here.
    let node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": "edge-node" },
        "spec": { "unschedulable": true, "taints": [{ "key": "moltmate.test/no-pods", "effect": "NoSchedule" }] },
    }))
    .unwrap();
    nodes.create(&Default::default(), &node).await.unwrap();
    let set_addresses = |external: &'static str| {
        let nodes = nodes.clone();
        async move {
            let status = json!({ "status": { "addresses": [
                { "type": "ExternalIP", "address": external },
                { "type": "InternalIP", "address": "10.1.2.3" },
                { "type": "Hostname", "address": "edge-node" },
            ] } });
            nodes.patch_status("edge-node", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
        }
    };
    set_addresses("203.0.113.9").await;
    apply_user(&client, &user_manifest("nora", 1090, json!({ "profile": "personal" }))).await.unwrap();
    let excepts = || async {
        let policy = get::<NetworkPolicy>(&client, &ns_of("nora"), "moltmate-isolation").await?;
        let spec = policy.spec?;
        let blocks = spec.egress?.into_iter().flat_map(|r| r.to.unwrap_or_default()).filter_map(|p| p.ip_block);
        Some(blocks.flat_map(|b| b.except.unwrap_or_default()).collect::<Vec<String>>())
    };
    eventually("the node's address excepted", || async {
        excepts().await.filter(|e| e.contains(&"203.0.113.9/32".to_string()))
    })
    .await;
    // The node's address changes: every full policy follows.
    set_addresses("203.0.113.10").await;
    let now = eventually("the new address excepted", || async {
        excepts().await.filter(|e| e.contains(&"203.0.113.10/32".to_string()))
    })
    .await;
    assert!(!now.contains(&"203.0.113.9/32".to_string()), "{now:?}");
    assert!(!now.iter().any(|e| e.starts_with("10.1.2.3")), "private addresses are covered by 10.0.0.0/8: {now:?}");
    nodes.delete("edge-node", &DeleteParams::default()).await.unwrap();
}

/// Operator replicas starting together agree on one generated master key, and an existing key
/// (made by hand or by an older chart) is used as it is, never replaced.
#[tokio::test]
async fn replicas_starting_together_generate_one_master_key_and_keep_an_existing_one() {
    use k8s_openapi::api::core::v1::Secret;
    use moltmates::operator::master_key::{self, get_or_create};

    let client = admin().await;
    let ns = "default";
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = "master-key-race";
    let tokens = futures::future::join_all((0..4).map(|_| {
        let secrets = secrets.clone();
        async move { get_or_create(&secrets, ns, name).await.unwrap().agent_token("uid") }
    }))
    .await;
    assert!(tokens.windows(2).all(|pair| pair[0] == pair[1]), "replicas disagree: {tokens:?}");
    let stored = secrets.get(name).await.unwrap();
    let key = master_key::read(ns, name, &stored).unwrap();
    assert_eq!(key.agent_token("uid"), tokens[0], "the key in use is the stored one");

    // A key someone made is used as it is; a short or missing one is refused naming the Secret.
    let given = "given-master-key-0123456789abcdef0123456789";
    let own = master_key::secret(ns, "master-key-given", given.into());
    secrets.create(&Default::default(), &own).await.unwrap();
    let read = get_or_create(&secrets, ns, "master-key-given").await.unwrap();
    assert_eq!(read.agent_token("uid"), moltmates::token::MasterKey::new(given).unwrap().agent_token("uid"));
    let short = master_key::secret(ns, "master-key-short", "short".into());
    let before = secrets.create(&Default::default(), &short).await.unwrap();
    let refused = get_or_create(&secrets, ns, "master-key-short").await.unwrap_err().to_string();
    assert!(refused.contains("default/master-key-short") && refused.contains("at least 32"), "{refused}");
    let after = secrets.get("master-key-short").await.unwrap();
    assert_eq!(after.metadata.resource_version, before.metadata.resource_version, "never rewritten");
}

/// The installation's agent-pod settings reach every agent pod: the pull Secret is copied from
/// the gateway namespace into the user's (a pod can name only its own namespace's Secrets), the
/// runtime class and scheduling are the pod's; a pull Secret not yet created is named in the
/// user's status until it is.
#[tokio::test]
async fn agent_pods_get_the_installations_runtime_class_scheduling_and_pull_secrets() {
    let (env, client, _node) = TestEnv::up_installed("agent-pod").await;
    let kubectl_ok = |args: &[&str]| {
        let out = env.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // What a cluster with gVisor and a dedicated node pool has.
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": "gvisor"}, "handler": "runsc"},
        {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "agents"}, "value": 100},
    ]});
    let file = env.dir.join("cluster-objects.json");
    std::fs::write(&file, objects.to_string()).unwrap();
    kubectl_ok(&["create", "-f", file.to_str().unwrap()]);
    kubectl_ok(&["label", "nodes", "--all", "pool=agents"]);

    let settings = json!({
        "imagePullSecrets": ["regcred"],
        "runtimeClassName": "gvisor",
        "nodeSelector": {"pool": "agents"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "agents", "effect": "NoSchedule"}],
        "priorityClassName": "agents",
    });
    let flag = format!("--agent-pod={settings}");
    let _operator = env.spawn_operator_with("operator", free_port(), &[flag.as_str()]);

    apply_user(&client, &user_manifest("dora", 7001, json!({"profile": "family"}))).await.unwrap();
    let waiting = wait_phase(&client, "dora", "Failed", Duration::from_secs(30)).await;
    let status = waiting.status.unwrap();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
    assert_eq!(ready.reason, "ImagePullSecretMissing");
    assert!(ready.message.contains("regcred") && ready.message.contains(SYSTEM_NS), "{ready:?}");

    let dockerconfig = r#"{"auths":{"registry.invalid":{"auth":"dTpw"}}}"#;
    let file = env.dir.join("dockerconfig.json");
    std::fs::write(&file, dockerconfig).unwrap();
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "regcred",
        "-n",
        SYSTEM_NS,
        "--type=kubernetes.io/dockerconfigjson",
        &format!("--from-file=.dockerconfigjson={}", file.display()),
    ]);
    wait_phase(&client, "dora", "Ready", Duration::from_secs(60)).await;

    let copy = Api::<Secret>::namespaced(client.clone(), "moltmate-dora").get("regcred").await.unwrap();
    assert_eq!(copy.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
    assert_eq!(copy.data.unwrap()[".dockerconfigjson"].0, dockerconfig.as_bytes());
    assert_eq!(copy.metadata.owner_references.unwrap()[0].name, "dora", "goes with the user");
    let pod = Api::<Pod>::namespaced(client.clone(), "moltmate-dora").get("agent").await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.image_pull_secrets.unwrap()[0].name, "regcred");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.node_selector.unwrap()["pool"], "agents");
    assert_eq!(spec.tolerations.unwrap()[0].key.as_deref(), Some("dedicated"));
    assert_eq!(spec.priority_class_name.as_deref(), Some("agents"));
    assert_eq!(spec.priority, Some(100), "the API server resolved the PriorityClass");
}
