//! The chaos runs (`--chaos`, or `--only chaos`): the same harness, with faults
//! injected at seeded random moments.
//!
//! - `chaos-operator` (`chaos_operator`): the operator SIGKILLed again and again while users
//!   provision; then everything must converge, with no duplicate or orphaned object and no
//!   PersistentVolumeClaim ever deleted.
//! - `chaos-apiserver` and `chaos-gateway` (`chaos_gateway`): the API server stopped in the
//!   middle of a gateway load, and the gateway SIGKILLed during benchmark 4's load; no message
//!   may be lost.
//!
//! Every random choice derives from one seed (`--chaos-seed`, printed and in the report), each
//! run from its own stream of it, so that a run repeats alone with the same moments.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use serde_json::json;

use crate::gateway_load::panic_text;
use crate::options::Options;
use crate::report::Report;
use crate::support::http_get;
use crate::{chaos_gateway, chaos_operator};

pub async fn run(options: &Options, report: &mut Report) {
    let seed = options.chaos.seed;
    eprintln!("== chaos: seed {seed} (repeat the same moments with --chaos-seed {seed})");
    report.section("chaos", "seed", json!(seed));
    if options.runs("chaos-operator") {
        let run = std::panic::AssertUnwindSafe(chaos_operator::run(options, report)).catch_unwind().await;
        settle(report, "chaos-operator", run);
    }
    if options.runs("chaos-apiserver") {
        let run = std::panic::AssertUnwindSafe(chaos_gateway::apiserver_outage(options, report)).catch_unwind().await;
        settle(report, "chaos-apiserver", run);
    }
    if options.runs("chaos-gateway") {
        let run = std::panic::AssertUnwindSafe(chaos_gateway::gateway_kills(options, report)).catch_unwind().await;
        settle(report, "chaos-gateway", run);
    }
}

/// A run that could not run is a report error (a missed target is only a result).
fn settle(report: &mut Report, name: &str, run: Result<Result<(), String>, Box<dyn std::any::Any + Send>>) {
    match run {
        Ok(Ok(())) => {}
        Ok(Err(e)) => report.error(format!("{name}: {e}")),
        Err(panic) => report.error(format!("{name}: panicked: {}", panic_text(&panic))),
    }
}

// ---------------------------------------------------------------------------------------------
// Pure parts: the random moments.

/// SplitMix64: small, fast, and the same sequence on every machine for a seed.
pub struct Rng(u64);

impl Rng {
    /// The stream of `seed` for one run, named by `run`.
    pub fn new(seed: u64, run: &str) -> Rng {
        let mixed = run.bytes().fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        Rng(mixed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }
}

/// How long each of `kills` successive processes lives before its SIGKILL, counted from its
/// start: uniform between a tenth of `longest` and `longest` (some die while starting, some
/// while working).
pub fn lifetimes(seed: u64, run: &str, kills: usize, longest: Duration) -> Vec<Duration> {
    let mut rng = Rng::new(seed, run);
    (0..kills).map(|_| rng.between(longest / 10, longest)).collect()
}

/// `kills` moments within `window`, one in each of as many equal slots, away from the slots'
/// edges (the middle 80 %): random, yet never two at once, so each restarted process gets
/// time to recover before the next kill.
pub fn moments(seed: u64, run: &str, kills: usize, window: Duration) -> Vec<Duration> {
    let mut rng = Rng::new(seed, run);
    let slot = window / kills.max(1) as u32;
    (0..kills).map(|i| slot * i as u32 + rng.between(slot / 10, slot * 9 / 10)).collect()
}

// ---------------------------------------------------------------------------------------------
// Watching a component's /readyz through a fault.

/// `/readyz` of a local HTTP port, sampled every `every` until dropped: (when, answered 200).
pub struct Probe {
    samples: Arc<Mutex<Vec<(Instant, bool)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    pub fn start(port: u16, every: Duration) -> Probe {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let samples = samples.clone();
            async move {
                loop {
                    let ok = tokio::time::timeout(Duration::from_secs(2), http_get(port, "/readyz"))
                        .await
                        .ok()
                        .flatten()
                        .is_some_and(|(c, _)| c == 200);
                    samples.lock().unwrap_or_else(|e| e.into_inner()).push((Instant::now(), ok));
                    tokio::time::sleep(every).await;
                }
            }
        });
        Probe { samples, task }
    }

    pub fn samples(&self) -> Vec<(Instant, bool)> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first sample at or after `since` that answered 200.
pub fn ready_at(samples: &[(Instant, bool)], since: Instant) -> Option<Instant> {
    samples.iter().find(|(at, ok)| *at >= since && *ok).map(|(at, _)| *at)
}

/// How many samples in [from, to) did not answer 200.
pub fn unready_between(samples: &[(Instant, bool)], from: Instant, to: Instant) -> usize {
    samples.iter().filter(|(at, ok)| *at >= from && *at < to && !*ok).count()
}

pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

pub fn self_test() {
    let a: Vec<u64> = (0..3)
        .map({
            let mut r = Rng::new(7, "x");
            move |_| r.next_u64()
        })
        .collect();
    let b: Vec<u64> = (0..3)
        .map({
            let mut r = Rng::new(7, "x");
            move |_| r.next_u64()
        })
        .collect();
    assert_eq!(a, b, "a seed repeats");
    assert_ne!(Rng::new(7, "x").next_u64(), Rng::new(7, "y").next_u64(), "each run its own stream");
    assert_ne!(Rng::new(7, "x").next_u64(), Rng::new(8, "x").next_u64());
    let mut r = Rng::new(1, "u");
    assert!((0..1000).map(|_| r.unit()).all(|u| (0.0..1.0).contains(&u)));

    let longest = Duration::from_secs(5);
    let l = lifetimes(42, "op", 200, longest);
    assert_eq!(l.len(), 200);
    assert!(l.iter().all(|d| *d >= longest / 10 && *d < longest), "{l:?}");
    assert!(
        l.iter().any(|d| *d < Duration::from_secs(2)) && l.iter().any(|d| *d > Duration::from_secs(4)),
        "spread over the range"
    );
    assert_eq!(l, lifetimes(42, "op", 200, longest));

    let window = Duration::from_secs(60);
    let m = moments(3, "gw", 5, window);
    assert_eq!(m.len(), 5);
    for (i, at) in m.iter().enumerate() {
        let slot = Duration::from_secs(12);
        assert!(*at >= slot * i as u32 + slot / 10 && *at < slot * i as u32 + slot * 9 / 10, "{i}: {at:?}");
    }
    assert!(m.windows(2).all(|w| w[1] - w[0] >= Duration::from_millis(2400)), "never two at once: {m:?}");

    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let samples = [(at(0), true), (at(100), false), (at(200), false), (at(300), true), (at(400), true)];
    assert_eq!(ready_at(&samples, at(50)), Some(at(300)));
    assert_eq!(ready_at(&samples, at(450)), None);
    assert_eq!(unready_between(&samples, at(0), at(300)), 2);
    assert_eq!(secs(Duration::from_micros(1_234_567)), 1.235);
}
