//! What stays of a deleted user with `deletionPolicy: Retain`: their namespace and workspace
//! claim, without owner references (so garbage collection keeps them) and labelled retained.
//! Applied by the operator's field manager, so a later adoption removes the label again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::namespace::pod_security_labels;
use crate::names;

fn retained_labels(user_name: &str) -> BTreeMap<String, String> {
    let mut labels = names::user_labels(user_name);
    labels.insert(names::LABEL_RETAINED.into(), "true".into());
    labels
}

/// The live namespace as retained. The owner record stays: leaving it out of this apply
/// would remove it.
pub fn namespace(user_name: &str, live: &Namespace) -> Namespace {
    let mut labels = retained_labels(user_name);
    labels.extend(pod_security_labels());
    let owner = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(names::ANNOTATION_OWNER_TELEGRAM_ID))
        .map(|id| (names::ANNOTATION_OWNER_TELEGRAM_ID.to_string(), id.clone()));
    Namespace {
        metadata: ObjectMeta {
            name: live.metadata.name.clone(),
            labels: Some(labels),
            annotations: owner.map(|pair| BTreeMap::from([pair])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The live workspace claim as retained. The spec fields we own are repeated (leaving them
/// out would ask the server to clear them), and so is the reset record, so that a user who
/// adopts the workspace is not reset again.
pub fn workspace(user_name: &str, live: &PersistentVolumeClaim, reset_generation: i64) -> PersistentVolumeClaim {
    let live_spec = live.spec.clone().unwrap_or_default();
    let mut pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(names::WORKSPACE_PVC.into()),
            namespace: live.metadata.namespace.clone(),
            labels: Some(retained_labels(user_name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: live_spec.access_modes,
            storage_class_name: live_spec.storage_class_name,
            resources: live_spec
                .resources
                .map(|r| VolumeResourceRequirements { requests: r.requests, ..Default::default() }),
            ..Default::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    super::stamp_reset_generation(&mut pvc, reset_generation);
    pvc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::tests::{build_for, user};
    use crate::crd::Profile;

    #[test]
    fn a_retained_namespace_keeps_its_guard_labels_and_owner_record_but_no_owner() {
        let built = build_for(&user("alice", Profile::Family));
        let retained = namespace("alice", &built.namespace);
        let labels = retained.metadata.labels.unwrap();
        assert_eq!(labels[names::LABEL_RETAINED], "true");
        for (key, value) in built.namespace.metadata.labels.unwrap() {
            assert_eq!(labels.get(&key), Some(&value), "{key}: the guard labels stay as built");
        }
        assert_eq!(retained.metadata.annotations, built.namespace.metadata.annotations, "the owner record");
        assert!(retained.metadata.owner_references.is_none(), "garbage collection must keep it");
    }

    #[test]
    fn a_retained_workspace_keeps_its_size_class_and_reset_record() {
        let built = build_for(&user("alice", Profile::Family));
        let retained = workspace("alice", &built.workspace, 3);
        let (live, kept) = (built.workspace.spec.unwrap(), retained.spec.unwrap());
        assert_eq!(kept.resources.unwrap().requests, live.resources.unwrap().requests);
        assert_eq!(kept.storage_class_name, live.storage_class_name);
        assert_eq!(kept.access_modes, live.access_modes);
        assert!(retained.metadata.owner_references.is_none());
        assert_eq!(retained.metadata.labels.unwrap()[names::LABEL_RETAINED], "true");
        let annotations = retained.metadata.annotations.unwrap_or_default();
        assert_eq!(annotations.get(names::ANNOTATION_RESET_GENERATION).map(String::as_str), Some("3"));
    }
}
