//! Resetting a user: a `spec.resetGeneration` newer than the workspace volume's replaces the
//! volume with an empty one (files, memory, conversation history, persona all go with it).
//!
//! The generation a volume was made for is an annotation on its claim, which only the
//! operator writes: nothing inside the sandbox can make a reset look done, and nothing there
//! can keep a file from going, whatever its mode or links. Claims made before the annotation
//! existed count as the generation the status last recorded.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;

use crate::names;

/// What to do with the workspace volume before the agent may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceStep {
    /// Keep (or create) the volume; it holds what was written since reset `generation`.
    Keep { generation: i64 },
    /// Delete the agent pod and the claim: the volume predates reset `to`.
    Replace { from: i64, to: i64 },
    /// The old claim is being deleted; its empty successor is made once it is gone.
    AwaitRelease { to: i64 },
}

/// The step for `wanted` (`spec.resetGeneration`), given the live claim and the generation the
/// status records as applied.
pub fn workspace_step(live: Option<&PersistentVolumeClaim>, wanted: i64, status_applied: i64) -> WorkspaceStep {
    let Some(live) = live else { return WorkspaceStep::Keep { generation: wanted } };
    let generation = volume_generation(live, status_applied);
    match (generation < wanted, live.metadata.deletion_timestamp.is_some()) {
        (false, _) => WorkspaceStep::Keep { generation },
        (true, false) => WorkspaceStep::Replace { from: generation, to: wanted },
        (true, true) => WorkspaceStep::AwaitRelease { to: wanted },
    }
}

/// The reset generation a claim's volume was made for.
pub fn volume_generation(claim: &PersistentVolumeClaim, status_applied: i64) -> i64 {
    // An unreadable value (edited by hand) never wipes: it counts as the recorded generation.
    claim.annotations().get(names::ANNOTATION_RESET_GENERATION).and_then(|g| g.parse().ok()).unwrap_or(status_applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use std::collections::BTreeMap;

    fn claim(generation: Option<&str>, deleting: bool) -> PersistentVolumeClaim {
        let mut c = PersistentVolumeClaim::default();
        c.metadata.annotations =
            generation.map(|g| BTreeMap::from([(names::ANNOTATION_RESET_GENERATION.to_string(), g.to_string())]));
        c.metadata.deletion_timestamp = deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH));
        c
    }

    #[test]
    fn a_new_volume_is_made_for_the_wanted_generation() {
        assert_eq!(workspace_step(None, 0, 0), WorkspaceStep::Keep { generation: 0 });
        assert_eq!(workspace_step(None, 3, 1), WorkspaceStep::Keep { generation: 3 });
    }

    #[test]
    fn a_volume_older_than_the_wanted_generation_is_replaced() {
        assert_eq!(workspace_step(Some(&claim(Some("1"), false)), 2, 1), WorkspaceStep::Replace { from: 1, to: 2 });
        assert_eq!(workspace_step(Some(&claim(None, false)), 1, 0), WorkspaceStep::Replace { from: 0, to: 1 });
        assert_eq!(workspace_step(Some(&claim(Some("1"), true)), 2, 1), WorkspaceStep::AwaitRelease { to: 2 });
    }

    #[test]
    fn a_volume_as_new_as_the_wanted_generation_stays() {
        assert_eq!(workspace_step(Some(&claim(Some("2"), false)), 2, 0), WorkspaceStep::Keep { generation: 2 });
        // A lowered spec (refused by the CRD today, possible on older objects) wipes nothing.
        assert_eq!(workspace_step(Some(&claim(Some("3"), false)), 2, 3), WorkspaceStep::Keep { generation: 3 });
        // Deleted by someone else: not ours to wait for.
        assert_eq!(workspace_step(Some(&claim(Some("2"), true)), 2, 2), WorkspaceStep::Keep { generation: 2 });
    }

    #[test]
    fn a_claim_without_a_readable_record_counts_as_what_the_status_recorded() {
        // Made before the annotation existed, after its agent had wiped it for generation 2.
        assert_eq!(workspace_step(Some(&claim(None, false)), 2, 2), WorkspaceStep::Keep { generation: 2 });
        assert_eq!(workspace_step(Some(&claim(Some("garbage"), false)), 2, 2), WorkspaceStep::Keep { generation: 2 });
        assert_eq!(workspace_step(Some(&claim(Some("-"), false)), 3, 2), WorkspaceStep::Replace { from: 2, to: 3 });
    }
}
