//! Benchmark 6, agent: what one user's agent costs, the all-in-one `moltmate agent` (the
//! baseline) against the lean `moltmate-agent` of the sandbox image, both from this build.
//!
//! Per binary: its size; and over `--agent-starts` starts, each in a fresh workspace, without
//! the control plane (the agent alone, as the node starts it):
//! - start: spawn until `GET /healthz` answers (polled every millisecond);
//! - idle RSS: VmRSS 2 s after that, nothing asked of it (and RssAnon, the part no other pod
//!   on the node shares: the binary's pages are one page-cache copy per node);
//! - turn peak: VmHWM over one chat turn, reset just before it (`/proc/PID/clear_refs` 5):
//!   `/tool list_files .` through the LLM stand-in, so two model calls and a tool round;
//! - after the turn: VmRSS 2 s after it answered.
//!
//! Medians over the starts; the target is the lean agent's idle RSS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::options::Options;
use crate::report::Report;
use crate::support;

/// Target: the lean agent's idle RSS, MiB.
const IDLE_RSS_TARGET_MIB: f64 = 6.0;
/// How long the agent sits idle before its RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
const TOKEN: &str = "bench-agent-token-0123456789abcdef";

/// One binary under test: a name for the table and the program (run as `PROGRAM agent`).
#[derive(Debug, Clone)]
struct Candidate {
    name: String,
    program: PathBuf,
    /// The lean agent, whose idle RSS has the target.
    lean: bool,
}

/// The two binaries of this build, then the same two from `--agent-binaries` (e.g. the
/// static musl build the images ship).
fn candidates(options: &Options) -> Vec<Candidate> {
    let pair = |dir: Option<&Path>, label: &str| {
        let at = |name: &str, built: &str| dir.map_or_else(|| PathBuf::from(built), |d| d.join(name));
        [
            Candidate {
                name: format!("moltmate agent{label} (baseline)"),
                program: at("moltmate", support::MOLTMATE),
                lean: false,
            },
            Candidate {
                name: format!("moltmate-agent{label} (lean)"),
                program: at("moltmate-agent", support::MOLTMATE_AGENT),
                lean: true,
            },
        ]
    };
    let mut all = pair(None, "").to_vec();
    if let Some(dir) = &options.agent_binaries {
        let label = dir.parent().and_then(Path::file_name).map(|t| format!(", {}", t.to_string_lossy()));
        all.extend(pair(Some(dir), &label.unwrap_or_default()));
    }
    all
}

/// One start of one binary, in microseconds and KiB.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Start {
    pub start_us: u64,
    pub idle_rss_kib: u64,
    pub idle_anon_kib: u64,
    pub turn_peak_kib: u64,
    pub after_turn_rss_kib: u64,
    pub threads_idle: u64,
}

