//! Benchmark 7, real node: what a person waits for on a real node (`scripts/node`: kubelet,
//! containerd, kube-router, local-path), with the chart's operator and gateway in containers
//! and the agents in the sandbox image.
//!
//! 1. Start: `kubectl apply` of a MoltmateUser, its first message injected as soon as kubectl
//!    returns, until the agent's answer reaches the Telegram stand-in. Users one after another
//!    (a latency, not contention), each with a short `idleTimeout` so that earlier agents
//!    leave the node as the run goes on.
//! 2. Baseline: `kubectl apply` of a plain pod with the same spec (copied from the first
//!    user's agent pod: same image, probes, security context; an emptyDir for the volume, the
//!    token inline) in a namespace whose policy blocks all egress, until its Ready condition.
//!    Ready is where the agent answers its port (the kubelet's readiness probe succeeded): the
//!    nearest end point a plain pod has. The users' figures are given for both end points.
//! 3. The thresholds kubernetes-sigs/agent-sandbox publishes for a sandbox's start (p50 and
//!    p90 ≤ 1 s, p99 ≤ 5 s), as the targets of the users' start.
//! 4. Wake: each idle user (pod gone) gets a message, until the answer; one wake at a time.
//!
//! Every moment is on this machine's clock, in microseconds: the bench's own (apply, inject,
//! answer, and the pod events of its watch), and the agent's JSON log lines (process start,
//! listening, egress verdict, turn received).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use moltmates::dev::telegram::TelegramStandIn;
use serde_json::{Value, json};

use crate::gateway_load::{now_us, panic_text, write_plot};
use crate::options::Options;
use crate::report::Report;
use crate::stats::summarize;
use crate::support::real_node::ChartOnNode;
use crate::support::{TestEnv, user_manifest, wait_until};
use crate::svg;

const BENCH: &str = "real-node";
/// Telegram ids of the users: BASE + index.
const BASE: i64 = 7_000_000;
/// Where the plain pods run.
const PLAIN_NS: &str = "bench-plain";
/// kubernetes-sigs/agent-sandbox's published start thresholds, in milliseconds.
const SANDBOX_P50_MS: f64 = 1000.0;
const SANDBOX_P90_MS: f64 = 1000.0;
const SANDBOX_P99_MS: f64 = 5000.0;
/// MoltmateUser start against a plain pod's, p50 and p99.
const RATIO_TARGET: f64 = 1.2;
/// A wake's p99 (message to answer), in milliseconds.
const WAKE_P99_TARGET_MS: f64 = 1500.0;
/// How long one start or wake may take before it counts as failed.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(90);

/// When the bench's watch first saw a pod in each state (µs since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PodSeen {
    pub created_us: Option<i64>,
    pub scheduled_us: Option<i64>,
    pub running_us: Option<i64>,
    pub ready_us: Option<i64>,
}

/// What a pod's status says, as far as the timeline goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodState {
    pub scheduled: bool,
    pub running: bool,
    pub ready: bool,
}

pub fn pod_state(pod: &Pod) -> PodState {
    let Some(status) = pod.status.as_ref() else { return PodState::default() };
    let condition = |kind: &str| status.conditions.iter().flatten().any(|c| c.type_ == kind && c.status == "True");
    let running =
        status.container_statuses.iter().flatten().any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    PodState { scheduled: condition("PodScheduled"), running, ready: condition("Ready") }
}

impl PodSeen {
    /// Note `state`, seen at `at_us`: each moment is kept from its first sighting.
    pub fn note(&mut self, state: PodState, at_us: i64) {
        self.created_us.get_or_insert(at_us);
        for (yes, slot) in [
            (state.scheduled, &mut self.scheduled_us),
            (state.running, &mut self.running_us),
            (state.ready, &mut self.ready_us),
        ] {
            if yes {
                slot.get_or_insert(at_us);
            }
        }
    }
}

/// One pod as the watch saw it.
struct WatchedPod {
    namespace: String,
    name: String,
    seen: PodSeen,
}

/// Pods by uid, as the watch saw them.
#[derive(Clone, Default)]
struct PodWatch(Arc<Mutex<HashMap<String, WatchedPod>>>);

