//! Chaos 2 and 3, on benchmark 4's stack (real operator, gateway and agents; Telegram and LLM
//! stand-ins; the recording proxy):
//!
//! - `chaos-apiserver`: a steady load, and in its middle the API server stopped (SIGTERM)
//!   for `--chaos-outage`, then started again with the same command line. The operator and
//!   the gateway must ride it out without restarting (same processes, still running), every
//!   message must be answered; then a new user must be taken up by the operator and become
//!   Ready, and a message of theirs be answered through the gateway (their watches resumed).
//!   The node stand-in is watched too: if it exits (it stands in for the kubelet, which
//!   would keep pods running), that is reported as an error and it is started again.
//! - `chaos-gateway`: benchmark 4's load, the gateway SIGKILLed `--chaos-gateway-kills`
//!   times at random moments (`chaos::moments`) and started again at once with the same
//!   arguments. Every message must be answered; duplicates are counted and set against the
//!   kills (see `DUPLICATE_WINDOW`).
//!
//! Lost and duplicated are counted from what the Telegram stand-in holds as sent to each chat
//! (what the users saw); the recording proxy's times only place answers against the faults.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::chaos::{Probe, moments, ready_at, secs, unready_between};
use crate::gateway_load::{
    Analysis, Injection, LOAD_BASE, Sent, Stack, analyse, line_time_us, load_users, now_us, tag_of, tagged,
};
use crate::options::Options;
use crate::report::Report;
use crate::support::apiserver::{self, ApiServer};
use crate::support::{apply_user, user_manifest};
use crate::{cpu, stats};

/// The user added after the outage, to prove the watches resumed.
const NEW_USER: &str = "chaos-new";
const NEW_USER_ID: i64 = 7_000_000;
/// Its message's tag, far above the load's.
const NEW_USER_TAG: u64 = 9_000_000;
/// The product's one documented duplicate: the gateway dies after Telegram accepted a reply
/// and before the agent recorded the delivery confirmation (milliseconds, more under load).
/// A duplicate whose first copy went out at most this long before a kill (or a little after
/// it: a request the dying gateway had written reaches the proxy a moment later) is counted as
/// that.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(1);
const AFTER_KILL_SLACK: Duration = Duration::from_millis(200);
const PROBE_EVERY: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Pure parts.

/// The earliest time (proxy stamp) each tag was answered.
pub fn first_answers(sent: &[Sent]) -> HashMap<u64, i64> {
    let mut first: HashMap<u64, i64> = HashMap::new();
    for s in sent {
        if let Some(tag) = tag_of(&s.text) {
            let at = first.entry(tag).or_insert(s.at_us);
            *at = (*at).min(s.at_us);
        }
    }
    first
}

/// For each first-answer time, its offset from the nearest kill (µs; negative: before it);
/// `None` without kills.
pub fn from_nearest_kill(first_sent_us: &[i64], kills_us: &[i64]) -> Vec<Option<i64>> {
    first_sent_us.iter().map(|sent| kills_us.iter().map(|k| sent - k).min_by_key(|d| d.abs())).collect()
}

/// How many offsets lie in [-before_us, after_us]: the documented window around a kill.
pub fn in_kill_window(offsets: &[Option<i64>], before_us: i64, after_us: i64) -> usize {
    offsets.iter().flatten().filter(|d| (-before_us..=after_us).contains(*d)).count()
}

/// Tags answered more than once, in what the users saw.
pub fn duplicated_tags(delivered: &[Sent]) -> Vec<u64> {
    let mut count: HashMap<u64, usize> = HashMap::new();
    for s in delivered {
        if let Some(tag) = tag_of(&s.text) {
            *count.entry(tag).or_default() += 1;
        }
    }
    let mut tags: Vec<u64> = count.into_iter().filter(|(_, n)| *n > 1).map(|(t, _)| t).collect();
    tags.sort_unstable();
    tags
}

/// Injections in [from_us, to_us) answered (first answer) before `to_us`: served while the
/// fault lasted.
pub fn answered_within(
    injections: &[Injection],
    first: &HashMap<u64, i64>,
    from_us: i64,
    to_us: i64,
) -> (usize, usize) {
    let during: Vec<&Injection> = injections.iter().filter(|i| (from_us..to_us).contains(&i.at_us)).collect();
    let answered = during.iter().filter(|i| first.get(&i.tag).is_some_and(|at| *at < to_us)).count();
    (during.len(), answered)
}

// ---------------------------------------------------------------------------------------------
// chaos-apiserver

