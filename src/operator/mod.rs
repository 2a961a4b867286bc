//! `moltmate operator`: reconciles every MoltmateUser into an isolated namespace.

mod diff;
mod gate;
mod idle;
pub mod master_key;
mod metrics;
mod pod;
mod reconcile;
mod reset;
pub mod status;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, Node, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{info, warn};

pub use diff::{is_subset, needs_apply};
pub use reconcile::{Caches, Context, telegram_id_holder, telegram_id_owners};

use crate::builders::{self, AgentPodSettings, ClusterConfig};
use crate::cache;
use crate::crd::MoltmateUser;
use crate::names;
use crate::profile::{DefaultsError as ProfileDefaultsError, ProfileDefaults};
use crate::secret::SecretError;
use crate::shutdown::Shutdown;
use crate::token::MasterKey;
use crate::{http, leader};

#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// The process's own `--log-format` (a global flag), handed on to the agents it makes.
    #[arg(skip = crate::telemetry::LogFormat::Text)]
    pub log_format: crate::telemetry::LogFormat,
    /// Agent image for users whose spec names none.
    #[arg(long, env = "MOLTMATE_SANDBOX_IMAGE", default_value = concat!("localhost/moltmates/sandbox:", env!("CARGO_PKG_VERSION")))]
    pub sandbox_image: String,
    /// StorageClass for workspace volumes (default: the cluster's default class).
    #[arg(long, env = "MOLTMATE_STORAGE_CLASS")]
    pub storage_class: Option<String>,
    /// Namespace of the gateway; its pods are the agents' only peers.
    #[arg(long, env = "MOLTMATE_GATEWAY_NAMESPACE", default_value = "moltmate-system")]
    pub gateway_namespace: String,
    /// Labels of the gateway pods, as `key=value,key=value`.
    #[arg(long, env = "MOLTMATE_GATEWAY_POD_LABELS", default_value = "app.kubernetes.io/name=moltmate-gateway", value_parser = parse_labels)]
    pub gateway_pod_labels: BTreeMap<String, String>,
    /// Service in the gateway namespace whose ClusterIP agents reach the broker at.
    #[arg(long, env = "MOLTMATE_BROKER_SERVICE", default_value = "moltmate-broker")]
    pub broker_service: String,
    /// Port of the gateway's broker.
    #[arg(long, env = "MOLTMATE_BROKER_PORT", default_value_t = 8081)]
    pub broker_port: u16,
    /// Port agents listen on.
    #[arg(long, env = "MOLTMATE_AGENT_PORT", default_value_t = 8080)]
    pub agent_port: u16,
    /// File holding the master key agent tokens are derived from (else env MOLTMATE_MASTER_KEY).
    #[arg(long, env = "MOLTMATE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Instead of a file: the Secret in the gateway namespace holding the master key (key
    /// `master-key`), created with a random key on first start if it does not exist.
    #[arg(long, env = "MOLTMATE_MASTER_KEY_SECRET", conflicts_with = "master_key_file")]
    pub master_key_secret: Option<String>,
    /// Scheduling, runtime class and pull Secrets of every agent pod, as JSON or YAML:
    /// imagePullSecrets (Secrets of the gateway namespace, copied into each user namespace),
    /// runtimeClassName, nodeSelector, tolerations, affinity, priorityClassName.
    #[arg(long, env = "MOLTMATE_AGENT_POD", value_parser = AgentPodSettings::parse, default_value = "{}")]
    pub agent_pod: AgentPodSettings,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "MOLTMATE_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, env = "MOLTMATE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (default: the gateway namespace, i.e. the release namespace).
    #[arg(long, env = "MOLTMATE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This replica's name in the Lease (default: POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// YAML file of per-profile defaults (between the presets and each user's spec).
    #[arg(long, env = "MOLTMATE_PROFILES_FILE")]
    pub profiles_file: Option<PathBuf>,
}

/// `key=value,key=value` into a label map.
pub fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| match part.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!("{part:?} is not key=value")),
        })
        .collect()
}

