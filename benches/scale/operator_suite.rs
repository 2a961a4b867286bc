//! Benchmarks 1–3, which share one provisioned cluster per size: provisioning (operator
//! against baseline), the steady-state window, and the memory of the operator and gateway.
//!
//! Per size: the baseline on a fresh control plane, torn down; then the operator on another
//! fresh one (identical components, the same empty start), which then stays for the
//! steady-state window and the gateway.

use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::{Value, json};

use crate::cluster::{Cluster, wait_quiet};
use crate::gateway::Gateway;
use crate::options::{Options, SizePlan};
use crate::provisioning::{self, Outcome};
use crate::report::Report;
use crate::rss::{self, Sampler};
use crate::support::OPERATOR_USER;
use crate::{audit, cpu, svg};

/// Target of benchmark 1: operator / baseline, for the total time and for the p99 latency.
const RATIO_TARGET: f64 = 1.1;
/// Target of benchmark 3, for the operator and for the gateway.
const RSS_TARGET_MIB: f64 = 64.0;
const RSS_EVERY: Duration = Duration::from_millis(200);
/// Target of the operator's peak RSS growth from the smallest to the largest size measured
/// (`--users 100,500,1000,2000`), per 100 users: what keeps 10,000 users under 128 MiB.
const PEAK_GROWTH_TARGET_MIB: f64 = 1.0;
/// The size the operator's peak is projected to, along that growth, and its target.
const PROJECTED_USERS: usize = 10_000;
const PROJECTED_TARGET_MIB: f64 = 128.0;

/// Steady and peak RSS per size, for the growth figures at the end.
#[derive(Default)]
pub struct Growth {
    operator: Vec<(usize, f64, f64)>,
    gateway: Vec<(usize, f64, f64)>,
}

