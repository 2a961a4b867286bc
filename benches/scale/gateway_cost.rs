//! What the gateway costs per message, against a floor measured in the same run, and what its
//! routing takes when it has a core of its own.
//!
//! - CPU seconds per message: the process's utime + stime over a load, divided by the messages
//!   injected; for the gateway and for the floor relay (`floor_relay`), each in turn serving the
//!   same agents, the same users and the same load.
//! - Instructions per message: the same process under `valgrind --tool=callgrind`, with
//!   instrumentation switched on only for a (slower) load, so start-up and warm-up are out of
//!   the count. Instruction counts barely move on a busy machine, unlike CPU time.
//! - Pinned: the gateway's threads on one core and every other process of the machine on the
//!   other, so that the routing figure is the gateway's own and not the agents' queueing.

use std::path::{Path, PathBuf};
use std::process::Command;

use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::floor_relay::{self, Route};
use crate::gateway_load::Stack;

/// Target: the gateway's CPU per message at most this many times the floor's.
pub const FLOOR_RATIO_TARGET: f64 = 1.5;

/// Every user's route for the relay: the chat, the agent's pod address and its bearer token
/// (what the gateway derives from the master key and the MoltmateUser's uid).
pub async fn routes(client: &Client, master_key: &str, agent_port: u16) -> Result<Vec<Route>, String> {
    let key = moltmates::token::MasterKey::new(master_key.as_bytes()).map_err(|e| e.to_string())?;
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::all(client.clone());
    let list = users.list(&ListParams::default()).await.map_err(|e| format!("listing users: {e}"))?;
    let pod_list = pods
        .list(&ListParams::default().labels(moltmates::names::LABEL_USER))
        .await
        .map_err(|e| format!("listing pods: {e}"))?;
    let mut routes = Vec::new();
    for user in &list.items {
        let name = user.name_any();
        let namespace = format!("{}{name}", moltmates::names::NAMESPACE_PREFIX);
        let ip = pod_list
            .items
            .iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
            .find_map(|p| p.status.as_ref()?.pod_ip.clone())
            .ok_or_else(|| format!("{name} has no agent pod with an address"))?;
        routes.push(Route {
            chat_id: user.spec.telegram.user_id,
            agent: format!("http://{ip}:{agent_port}"),
            token: key.agent_token(&user.uid().unwrap_or_default()),
        });
    }
    Ok(routes)
}

/// The bench binary again, as the floor relay, in the place of the gateway.
pub fn relay_command(
    wrapper: &[String],
    telegram: &str,
    bot_token: &str,
    broker: &str,
    llm: &str,
    llm_key: &str,
    routes: &Path,
) -> Result<Command, String> {
    let program = std::env::current_exe().map_err(|e| format!("the bench binary: {e}"))?;
    let listen = broker.trim_start_matches("http://");
    let mut args: Vec<String> = vec![program.to_string_lossy().into_owned(), floor_relay::SUBCOMMAND.into()];
    for (flag, value) in [
        ("--telegram", telegram),
        ("--bot-token", bot_token),
        ("--listen", listen),
        ("--llm", llm),
        ("--llm-key", llm_key),
    ] {
        args.extend([flag.to_string(), value.to_string()]);
    }
    args.extend(["--routes".to_string(), routes.to_string_lossy().into_owned()]);
    Ok(wrapped(wrapper, &args))
}

/// `program args` under `wrapper` (nothing: as is).
pub fn wrapped(wrapper: &[String], program_and_args: &[String]) -> Command {
    let all: Vec<&String> = wrapper.iter().chain(program_and_args).collect();
    let mut command = Command::new(all[0]);
    command.args(&all[1..]);
    command
}

// ---------------------------------------------------------------------------------------------
// callgrind

/// valgrind's callgrind with instrumentation off until `callgrind_control -i on`.
pub fn callgrind_wrapper(out_file: &Path) -> Vec<String> {
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        "--instr-atstart=no".into(),
        format!("--callgrind-out-file={}", out_file.display()),
    ]
}

/// Whether valgrind and callgrind_control run here.
pub fn callgrind_available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|p| {
        Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success())
            || Command::new(p).arg("-h").output().is_ok()
    })
}

