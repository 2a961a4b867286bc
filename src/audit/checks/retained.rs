//! Workspaces left behind by deleted users (`deletionPolicy: Retain`): a WARN once older than
//! the configured age. Not a FAIL: nothing can reach them (no pod, the namespace stays fenced
//! in), but a person's files and chat history kept with no one to serve is data to decide on.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use crate::audit::finding::{AuditConfig, Finding, object};
use crate::audit::snapshot::Snapshot;
use crate::names;

pub const CHECK: &str = "retained-workspace";

pub fn check(snap: &Snapshot, config: &AuditConfig, out: &mut Vec<Finding>) {
    let mut pvcs: Vec<&PersistentVolumeClaim> = snap
        .pvcs
        .iter()
        .filter(|p| p.labels().get(names::LABEL_RETAINED).map(String::as_str) == Some("true"))
        .collect();
    pvcs.sort_by_key(|p| (p.namespace(), p.name_any()));
    for pvc in pvcs {
        let ns = pvc.namespace().unwrap_or_default();
        let what = object("PersistentVolumeClaim", Some(&ns), &pvc.name_any());
        let user = pvc
            .labels()
            .get(names::LABEL_USER)
            .cloned()
            .unwrap_or_else(|| ns.strip_prefix(names::NAMESPACE_PREFIX).unwrap_or(&ns).to_string());
        if snap.user(&user).is_some() {
            out.push(Finding::pass(
                CHECK,
                what,
                format!("MoltmateUser {user} exists again; the operator adopts the workspace"),
            ));
            continue;
        }
        let Some(since) = retained_since(pvc) else {
            out.push(Finding::warn(
                CHECK,
                what,
                format!("workspace of deleted user {user}; when it was retained is unknown"),
                fix(&ns, &user),
            ));
            continue;
        };
        let age = Duration::from_secs(u64::try_from(config.now.duration_since(since).as_secs()).unwrap_or(0));
        let limit = days(config.retained_max_age);
        let age_text = days(age);
        if age > config.retained_max_age {
            out.push(Finding::warn(
                CHECK,
                what,
                format!("workspace of deleted user {user}, retained for {age_text} (more than {limit}): their files and chat history, kept with no one to serve"),
                fix(&ns, &user),
            ));
        } else {
            out.push(Finding::pass(
                CHECK,
                what,
                format!("workspace of deleted user {user}, retained for {age_text} (limit {limit})"),
            ));
        }
    }
}

fn fix(ns: &str, user: &str) -> String {
    format!(
        "if the data is no longer needed: kubectl delete namespace {ns} (deletes the workspace); to give it back, re-create MoltmateUser {user}"
    )
}

fn days(age: Duration) -> String {
    let days = age.as_secs() / 86_400;
    if days >= 1 {
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    } else {
        humantime::format_duration(Duration::from_secs(age.as_secs())).to_string()
    }
}

/// When the retained label was set: the time of the managed-fields entry that owns it (the
/// operator's apply at deletion), else the claim's creation.
pub fn retained_since(pvc: &PersistentVolumeClaim) -> Option<jiff::Timestamp> {
    let label = format!("f:{}", names::LABEL_RETAINED);
    let owned = pvc.metadata.managed_fields.iter().flatten().filter_map(|entry| {
        let fields = &entry.fields_v1.as_ref()?.0;
        fields.get("f:metadata")?.get("f:labels")?.get(&label)?;
        entry.time.as_ref().map(|t| t.0)
    });
    owned.max().or_else(|| pvc.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pvc(ns: &str, managed: serde_json::Value) -> PersistentVolumeClaim {
        serde_json::from_value(json!({
            "metadata": {
                "name": "workspace", "namespace": ns,
                "labels": {"moltmate.io/retained": "true", "moltmate.io/user": ns.trim_start_matches("moltmate-")},
                "creationTimestamp": "2024-01-01T00:00:00Z",
                "managedFields": managed,
            }
        }))
        .unwrap()
    }

    fn run(pvcs: Vec<PersistentVolumeClaim>, now: &str) -> Vec<Finding> {
        let snap = Snapshot { pvcs, ..Snapshot::default() };
        let mut config = AuditConfig::new("moltmate-system");
        config.now = now.parse().unwrap();
        let mut out = Vec::new();
        check(&snap, &config, &mut out);
        out
    }

    #[test]
    fn dated_by_the_label_not_the_claim() {
        let managed = json!([
            {"manager": "kubectl", "operation": "Update", "time": "2024-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}},
            {"manager": "moltmate-operator", "operation": "Apply", "time": "2024-03-01T00:00:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:moltmate.io/retained": {}}}}},
        ]);
        let p = pvc("moltmate-gone", managed);
        assert_eq!(retained_since(&p), Some("2024-03-01T00:00:00Z".parse().unwrap()));
        let fresh = run(vec![p.clone()], "2024-03-20T00:00:00Z");
        assert_eq!(fresh[0].status, crate::audit::finding::Status::Pass, "{fresh:?}");
        assert!(fresh[0].message.contains("19 days"), "{}", fresh[0].message);
        let old = run(vec![p], "2024-04-15T00:00:00Z");
        assert_eq!(old[0].status, crate::audit::finding::Status::Warn);
        assert_eq!(old[0].object, "PersistentVolumeClaim moltmate-gone/workspace");
    }

    #[test]
    fn without_managed_fields_the_creation_counts() {
        let out = run(vec![pvc("moltmate-gone", json!(null))], "2024-12-01T00:00:00Z");
        assert_eq!(out[0].status, crate::audit::finding::Status::Warn);
    }
}