pub async fn run(options: &Options, report: &mut Report) {
    let mut growth = Growth::default();
    for plan in options.plans() {
        eprintln!("== {} users: {}", plan.users, describe(&plan));
        let baseline = if plan.provisioning {
            match std::panic::AssertUnwindSafe(baseline(options, plan.users)).catch_unwind().await {
                Ok(Ok(b)) => Some(b),
                Ok(Err(e)) => {
                    report.error(format!("baseline at {} users: {e}", plan.users));
                    None
                }
                Err(panic) => {
                    report.error(format!("baseline at {} users: panicked: {}", plan.users, panic_text(&panic)));
                    None
                }
            }
        } else {
            None
        };
        let run =
            std::panic::AssertUnwindSafe(operator(options, plan, baseline, report, &mut growth)).catch_unwind().await;
        match run {
            Ok(Ok(())) => {}
            Ok(Err(e)) => report.error(format!("operator at {} users: {e}", plan.users)),
            Err(panic) => report.error(format!("operator at {} users: panicked: {}", plan.users, panic_text(&panic))),
        }
        // What is measured so far survives a later failure.
        if let Err(e) = report.write(&options.out) {
            eprintln!("error: writing the report: {e}");
        }
    }
    growth.report(report);
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

fn describe(plan: &SizePlan) -> String {
    let parts = [(plan.provisioning, "provisioning"), (plan.steady, "steady"), (plan.memory, "memory")];
    parts.iter().filter(|(on, _)| *on).map(|(_, name)| *name).collect::<Vec<_>>().join(", ")
}

struct Baseline {
    outcome: Outcome,
    cpu: Value,
    nodes: usize,
}

async fn baseline(options: &Options, users: usize) -> Result<Baseline, String> {
    let cluster = Cluster::up(&format!("bench-base-{users}"), users).await;
    let meter = cpu::Meter::start(cluster.dir());
    eprintln!("   baseline: {users} users through a direct client ({} nodes)", cluster.node_count());
    let outcome = provisioning::baseline_run(&cluster.admin, users, options.concurrency).await?;
    eprintln!("   baseline: {} Ready in {:.1}s", outcome.latencies.len(), outcome.total.as_secs_f64());
    let cpu = meter.read();
    Ok(Baseline { outcome, cpu, nodes: cluster.node_count() })
}

async fn operator(
    options: &Options,
    plan: SizePlan,
    baseline: Option<Baseline>,
    report: &mut Report,
    growth: &mut Growth,
) -> Result<(), String> {
    let users = plan.users;
    let mut cluster = Cluster::up(&format!("bench-op-{users}"), users).await;
    let audit_log = cluster.env.audit_log();
    let operator_started = Instant::now();
    let pid = cluster.start_operator(&options.wrap_operator).await;
    let sampler = Sampler::start(pid, RSS_EVERY);

    // Provisioning.
    eprintln!("   operator: {users} users ({} nodes)", cluster.node_count());
    let meter = cpu::Meter::start(cluster.dir());
    let audit_start = audit::offset(&audit_log);
    let outcome = provisioning::operator_run(&cluster.admin, users, options.concurrency).await?;
    eprintln!("   operator: {} Ready in {:.1}s", outcome.latencies.len(), outcome.total.as_secs_f64());
    let provisioning_cpu = meter.read();
    report.note_if(cpu::Meter::busy_note(&provisioning_cpu, &format!("the operator's provisioning of {users}")));
    let settled = wait_quiet(&audit_log, OPERATOR_USER, Duration::from_secs(3), Duration::from_secs(120)).await?;
    let provisioned = Instant::now();
    let writes = audit::tally(&audit::entries_after(&audit_log, audit_start), OPERATOR_USER);
    if !outcome.not_ready.is_empty() {
        report.error(format!(
            "{} of {users} users not Ready within {:?} (e.g. {:?})",
            outcome.not_ready.len(),
            provisioning::deadline(users),
            &outcome.not_ready[..outcome.not_ready.len().min(5)]
        ));
    }
    if plan.provisioning {
        provisioning_section(
            options,
            report,
            users,
            &outcome,
            baseline,
            &writes,
            provisioning_cpu,
            cluster.node_count(),
        );
    }

    // The steady-state window (or, for memory alone, a shorter sample of the quiet operator).
    let window = if plan.steady { options.steady_window } else { options.memory_window() };
    eprintln!("   steady: {}s with no change", window.as_secs());
    let steady_start = Instant::now();
    let audit_window = audit::offset(&audit_log);
    let meter = cpu::Meter::start(cluster.dir());
    tokio::time::sleep(window).await;
    let steady_end = Instant::now();
    if plan.steady {
        let tally = audit::tally(&audit::entries_after(&audit_log, audit_window), OPERATOR_USER);
        report.target("steady", users, "operator writes in window", tally.write_count() as f64, "", 0.0);
        report.figure("steady", users, "operator non-watch reads", tally.read_count() as f64, "");
        report.figure("steady", users, "operator Lease writes", tally.lease_writes as f64, "");
        let cpu = meter.read();
        report.note_if(cpu::Meter::busy_note(&cpu, &format!("the steady window at {users}")));
        report.section(
            "steady",
            users,
            json!({
                "window_seconds": window.as_secs_f64(),
                "settle_seconds": settled.as_secs_f64(),
                "operator": tally,
                "cpu": cpu,
            }),
        );
    }

    if plan.memory {
        let provisioning_rss = rss::phase(&sampler.between(operator_started, provisioned));
        let steady_rss = rss::phase(&sampler.between(steady_start, steady_end));
        let (peak, steady) = (steady_rss.map_or(0.0, |p| p.hwm_mib), steady_rss.map_or(0.0, |p| p.median_rss_mib));
        report.target("memory", users, "operator peak RSS (VmHWM)", peak, "MiB", RSS_TARGET_MIB);
        report.figure("memory", users, "operator steady RSS", steady, "MiB");
        growth.operator.push((users, steady, peak));
        // The same caches without the provisioning behind them: what the caches themselves
        // hold, apart from what the allocator kept from the churn of provisioning.
        let restarted = restarted_operator_rss(&mut cluster, options).await;
        if let Some(r) = &restarted {
            report.figure("memory", users, "operator RSS after a restart", r.median_rss_mib, "MiB");
        }
        let gateway = gateway_memory(&cluster, options.memory_window()).await;
        let mut section = json!({
            "operator": { "provisioning": provisioning_rss, "steady": steady_rss, "restarted": restarted },
            "provisioned_in_seconds": outcome.total.as_secs_f64(),
        });
        match gateway {
            Ok((value, gw_steady, gw_peak, readyz)) => {
                if !readyz {
                    report.error(format!(
                        "gateway at {users} users: polls Telegram (caches synced) but /readyz never answered 200: \
                         its readiness task and its main path both wait on the same reflector stores, and a store wakes one waiter only"
                    ));
                }
                report.target("memory", users, "gateway peak RSS (VmHWM)", gw_peak, "MiB", RSS_TARGET_MIB);
                report.figure("memory", users, "gateway steady RSS", gw_steady, "MiB");
                growth.gateway.push((users, gw_steady, gw_peak));
                section["gateway"] = value;
            }
            Err(e) => report.error(format!("gateway memory at {users} users: {e}")),
        }
        report.section("memory", users, section);
    }
    drop(sampler);
    // A wrapped operator (a profiler) gets to write its output.
    cluster.stop_operator();
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn provisioning_section(
    options: &Options,
    report: &mut Report,
    users: usize,
    outcome: &Outcome,
    baseline: Option<Baseline>,
    writes: &audit::Tally,
    cpu: Value,
    nodes: usize,
) {
    let summary = outcome.summary();
    report.figure("provisioning", users, "operator total", outcome.total.as_secs_f64(), "s");
    report.figure("provisioning", users, "operator users/s", outcome.users_per_second(), "");
    report.figure("provisioning", users, "operator latency p50", summary.p50_ms / 1000.0, "s");
    report.figure("provisioning", users, "operator latency p99", summary.p99_ms / 1000.0, "s");
    let mut operator = outcome.to_json();
    operator["writes"] = json!(writes.writes);
    operator["writes_per_user"] = json!(writes.write_count() as f64 / users as f64);
    operator["reads"] = json!(writes.reads);
    operator["cpu"] = cpu;
    let mut section =
        json!({ "users": users, "concurrency": options.concurrency, "nodes": nodes, "operator": operator });

    let mut series = Vec::new();
    let operator_secs: Vec<f64> = stats_seconds(outcome);
    series.push(svg::Series { label: label("operator", outcome), values: &operator_secs });
    let baseline_secs: Vec<f64>;
    if let Some(b) = &baseline {
        let bs = b.outcome.summary();
        let ratio = outcome.total.as_secs_f64() / b.outcome.total.as_secs_f64().max(f64::EPSILON);
        let p99_ratio = summary.p99_ms / bs.p99_ms.max(f64::EPSILON);
        report.figure("provisioning", users, "baseline total", b.outcome.total.as_secs_f64(), "s");
        report.figure("provisioning", users, "baseline latency p99", bs.p99_ms / 1000.0, "s");
        report.target("provisioning", users, "operator/baseline total time", ratio, "x", RATIO_TARGET);
        report.target("provisioning", users, "operator/baseline latency p99", p99_ratio, "x", RATIO_TARGET);
        report.note_if(cpu::Meter::busy_note(&b.cpu, &format!("the baseline's provisioning of {users}")));
        let mut base = b.outcome.to_json();
        base["cpu"] = b.cpu.clone();
        base["nodes"] = json!(b.nodes);
        section["baseline"] = base;
        section["ratio_total"] = json!(ratio);
        section["ratio_p99"] = json!(p99_ratio);
        baseline_secs = stats_seconds(&b.outcome);
        series.push(svg::Series { label: label("baseline", &b.outcome), values: &baseline_secs });
    }
    let plot = format!("provisioning-{users}.svg");
    let title = format!("Provisioning {users} users: creation to Ready (concurrency {})", options.concurrency);
    match std::fs::create_dir_all(&options.out)
        .and_then(|_| std::fs::write(options.out.join(&plot), svg::cdf(&title, "seconds", &series)))
    {
        Ok(()) => section["plot"] = json!(plot),
        Err(e) => report.error(format!("writing {plot}: {e}")),
    }
    report.section("provisioning", users, section);
}

fn stats_seconds(outcome: &Outcome) -> Vec<f64> {
    outcome.latencies.iter().map(Duration::as_secs_f64).collect()
}

fn label(who: &str, outcome: &Outcome) -> String {
    let s = outcome.summary();
    format!(
        "{who}: p50 {:.2}s, p99 {:.2}s, all in {:.1}s",
        s.p50_ms / 1000.0,
        s.p99_ms / 1000.0,
        outcome.total.as_secs_f64()
    )
}

/// A new operator on the provisioned cluster: RSS for `window` after it is ready.
async fn restarted_operator_rss(cluster: &mut Cluster, options: &Options) -> Option<rss::Phase> {
    let window = options.memory_window();
    let pid = cluster.restart_operator(&options.wrap_operator).await;
    let sampler = Sampler::start(pid, RSS_EVERY);
    let ready = Instant::now();
    eprintln!("   operator: restarted; sampling RSS for {}s", window.as_secs());
    tokio::time::sleep(window).await;
    rss::phase(&sampler.between(ready, Instant::now()))
}

/// The gateway with every user of the cluster in its caches and no traffic: RSS from its
/// start until `window` after it is ready. (section, steady MiB, peak MiB)
async fn gateway_memory(cluster: &Cluster, window: Duration) -> Result<(Value, f64, f64, bool), String> {
    let started = Instant::now();
    let gateway = Gateway::spawn(&cluster.env, &[]).await?;
    let sampler = Sampler::start(gateway.pid(), RSS_EVERY);
    let (ready, readyz) = gateway.wait_synced(Duration::from_secs(60)).await?;
    eprintln!(
        "   gateway: caches synced in {:.1}s (/readyz {}); sampling RSS for {}s",
        (ready - started).as_secs_f64(),
        if readyz { "200" } else { "NOT 200" },
        window.as_secs()
    );
    tokio::time::sleep(window).await;
    let startup = rss::phase(&sampler.between(started, ready));
    let steady = rss::phase(&sampler.between(ready, Instant::now())).ok_or("the gateway exited")?;
    let value = json!({ "synced_after_seconds": (ready - started).as_secs_f64(), "readyz_200": readyz, "startup": startup, "steady": steady });
    Ok((value, steady.median_rss_mib, steady.hwm_mib, readyz))
}

impl Growth {
    /// How RSS grows from the smallest to the largest size measured.
    fn report(&self, report: &mut Report) {
        let mut value = json!({});
        for (name, points) in [("operator", &self.operator), ("gateway", &self.gateway)] {
            let (Some(first), Some(last)) = (points.first(), points.last()) else { continue };
            if last.0 <= first.0 {
                continue;
            }
            let per_100 = (last.1 - first.1) / (last.0 - first.0) as f64 * 100.0;
            report.figure(
                "memory",
                last.0,
                &format!("{name} steady RSS growth per 100 users ({}→{})", first.0, last.0),
                per_100,
                "MiB",
            );
            // The operator's peak must stay small at any size: how it grows, and where that
            // growth takes it at PROJECTED_USERS.
            let peak_per_100 = (last.2 - first.2) / (last.0 - first.0) as f64 * 100.0;
            let projected = last.2 + peak_per_100 * (PROJECTED_USERS.saturating_sub(last.0)) as f64 / 100.0;
            if name == "operator" {
                let span = format!("({}→{})", first.0, last.0);
                let growth_label = format!("operator peak RSS growth per 100 users {span}");
                report.target("memory", last.0, &growth_label, peak_per_100, "MiB", PEAK_GROWTH_TARGET_MIB);
                let projection_label = format!("operator peak RSS projected to {PROJECTED_USERS} users {span}");
                report.target("memory", PROJECTED_USERS, &projection_label, projected, "MiB", PROJECTED_TARGET_MIB);
            }
            value[name] = json!({
                "from_users": first.0, "to_users": last.0,
                "steady_mib": [first.1, last.1], "peak_mib": [first.2, last.2],
                "steady_mib_per_100_users": per_100,
                "peak_mib_per_100_users": peak_per_100,
                "peak_mib_projected": { "users": PROJECTED_USERS, "mib": projected },
                "points": points.iter().map(|(u, s, p)| json!({ "users": u, "steady_mib": s, "peak_mib": p })).collect::<Vec<_>>(),
            });
        }
        report.section("memory", "growth", value);
    }
}
