//! The command line, and what it asks for at each size.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark names `--only` accepts. A new benchmark adds its name here and a line in
/// `main.rs` that runs it.
pub const BENCHMARKS: &[&str] = &["provisioning", "steady", "memory", "gateway", "wake", "agent", "real-node"];
/// Benchmarks run only when `--only` names them: the real node needs `scripts/node install`,
/// root and the images `scripts/images` built, and takes about 6 minutes.
pub const NOT_DEFAULT: &[&str] = &["real-node"];
/// The chaos runs: not run by default; `--chaos` adds them, `--only chaos` names all three.
pub const CHAOS_RUNS: &[&str] = &["chaos-operator", "chaos-apiserver", "chaos-gateway"];

/// Memory is also measured at this size when `--users` is left at its default.
const DEFAULT_MEMORY_USERS: usize = 1000;

#[derive(clap::Parser, Debug)]
#[command(
    name = "scale",
    about = "Moltmates benchmarks on the test control plane: provisioning speed against a \
             direct-client baseline, steady-state writes, operator and gateway memory, gateway routing \
             latency under load, the wake of an idle user, one agent's size, memory and start; and, when \
             named, start and wake on a real node"
)]
pub struct Cli {
    /// Sizes (numbers of MoltmateUsers) for provisioning and steady state [default: 100,500].
    #[arg(long, value_delimiter = ',')]
    users: Option<Vec<usize>>,
    /// Further sizes at which only memory is measured [default: 1000 when --users is not
    /// given, none otherwise].
    #[arg(long, value_delimiter = ',')]
    memory_users: Option<Vec<usize>>,
    /// Benchmarks to run, comma-separated: provisioning, steady, memory, gateway, wake, agent,
    /// real-node (only when named here: it needs `scripts/node install` and the images); and
    /// the chaos runs chaos-operator, chaos-apiserver, chaos-gateway (`chaos` = all three).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Also run the chaos runs (operator SIGKILLed while users provision, API server stopped
    /// during gateway load, gateway SIGKILLed during benchmark 4's load). Not in the default run.
    #[arg(long)]
    chaos: bool,
    /// Chaos: seed of the random kill moments [default: from the clock; printed, and in the report].
    #[arg(long)]
    chaos_seed: Option<u64>,
    /// Chaos, operator: users provisioned while the operator is killed [smoke: 30].
    #[arg(long, default_value_t = 200)]
    chaos_users: usize,
    /// Chaos, operator: SIGKILLs (each followed by a fresh operator) [smoke: 3].
    #[arg(long, default_value_t = 20)]
    chaos_kills: usize,
    /// Chaos, operator: longest life of an operator before its kill; each is drawn uniformly
    /// from a tenth of this up to it, counted from the operator's start.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    chaos_kill_gap: Duration,
    /// Chaos, API server: how long it stays stopped, in the middle of the load.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    chaos_outage: Duration,
    /// Chaos, API server: users sending messages [smoke: 10].
    #[arg(long, default_value_t = 50)]
    chaos_outage_users: usize,
    /// Chaos, API server: messages per second over all users [smoke: 20].
    #[arg(long, default_value_t = 50.0)]
    chaos_outage_rate: f64,
    /// Chaos, API server: how long messages are injected (the outage sits in the middle) [smoke: 30s].
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    chaos_outage_duration: Duration,
    /// Chaos: how long the system gets to recover: after the last kill, every user Ready
    /// (chaos-operator); once the API server is back, a new user Ready and its message
    /// answered (chaos-apiserver) [default: 120s + 1s per user; 180s].
    #[arg(long, value_parser = humantime::parse_duration)]
    chaos_recovery_deadline: Option<Duration>,
    /// Chaos, gateway: SIGKILLs of the gateway (each restarted at once, same arguments) during
    /// benchmark 4's load (--gateway-users, --gateway-rate, --gateway-duration).
    #[arg(long, default_value_t = 5)]
    chaos_gateway_kills: usize,
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
    /// Gateway cost: messages per second of the loads run under callgrind, gateway and floor
    /// relay alike (0: no instruction counts) [smoke: 5].
    #[arg(long, default_value_t = 10.0)]
    gateway_callgrind_rate: f64,
    /// Gateway cost: how long the loads under callgrind inject messages.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    gateway_callgrind_duration: Duration,
    /// Wake: how many idle users are woken, one at a time [smoke: 5].
    #[arg(long, default_value_t = 20)]
    wake_repeats: usize,
    /// Wake: the users' `idleTimeout`.
    #[arg(long, default_value = "3s")]
    wake_idle_timeout: String,
    /// Agent: starts of each agent binary (the figures are medians) [smoke: 3].
    #[arg(long, default_value_t = 5)]
    agent_starts: usize,
    /// Agent: also measure `moltmate agent` and `moltmate-agent` from this directory, e.g.
    /// target/x86_64-unknown-linux-musl/release (the static build the images ship).
    #[arg(long)]
    agent_binaries: Option<PathBuf>,
    /// Real node: MoltmateUsers started, one at a time, and as many plain pods [smoke: 5].
    #[arg(long, default_value_t = 20)]
    real_node_users: usize,
    /// Real node: wakes of idle users, one at a time, going round the users [smoke: 5].
    #[arg(long, default_value_t = 20)]
    real_node_wakes: usize,
    /// Real node: the users' `idleTimeout` (each is woken once its pod is gone).
    #[arg(long, default_value = "5s")]
    real_node_idle_timeout: String,
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
    pub gateway_callgrind_rate: f64,
    #[serde(serialize_with = "as_seconds")]
    pub gateway_callgrind_duration: Duration,
    pub wake_repeats: usize,
    pub wake_idle_timeout: String,
    pub agent_starts: usize,
    pub agent_binaries: Option<PathBuf>,
    pub real_node_users: usize,
    pub real_node_wakes: usize,
    pub real_node_idle_timeout: String,
    /// A command the operator runs under (a profiler); empty for none.
    pub wrap_operator: Vec<String>,
    pub chaos: ChaosOptions,
}

