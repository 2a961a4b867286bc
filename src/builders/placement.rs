//! Where and how the kubelet runs agent pods, as the administrator sets it for the whole
//! installation (`--agent-pod`): scheduling (nodeSelector, tolerations, affinity, priority),
//! a runtime class (gVisor, Kata) and the Secrets that pull a private sandbox image.
//!
//! Pull Secrets live in the gateway namespace; each user namespace gets a copy, since a pod
//! can only name Secrets of its own namespace. Agents cannot read them: their ServiceAccount
//! has no token and no rights.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, LocalObjectReference, PodSpec, Secret, Toleration};
use serde::Deserialize;

use super::Ctx;
use crate::names;

/// The `--agent-pod` settings. Every field is optional; unknown ones are refused so that a
/// misspelt setting is an error at start, not a silently unscheduled or unconfined pod.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentPodSettings {
    /// Secrets of the gateway namespace (type kubernetes.io/dockerconfigjson) to pull with.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    pub runtime_class_name: Option<String>,
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default)]
    pub tolerations: Vec<Toleration>,
    pub affinity: Option<Affinity>,
    pub priority_class_name: Option<String>,
}

impl AgentPodSettings {
    /// From the flag's JSON (or YAML); names our own objects would collide with are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let settings: Self = serde_saphyr::from_str(text).map_err(|e| format!("--agent-pod: {e}"))?;
        for name in &settings.image_pull_secrets {
            if name.is_empty() || names::USER_NAMESPACE_OBJECTS.contains(&name.as_str()) {
                return Err(format!(
                    "--agent-pod: imagePullSecrets names {name:?}, which a user namespace already uses; rename the Secret"
                ));
            }
        }
        Ok(settings)
    }

    /// Apply the settings to an agent pod's spec.
    pub(super) fn apply(&self, spec: &mut PodSpec) {
        let references: Vec<_> =
            self.image_pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() }).collect();
        spec.image_pull_secrets = (!references.is_empty()).then_some(references);
        spec.runtime_class_name = self.runtime_class_name.clone();
        spec.node_selector = (!self.node_selector.is_empty()).then(|| self.node_selector.clone());
        spec.tolerations = (!self.tolerations.is_empty()).then(|| self.tolerations.clone());
        spec.affinity = self.affinity.clone();
        spec.priority_class_name = self.priority_class_name.clone();
    }
}

/// The user namespace's copy of a pull Secret from the gateway namespace: same name, type and
/// data, owned by the user like the rest of the namespace.
pub(super) fn pull_secret_copy(ctx: &Ctx, source: &Secret) -> Secret {
    Secret {
        metadata: ctx.meta(source.metadata.name.as_deref().unwrap_or_default()),
        type_: source.type_.clone(),
        data: source.data.clone(),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_the_charts_json_and_refuse_typos_and_our_names() {
        let settings = AgentPodSettings::parse(
            r#"{"imagePullSecrets":["regcred"],"runtimeClassName":"gvisor","nodeSelector":{"kubernetes.io/arch":"arm64"},
                "tolerations":[{"key":"dedicated","operator":"Equal","value":"agents","effect":"NoSchedule"}],
                "priorityClassName":"low"}"#,
        )
        .unwrap();
        assert_eq!(settings.image_pull_secrets, ["regcred"]);
        assert_eq!(settings.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(settings.tolerations[0].key.as_deref(), Some("dedicated"));
        assert_eq!(AgentPodSettings::parse("{}").unwrap(), AgentPodSettings::default());

        let typo = AgentPodSettings::parse(r#"{"runtimeClass":"gvisor"}"#).unwrap_err();
        assert!(typo.contains("runtimeClass"), "{typo}");
        let ours = AgentPodSettings::parse(r#"{"imagePullSecrets":["agent-token"]}"#).unwrap_err();
        assert!(ours.contains("agent-token"), "{ours}");
    }

    #[test]
    fn empty_settings_leave_the_pod_as_built() {
        let mut spec = PodSpec::default();
        AgentPodSettings::default().apply(&mut spec);
        assert_eq!(spec, PodSpec::default());
    }
}
