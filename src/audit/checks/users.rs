//! Each user's sandbox: provisioned, and its guard rails (NetworkPolicy, ResourceQuota,
//! LimitRange) exactly what the operator's builders produce; every sandbox namespace
//! enforcing Pod Security `restricted`.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::LimitRangeSpec;
use serde::Serialize;
use serde_json::Value;

use super::install::Install;
use crate::MoltmateUser;
use crate::audit::finding::{Finding, object};
use crate::audit::snapshot::{Snapshot, find, in_namespace};
use crate::builders::{self, BuildInput, DesiredState};
use crate::crd::Phase;
use crate::names;
use crate::operator::is_subset;
use crate::profile;
use kube::ResourceExt;

pub const PROVISIONED: &str = "user-provisioned";
pub const NETWORK_POLICY: &str = "network-policy";
pub const QUOTA: &str = "resource-quota";
pub const LIMITS: &str = "limit-range";
pub const POD_SECURITY: &str = "pod-security";

pub fn check(snap: &Snapshot, install: &Install, out: &mut Vec<Finding>) {
    let mut guard_rails = Vec::new();
    for user in &snap.users {
        out.push(provisioned(snap, user));
        if let Some(desired) = desired(snap, install, user) {
            guard_rails.extend(compare(snap, &desired));
        }
    }
    // Grouped by check, so each check's rows stay together.
    for check in [NETWORK_POLICY, QUOTA, LIMITS] {
        out.extend(guard_rails.iter().filter(|f| f.check == check).cloned());
    }
    out.extend(extra_network_policies(snap));
}

fn provisioned(snap: &Snapshot, user: &MoltmateUser) -> Finding {
    let name = user.name_any();
    let what = object("MoltmateUser", None, &name);
    let describe = format!("see `kubectl describe mmu {name}` and the operator's logs");
    let ns = match names::user_namespace(&name) {
        Ok(ns) => ns,
        Err(e) => return Finding::fail(PROVISIONED, what, e.to_string(), "re-create the user under a shorter name"),
    };
    let status = user.status.clone().unwrap_or_default();
    let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
    let why = ready.map(|c| format!("{}: {}", c.reason, c.message)).unwrap_or_else(|| "no Ready condition yet".into());
    let phase = status.phase;
    if phase == Some(Phase::Failed) {
        return Finding::fail(PROVISIONED, what, format!("phase Failed ({why})"), describe);
    }
    match snap.namespace(&ns) {
        None => {
            return Finding::fail(
                PROVISIONED,
                what,
                format!("namespace {ns} does not exist: the user has no sandbox"),
                describe,
            );
        }
        Some(n) if n.labels().get(names::LABEL_USER) != Some(&name) => {
            return Finding::fail(
                PROVISIONED,
                what,
                format!(
                    "namespace {ns} is not the operator's (no label {}={name}): the user has no sandbox of its own",
                    names::LABEL_USER
                ),
                "rename the namespace's owner or the user; the operator never takes over a foreign namespace",
            );
        }
        Some(_) => {}
    }
    let seen = status.observed_generation;
    if seen.is_none() || seen < user.metadata.generation {
        return Finding::warn(
            PROVISIONED,
            what,
            format!(
                "the operator has not processed the current spec (generation {}, observed {})",
                user.metadata.generation.unwrap_or(0),
                seen.unwrap_or(0)
            ),
            "check that the operator is running (kubectl get pods -n <release namespace>)",
        );
    }
    match phase {
        Some(p @ (Phase::Ready | Phase::Idle | Phase::Suspended)) => {
            Finding::pass(PROVISIONED, what, format!("{} in {ns}", p.as_str()))
        }
        other => Finding::warn(
            PROVISIONED,
            what,
            format!("not provisioned yet: phase {} ({why})", other.map_or("unset", |p| p.as_str())),
            describe,
        ),
    }
}