/// The sizes of the chaos runs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ChaosOptions {
    /// Every random choice of the chaos runs derives from this.
    pub seed: u64,
    pub users: usize,
    pub kills: usize,
    #[serde(serialize_with = "as_seconds")]
    pub kill_gap: Duration,
    #[serde(serialize_with = "as_seconds")]
    pub outage: Duration,
    pub outage_users: usize,
    pub outage_rate: f64,
    #[serde(serialize_with = "as_seconds")]
    pub outage_duration: Duration,
    /// `--chaos-recovery-deadline`, if given (see `operator_deadline`, `apiserver_deadline`).
    pub recovery_deadline: Option<Duration>,
    pub gateway_kills: usize,
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
        let only = selection(self.only.as_deref(), self.chaos)?;
        let memory_users =
            self.memory_users.unwrap_or_else(|| if self.users.is_none() { vec![DEFAULT_MEMORY_USERS] } else { vec![] });
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
        if self.gateway_users == 0 || self.wake_repeats == 0 || self.agent_starts == 0 {
            return Err("--gateway-users, --wake-repeats and --agent-starts must be at least 1".into());
        }
        if !(self.gateway_rate.is_finite() && self.gateway_rate > 0.0) || self.gateway_duration.is_zero() {
            return Err("--gateway-rate and --gateway-duration must be above 0".into());
        }
        if !(self.gateway_callgrind_rate.is_finite() && self.gateway_callgrind_rate >= 0.0)
            || (self.gateway_callgrind_rate > 0.0 && self.gateway_callgrind_duration.is_zero())
        {
            return Err(
                "--gateway-callgrind-rate must be 0 or more, with a --gateway-callgrind-duration above 0".into()
            );
        }
        if self.real_node_users == 0 || self.real_node_wakes == 0 {
            return Err("--real-node-users and --real-node-wakes must be at least 1".into());
        }
        if humantime::parse_duration(&self.real_node_idle_timeout).is_err() {
            return Err(format!(
                "--real-node-idle-timeout: not a duration: {:?} (e.g. 5s)",
                self.real_node_idle_timeout
            ));
        }
        if humantime::parse_duration(&self.wake_idle_timeout).is_err() {
            return Err(format!("--wake-idle-timeout: not a duration: {:?} (e.g. 3s)", self.wake_idle_timeout));
        }
        let chaos = ChaosOptions {
            seed: self.chaos_seed.unwrap_or_else(clock_seed),
            users: self.chaos_users,
            kills: self.chaos_kills,
            kill_gap: self.chaos_kill_gap,
            outage: self.chaos_outage,
            outage_users: self.chaos_outage_users,
            outage_rate: self.chaos_outage_rate,
            outage_duration: self.chaos_outage_duration,
            recovery_deadline: self.chaos_recovery_deadline,
            gateway_kills: self.chaos_gateway_kills,
        };
        chaos.check()?;
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
            gateway_callgrind_rate: self.gateway_callgrind_rate,
            gateway_callgrind_duration: self.gateway_callgrind_duration,
            wake_repeats: self.wake_repeats,
            wake_idle_timeout: self.wake_idle_timeout,
            agent_starts: self.agent_starts,
            agent_binaries: self.agent_binaries.map(|d| if d.is_absolute() { d } else { repo.join(d) }),
            real_node_users: self.real_node_users,
            real_node_wakes: self.real_node_wakes,
            real_node_idle_timeout: self.real_node_idle_timeout,
            wrap_operator: self
                .wrap_operator
                .map(|w| w.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            chaos,
        })
    }
}

