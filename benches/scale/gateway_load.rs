//! Benchmark 4, gateway load: the Telegram stand-in injects messages for many users at a fixed
//! rate; real agents (node stand-in with `--run-agents`) answer at once through the LLM
//! stand-in. Per message: routing overhead = (gateway receives the update → gateway sends
//! `sendMessage`) − (the agent's own turn); lost, duplicated and misrouted answers.
//!
//! Where the times come from (all wall-clock microseconds on this one machine):
//! - "gateway receives": a recording proxy between the gateway and the Telegram stand-in
//!   stamps each `getUpdates` answer as it hands it on, per `update_id`;
//! - "sendMessage": the same proxy stamps each `sendMessage` as it arrives (before it forwards
//!   it), with its chat and text; each message carries a tag that the agent echoes;
//! - "the agent's own time": the agent's log, `turn received` → `turn answered` for that
//!   `update_id` (microsecond timestamps; its `took_ms` is whole milliseconds). What the agent
//!   does before logging `turn received` (reading the HTTP request) counts as overhead, so
//!   the figure errs high, never low. The agent's LLM call goes through the gateway's broker:
//!   that time is inside the agent's turn and so not in the routing overhead.
//!
//! The proxy's own forwarding is outside the measured interval (it stamps on arrival).
//! `Stack`, the stand-ins, the proxy and the log parsing are shared with `wake`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use kube::Client;
use kube::api::{Api, ListParams};
use moltmates::dev::llm::LlmStandIn;
use moltmates::dev::telegram::{StatsCondition, TelegramStandIn};
use serde_json::{Value, json};

use crate::options::Options;
use crate::report::Report;
use crate::support::stack::LLM_KEY;
use crate::support::{
    AgentNode, BOT_TOKEN, GatewayCommand, Proc, TestEnv, apply_user, free_port, http_get, user_manifest,
};
use crate::{cpu, gateway_cost, stats, svg};

/// Telegram ids of the load users: LOAD_BASE + index.
pub const LOAD_BASE: i64 = 5_000_000;
/// Target of benchmark 4: routing overhead p99, in milliseconds.
pub const OVERHEAD_P99_TARGET_MS: f64 = 10.0;
/// Every message carries `msg-<number>`; the agent's answer echoes it.
const TAG: &str = "msg-";

// ---------------------------------------------------------------------------------------------
// Pure parts: tags, Bot API parameters, agent logs, the analysis.

pub fn now_us() -> i64 {
    jiff::Timestamp::now().as_microsecond()
}

pub fn tagged(prefix: &str, tag: u64) -> String {
    format!("{prefix} {TAG}{tag:07}")
}

/// The tag in a text (`msg-0000042` → 42).
pub fn tag_of(text: &str) -> Option<u64> {
    let start = text.find(TAG)? + TAG.len();
    let digits: String = text[start..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `chat_id` and `text` of a `sendMessage`, sent as JSON, a form, or a query string.
pub fn send_params(content_type: Option<&str>, query: Option<&str>, body: &[u8]) -> Option<(i64, String)> {
    let as_i64 = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
    if content_type.is_some_and(|c| c.starts_with("application/json")) {
        let v: Value = serde_json::from_slice(body).ok()?;
        return Some((as_i64(&v["chat_id"])?, v["text"].as_str()?.to_string()));
    }
    let mut pairs: HashMap<String, String> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).into_owned().collect();
    pairs.extend(form_urlencoded::parse(body).into_owned());
    Some((pairs.get("chat_id")?.parse().ok()?, pairs.get("text")?.clone()))
}

/// One agent turn as its log tells it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Turn {
    pub received_us: Option<i64>,
    pub answered_us: Option<i64>,
}

impl Turn {
    pub fn took_us(&self) -> Option<i64> {
        Some(self.answered_us? - self.received_us?)
    }
}

/// The leading RFC 3339 timestamp of a tracing text log line, in microseconds.
pub fn line_time_us(line: &str) -> Option<i64> {
    line.split_whitespace().next()?.parse::<jiff::Timestamp>().ok().map(|t| t.as_microsecond())
}

/// `name=value` of a tracing text log line (value unquoted).
pub fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|w| w.strip_prefix(name)?.strip_prefix('=')).map(|v| v.trim_matches('"'))
}

/// Agent turns by `update_id` from agent log text. A redelivered update keeps its first
/// `turn received` and its first `turn answered`.
pub fn parse_turns(text: &str, into: &mut HashMap<i64, Turn>) {
    for line in text.lines() {
        let answered = line.contains("turn answered");
        if !answered && !line.contains("turn received") {
            continue;
        }
        let (Some(at), Some(id)) = (line_time_us(line), field(line, "update_id").and_then(|v| v.parse().ok())) else {
            continue;
        };
        let turn = into.entry(id).or_default();
        let slot = if answered { &mut turn.answered_us } else { &mut turn.received_us };
        slot.get_or_insert(at);
    }
}

/// Every `*.log` of a directory (the node's agent logs), read.
pub fn read_logs(dir: &Path, prefix: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with(prefix) && name.ends_with(".log") {
            out.push((entry.path(), std::fs::read_to_string(entry.path()).unwrap_or_default()));
        }
    }
    out
}

