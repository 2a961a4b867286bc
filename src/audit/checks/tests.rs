//! The checks against an in-memory install: `manifests/install.yaml`'s objects plus two users
//! built by the operator's own builders; clean first, then weakened one thing at a time.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::Resource;
use serde_json::{Value, json};

use super::checks;
use crate::MoltmateUser;
use crate::audit::finding::{AuditConfig, Finding, Status};
use crate::audit::snapshot::{SecretInfo, Snapshot};
use crate::builders::{self, BuildInput};
use crate::crd::{MoltmateUserSpec, MoltmateUserStatus, Phase, Profile};
use crate::profile;

const NS: &str = "moltmate-system";

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// install.yaml's namespaced objects of the release.
fn release() -> Snapshot {
    // Read at run time: the image's build stage copies only the crate, not manifests/.
    let install = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/install.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&install).unwrap();
    let mut snap = Snapshot::default();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("Deployment") => snap.deployments.push(parse::<Deployment>(doc)),
            Some("Service") => snap.services.push(parse::<Service>(doc)),
            Some("NetworkPolicy") => snap.network_policies.push(parse::<NetworkPolicy>(doc)),
            Some("ConfigMap") => snap.config_maps.push(parse::<ConfigMap>(doc)),
            Some("Namespace") => snap.namespaces.push(parse::<Namespace>(doc)),
            _ => {}
        }
    }
    let lengths = [("bot-token", 46), ("llm-api-key", 51), ("master-key", 64)].map(|(k, n)| (k.to_string(), n)).into();
    snap.secrets.push(SecretInfo {
        namespace: NS.into(),
        name: "moltmates".into(),
        type_: Some("Opaque".into()),
        lengths,
    });
    snap
}

fn user(name: &str, profile: Profile) -> MoltmateUser {
    let mut u = MoltmateUser::new(name, MoltmateUserSpec::new(1000 + name.len() as i64, profile));
    u.metadata.uid = Some(format!("uid-{name}"));
    u.metadata.generation = Some(1);
    u.status =
        Some(MoltmateUserStatus { observed_generation: Some(1), phase: Some(Phase::Ready), ..Default::default() });
    u
}

/// Add a user's sandbox as the operator (configured as the Deployment says) builds it.
fn add_user(snap: &mut Snapshot, u: MoltmateUser) {
    let mut ignored = Vec::new();
    let config = AuditConfig::new(NS);
    let cluster = super::install::read(snap, &config, &mut ignored).cluster;
    let resolved = profile::resolve_with(&u.spec, &cluster.profiles).unwrap();
    let d = builders::build(
        &u,
        &BuildInput {
            profile: &resolved,
            config: &cluster,
            agent_token: "t",
            broker_ip: Some("10.0.0.1"),
            node_addresses: &[],
            pull_secrets: &[],
        },
    )
    .unwrap();
    snap.namespaces.push(d.namespace);
    snap.network_policies.push(d.network_policy);
    snap.quotas.push(d.quota);
    snap.limit_ranges.push(d.limit_range);
    snap.services.push(d.service);
    snap.pvcs.push(d.workspace);
    snap.pods.push(d.pod);
    snap.users.push(u);
}

fn clean() -> Snapshot {
    let mut snap = release();
    add_user(&mut snap, user("ann", Profile::Family));
    add_user(&mut snap, user("bob", Profile::Public));
    snap
}

fn run(snap: &Snapshot) -> Vec<Finding> {
    checks(snap, &AuditConfig::new(NS))
}

fn not_passing(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .filter(|f| f.status != Status::Pass)
        .map(|f| format!("{} {} {}: {}", f.status.as_str(), f.check, f.object, f.message))
        .collect()
}

#[test]
fn a_clean_install_passes_every_check() {
    let findings = run(&clean());
    assert_eq!(not_passing(&findings), Vec::<String>::new());
    for check in
        super::ALL.iter().filter(|c| **c != "webhook-secret" && **c != "ingress" && **c != "retained-workspace")
    {
        assert!(findings.iter().any(|f| f.check == *check), "no row for {check}");
    }
}

fn deployment<'a>(snap: &'a mut Snapshot, role: &str) -> &'a mut Deployment {
    let name = format!("moltmate-{role}");
    snap.deployments.iter_mut().find(|d| d.metadata.name.as_deref() == Some(name.as_str())).unwrap()
}

