//! Benchmark 1: N MoltmateUsers applied at once, until all are Ready. The same N users by
//! the operator, and by a baseline client that creates the operator's own objects directly.

use std::collections::{HashMap, VecDeque};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, stream};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use moltmates::MoltmateUser;
use moltmates::builders::{self, BuildInput, ClusterConfig, DesiredState};
use moltmates::crd::{MoltmateUserSpec, Phase, Profile};
use moltmates::names;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::stats::{self, Summary};
use crate::support::{STORAGE_CLASS, SYSTEM_NS};

/// The baseline's field manager (server-side apply, as the operator writes).
const BASELINE_MANAGER: &str = "moltmate-bench-baseline";
/// What the baseline puts in each agent's token Secret; the operator derives a real one.
const BASELINE_AGENT_TOKEN: &str = "bench-baseline-agent-token";

pub fn user_name(i: usize) -> String {
    format!("bench-{i:04}")
}

/// User `i`: the smallest spec (a Telegram id, the default profile), as an admin applies it.
fn new_user(i: usize) -> MoltmateUser {
    MoltmateUser::new(&user_name(i), MoltmateUserSpec::new(5_000_000 + i as i64, Profile::default()))
}

/// How long a size may take before the run is reported as failed.
pub fn deadline(users: usize) -> Duration {
    Duration::from_secs(120 + users as u64)
}

/// One provisioning run, timed from the client's side.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// First create sent to last user Ready.
    pub total: Duration,
    /// First create sent to last create answered.
    pub creates: Duration,
    /// Per user: its create sent to its Ready seen.
    pub latencies: Vec<Duration>,
    /// Users not Ready by the deadline.
    pub not_ready: Vec<String>,
}

impl Outcome {
    fn from_times(
        started: Instant,
        creates: Duration,
        created: &HashMap<String, Instant>,
        ready: &HashMap<String, Instant>,
    ) -> Outcome {
        let mut latencies = Vec::new();
        let mut not_ready = Vec::new();
        let mut last = started;
        for (name, at) in created {
            match ready.get(name) {
                Some(done) => {
                    latencies.push(done.saturating_duration_since(*at));
                    last = last.max(*done);
                }
                None => not_ready.push(name.clone()),
            }
        }
        not_ready.sort();
        Outcome { total: last - started, creates, latencies, not_ready }
    }

    pub fn summary(&self) -> Summary {
        stats::summarize(&self.latencies)
    }

    pub fn users_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.total.as_secs_f64().max(f64::EPSILON)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "total_seconds": self.total.as_secs_f64(),
            "creates_seconds": self.creates.as_secs_f64(),
            "users_ready": self.latencies.len(),
            "users_per_second": self.users_per_second(),
            "latency": self.summary(),
            "not_ready": self.not_ready.iter().take(20).collect::<Vec<_>>(),
            "not_ready_count": self.not_ready.len(),
        })
    }
}