/// What the operator would build for this user now, if the user can have a sandbox.
fn desired(snap: &Snapshot, install: &Install, user: &MoltmateUser) -> Option<DesiredState> {
    let ns = names::user_namespace(&user.name_any()).ok()?;
    snap.namespace(&ns)?;
    let resolved = profile::resolve_with(&user.spec, &install.cluster.profiles).ok()?;
    // Token and broker address only shape the Secret and the pod, which are not compared here.
    let nodes: Vec<_> = snap.nodes.iter().flat_map(builders::node_addresses).collect();
    let input = BuildInput {
        profile: &resolved,
        config: &install.cluster,
        agent_token: "",
        broker_ip: None,
        node_addresses: &nodes,
        pull_secrets: &[],
    };
    builders::build(user, &input).ok()
}

fn compare(snap: &Snapshot, d: &DesiredState) -> Vec<Finding> {
    let ns = d.namespace.metadata.name.as_deref().unwrap_or_default();
    let mut out = Vec::new();

    let what = object("NetworkPolicy", Some(ns), names::NETWORK_POLICY);
    out.push(match find(&snap.network_policies, ns, names::NETWORK_POLICY) {
        None => Finding::fail(
            NETWORK_POLICY,
            what,
            "missing: nothing fences the sandbox in; its pods can reach and be reached by anything",
            restore_fix("networkpolicy"),
        ),
        Some(live) => {
            match differences(&d.network_policy.spec, &live.spec, &["podSelector", "policyTypes", "ingress", "egress"])
            {
                diffs if diffs.is_empty() => Finding::pass(
                    NETWORK_POLICY,
                    what,
                    "as the operator builds it (default deny; only the gateway in, only the broker out)",
                ),
                diffs => Finding::fail(
                    NETWORK_POLICY,
                    what,
                    format!("modified: {} differ from what the operator builds", diffs.join(", ")),
                    restore_fix("networkpolicy"),
                ),
            }
        }
    });

    let what = object("ResourceQuota", Some(ns), names::RESOURCE_QUOTA);
    out.push(match find(&snap.quotas, ns, names::RESOURCE_QUOTA) {
        None => {
            Finding::fail(QUOTA, what, "missing: nothing caps what the sandbox may use", restore_fix("resourcequota"))
        }
        Some(live) => {
            let want = d.quota.spec.as_ref().and_then(|s| s.hard.clone()).unwrap_or_default();
            let spec = live.spec.clone().unwrap_or_default();
            let have = spec.hard.clone().unwrap_or_default();
            let mut diffs = Vec::new();
            for (key, value) in &want {
                match have.get(key) {
                    None => diffs.push(format!("{key} removed")),
                    Some(h) if !same(&json(value), &json(h)) => {
                        diffs.push(format!("{key} is {} (the operator sets {})", h.0, value.0))
                    }
                    Some(_) => {}
                }
            }
            diffs.extend(have.keys().filter(|k| !want.contains_key(*k)).map(|k| format!("{k} added")));
            if spec.scopes.is_some_and(|s| !s.is_empty()) || spec.scope_selector.is_some() {
                diffs.push("scopes added (the quota no longer counts every pod)".into());
            }
            if diffs.is_empty() {
                Finding::pass(QUOTA, what, "as the operator builds it")
            } else {
                Finding::fail(QUOTA, what, format!("modified: {}", diffs.join(", ")), restore_fix("resourcequota"))
            }
        }
    });

    let what = object("LimitRange", Some(ns), names::LIMIT_RANGE);
    out.push(match find(&snap.limit_ranges, ns, names::LIMIT_RANGE) {
        None => Finding::fail(
            LIMITS,
            what,
            "missing: containers get no default or maximum limits",
            restore_fix("limitrange"),
        ),
        Some(live) => match limit_differences(&d.limit_range.spec, &live.spec) {
            diffs if diffs.is_empty() => Finding::pass(LIMITS, what, "as the operator builds it"),
            diffs => Finding::fail(LIMITS, what, format!("modified: {}", diffs.join(", ")), restore_fix("limitrange")),
        },
    });
    out
}

