//! Chaos 1: the operator SIGKILLed at random moments while N users provision.
//!
//! A fresh control plane with node stand-ins for N pods. Before anything starts, a watch
//! notes every PersistentVolumeClaim it sees (uid at first sighting, deletions), and the
//! audit log's current end is kept. Then the operator starts, N MoltmateUsers are created at
//! once, and the operator is killed `--chaos-kills` times, each time after a random life
//! (`chaos::lifetimes`), a fresh one started at once. After the last kill the fresh operator
//! runs on. Checked: every user Ready by the deadline (time from the last kill); once the
//! operator is quiet, exactly one of each object per user namespace and nothing that belongs
//! to no user (`census`); no request of anyone deleting a claim or a user namespace in the
//! audit log, and every claim's uid unchanged since its first sighting.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{
    LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, ObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use moltmates::MoltmateUser;
use moltmates::crd::Phase;
use moltmates::names;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::census::{self, Census, Object, Sighting, UserRef};
use crate::chaos::{lifetimes, secs};
use crate::cluster::{Cluster, wait_quiet};
use crate::gateway_load::now_us;
use crate::options::Options;
use crate::provisioning;
use crate::report::Report;
use crate::support::{OPERATOR_USER, SYSTEM_NS};
use crate::{audit, cpu};

const RUN: &str = "chaos-operator";

/// One kill.
#[derive(Debug, Clone, serde::Serialize)]
struct Kill {
    /// Since the first operator started.
    at_seconds: f64,
    /// How long this operator ran.
    lived_seconds: f64,
    /// Users Ready when it was killed.
    users_ready: usize,
    /// Still running when killed (false: it had exited by itself).
    was_running: bool,
    #[serde(skip)]
    at_us: i64,
}

