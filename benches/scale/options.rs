//! The command line, and what it asks for at each size.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark names `--only` accepts. A new benchmark adds its name here and a line in
/// `scale.rs` that runs it.
pub const BENCHMARKS: &[&str] = &["provisioning", "steady", "memory", "gateway", "wake"];

/// Memory is also measured at this size when `--users` is left at its default.
const DEFAULT_MEMORY_USERS: usize = 1000;

#[derive(clap::Parser, Debug)]
#[command(
    name = "scale",
    about = "Moltmates benchmarks on the test control plane (issue 7): provisioning speed against a \
             direct-client baseline, steady-state writes, operator and gateway memory, gateway routing \
             latency under load, the wake of an idle user"
)]
pub struct Cli {
    /// Sizes (numbers of MoltmateUsers) for provisioning and steady state [default: 100,500].
    #[arg(long, value_delimiter = ',')]
    users: Option<Vec<usize>>,
    /// Further sizes at which only memory is measured [default: 1000 when --users is not
    /// given, none otherwise].
    #[arg(long, value_delimiter = ',')]
    memory_users: Option<Vec<usize>>,
    /// Benchmarks to run, comma-separated: provisioning, steady, memory, gateway, wake.
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// How long nothing changes in the steady-state window.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    steady_window: Duration,
    /// Concurrent creates, for the users and for the baseline's client alike.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Gateway load: users sending messages [smoke: 20].
    #[arg(long, default_value_t = 200)]
    gateway_users: usize,
    /// Gateway load: messages per second over all users [smoke: 50].
    #[arg(long, default_value_t = 500.0)]
    gateway_rate: f64,
    /// Gateway load: how long messages are injected [smoke: 10s].
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    gateway_duration: Duration,
    /// Wake: how many idle users are woken, one at a time [smoke: 5].
    #[arg(long, default_value_t = 20)]
    wake_repeats: usize,
    /// Wake: the users' `idleTimeout`.
    #[arg(long, default_value = "3s")]
    wake_idle_timeout: String,
    /// Directory of the JSON report and the SVG plots (relative to the repository).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Run the operator under this command, for profiling, e.g. "heaptrack -o target/bench/operator"
    /// (its RSS figures are then the profiled operator's).
    #[arg(long)]
    wrap_operator: Option<String>,
    /// Run the checks of the benchmark's own pure parts, then exit.
    #[arg(long)]
    pub self_test: bool,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Options {
    pub users: Vec<usize>,
    pub memory_users: Vec<usize>,
    pub only: BTreeSet<String>,
    #[serde(serialize_with = "as_seconds")]
    pub steady_window: Duration,
    pub concurrency: usize,
    pub out: PathBuf,
    pub gateway_users: usize,
    pub gateway_rate: f64,
    #[serde(serialize_with = "as_seconds")]
    pub gateway_duration: Duration,
    pub wake_repeats: usize,
    pub wake_idle_timeout: String,
    /// A command the operator runs under (a profiler); empty for none.
    pub wrap_operator: Vec<String>,
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// What to do at one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePlan {
    pub users: usize,
    /// Operator against baseline, with latency figures.
    pub provisioning: bool,
    /// The quiet window and its audit.
    pub steady: bool,
    /// RSS of the operator and the gateway.
    pub memory: bool,
}

impl Cli {
    /// Check the values and fill in the defaults that depend on each other.
    pub fn options(self, repo: &std::path::Path) -> Result<Options, String> {
        let only: BTreeSet<String> = match self.only {
            None => BENCHMARKS.iter().map(|b| b.to_string()).collect(),
            Some(names) => names.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
        };
        if let Some(unknown) = only.iter().find(|n| !BENCHMARKS.contains(&n.as_str())) {
            return Err(format!("--only: unknown benchmark {unknown:?}; known: {}", BENCHMARKS.join(", ")));
        }
        if only.is_empty() {
            return Err("--only: name at least one benchmark".into());
        }
        let memory_users = self.memory_users.unwrap_or_else(|| if self.users.is_none() { vec![DEFAULT_MEMORY_USERS] } else { vec![] });
        let users = self.users.unwrap_or_else(|| vec![100, 500]);
        if let Some(zero) = users.iter().chain(&memory_users).find(|n| **n == 0) {
            return Err(format!("sizes must be at least 1 user (got {zero})"));
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".into());
        }
        if self.steady_window.is_zero() {
            return Err("--steady-window must be longer than 0s".into());
        }
        if self.gateway_users == 0 || self.wake_repeats == 0 {
            return Err("--gateway-users and --wake-repeats must be at least 1".into());
        }
        if !(self.gateway_rate.is_finite() && self.gateway_rate > 0.0) || self.gateway_duration.is_zero() {
            return Err("--gateway-rate and --gateway-duration must be above 0".into());
        }
        if humantime::parse_duration(&self.wake_idle_timeout).is_err() {
            return Err(format!("--wake-idle-timeout: not a duration: {:?} (e.g. 3s)", self.wake_idle_timeout));
        }
        let out = if self.out.is_absolute() { self.out } else { repo.join(self.out) };
        Ok(Options {
            users,
            memory_users,
            only,
            steady_window: self.steady_window,
            concurrency: self.concurrency,
            out,
            gateway_users: self.gateway_users,
            gateway_rate: self.gateway_rate,
            gateway_duration: self.gateway_duration,
            wake_repeats: self.wake_repeats,
            wake_idle_timeout: self.wake_idle_timeout,
            wrap_operator: self.wrap_operator.map(|w| w.split_whitespace().map(str::to_string).collect()).unwrap_or_default(),
        })
    }
}

impl Options {
    pub fn runs(&self, benchmark: &str) -> bool {
        self.only.contains(benchmark)
    }

    /// Every size to run, smallest first, with what to measure there.
    pub fn plans(&self) -> Vec<SizePlan> {
        let (provisioning, steady, memory) = (self.runs("provisioning"), self.runs("steady"), self.runs("memory"));
        let mut sizes: BTreeSet<usize> = BTreeSet::new();
        if provisioning || steady || memory {
            sizes.extend(&self.users);
        }
        if memory {
            sizes.extend(&self.memory_users);
        }
        sizes
            .into_iter()
            .map(|users| {
                let main = self.users.contains(&users);
                SizePlan { users, provisioning: provisioning && main, steady: steady && main, memory }
            })
            .filter(|p| p.provisioning || p.steady || p.memory)
            .collect()
    }

    /// The wake users' `idleTimeout` (checked in `Cli::options`).
    pub fn wake_idle(&self) -> Duration {
        humantime::parse_duration(&self.wake_idle_timeout).unwrap_or_default()
    }

    /// How long RSS is sampled where no steady-state window is run (memory-only sizes, the
    /// gateway): long enough for a few watch events and allocator settling.
    pub fn memory_window(&self) -> Duration {
        self.steady_window.min(Duration::from_secs(30))
    }
}
