//! The namespace and its guard rails: ServiceAccount, ResourceQuota, LimitRange.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Ctx;
use crate::names;

/// Pod Security admission holds every pod of a user namespace to `restricted`.
pub(super) fn pod_security_labels() -> [(String, String); 2] {
    [
        (names::LABEL_POD_SECURITY_ENFORCE.into(), "restricted".into()),
        (names::LABEL_POD_SECURITY_ENFORCE_VERSION.into(), "latest".into()),
    ]
}

pub(super) fn namespace(ctx: &Ctx) -> Namespace {
    let mut labels = names::user_labels(ctx.user_name);
    labels.extend(pod_security_labels());
    Namespace {
        metadata: ObjectMeta {
            name: Some(ctx.namespace.to_string()),
            labels: Some(labels),
            // Whose workspace this is, so that a later MoltmateUser of the same name (another
            // person) is not handed a retained one.
            annotations: Some(BTreeMap::from([(
                names::ANNOTATION_OWNER_TELEGRAM_ID.into(),
                ctx.telegram_id.to_string(),
            )])),
            owner_references: Some(vec![ctx.owner.clone()]),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

pub(super) fn service_account(ctx: &Ctx) -> ServiceAccount {
    ServiceAccount {
        metadata: ctx.meta(names::SERVICE_ACCOUNT),
        // The agent never talks to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    pairs.iter().map(|(k, v)| (k.to_string(), Quantity(v.to_string()))).collect()
}

/// Caps the whole namespace, so nothing the agent (or anyone) creates there can exceed the
/// profile: one agent pod (two while it is being replaced), one workspace volume.
pub(super) fn quota(ctx: &Ctx) -> ResourceQuota {
    let p = ctx.input.profile;
    ResourceQuota {
        metadata: ctx.meta(names::RESOURCE_QUOTA),
        spec: Some(ResourceQuotaSpec {
            hard: Some(quantities(&[
                ("pods", "2"),
                ("requests.cpu", &p.cpu),
                ("limits.cpu", &p.cpu),
                ("requests.memory", &p.memory),
                ("limits.memory", &p.memory),
                ("requests.storage", &p.storage),
                ("persistentvolumeclaims", "1"),
                ("services", "1"),
                ("services.nodeports", "0"),
                ("services.loadbalancers", "0"),
                // Ours, plus token Secrets older clusters make for each ServiceAccount.
                ("secrets", "4"),
            ])),
            ..ResourceQuotaSpec::default()
        }),
        ..ResourceQuota::default()
    }
}

/// Defaults and ceilings per container and per volume claim.
pub(super) fn limit_range(ctx: &Ctx) -> LimitRange {
    let p = ctx.input.profile;
    let (cpu_request, memory_request) = super::workload::requests(p);
    LimitRange {
        metadata: ctx.meta(names::LIMIT_RANGE),
        spec: Some(LimitRangeSpec {
            limits: vec![
                LimitRangeItem {
                    type_: "Container".into(),
                    default: Some(quantities(&[("cpu", &p.cpu), ("memory", &p.memory)])),
                    default_request: Some(quantities(&[("cpu", cpu_request), ("memory", memory_request)])),
                    max: Some(quantities(&[("cpu", &p.cpu), ("memory", &p.memory)])),
                    ..LimitRangeItem::default()
                },
                LimitRangeItem {
                    type_: "PersistentVolumeClaim".into(),
                    max: Some(quantities(&[("storage", &p.storage)])),
                    ..LimitRangeItem::default()
                },
            ],
        }),
    }
}

#[cfg(test)]
mod tests {
    use crate::builders::tests::{build_for, user};
    use crate::crd::Profile;

    #[test]
    fn namespace_enforces_restricted_pod_security() {
        let d = build_for(&user("alice", Profile::Personal));
        let labels = d.namespace.metadata.labels.unwrap();
        assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "moltmate-operator");
        assert_eq!(labels["moltmate.io/user"], "alice");
    }

    #[test]
    fn quota_follows_the_profile() {
        let d = build_for(&user("alice", Profile::HighSecurity));
        let hard = d.quota.spec.unwrap().hard.unwrap();
        let get = |k: &str| hard[k].0.clone();
        assert_eq!(get("limits.cpu"), "250m");
        assert_eq!(get("limits.memory"), "256Mi");
        assert_eq!(get("requests.storage"), "512Mi");
        assert_eq!(get("persistentvolumeclaims"), "1");
        assert_eq!(get("services.nodeports"), "0");
        assert!(hard.contains_key("pods") && hard.contains_key("secrets") && hard.contains_key("services"));
    }

    #[test]
    fn service_account_mounts_no_token() {
        let d = build_for(&user("alice", Profile::Public));
        assert_eq!(d.service_account.automount_service_account_token, Some(false));
    }
}