/// A message as injected.
#[derive(Debug, Clone, Copy)]
pub struct Injection {
    pub tag: u64,
    pub chat_id: i64,
    pub update_id: i64,
    pub at_us: i64,
}

/// A `sendMessage` as the proxy saw it arrive.
#[derive(Debug, Clone)]
pub struct Sent {
    pub chat_id: i64,
    pub text: String,
    pub at_us: i64,
}

/// One answered message, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    /// Gateway receive → sendMessage, minus the agent's turn.
    pub overhead_us: i64,
    pub receive_to_send_us: i64,
    pub agent_us: i64,
    /// Gateway receive → the agent logs `turn received`.
    pub inbound_us: i64,
    /// The agent logs `turn answered` → sendMessage.
    pub outbound_us: i64,
    /// Injected into the stand-in → sendMessage (includes the long poll's pick-up).
    pub end_to_end_us: i64,
}

#[derive(Debug, Default)]
pub struct Analysis {
    pub samples: Vec<Sample>,
    /// Tags never answered.
    pub lost: Vec<u64>,
    /// Answers beyond the first, over all tags.
    pub duplicated: usize,
    /// Answers carrying a tag but sent to another chat than the tag's.
    pub misrouted: usize,
    /// Messages to the load chats that carry no known tag (error texts, say).
    pub untagged: usize,
    /// Answered, but a time is missing (no getUpdates stamp or no agent log line).
    pub untimed: usize,
}

pub fn analyse(
    injections: &[Injection],
    received: &HashMap<i64, i64>,
    sent: &[Sent],
    turns: &HashMap<i64, Turn>,
) -> Analysis {
    let by_tag: HashMap<u64, &Injection> = injections.iter().map(|i| (i.tag, i)).collect();
    let mut answers: HashMap<u64, Vec<i64>> = HashMap::new();
    let mut analysis = Analysis::default();
    for s in sent {
        match tag_of(&s.text).and_then(|t| by_tag.get(&t)) {
            Some(i) if i.chat_id == s.chat_id => answers.entry(i.tag).or_default().push(s.at_us),
            Some(_) => analysis.misrouted += 1,
            None => analysis.untagged += 1,
        }
    }
    for i in injections {
        let Some(times) = answers.get(&i.tag) else {
            analysis.lost.push(i.tag);
            continue;
        };
        analysis.duplicated += times.len() - 1;
        let sent_us = times.iter().copied().min().unwrap_or_default();
        let turn = turns.get(&i.update_id).copied().unwrap_or_default();
        match (received.get(&i.update_id), turn.took_us(), turn.received_us, turn.answered_us) {
            (Some(&recv), Some(agent), Some(turn_in), Some(turn_out)) => analysis.samples.push(Sample {
                overhead_us: sent_us - recv - agent,
                receive_to_send_us: sent_us - recv,
                agent_us: agent,
                inbound_us: turn_in - recv,
                outbound_us: sent_us - turn_out,
                end_to_end_us: sent_us - i.at_us,
            }),
            _ => analysis.untimed += 1,
        }
    }
    analysis
}

fn us(v: i64) -> Duration {
    Duration::from_micros(v.max(0) as u64)
}

pub fn summary_of(samples: &[Sample], f: impl Fn(&Sample) -> i64) -> stats::Summary {
    stats::summarize(&samples.iter().map(|s| us(f(s))).collect::<Vec<_>>())
}

// ---------------------------------------------------------------------------------------------
// The recording proxy in front of the Telegram stand-in.

#[derive(Default)]
pub struct Records {
    /// `update_id` → when its `getUpdates` answer was handed to the gateway.
    pub received: HashMap<i64, i64>,
    pub sent: Vec<Sent>,
}

pub struct Recorder {
    upstream: String,
    client: reqwest::Client,
    records: Mutex<Records>,
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Everything recorded so far, taken (the recorder starts empty again).
    pub fn take(&self) -> Records {
        std::mem::take(&mut *self.lock())
    }

    pub fn sent_count(&self) -> usize {
        self.lock().sent.len()
    }

    /// Whether a message carrying `tag` was sent.
    pub fn answered(&self, tag: u64) -> Option<i64> {
        self.lock().sent.iter().find(|s| tag_of(&s.text) == Some(tag)).map(|s| s.at_us)
    }

    /// Tags answered so far (each once).
    pub fn answered_tags(&self) -> std::collections::HashSet<u64> {
        self.lock().sent.iter().filter_map(|s| tag_of(&s.text)).collect()
    }
}

