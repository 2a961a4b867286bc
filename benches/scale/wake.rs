//! Benchmark 5, wake: an idle user's message until its reply, the node stand-in starting the
//! agent at once. N users with a short `idleTimeout` go Idle; then each gets one message in
//! turn (one wake at a time, so the figures are latencies, not contention).
//!
//! Per wake (wall-clock microseconds, the sources of `gateway_load`):
//! - reply time: the message injected → the gateway's `sendMessage` (recording proxy);
//! - the agent's own turn: its log, `turn received` → `turn answered`;
//! - control-plane part = reply time − the agent's turn. It still holds the agent process's
//!   start (exec until its `agent listening` line, which no log can show): an upper bound.
//! - the split: inject → gateway receives; receive → `agent listening` (gateway stamps
//!   activity, operator recreates the pod, scheduler, node starts the agent); `agent
//!   listening` → `turn received` (node's readiness check and pod status, gateway sees the pod
//!   Ready with its address, posts the turn); `turn answered` → sendMessage.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Value, json};

use crate::gateway_load::{
    Stack, Turn, line_time_us, now_us, panic_text, parse_turns, read_logs, tag_of, tagged, write_plot,
};
use crate::options::Options;
use crate::report::Report;
use crate::{cpu, svg};

/// Telegram ids of the wake users: WAKE_BASE + index.
const WAKE_BASE: i64 = 6_000_000;
/// Target of benchmark 5: control-plane part p99, in milliseconds.
const CONTROL_PLANE_P99_TARGET_MS: f64 = 1500.0;

/// One wake, in microseconds from the injection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    pub reply_us: i64,
    pub control_plane_us: i64,
    pub agent_turn_us: i64,
    pub to_gateway_us: i64,
    pub to_agent_listening_us: i64,
    pub listening_to_turn_us: i64,
    pub answered_to_send_us: i64,
}

/// The figures of one wake from its times; `None` when one is missing.
pub fn wake_of(
    inject_us: i64,
    received_us: Option<i64>,
    listening_us: Option<i64>,
    turn: Turn,
    sent_us: Option<i64>,
) -> Option<Wake> {
    let (recv, listening, sent) = (received_us?, listening_us?, sent_us?);
    let (turn_in, turn_out) = (turn.received_us?, turn.answered_us?);
    let reply = sent - inject_us;
    let agent = turn_out - turn_in;
    Some(Wake {
        reply_us: reply,
        control_plane_us: reply - agent,
        agent_turn_us: agent,
        to_gateway_us: recv - inject_us,
        to_agent_listening_us: listening - recv,
        listening_to_turn_us: turn_in - listening,
        answered_to_send_us: sent - turn_out,
    })
}

/// The first `agent listening` at or after `after_us` in agent log text.
pub fn listening_after(text: &str, after_us: i64) -> Option<i64> {
    text.lines().filter(|l| l.contains("agent listening")).filter_map(line_time_us).find(|t| *t >= after_us)
}

pub async fn run(options: &Options, report: &mut Report) {
    let n = options.wake_repeats;
    eprintln!("== wake: {n} idle users (idleTimeout {}), woken one at a time", options.wake_idle_timeout);
    match std::panic::AssertUnwindSafe(measure(options, report)).catch_unwind().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.error(format!("wake with {n} users: {e}")),
        Err(panic) => report.error(format!("wake with {n} users: panicked: {}", panic_text(&panic))),
    }
}

