//! The cluster as the audit sees it, read once and read-only (the only I/O of the audit).
//!
//! Secret values never enter the snapshot: a Secret is kept as its name, type and the length
//! of each value, which is all the checks need (a master key long enough, a key present).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, Node, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::MoltmateUser;
use crate::names;

/// A Secret without its values.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretInfo {
    pub namespace: String,
    pub name: String,
    pub type_: Option<String>,
    /// Length in bytes of each value, surrounding whitespace removed (as the programs read them).
    pub lengths: BTreeMap<String, usize>,
}

impl SecretInfo {
    pub fn of(secret: &Secret) -> Self {
        let mut lengths: BTreeMap<String, usize> =
            secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.trim_ascii().len())).collect();
        // stringData is write-only and never returned, but a hand-built object may carry it.
        for (k, v) in secret.string_data.iter().flatten() {
            lengths.insert(k.clone(), v.trim().len());
        }
        Self {
            namespace: secret.namespace().unwrap_or_default(),
            name: secret.name_any(),
            type_: secret.type_.clone(),
            lengths,
        }
    }
}

/// Everything the checks read. Namespaced lists hold only the release namespace and the
/// sandbox namespaces (`moltmate-*` or labelled as the operator's).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub users: Vec<MoltmateUser>,
    pub namespaces: Vec<Namespace>,
    pub network_policies: Vec<NetworkPolicy>,
    pub quotas: Vec<ResourceQuota>,
    pub limit_ranges: Vec<LimitRange>,
    pub pods: Vec<Pod>,
    pub pvcs: Vec<PersistentVolumeClaim>,
    pub services: Vec<Service>,
    pub ingresses: Vec<Ingress>,
    pub role_bindings: Vec<RoleBinding>,
    /// Every one in the cluster (a check picks those naming a sandbox's ServiceAccounts).
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    /// The release namespace's only.
    pub deployments: Vec<Deployment>,
    /// The release namespace's only, values removed.
    pub secrets: Vec<SecretInfo>,
    /// The release namespace's only (profile defaults).
    pub config_maps: Vec<ConfigMap>,
    /// Every node: their addresses belong in `network: full` policies' exceptions.
    pub nodes: Vec<Node>,
}

impl Snapshot {
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces.iter().find(|n| n.metadata.name.as_deref() == Some(name))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&SecretInfo> {
        self.secrets.iter().find(|s| s.namespace == namespace && s.name == name)
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&ConfigMap> {
        find(&self.config_maps, namespace, name)
    }

    pub fn user(&self, name: &str) -> Option<&MoltmateUser> {
        self.users.iter().find(|u| u.metadata.name.as_deref() == Some(name))
    }

    /// Namespaces holding a sandbox: every user's, and every one the operator labelled as its
    /// own (retained ones included), sorted.
    pub fn sandbox_namespaces(&self) -> BTreeSet<String> {
        let of_users = self.users.iter().filter_map(|u| names::user_namespace(&u.name_any()).ok());
        let labelled = self
            .namespaces
            .iter()
            .filter(|n| n.labels().get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY))
            .map(|n| n.name_any());
        of_users.chain(labelled).collect()
    }
}

/// The object named `name` in `namespace`, from a list.
pub fn find<'a, K: Resource>(items: &'a [K], namespace: &str, name: &str) -> Option<&'a K> {
    items.iter().find(|o| o.meta().namespace.as_deref() == Some(namespace) && o.meta().name.as_deref() == Some(name))
}