pub async fn run(options: &Options, report: &mut Report) {
    let llm = match moltmates::dev::llm::LlmStandIn::start("127.0.0.1:0".parse().unwrap(), None).await {
        Ok(llm) => llm,
        Err(e) => return report.error(format!("agent: starting the LLM stand-in: {e}")),
    };
    // reqwest is built without a default crypto provider (see Cargo.toml): ring, as the agent.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
    let candidates = candidates(options);
    if let Some(missing) = candidates.iter().find(|c| !c.program.is_file()) {
        return report.error(format!("agent: no binary at {}", missing.program.display()));
    }
    let mut starts: Vec<Vec<Start>> = vec![Vec::new(); candidates.len()];
    // Interleaved, so that a busy moment of the machine hits both alike.
    for round in 0..options.agent_starts {
        for (candidate, runs) in candidates.iter().zip(&mut starts) {
            match measure(candidate, llm.addr(), &http).await {
                Ok(start) => runs.push(start),
                Err(e) => return report.error(format!("agent: {} (start {}): {e}", candidate.name, round + 1)),
            }
        }
    }
    let mut section = Vec::new();
    for (candidate, runs) in candidates.iter().zip(&starts) {
        let bytes = std::fs::metadata(&candidate.program).map(|m| m.len()).unwrap_or(0);
        let median = |f: fn(&Start) -> u64| median(runs.iter().map(f).collect());
        let (idle, anon, peak, after) = (
            median(|s| s.idle_rss_kib),
            median(|s| s.idle_anon_kib),
            median(|s| s.turn_peak_kib),
            median(|s| s.after_turn_rss_kib),
        );
        let name = &candidate.name;
        report.figure("agent", 1, &format!("{name}: binary size"), bytes as f64 / 1_048_576.0, "MiB");
        if candidate.lean {
            report.target("agent", 1, &format!("{name}: idle RSS"), mib(idle), "MiB", IDLE_RSS_TARGET_MIB);
        } else {
            report.figure("agent", 1, &format!("{name}: idle RSS"), mib(idle), "MiB");
        }
        report.figure("agent", 1, &format!("{name}: idle RSS, private (RssAnon)"), mib(anon), "MiB");
        report.figure("agent", 1, &format!("{name}: RSS peak during a turn"), mib(peak), "MiB");
        report.figure("agent", 1, &format!("{name}: RSS 2 s after a turn"), mib(after), "MiB");
        let start_ms = median(|s| s.start_us) as f64 / 1000.0;
        report.figure("agent", 1, &format!("{name}: start to listening"), start_ms, "ms");
        report.figure("agent", 1, &format!("{name}: threads when idle"), median(|s| s.threads_idle) as f64, "");
        section.push(json!({
            "binary": name,
            "program": candidate.program,
            "lean": candidate.lean,
            "bytes": bytes,
            "median": {"idle_rss_kib": idle, "idle_anon_kib": anon, "turn_peak_kib": peak,
                       "after_turn_rss_kib": after, "start_us": median(|s| s.start_us),
                       "threads_idle": median(|s| s.threads_idle)},
            "starts": runs,
        }));
    }
    report.section("agent", "binaries", Value::Array(section));
    for (image, archive) in image_archives() {
        let bytes = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
        report.figure(
            "agent",
            1,
            &format!("{image} image (OCI archive, scripts/images)"),
            bytes as f64 / 1_048_576.0,
            "MiB",
        );
    }
    report.note(format!(
        "agent: {} starts per binary; idle = {}s after /healthz answered; a turn = `/tool list_files .` via the LLM stand-in",
        options.agent_starts,
        SETTLE.as_secs()
    ));
}

/// The image archives `scripts/images` last wrote, those that exist: what a node pulls.
fn image_archives() -> Vec<(&'static str, PathBuf)> {
    let cache = std::env::var_os("MOLTMATES_CACHE").map(PathBuf::from).or_else(|| {
        let home = std::env::var_os("XDG_CACHE_HOME").map(PathBuf::from);
        Some(home.or_else(|| Some(PathBuf::from(std::env::var_os("HOME")?).join(".cache")))?.join("moltmates"))
    });
    let Some(cache) = cache else { return Vec::new() };
    [("sandbox", "sandbox.tar"), ("moltmate", "moltmate.tar")]
        .into_iter()
        .map(|(image, file)| (image, cache.join("images").join(file)))
        .filter(|(_, path)| path.exists())
        .collect()
}