impl PodWatch {
    /// Watch every pod of the cluster until the returned task is aborted.
    fn start(client: Client) -> (PodWatch, tokio::task::JoinHandle<()>) {
        let seen = PodWatch::default();
        let pods: Api<Pod> = Api::all(client);
        let into = seen.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let pod = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => pod,
                    _ => continue,
                };
                let at = now_us();
                let key = pod.uid().unwrap_or_default();
                let mut all = into.0.lock().unwrap_or_else(|e| e.into_inner());
                let entry = all.entry(key).or_insert_with(|| WatchedPod {
                    namespace: pod.namespace().unwrap_or_default(),
                    name: pod.name_any(),
                    seen: PodSeen::default(),
                });
                entry.seen.note(pod_state(&pod), at);
            }
        });
        (seen, task)
    }

    /// The first pod `namespace`/`name` created at or after `after_us`.
    fn after(&self, namespace: &str, name: &str, after_us: i64) -> Option<PodSeen> {
        let all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.values()
            .filter(|pod| {
                pod.namespace == namespace && pod.name == name && pod.seen.created_us.is_some_and(|c| c >= after_us)
            })
            .map(|pod| pod.seen)
            .min_by_key(|seen| seen.created_us)
    }
}

/// What the agent's JSON log says about one start (µs since the epoch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct AgentMarks {
    /// Its first line: the process is up.
    pub first_line_us: Option<i64>,
    pub listening_us: Option<i64>,
    /// It found its egress open (the policy not enforced yet) and waits.
    pub egress_open_us: Option<i64>,
    /// It found it blocked after having found it open.
    pub egress_blocked_us: Option<i64>,
    /// The turn of `update_id`.
    pub turn_received_us: Option<i64>,
    pub turn_answered_us: Option<i64>,
}

/// The marks of the agent's JSON log (`logFormat: json`, one event per line, fields flattened).
pub fn agent_marks(text: &str, update_id: i64) -> AgentMarks {
    let mut marks = AgentMarks::default();
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
        let Some(at) = event["timestamp"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()) else { continue };
        let at = at.as_microsecond();
        marks.first_line_us.get_or_insert(at);
        let message = event["message"].as_str().unwrap_or_default();
        let this_turn = event["update_id"].as_i64() == Some(update_id);
        let slot = match message {
            "agent listening" => &mut marks.listening_us,
            m if m.starts_with("egress is open") => &mut marks.egress_open_us,
            m if m.starts_with("egress is blocked") => &mut marks.egress_blocked_us,
            "turn received" if this_turn => &mut marks.turn_received_us,
            "turn answered" if this_turn => &mut marks.turn_answered_us,
            _ => continue,
        };
        slot.get_or_insert(at);
    }
    marks
}

/// One start or wake: the moments of its timeline (µs since the epoch).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Timeline {
    /// `kubectl apply` started (start), or the message injected (wake).
    pub from_us: i64,
    /// kubectl returned (start only).
    pub applied_us: Option<i64>,
    pub pod: PodSeen,
    pub agent: AgentMarks,
    /// The answer reached the Telegram stand-in.
    pub answered_us: Option<i64>,
    /// What the person saw before it (a refusal, the "starting" notice).
    pub before: usize,
    pub refused: bool,
}

/// The steps of a timeline, in milliseconds, each from the previous known moment.
pub fn steps(t: &Timeline) -> Vec<(&'static str, Option<f64>)> {
    let ms = |a: Option<i64>, b: Option<i64>| Some((b? - a?) as f64 / 1000.0);
    let from = Some(t.from_us);
    vec![
        ("→ pod created", ms(from, t.pod.created_us)),
        ("pod created → scheduled", ms(t.pod.created_us, t.pod.scheduled_us)),
        ("scheduled → agent's first log line", ms(t.pod.scheduled_us, t.agent.first_line_us)),
        ("first log line → listening", ms(t.agent.first_line_us, t.agent.listening_us)),
        ("listening → Ready (watch)", ms(t.agent.listening_us, t.pod.ready_us)),
        ("Ready → turn received", ms(t.pod.ready_us, t.agent.turn_received_us)),
        ("turn received → answered", ms(t.agent.turn_received_us, t.agent.turn_answered_us)),
        ("answered → in Telegram", ms(t.agent.turn_answered_us, t.answered_us)),
        ("total", ms(from, t.answered_us)),
    ]
}