pub async fn run(options: &Options, report: &mut Report) -> Result<(), String> {
    let c = &options.chaos;
    let n = c.users;
    let lives = lifetimes(c.seed, RUN, c.kills, c.kill_gap);
    eprintln!(
        "== chaos-operator: {n} users, {} SIGKILLs of the operator (lives {:.1}–{:.1}s)",
        c.kills,
        secs(c.kill_gap / 10),
        secs(c.kill_gap)
    );
    let run_started = Instant::now();
    let mut cluster = Cluster::up(&format!("chaos-op-{n}"), n).await;
    let audit_log = cluster.env.audit_log();
    let audit_start = audit::offset(&audit_log);
    let claims = ClaimWatch::start(&cluster.admin).await;
    let users = UserCache::start(&cluster.admin).await;
    let meter = cpu::Meter::start(cluster.dir());

    let started = Instant::now();
    cluster.spawn_operator(&[]);
    let admin = cluster.admin.clone();
    let (created, kills) = tokio::join!(
        provisioning::create_users(&admin, n, options.concurrency),
        kill_loop(&mut cluster, &lives, &users, started)
    );
    created?;
    let last_kill = started + Duration::from_secs_f64(kills.last().map_or(0.0, |k| k.at_seconds));
    let last_kill_us = kills.last().map_or(0, |k| k.at_us);
    let ready_at_last_kill = kills.last().map_or(0, |k| k.users_ready);

    // After the last kill, the fresh operator runs on.
    let deadline = c.operator_deadline();
    let fresh_ready = cluster.wait_operator_ready(Duration::from_secs(120)).await.map(|()| last_kill.elapsed());
    let timeline = users.wait_all_ready(n, last_kill, deadline).await;
    let not_ready = n - users.ready();
    let converged_after = (not_ready == 0).then(|| timeline.last().map_or(0.0, |(t, _)| *t));
    eprintln!(
        "   {} of {n} users Ready {}",
        n - not_ready,
        converged_after
            .map_or(format!("NOT converged within {deadline:?}"), |d| format!("{d:.1}s after the last kill"))
    );
    let settle = wait_quiet(&audit_log, OPERATOR_USER, Duration::from_secs(3), Duration::from_secs(120)).await;
    let cpu = meter.read();

    // What exists now, and what happened to the claims; the operator's failed writes.
    let census = take_census(&cluster.admin).await?;
    let entries = audit::entries_after(&audit_log, audit_start);
    let requests = census::pvc_requests(&entries, names::NAMESPACE_PREFIX);
    let last_write_after = audit::last_write_at(&entries, OPERATOR_USER)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map(|t| (t.as_microsecond() - last_kill_us) as f64 / 1e6);
    let interrupted = interrupted_writes(&entries, OPERATOR_USER);
    let refused =
        quota_refusals(&std::fs::read_to_string(cluster.dir().join("logs").join("operator.log")).unwrap_or_default());
    let uids = census::uid_check(&claims.sightings());
    let exited_early = kills.iter().filter(|k| !k.was_running).count();
    eprintln!(
        "   census: {} duplicates, {} missing, {} orphans; claims: {} seen, {} delete requests, {} uid changes",
        census.duplicate_count(),
        census.missing.len(),
        census.orphans.len(),
        uids.claims,
        requests.deletes.len(),
        uids.changed.len()
    );

    report.figure(RUN, n, "operator SIGKILLs", kills.len() as f64, "");
    report.figure(
        RUN,
        n,
        "kills while users were still provisioning",
        kills.iter().filter(|k| k.users_ready < n).count() as f64,
        "",
    );
    report.figure(RUN, n, "users Ready at the last kill", ready_at_last_kill as f64, "");
    report.target(
        RUN,
        n,
        &format!("users not Ready {}s after the last kill", deadline.as_secs()),
        not_ready as f64,
        "",
        0.0,
    );
    if let Some(after) = converged_after {
        report.figure(RUN, n, "all Ready after the last kill", after, "s");
    }
    // (Negative in the JSON when the operator wrote nothing after the last kill.)
    if let Some(after) = last_write_after.filter(|a| *a > 0.0) {
        report.figure(RUN, n, "operator's last write after the last kill", after, "s");
    }
    report.figure(
        RUN,
        n,
        "operator writes cut off by a kill (HTTP 500)",
        interrupted.values().sum::<usize>() as f64,
        "",
    );
    report.figure(RUN, n, "operator writes refused: exceeded quota", refused.values().sum::<usize>() as f64, "");
    report.target(RUN, n, "duplicate objects", census.duplicate_count() as f64, "", 0.0);
    report.target(RUN, n, "missing objects", census.missing.len() as f64, "", 0.0);
    report.target(RUN, n, "orphaned objects", census.orphans.len() as f64, "", 0.0);
    report.target(RUN, n, "PVC delete requests (audit log)", requests.deletes.len() as f64, "", 0.0);
    report.target(
        RUN,
        n,
        "user namespace delete requests (audit log)",
        requests.namespace_deletes.len() as f64,
        "",
        0.0,
    );
    report.target(RUN, n, "PVC uid changes since first sighting", uids.changed.len() as f64, "", 0.0);
    report.target(RUN, n, "operator exits before its kill", exited_early as f64, "", 0.0);
    if let Err(e) = &fresh_ready {
        report.note(format!("{RUN}: the operator started after the last kill: {e}"));
    }
    if not_ready > 0 && !refused.is_empty() {
        report.note(format!(
            "{RUN}: {not_ready} users not Ready {}s after the last kill. A create cut off by a kill is charged to the namespace's \
             ResourceQuota by admission but never stored (HTTP 500 in the audit log: {interrupted:?}); the charge stays until \
             kube-controller-manager recalculates the quota (its full resync, 5 min by default), and until then the operator's \
             applies of that object are refused as exceeding the quota ({refused:?} in the operator log), retried with its backoff \
             (up to 5 min)",
            deadline.as_secs()
        ));
    }
    if let Err(e) = &settle {
        report.note(format!("{RUN}: census taken while the operator still wrote: {e}"));
    }
    report.note_if(cpu::Meter::busy_note(&cpu, &format!("{RUN} at {n} users")));
    report.section(RUN, n, json!({
        "seed": options.chaos.seed,
        "users": n,
        "kills": kills,
        "longest_life_seconds": secs(c.kill_gap),
        "fresh_operator_ready_after_last_kill_seconds": fresh_ready.ok().map(secs),
        "converged": not_ready == 0,
        "all_ready_after_last_kill_seconds": converged_after,
        "ready_after_last_kill": timeline,
        "last_write_after_last_kill_seconds": last_write_after,
        "deadline_seconds": deadline.as_secs(),
        "not_ready": not_ready,
        "not_ready_users": users.not_ready(20),
        "operator_writes_cut_off_by_a_kill": interrupted,
        "operator_writes_refused_exceeded_quota": refused,
        "census": census.listed(),
        "pvc_requests": { "creates": requests.creates, "deletes": requests.deletes, "namespace_deletes": requests.namespace_deletes },
        "pvc_uids": uids,
        "cpu": cpu,
        "run_seconds": secs(run_started.elapsed()),
    }));
    cluster.stop_operator();
    Ok(())
}