/// `callgrind_control ARGS PID`, waited for.
pub fn callgrind_control(args: &[&str], pid: u32) -> Result<(), String> {
    let out = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {args:?} {pid}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The instructions counted in a callgrind output (its `summary:` or `totals:` line).
pub fn callgrind_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("summary:").or_else(|| l.strip_prefix("totals:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// The dumps callgrind wrote for `out_file` (`FILE` and `FILE.N`), summed.
pub fn callgrind_dumps(out_file: &Path) -> (u64, Vec<PathBuf>) {
    let (Some(dir), Some(stem)) = (out_file.parent(), out_file.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return (0, Vec::new());
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&stem)))
        .collect();
    files.sort();
    let total = files.iter().filter_map(|f| callgrind_total(&std::fs::read_to_string(f).ok()?)).sum();
    (total, files)
}

/// One load under callgrind: what it counted, over how many messages and seconds.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Load {
    pub instructions: f64,
    pub messages: f64,
    pub seconds: f64,
}

/// A process's instructions split into a cost per message and a cost per second.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Split {
    pub per_message: f64,
    pub per_second: f64,
}

/// Solves instructions = per_message × messages + per_second × seconds for two loads of
/// different rates; None if the loads do not tell the two apart.
pub fn split(a: &Load, b: &Load) -> Option<Split> {
    let det = a.messages * b.seconds - b.messages * a.seconds;
    if det.abs() < f64::EPSILON * (a.messages * b.seconds).abs().max(1.0) {
        return None;
    }
    let per_message = (a.instructions * b.seconds - b.instructions * a.seconds) / det;
    let per_second = (a.messages * b.instructions - b.messages * a.instructions) / det;
    Some(Split { per_message, per_second })
}

/// The functions that cost most in a dump, inclusive, as `callgrind_annotate` prints them.
pub fn annotate(dump: &Path, lines: usize) -> String {
    Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=99"])
        .arg(dump)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().take(lines).collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Cores

/// Every process of the machine that the kernel lets us move, on `cpus` (a `taskset` list);
/// `except` keeps its own. Returns how many were moved.
pub fn pin_all(cpus: &str, except: u32) -> usize {
    let mut moved = 0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == except || is_kernel_thread(pid) {
            continue;
        }
        if pin(pid, cpus) {
            moved += 1;
        }
    }
    moved
}

/// Every thread of `pid` on `cpus`.
pub fn pin(pid: u32, cpus: &str) -> bool {
    Command::new("taskset")
        .args(["--all-tasks", "--cpu-list", "--pid", cpus, &pid.to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn is_kernel_thread(pid: u32) -> bool {
    // Kernel threads have no command line and no memory map of their own.
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty())
}

/// The cores this machine has, as a `taskset` list (`0-1`).
pub fn all_cpus() -> String {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("0-{}", n.saturating_sub(1))
}

/// Per message, in the unit given: `total / messages` (0 for no messages).
pub fn per_message(total: f64, messages: u64) -> f64 {
    if messages == 0 { 0.0 } else { total / messages as f64 }
}

/// The stack's gateway is replaced by the relay for these rounds and put back after; the
/// relay and the wrapped gateway write their routes and dumps into `dir`.
pub fn work_dir(stack: &Stack) -> PathBuf {
    stack.env.dir.join("cost")
}

pub fn self_test() {
    let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 123456\n\nfn=main\n1 5\ntotals: 123456\n";
    assert_eq!(callgrind_total(dump), Some(123456));
    assert_eq!(callgrind_total("events: Ir\n"), None);
    assert_eq!(per_message(3.0, 0), 0.0);
    // 1,000 per message and 50 per second: 200 messages in 22 s, 400 in 21 s.
    let (a, b) = (
        Load { instructions: 201_100.0, messages: 200.0, seconds: 22.0 },
        Load { instructions: 401_050.0, messages: 400.0, seconds: 21.0 },
    );
    let got = split(&a, &b).unwrap();
    assert!((got.per_message - 1000.0).abs() < 1e-6 && (got.per_second - 50.0).abs() < 1e-6, "{got:?}");
    assert_eq!(split(&a, &a), None);
    assert_eq!(per_message(3.0, 4), 0.75);
    let command = wrapped(&["valgrind".into(), "-q".into()], &["prog".into(), "a".into()]);
    assert_eq!(command.get_program(), "valgrind");
    assert_eq!(command.get_args().collect::<Vec<_>>(), ["-q", "prog", "a"]);
    assert_eq!(wrapped(&[], &["prog".into()]).get_program(), "prog");
}
