//! Pure builders: (MoltmateUser, resolved profile, cluster config) -> the objects of one
//! user's sandbox. No I/O here; the reconciler diffs and applies what these return.

mod namespace;
mod network;
mod placement;
pub mod retained;
mod workload;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::MoltmateUser;
use crate::names;
use crate::profile::{ProfileDefaults, ResolvedProfile};

pub use network::node_addresses;
pub use network::{BLOCKED_EGRESS_V4, BLOCKED_EGRESS_V6};
pub use placement::AgentPodSettings;
pub use workload::stamp_reset_generation;

/// Cluster-wide settings the operator is started with.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Agent image for users whose spec names none.
    pub default_image: String,
    /// StorageClass of workspace volumes; `None` uses the cluster default.
    pub storage_class: Option<String>,
    /// Namespace the gateway (and its broker) runs in.
    pub gateway_namespace: String,
    /// Labels of the gateway pods: the only ingress source and egress target of agents.
    pub gateway_pod_labels: BTreeMap<String, String>,
    /// Port the agent serves on.
    pub agent_port: u16,
    /// Port of the gateway's egress broker.
    pub broker_port: u16,
    /// Service (in the gateway namespace) whose ClusterIP the agents reach the broker at.
    pub broker_service: String,
    /// The installation's per-profile defaults (`--profiles-file`).
    pub profiles: ProfileDefaults,
    /// How agents log: as the operator does, so one pipeline reads every component's lines.
    pub log_format: crate::telemetry::LogFormat,
    /// Scheduling, runtime class and pull Secrets of every agent pod (`--agent-pod`).
    pub agent_pod: AgentPodSettings,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            default_image: concat!("localhost/moltmates/sandbox:", env!("CARGO_PKG_VERSION")).into(),
            storage_class: None,
            gateway_namespace: "moltmate-system".into(),
            gateway_pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "moltmate-gateway".into())]),
            agent_port: 8080,
            broker_port: 8081,
            broker_service: "moltmate-broker".into(),
            profiles: ProfileDefaults::default(),
            log_format: crate::telemetry::LogFormat::Text,
            agent_pod: AgentPodSettings::default(),
        }
    }
}

/// Everything the build needs besides the user itself.
#[derive(Debug, Clone)]
pub struct BuildInput<'a> {
    pub profile: &'a ResolvedProfile,
    pub config: &'a ClusterConfig,
    /// The agent's bearer token (see `token::MasterKey::agent_token`).
    pub agent_token: &'a str,
    /// ClusterIP of the broker Service, pinned in the pod by hostAliases; `None` if unknown.
    pub broker_ip: Option<&'a str>,
    /// The nodes' own addresses (InternalIP, ExternalIP), which `network: full` never reaches.
    pub node_addresses: &'a [IpAddr],
    /// The pull Secrets `config.agent_pod` names, as read from the gateway namespace.
    pub pull_secrets: &'a [Secret],
}

/// The sandbox of one user, as it should be.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredState {
    pub namespace: Namespace,
    pub service_account: ServiceAccount,
    pub workspace: PersistentVolumeClaim,
    pub quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policy: NetworkPolicy,
    pub token_secret: Secret,
    pub service: Service,
    /// Copies of the installation's pull Secrets, which the pod names.
    pub pull_secrets: Vec<Secret>,
    pub pod: Pod,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Name(#[from] names::NameError),
    #[error("the MoltmateUser has no uid yet (it was not read from the API server)")]
    NoUid,
}

/// Build every object of a user's sandbox.
pub fn build(user: &MoltmateUser, input: &BuildInput) -> Result<DesiredState, BuildError> {
    let user_name = user.metadata.name.clone().unwrap_or_default();
    let ns = names::user_namespace(&user_name)?;
    let owner = user.controller_owner_ref(&()).ok_or(BuildError::NoUid)?;
    let ctx = Ctx {
        user_name: &user_name,
        telegram_id: user.spec.telegram.user_id,
        namespace: &ns,
        owner: &owner,
        reset_generation: user.spec.reset_generation,
        input,
    };
    Ok(DesiredState {
        namespace: namespace::namespace(&ctx),
        service_account: namespace::service_account(&ctx),
        workspace: workload::workspace(&ctx),
        quota: namespace::quota(&ctx),
        limit_range: namespace::limit_range(&ctx),
        network_policy: network::network_policy(&ctx),
        token_secret: workload::token_secret(&ctx),
        service: workload::service(&ctx),
        pull_secrets: input.pull_secrets.iter().map(|source| placement::pull_secret_copy(&ctx, source)).collect(),
        pod: workload::pod(&ctx),
    })
}

/// What every builder reads.
struct Ctx<'a> {
    user_name: &'a str,
    /// For the agent's log lines: one user's trail is one filter across components.
    telegram_id: i64,
    namespace: &'a str,
    owner: &'a OwnerReference,
    /// `spec.resetGeneration`: what a new workspace claim is made for.
    reset_generation: i64,
    input: &'a BuildInput<'a>,
}

impl Ctx<'_> {
    /// Metadata for a namespaced child: our labels, owned by the MoltmateUser.
    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(self.namespace.to_string()),
            labels: Some(names::user_labels(self.user_name)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::{MoltmateUserSpec, Profile};
    use crate::profile::resolve;

    pub fn user(name: &str, profile: Profile) -> MoltmateUser {
        let mut user = MoltmateUser::new(name, MoltmateUserSpec::new(1001, profile));
        user.metadata.uid = Some(format!("uid-{name}"));
        user
    }

    pub fn build_for(user: &MoltmateUser) -> DesiredState {
        let profile = resolve(&user.spec).unwrap();
        let config = ClusterConfig::default();
        build(
            user,
            &BuildInput {
                profile: &profile,
                config: &config,
                agent_token: "t0ken",
                broker_ip: Some("10.96.0.10"),
                node_addresses: &[],
                pull_secrets: &[],
            },
        )
        .unwrap()
    }

    #[test]
    fn every_child_is_owned_labelled_and_in_the_user_namespace() {
        let d = build_for(&user("alice", Profile::Public));
        let metas = [
            &d.service_account.metadata,
            &d.workspace.metadata,
            &d.quota.metadata,
            &d.limit_range.metadata,
            &d.network_policy.metadata,
            &d.token_secret.metadata,
            &d.service.metadata,
            &d.pod.metadata,
        ];
        for meta in metas {
            assert_eq!(meta.namespace.as_deref(), Some("moltmate-alice"), "{:?}", meta.name);
            let owner = &meta.owner_references.as_ref().unwrap()[0];
            assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("MoltmateUser", "uid-alice"));
            assert_eq!(meta.labels.as_ref().unwrap()[names::LABEL_USER], "alice");
        }
        assert_eq!(d.namespace.metadata.name.as_deref(), Some("moltmate-alice"));
    }

    #[test]
    fn a_name_that_cannot_be_a_namespace_is_an_error() {
        let u = user(&"x".repeat(60), Profile::Public);
        let profile = resolve(&u.spec).unwrap();
        let config = ClusterConfig::default();
        let err = build(
            &u,
            &BuildInput {
                profile: &profile,
                config: &config,
                agent_token: "t",
                broker_ip: None,
                node_addresses: &[],
                pull_secrets: &[],
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("63"), "{err}");
    }

    #[test]
    fn the_build_is_deterministic() {
        let u = user("bob", Profile::Family);
        assert_eq!(build_for(&u), build_for(&u));
    }
}
