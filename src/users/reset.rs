//! `moltmate users reset NAME` (pure part): the next `spec.resetGeneration`, the patch that
//! sets it, and what the administrator is told happens next.

use kube::ResourceExt;
use serde_json::{Value, json};

use crate::crd::{MoltmateUser, Phase};

/// The field manager of the CLI's patch, as it shows in `managedFields`.
pub const FIELD_MANAGER: &str = "moltmate-users";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("MoltmateUser {0} is being deleted; there is nothing left to reset")]
    Deleting(String),
    #[error("MoltmateUser {0} has no resourceVersion (it was not read from the API server)")]
    Unread(String),
}

/// One reset to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub user: String,
    pub from: i64,
    pub to: i64,
    /// A merge patch of the one field, valid only against the version read (so two resets at
    /// once are two bumps, never one: the second gets a conflict and reads again).
    pub patch: Value,
}

pub fn plan(user: &MoltmateUser) -> Result<Plan, PlanError> {
    let name = user.name_any();
    if user.metadata.deletion_timestamp.is_some() {
        return Err(PlanError::Deleting(name));
    }
    let version = user.resource_version().ok_or_else(|| PlanError::Unread(name.clone()))?;
    let from = user.spec.reset_generation;
    let to = from.saturating_add(1);
    let patch = json!({ "metadata": { "resourceVersion": version }, "spec": { "resetGeneration": to } });
    Ok(Plan { user: name, from, to, patch })
}

/// What happens next, for the administrator; `user` as it was read before the patch.
pub fn next_steps(plan: &Plan, user: &MoltmateUser) -> String {
    let Plan { user: name, from, to, .. } = plan;
    let mut text = format!(
        "{name}: spec.resetGeneration {from} -> {to}.\n\
         The operator deletes the agent pod and the workspace volume (files, memory, conversation\n\
         history) and makes a new, empty volume; the person is told their assistant was reset.\n\
         The MoltmateUser and its settings stay.\n"
    );
    if user.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed) {
        text += "Note: the user is Failed (see `kubectl describe mmu`); the reset happens once that is fixed.\n";
    }
    let others = other_managers(user);
    if !others.is_empty() {
        text += &format!(
            "Warning: spec.resetGeneration is also set by {}; if that is a GitOps sync, bump the value in git\n\
             instead, or the next sync puts it back.\n",
            others.join(", ")
        );
    }
    text += &format!(
        "Done when `moltmate users` shows RESET {to}/{to} (kubectl get mmu {name} -o jsonpath='{{.status.resetGeneration}}').\n"
    );
    text
}

/// Field managers other than this CLI that own `spec.resetGeneration` (Argo CD or Flux
/// applying with server-side apply, or `kubectl apply` by its last-applied annotation).
pub fn other_managers(user: &MoltmateUser) -> Vec<String> {
    let mut managers: Vec<String> = user
        .managed_fields()
        .iter()
        .filter(|m| m.manager.as_deref() != Some(FIELD_MANAGER))
        .filter(|m| {
            m.fields_v1.as_ref().is_some_and(|f| f.0.get("f:spec").and_then(|s| s.get("f:resetGeneration")).is_some())
        })
        .filter_map(|m| m.manager.clone())
        .collect();
    let last_applied = user.annotations().get("kubectl.kubernetes.io/last-applied-configuration");
    let applied: Option<Value> = last_applied.and_then(|text| serde_json::from_str(text).ok());
    if applied.is_some_and(|a| a["spec"].get("resetGeneration").is_some()) {
        managers.push("kubectl apply".into());
    }
    managers.sort();
    managers.dedup();
    managers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, MoltmateUserStatus, Profile};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

    fn read(name: &str, profile: Profile) -> MoltmateUser {
        let mut u = MoltmateUser::new(name, MoltmateUserSpec::new(5, profile));
        u.metadata.resource_version = Some("42".into());
        u
    }

    #[test]
    fn a_reset_is_one_more_against_the_version_read() {
        let mut u = read("alice", Profile::Family);
        u.spec.reset_generation = 2;
        let p = plan(&u).unwrap();
        assert_eq!((p.from, p.to), (2, 3));
        assert_eq!(p.patch, json!({ "metadata": { "resourceVersion": "42" }, "spec": { "resetGeneration": 3 } }));
        let text = next_steps(&p, &u);
        assert!(text.starts_with("alice: spec.resetGeneration 2 -> 3."), "{text}");
        assert!(text.contains("RESET 3/3") && !text.contains("Warning") && !text.contains("Note"), "{text}");

        u.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::now()));
        assert_eq!(plan(&u), Err(PlanError::Deleting("alice".into())));
        assert!(matches!(
            plan(&MoltmateUser::new("x", MoltmateUserSpec::new(5, Profile::Public))),
            Err(PlanError::Unread(_))
        ));
    }

    #[test]
    fn the_administrator_is_told_what_stands_in_the_way() {
        let mut failed = read("fay", Profile::Public);
        failed.status = Some(MoltmateUserStatus { phase: Some(Phase::Failed), ..Default::default() });
        assert!(next_steps(&plan(&failed).unwrap(), &failed).contains("Failed"));
        // Nothing needs an agent running: idle, suspended and read-only users are reset at once.
        let mut idle = read("ida", Profile::HighSecurity);
        idle.spec.suspend = true;
        idle.status = Some(MoltmateUserStatus { phase: Some(Phase::Idle), ..Default::default() });
        assert!(!next_steps(&plan(&idle).unwrap(), &idle).contains("Note"));

        let mut synced = read("gita", Profile::Public);
        let owns = |manager: &str, fields: Value| ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..Default::default()
        };
        synced.metadata.managed_fields = Some(vec![
            owns("argocd-controller", json!({ "f:spec": { "f:resetGeneration": {}, "f:profile": {} } })),
            owns(FIELD_MANAGER, json!({ "f:spec": { "f:resetGeneration": {} } })),
            owns("kubectl", json!({ "f:spec": { "f:profile": {} } })),
        ]);
        assert_eq!(other_managers(&synced), ["argocd-controller"]);
        assert!(next_steps(&plan(&synced).unwrap(), &synced).contains("bump the value in git"));
        synced.metadata.managed_fields = None;
        synced.metadata.annotations = Some(std::collections::BTreeMap::from([(
            "kubectl.kubernetes.io/last-applied-configuration".to_string(),
            r#"{"spec":{"resetGeneration":1,"telegram":{"userId":5}}}"#.to_string(),
        )]));
        assert_eq!(other_managers(&synced), ["kubectl apply"]);
    }
}
