//! CPU time of every process of a test environment (API server, etcd, controllers, the
//! operator, node stand-ins) and of this bench client: on 2 cores, where a run's time went.

use std::collections::BTreeMap;
use std::path::Path;

/// /proc/PID/stat counts in USER_HZ, which Linux fixes at 100 for user space.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds used so far by each named process.
#[derive(Debug, Clone, Default)]
pub struct Snapshot(BTreeMap<String, f64>);

/// utime + stime in ticks, from the text of /proc/PID/stat (fields 14 and 15; the command
/// name in field 2 may hold spaces and parentheses, so count from the last `)`).
pub fn parse_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field N is at index N - 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU seconds `pid` has used so far (all its threads).
pub fn process_seconds(pid: u32) -> Option<f64> {
    Some(parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)? as f64 / TICKS_PER_SECOND)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| pid.to_string())
}

/// Every live process listed in `DIR/pids` (`PID [NAME]` lines), by name, plus this process.
pub fn snapshot(env_dir: &Path) -> Snapshot {
    let mut seconds = BTreeMap::new();
    let listed = std::fs::read_to_string(env_dir.join("pids")).unwrap_or_default();
    let mut entries: Vec<(u32, String)> = listed
        .lines()
        .filter_map(|line| {
            let mut parts = line.split_whitespace();
            let pid: u32 = parts.next()?.parse().ok()?;
            Some((pid, parts.next().map(str::to_string).unwrap_or_else(|| comm(pid))))
        })
        .collect();
    entries.push((std::process::id(), "bench-client".into()));
    for (pid, name) in entries {
        if let Some(s) = process_seconds(pid) {
            *seconds.entry(name).or_insert(0.0) += s;
        }
    }
    Snapshot(seconds)
}

/// CPU seconds used between two snapshots, by process, busiest first.
pub fn used(before: &Snapshot, after: &Snapshot) -> Vec<(String, f64)> {
    let mut used: Vec<(String, f64)> = after
        .0
        .iter()
        .map(|(name, s)| (name.clone(), s - before.0.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, s)| *s > 0.0)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    used
}

/// CPU seconds all processes of the machine have used since boot (busy time, all cores).
pub fn machine_busy() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_proc_stat(&stat).unwrap_or(0) as f64 / TICKS_PER_SECOND
}

/// Busy ticks (everything but idle and iowait) from the `cpu` line of /proc/stat.
pub fn parse_proc_stat(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let all: u64 = ticks.iter().take(8).sum();
    Some(all - ticks.get(3)? - ticks.get(4).copied().unwrap_or(0))
}

/// Where the CPU of a stretch of time went: the environment's processes, this client,
/// and everything else on the machine (others' builds and tests: a busy machine).
pub struct Meter {
    env_dir: std::path::PathBuf,
    before: Snapshot,
    machine_before: f64,
    started: std::time::Instant,
}

impl Meter {
    pub fn start(env_dir: &Path) -> Meter {
        Meter {
            env_dir: env_dir.to_path_buf(),
            before: snapshot(env_dir),
            machine_before: machine_busy(),
            started: std::time::Instant::now(),
        }
    }

    /// CPU seconds by process since `start`, plus `other processes` and the machine's load.
    pub fn read(&self) -> serde_json::Value {
        let used = used(&self.before, &snapshot(&self.env_dir));
        let ours: f64 = used.iter().map(|(_, s)| s).sum();
        let machine = machine_busy() - self.machine_before;
        let wall = self.started.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        serde_json::json!({
            "wall_seconds": round2(wall),
            "cpu_seconds_by_process": as_json(&used),
            "cpu_seconds_other_processes": round2((machine - ours).max(0.0)),
            "machine_busy_fraction": round2(machine / (wall * cores).max(f64::EPSILON)),
        })
    }

    /// A note for the report when other processes used more than a fifth of a core on average.
    pub fn busy_note(reading: &serde_json::Value, what: &str) -> Option<String> {
        let other = reading["cpu_seconds_other_processes"].as_f64()?;
        let wall = reading["wall_seconds"].as_f64()?;
        (other / wall.max(f64::EPSILON) > 0.2)
            .then(|| format!("machine busy during {what}: other processes used {:.2} cores on average ({other:.0} CPU s in {wall:.0} s)", other / wall))
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

pub fn as_json(used: &[(String, f64)]) -> serde_json::Value {
    used.iter().map(|(name, s)| (name.clone(), serde_json::json!(round2(*s)))).collect::<serde_json::Map<_, _>>().into()
}

pub fn self_test() {
    let stat = "4242 (kube apiserver)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0";
    assert_eq!(parse_stat(stat), Some(300));
    assert_eq!(parse_stat("garbage"), None);
    let before = Snapshot(BTreeMap::from([("etcd".to_string(), 1.0)]));
    let after = Snapshot(BTreeMap::from([("etcd".to_string(), 3.5), ("operator".to_string(), 1.0)]));
    assert_eq!(used(&before, &after), vec![("etcd".to_string(), 2.5), ("operator".to_string(), 1.0)]);
    assert_eq!(parse_proc_stat("cpu  10 1 5 100 4 1 1 0 0 0\ncpu0 1 1 1 1 1 1 1 1\n"), Some(18));
}
