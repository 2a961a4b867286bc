//! The reconciler: read caches, call the pure builders, apply only what differs.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, Node, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, warn};

use super::diff::needs_apply;
use super::gate::{self, Gate, Stage};
use super::idle;
use super::metrics::OperatorMetrics;
use super::pod::{self, PodStep};
use super::reset;
use super::status::{Observation, Reason, next_status};
use crate::builders::{self, BuildInput, ClusterConfig, DesiredState};
use crate::cache::Compact;
use crate::crd::{DeletionPolicy, MoltmateUser, MoltmateUserStatus, Phase};
use crate::names;
use crate::profile;
use crate::token::MasterKey;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    #[error("no answer from the API server within {0:?}; retrying")]
    Timeout(Duration),
}

/// The longest one reconcile may take. A reconcile is a handful of API calls; one that hangs
/// (a request to an API server going away) would otherwise hold its user, and one of the
/// RECONCILE_CONCURRENCY slots, until the client's 295 s read timeout.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(60);

/// Read-only views of everything the operator owns, kept current by watches.
#[derive(Clone)]
pub struct Caches {
    pub users: Store<MoltmateUser>,
    // The owned kinds, one object or so per user each, kept compact (`cache::reflect_compact`).
    pub namespaces: Store<Compact<Namespace>>,
    pub service_accounts: Store<Compact<ServiceAccount>>,
    pub workspaces: Store<Compact<PersistentVolumeClaim>>,
    pub quotas: Store<Compact<ResourceQuota>>,
    pub limit_ranges: Store<Compact<LimitRange>>,
    pub network_policies: Store<Compact<NetworkPolicy>>,
    pub secrets: Store<Compact<Secret>>,
    pub services: Store<Compact<Service>>,
    pub pods: Store<Compact<Pod>>,
    /// The gateway's broker Service (one object at most).
    pub broker: Store<Service>,
    /// The nodes, trimmed to their addresses (excepted from `network: full` egress).
    pub nodes: Store<Node>,
    /// Turns true once `wait_until_ready` has resolved; any number of tasks may wait on it.
    pub ready: tokio::sync::watch::Receiver<bool>,
}