impl OperatorArgs {
    pub fn cluster_config(&self) -> Result<ClusterConfig, ProfileDefaultsError> {
        Ok(ClusterConfig {
            default_image: self.sandbox_image.clone(),
            storage_class: self.storage_class.clone(),
            gateway_namespace: self.gateway_namespace.clone(),
            gateway_pod_labels: self.gateway_pod_labels.clone(),
            agent_port: self.agent_port,
            broker_port: self.broker_port,
            broker_service: self.broker_service.clone(),
            profiles: ProfileDefaults::load(self.profiles_file.as_deref())?,
            log_format: self.log_format,
            agent_pod: self.agent_pod.clone(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    MasterKey(#[from] SecretError),
    #[error(transparent)]
    MasterKeySecret(#[from] master_key::Error),
    #[error(transparent)]
    Profiles(#[from] ProfileDefaultsError),
    #[error("connecting to Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    #[error("serving health endpoints on {addr}: {source}")]
    Http { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Leader(#[from] leader::LeaderError),
    #[error("installing the SIGTERM handler: {0}")]
    Signals(#[source] std::io::Error),
}

/// Users reconciled at once. Each reconcile holds a user's built objects, their JSON and the
/// API server's answers; unbounded, 500 new users at once held them all (scripts/bench,
/// memory), while the API server, not the operator, sets the pace.
const RECONCILE_CONCURRENCY: u16 = 32;

/// A cache of the objects this operator manages of kind `K`, kept compact, and its event stream.
fn owned<K>(
    client: &Client,
    trim: fn(&mut K),
    relisted: &Relisted,
) -> (Store<cache::Compact<K>>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    let (store, events) =
        cache::reflect_compact(Api::all(client.clone()), cache::config().labels(&names::managed_selector()), trim);
    (store, relisted.watch(events).touched_objects())
}

/// Tells when any cache has been listed anew, so that every user is then reconciled.
///
/// During a (re)list, objects come as `InitApply` events while the store still holds the old
/// list; the store is swapped only at `InitDone`. A reconcile triggered by an `InitApply` of a
/// user created meanwhile finds no such user in the store (kube-runtime's `ObjectNotFound`,
/// kube-rs#1167) and is dropped, and one triggered by a child reads the child's old state; no
/// later event comes for either. After an API server restart, a user created just then was
/// never provisioned (scripts/bench, chaos-apiserver). Reconciling everyone once the new list
/// is in place costs no writes where nothing changed.
#[derive(Clone)]
struct Relisted(futures::channel::mpsc::UnboundedSender<()>);

impl Relisted {
    fn new() -> (Self, futures::channel::mpsc::UnboundedReceiver<()>) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        (Self(tx), rx)
    }

    /// `events`, telling each `InitDone` but the first (the store now holds the new list) on
    /// the way. The first list needs nothing: the Controller starts reconciling only once the
    /// users are listed, and each reconcile waits for every child cache.
    fn watch<K, S>(&self, events: S) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let tx = self.0.clone();
        let mut listed_before = false;
        events.inspect(move |event| {
            if let Ok(watcher::Event::InitDone) = event {
                if listed_before {
                    let _ = tx.unbounded_send(());
                }
                listed_before = true;
            }
        })
    }
}

/// A node's addresses as one number, so that only a change of them passes the filter.
fn node_addresses_hash(node: &Node) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    builders::node_addresses(node).collect::<Vec<_>>().hash(&mut hasher);
    Some(hasher.finish())
}

/// Children name their user in a label; retained namespaces have no owner reference left.
fn user_of<K: Resource>(object: K) -> Option<ObjectRef<MoltmateUser>> {
    object.labels().get(names::LABEL_USER).map(|name| ObjectRef::new(name))
}

pub async fn run(args: OperatorArgs) -> Result<(), Error> {
    let shutdown = Shutdown::on_signals().map_err(Error::Signals)?;
    let config = args.cluster_config()?;
    let client = Client::try_default().await.map_err(Error::Connect)?;
    let master_key = match &args.master_key_secret {
        Some(name) => {
            let namespace = &args.gateway_namespace;
            let secrets = Api::namespaced(client.clone(), namespace);
            match master_key::get_or_create_patiently(&secrets, namespace, name, &shutdown).await {
                Err(master_key::Error::Stopped) => return Ok(()),
                found => found?,
            }
        }
        None => MasterKey::load(args.master_key_file.as_deref())?,
    };
    let health = http::Health::new();
    let mut registry = Registry::default();
    let metrics = Arc::new(metrics::OperatorMetrics::register(&mut registry));
    crate::telemetry::register_build_info(&mut registry, "operator");

    let users_api: Api<MoltmateUser> = Api::all(client.clone());
    // As `Controller::new` does, with the users trimmed before they are cached.
    let (relisted, relists) = Relisted::new();
    let (users, user_events) = cache::reflect(users_api, cache::config(), cache::trim_user);
    let controller = Controller::for_stream(relisted.watch(user_events).applied_objects(), users.clone());

    let scrape_users = users.clone();
    let scrape_metrics = metrics.clone();
    let before_scrape: http::BeforeScrape =
        Box::new(move || scrape_metrics.count_users(scrape_users.state().iter().map(|u| u.as_ref())));
    let app = http::router(health.clone(), registry, before_scrape);
    let bound =
        http::serve(args.http_addr, app).await.map_err(|source| Error::Http { addr: args.http_addr, source })?;
    info!(addr = %bound, "serving /healthz, /readyz, /metrics");

    tokio::spawn(crate::memory::trim_periodically(crate::memory::TRIM_EVERY));

    let identity = args.identity.clone().unwrap_or_else(|| leader::default_identity("moltmate-operator"));
    let leadership = if args.leader_elect {
        let lease_ns = args.lease_namespace.clone().unwrap_or_else(|| args.gateway_namespace.clone());
        match leader::acquire(client.clone(), &lease_ns, "moltmate-operator", &identity, &shutdown).await? {
            Some(leadership) => Some(leadership),
            None => return Ok(()),
        }
    } else {
        None
    };

    let (namespaces, namespace_events) = owned::<Namespace>(&client, cache::trim_namespace, &relisted);
    let (service_accounts, service_account_events) = owned::<ServiceAccount>(&client, cache::keep_all, &relisted);
    let (workspaces, workspace_events) = owned::<PersistentVolumeClaim>(&client, cache::trim_claim, &relisted);
    let (quotas, quota_events) = owned::<ResourceQuota>(&client, cache::trim_quota, &relisted);
    let (limit_ranges, limit_range_events) = owned::<LimitRange>(&client, cache::keep_all, &relisted);
    let (network_policies, network_policy_events) = owned::<NetworkPolicy>(&client, cache::keep_all, &relisted);
    let (secrets, secret_events) = owned::<Secret>(&client, cache::keep_all, &relisted);
    let (services, service_events) = owned::<Service>(&client, cache::trim_service, &relisted);
    let (pods, pod_events) = owned::<Pod>(&client, cache::trim_agent_pod, &relisted);

    let broker_api: Api<Service> = Api::namespaced(client.clone(), &args.gateway_namespace);
    let broker_config = cache::config().fields(&format!("metadata.name={}", args.broker_service));
    let (broker, broker_events) = cache::reflect(broker_api, broker_config, cache::keep_all);
    let broker_changes = broker_events.touched_objects().filter_map(|r| future::ready(r.ok().map(|_| ())));
    // A node's addresses are in every `network: full` policy: a change there is a change for all.
    let (nodes, node_events) = cache::reflect(Api::<Node>::all(client.clone()), cache::config(), cache::trim_node);
    let node_changes = node_events
        .applied_objects()
        .predicate_filter(node_addresses_hash, Default::default())
        .filter_map(|r| future::ready(r.ok().map(|_| ())));

    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let caches = Caches {
        users: users.clone(),
        namespaces,
        service_accounts,
        workspaces,
        quotas,
        limit_ranges,
        network_policies,
        secrets,
        services,
        pods,
        broker,
        nodes,
        ready,
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        config,
        master_key,
        caches: caches.clone(),
        reporter: Reporter { controller: names::FIELD_MANAGER.into(), instance: Some(identity.clone()) },
        metrics,
        failures: Mutex::new(Default::default()),
        announced: Mutex::new(Default::default()),
    });

    let ready_health = health.clone();
    tokio::spawn(async move {
        caches.wait_until_ready().await;
        let _ = ready_tx.send(true);
        ready_health.set_ready(true);
        info!("caches synced; operator ready");
    });

    let controller = controller
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .watches_stream(namespace_events, user_of)
        .watches_stream(service_account_events, user_of)
        .watches_stream(workspace_events, user_of)
        .watches_stream(quota_events, user_of)
        .watches_stream(limit_range_events, user_of)
        .watches_stream(network_policy_events, user_of)
        .watches_stream(secret_events, user_of)
        .watches_stream(service_events, user_of)
        .watches_stream(pod_events, user_of)
        .reconcile_all_on(broker_changes)
        .reconcile_all_on(node_changes)
        .reconcile_all_on(relists)
        // Reconciles under way finish; then the Lease is released (`while_leading`).
        .graceful_shutdown_on(async move { shutdown.requested().await })
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // Requeued users deleted meanwhile; nothing to report.
                Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                // Reconcile errors are logged, with the user, by the error policy.
                Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                Err(e) => warn!(error = %e, "controller"),
                Ok(_) => {}
            }
        });

    Ok(leader::while_leading(leadership, controller).await?)
}

#[cfg(test)]
mod tests {
    use super::parse_labels;

    #[test]
    fn labels_parse() {
        let labels = parse_labels("a=b, c.io/d=e").unwrap();
        assert_eq!(labels.len(), 2);
        assert_eq!(labels["c.io/d"], "e");
        assert!(parse_labels("novalue").is_err());
        assert!(parse_labels("").unwrap().is_empty());
    }
}