/// The p50 and p99 of each step over `timelines`, for the JSON and the log.
fn breakdown(timelines: &[Timeline]) -> Value {
    let mut out = serde_json::Map::new();
    let names: Vec<&str> = timelines.first().map(|t| steps(t).iter().map(|s| s.0).collect()).unwrap_or_default();
    for (i, name) in names.iter().enumerate() {
        let values: Vec<Duration> = timelines
            .iter()
            .filter_map(|t| steps(t)[i].1)
            .map(|ms| Duration::from_micros((ms.max(0.0) * 1000.0) as u64))
            .collect();
        let s = summarize(&values);
        out.insert(
            name.to_string(),
            json!({ "n": s.count, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms, "max_ms": s.max_ms }),
        );
    }
    Value::Object(out)
}

/// The plain pod: `template`'s spec (an agent pod as the operator made it) without what the
/// operator's namespace provides (its service account, the token Secret) and without what the
/// scheduler filled in; its workspace the claim `claim`, or an emptyDir.
pub fn plain_pod(template: &Value, namespace: &str, name: &str, token: &str, claim: Option<&str>) -> Value {
    let mut spec = template["spec"].clone();
    if let Some(spec) = spec.as_object_mut() {
        for key in ["nodeName", "serviceAccountName", "serviceAccount"] {
            spec.remove(key);
        }
    }
    for volume in spec["volumes"].as_array_mut().into_iter().flatten() {
        if volume.get("persistentVolumeClaim").is_some() {
            *volume = match claim {
                Some(claim) => {
                    json!({ "name": volume["name"].clone(), "persistentVolumeClaim": { "claimName": claim } })
                }
                None => json!({ "name": volume["name"].clone(), "emptyDir": {} }),
            };
        }
    }
    for container in spec["containers"].as_array_mut().into_iter().flatten() {
        for var in container["env"].as_array_mut().into_iter().flatten() {
            if var.get("valueFrom").is_some_and(|v| v.get("secretKeyRef").is_some()) {
                *var = json!({ "name": var["name"].clone(), "value": token });
            }
        }
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace, "labels": { "app": "bench-plain" } },
        "spec": spec,
    })
}

/// A claim like `template` (the user's workspace claim) for a plain pod: same class, size and
/// access, not bound to the user's volume.
pub fn plain_claim(template: &Value, namespace: &str, name: &str) -> Value {
    let mut spec = template["spec"].clone();
    if let Some(spec) = spec.as_object_mut() {
        spec.remove("volumeName");
    }
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
}

pub async fn run(options: &Options, report: &mut Report) {
    let n = options.real_node_users;
    eprintln!(
        "== real node: {n} users applied one at a time, {n} plain pods, {} wakes (idleTimeout {})",
        options.real_node_wakes, options.real_node_idle_timeout
    );
    match std::panic::AssertUnwindSafe(measure(options, report)).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.error(format!("real node with {n} users: {e}")),
        Err(panic) => report.error(format!("real node with {n} users: panicked: {}", panic_text(&panic))),
    }
}