/// NetworkPolicies add up: another policy in a sandbox namespace can allow what
/// `moltmate-isolation` denies. One without rules only denies more, which is harmless.
fn extra_network_policies(snap: &Snapshot) -> Vec<Finding> {
    let mut out = Vec::new();
    for ns in snap.sandbox_namespaces() {
        for np in in_namespace(&snap.network_policies, &ns).filter(|p| p.name_any() != names::NETWORK_POLICY) {
            let spec = np.spec.clone().unwrap_or_default();
            let allows = spec.ingress.is_some_and(|r| !r.is_empty()) || spec.egress.is_some_and(|r| !r.is_empty());
            if allows {
                out.push(Finding::fail(
                    NETWORK_POLICY,
                    object("NetworkPolicy", Some(&ns), &np.name_any()),
                    format!(
                        "an extra policy in a sandbox namespace: policies add up, so its rules open what {} closes",
                        names::NETWORK_POLICY
                    ),
                    format!("kubectl delete networkpolicy -n {ns} {}", np.name_any()),
                ));
            }
        }
    }
    out
}

pub fn pod_security(snap: &Snapshot, out: &mut Vec<Finding>) {
    for ns in snap.sandbox_namespaces() {
        let Some(namespace) = snap.namespace(&ns) else { continue };
        let what = object("Namespace", None, &ns);
        match namespace.labels().get(names::LABEL_POD_SECURITY_ENFORCE).map(String::as_str) {
            Some("restricted") => out.push(Finding::pass(POD_SECURITY, what, "Pod Security `restricted` enforced")),
            other => out.push(Finding::fail(
                POD_SECURITY,
                what,
                format!(
                    "Pod Security `restricted` is not enforced ({}={})",
                    names::LABEL_POD_SECURITY_ENFORCE,
                    other.unwrap_or("unset")
                ),
                format!(
                    "kubectl label namespace {ns} {}=restricted --overwrite (a running operator restores it)",
                    names::LABEL_POD_SECURITY_ENFORCE
                ),
            )),
        }
    }
}

fn restore_fix(kind: &str) -> String {
    format!(
        "start the operator (it restores the object within seconds), or delete the {kind} so that it is re-created; \
         to change a user's limits, edit the MoltmateUser (spec.resources) or the profile defaults, never the object"
    )
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Equal up to what the API server adds or rewrites: each a subset of the other.
fn same(a: &Value, b: &Value) -> bool {
    is_subset(a, b) && is_subset(b, a)
}

/// The top-level fields among `fields` in which two specs differ.
fn differences<T: Serialize>(desired: &Option<T>, live: &Option<T>, fields: &[&str]) -> Vec<String> {
    let (d, l) = (json(desired), json(live));
    fields.iter().filter(|f| !same(&d[**f], &l[**f])).map(|f| f.to_string()).collect()
}

/// What differs between two LimitRange specs, value by value: `Container max.cpu is 4 (the
/// operator sets 500m)`.
fn limit_differences(desired: &Option<LimitRangeSpec>, live: &Option<LimitRangeSpec>) -> Vec<String> {
    let items = |spec: &Option<LimitRangeSpec>| spec.as_ref().map(|s| s.limits.clone()).unwrap_or_default();
    let (want, have) = (items(desired), items(live));
    if want.len() != have.len() {
        return vec![format!("{} limit items (the operator sets {})", have.len(), want.len())];
    }
    let mut out = Vec::new();
    for (w, h) in want.iter().zip(&have) {
        if w.type_ != h.type_ {
            out.push(format!("an item of type {} (the operator sets {})", h.type_, w.type_));
            continue;
        }
        let (wj, hj) = (json(w), json(h));
        let fields: BTreeSet<&String> =
            wj.as_object().into_iter().chain(hj.as_object()).flat_map(|o| o.keys()).filter(|k| *k != "type").collect();
        for field in fields {
            let resources: BTreeSet<&String> = [&wj[field.as_str()], &hj[field.as_str()]]
                .into_iter()
                .filter_map(Value::as_object)
                .flat_map(|o| o.keys())
                .collect();
            for r in resources {
                let (wv, hv) = (&wj[field.as_str()][r.as_str()], &hj[field.as_str()][r.as_str()]);
                if !same(wv, hv) {
                    let show = |v: &Value| v.as_str().map(String::from).unwrap_or_else(|| "unset".into());
                    out.push(format!("{} {field}.{r} is {} (the operator sets {})", w.type_, show(hv), show(wv)));
                }
            }
        }
    }
    out
}