async fn measure(options: &Options, report: &mut Report) -> Result<(), String> {
    let n = options.wake_repeats;
    let spec = json!({ "profile": "personal", "idleTimeout": options.wake_idle_timeout });
    let users: Vec<(String, i64, Value)> =
        (0..n).map(|i| (format!("wake-{i:03}"), WAKE_BASE + i as i64, spec.clone())).collect();
    let stack = Stack::up("bench-wake", &users).await?;
    let idle_wait = options.wake_idle() + Duration::from_secs(120);
    stack.wait_phase_all(n, &["Idle"], idle_wait).await?;
    eprintln!("   {n} users Idle");

    let meter = cpu::Meter::start(&stack.env.dir);
    let mut injections = Vec::new();
    for (i, (name, id, _)) in users.iter().enumerate() {
        let at_us = now_us();
        let injected =
            stack.telegram.inject_text(*id, &tagged("wake", i as u64)).map_err(|e| format!("inject: {e}"))?;
        let started = Instant::now();
        let timeout = Duration::from_secs(60);
        while stack.recorder.answered(i as u64).is_none() && started.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!("   {name}: answered in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
        injections.push((name.clone(), i as u64, injected.update_id, at_us));
    }
    stack.wait_settled(Duration::from_secs(1), Duration::from_secs(10)).await;
    let cpu = meter.read();
    let records = stack.recorder.take();
    let logs = read_logs(&stack.agent_logs(), "moltmate-wake-");
    let mut turns = HashMap::new();
    for (_, text) in &logs {
        parse_turns(text, &mut turns);
    }
    let mut wakes = Vec::new();
    let mut missing = Vec::new();
    for (name, tag, update_id, at_us) in &injections {
        let prefix = format!("moltmate-{name}-");
        let log = logs.iter().find(|(p, _)| p.file_name().is_some_and(|f| f.to_string_lossy().starts_with(&prefix)));
        let listening = log.and_then(|(_, text)| listening_after(text, *at_us));
        let sent = records.sent.iter().filter(|s| tag_of(&s.text) == Some(*tag)).map(|s| s.at_us).min();
        let turn = turns.get(update_id).copied().unwrap_or_default();
        match wake_of(*at_us, records.received.get(update_id).copied(), listening, turn, sent) {
            Some(w) => wakes.push(w),
            None => missing.push(name.clone()),
        }
    }
    let control = summary_of_wakes(&wakes, |w| w.control_plane_us);
    let reply = summary_of_wakes(&wakes, |w| w.reply_us);
    report.target("wake", n, "control-plane part p99", control.p99_ms, "ms", CONTROL_PLANE_P99_TARGET_MS);
    report.figure("wake", n, "control-plane part p50", control.p50_ms, "ms");
    report.figure("wake", n, "reply time p50", reply.p50_ms, "ms");
    report.figure("wake", n, "reply time p99", reply.p99_ms, "ms");
    report.target("wake", n, "wakes without a full record", missing.len() as f64, "", 0.0);
    report.note_if(cpu::Meter::busy_note(&cpu, &format!("the wake runs of {n} users")));
    let field = |f: fn(&Wake) -> i64| serde_json::to_value(summary_of_wakes(&wakes, f)).unwrap_or_default();
    report.section("wake", n, json!({
        "wakes": n,
        "idle_timeout": options.wake_idle_timeout,
        "measured": wakes.len(),
        "missing": missing,
        "control_plane_ms": field(|w| w.control_plane_us),
        "reply_ms": field(|w| w.reply_us),
        "agent_turn_ms": field(|w| w.agent_turn_us),
        "inject_to_gateway_ms": field(|w| w.to_gateway_us),
        "gateway_to_agent_listening_ms": field(|w| w.to_agent_listening_us),
        "agent_listening_to_turn_ms": field(|w| w.listening_to_turn_us),
        "answered_to_send_ms": field(|w| w.answered_to_send_us),
        "cpu": cpu,
        "method": "reply = inject → sendMessage (recording proxy); control-plane part = reply − the agent's turn (its log); includes the agent process's start",
    }));
    let ms = |f: fn(&Wake) -> i64| wakes.iter().map(|w| f(w) as f64 / 1000.0).collect::<Vec<f64>>();
    let (c, r, l, t) = (
        ms(|w| w.control_plane_us),
        ms(|w| w.reply_us),
        ms(|w| w.to_agent_listening_us),
        ms(|w| w.listening_to_turn_us),
    );
    let plot = svg::cdf(
        &format!("Wake of an idle user ({n} wakes)"),
        "milliseconds",
        &[
            svg::Series { label: format!("control-plane part (p99 {:.0} ms)", control.p99_ms), values: &c },
            svg::Series { label: "reply time".into(), values: &r },
            svg::Series { label: "gateway receive → agent listening".into(), values: &l },
            svg::Series { label: "agent listening → turn received".into(), values: &t },
        ],
    );
    write_plot(options, report, &format!("wake-{n}.svg"), &plot);
    eprintln!(
        "   control-plane part p50 {:.0} ms p99 {:.0} ms; reply p99 {:.0} ms",
        control.p50_ms, control.p99_ms, reply.p99_ms
    );
    Ok(())
}

fn summary_of_wakes(wakes: &[Wake], f: impl Fn(&Wake) -> i64) -> crate::stats::Summary {
    crate::stats::summarize(&wakes.iter().map(|w| Duration::from_micros(f(w).max(0) as u64)).collect::<Vec<_>>())
}

pub fn self_test() {
    let turn = Turn { received_us: Some(900), answered_us: Some(950) };
    let w = wake_of(0, Some(10), Some(800), turn, Some(1_000)).expect("complete");
    assert_eq!(
        (
            w.reply_us,
            w.control_plane_us,
            w.agent_turn_us,
            w.to_agent_listening_us,
            w.listening_to_turn_us,
            w.answered_to_send_us
        ),
        (1_000, 950, 50, 790, 100, 50)
    );
    assert_eq!(wake_of(0, None, Some(1), turn, Some(2)), None);
    let log = "2026-11-25T12:00:00.000001Z  INFO agent: agent listening user=a\n2026-11-25T12:00:05.000000Z  INFO agent: agent listening user=a\n";
    let second = line_time_us(log.lines().nth(1).unwrap_or_default());
    assert_eq!(listening_after(log, line_time_us(log).unwrap_or_default() + 1), second);
}