/// `kubectl apply -f` of `object`, written next to the environment; (started, returned) µs.
fn kubectl_apply(env: &TestEnv, object: &Value, file: &str) -> Result<(i64, i64), String> {
    let path = env.dir.join(file);
    std::fs::write(&path, object.to_string()).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let started = now_us();
    let out = env.kubectl(&["apply", "-f", path.to_str().unwrap_or_default()]);
    let returned = now_us();
    if !out.status.success() {
        return Err(format!("kubectl apply {file}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok((started, returned))
}

/// Wait for the chat's first message containing `needle`; re-send `text` once if the person
/// is refused first (the gateway did not know them yet). Returns when it arrived (µs), how
/// many messages came before it, and whether one was a refusal.
async fn first_answer(tg: &TelegramStandIn, chat: i64, text: &str, needle: &str) -> Result<(i64, usize, bool), String> {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    let mut refused = false;
    for count in 1.. {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let all = tg
            .wait_for_messages(chat, count, left)
            .await
            .map_err(|_| format!("no answer to {chat} in {ANSWER_TIMEOUT:?}"))?;
        let at = now_us();
        let latest = &all[count - 1].rendered;
        if latest.contains(needle) {
            return Ok((at, count - 1, refused));
        }
        if !refused && latest != moltmates::gateway::commands::STARTING {
            refused = true;
            tg.inject_text(chat, text).map_err(|e| format!("inject: {e}"))?;
        }
    }
    unreachable!("the loop returns or fails")
}

/// The agent's log in `namespace` (the pod `agent`), now.
fn agent_log(env: &TestEnv, namespace: &str) -> String {
    String::from_utf8_lossy(&env.kubectl(&["logs", "-n", namespace, "agent"]).stdout).into_owned()
}

async fn measure(options: &Options, report: &mut Report) -> Result<(), String> {
    let n = options.real_node_users;
    let env = TestEnv::up_real_node("bench-real-node");
    let chart = ChartOnNode::install(&env, &[]).await;
    let client = env.admin().await;
    let (watch, watch_task) = PodWatch::start(client.clone());
    let users: Vec<(String, i64)> = (0..n).map(|i| (format!("rn-{i:03}"), BASE + i as i64)).collect();
    let spec = json!({ "profile": "public", "idleTimeout": options.real_node_idle_timeout });

    // 1. Start: apply, message, answer; one user at a time.
    let mut starts = Vec::new();
    let mut template = None;
    for (name, id) in &users {
        let namespace = format!("moltmate-{name}");
        let text = format!("hello {name}");
        let (from_us, applied_us) =
            kubectl_apply(&env, &user_manifest(name, *id, spec.clone()), &format!("{name}.json"))?;
        let injected = chart.tg.inject_text(*id, &text).map_err(|e| format!("inject: {e}"))?;
        let (answered_us, before, refused) = first_answer(&chart.tg, *id, &text, &format!("You said: {text}")).await?;
        let agent = agent_marks(&agent_log(&env, &namespace), injected.update_id);
        if template.is_none() {
            let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
            let pod = pods.get("agent").await.map_err(|e| format!("{namespace}/agent: {e}"))?;
            let claim = claims.get("workspace").await.map_err(|e| format!("{namespace}/workspace: {e}"))?;
            template =
                Some((serde_json::to_value(pod).unwrap_or_default(), serde_json::to_value(claim).unwrap_or_default()));
        }
        let pod = watch.after(&namespace, "agent", from_us).unwrap_or_default();
        let t = Timeline {
            from_us,
            applied_us: Some(applied_us),
            pod,
            agent,
            answered_us: Some(answered_us),
            before,
            refused,
        };
        eprintln!(
            "   {name}: answered {:.0} ms after apply (Ready at {:.0} ms)",
            (answered_us - from_us) as f64 / 1000.0,
            pod.ready_us.map_or(f64::NAN, |r| (r - from_us) as f64 / 1000.0)
        );
        starts.push(t);
    }

    // 2. The baselines: plain pods of the same spec, one at a time; with an emptyDir, and with
    // a claim like the user's (the same storage class provisions it).
    let (template, claim_template) = template.ok_or("no user was started")?;
    kubectl_apply(&env, &plain_namespace(), "plain-namespace.json")?;
    kubectl_apply(&env, &deny_all_egress(), "plain-policy.json")?;
    let mut plain = Vec::new();
    let mut plain_volume = Vec::new();
    for (with_claim, into) in [(false, &mut plain), (true, &mut plain_volume)] {
        for i in 0..n {
            let name = format!("plain-{}{i:03}", if with_claim { "claim-" } else { "" });
            let claim = format!("{name}-workspace");
            let pod = plain_pod(
                &template,
                PLAIN_NS,
                &name,
                "bench-plain-token-0123456789abcdef",
                with_claim.then_some(claim.as_str()),
            );
            let object = if with_claim {
                json!({ "apiVersion": "v1", "kind": "List", "items": [plain_claim(&claim_template, PLAIN_NS, &claim), pod] })
            } else {
                pod
            };
            let (from_us, _) = kubectl_apply(&env, &object, &format!("{name}.json"))?;
            let ready = wait_until(&format!("{PLAIN_NS}/{name} Ready"), ANSWER_TIMEOUT, || async {
                watch.after(PLAIN_NS, &name, from_us).and_then(|seen| seen.ready_us)
            })
            .await;
            eprintln!("   {name}: Ready {:.0} ms after apply", (ready - from_us) as f64 / 1000.0);
            into.push(Duration::from_micros((ready - from_us).max(0) as u64));
            // Gone before the next: the node runs one plain pod at a time.
            let pods: Api<Pod> = Api::namespaced(client.clone(), PLAIN_NS);
            let _ = pods.delete(&name, &DeleteParams::default()).await;
            if with_claim {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), PLAIN_NS);
                let _ = claims.delete(&claim, &DeleteParams::default()).await;
            }
        }
    }

    // 4. Wakes: each user once idle (its pod gone), one at a time.
    let mut wakes = Vec::new();
    let idle_wait = options.real_node_idle() + Duration::from_secs(120);
    for k in 0..options.real_node_wakes {
        let (name, id) = &users[k % n];
        let namespace = format!("moltmate-{name}");
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        wait_until(&format!("{namespace}/agent gone"), idle_wait, || async {
            matches!(pods.get_opt("agent").await, Ok(None)).then_some(())
        })
        .await;
        let text = format!("wake {k}");
        let sent_before = chart.tg.sent_to(*id).len();
        let from_us = now_us();
        let injected = chart.tg.inject_text(*id, &text).map_err(|e| format!("inject: {e}"))?;
        let answered_us = wake_answer(&chart.tg, *id, sent_before, &format!("You said: {text}")).await?;
        let agent = agent_marks(&agent_log(&env, &namespace), injected.update_id);
        let pod = watch.after(&namespace, "agent", from_us).unwrap_or_default();
        let t = Timeline {
            from_us,
            applied_us: None,
            pod,
            agent,
            answered_us: Some(answered_us),
            before: 0,
            refused: false,
        };
        eprintln!("   wake {k} ({name}): answered in {:.0} ms", (answered_us - from_us) as f64 / 1000.0);
        wakes.push(t);
    }
    watch_task.abort();

    summarize_all(options, report, &starts, &plain, &plain_volume, &wakes);
    drop(chart);
    Ok(())
}

/// A wake's answer: the first message after the `sent_before` the chat had, containing `needle`.
async fn wake_answer(tg: &TelegramStandIn, chat: i64, sent_before: usize, needle: &str) -> Result<i64, String> {
    let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
    for count in sent_before + 1.. {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let all = tg
            .wait_for_messages(chat, count, left)
            .await
            .map_err(|_| format!("no answer to {chat} in {ANSWER_TIMEOUT:?}"))?;
        if all[count - 1].rendered.contains(needle) {
            return Ok(now_us());
        }
    }
    unreachable!("the loop returns or fails")
}

fn plain_namespace() -> Value {
    json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": PLAIN_NS,
        "labels": { "pod-security.kubernetes.io/enforce": "restricted" } } })
}

