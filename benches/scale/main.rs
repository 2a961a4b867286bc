//! The benchmarks on the test control plane: `scripts/bench --help`.
//!
//! A plain binary (`harness = false`), never run by `cargo test` or CI. It prints a table of
//! every figure with its target, and writes `report.json` and SVG plots to `--out`. The chaos
//! runs (`--chaos`, `--only chaos`) are in `chaos` and the modules it names.
//!
//! Adding a benchmark: its name in `options::BENCHMARKS`, a module here with
//! `async fn run(&Options, &mut Report)` (reusing `cluster`, `gateway`, `rss`, `cpu`, `audit`,
//! `stats`, `svg`), and a line in `run` below.

#[path = "../../tests/support/mod.rs"]
mod support;

mod agent;
mod audit;
mod census;
mod chaos;
mod chaos_gateway;
mod chaos_operator;
mod cluster;
mod cpu;
mod floor_relay;
mod gateway;
mod gateway_cost;
mod gateway_load;
mod operator_suite;
mod options;
mod provisioning;
mod real_node;
mod report;
mod rss;
mod stats;
mod svg;
mod wake;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use options::{Cli, Options};
use report::Report;

fn main() -> ExitCode {
    // The gateway benchmark starts this binary again as its floor relay.
    if std::env::args().nth(1).as_deref() == Some(floor_relay::SUBCOMMAND) {
        return floor_relay::main(std::env::args().skip(1));
    }
    let cli = Cli::parse();
    if cli.self_test {
        let passed = self_test();
        println!("self-test: {passed} passed, 0 failed");
        return ExitCode::SUCCESS;
    }
    let options = match cli.options(Path::new(support::REPO)) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("moltmate binary under test: {}", support::MOLTMATE);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(run(options))
}

async fn run(options: Options) -> ExitCode {
    let mut report = Report::new(&options, Path::new(support::REPO));
    if ["provisioning", "steady", "memory"].iter().any(|b| options.runs(b)) {
        operator_suite::run(&options, &mut report).await;
    }
    if options.runs("gateway") {
        gateway_load::run(&options, &mut report).await;
    }
    if options.runs("wake") {
        wake::run(&options, &mut report).await;
    }
    if options.runs("agent") {
        agent::run(&options, &mut report).await;
    }
    if options.runs("real-node") {
        real_node::run(&options, &mut report).await;
    }
    if options.only.iter().any(|run| run.starts_with("chaos")) {
        chaos::run(&options, &mut report).await;
    }

    println!("\n{}", report.table());
    match report.write(&options.out) {
        Ok(path) => println!("report: {}", path.display()),
        Err(e) => {
            eprintln!("error: writing the report to {}: {e}", options.out.display());
            return ExitCode::FAILURE;
        }
    }
    // A missed target is a result, not a failure; a benchmark that could not run is.
    if report.has_errors() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

/// Checks of the pure parts (a bench target has no test harness); how many modules passed
/// (a failed check panics).
fn self_test() -> usize {
    let checks: &[fn()] = &[
        stats::self_test,
        agent::self_test,
        rss::self_test,
        cpu::self_test,
        audit::self_test,
        svg::self_test,
        report::self_test,
        gateway_load::self_test,
        floor_relay::self_test,
        gateway_cost::self_test,
        wake::self_test,
        options::self_test,
        chaos::self_test,
        census::self_test,
        support::apiserver::self_test,
        chaos_gateway::self_test,
        chaos_operator::self_test,
        real_node::self_test,
    ];
    for check in checks {
        check();
    }
    checks.len()
}