fn container<'a>(snap: &'a mut Snapshot, role: &str) -> &'a mut k8s_openapi::api::core::v1::Container {
    &mut deployment(snap, role).spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0]
}

fn named<'a, K: Resource>(items: &'a mut [K], ns: &str, name: &str) -> &'a mut K {
    items
        .iter_mut()
        .find(|o| o.meta().namespace.as_deref() == Some(ns) && o.meta().name.as_deref() == Some(name))
        .unwrap()
}

fn set_env(snap: &mut Snapshot, role: &str, name: &str, value: &str) {
    container(snap, role).env.get_or_insert_with(Vec::new).push(parse(json!({"name": name, "value": value})));
}

fn webhook_mode(snap: &mut Snapshot, with_secret: bool) {
    let c = container(snap, "gateway");
    let args = c.args.as_mut().unwrap();
    args.retain(|a| !a.starts_with("--telegram-mode"));
    args.push("--telegram-mode=webhook".into());
    c.ports.as_mut().unwrap().push(parse(json!({"name": "webhook", "containerPort": 8443})));
    if with_secret {
        args.push("--webhook-secret-file=/etc/moltmate/secrets/webhook-secret".into());
        snap.secrets[0].lengths.insert("webhook-secret".into(), 64);
    }
    let spec = deployment(snap, "gateway").spec.as_mut().unwrap().template.spec.as_mut().unwrap();
    let volume = spec.volumes.as_mut().unwrap().iter_mut().find(|v| v.name == "secrets").unwrap();
    let sources = volume.projected.as_mut().unwrap().sources.as_mut().unwrap();
    sources.push(parse(
        json!({"secret": {"name": "moltmates", "items": [{"key": "webhook-secret", "path": "webhook-secret"}]}}),
    ));
    snap.services.push(parse(json!({
        "metadata": {"name": "moltmate-webhook", "namespace": NS},
        "spec": {"ports": [{"name": "webhook", "port": 8443, "targetPort": "webhook"}]},
    })));
}

fn ingress_to(service: &str, port: &str) -> Ingress {
    parse(json!({
        "metadata": {"name": "bot", "namespace": NS},
        "spec": {"rules": [{"host": "bot.example.org", "http": {"paths": [
            {"path": "/telegram", "pathType": "Exact", "backend": {"service": {"name": service, "port": {"name": port}}}}
        ]}}]},
    }))
}

type Weaken = fn(&mut Snapshot);