impl Caches {
    /// Resolves once every child watch has listed its objects. Reconciling before that would
    /// mistake "not listed yet" for "missing" and write what is already there.
    /// A store wakes a single waiter only (kube-runtime's `DelayedInit` holds one waker), so
    /// this must be that waiter: await it from one task; others use `ready`. The users store
    /// is not here: the Controller itself waits on it before its first reconcile, and a
    /// second waiter there could leave one of the two asleep for ever.
    pub async fn wait_until_ready(&self) {
        let _ = futures::join!(
            self.namespaces.wait_until_ready(),
            self.service_accounts.wait_until_ready(),
            self.workspaces.wait_until_ready(),
            self.quotas.wait_until_ready(),
            self.limit_ranges.wait_until_ready(),
            self.network_policies.wait_until_ready(),
            self.secrets.wait_until_ready(),
            self.services.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.broker.wait_until_ready(),
            self.nodes.wait_until_ready(),
        );
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub config: ClusterConfig,
    pub master_key: MasterKey,
    pub caches: Caches,
    /// Who publishes the operator's Events (`event`).
    pub reporter: Reporter,
    pub metrics: Arc<OperatorMetrics>,
    /// Consecutive failures per user, for the error backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// The `Ready` reason last announced per user uid, so a stale cache cannot repeat an event.
    pub announced: Mutex<HashMap<String, String>>,
}

/// The cached object `namespace/name`, decoded.
fn lookup<K>(store: &Store<Compact<K>>, namespace: &str, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + DeserializeOwned + 'static,
{
    store.get(&ObjectRef::new(name).within(namespace))?.decode().map(Arc::new)
}

/// The cached namespace `name`, decoded.
fn lookup_namespace(store: &Store<Compact<Namespace>>, name: &str) -> Option<Arc<Namespace>> {
    store.get(&ObjectRef::new(name))?.decode().map(Arc::new)
}

/// One user's reconcile, in a span naming the user and their Telegram id: every line logged
/// on its behalf carries both, as the gateway's and the agent's lines do.
pub async fn reconcile(user: Arc<MoltmateUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = tracing::info_span!("reconcile", user = %user.name_any(), telegram_id = user.spec.telegram.user_id);
    let _ = ctx.caches.ready.clone().wait_for(|ready| *ready).await;
    match tokio::time::timeout(RECONCILE_TIMEOUT, reconcile_user(user, ctx).instrument(span)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(RECONCILE_TIMEOUT)),
    }
}

async fn reconcile_user(user: Arc<MoltmateUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let api: Api<MoltmateUser> = Api::all(ctx.client.clone());
    let result = finalizer::finalizer(&api, names::FINALIZER, user, |event| async {
        match event {
            Finalizer::Apply(user) => apply(&user, &ctx).await,
            Finalizer::Cleanup(user) => cleanup(&user, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics.observe_reconcile(started.elapsed(), result.is_ok());
    result
}

/// Back off per user: 2 s, 4 s, ... up to 5 minutes (`backoff`); a success resets it.
pub fn error_policy(user: Arc<MoltmateUser>, error: &Error, ctx: Arc<Context>) -> Action {
    let name = user.name_any();
    if is_not_found(error) {
        // The user is already gone (deleted between the cache and the call): nothing to do.
        debug!(user = %name, error = %error, "user gone");
        return Action::await_change();
    }
    warn!(user = %name, telegram_id = user.spec.telegram.user_id, error = %error, "reconcile failed");
    let mut failures = ctx.failures.lock().expect("failure map lock");
    let count = failures.entry(name).or_insert(0);
    *count = count.saturating_add(1);
    let delay = if is_quota_exceeded(error) { backoff(*count).min(QUOTA_RETRY) } else { backoff(*count) };
    Action::requeue(delay)
}

/// The longest wait after a write refused as "exceeded quota". Such a refusal can be stale:
/// quota admission charges a create before it is stored, and a create cut off (an operator
/// killed mid-request) keeps its charge until kube-controller-manager's next full quota resync
/// (5 min by default). The resync's own watch event triggers a reconcile, but quota admission
/// may not have seen the new usage yet; with the plain backoff the next try then came 5
/// minutes later (scripts/bench, chaos-operator).
const QUOTA_RETRY: Duration = Duration::from_secs(15);

fn is_not_found(error: &Error) -> bool {
    matches!(api_error(error), Some(kube::Error::Api(status)) if status.code == 404)
}

fn is_quota_exceeded(error: &Error) -> bool {
    matches!(api_error(error), Some(kube::Error::Api(status)) if status.code == 403 && status.message.contains("exceeded quota"))
}

/// The Kubernetes API error behind a reconcile error, through the finalizer's wrapping.
fn api_error(error: &Error) -> Option<&kube::Error> {
    match error {
        Error::Kube(e) => Some(e),
        Error::Finalizer(f) => match f.as_ref() {
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Some(e),
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => api_error(e),
            _ => None,
        },
        Error::Timeout(_) => None,
    }
}

/// A failing user's next try: 1 s doubling, at most 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    crate::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).delay(failures)
}

async fn apply(user: &MoltmateUser, ctx: &Context) -> Result<Action, Error> {
    let name = user.name_any();
    let observation = match provision(user, ctx).await {
        Ok(observation) => observation,
        Err(error) => {
            let observation = Observation::new(Phase::Failed, Reason::ApplyFailed, error.to_string());
            record_status(user, ctx, &observation).await?;
            return Err(error);
        }
    };
    record_status(user, ctx, &observation).await?;
    ctx.failures.lock().expect("failure map lock").remove(&name);
    let routine = match observation.phase {
        // Look again soon: the holder of the Telegram id may go away.
        _ if observation.reason == Reason::DuplicateTelegramId => Duration::from_secs(5),
        Phase::Ready | Phase::Suspended | Phase::Idle => Duration::from_secs(600),
        Phase::Provisioning | Phase::Pending => Duration::from_secs(30),
        Phase::Failed => Duration::from_secs(60),
    };
    Ok(Action::requeue(observation.recheck_after.map_or(routine, |after| after.min(routine))))
}

/// The longest a reconcile waits for a quota it has just applied to come in force.
const QUOTA_WAIT: Duration = Duration::from_secs(3);

/// Bring the user's sandbox to its desired state and say where it stands.
///
/// A new namespace's quota comes in force a moment after it is applied, once the quota
/// controller has filled in its status. Waiting for that here, instead of in the queue behind
/// every user that arrived since, takes a new user to its agent pod in one pass: users are
/// provisioned in the order they came (scripts/bench, provisioning), and the wait costs no
/// status write or Event. A quota slower than `QUOTA_WAIT` is left to its watch event.
async fn provision(user: &MoltmateUser, ctx: &Context) -> Result<Observation, Error> {
    let mut waited = false;
    loop {
        let (view, desired) = read(user, ctx).await?;
        let gate = gate::decide(&view);
        let quota = desired.as_ref().filter(|_| gate == Gate::WaitingForQuota && !waited).map(|d| d.quota.clone());
        // After the wait, the guard rails are the ones just applied, whether or not their
        // watch events are in yet: not applied again.
        let observation = provision_step(user, ctx, &view, gate, desired, !waited).await?;
        match quota {
            Some(quota) if quota_comes_in_force(ctx, &quota, QUOTA_WAIT).await => waited = true,
            _ => return Ok(observation),
        }
    }
}

/// Whether the cached `quota` is in force within `wait`.
async fn quota_comes_in_force(ctx: &Context, quota: &ResourceQuota, wait: Duration) -> bool {
    const ASK_EVERY: Duration = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if quota_in_force(ctx, quota) {
            return true;
        }
        if tokio::time::Instant::now() + ASK_EVERY > deadline {
            return false;
        }
        tokio::time::sleep(ASK_EVERY).await;
    }
}

/// One pass: let the gates decide how far to go (`gate::decide`), write that far, take the
/// gate's own step.
async fn provision_step(
    user: &MoltmateUser,
    ctx: &Context,
    view: &gate::View,
    gate: Gate,
    desired: Option<DesiredState>,
    guard_rails: bool,
) -> Result<Observation, Error> {
    let namespace = view.namespace.as_str();
    let stage = gate.stage();
    let desired = match desired {
        Some(mut desired) if stage != Stage::Nothing => {
            keep_workspace_size(user, ctx, &mut desired).await;
            if guard_rails {
                apply_guard_rails(user, ctx, &desired).await?;
            }
            if let Stage::Workload { generation } = stage {
                builders::stamp_reset_generation(&mut desired.workspace, generation);
                apply_workload(user, ctx, &desired).await?;
            }
            Some(desired)
        }
        _ => None,
    };
    if let (Gate::Open { generation, idle_in }, Some(desired)) = (&gate, &desired) {
        let observation = reconcile_pod(user, ctx, &desired.pod).await?.recheck_after(*idle_in);
        return Ok(gate::with_reset(observation, *generation));
    }
    // Every gate but `Open` has an observation of its own, and `Open` always comes with the
    // desired objects.
    let observation = gate.observation(view).unwrap_or_else(|| {
        Observation::new(Phase::Failed, Reason::InvalidSpec, "the desired objects could not be built")
    });
    match gate {
        Gate::Refused { stop_agent: true, .. } | Gate::AwaitVolumeRelease { .. } => {
            delete_pod(ctx, namespace).await?;
        }
        Gate::ResetWorkspace { .. } => {
            replace_workspace(ctx, namespace).await?;
            event(ctx, user, EventType::Normal, "Resetting", &observation.message).await;
        }
        Gate::Suspended { .. } => {
            let removed = delete_pod(ctx, namespace).await?;
            if removed {
                event(ctx, user, EventType::Normal, "Suspended", "agent pod removed; workspace kept").await;
            }
        }
        Gate::Idle { .. } => {
            let removed = delete_pod(ctx, namespace).await?;
            if removed {
                info!(user = %user.name_any(), "idle: agent pod removed");
            }
        }
        Gate::Refused { stop_agent: false, .. } | Gate::WaitingForQuota | Gate::WaitingForGateway { .. } => {}
        Gate::Open { .. } => {}
    }
    Ok(observation)
}

/// What the gates decide on, and the desired objects when the spec builds. Read in the gates'
/// order, stopping at the first refusal: what it makes moot (an API call or two) is not read.
async fn read(user: &MoltmateUser, ctx: &Context) -> Result<(gate::View, Option<DesiredState>), Error> {
    let mut view = gate::View {
        telegram_id: user.spec.telegram.user_id,
        suspend: user.spec.suspend,
        idle_timeout: user.spec.idle_timeout.clone().unwrap_or_default(),
        gateway_namespace: ctx.config.gateway_namespace.clone(),
        broker_service: ctx.config.broker_service.clone(),
        ..gate::View::default()
    };
    view.namespace = match names::user_namespace(&user.name_any()) {
        Ok(ns) => ns,
        Err(e) => return Ok((gate::View { name_error: Some(e.to_string()), ..view }, None)),
    };
    view.telegram_id_holder = telegram_id_holder(user, &same_telegram_id(ctx, user));
    if view.telegram_id_holder.is_some() {
        return Ok((view, None));
    }
    let profile = match profile::resolve_with(&user.spec, &ctx.config.profiles) {
        Ok(p) => p,
        Err(e) => return Ok((gate::View { profile_error: Some(e.to_string()), ..view }, None)),
    };
    let pull_secrets = match read_pull_secrets(ctx).await? {
        Ok(secrets) => secrets,
        Err(missing) => return Ok((gate::View { missing_pull_secret: Some(missing), ..view }, None)),
    };
    let token = ctx.master_key.agent_token(user.uid().as_deref().unwrap_or_default());
    let broker = ctx.caches.broker.state().into_iter().next();
    let broker_ip = broker.as_ref().and_then(|s| s.spec.as_ref()?.cluster_ip.clone()).filter(|ip| ip != "None");
    let nodes: Vec<IpAddr> =
        ctx.caches.nodes.state().iter().flat_map(|n| builders::node_addresses(n).collect::<Vec<_>>()).collect();
    let input = BuildInput {
        profile: &profile,
        config: &ctx.config,
        agent_token: &token,
        broker_ip: broker_ip.as_deref(),
        node_addresses: &nodes,
        pull_secrets: &pull_secrets,
    };
    let desired = match builders::build(user, &input) {
        Ok(d) => d,
        Err(e) => return Ok((gate::View { build_error: Some(e.to_string()), ..view }, None)),
    };
    view.namespace_taken = namespace_taken(ctx, &view.namespace).await?;
    view.live_namespace = lookup_namespace(&ctx.caches.namespaces, &view.namespace);
    view.quota_in_force = quota_in_force(ctx, &desired.quota);
    let applied = user.status.as_ref().and_then(|s| s.reset_generation).unwrap_or(0);
    let live_claim = lookup(&ctx.caches.workspaces, &view.namespace, names::WORKSPACE_PVC);
    view.workspace = reset::workspace_step(live_claim.as_deref(), user.spec.reset_generation, applied);
    view.broker_found = broker_ip.is_some();
    view.idle = profile.idle_timeout.map(|timeout| {
        let created = user.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let agent = pod::idle_view(lookup(&ctx.caches.pods, &view.namespace, names::AGENT_POD).as_deref());
        idle::activity(jiff::Timestamp::now(), created, last_activity(user).as_deref(), agent, timeout)
    });
    Ok((view, Some(desired)))
}

/// The installation's pull Secrets, read from the gateway namespace at each reconcile (so a
/// rotated one reaches the copies), or the name of the first that does not exist.
async fn read_pull_secrets(ctx: &Context) -> Result<Result<Vec<Secret>, String>, Error> {
    let names = &ctx.config.agent_pod.image_pull_secrets;
    if names.is_empty() {
        return Ok(Ok(Vec::new()));
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config.gateway_namespace);
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        match api.get_opt(name).await? {
            Some(secret) => found.push(secret),
            None => return Ok(Err(name.clone())),
        }
    }
    Ok(Ok(found))
}

/// Delete the agent pod and the workspace claim; the claim goes once no pod uses it.
async fn replace_workspace(ctx: &Context, ns: &str) -> Result<(), Error> {
    delete_pod(ctx, ns).await?;
    ctx.metrics.count_write("PersistentVolumeClaim");
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    delete_ignoring_absent(&api, names::WORKSPACE_PVC).await?;
    Ok(())
}

/// The users with `user`'s Telegram id, itself included: a handful, not every user's Arc, to
/// pass to `telegram_id_holder` at each reconcile.
fn same_telegram_id(ctx: &Context, user: &MoltmateUser) -> Vec<Arc<MoltmateUser>> {
    ctx.caches.users.state_filter(|other| other.spec.telegram.user_id == user.spec.telegram.user_id)
}

/// The older MoltmateUser (by creation time, then name) holding the same Telegram id, if any.
pub fn telegram_id_holder(user: &MoltmateUser, all: &[Arc<MoltmateUser>]) -> Option<String> {
    let key = |u: &MoltmateUser| (u.metadata.creation_timestamp.clone().map(|t| t.0), u.name_any());
    all.iter()
        .filter(|other| other.spec.telegram.user_id == user.spec.telegram.user_id)
        .filter(|other| other.name_any() != user.name_any() && other.metadata.deletion_timestamp.is_none())
        .filter(|other| key(other) < key(user))
        .min_by_key(|other| key(other))
        .map(|other| other.name_any())
}

/// Every Telegram id's owner, the MoltmateUser `telegram_id_holder` finds no older claimant
/// for, by name: one pass over all users, for loops that ask about each of them.
pub fn telegram_id_owners(all: &[Arc<MoltmateUser>]) -> HashMap<i64, String> {
    let key = |u: &MoltmateUser| (u.metadata.creation_timestamp.clone().map(|t| t.0), u.name_any());
    let mut oldest: HashMap<i64, &MoltmateUser> = HashMap::new();
    for user in all.iter().filter(|u| u.metadata.deletion_timestamp.is_none()) {
        let held = oldest.entry(user.spec.telegram.user_id).or_insert(user);
        if key(user) < key(held) {
            *held = user;
        }
    }
    oldest.into_iter().map(|(id, user)| (id, user.name_any())).collect()
}

/// A workspace keeps the size it was created with: many StorageClasses cannot expand
/// volumes, and none can shrink them. A different size in the spec is reported once per
/// spec change, not retried.
async fn keep_workspace_size(user: &MoltmateUser, ctx: &Context, desired: &mut DesiredState) {
    let ns = desired.namespace.metadata.name.clone().unwrap_or_default();
    let Some(live) = lookup(&ctx.caches.workspaces, &ns, names::WORKSPACE_PVC) else { return };
    let Some(live_size) = workspace_size(&live) else { return };
    let Some(requests) =
        desired.workspace.spec.as_mut().and_then(|s| s.resources.as_mut()).and_then(|r| r.requests.as_mut())
    else {
        return;
    };
    let wanted = requests.insert("storage".into(), live_size.clone());
    let first_look_at_this_spec = user.status.as_ref().and_then(|s| s.observed_generation) != user.metadata.generation;
    if let Some(wanted) = wanted
        && !crate::quantity::same_quantity(&wanted.0, &live_size.0)
        && first_look_at_this_spec
    {
        let note = format!(
            "workspace stays at {}: resizing a workspace volume is not automatic (asked for {}); expand it by hand if its StorageClass allows",
            live_size.0, wanted.0
        );
        event(ctx, user, EventType::Warning, "WorkspaceSizeKept", &note).await;
    }
}

fn workspace_size(pvc: &PersistentVolumeClaim) -> Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity> {
    pvc.spec.as_ref()?.resources.as_ref()?.requests.as_ref()?.get("storage").cloned()
}

/// A namespace of that name that we did not create (say `moltmate-system`, the release
/// namespace, for a user named `system`) is never adopted: fencing or deleting it would
/// break whatever lives there. Our watch only sees namespaces we label, so look once.
async fn namespace_taken(ctx: &Context, ns: &str) -> Result<bool, Error> {
    // Presence only: nothing of the object is read, so it is not decoded.
    if ctx.caches.namespaces.get(&ObjectRef::new(ns)).is_some() {
        return Ok(false);
    }
    let existing = Api::<Namespace>::all(ctx.client.clone()).get_opt(ns).await?;
    let ours = |n: &Namespace| n.labels().get(names::LABEL_MANAGED_BY).map(String::as_str) == Some(names::MANAGED_BY);
    Ok(existing.is_some_and(|n| !ours(&n)))
}

/// When the person last sent a message: the gateway's `status.lastActivity`, or the
/// annotation that gateways before it stamped, whichever is newer.
fn last_activity(user: &MoltmateUser) -> Option<String> {
    let status = user.status.as_ref().and_then(|s| s.last_activity.as_deref());
    let annotation = user.annotations().get(names::ANNOTATION_LAST_ACTIVITY).map(String::as_str);
    let newest = [status, annotation].into_iter().flatten().filter_map(|t| t.parse::<jiff::Timestamp>().ok()).max()?;
    Some(newest.to_string())
}

/// The namespace and its fences: nothing runs there before they exist.
async fn apply_guard_rails(user: &MoltmateUser, ctx: &Context, d: &DesiredState) -> Result<(), Error> {
    let ns_name = d.namespace.metadata.name.clone().unwrap_or_default();
    let live_ns = lookup_namespace(&ctx.caches.namespaces, &ns_name);
    if needs_apply(&d.namespace, live_ns.as_deref()) {
        let api: Api<Namespace> = Api::all(ctx.client.clone());
        server_side_apply(&api, &d.namespace).await?;
        changed(ctx, user, "Namespace", &ns_name, live_ns.is_some()).await;
    }
    let c = &ctx.caches;
    ensure(user, ctx, &c.network_policies, &d.network_policy).await?;
    ensure(user, ctx, &c.quotas, &d.quota).await?;
    ensure(user, ctx, &c.limit_ranges, &d.limit_range).await
}

/// The quota's hard limits, as the quota controller reports them, are the desired ones.
fn quota_in_force(ctx: &Context, desired: &ResourceQuota) -> bool {
    let ns = desired.metadata.namespace.as_deref().unwrap_or_default();
    let live = lookup(&ctx.caches.quotas, ns, names::RESOURCE_QUOTA);
    let status_hard = live.as_ref().and_then(|q| q.status.as_ref()).and_then(|s| s.hard.as_ref());
    let desired_hard = desired.spec.as_ref().and_then(|s| s.hard.as_ref());
    match (desired_hard, status_hard) {
        (Some(want), Some(have)) => !needs_apply(want, Some(have)),
        _ => false,
    }
}

/// Everything the agent itself needs, bar the pod.
async fn apply_workload(user: &MoltmateUser, ctx: &Context, d: &DesiredState) -> Result<(), Error> {
    let c = &ctx.caches;
    ensure(user, ctx, &c.service_accounts, &d.service_account).await?;
    ensure(user, ctx, &c.secrets, &d.token_secret).await?;
    for pull_secret in &d.pull_secrets {
        ensure(user, ctx, &c.secrets, pull_secret).await?;
    }
    ensure(user, ctx, &c.services, &d.service).await?;
    ensure(user, ctx, &c.workspaces, &d.workspace).await?;
    Ok(())
}

/// Apply a namespaced child if the cache says it is missing or different.
async fn ensure<K>(user: &MoltmateUser, ctx: &Context, store: &Store<Compact<K>>, desired: &K) -> Result<(), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned
        + 'static,
{
    let ns = desired.meta().namespace.clone().unwrap_or_default();
    let name = desired.meta().name.clone().unwrap_or_default();
    let live = lookup(store, &ns, &name);
    if needs_apply(desired, live.as_deref()) {
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns);
        server_side_apply(&api, desired).await?;
        changed(ctx, user, &K::kind(&()), &name, live.is_some()).await;
    }
    Ok(())
}

async fn server_side_apply<K>(api: &Api<K>, desired: &K) -> Result<K, kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let mut object = serde_json::to_value(desired).map_err(kube::Error::SerdeError)?;
    // Server-side apply needs the type on the wire; k8s-openapi leaves it to the caller.
    object["apiVersion"] = K::api_version(&()).into();
    object["kind"] = K::kind(&()).into();
    let name = desired.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(names::FIELD_MANAGER).force(), &Patch::Apply(&object)).await
}