/// The outage as it happened.
struct Outage {
    stop_sent_us: i64,
    stopped: Instant,
    stop_took: Duration,
    started: Instant,
    ready: Instant,
    ready_us: i64,
    /// After the API server was ready again: the new user taken up by the operator (a
    /// status written), Ready, its message answered.
    new_user: NewUser,
    /// The end of the node stand-in's log if it had exited when the API server was back.
    node_died: Option<String>,
}

struct NewUser {
    taken_up: Result<Duration, String>,
    ready: Result<Duration, String>,
    answered: Result<Duration, String>,
}

pub async fn apiserver_outage(options: &Options, report: &mut Report) -> Result<(), String> {
    const RUN: &str = "chaos-apiserver";
    let c = &options.chaos;
    let (n, rate, duration, outage) = (c.outage_users, c.outage_rate, c.outage_duration, c.outage);
    eprintln!(
        "== {RUN}: {n} users, {rate} messages/s for {}s, the API server stopped for {}s in the middle",
        secs(duration),
        secs(outage)
    );
    let run_started = Instant::now();
    let users = load_users(n);
    let stack = Stack::up("chaos-apiserver", &users).await?;
    stack.warm_up(&users).await?;
    let mut api = ApiServer::find(&stack.env.dir)?;
    let (operator_pid, gateway_pid, api_pid) = (stack.operator_pid(), stack.gateway_pid(), api.pid());
    let operator_probe = Probe::start(stack.operator_http, PROBE_EVERY);
    let gateway_probe = Probe::start(stack.gateway_http, PROBE_EVERY);
    let meter = cpu::Meter::start(&stack.env.dir);

    let offset = duration.saturating_sub(outage) / 2;
    let load = stack.inject_load(LOAD_BASE, n, rate, duration);
    let fault = async {
        tokio::time::sleep(offset).await;
        let stop_sent_us = now_us();
        eprintln!("   stopping kube-apiserver {api_pid} (SIGTERM)");
        let stop_took = api.stop(Duration::from_secs(30)).await?;
        let stopped = Instant::now();
        tokio::time::sleep(outage).await;
        let started = Instant::now();
        let new_pid = api.start()?;
        apiserver::wait_ready(&stack.admin, Duration::from_secs(120)).await?;
        let (ready, ready_us) = (Instant::now(), now_us());
        eprintln!(
            "   kube-apiserver {new_pid} ready {:.1}s after its start; down {:.1}s",
            (ready - started).as_secs_f64(),
            (ready - stopped).as_secs_f64()
        );
        // Reported as an error below; restarted so that the rest of the run still measures
        // the operator and gateway.
        let node_died = stack.node_exited();
        if node_died.is_some() {
            eprintln!("   the node stand-in exited during the outage (its agents with it); starting it again");
            stack.restart_node();
        }
        let new_user = new_user(&stack, ready, c.apiserver_deadline()).await;
        Ok::<_, String>(Outage { stop_sent_us, stopped, stop_took, started, ready, ready_us, new_user, node_died })
    };
    let (load, fault) = tokio::join!(load, fault);
    let (injections, achieved) = load?;
    let o = fault?;
    let total = injections.len();
    eprintln!("   injected {total} ({achieved:.0}/s); waiting for the answers");
    stack.wait_answered(total, Duration::from_secs(120), Duration::from_secs(3)).await;
    let cpu = meter.read();

    let (operator_running, gateway_running) = (stack.operator_running(), stack.gateway_running());
    let restarts = |pid_now: u32, pid_before: u32, running: bool| usize::from(pid_now != pid_before || !running);
    let operator_restarts = restarts(stack.operator_pid(), operator_pid, operator_running);
    let gateway_restarts = restarts(stack.gateway_pid(), gateway_pid, gateway_running);
    let (ops, gws) = (operator_probe.samples(), gateway_probe.samples());
    let operator_back = ready_at(&ops, o.ready).map(|at| at.saturating_duration_since(o.ready));
    let gateway_back = ready_at(&gws, o.ready).map(|at| at.saturating_duration_since(o.ready));
    let delivered = stack.delivered_to(users.iter().map(|(_, id, _)| *id));
    let a = analyse(&injections, &HashMap::new(), &delivered, &HashMap::new());
    let first = first_answers(&stack.recorder.take().sent);
    let (during, served) = answered_within(&injections, &first, o.stop_sent_us, o.ready_us);
    eprintln!(
        "   lost {} duplicated {}; {served} of {during} messages of the outage answered during it; operator {} gateway {}",
        a.lost.len(),
        a.duplicated,
        if operator_restarts == 0 { "kept running" } else { "RESTARTED or exited" },
        if gateway_restarts == 0 { "kept running" } else { "RESTARTED or exited" },
    );

    let down = o.ready - o.stopped;
    report.figure(RUN, n, "API server down (exit to ready)", secs(down), "s");
    messages_rows(report, RUN, n, total, &a);
    report.figure(RUN, n, "messages of the outage answered during it", served as f64, "");
    report.target(RUN, n, "operator restarts", operator_restarts as f64, "", 0.0);
    report.target(RUN, n, "gateway restarts", gateway_restarts as f64, "", 0.0);
    if let Some(d) = operator_back {
        report.figure(RUN, n, "operator /readyz 200 after the API server", secs(d), "s");
    }
    if let Some(d) = gateway_back {
        report.figure(RUN, n, "gateway /readyz 200 after the API server", secs(d), "s");
    }
    for (who, samples) in [("operator", &ops), ("gateway", &gws)] {
        if unready_between(samples, o.stopped, o.ready) == 0 {
            report.note(format!("{RUN}: the {who}'s /readyz answered 200 all through the outage: it tells that its caches synced once, not that its watches are live"));
        }
    }
    let deadline = c.apiserver_deadline().as_secs();
    let u = &o.new_user;
    report.target(
        RUN,
        n,
        &format!("new user not taken up by the operator within {deadline}s"),
        f64::from(u8::from(u.taken_up.is_err())),
        "",
        0.0,
    );
    report.target(
        RUN,
        n,
        &format!("new user not Ready within {deadline}s"),
        f64::from(u8::from(u.ready.is_err())),
        "",
        0.0,
    );
    report.target(
        RUN,
        n,
        &format!("new user's message unanswered within {deadline}s"),
        f64::from(u8::from(u.answered.is_err())),
        "",
        0.0,
    );
    for (what, r) in [
        ("new user taken up by the operator after the API server", &u.taken_up),
        ("new user Ready after the API server", &u.ready),
        ("new user's message answered after the API server", &u.answered),
    ] {
        match r {
            Ok(d) => report.figure(RUN, n, what, secs(*d), "s"),
            Err(e) => report.note(format!("{RUN}: {what}: {e}")),
        }
    }
    if let Some(log) = o.node_died.as_ref().or(stack.node_exited().as_ref()) {
        report.error(format!(
            "{RUN}: the node stand-in (`moltmate dev node`, standing in for the kubelet) exited during the outage, and its agent \
             processes with it (restarted here once the API server was back): messages lost meanwhile are the test \
             environment's, not the product's (a kubelet keeps pods running while the API server is away). Its log ends: {}",
            last_lines(log, 2)
        ));
    }
    report.note_if(cpu::Meter::busy_note(&cpu, &format!("{RUN} at {n} users")));
    let mut section = messages_json(&a, total, rate, duration, achieved);
    section["outage"] = json!({
        "planned_seconds": secs(outage),
        "load_offset_seconds": secs(offset),
        "sigterm_to_exit_seconds": secs(o.stop_took),
        "exit_to_restart_seconds": secs(o.started - o.stopped),
        "restart_to_ready_seconds": secs(o.ready - o.started),
        "down_seconds": secs(down),
        "messages_during": during,
        "answered_during": served,
    });
    section["recovery"] = json!({
        "operator": { "pid_before": operator_pid, "pid_after": stack.operator_pid(), "running": operator_running,
            "readyz_failures_while_down": unready_between(&ops, o.stopped, o.ready), "readyz_200_after_seconds": operator_back.map(secs) },
        "gateway": { "pid_before": gateway_pid, "pid_after": stack.gateway_pid(), "running": gateway_running,
            "readyz_failures_while_down": unready_between(&gws, o.stopped, o.ready), "readyz_200_after_seconds": gateway_back.map(secs) },
        "new_user_taken_up_after_seconds": u.taken_up.as_ref().ok().map(|d| secs(*d)),
        "new_user_ready_after_seconds": u.ready.as_ref().ok().map(|d| secs(*d)),
        "new_user_answered_after_seconds": u.answered.as_ref().ok().map(|d| secs(*d)),
        "errors": [u.taken_up.as_ref().err(), u.ready.as_ref().err(), u.answered.as_ref().err()],
        "node_stand_in_exited_during_outage": o.node_died.is_some(),
    });
    let operator_errors = log_lines_after(
        &stack.env.dir.join("logs").join("operator.log"),
        o.ready_us,
        "moltmates::operator: controller",
    );
    if u.ready.is_err() && !operator_errors.is_empty() {
        report.note(format!(
            "{RUN}: the operator logged {} controller errors after the API server was back, the last: {}",
            operator_errors.len(),
            operator_errors.last().map_or("", String::as_str)
        ));
    }
    section["operator_controller_errors_after_restart"] = json!(&operator_errors[..operator_errors.len().min(20)]);
    section["cpu"] = cpu;
    section["run_seconds"] = json!(secs(run_started.elapsed()));
    report.section(RUN, n, section);
    Ok(())
}