/// (what is weakened, how, the check, the status, the object named)
fn weakenings() -> Vec<(&'static str, Weaken, &'static str, Status, &'static str)> {
    vec![
        (
            "NetworkPolicy deleted",
            |s| s.network_policies.retain(|p| p.metadata.namespace.as_deref() != Some("moltmate-bob")),
            "network-policy",
            Status::Fail,
            "NetworkPolicy moltmate-bob/moltmate-isolation",
        ),
        (
            "NetworkPolicy narrowed to some pods",
            |s| {
                let p = named(&mut s.network_policies, "moltmate-bob", "moltmate-isolation");
                p.spec.as_mut().unwrap().pod_selector =
                    Some(parse(json!({"matchLabels": {"app.kubernetes.io/name": "moltmate-agent"}})));
            },
            "network-policy",
            Status::Fail,
            "NetworkPolicy moltmate-bob/moltmate-isolation",
        ),
        (
            "NetworkPolicy egress opened",
            |s| {
                let p = named(&mut s.network_policies, "moltmate-ann", "moltmate-isolation");
                p.spec
                    .as_mut()
                    .unwrap()
                    .egress
                    .as_mut()
                    .unwrap()
                    .push(parse(json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})));
            },
            "network-policy",
            Status::Fail,
            "NetworkPolicy moltmate-ann/moltmate-isolation",
        ),
        (
            "extra NetworkPolicy",
            |s| {
                s.network_policies.push(parse(json!({
                    "metadata": {"name": "allow-all", "namespace": "moltmate-ann"},
                    "spec": {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]},
                })))
            },
            "network-policy",
            Status::Fail,
            "NetworkPolicy moltmate-ann/allow-all",
        ),
        (
            "quota widened",
            |s| {
                let q = named(&mut s.quotas, "moltmate-ann", "moltmate-quota");
                q.spec
                    .as_mut()
                    .unwrap()
                    .hard
                    .as_mut()
                    .unwrap()
                    .insert("limits.cpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("8".into()));
            },
            "resource-quota",
            Status::Fail,
            "ResourceQuota moltmate-ann/moltmate-quota",
        ),
        (
            "quota scoped",
            |s| {
                let q = named(&mut s.quotas, "moltmate-ann", "moltmate-quota");
                q.spec.as_mut().unwrap().scopes = Some(vec!["BestEffort".into()]);
            },
            "resource-quota",
            Status::Fail,
            "ResourceQuota moltmate-ann/moltmate-quota",
        ),
        (
            "LimitRange deleted",
            |s| s.limit_ranges.retain(|l| l.metadata.namespace.as_deref() != Some("moltmate-bob")),
            "limit-range",
            Status::Fail,
            "LimitRange moltmate-bob/moltmate-limits",
        ),
        (
            "safeBins with a shell",
            |s| {
                s.users[0].spec.exec =
                    Some(crate::crd::ExecSpec { security: None, safe_bins: Some(vec!["cat".into(), "bash".into()]) });
            },
            "safe-bins",
            Status::Fail,
            "MoltmateUser ann",
        ),
        (
            "safeBins with a launcher",
            |s| {
                s.users[0].spec.exec = Some(crate::crd::ExecSpec {
                    security: None,
                    safe_bins: Some(vec!["cat".into(), "setarch".into()]),
                });
            },
            "safe-bins",
            Status::Fail,
            "MoltmateUser ann",
        ),
        (
            "NetworkPolicy of a full user without the NAT64 exception (as built before)",
            |s| {
                add_user(s, user("cat", Profile::Personal));
                let p = named(&mut s.network_policies, "moltmate-cat", "moltmate-isolation");
                let blocks = p
                    .spec
                    .as_mut()
                    .unwrap()
                    .egress
                    .as_mut()
                    .unwrap()
                    .iter_mut()
                    .flat_map(|r| r.to.iter_mut().flatten());
                for block in blocks.filter_map(|peer| peer.ip_block.as_mut()) {
                    block.except.get_or_insert_with(Vec::new).retain(|e| e != "64:ff9b::/96");
                }
            },
            "network-policy",
            Status::Fail,
            "NetworkPolicy moltmate-cat/moltmate-isolation",
        ),
        (
            "a node with a public address that a full user's NetworkPolicy does not except",
            |s| {
                add_user(s, user("cat", Profile::Personal));
                s.nodes.push(
                    serde_json::from_value(json!({
                        "metadata": { "name": "vps-1" },
                        "status": { "addresses": [{ "type": "ExternalIP", "address": "203.0.113.9" }] },
                    }))
                    .unwrap(),
                );
            },
            "network-policy",
            Status::Fail,
            "NetworkPolicy moltmate-cat/moltmate-isolation",
        ),
        (
            "safeBins with sed",
            |s| {
                s.users[0].spec.exec =
                    Some(crate::crd::ExecSpec { security: None, safe_bins: Some(vec!["sed".into()]) });
            },
            "safe-bins",
            Status::Warn,
            "MoltmateUser ann",
        ),
        (
            "exec security full",
            |s| {
                s.users[1].spec.exec =
                    Some(crate::crd::ExecSpec { security: Some(crate::crd::ExecSecurity::Full), safe_bins: None });
            },
            "exec-security",
            Status::Fail,
            "MoltmateUser bob",
        ),
        (
            "namespace not restricted",
            |s| {
                let n = s.namespaces.iter_mut().find(|n| n.metadata.name.as_deref() == Some("moltmate-ann")).unwrap();
                n.metadata.labels.as_mut().unwrap().remove("pod-security.kubernetes.io/enforce");
            },
            "pod-security",
            Status::Fail,
            "Namespace moltmate-ann",
        ),
        (
            "a pod with a token",
            |s| {
                s.pods.push(parse(json!({
            "metadata": {"name": "rogue", "namespace": "moltmate-ann"},
            "spec": {"automountServiceAccountToken": true, "containers": [{"name": "c", "image": "moltmates/sandbox:0.1.0"}]},
        })))
            },
            "agent-pod",
            Status::Fail,
            "Pod moltmate-ann/rogue",
        ),
        (
            "a RoleBinding to cluster-admin made by hand in a sandbox",
            |s| {
                s.role_bindings.push(parse(json!({
            "metadata": {"name": "helpful", "namespace": "moltmate-ann"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "moltmate-ann"}],
        })))
            },
            "rbac-bindings",
            Status::Fail,
            "RoleBinding moltmate-ann/helpful",
        ),
        (
            "a ClusterRoleBinding for a sandbox's ServiceAccount",
            |s| {
                s.cluster_role_bindings.push(parse(json!({
                    "metadata": {"name": "agent-reader"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                    "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": "moltmate-bob"}],
                })))
            },
            "rbac-bindings",
            Status::Fail,
            "ClusterRoleBinding agent-reader",
        ),
        (
            "user not provisioned",
            |s| s.users[1].status.as_mut().unwrap().phase = Some(Phase::Failed),
            "user-provisioned",
            Status::Fail,
            "MoltmateUser bob",
        ),
        (
            "NodePort",
            |s| named(&mut s.services, NS, "moltmate-metrics").spec.as_mut().unwrap().type_ = Some("NodePort".into()),
            "service-exposure",
            Status::Fail,
            "Service moltmate-system/moltmate-metrics",
        ),
        (
            "LoadBalancer in a sandbox",
            |s| {
                named(&mut s.services, "moltmate-bob", "agent").spec.as_mut().unwrap().type_ =
                    Some("LoadBalancer".into())
            },
            "service-exposure",
            Status::Fail,
            "Service moltmate-bob/agent",
        ),
        (
            "Ingress while polling",
            |s| s.ingresses.push(ingress_to("moltmate-metrics", "http")),
            "ingress",
            Status::Fail,
            "Ingress moltmate-system/bot",
        ),
        (
            "webhook Ingress with a token",
            |s| {
                webhook_mode(s, true);
                s.ingresses.push(ingress_to("moltmate-webhook", "webhook"))
            },
            "ingress",
            Status::Pass,
            "Ingress moltmate-system/bot",
        ),
        (
            "webhook Ingress to the broker",
            |s| {
                webhook_mode(s, true);
                s.ingresses.push(ingress_to("moltmate-broker", "broker"))
            },
            "ingress",
            Status::Fail,
            "Ingress moltmate-system/bot",
        ),
        (
            "webhook without a token",
            |s| {
                webhook_mode(s, false);
                s.ingresses.push(ingress_to("moltmate-webhook", "webhook"))
            },
            "ingress",
            Status::Fail,
            "Ingress moltmate-system/bot",
        ),
        (
            "webhook without a token (the gateway itself)",
            |s| webhook_mode(s, false),
            "webhook-secret",
            Status::Fail,
            "Deployment moltmate-system/moltmate-gateway",
        ),
        (
            "gateway NetworkPolicy deleted",
            |s| s.network_policies.retain(|p| p.metadata.name.as_deref() != Some("moltmate-gateway")),
            "broker-access",
            Status::Fail,
            "Deployment moltmate-system/moltmate-gateway",
        ),
        (
            "broker open to every namespace",
            |s| {
                let p = named(&mut s.network_policies, NS, "moltmate-gateway");
                p.spec.as_mut().unwrap().ingress.as_mut().unwrap()[0] =
                    parse(json!({"from": [{"namespaceSelector": {}}], "ports": [{"port": "broker"}]}));
            },
            "broker-access",
            Status::Fail,
            "NetworkPolicy moltmate-system/moltmate-gateway",
        ),
        (
            "literal LLM key",
            |s| set_env(s, "gateway", "MOLTMATE_LLM_API_KEY", "sk-literal"),
            "secret-source",
            Status::Fail,
            "Deployment moltmate-system/moltmate-gateway",
        ),
        (
            "literal look-alike",
            |s| set_env(s, "operator", "OPENAI_API_KEY", "sk-literal"),
            "secret-source",
            Status::Fail,
            "Deployment moltmate-system/moltmate-operator",
        ),
        (
            "bot token from a ConfigMap",
            |s| {
                let args = container(s, "gateway").args.as_mut().unwrap();
                for a in args.iter_mut().filter(|a| a.starts_with("--bot-token-file=")) {
                    *a = "--bot-token-file=/etc/moltmate/profiles/bot-token".into();
                }
            },
            "secret-source",
            Status::Fail,
            "Deployment moltmate-system/moltmate-gateway",
        ),
        (
            "short master key",
            |s| {
                s.secrets[0].lengths.insert("master-key".into(), 5);
            },
            "master-key",
            Status::Fail,
            "Secret moltmate-system/moltmates key master-key",
        ),
        (
            "operator image latest",
            |s| container(s, "operator").image = Some("moltmates/moltmate:latest".into()),
            "image-pinned",
            Status::Fail,
            "Deployment moltmate-system/moltmate-operator container operator",
        ),
        (
            "gateway image untagged",
            |s| container(s, "gateway").image = Some("moltmates/moltmate".into()),
            "image-pinned",
            Status::Fail,
            "Deployment moltmate-system/moltmate-gateway container gateway",
        ),
        (
            "old retained workspace",
            |s| {
                s.pvcs.push(parse::<PersistentVolumeClaim>(json!({
            "metadata": {"name": "workspace", "namespace": "moltmate-gone", "creationTimestamp": "2020-01-01T00:00:00Z",
                         "labels": {"moltmate.io/retained": "true", "moltmate.io/user": "gone"}},
        })))
            },
            "retained-workspace",
            Status::Warn,
            "PersistentVolumeClaim moltmate-gone/workspace",
        ),
    ]
}