/// Kill the running operator after each of `lives`, starting a fresh one after each kill.
async fn kill_loop(cluster: &mut Cluster, lives: &[Duration], users: &UserCache, started: Instant) -> Vec<Kill> {
    let mut kills = Vec::with_capacity(lives.len());
    let mut born = started;
    for (i, life) in lives.iter().enumerate() {
        tokio::time::sleep_until((born + *life).into()).await;
        let users_ready = users.ready();
        let was_running = cluster.kill_operator();
        let kill = Kill {
            at_seconds: secs(started.elapsed()),
            lived_seconds: secs(born.elapsed()),
            users_ready,
            was_running,
            at_us: now_us(),
        };
        eprintln!(
            "   kill {}/{}: at {:.1}s, lived {:.2}s, {users_ready} users Ready{}",
            i + 1,
            lives.len(),
            kill.at_seconds,
            kill.lived_seconds,
            if was_running { "" } else { " (it had exited by itself)" }
        );
        kills.push(kill);
        cluster.spawn_operator(&[]);
        born = Instant::now();
    }
    kills
}

/// MoltmateUsers as a watch keeps them, for counting Ready ones at any moment.
struct UserCache {
    store: Store<MoltmateUser>,
    task: tokio::task::JoinHandle<()>,
}

impl UserCache {
    async fn start(admin: &Client) -> UserCache {
        let (store, writer) = reflector::store();
        let stream = watcher(Api::<MoltmateUser>::all(admin.clone()), watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects();
        let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
        let _ = store.wait_until_ready().await;
        UserCache { store, task }
    }

    fn ready(&self) -> usize {
        self.store.state().iter().filter(|u| u.status.as_ref().and_then(|s| s.phase) == Some(Phase::Ready)).count()
    }

    /// Wait until all `n` are Ready, at most `deadline` after `since`; every change of the
    /// Ready count meanwhile, as (seconds since `since`, count).
    async fn wait_all_ready(&self, n: usize, since: Instant, deadline: Duration) -> Vec<(f64, usize)> {
        let mut timeline = vec![(secs(since.elapsed()), self.ready())];
        while since.elapsed() < deadline && timeline.last().is_some_and(|(_, ready)| *ready < n) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let ready = self.ready();
            if timeline.last().is_some_and(|(_, last)| *last != ready) {
                timeline.push((secs(since.elapsed()), ready));
            }
        }
        timeline
    }

    /// Up to `max` users not Ready, with their phase and message.
    fn not_ready(&self, max: usize) -> Vec<String> {
        let mut out: Vec<String> = self
            .store
            .state()
            .iter()
            .filter(|u| u.status.as_ref().and_then(|s| s.phase) != Some(Phase::Ready))
            .map(|u| {
                let status = u.status.clone().unwrap_or_default();
                let phase = status.phase.map_or("no phase", |p| p.as_str());
                let ready = status.conditions.iter().find(|c| c.type_ == "Ready");
                let why: String = ready
                    .map(|c| format!(" ({}): {}", c.reason, c.message))
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect();
                format!("{}: {phase}{why}", u.name_any())
            })
            .collect();
        out.sort();
        out.truncate(max);
        out
    }
}