/// No egress at all: the agent finds it blocked and turns Ready, as in a user's namespace.
fn deny_all_egress() -> Value {
    json!({ "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "deny-egress", "namespace": PLAIN_NS },
        "spec": { "podSelector": {}, "policyTypes": ["Egress"] } })
}

fn durations(timelines: &[Timeline], end: impl Fn(&Timeline) -> Option<i64>) -> Vec<Duration> {
    timelines.iter().filter_map(|t| Some(Duration::from_micros((end(t)? - t.from_us).max(0) as u64))).collect()
}

fn summarize_all(
    options: &Options,
    report: &mut Report,
    starts: &[Timeline],
    plain: &[Duration],
    plain_volume: &[Duration],
    wakes: &[Timeline],
) {
    let n = options.real_node_users;
    let answer = summarize(&durations(starts, |t| t.answered_us));
    let ready = summarize(&durations(starts, |t| t.pod.ready_us));
    let kubectl = summarize(&durations(starts, |t| t.applied_us));
    let base = summarize(plain);
    let base_volume = summarize(plain_volume);
    let wake = summarize(&durations(wakes, |t| t.answered_us));
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::INFINITY };

    report.target(BENCH, n, "start: apply → first answer p50 (sandbox threshold)", answer.p50_ms, "ms", SANDBOX_P50_MS);
    report.target(BENCH, n, "start: apply → first answer p90 (sandbox threshold)", answer.p90_ms, "ms", SANDBOX_P90_MS);
    report.target(BENCH, n, "start: apply → first answer p99 (sandbox threshold)", answer.p99_ms, "ms", SANDBOX_P99_MS);
    report.figure(BENCH, n, "start: apply → agent pod Ready p50", ready.p50_ms, "ms");
    report.figure(BENCH, n, "start: apply → agent pod Ready p99", ready.p99_ms, "ms");
    report.figure(BENCH, n, "start: kubectl apply itself p50", kubectl.p50_ms, "ms");
    report.figure(BENCH, n, "plain pod: apply → Ready p50", base.p50_ms, "ms");
    report.figure(BENCH, n, "plain pod: apply → Ready p99", base.p99_ms, "ms");
    report.figure(BENCH, n, "plain pod + claim: apply → Ready p50", base_volume.p50_ms, "ms");
    report.figure(BENCH, n, "plain pod + claim: apply → Ready p99", base_volume.p99_ms, "ms");
    report.target(
        BENCH,
        n,
        "ratio first answer / plain Ready p50",
        ratio(answer.p50_ms, base.p50_ms),
        "x",
        RATIO_TARGET,
    );
    report.target(
        BENCH,
        n,
        "ratio first answer / plain Ready p99",
        ratio(answer.p99_ms, base.p99_ms),
        "x",
        RATIO_TARGET,
    );
    report.target(
        BENCH,
        n,
        "ratio first answer / plain+claim Ready p50",
        ratio(answer.p50_ms, base_volume.p50_ms),
        "x",
        RATIO_TARGET,
    );
    report.target(
        BENCH,
        n,
        "ratio first answer / plain+claim Ready p99",
        ratio(answer.p99_ms, base_volume.p99_ms),
        "x",
        RATIO_TARGET,
    );
    report.figure(BENCH, n, "ratio agent Ready / plain+claim Ready p50", ratio(ready.p50_ms, base_volume.p50_ms), "x");
    let refused = starts.iter().filter(|t| t.refused).count();
    report.target(BENCH, n, "starts whose first message was refused", refused as f64, "", 0.0);
    report.figure(BENCH, wakes.len(), "wake: message → answer p50", wake.p50_ms, "ms");
    report.target(BENCH, wakes.len(), "wake: message → answer p99", wake.p99_ms, "ms", WAKE_P99_TARGET_MS);

    let start_steps = breakdown(starts);
    let wake_steps = breakdown(wakes);
    eprintln!("   start breakdown: {start_steps}");
    eprintln!("   wake breakdown: {wake_steps}");
    report.section(BENCH, n, json!({
        "users": n,
        "wakes": wakes.len(),
        "idle_timeout": options.real_node_idle_timeout,
        "order": "one at a time: each user applied once the previous one answered; each plain pod once the previous was Ready; each wake once the previous answered",
        "start_answer_ms": answer,
        "start_ready_ms": ready,
        "kubectl_apply_ms": kubectl,
        "plain_ready_ms": base,
        "plain_with_claim_ready_ms": base_volume,
        "wake_answer_ms": wake,
        "start_steps": start_steps,
        "wake_steps": wake_steps,
        "starts": starts,
        "wake_timelines": wakes,
        "method": "start = kubectl apply started → the answer in the Telegram stand-in (the message injected when kubectl returned); plain = kubectl apply started → Ready seen by the bench's pod watch (with an emptyDir, or with a claim like the user's in the same apply); wake = message injected → answer",
    }));
    let ms = |v: Vec<Duration>| v.iter().map(|d| d.as_secs_f64() * 1000.0).collect::<Vec<f64>>();
    let (a, r, p, v, w) = (
        ms(durations(starts, |t| t.answered_us)),
        ms(durations(starts, |t| t.pod.ready_us)),
        ms(plain.to_vec()),
        ms(plain_volume.to_vec()),
        ms(durations(wakes, |t| t.answered_us)),
    );
    let plot = svg::cdf(
        &format!("Real node: start and wake ({n} users)"),
        "milliseconds",
        &[
            svg::Series { label: format!("MoltmateUser apply → answer (p50 {:.0} ms)", answer.p50_ms), values: &a },
            svg::Series { label: "MoltmateUser apply → agent Ready".into(), values: &r },
            svg::Series { label: format!("plain pod apply → Ready (p50 {:.0} ms)", base.p50_ms), values: &p },
            svg::Series {
                label: format!("plain pod + claim → Ready (p50 {:.0} ms)", base_volume.p50_ms), values: &v
            },
            svg::Series { label: format!("wake message → answer (p99 {:.0} ms)", wake.p99_ms), values: &w },
        ],
    );
    write_plot(options, report, &format!("real-node-{n}.svg"), &plot);
}