/// Count the write and tell the user's event stream what was created or put back.
async fn changed(ctx: &Context, user: &MoltmateUser, kind: &str, name: &str, existed: bool) {
    ctx.metrics.count_write(kind);
    // Only a user that has been up (Ready, Idle, Suspended) had its children before: during
    // the first provisioning the status is already written (WaitingForQuota, PodStarting),
    // and the workload created then is new, not restored.
    let provisioned_before = user
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| matches!(p, Phase::Ready | Phase::Idle | Phase::Suspended));
    let (reason, note) = match (existed, provisioned_before) {
        (true, _) => ("Restored", format!("{kind} {name} differed from its desired state and was put back")),
        (false, true) => ("Restored", format!("{kind} {name} was missing and was re-created")),
        (false, false) => ("Created", format!("{kind} {name} created")),
    };
    info!(user = %user.name_any(), kind, object = name, reason, "applied");
    // A first creation is told by the status's own Events (PodStarting, AgentReady).
    if reason == "Restored" {
        event(ctx, user, EventType::Normal, reason, &note).await;
    }
}

/// Create, keep or replace the agent pod; report whether it serves.
async fn reconcile_pod(user: &MoltmateUser, ctx: &Context, desired: &Pod) -> Result<Observation, Error> {
    let ns = desired.metadata.namespace.clone().unwrap_or_default();
    let live = lookup(&ctx.caches.pods, &ns, names::AGENT_POD);
    let step = pod::step(live.as_deref(), desired);
    match &step {
        PodStep::Create => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            server_side_apply(&api, desired).await?;
            changed(ctx, user, "Pod", names::AGENT_POD, false).await;
        }
        PodStep::Replace { why } => {
            delete_pod(ctx, &ns).await?;
            let note = format!("{why}; replacing the agent pod (workspace kept)");
            event(ctx, user, EventType::Normal, "Replaced", &note).await;
        }
        PodStep::AwaitTermination | PodStep::AwaitReady { .. } | PodStep::Serving => {}
    }
    Ok(step.observation())
}

