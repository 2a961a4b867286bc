//! Stopping and starting the test environment's kube-apiserver (the chaos run, tests): stopped
//! with SIGTERM (as a node shutting it down would), started again with exactly the command
//! line and environment it had, its pid appended to `DIR/pids` as `scripts/testenv` does so
//! that `testenv down` and the watchdog still stop it.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kube::Client;

pub struct ApiServer {
    dir: PathBuf,
    argv: Vec<OsString>,
    environ: Vec<(OsString, OsString)>,
    pid: u32,
    /// Once started here: the process, reaped on stop.
    child: Option<Child>,
}

/// The NUL-separated fields of /proc/PID/cmdline or /proc/PID/environ.
pub fn split_nul(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.split(|b| *b == 0).filter(|f| !f.is_empty()).map(<[u8]>::to_vec).collect()
}

/// Whether `argv` is the kube-apiserver of the environment in `dir` (its files are under it).
pub fn is_apiserver_of(argv: &[String], dir: &str) -> bool {
    let Some(exe) = argv.first() else { return false };
    let marker = format!("{}/", dir.trim_end_matches('/'));
    Path::new(exe).file_name().is_some_and(|n| n == "kube-apiserver") && argv[1..].iter().any(|a| a.contains(&marker))
}

/// `NAME=VALUE` of an environ entry.
fn env_pair(entry: Vec<u8>) -> Option<(OsString, OsString)> {
    let at = entry.iter().position(|b| *b == b'=')?;
    let value = entry[at + 1..].to_vec();
    let mut name = entry;
    name.truncate(at);
    Some((OsString::from_vec(name), OsString::from_vec(value)))
}

/// Alive and not a zombie (the testenv's own test, `proc_alive`).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let state = stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()).unwrap_or("X");
    state != "Z" && state != "X"
}

impl ApiServer {
    /// The running API server among the processes `DIR/pids` lists.
    pub fn find(dir: &Path) -> Result<ApiServer, String> {
        let pids =
            std::fs::read_to_string(dir.join("pids")).map_err(|e| format!("reading {}/pids: {e}", dir.display()))?;
        let dir_text = dir.to_string_lossy();
        for pid in pids.lines().filter_map(|l| l.split_whitespace().next()?.parse::<u32>().ok()) {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
            let fields = split_nul(&cmdline);
            let argv: Vec<String> = fields.iter().map(|f| String::from_utf8_lossy(f).into_owned()).collect();
            if !alive(pid) || !is_apiserver_of(&argv, &dir_text) {
                continue;
            }
            let environ = std::fs::read(format!("/proc/{pid}/environ"))
                .map_err(|e| format!("reading the environment of kube-apiserver {pid}: {e}"))?;
            return Ok(ApiServer {
                dir: dir.to_path_buf(),
                argv: fields.into_iter().map(OsString::from_vec).collect(),
                environ: split_nul(&environ).into_iter().filter_map(env_pair).collect(),
                pid,
                child: None,
            });
        }
        Err(format!("no running kube-apiserver of {} in its pids file", dir.display()))
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => alive(self.pid),
        }
    }

    /// SIGTERM, and wait until it has exited (SIGKILL after `timeout`); how long that took.
    pub async fn stop(&mut self, timeout: Duration) -> Result<Duration, String> {
        use nix::sys::signal::{Signal, kill};
        let started = Instant::now();
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        kill(pid, Signal::SIGTERM).map_err(|e| format!("SIGTERM to kube-apiserver {}: {e}", self.pid))?;
        while self.running() {
            if started.elapsed() > timeout {
                let _ = kill(pid, Signal::SIGKILL);
                tokio::time::sleep(Duration::from_millis(500)).await;
                if self.running() {
                    return Err(format!(
                        "kube-apiserver {} still running {timeout:?} after SIGTERM and a SIGKILL",
                        self.pid
                    ));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(started.elapsed())
    }

    /// Start it again: same command line, environment, log file; in a process group of its
    /// own (an interrupt of the bench leaves it to the watchdog, like the rest); listed in
    /// `DIR/pids`. Returns the new pid.
    pub fn start(&mut self) -> Result<u32, String> {
        use std::io::Write;
        use std::os::unix::process::CommandExt;
        let log_path = self.dir.join("logs").join("kube-apiserver.log");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("{}: {e}", log_path.display()))?;
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.environ.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.argv[0].to_string_lossy()))?;
        self.pid = child.id();
        self.child = Some(child);
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("pids"))
            .and_then(|mut f| f.write_all(format!("{} kube-apiserver\n", self.pid).as_bytes()))
            .map_err(|e| format!("listing kube-apiserver {} in {}/pids: {e}", self.pid, self.dir.display()))?;
        Ok(self.pid)
    }
}

/// Wait until the API server answers `/readyz` with 200 (`ok`); how long that took.
pub async fn wait_ready(client: &Client, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    loop {
        let request = axum::http::Request::get("/readyz").body(Vec::new()).map_err(|e| e.to_string())?;
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), client.request_text(request)).await {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!("kube-apiserver not ready (/readyz) {timeout:?} after its start"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn self_test() {
    assert_eq!(split_nul(b"a\0bc\0\0d\0"), vec![b"a".to_vec(), b"bc".to_vec(), b"d".to_vec()]);
    let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let ours = argv(&["/c/bin/kube-apiserver", "--etcd-servers=http://127.0.0.1:1", "--cert-dir=/t/env-1/pki"]);
    assert!(is_apiserver_of(&ours, "/t/env-1"));
    assert!(is_apiserver_of(&ours, "/t/env-1/"));
    assert!(!is_apiserver_of(&ours, "/t/env-10"), "a neighbour whose name starts alike");
    assert!(!is_apiserver_of(&argv(&["/c/bin/kube-scheduler", "--cert-dir=/t/env-1/pki"]), "/t/env-1"));
    assert!(!is_apiserver_of(&[], "/t/env-1"));
    assert_eq!(env_pair(b"A=b=c".to_vec()), Some((OsString::from("A"), OsString::from("b=c"))));
    assert_eq!(env_pair(b"junk".to_vec()), None);
}