impl Drop for UserCache {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every PersistentVolumeClaim event a watch delivers, from before the first is made.
struct ClaimWatch {
    sightings: Arc<Mutex<Vec<Sighting>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ClaimWatch {
    async fn start(admin: &Client) -> ClaimWatch {
        let sightings = Arc::new(Mutex::new(Vec::new()));
        let (listed_tx, listed) = tokio::sync::oneshot::channel();
        let task = tokio::spawn({
            let (sightings, api) = (sightings.clone(), Api::<PersistentVolumeClaim>::all(admin.clone()));
            async move {
                let mut listed_tx = Some(listed_tx);
                let mut events = watcher(api, watcher::Config::default()).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    let (claim, deleted) = match event {
                        Ok(watcher::Event::Apply(c) | watcher::Event::InitApply(c)) => (c, false),
                        Ok(watcher::Event::Delete(c)) => (c, true),
                        Ok(watcher::Event::InitDone) => {
                            if let Some(tx) = listed_tx.take() {
                                let _ = tx.send(());
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    let key = format!("{}/{}", claim.namespace().unwrap_or_default(), claim.name_any());
                    let uid = claim.uid().unwrap_or_default();
                    sightings.lock().unwrap_or_else(|e| e.into_inner()).push(Sighting { key, uid, deleted });
                }
            }
        });
        let _ = listed.await;
        ClaimWatch { sightings, task }
    }

    fn sightings(&self) -> Vec<Sighting> {
        self.sightings.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ClaimWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Writes by `username` that ended in HTTP 500 (cut off: the client went away mid-request),
/// by `verb resource`.
pub fn interrupted_writes(entries: &[serde_json::Value], username: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in entries.iter().filter(|e| {
        e["stage"] == "ResponseComplete" && e["user"]["username"] == username && e["responseStatus"]["code"] == 500
    }) {
        let verb = e["verb"].as_str().unwrap_or_default();
        if ["create", "update", "patch", "delete"].contains(&verb) {
            *out.entry(format!("{verb} {}", e["objectRef"]["resource"].as_str().unwrap_or_default())).or_default() += 1;
        }
    }
    out
}

/// Applies the operator logged as refused by a ResourceQuota, by resource
/// (`ApiError: pods "agent" is forbidden: exceeded quota: ...`).
pub fn quota_refusals(log: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("is forbidden: exceeded quota")) {
        if let Some(resource) = line.split("ApiError: ").nth(1).and_then(|rest| rest.split_whitespace().next()) {
            *out.entry(resource.to_string()).or_default() += 1;
        }
    }
    out
}

pub fn self_test() {
    let e = |user: &str, verb: &str, resource: &str, code: i64| json!({ "stage": "ResponseComplete", "user": { "username": user }, "verb": verb, "objectRef": { "resource": resource }, "responseStatus": { "code": code } });
    let entries = [
        e("op", "patch", "pods", 500),
        e("op", "patch", "pods", 500),
        e("op", "get", "pods", 500),
        e("op", "patch", "services", 201),
        e("x", "patch", "pods", 500),
    ];
    assert_eq!(interrupted_writes(&entries, "op"), BTreeMap::from([("patch pods".to_string(), 2)]));
    let log = "t WARN reconcile failed user=a error=finalizer: failed to apply object: Kubernetes API: ApiError: pods \"agent\" is forbidden: exceeded quota: moltmate-quota, requested: x\n\
               t WARN reconcile failed user=b error=finalizer: failed to apply object: Kubernetes API: ApiError: services \"agent\" is forbidden: exceeded quota: q\n\
               t WARN reconcile failed user=b error=other\n";
    assert_eq!(quota_refusals(log), BTreeMap::from([("pods".to_string(), 1), ("services".to_string(), 1)]));
}

/// Every user, and every object in the user namespaces or labelled as the operator's.
async fn take_census(admin: &Client) -> Result<Census, String> {
    let list_users = Api::<MoltmateUser>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing MoltmateUsers: {e}"))?;
    let users: Vec<UserRef> =
        list_users.items.iter().map(|u| UserRef { name: u.name_any(), uid: u.uid().unwrap_or_default() }).collect();
    let mut objects = Vec::new();
    let namespaces = Api::<Namespace>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Namespaces: {e}"))?;
    for ns in &namespaces.items {
        let name = ns.name_any();
        push(&mut objects, "Namespace", &name, ns.meta(), None);
    }
    listed::<ServiceAccount>(admin, "ServiceAccount", &mut objects).await?;
    listed::<NetworkPolicy>(admin, "NetworkPolicy", &mut objects).await?;
    listed::<ResourceQuota>(admin, "ResourceQuota", &mut objects).await?;
    listed::<LimitRange>(admin, "LimitRange", &mut objects).await?;
    listed::<Service>(admin, "Service", &mut objects).await?;
    listed::<PersistentVolumeClaim>(admin, "PersistentVolumeClaim", &mut objects).await?;
    listed::<Pod>(admin, "Pod", &mut objects).await?;
    let secrets = Api::<Secret>::all(admin.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing Secrets: {e}"))?;
    for s in &secrets.items {
        push(&mut objects, "Secret", &s.namespace().unwrap_or_default(), s.meta(), s.type_.clone());
    }
    Ok(census::census(&users, &objects, |u| format!("{}{u}", names::NAMESPACE_PREFIX)))
}

async fn listed<K>(admin: &Client, kind: &'static str, into: &mut Vec<Object>) -> Result<(), String>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + std::fmt::Debug + DeserializeOwned,
{
    let list =
        Api::<K>::all(admin.clone()).list(&ListParams::default()).await.map_err(|e| format!("listing {kind}s: {e}"))?;
    for o in &list.items {
        push(into, kind, &o.meta().namespace.clone().unwrap_or_default(), o.meta(), None);
    }
    Ok(())
}

/// Keep an object if it is in a user namespace or labelled as the operator's.
fn push(into: &mut Vec<Object>, kind: &'static str, namespace: &str, meta: &ObjectMeta, secret_type: Option<String>) {
    let labels = meta.labels.clone().unwrap_or_default();
    let managed = labels.get(names::LABEL_MANAGED_BY).is_some_and(|v| v == names::MANAGED_BY);
    let user_namespace = namespace.starts_with(names::NAMESPACE_PREFIX) && namespace != SYSTEM_NS;
    if !managed && !user_namespace {
        return;
    }
    into.push(Object {
        kind,
        namespace: namespace.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        user_label: labels.get(names::LABEL_USER).cloned(),
        owner_uids: meta.owner_references.iter().flatten().map(|r| r.uid.clone()).collect(),
        secret_type,
    });
}