pub fn self_test() {
    // The JSON log lines of an agent's start and one turn.
    let log = [
        r#"{"timestamp":"2026-12-04T04:00:00.000100Z","level":"INFO","message":"starting"}"#,
        r#"{"timestamp":"2026-12-04T04:00:00.000200Z","level":"INFO","message":"agent listening","user":"a"}"#,
        r#"{"timestamp":"2026-12-04T04:00:00.000300Z","level":"ERROR","message":"egress is open: this pod reached"}"#,
        r#"{"timestamp":"2026-12-04T04:00:00.000400Z","level":"INFO","message":"egress is blocked now; serving"}"#,
        r#"{"timestamp":"2026-12-04T04:00:01.000000Z","level":"INFO","message":"turn received","update_id":6}"#,
        r#"{"timestamp":"2026-12-04T04:00:02.000000Z","level":"INFO","message":"turn received","update_id":7}"#,
        r#"{"timestamp":"2026-12-04T04:00:02.500000Z","level":"INFO","message":"turn answered","update_id":7}"#,
        "not json",
    ]
    .join("\n");
    let m = agent_marks(&log, 7);
    let base = "2026-12-04T04:00:00Z".parse::<jiff::Timestamp>().unwrap().as_microsecond();
    assert_eq!(
        [
            m.first_line_us,
            m.listening_us,
            m.egress_open_us,
            m.egress_blocked_us,
            m.turn_received_us,
            m.turn_answered_us
        ],
        [100, 200, 300, 400, 2_000_000, 2_500_000].map(|us| Some(base + us))
    );

    let mut seen = PodSeen::default();
    seen.note(PodState::default(), 10);
    seen.note(PodState { scheduled: true, ..PodState::default() }, 20);
    seen.note(PodState { scheduled: true, running: true, ready: true }, 30);
    seen.note(PodState { scheduled: true, running: true, ready: true }, 40);
    assert_eq!(
        seen,
        PodSeen { created_us: Some(10), scheduled_us: Some(20), running_us: Some(30), ready_us: Some(30) }
    );

    let t = Timeline { from_us: 0, pod: seen, answered_us: Some(50), ..Timeline::default() };
    let s = steps(&t);
    assert_eq!(s[0], ("→ pod created", Some(0.01)));
    assert_eq!(s.last().copied(), Some(("total", Some(0.05))));
    assert_eq!(s[2].1, None, "no agent log: no step");

    let template = json!({ "spec": {
        "nodeName": "n", "serviceAccountName": "moltmate-agent",
        "volumes": [{ "name": "workspace", "persistentVolumeClaim": { "claimName": "workspace" } }, { "name": "tmp", "emptyDir": {} }],
        "containers": [{ "name": "agent", "env": [
            { "name": "MOLTMATE_USER", "value": "a" },
            { "name": "MOLTMATE_AGENT_TOKEN", "valueFrom": { "secretKeyRef": { "name": "t", "key": "k" } } },
        ] }],
    } });
    let pod = plain_pod(&template, "ns", "p", "tok", None);
    assert_eq!(pod["metadata"]["namespace"], "ns");
    assert!(pod["spec"].get("nodeName").is_none() && pod["spec"].get("serviceAccountName").is_none());
    assert_eq!(pod["spec"]["volumes"][0], json!({ "name": "workspace", "emptyDir": {} }));
    assert_eq!(pod["spec"]["containers"][0]["env"][1], json!({ "name": "MOLTMATE_AGENT_TOKEN", "value": "tok" }));
    assert_eq!(pod["spec"]["containers"][0]["env"][0]["value"], "a");
    let with_claim = plain_pod(&template, "ns", "p", "tok", Some("p-workspace"));
    assert_eq!(with_claim["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"], "p-workspace");
    let claim = plain_claim(
        &json!({ "metadata": { "name": "workspace", "uid": "u" }, "spec": { "storageClassName": "local-path", "volumeName": "pv-1", "accessModes": ["ReadWriteOnce"] } }),
        "ns",
        "c",
    );
    assert_eq!(claim["metadata"], json!({ "name": "c", "namespace": "ns" }));
    assert_eq!(
        (claim["spec"]["storageClassName"].as_str(), claim["spec"].get("volumeName")),
        (Some("local-path"), None)
    );

    let mut p = Pod::default();
    assert_eq!(pod_state(&p), PodState::default());
    p.status = Some(
        serde_json::from_value(json!({
            "conditions": [{ "type": "PodScheduled", "status": "True" }, { "type": "Ready", "status": "False" }],
            "containerStatuses": [{ "name": "agent", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "running": { "startedAt": "2026-12-04T04:00:00Z" } } }],
        }))
        .unwrap(),
    );
    assert_eq!(pod_state(&p), PodState { scheduled: true, running: true, ready: false });
}