/// When each object first showed as ready, by the key `ready` gives it; the watch runs until
/// this is dropped.
struct FirstSeen {
    seen: Arc<Mutex<HashMap<String, Instant>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FirstSeen {
    /// Start watching; returns once the initial list is in, so no later change is missed.
    async fn watch<K>(api: Api<K>, config: watcher::Config, ready: fn(&K) -> Option<String>) -> FirstSeen
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + 'static,
    {
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut listed_tx = Some(listed_tx);
                let mut events = watcher(api, config).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                            if let Some(key) = ready(&object) {
                                seen.lock().unwrap().entry(key).or_insert_with(Instant::now);
                            }
                        }
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = listed_tx.take() {
                                let _ = tx.send(());
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        let _ = listed.await;
        FirstSeen { seen, task }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// Wait until `n` objects were seen ready, or the deadline; the times so far either way.
    async fn wait_for(&self, n: usize, until: Instant) -> HashMap<String, Instant> {
        while self.count() < n && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FirstSeen {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn user_ready(user: &MoltmateUser) -> Option<String> {
    (user.status.as_ref()?.phase? == Phase::Ready).then(|| user.name_any())
}

fn pod_ready(pod: &Pod) -> Option<String> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
        .then(|| pod.labels().get(names::LABEL_USER).cloned())?
}

/// The operator run: create `users` MoltmateUsers, `concurrency` at a time, as an admin
/// would; Ready is the operator's status, seen through a watch.
pub async fn operator_run(admin: &Client, users: usize, concurrency: usize) -> Result<Outcome, String> {
    let api: Api<MoltmateUser> = Api::all(admin.clone());
    let ready = FirstSeen::watch(api.clone(), watcher::Config::default(), user_ready).await;
    let started = Instant::now();
    let created = create_users(admin, users, concurrency).await?;
    let creates = started.elapsed();
    let seen = ready.wait_for(users, started + deadline(users)).await;
    Ok(Outcome::from_times(started, creates, &created, &seen))
}

/// Create MoltmateUsers `0..users`, `concurrency` at a time, as an admin would; when each
/// create was sent.
pub async fn create_users(
    admin: &Client,
    users: usize,
    concurrency: usize,
) -> Result<HashMap<String, Instant>, String> {
    create_users_each(admin, users, concurrency, |_| {}).await
}

/// As `create_users`, handing each user, as the API server stored it, to `created_one`.
async fn create_users_each(
    admin: &Client,
    users: usize,
    concurrency: usize,
    created_one: impl Fn(MoltmateUser),
) -> Result<HashMap<String, Instant>, String> {
    let api: Api<MoltmateUser> = Api::all(admin.clone());
    let created = Mutex::new(HashMap::new());
    let results: Vec<Result<(), String>> = stream::iter(0..users)
        .map(|i| {
            let (api, created, created_one) = (&api, &created, &created_one);
            async move {
                let user = new_user(i);
                created.lock().unwrap().insert(user.name_any(), Instant::now());
                let stored = api
                    .create(&PostParams::default(), &user)
                    .await
                    .map_err(|e| format!("create {}: {e}", user.name_any()))?;
                created_one(stored);
                Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, String>>()?;
    Ok(created.into_inner().unwrap())
}

/// The baseline run: the same MoltmateUsers, created as the operator run creates them (all
/// at once, `concurrency` at a time: a user's latency runs from its create in both runs);
/// per user, the objects the operator's pure builders make for it, written by server-side
/// apply with the operator's ordering: the namespace and its guard rails; once the quota is in
/// force, the workload and the pod. `concurrency` workers take the next job, a user's workload
/// before a new user, new users in the order they were created. Ready is the pod's Ready
/// condition, as the node stand-in writes it.
pub async fn baseline_run(admin: &Client, users: usize, concurrency: usize) -> Result<Outcome, String> {
    // As `TestEnv::spawn_operator` starts the operator; its other flags are the defaults.
    let config = ClusterConfig { storage_class: Some(STORAGE_CLASS.into()), ..ClusterConfig::default() };
    let broker = Api::<Service>::namespaced(admin.clone(), SYSTEM_NS)
        .get(&config.broker_service)
        .await
        .map_err(|e| format!("broker Service: {e}"))?;
    let broker_ip = broker.spec.and_then(|s| s.cluster_ip).ok_or("broker Service has no ClusterIP")?;
    let (quotas, quota_watch) = reflect::<ResourceQuota>(admin).await;
    let ready = FirstSeen::watch(
        Api::<Pod>::all(admin.clone()),
        watcher::Config::default().labels(&names::managed_selector()),
        pod_ready,
    )
    .await;

    let jobs = Mutex::new(Jobs {
        arrived: VecDeque::new(),
        creates_failed: false,
        users,
        waiting_quota: Vec::new(),
        workloads: VecDeque::new(),
        pods_applied: 0,
    });
    let started = Instant::now();
    let shared = Shared { client: admin, config: &config, broker_ip: &broker_ip, quotas: &quotas, jobs: &jobs };
    let creating = async {
        let created = create_users_each(admin, users, concurrency, |user| {
            jobs.lock().unwrap().arrived.push_back(user);
        })
        .await;
        jobs.lock().unwrap().creates_failed = created.is_err();
        (created, started.elapsed())
    };
    let ((created, creates), workers) =
        futures::join!(creating, futures::future::join_all((0..concurrency).map(|_| baseline_worker(&shared))));
    quota_watch.abort();
    let created = created?;
    workers.into_iter().collect::<Result<Vec<()>, String>>()?;
    let seen = ready.wait_for(users, started + deadline(users)).await;
    Ok(Outcome::from_times(started, creates, &created, &seen))
}

struct Shared<'a> {
    client: &'a Client,
    config: &'a ClusterConfig,
    broker_ip: &'a str,
    quotas: &'a Store<ResourceQuota>,
    jobs: &'a Mutex<Jobs>,
}

/// The baseline's work left: users created and not started, users waiting for their quota,
/// workloads to apply.
struct Jobs {
    arrived: VecDeque<MoltmateUser>,
    creates_failed: bool,
    users: usize,
    waiting_quota: Vec<(Instant, DesiredState)>,
    workloads: VecDeque<DesiredState>,
    pods_applied: usize,
}

enum Job {
    GuardRails(Box<MoltmateUser>),
    Workload(Box<DesiredState>),
    Wait,
    Done,
}

impl Jobs {
    fn next(&mut self, quotas: &Store<ResourceQuota>) -> Result<Job, String> {
        if self.creates_failed {
            return Err("the users could not all be created".into());
        }
        let (in_force, waiting): (Vec<_>, Vec<_>) =
            self.waiting_quota.drain(..).partition(|(_, d)| quota_in_force(quotas, &d.quota));
        self.waiting_quota = waiting;
        self.workloads.extend(in_force.into_iter().map(|(_, d)| d));
        if let Some((since, d)) = self.waiting_quota.iter().find(|(since, _)| since.elapsed() > deadline(1)) {
            return Err(format!(
                "{:?}: the ResourceQuota was not in force {:?} after it was applied",
                d.namespace.metadata.name,
                since.elapsed()
            ));
        }
        Ok(if let Some(d) = self.workloads.pop_front() {
            Job::Workload(Box::new(d))
        } else if let Some(user) = self.arrived.pop_front() {
            Job::GuardRails(Box::new(user))
        } else if self.pods_applied == self.users {
            Job::Done
        } else {
            Job::Wait
        })
    }
}

async fn baseline_worker(s: &Shared<'_>) -> Result<(), String> {
    loop {
        let job = s.jobs.lock().unwrap().next(s.quotas)?;
        match job {
            Job::GuardRails(user) => {
                let desired = guard_rails(&user, s).await?;
                s.jobs.lock().unwrap().waiting_quota.push((Instant::now(), desired));
            }
            Job::Workload(d) => {
                workload(s.client, &d).await?;
                s.jobs.lock().unwrap().pods_applied += 1;
            }
            Job::Wait => tokio::time::sleep(Duration::from_millis(5)).await,
            Job::Done => return Ok(()),
        }
    }
}

/// Build the user's objects; apply its namespace and guard rails.
async fn guard_rails(user: &MoltmateUser, s: &Shared<'_>) -> Result<DesiredState, String> {
    let profile = moltmates::profile::resolve_with(&user.spec, &s.config.profiles).map_err(|e| e.to_string())?;
    let input = BuildInput {
        profile: &profile,
        config: s.config,
        agent_token: BASELINE_AGENT_TOKEN,
        broker_ip: Some(s.broker_ip),
        node_addresses: &[],
        pull_secrets: &[],
    };
    let d = builders::build(user, &input).map_err(|e| e.to_string())?;
    apply(Api::all(s.client.clone()), &d.namespace).await?;
    apply_in(s.client, &d.network_policy).await?;
    apply_in(s.client, &d.quota).await?;
    apply_in(s.client, &d.limit_range).await?;
    Ok(d)
}

/// Everything charged to the quota, the pod last.
async fn workload(client: &Client, d: &DesiredState) -> Result<(), String> {
    apply_in(client, &d.service_account).await?;
    apply_in(client, &d.token_secret).await?;
    apply_in(client, &d.service).await?;
    apply_in(client, &d.workspace).await?;
    apply_in(client, &d.pod).await
}

/// The quota controller has taken the quota up with the desired hard limits (what the
/// operator waits for before it creates anything charged to the quota).
fn quota_in_force(quotas: &Store<ResourceQuota>, desired: &ResourceQuota) -> bool {
    let ns = desired.metadata.namespace.as_deref().unwrap_or_default();
    let live = quotas.get(&ObjectRef::new(names::RESOURCE_QUOTA).within(ns));
    let have = live.as_ref().and_then(|q| q.status.as_ref()).and_then(|s| s.hard.as_ref());
    let want = desired.spec.as_ref().and_then(|s| s.hard.as_ref());
    match (want, have) {
        (Some(want), Some(have)) => !moltmates::operator::needs_apply(want, Some(have)),
        _ => false,
    }
}

/// A watch cache of the managed objects of kind `K`; returns once listed.
async fn reflect<K>(client: &Client) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(client.clone()), watcher::Config::default().labels(&names::managed_selector()))
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    let _ = reader.wait_until_ready().await;
    (reader, task)
}

async fn apply<K>(api: Api<K>, object: &K) -> Result<(), String>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let mut value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    value["apiVersion"] = K::api_version(&()).into();
    value["kind"] = K::kind(&()).into();
    api.patch(&name, &PatchParams::apply(BASELINE_MANAGER).force(), &Patch::Apply(&value))
        .await
        .map(|_| ())
        .map_err(|e| format!("apply {} {name}: {e}", K::kind(&())))
}

async fn apply_in<K>(client: &Client, object: &K) -> Result<(), String>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + Debug + Serialize + DeserializeOwned,
{
    let ns = object.meta().namespace.clone().unwrap_or_default();
    apply(Api::namespaced(client.clone(), &ns), object).await
}