/// Delete the agent pod if the cache has one; true if a delete was sent.
async fn delete_pod(ctx: &Context, ns: &str) -> Result<bool, Error> {
    match lookup(&ctx.caches.pods, ns, names::AGENT_POD) {
        Some(pod) if pod.metadata.deletion_timestamp.is_none() => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
            ctx.metrics.count_write("Pod");
            delete_ignoring_absent(&api, names::AGENT_POD).await?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Write status only when it changed; emit an event when the Ready reason changes.
async fn record_status(user: &MoltmateUser, ctx: &Context, observation: &Observation) -> Result<(), Error> {
    let namespace = names::user_namespace(&user.name_any()).ok();
    let previous = user.status.as_ref();
    let now = Time(jiff::Timestamp::now());
    let status = next_status(previous, user.metadata.generation, namespace, observation, now);
    if previous == Some(&status) {
        return Ok(());
    }
    if let Some(generation) = status.reset_generation.filter(|g| Some(*g) != previous.and_then(|s| s.reset_generation))
    {
        let note = format!(
            "reset generation {generation}: the workspace volume is new and empty (files, memory, conversation history)"
        );
        event(ctx, user, EventType::Normal, "WorkspaceReset", &note).await;
    }
    let uid = user.uid().unwrap_or_default();
    let previous_reason = previous.and_then(|s| s.conditions.first()).map(|c| c.reason.clone());
    let reason = observation.reason.as_str();
    let announced = ctx.announced.lock().expect("announced lock").insert(uid, reason.to_string());
    if previous_reason.as_deref() != Some(reason) && announced.as_deref() != Some(reason) {
        let kind = if observation.phase == Phase::Failed { EventType::Warning } else { EventType::Normal };
        event(ctx, user, kind, reason, &observation.message).await;
    }
    let api: Api<MoltmateUser> = Api::all(ctx.client.clone());
    // The gateway's fields stay the gateway's: not in what the operator applies.
    let status = MoltmateUserStatus { last_activity: None, reminders: None, model: None, ..status };
    let patch = serde_json::json!({
        "apiVersion": "moltmate.io/v1alpha1",
        "kind": "MoltmateUser",
        "status": status,
    });
    ctx.metrics.count_write("MoltmateUser/status");
    api.patch_status(&user.name_any(), &PatchParams::apply(names::FIELD_MANAGER).force(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

async fn event(ctx: &Context, user: &MoltmateUser, type_: EventType, reason: &str, note: &str) {
    // Events are best effort: failing to publish one must not fail the reconcile.
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    // A recorder per Event: kube's keeps every Event it published for 6 minutes, to count
    // repeats into a series, which at 1,000 new users was megabytes held through provisioning
    // (scripts/bench, memory). Repeats never reach here: `announced` lets each reason through
    // once per user.
    let recorder = Recorder::new(ctx.client.clone(), ctx.reporter.clone());
    if let Err(e) = recorder.publish(&event, &user.object_ref(&())).await {
        warn!(user = %user.name_any(), error = %e, "could not publish event");
    }
}

/// Deletion: `Retain` keeps the namespace and workspace (unowned, labelled retained);
/// `Delete` removes the namespace with everything in it.
async fn cleanup(user: &MoltmateUser, ctx: &Context) -> Result<Action, Error> {
    let name = user.name_any();
    let Ok(ns) = names::user_namespace(&name) else { return Ok(Action::await_change()) };
    ctx.announced.lock().expect("announced lock").remove(&user.uid().unwrap_or_default());
    if telegram_id_holder(user, &same_telegram_id(ctx, user)).is_some() {
        // A duplicate never had a sandbox of its own; the namespace (if any) is someone's retained data.
        return Ok(Action::await_change());
    }
    // Only a namespace we made for this user is ours to clean up (never a foreign one, nor
    // another person's retained workspace this user was refused).
    let ours = lookup_namespace(&ctx.caches.namespaces, &ns).is_some_and(|n| {
        n.labels().get(names::LABEL_USER) == Some(&name)
            && gate::another_persons_workspace(Some(&n), user.spec.telegram.user_id).is_none()
    });
    if !ours {
        return Ok(Action::await_change());
    }
    let policy = user.spec.workspace.as_ref().map(|w| w.deletion_policy).unwrap_or_default();
    match policy {
        DeletionPolicy::Delete => {
            let api: Api<Namespace> = Api::all(ctx.client.clone());
            ctx.metrics.count_write("Namespace");
            delete_ignoring_absent(&api, &ns).await?;
            info!(user = %name, namespace = %ns, "namespace deleted with the user (deletionPolicy Delete)");
        }
        DeletionPolicy::Retain => {
            let client = &ctx.client;
            delete_pod(ctx, &ns).await?;
            delete_ignoring_absent(&Api::<Service>::namespaced(client.clone(), &ns), names::AGENT_SERVICE).await?;
            delete_ignoring_absent(&Api::<Secret>::namespaced(client.clone(), &ns), names::TOKEN_SECRET).await?;
            retain(ctx, &name, &ns).await?;
            info!(user = %name, namespace = %ns, "workspace retained (deletionPolicy Retain)");
        }
    }
    Ok(Action::await_change())
}

/// Drop the owner references of the namespace and workspace so garbage collection keeps
/// them, and label them retained. Applied by the same field manager, so a later adoption
/// removes the label again.
async fn retain(ctx: &Context, user_name: &str, ns: &str) -> Result<(), Error> {
    if let Some(live) = lookup_namespace(&ctx.caches.namespaces, ns) {
        let namespace = builders::retained::namespace(user_name, &live);
        server_side_apply(&Api::<Namespace>::all(ctx.client.clone()), &namespace).await?;
    }
    if let Some(live) = lookup(&ctx.caches.workspaces, ns, names::WORKSPACE_PVC) {
        let pvc = builders::retained::workspace(user_name, &live, reset::volume_generation(&live, 0));
        server_side_apply(&Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns), &pvc).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::tests::user;
    use crate::crd::Profile;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(user: &mut MoltmateUser, seconds: i64) {
        user.metadata.creation_timestamp = Some(Time(jiff::Timestamp::from_second(seconds).unwrap()));
    }

    #[test]
    fn the_older_user_keeps_a_telegram_id() {
        let mut alice = user("alice", Profile::Public);
        let mut bob = user("bob", Profile::Public);
        let mut carol = user("carol", Profile::Public);
        carol.spec.telegram.user_id = 7;
        at(&mut alice, 200);
        at(&mut bob, 100);
        at(&mut carol, 50);
        let all: Vec<_> = [&alice, &bob, &carol].into_iter().cloned().map(Arc::new).collect();
        assert_eq!(telegram_id_holder(&alice, &all).as_deref(), Some("bob"));
        assert_eq!(telegram_id_holder(&bob, &all), None);
        assert_eq!(telegram_id_holder(&carol, &all), None);
        // Same second: the name decides, so exactly one of them wins.
        at(&mut alice, 100);
        let all: Vec<_> = [&alice, &bob].into_iter().cloned().map(Arc::new).collect();
        assert_eq!(telegram_id_holder(&bob, &all).as_deref(), Some("alice"));
        assert_eq!(telegram_id_holder(&alice, &all), None);
        // A holder being deleted gives the id up.
        bob.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(300).unwrap()));
        let all: Vec<_> = [&alice, &bob].into_iter().cloned().map(Arc::new).collect();
        assert_eq!(telegram_id_holder(&bob, &all).as_deref(), Some("alice"));
    }

    #[test]
    fn the_owners_of_all_ids_at_once_are_those_no_older_user_holds() {
        let mut users: Vec<MoltmateUser> =
            ["alice", "bob", "carol", "dave", "erin"].map(|n| user(n, Profile::Public)).to_vec();
        for (i, (id, second)) in [(7, 200), (7, 100), (8, 50), (7, 100), (8, 10)].into_iter().enumerate() {
            users[i].spec.telegram.user_id = id;
            at(&mut users[i], second);
        }
        users[4].metadata.deletion_timestamp = Some(Time(jiff::Timestamp::from_second(300).unwrap()));
        let all: Vec<_> = users.into_iter().map(Arc::new).collect();
        let owners = telegram_id_owners(&all);
        assert_eq!(owners, HashMap::from([(7, "bob".to_string()), (8, "carol".to_string())]));
        for u in all.iter().filter(|u| u.metadata.deletion_timestamp.is_none()) {
            let owns = owners.get(&u.spec.telegram.user_id) == Some(&u.name_any());
            assert_eq!(owns, telegram_id_holder(u, &all).is_none(), "{}", u.name_any());
        }
    }

    #[test]
    fn backoff_grows_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(2));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }

    #[test]
    fn a_write_refused_by_quota_is_retried_within_15_seconds() {
        let refusal = |code: u16, message: &str| {
            Error::Kube(kube::Error::Api(Box::new(kube::core::Status::failure(message, "Forbidden").with_code(code))))
        };
        let quota = refusal(
            403,
            "pods \"agent\" is forbidden: exceeded quota: agent-quota, requested: pods=1, used: pods=1, limited: pods=1",
        );
        assert!(is_quota_exceeded(&quota));
        let in_apply = Error::Finalizer(Box::new(finalizer::Error::ApplyFailed(quota)));
        assert!(is_quota_exceeded(&in_apply), "as the finalizer helper returns it");
        assert!(!is_quota_exceeded(&refusal(403, "pods is forbidden: User cannot create resource")));
        assert!(!is_quota_exceeded(&refusal(409, "exceeded quota")));
    }
}