/// Serve the proxy on a free port; returns it and its base URL.
async fn start_proxy(upstream: String) -> Result<(Arc<Recorder>, String, tokio::task::JoinHandle<()>), String> {
    // reqwest is built without a default TLS provider (plain HTTP here, but it wants one).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(64).build().map_err(|e| format!("proxy client: {e}"))?;
    let recorder = Arc::new(Recorder { upstream, client, records: Mutex::new(Records::default()) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("proxy: {e}"))?;
    let url = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let app = axum::Router::new().fallback(forward).with_state(recorder.clone());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((recorder, url, task))
}

async fn forward(
    axum::extract::State(rec): axum::extract::State<Arc<Recorder>>,
    request: axum::extract::Request,
) -> Response {
    let arrived = now_us();
    let (parts, body) = request.into_parts();
    let body: Bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let path = parts.uri.path().to_string();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    if path.to_ascii_lowercase().ends_with("/sendmessage")
        && let Some((chat_id, text)) = send_params(content_type.as_deref(), parts.uri.query(), &body)
    {
        rec.lock().sent.push(Sent { chat_id, text, at_us: arrived });
    }
    let url = format!("{}{}", rec.upstream, parts.uri.path_and_query().map_or("/", |p| p.as_str()));
    let mut headers = parts.headers.clone();
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let upstream = match rec.client.request(parts.method, url).headers(headers).body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = upstream.status();
    let upstream_type = upstream.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = upstream.bytes().await.unwrap_or_default();
    if path.to_ascii_lowercase().ends_with("/getupdates")
        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
    {
        let at = now_us();
        let mut records = rec.lock();
        for update in v["result"].as_array().into_iter().flatten() {
            if let Some(id) = update["update_id"].as_i64() {
                records.received.entry(id).or_insert(at);
            }
        }
    }
    let mut response = (status, bytes).into_response();
    if let Some(t) = upstream_type {
        response.headers_mut().insert(header::CONTENT_TYPE, t);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// The stack: control plane, operator, node stand-in running agents, gateway behind the proxy.

pub struct Stack {
    // Processes first: fields drop in order, and the control plane goes last. The gateway and
    // the operator sit in a lock so that a chaos run can kill and restart them while the load
    // runs beside it.
    gateway: Mutex<Proc>,
    /// Its command line, to start it again exactly so.
    gateway_args: Vec<String>,
    pub gateway_http: u16,
    operator: Mutex<Proc>,
    pub operator_http: u16,
    /// The node stand-in running the agents, and the broker URL it gives them.
    node: Mutex<AgentNode>,
    broker_url: String,
    proxy_task: tokio::task::JoinHandle<()>,
    pub recorder: Arc<Recorder>,
    /// The recording proxy's URL: where whatever serves the bot reaches Telegram.
    pub recorder_url: String,
    pub telegram: TelegramStandIn,
    pub llm: LlmStandIn,
    pub admin: Client,
    pub env: TestEnv,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.proxy_task.abort();
    }
}

impl Stack {
    /// Everything up, `users` applied (name, Telegram id, spec) and Ready, the gateway synced.
    pub async fn up(name: &str, users: &[(String, i64, Value)]) -> Result<Stack, String> {
        let env = TestEnv::up(name);
        env.install().await;
        env.install_gateway_rbac().await;
        let admin = env.admin().await;
        let any = "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?;
        let llm = LlmStandIn::start(any, Some(LLM_KEY.into())).await.map_err(|e| format!("LLM stand-in: {e}"))?;
        let telegram = TelegramStandIn::start(any, BOT_TOKEN).await.map_err(|e| format!("Telegram stand-in: {e}"))?;
        let (recorder, proxy_url, proxy) = start_proxy(telegram.url()).await?;
        let broker_port = free_port();
        let broker_url = format!("http://127.0.0.1:{broker_port}");
        let node = env.spawn_agent_node(&broker_url);
        let operator_http = free_port();
        let operator = env.spawn_operator("operator", operator_http);
        for (name, id, spec) in users {
            apply_user(&admin, &user_manifest(name, *id, spec.clone()))
                .await
                .map_err(|e| format!("applying {name}: {e}"))?;
        }
        // The broker's per-user LLM limits (60 requests a minute for `personal`) would answer
        // a load of several messages a second per user with "slow down": lifted here.
        let profiles = env.dir.join("profiles.yaml");
        let lifted = "{ llm: { requestsPerMinute: 1000000, tokensPerDay: 1000000000000 } }";
        let text = ["personal", "family", "public", "high-security"].map(|p| format!("{p}: {lifted}\n")).concat();
        std::fs::write(&profiles, text).map_err(|e| e.to_string())?;
        let gateway_http = free_port();
        let profiles = profiles.to_string_lossy();
        let args = GatewayCommand::new(&env, &proxy_url, &llm.url(), broker_port)
            .with(&["--profiles-file", &profiles])
            .serving_on(gateway_http);
        let gateway =
            env.spawn("gateway", &env.gateway_kubeconfig(), &args.iter().map(String::as_str).collect::<Vec<_>>());
        let stack = Stack {
            gateway: Mutex::new(gateway),
            gateway_args: args,
            gateway_http,
            operator: Mutex::new(operator),
            operator_http,
            node: Mutex::new(node),
            broker_url,
            proxy_task: proxy,
            recorder,
            recorder_url: proxy_url.clone(),
            telegram,
            llm,
            admin,
            env,
        };
        let timeout = Duration::from_secs(90) + Duration::from_millis(500) * users.len() as u32;
        // A user with a short idleTimeout may already be Idle again when looked at.
        stack.wait_phase_all(users.len(), &["Ready", "Idle"], timeout).await?;
        stack.wait_synced(Duration::from_secs(60)).await?;
        Ok(stack)
    }

    /// Wait until `count` MoltmateUsers are in one of `phases`.
    pub async fn wait_phase_all(&self, count: usize, phases: &[&str], timeout: Duration) -> Result<(), String> {
        let api: Api<moltmates::MoltmateUser> = Api::all(self.admin.clone());
        let deadline = Instant::now() + timeout;
        let mut there = 0;
        while Instant::now() < deadline {
            if let Ok(list) = api.list(&ListParams::default()).await {
                there = list
                    .items
                    .iter()
                    .filter(|u| u.status.as_ref().and_then(|s| s.phase).is_some_and(|p| phases.contains(&p.as_str())))
                    .count();
                if there >= count {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(format!("{there} of {count} users {} after {timeout:?}", phases.join(" or ")))
    }

    /// Wait until the MoltmateUser `name` has a phase `wanted` accepts (`None`: no status
    /// yet), described as `what`; the last status seen if it does not within `timeout`.
    pub async fn wait_user(
        &self,
        name: &str,
        what: &str,
        wanted: impl Fn(Option<&str>) -> bool,
        timeout: Duration,
    ) -> Result<(), String> {
        let api: Api<moltmates::MoltmateUser> = Api::all(self.admin.clone());
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok(user) = api.get(name).await {
                if wanted(user.status.as_ref().and_then(|s| s.phase).map(|p| p.as_str())) {
                    return Ok(());
                }
                last = serde_json::to_value(&user.status).unwrap_or_default();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("{name} not {what} within {timeout:?}; last status: {last}"))
    }

    /// The gateway answers `/readyz` (or, failing that, polls Telegram: it does so only from
    /// synced caches).
    async fn wait_synced(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_get(self.gateway_http, "/readyz").await.is_some_and(|(code, _)| code == 200)
                || self.telegram.stats().active_polls > 0
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!("the gateway was not synced within {timeout:?}: {}", lock(&self.gateway).log_tail()))
    }

    pub fn gateway_pid(&self) -> u32 {
        lock(&self.gateway).child.id()
    }

    /// Whether the gateway process is still running (it has not exited).
    pub fn gateway_running(&self) -> bool {
        lock(&self.gateway).is_running()
    }

    /// SIGKILL whatever serves the bot now and start `command` in its place (its log
    /// `log_name`); the new pid.
    pub fn replace_gateway(&self, log_name: &str, command: std::process::Command) -> u32 {
        let mut gateway = lock(&self.gateway);
        gateway.kill();
        *gateway = self.env.launch(log_name, &self.env.gateway_kubeconfig(), command);
        gateway.child.id()
    }

    /// The gateway's command line as the stack starts it, under `wrapper` if not empty.
    pub fn gateway_command(&self, wrapper: &[String]) -> std::process::Command {
        let program = std::iter::once(crate::support::MOLTMATE.to_string()).chain(self.gateway_args.iter().cloned());
        crate::gateway_cost::wrapped(wrapper, &program.collect::<Vec<_>>())
    }

    /// Where the agents' LLM calls go (the broker's address).
    pub fn broker_url(&self) -> &str {
        &self.broker_url
    }

    /// SIGKILL the gateway and start it again at once with the same arguments (its ports, its
    /// Lease identity); (whether it was running when killed, the new pid).
    pub fn kill_and_restart_gateway(&self) -> (bool, u32) {
        let mut gateway = lock(&self.gateway);
        let was_running = gateway.is_running();
        gateway.kill();
        let args: Vec<&str> = self.gateway_args.iter().map(String::as_str).collect();
        *gateway = self.env.spawn("gateway", &self.env.gateway_kubeconfig(), &args);
        (was_running, gateway.child.id())
    }

    pub fn operator_pid(&self) -> u32 {
        lock(&self.operator).child.id()
    }

    pub fn operator_running(&self) -> bool {
        lock(&self.operator).is_running()
    }

    /// Whether the node stand-in still runs; if not, the end of its log.
    pub fn node_exited(&self) -> Option<String> {
        let mut node = self.node.lock().unwrap_or_else(|e| e.into_inner());
        (!node.0.is_running()).then(|| node.0.log_tail())
    }

    /// Start the node stand-in again (as a service manager restarts a kubelet); it starts the
    /// agents of its pods anew.
    pub fn restart_node(&self) {
        let mut node = self.node.lock().unwrap_or_else(|e| e.into_inner());
        *node = self.env.spawn_agent_node(&self.broker_url);
    }

    /// Warm-up: one message per user, so that each agent's first turn (session files, first
    /// connections) is not in the figures; then the recorder and the LLM stand-in start empty.
    pub async fn warm_up(&self, users: &[(String, i64, Value)]) -> Result<(), String> {
        for (name, id, _) in users {
            self.telegram.inject_text(*id, &format!("warm-up for {name}")).map_err(|e| e.to_string())?;
        }
        let warm = Instant::now();
        while self.recorder.sent_count() < users.len() && warm.elapsed() < Duration::from_secs(120) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.wait_settled(Duration::from_secs(1), Duration::from_secs(30)).await;
        eprintln!(
            "   warm-up: {} of {} answered in {:.1}s",
            self.recorder.sent_count(),
            users.len(),
            warm.elapsed().as_secs_f64()
        );
        self.recorder.take();
        self.llm.clear_requests();
        Ok(())
    }

    /// The load: message k at start + k/rate, from chat `base + k mod users`, tagged k.
    /// Returns the injections and the rate achieved.
    pub async fn inject_load(
        &self,
        base: i64,
        users: usize,
        rate: f64,
        duration: Duration,
    ) -> Result<(Vec<Injection>, f64), String> {
        let total = (rate * duration.as_secs_f64()).round() as u64;
        let mut injections = Vec::with_capacity(total as usize);
        let start = tokio::time::Instant::now();
        for k in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
            let chat_id = base + (k % users as u64) as i64;
            let at_us = now_us();
            let injected =
                self.telegram.inject_text(chat_id, &tagged("load", k)).map_err(|e| format!("inject: {e}"))?;
            injections.push(Injection { tag: k, chat_id, update_id: injected.update_id, at_us });
            if k % 2000 == 1999 {
                // The LLM stand-in keeps every request with its whole history: bounded here.
                self.llm.clear_requests();
            }
        }
        Ok((injections, total as f64 / start.elapsed().as_secs_f64().max(f64::EPSILON)))
    }

    /// Wait until every injected tag was answered (as the recording proxy saw it) or
    /// `timeout`, then until nothing more is sent for `quiet`.
    pub async fn wait_answered(&self, total: usize, timeout: Duration, quiet: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.recorder.answered_tags().len() < total {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        self.wait_settled(quiet, Duration::from_secs(30)).await;
    }

    /// One load through whatever serves the bot now (gateway or relay): what the users saw and
    /// what it cost that process.
    pub async fn load_round(&self, users: usize, rate: f64, duration: Duration) -> Result<Round, String> {
        let pid = self.gateway_pid();
        let cpu_before = cpu::process_seconds(pid).ok_or("the gateway's process is gone")?;
        let meter = cpu::Meter::start(&self.env.dir);
        let (injections, achieved) = self.inject_load(LOAD_BASE, users, rate, duration).await?;
        let injected = injections.len() as u64;
        let patience = Duration::from_secs(120).max(duration * 4);
        self.wait_answered(injections.len(), patience, Duration::from_secs(2)).await;
        let cpu_seconds = cpu::process_seconds(pid).ok_or("the gateway's process died during the load")? - cpu_before;
        let meter = meter.read();
        let records = self.recorder.take();
        let mut turns = HashMap::new();
        for (_, text) in read_logs(&self.agent_logs(), "moltmate-load-") {
            parse_turns(&text, &mut turns);
        }
        let analysis = analyse(&injections, &records.received, &records.sent, &turns);
        Ok(Round { analysis, injected, achieved, cpu_seconds, meter })
    }

    /// What the Telegram stand-in holds as sent to `chats` (what the users saw), as `Sent`
    /// records without times.
    pub fn delivered_to(&self, chats: impl IntoIterator<Item = i64>) -> Vec<Sent> {
        chats
            .into_iter()
            .flat_map(|chat| self.telegram.sent_to(chat))
            .map(|m| Sent { chat_id: m.chat_id, text: m.rendered, at_us: 0 })
            .collect()
    }

    pub fn agent_logs(&self) -> PathBuf {
        self.env.dir.join("node").join("logs")
    }

    /// Wait until every update is confirmed and nothing more was sent for `quiet`.
    pub async fn wait_settled(&self, quiet: Duration, timeout: Duration) {
        let drained = StatsCondition { max_pending_updates: Some(0), ..Default::default() };
        let _ = self.telegram.wait_for_stats(&drained, timeout).await;
        let deadline = Instant::now() + timeout;
        let mut count = self.recorder.sent_count();
        let mut since = Instant::now();
        while since.elapsed() < quiet && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = self.recorder.sent_count();
            if now != count {
                (count, since) = (now, Instant::now());
            }
        }
    }
}

/// One load's result.
pub struct Round {
    pub analysis: Analysis,
    pub injected: u64,
    /// Messages per second injected.
    pub achieved: f64,
    /// CPU seconds the serving process used from the first message until all were answered.
    pub cpu_seconds: f64,
    /// Every process's CPU over the round.
    pub meter: Value,
}

impl Round {
    pub fn cpu_ms_per_message(&self) -> f64 {
        crate::gateway_cost::per_message(self.cpu_seconds * 1000.0, self.injected)
    }

    pub fn overhead(&self) -> stats::Summary {
        summary_of(&self.analysis.samples, |s| s.overhead_us)
    }
}

fn lock(proc: &Mutex<Proc>) -> std::sync::MutexGuard<'_, Proc> {
    proc.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The benchmark.

/// The load users: `load-<i>`, Telegram id LOAD_BASE + i, profile `personal`.
pub fn load_users(n: usize) -> Vec<(String, i64, Value)> {
    (0..n).map(|i| (format!("load-{i:04}"), LOAD_BASE + i as i64, json!({ "profile": "personal" }))).collect()
}

pub async fn run(options: &Options, report: &mut Report) {
    let users = options.gateway_users;
    eprintln!(
        "== gateway: {users} users, {} messages/s for {}s",
        options.gateway_rate,
        options.gateway_duration.as_secs_f64()
    );
    match std::panic::AssertUnwindSafe(measure(options, report)).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.error(format!("gateway at {users} users: {e}")),
        Err(panic) => report.error(format!("gateway at {users} users: panicked: {}", panic_text(&panic))),
    }
}

async fn measure(options: &Options, report: &mut Report) -> Result<(), String> {
    let (n, rate, duration) = (options.gateway_users, options.gateway_rate, options.gateway_duration);
    let users = load_users(n);
    let setup = Instant::now();
    let stack = Stack::up("bench-gateway", &users).await?;
    eprintln!("   {n} users Ready, gateway synced in {:.1}s", setup.elapsed().as_secs_f64());

    stack.warm_up(&users).await?;
    let shared = stack.load_round(n, rate, duration).await?;
    eprintln!("   injected {} ({:.0}/s), cores shared", shared.injected, shared.achieved);
    report_round(options, report, &stack, &shared, n).await;

    // The same load with the gateway on a core of its own and everything else on the other.
    let gateway_pid = stack.gateway_pid();
    let all = gateway_cost::all_cpus();
    if all != "0-0" && gateway_cost::pin(gateway_pid, "1") {
        let moved = gateway_cost::pin_all("0", gateway_pid);
        let pinned = stack.load_round(n, rate, duration).await;
        gateway_cost::pin_all(&all, 0);
        let pinned = pinned?;
        let overhead = pinned.overhead();
        eprintln!(
            "   gateway on its own core ({moved} other processes on the other): overhead p99 {:.2} ms",
            overhead.p99_ms
        );
        report.target(
            "gateway",
            n,
            "routing overhead p99, gateway on its own core",
            overhead.p99_ms,
            "ms",
            OVERHEAD_P99_TARGET_MS,
        );
        report.figure("gateway", n, "routing overhead p50, gateway on its own core", overhead.p50_ms, "ms");
        report.target(
            "gateway",
            n,
            "lost messages, gateway on its own core",
            pinned.analysis.lost.len() as f64,
            "",
            0.0,
        );
        report.section("gateway-pinned", n, round_json(&pinned));
    } else {
        report.note("gateway: one core only (or taskset failed): no figure with the gateway on a core of its own");
    }

    // The floor: the relay in the gateway's place, same agents and load.
    let dir = gateway_cost::work_dir(&stack);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let routes = gateway_cost::routes(&stack.admin, crate::support::MASTER_KEY, 8080).await?;
    let routes_file = dir.join("routes.json");
    std::fs::write(&routes_file, serde_json::to_vec(&routes).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let relay = |wrapper: &[String]| {
        gateway_cost::relay_command(
            wrapper,
            &stack.recorder_url,
            BOT_TOKEN,
            stack.broker_url(),
            &stack.llm.url(),
            LLM_KEY,
            &routes_file,
        )
    };
    stack.replace_gateway("floor-relay", relay(&[])?);
    stack.warm_up(&users).await?;
    let floor = stack.load_round(n, rate, duration).await?;
    let (gateway_ms, floor_ms) = (shared.cpu_ms_per_message(), floor.cpu_ms_per_message());
    eprintln!("   CPU per message: gateway {gateway_ms:.3} ms, floor relay {floor_ms:.3} ms");
    report.figure("gateway", n, "gateway CPU per message", gateway_ms, "ms");
    report.figure("gateway", n, "floor relay CPU per message", floor_ms, "ms");
    report.target(
        "gateway",
        n,
        "gateway/floor CPU per message",
        gateway_ms / floor_ms.max(f64::EPSILON),
        "×",
        gateway_cost::FLOOR_RATIO_TARGET,
    );
    report.figure("gateway", n, "floor relay routing overhead p99", floor.overhead().p99_ms, "ms");
    report.section("gateway-floor", n, round_json(&floor));

    // Instructions per message, under callgrind, at a rate it keeps up with.
    if options.gateway_callgrind_rate > 0.0 {
        if !gateway_cost::callgrind_available() {
            report.note("gateway: valgrind not found (apt-get install valgrind): no instruction counts");
        } else {
            let cg_rate = options.gateway_callgrind_rate;
            let cg_duration = options.gateway_callgrind_duration;
            let mut counts = Vec::new();
            for (who, label) in [("floor relay", "floor-relay"), ("gateway", "gateway")] {
                let out = dir.join(format!("callgrind.{label}"));
                let wrapper = gateway_cost::callgrind_wrapper(&out);
                let command = if label == "gateway" { stack.gateway_command(&wrapper) } else { relay(&wrapper)? };
                let pid = stack.replace_gateway(&format!("{label}-callgrind"), command);
                stack.warm_up(&users).await?;
                // Two loads, the second at twice the rate: what grows with the messages is the
                // cost per message; the rest (timers, syncs, polls) is a cost per second.
                let mut loads = Vec::new();
                gateway_cost::callgrind_control(&["--instr=on"], pid)?;
                for rate in [cg_rate, 2.0 * cg_rate] {
                    let begun = Instant::now();
                    let round = stack.load_round(n, rate, cg_duration).await?;
                    gateway_cost::callgrind_control(&["--dump"], pid)?;
                    let (_, files) = gateway_cost::callgrind_dumps(&out);
                    let total =
                        files.last().and_then(|f| gateway_cost::callgrind_total(&std::fs::read_to_string(f).ok()?));
                    let total = total.ok_or_else(|| format!("no callgrind dump of the {who} in {}", dir.display()))?;
                    loads.push(gateway_cost::Load {
                        instructions: total as f64,
                        messages: round.injected as f64,
                        seconds: begun.elapsed().as_secs_f64(),
                    });
                }
                let split = gateway_cost::split(&loads[0], &loads[1])
                    .ok_or("the two loads under callgrind cannot be told apart")?;
                eprintln!(
                    "   {who} under callgrind: {:.0} instructions per message, {:.0} per second besides",
                    split.per_message, split.per_second
                );
                report.figure("gateway", n, &format!("{who} instructions per message"), split.per_message, "");
                report.figure(
                    "gateway",
                    n,
                    &format!("{who} instructions per second besides messages"),
                    split.per_second,
                    "",
                );
                let (_, files) = gateway_cost::callgrind_dumps(&out);
                if let Some(dump) = files.last() {
                    let top = gateway_cost::annotate(dump, 80);
                    let _ = std::fs::create_dir_all(&options.out);
                    let _ = std::fs::write(options.out.join(format!("callgrind-{label}-{n}.txt")), &top);
                    let _ = std::fs::copy(dump, options.out.join(format!("callgrind-{label}-{n}.out")));
                }
                report.section(&format!("gateway-callgrind-{label}"), n, json!({ "loads": loads, "split": split }));
                counts.push(split.per_message);
            }
            // Reported, not held to the CPU target: callgrind counts only user-space
            // instructions, and most of both processes' CPU is the kernel's, on the same sockets.
            if let [floor, gateway] = counts[..] {
                report.figure("gateway", n, "gateway/floor instructions per message", gateway / floor.max(1.0), "×");
            }
        }
    }
    Ok(())
}

/// A round as the report keeps it.
fn round_json(round: &Round) -> Value {
    let a = &round.analysis;
    let field = |f: fn(&Sample) -> i64| serde_json::to_value(summary_of(&a.samples, f)).unwrap_or_default();
    json!({
        "messages": round.injected,
        "injected_per_second": round.achieved,
        "answered": round.injected as usize - a.lost.len(),
        "lost": a.lost.len(),
        "duplicated": a.duplicated,
        "misrouted": a.misrouted,
        "untimed": a.untimed,
        "cpu_seconds": round.cpu_seconds,
        "cpu_ms_per_message": round.cpu_ms_per_message(),
        "routing_overhead_ms": field(|s| s.overhead_us),
        "cpu": round.meter,
    })
}

/// The shared-core round: the section's main figures and its plot.
async fn report_round(options: &Options, report: &mut Report, stack: &Stack, round: &Round, n: usize) {
    let (rate, duration) = (options.gateway_rate, options.gateway_duration);
    let a = &round.analysis;
    let total = round.injected;
    let metrics =
        http_get(stack.gateway_http, "/metrics").await.map(|(_, body)| routing_histogram(&body)).unwrap_or(Value::Null);
    let overhead = round.overhead();
    report.target("gateway", n, "routing overhead p99", overhead.p99_ms, "ms", OVERHEAD_P99_TARGET_MS);
    report.figure("gateway", n, "routing overhead p50", overhead.p50_ms, "ms");
    report.target("gateway", n, "lost messages", a.lost.len() as f64, "", 0.0);
    report.target("gateway", n, "duplicated answers", a.duplicated as f64, "", 0.0);
    report.target("gateway", n, "misrouted answers", a.misrouted as f64, "", 0.0);
    report.figure("gateway", n, "injected messages/s", round.achieved, "");
    report.note_if(cpu::Meter::busy_note(&round.meter, &format!("the gateway load at {n} users")));
    if a.untimed > 0 {
        report.note(format!("gateway: {} answered messages lack a time (no getUpdates stamp or agent log line); left out of the latency", a.untimed));
    }
    let field = |f: fn(&Sample) -> i64| serde_json::to_value(summary_of(&a.samples, f)).unwrap_or_default();
    report.section("gateway", n, json!({
        "users": n,
        "rate_per_second": rate,
        "duration_seconds": duration.as_secs_f64(),
        "messages": total,
        "injected_per_second": round.achieved,
        "answered": total as usize - a.lost.len(),
        "lost": a.lost.len(),
        "lost_tags": &a.lost[..a.lost.len().min(20)],
        "duplicated": a.duplicated,
        "misrouted": a.misrouted,
        "untagged_messages": a.untagged,
        "untimed": a.untimed,
        "routing_overhead_ms": field(|s| s.overhead_us),
        "receive_to_send_ms": field(|s| s.receive_to_send_us),
        "agent_turn_ms": field(|s| s.agent_us),
        "inbound_ms": field(|s| s.inbound_us),
        "outbound_ms": field(|s| s.outbound_us),
        "inject_to_send_ms": field(|s| s.end_to_end_us),
        "gateway_routing_seconds_metric": metrics,
        "cpu_seconds_gateway": round.cpu_seconds,
        "cpu": round.meter,
        "method": "times from a recording proxy between gateway and Telegram stand-in (getUpdates answer handed on; sendMessage arrival) and the agents' logs (turn received → turn answered); overhead = receive→sendMessage − agent turn",
    }));

    let ms = |f: fn(&Sample) -> i64| a.samples.iter().map(|s| f(s) as f64 / 1000.0).collect::<Vec<f64>>();
    let (o, i, out, e) =
        (ms(|s| s.overhead_us), ms(|s| s.inbound_us), ms(|s| s.outbound_us), ms(|s| s.receive_to_send_us));
    let plot = svg::cdf(
        &format!("Gateway routing, {n} users, {rate} msg/s for {}s", duration.as_secs_f64()),
        "milliseconds",
        &[
            svg::Series { label: format!("routing overhead (p99 {:.2} ms)", overhead.p99_ms), values: &o },
            svg::Series { label: "receive → agent turn starts".into(), values: &i },
            svg::Series { label: "agent answered → sendMessage".into(), values: &out },
            svg::Series { label: "receive → sendMessage (with agent)".into(), values: &e },
        ],
    );
    write_plot(options, report, &format!("gateway-{n}.svg"), &plot);
    eprintln!(
        "   overhead p50 {:.2} ms p99 {:.2} ms; lost {} duplicated {} misrouted {}",
        overhead.p50_ms,
        overhead.p99_ms,
        a.lost.len(),
        a.duplicated,
        a.misrouted
    );
}

pub fn write_plot(options: &Options, report: &mut Report, file: &str, svg: &str) {
    let path = options.out.join(file);
    if let Err(e) = std::fs::create_dir_all(&options.out).and_then(|_| std::fs::write(&path, svg)) {
        report.error(format!("writing {}: {e}", path.display()));
    }
}

/// The gateway's own `moltmate_gateway_routing_seconds` histogram (sum and count), for
/// comparison: it times the gateway's side only, as the gateway sees it.
fn routing_histogram(metrics: &str) -> Value {
    let get = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok());
    match (get("moltmate_gateway_routing_seconds_sum"), get("moltmate_gateway_routing_seconds_count")) {
        (Some(sum), Some(count)) if count > 0.0 => json!({ "count": count, "mean_ms": sum / count * 1000.0 }),
        _ => Value::Null,
    }
}

pub fn self_test() {
    assert_eq!(tag_of(&format!("You said: {}", tagged("load", 42))), Some(42));
    assert_eq!(tag_of("no tag here"), None);
    let json = br#"{"chat_id": 5000001, "text": "You said: load msg-0000007"}"#;
    assert_eq!(send_params(Some("application/json"), None, json), Some((5000001, "You said: load msg-0000007".into())));
    assert_eq!(
        send_params(Some("application/x-www-form-urlencoded"), None, b"chat_id=-5&text=hi+there"),
        Some((-5, "hi there".into()))
    );
    let log = "2026-11-25T12:37:46.462524Z  INFO agent{user=a}: moltmates::agent::server: turn received user=a update_id=7\n\
               2026-11-25T12:37:46.473963Z  INFO agent{user=a}: moltmates::agent::service: turn answered user=\"a\" update_id=7 took_ms=11\n";
    let mut turns = HashMap::new();
    parse_turns(log, &mut turns);
    assert_eq!(turns[&7].took_us(), Some(11_439));
    let injections = [
        Injection { tag: 1, chat_id: 10, update_id: 7, at_us: 0 },
        Injection { tag: 2, chat_id: 11, update_id: 8, at_us: 0 },
        Injection { tag: 3, chat_id: 12, update_id: 9, at_us: 0 },
    ];
    let received: HashMap<i64, i64> = [(7, 1_000), (8, 1_000)].into();
    let sent = vec![
        Sent { chat_id: 10, text: tagged("x", 1), at_us: 1_000 + 11_439 + 500 },
        Sent { chat_id: 10, text: tagged("x", 1), at_us: 90_000 },
        Sent { chat_id: 10, text: tagged("x", 2), at_us: 90_000 },
        Sent { chat_id: 11, text: tagged("x", 2), at_us: 50_000 },
        Sent { chat_id: 12, text: "oops".into(), at_us: 0 },
    ];
    let mut timed: HashMap<i64, Turn> = HashMap::new();
    timed.insert(7, Turn { received_us: Some(1_200), answered_us: Some(1_200 + 11_439) });
    let a = analyse(&injections, &received, &sent, &timed);
    assert_eq!((a.lost.clone(), a.duplicated, a.misrouted, a.untagged, a.untimed), (vec![3], 1, 1, 1, 1));
    assert_eq!(a.samples[0].overhead_us, 500);
    assert_eq!(a.samples[0].inbound_us, 200);
}