/// The last `n` lines of a log, joined with " | ".
fn last_lines(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Lines of a component's log at or after `after_us` that contain `needle`.
fn log_lines_after(path: &std::path::Path, after_us: i64, needle: &str) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(needle) && line_time_us(l).is_some_and(|t| t >= after_us))
        .map(str::to_string)
        .collect()
}

/// A user applied once the API server is back: taken up by the operator (any status), Ready,
/// then a message answered through the gateway; each as time since `back`.
async fn new_user(stack: &Stack, back: Instant, within: Duration) -> NewUser {
    let deadline = back + within;
    let not_tried = |why: &str| Err(format!("not tried: {why}"));
    let manifest = user_manifest(NEW_USER, NEW_USER_ID, json!({ "profile": "personal" }));
    let mut applied = Err(String::new());
    while Instant::now() < deadline {
        applied = apply_user(&stack.admin, &manifest).await.map_err(|e| format!("applying {NEW_USER}: {e}"));
        if applied.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Err(e) = applied {
        return NewUser { taken_up: Err(e), ready: not_tried("not applied"), answered: not_tried("not applied") };
    }
    let taken_up = stack
        .wait_user(
            NEW_USER,
            "taken up (no status)",
            |p| p.is_some(),
            deadline.saturating_duration_since(Instant::now()),
        )
        .await
        .map(|()| back.elapsed());
    if taken_up.is_err() {
        return NewUser { taken_up, ready: not_tried("no status"), answered: not_tried("no status") };
    }
    let ready = stack
        .wait_user(NEW_USER, "Ready", |p| p == Some("Ready"), deadline.saturating_duration_since(Instant::now()))
        .await
        .map(|()| back.elapsed());
    if ready.is_err() {
        return NewUser { taken_up, ready, answered: not_tried("the user never became Ready") };
    }
    eprintln!("   {NEW_USER} Ready {:.1}s after the API server came back", back.elapsed().as_secs_f64());
    if let Err(e) = stack.telegram.inject_text(NEW_USER_ID, &tagged("new", NEW_USER_TAG)) {
        return NewUser { taken_up, ready, answered: Err(format!("inject: {e}")) };
    }
    while Instant::now() < deadline {
        if stack.telegram.sent_to(NEW_USER_ID).iter().any(|m| tag_of(&m.rendered) == Some(NEW_USER_TAG)) {
            eprintln!(
                "   {NEW_USER}'s message answered {:.1}s after the API server came back",
                back.elapsed().as_secs_f64()
            );
            return NewUser { taken_up, ready, answered: Ok(back.elapsed()) };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen: Vec<String> = stack.telegram.sent_to(NEW_USER_ID).into_iter().map(|m| m.rendered).collect();
    NewUser { taken_up, ready, answered: Err(format!("no answer within {within:?}; the chat got {seen:?}")) }
}

// ---------------------------------------------------------------------------------------------
// chaos-gateway

/// One kill of the gateway.
#[derive(Debug, Clone, serde::Serialize)]
struct GatewayKill {
    /// Since the load started.
    at_seconds: f64,
    #[serde(skip)]
    at: Option<Instant>,
    #[serde(skip)]
    at_us: i64,
    was_running: bool,
    new_pid: u32,
    /// The restarted gateway's first /readyz 200.
    ready_after_seconds: Option<f64>,
}

pub async fn gateway_kills(options: &Options, report: &mut Report) -> Result<(), String> {
    const RUN: &str = "chaos-gateway";
    let (n, rate, duration, kills) =
        (options.gateway_users, options.gateway_rate, options.gateway_duration, options.chaos.gateway_kills);
    let at = moments(options.chaos.seed, RUN, kills, duration);
    eprintln!(
        "== {RUN}: {n} users, {rate} messages/s for {}s, the gateway SIGKILLed at {:?}s",
        secs(duration),
        at.iter().map(|d| secs(*d)).collect::<Vec<_>>()
    );
    let run_started = Instant::now();
    let users = load_users(n);
    let stack = Stack::up("chaos-gateway", &users).await?;
    stack.warm_up(&users).await?;
    let probe = Probe::start(stack.gateway_http, PROBE_EVERY);
    let meter = cpu::Meter::start(&stack.env.dir);

    let load = stack.inject_load(LOAD_BASE, n, rate, duration);
    let fault = async {
        let start = Instant::now();
        let mut done = Vec::new();
        for moment in &at {
            tokio::time::sleep_until((start + *moment).into()).await;
            let (when, at_us) = (Instant::now(), now_us());
            let (was_running, new_pid) = stack.kill_and_restart_gateway();
            eprintln!(
                "   gateway killed at {:.1}s{}; restarted as {new_pid}",
                secs(when - start),
                if was_running { "" } else { " (it had exited by itself)" }
            );
            done.push(GatewayKill {
                at_seconds: secs(when - start),
                at: Some(when),
                at_us,
                was_running,
                new_pid,
                ready_after_seconds: None,
            });
        }
        done
    };
    let (load, mut done) = tokio::join!(load, fault);
    let (injections, achieved) = load?;
    let total = injections.len();
    eprintln!("   injected {total} ({achieved:.0}/s); waiting for the answers");
    stack.wait_answered(total, Duration::from_secs(180), Duration::from_secs(3)).await;
    let cpu = meter.read();

    let samples = probe.samples();
    for k in &mut done {
        k.ready_after_seconds = k.at.and_then(|at| ready_at(&samples, at).map(|r| secs(r - at)));
    }
    let delivered = stack.delivered_to(users.iter().map(|(_, id, _)| *id));
    let a = analyse(&injections, &HashMap::new(), &delivered, &HashMap::new());
    let first = first_answers(&stack.recorder.take().sent);
    let duplicated = duplicated_tags(&delivered);
    let firsts: Vec<i64> = duplicated.iter().filter_map(|t| first.get(t).copied()).collect();
    let kills_us: Vec<i64> = done.iter().map(|k| k.at_us).collect();
    let offsets = from_nearest_kill(&firsts, &kills_us);
    let explained = in_kill_window(&offsets, DUPLICATE_WINDOW.as_micros() as i64, AFTER_KILL_SLACK.as_micros() as i64);
    let gap_summary = stats::summarize(
        &offsets.iter().flatten().map(|us| Duration::from_micros(us.unsigned_abs())).collect::<Vec<_>>(),
    );
    let resent = log_lines_after(
        &stack.env.dir.join("logs").join("gateway.log"),
        0,
        "repeated update; sending the stored reply",
    )
    .len();
    let exited = done.iter().filter(|k| !k.was_running).count();
    let recoveries: Vec<f64> = done.iter().filter_map(|k| k.ready_after_seconds).collect();
    let stats = stack.telegram.stats();
    eprintln!(
        "   lost {} duplicated {} ({explained} of the duplicated messages first answered at a kill); misrouted {}",
        a.lost.len(),
        a.duplicated,
        a.misrouted
    );

    report.figure(RUN, n, "gateway SIGKILLs", done.len() as f64, "");
    messages_rows(report, RUN, n, total, &a);
    report.figure(RUN, n, "duplicated messages first answered at a kill (-1 s..+0.2 s)", explained as f64, "");
    report.figure(RUN, n, "stored replies sent again after a kill (gateway log)", resent as f64, "");
    report.target(RUN, n, "gateway exits not caused by a kill", exited as f64, "", 0.0);
    if let Some(max) = recoveries.iter().copied().reduce(f64::max) {
        report.figure(RUN, n, "restarted gateway /readyz 200 after the kill (max)", max, "s");
    }
    if recoveries.len() < done.len() {
        report.note(format!(
            "{RUN}: {} of {} restarted gateways never answered /readyz 200",
            done.len() - recoveries.len(),
            done.len()
        ));
    }
    if a.duplicated > 0 {
        report.note(format!(
            "{RUN}: {} duplicated answers ({} messages; {explained} first answered between {}s before and {}s after a kill; first \
             answer to the nearest kill p50 {:.0} ms, max {:.0} ms). The product documents one unavoidable duplicate: a gateway killed after Telegram \
             accepted a reply and before the agent recorded the delivery confirmation sends the stored reply again once Telegram \
             redelivers the update; the restarted gateways logged {resent} such re-sends ('repeated update; sending the stored reply')",
            a.duplicated,
            duplicated.len(),
            secs(DUPLICATE_WINDOW),
            secs(AFTER_KILL_SLACK),
            gap_summary.p50_ms,
            gap_summary.max_ms
        ));
    }
    if let Some(log) = stack.node_exited() {
        report.error(format!("{RUN}: the node stand-in (`moltmate dev node`) exited during the run, and its agents with it; its log ends: {}", last_lines(&log, 2)));
    }
    if stats.overflowed_updates > 0 {
        report.note(format!(
            "{RUN}: the Telegram stand-in dropped {} unconfirmed updates (queue full)",
            stats.overflowed_updates
        ));
    }
    report.note_if(cpu::Meter::busy_note(&cpu, &format!("{RUN} at {n} users")));
    let mut section = messages_json(&a, total, rate, duration, achieved);
    section["seed"] = json!(options.chaos.seed);
    section["kills"] = json!(done);
    section["duplicated_tags"] = json!(&duplicated[..duplicated.len().min(50)]);
    section["duplicated_first_answered_in_kill_window"] = json!(explained);
    section["duplicate_window_seconds"] = json!([-secs(DUPLICATE_WINDOW), secs(AFTER_KILL_SLACK)]);
    section["duplicated_first_answer_from_nearest_kill_ms"] =
        json!(offsets.iter().map(|o| o.map(|us| us as f64 / 1000.0)).collect::<Vec<_>>());
    section["stored_replies_sent_again"] = json!(resent);
    section["telegram_overflowed_updates"] = json!(stats.overflowed_updates);
    section["cpu"] = cpu;
    section["run_seconds"] = json!(secs(run_started.elapsed()));
    report.section(RUN, n, section);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared by both runs.

fn messages_rows(report: &mut Report, run: &str, n: usize, total: usize, a: &Analysis) {
    report.figure(run, n, "messages injected", total as f64, "");
    report.figure(run, n, "messages answered", (total - a.lost.len()) as f64, "");
    report.target(run, n, "lost messages", a.lost.len() as f64, "", 0.0);
    report.target(run, n, "duplicated answers", a.duplicated as f64, "", 0.0);
    report.target(run, n, "misrouted answers", a.misrouted as f64, "", 0.0);
}

fn messages_json(a: &Analysis, total: usize, rate: f64, duration: Duration, achieved: f64) -> Value {
    json!({
        "rate_per_second": rate,
        "duration_seconds": secs(duration),
        "messages": total,
        "injected_per_second": achieved,
        "answered": total - a.lost.len(),
        "lost": a.lost.len(),
        "lost_tags": &a.lost[..a.lost.len().min(50)],
        "duplicated": a.duplicated,
        "misrouted": a.misrouted,
        "counted_from": "the Telegram stand-in's record of what the bot sent to each chat",
    })
}

pub fn self_test() {
    let sent = |tag: u64, at_us: i64| Sent { chat_id: 1, text: tagged("x", tag), at_us };
    let records = vec![sent(1, 500), sent(1, 300), sent(2, 900), Sent { chat_id: 1, text: "no tag".into(), at_us: 1 }];
    let first = first_answers(&records);
    assert_eq!((first[&1], first[&2], first.len()), (300, 900, 2));
    assert_eq!(duplicated_tags(&records), vec![1]);
    // Kills at 1.0 s and 5.0 s.
    let offsets =
        from_nearest_kill(&[800_000, 1_000_000, 1_100_000, 1_200_000, 4_000_000, 6_000_000], &[1_000_000, 5_000_000]);
    assert_eq!(offsets, vec![Some(-200_000), Some(0), Some(100_000), Some(200_000), Some(-1_000_000), Some(1_000_000)]);
    assert_eq!(in_kill_window(&offsets, 500_000, 150_000), 3, "-0.2, 0 and +0.1 s");
    assert_eq!(from_nearest_kill(&[5], &[]), vec![None]);
    let injection = |tag: u64, at_us: i64| Injection { tag, chat_id: 1, update_id: tag as i64, at_us };
    let injections = [injection(1, 100), injection(2, 200), injection(3, 300), injection(4, 400)];
    let first: HashMap<u64, i64> = [(1, 150), (2, 250), (3, 900)].into();
    assert_eq!(answered_within(&injections, &first, 200, 500), (3, 1), "2 answered in time; 3 after; 4 never");
}