/// The objects of a list in `namespace`.
pub fn in_namespace<'a, K: Resource>(items: &'a [K], namespace: &'a str) -> impl Iterator<Item = &'a K> + 'a {
    items.iter().filter(move |o| o.meta().namespace.as_deref() == Some(namespace))
}

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error(
        "the MoltmateUser CRD is not installed in this cluster (moltmateusers.moltmate.io not found); is this the right cluster?"
    )]
    NoCrd,
    #[error(
        "not allowed to {verb} {what}: {message}. The audit reads every object it checks (Secrets of the release namespace included); run it with an admin's kubeconfig"
    )]
    Forbidden { verb: &'static str, what: String, message: String },
    #[error("cannot {verb} {what}: {source}")]
    Api { verb: &'static str, what: String, source: kube::Error },
}

/// Read what the checks need, with list calls only (read-only).
pub async fn collect(client: &Client, release_namespace: &str) -> Result<Snapshot, CollectError> {
    let (users, namespaces) = futures::try_join!(
        list::<MoltmateUser>(Api::all(client.clone()), "MoltmateUsers"),
        list::<Namespace>(Api::all(client.clone()), "Namespaces"),
    )?;
    let (role_bindings, cluster_role_bindings, nodes) = futures::try_join!(
        list::<RoleBinding>(Api::all(client.clone()), "RoleBindings"),
        list::<ClusterRoleBinding>(Api::all(client.clone()), "ClusterRoleBindings"),
        list::<Node>(Api::all(client.clone()), "Nodes"),
    )?;
    let (network_policies, quotas, limit_ranges, pods, pvcs, services, ingresses) = futures::try_join!(
        list::<NetworkPolicy>(Api::all(client.clone()), "NetworkPolicies"),
        list::<ResourceQuota>(Api::all(client.clone()), "ResourceQuotas"),
        list::<LimitRange>(Api::all(client.clone()), "LimitRanges"),
        list::<Pod>(Api::all(client.clone()), "Pods"),
        list::<PersistentVolumeClaim>(Api::all(client.clone()), "PersistentVolumeClaims"),
        list::<Service>(Api::all(client.clone()), "Services"),
        list::<Ingress>(Api::all(client.clone()), "Ingresses"),
    )?;
    let in_release = |kind: &str| format!("{kind} in namespace {release_namespace}");
    let (deployments, secrets, config_maps) = futures::try_join!(
        list::<Deployment>(Api::namespaced(client.clone(), release_namespace), in_release("Deployments")),
        list::<Secret>(Api::namespaced(client.clone(), release_namespace), in_release("Secrets")),
        list::<ConfigMap>(Api::namespaced(client.clone(), release_namespace), in_release("ConfigMaps")),
    )?;

    let mut snapshot = Snapshot {
        users,
        namespaces,
        deployments,
        config_maps,
        // Values are dropped here, before anything else sees them.
        secrets: secrets.iter().map(SecretInfo::of).collect(),
        cluster_role_bindings,
        nodes,
        ..Snapshot::default()
    };
    let mut relevant = snapshot.sandbox_namespaces();
    relevant.insert(release_namespace.to_string());
    relevant
        .extend(snapshot.namespaces.iter().map(|n| n.name_any()).filter(|n| n.starts_with(names::NAMESPACE_PREFIX)));
    snapshot.network_policies = within(network_policies, &relevant);
    snapshot.quotas = within(quotas, &relevant);
    snapshot.limit_ranges = within(limit_ranges, &relevant);
    snapshot.pods = within(pods, &relevant);
    snapshot.services = within(services, &relevant);
    snapshot.ingresses = within(ingresses, &relevant);
    snapshot.role_bindings = within(role_bindings, &relevant);
    // Retained workspaces are looked for everywhere.
    let (retained, rest): (Vec<_>, Vec<_>) =
        pvcs.into_iter().partition(|o| o.labels().contains_key(names::LABEL_RETAINED));
    snapshot.pvcs = retained.into_iter().chain(within(rest, &relevant)).collect();
    Ok(snapshot)
}

fn within<K: Resource>(items: Vec<K>, namespaces: &BTreeSet<String>) -> Vec<K> {
    items.into_iter().filter(|o| o.meta().namespace.as_ref().is_some_and(|ns| namespaces.contains(ns))).collect()
}

async fn list<K>(api: Api<K>, what: impl Into<String>) -> Result<Vec<K>, CollectError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let what = what.into();
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items.into_iter().map(strip_managed_fields).collect()),
        Err(kube::Error::Api(status)) if status.is_not_found() && what == "MoltmateUsers" => Err(CollectError::NoCrd),
        Err(kube::Error::Api(status)) if status.code == 403 || status.code == 401 => {
            Err(CollectError::Forbidden { verb: "list", what, message: status.message.clone() })
        }
        Err(source) => Err(CollectError::Api { verb: "list", what, source }),
    }
}

/// Managed fields are bookkeeping; only PVCs keep theirs (they date a retention).
fn strip_managed_fields<K: Resource<DynamicType = ()>>(mut object: K) -> K {
    if K::kind(&()) != "PersistentVolumeClaim" {
        object.meta_mut().managed_fields = None;
    }
    object
}