/// Start the agent once in a fresh workspace, measure, and stop it.
async fn measure(candidate: &Candidate, llm: SocketAddr, http: &reqwest::Client) -> Result<Start, String> {
    let workspace = tempfile::tempdir().map_err(|e| e.to_string())?;
    let addr = SocketAddr::from(([127, 0, 0, 1], support::free_port()));
    let profile =
        moltmates::profile::resolve(&moltmates::crd::MoltmateUserSpec::new(4242, moltmates::crd::Profile::Family))
            .map_err(|e| e.to_string())?;
    let begun = Instant::now();
    let mut child = Command::new(&candidate.program)
        .arg("agent")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("MOLTMATE_USER", "bench")
        .env("MOLTMATE_TELEGRAM_ID", "4242")
        .env("MOLTMATE_WORKSPACE", workspace.path())
        .env("MOLTMATE_LISTEN", addr.to_string())
        .env("MOLTMATE_BROKER_URL", format!("http://{llm}"))
        .env("MOLTMATE_PROFILE", serde_json::to_string(&profile).map_err(|e| e.to_string())?)
        .env("MOLTMATE_AGENT_TOKEN", TOKEN)
        .env("MOLTMATE_LOG_FORMAT", "json")
        // As in the sandbox image, which has no CA certificates (the agent needs none).
        .env("SSL_CERT_FILE", "/nonexistent/ca-certificates.crt")
        .env("SSL_CERT_DIR", "/nonexistent/certs")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", candidate.program.display()))?;
    let pid = child.id().ok_or("the agent exited at once")?;
    let result = measure_running(&mut child, pid, addr, begun, http).await;
    stop(&mut child, pid).await;
    result
}

async fn measure_running(
    child: &mut Child,
    pid: u32,
    addr: SocketAddr,
    begun: Instant,
    http: &reqwest::Client,
) -> Result<Start, String> {
    let health = format!("http://{addr}/healthz");
    let start_us = loop {
        if http.get(&health).send().await.is_ok_and(|r| r.status().is_success()) {
            break begun.elapsed().as_micros() as u64;
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited before listening: {status}"));
        }
        if begun.elapsed() > Duration::from_secs(30) {
            return Err("not listening after 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    tokio::time::sleep(SETTLE).await;
    let status = read_status(pid)?;
    let (idle_rss_kib, idle_anon_kib, threads_idle) = (status.rss_kib, status.anon_kib, status.threads);

    // The peak of the turn alone: reset VmHWM to the current RSS first.
    let reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let sampler = crate::rss::Sampler::start(pid, Duration::from_millis(5));
    let body = json!({"update_id": 1, "chat_id": 4242, "from": 4242, "text": "/tool list_files ."});
    let reply = http
        .post(format!("http://{addr}/v1/turn"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("turn: {e}"))?;
    if !reply.status().is_success() {
        return Err(format!("turn: {} {}", reply.status(), reply.text().await.unwrap_or_default()));
    }
    let after = read_status(pid)?;
    let sampled = sampler.between(begun, Instant::now()).iter().map(|s| s.rss_kib).max().unwrap_or(0);
    drop(sampler);
    let turn_peak_kib = if reset { after.hwm_kib.max(sampled) } else { sampled.max(after.rss_kib) };
    tokio::time::sleep(SETTLE).await;
    let after_turn_rss_kib = read_status(pid)?.rss_kib;
    Ok(Start { start_us, idle_rss_kib, idle_anon_kib, turn_peak_kib, after_turn_rss_kib, threads_idle })
}

/// SIGTERM, as the kubelet stops a pod; SIGKILL if it lingers.
async fn stop(child: &mut Child, pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// A port free now, for the agent to listen on (known before it starts, so the start can be
/// timed from outside without reading its log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub anon_kib: u64,
    pub threads: u64,
}

fn read_status(pid: u32) -> Result<Status, String> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    parse_status(&text).ok_or_else(|| format!("/proc/{pid}/status: no VmRSS/VmHWM/RssAnon/Threads"))
}

pub fn parse_status(text: &str) -> Option<Status> {
    let field = |name| crate::rss::status_field(text, name);
    Some(Status {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:")?,
        threads: field("Threads:")?,
    })
}

fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn self_test() {
    let status = "Name:\tmoltmate-agent\nVmHWM:\t  6000 kB\nVmRSS:\t  5000 kB\nRssAnon:\t  1200 kB\nThreads:\t2\n";
    assert_eq!(parse_status(status), Some(Status { rss_kib: 5000, hwm_kib: 6000, anon_kib: 1200, threads: 2 }));
    assert_eq!(parse_status("VmRSS:\t5 kB\n"), None);
    assert_eq!(median(vec![3, 1, 2]), 2);
    assert_eq!(median(vec![]), 0);
}