/// The runs named by `--only` (`chaos` standing for every chaos run), plus the chaos runs
/// with `--chaos`; without `--only`, the benchmarks (not the chaos runs).
pub fn selection(only: Option<&[String]>, chaos: bool) -> Result<BTreeSet<String>, String> {
    let mut selected: BTreeSet<String> = match only {
        None => BENCHMARKS.iter().filter(|b| !NOT_DEFAULT.contains(b)).map(|b| b.to_string()).collect(),
        Some(names) => {
            let mut selected = BTreeSet::new();
            for name in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                if name == "chaos" {
                    selected.extend(CHAOS_RUNS.iter().map(|r| r.to_string()));
                } else if BENCHMARKS.contains(&name) || CHAOS_RUNS.contains(&name) {
                    selected.insert(name.to_string());
                } else {
                    return Err(format!(
                        "--only: unknown benchmark {name:?}; known: {}, {}, chaos",
                        BENCHMARKS.join(", "),
                        CHAOS_RUNS.join(", ")
                    ));
                }
            }
            selected
        }
    };
    if chaos {
        selected.extend(CHAOS_RUNS.iter().map(|r| r.to_string()));
    }
    if selected.is_empty() {
        return Err("--only: name at least one benchmark".into());
    }
    Ok(selected)
}

/// A seed when none is given: the clock's nanoseconds.
fn clock_seed() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
}

impl ChaosOptions {
    /// chaos-operator: from the last kill until every user must be Ready.
    pub fn operator_deadline(&self) -> Duration {
        self.recovery_deadline.unwrap_or(Duration::from_secs(120 + self.users as u64))
    }

    /// chaos-apiserver: from the API server's return until the new user's message must be answered.
    pub fn apiserver_deadline(&self) -> Duration {
        self.recovery_deadline.unwrap_or(Duration::from_secs(180))
    }

    fn check(&self) -> Result<(), String> {
        if self.users == 0 || self.kills == 0 || self.outage_users == 0 || self.gateway_kills == 0 {
            return Err(
                "--chaos-users, --chaos-kills, --chaos-outage-users and --chaos-gateway-kills must be at least 1"
                    .into(),
            );
        }
        if self.kill_gap < Duration::from_millis(100) {
            return Err(format!("--chaos-kill-gap must be at least 100ms (got {:?})", self.kill_gap));
        }
        if self.recovery_deadline.is_some_and(|d| d.is_zero()) {
            return Err("--chaos-recovery-deadline must be above 0".into());
        }
        if !(self.outage_rate.is_finite() && self.outage_rate > 0.0) {
            return Err("--chaos-outage-rate must be above 0".into());
        }
        if self.outage.is_zero() || self.outage >= self.outage_duration {
            return Err(format!(
                "--chaos-outage ({:?}) must be above 0 and shorter than --chaos-outage-duration ({:?}): the load runs before and after it",
                self.outage, self.outage_duration
            ));
        }
        Ok(())
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

    /// The real-node users' `idleTimeout` (checked in `Cli::options`).
    pub fn real_node_idle(&self) -> Duration {
        humantime::parse_duration(&self.real_node_idle_timeout).unwrap_or_default()
    }

    /// How long RSS is sampled where no steady-state window is run (memory-only sizes, the
    /// gateway): long enough for a few watch events and allocator settling.
    pub fn memory_window(&self) -> Duration {
        self.steady_window.min(Duration::from_secs(30))
    }
}

pub fn self_test() {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    let default = selection(None, false).unwrap();
    assert!(default.contains("gateway") && !default.iter().any(|r| r.starts_with("chaos")), "{default:?}");
    assert!(!default.contains("real-node"), "the real node only when named: {default:?}");
    let with_chaos = selection(None, true).unwrap();
    assert_eq!(with_chaos.len(), BENCHMARKS.len() - NOT_DEFAULT.len() + CHAOS_RUNS.len());
    assert!(selection(Some(&names(&["real-node"])), false).unwrap().contains("real-node"));
    let only_chaos = selection(Some(&names(&["chaos"])), false).unwrap();
    assert_eq!(
        only_chaos.iter().map(String::as_str).collect::<Vec<_>>(),
        vec!["chaos-apiserver", "chaos-gateway", "chaos-operator"]
    );
    let one = selection(Some(&names(&["wake", "chaos-gateway"])), false).unwrap();
    assert_eq!(one.len(), 2);
    assert!(selection(Some(&names(&["chaos-nope"])), false).unwrap_err().contains("unknown benchmark"));
    assert!(selection(Some(&names(&[" "])), false).is_err());
}