#[test]
fn each_weakening_is_reported_on_its_object() {
    for (what, weaken, check, status, object) in weakenings() {
        let mut snap = clean();
        weaken(&mut snap);
        let findings = run(&snap);
        let rows: Vec<&Finding> = findings.iter().filter(|f| f.check == check && f.object == object).collect();
        let Some(hit) = rows.iter().find(|f| f.status == status) else {
            panic!(
                "{what}: no {status:?} {check} row for {object}; got {rows:?} and:\n{}",
                not_passing(&findings).join("\n")
            )
        };
        if status == Status::Pass {
            assert!(rows.iter().all(|f| f.status == Status::Pass), "{what}: {rows:?}");
        } else {
            assert!(hit.fix.as_deref().is_some_and(|f| !f.is_empty()), "{what}: no fix");
        }
    }
}

#[test]
fn modified_guard_rails_say_what_changed() {
    let mut snap = clean();
    let q = named(&mut snap.quotas, "moltmate-ann", "moltmate-quota");
    q.spec.as_mut().unwrap().hard.as_mut().unwrap().remove("services.nodeports");
    let l = named(&mut snap.limit_ranges, "moltmate-bob", "moltmate-limits");
    l.spec.as_mut().unwrap().limits[0]
        .max
        .as_mut()
        .unwrap()
        .insert("cpu".into(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("4".into()));
    let findings = run(&snap);
    let message = |check: &str| {
        findings.iter().find(|f| f.check == check && f.status == Status::Fail).map(|f| f.message.clone()).unwrap()
    };
    assert_eq!(message("resource-quota"), "modified: services.nodeports removed");
    assert_eq!(message("limit-range"), "modified: Container max.cpu is 4 (the operator sets 500m)");
}

#[test]
fn a_personal_user_may_run_anything() {
    let mut snap = clean();
    add_user(&mut snap, user("me", Profile::Personal));
    let findings = run(&snap);
    assert_eq!(not_passing(&findings), Vec::<String>::new());
}

#[test]
fn secret_values_never_reach_a_finding() {
    let mut snap = clean();
    set_env(&mut snap, "gateway", "MOLTMATE_BOT_TOKEN", "123:very-secret-token");
    let findings = run(&snap);
    let text = serde_json::to_string(&findings).unwrap();
    assert!(text.contains("MOLTMATE_BOT_TOKEN") && !text.contains("very-secret-token"), "{text}");
}

#[test]
fn an_idle_user_without_a_pod_passes() {
    let mut snap = clean();
    snap.pods.retain(|p: &Pod| p.metadata.namespace.as_deref() != Some("moltmate-bob"));
    assert_eq!(not_passing(&run(&snap)), Vec::<String>::new());
}
