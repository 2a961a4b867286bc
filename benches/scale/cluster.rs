//! A fresh test control plane sized for N users: installed as a release would leave it,
//! with enough node stand-ins for N pods, and the operator as a real process.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::support::{MOLTMATE, Proc, STORAGE_CLASS, SYSTEM_NS, TestEnv, free_port, http_get, wait_until};

/// A node stand-in hands out addresses of one loopback /24 (253 of them): keep each node
/// well below that, since the scheduler spreads pods only roughly evenly.
const PODS_PER_NODE: usize = 200;

pub struct Cluster {
    // Processes first: fields drop in order, and the control plane goes last.
    pub operator: Option<Operator>,
    nodes: Vec<Proc>,
    pub admin: Client,
    pub env: TestEnv,
}

pub struct Operator {
    pub proc: Proc,
    /// Run under a wrapper (a profiler): `pid` is then the operator's below it.
    wrapped: bool,
    /// Its /healthz, /readyz and /metrics.
    #[allow(dead_code)]
    pub http_port: u16,
}

impl Operator {
    /// The operator's own pid (below the wrapper, if any, once it has started it).
    pub fn pid(&self) -> u32 {
        let top = self.proc.child.id();
        if !self.wrapped {
            return top;
        }
        descendant_running(top, MOLTMATE).unwrap_or(top)
    }
}

/// The first process below `pid` whose executable is `exe`.
fn descendant_running(pid: u32, exe: &str) -> Option<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()).find_map(|child| {
        let path = std::fs::read_link(format!("/proc/{child}/exe")).ok();
        if path.is_some_and(|p| p == Path::new(exe)) { Some(child) } else { descendant_running(child, exe) }
    })
}

/// `WRAPPER... moltmate operator ARGS` (the arguments of `TestEnv::spawn_operator`), listed
/// for the environment's watchdog like every process it starts.
fn spawn_wrapped(env: &TestEnv, wrapper: &[String], http_port: u16) -> Proc {
    use std::os::unix::process::CommandExt;
    let key = env.dir.join("master.key");
    let addr = format!("127.0.0.1:{http_port}");
    let log_path = env.dir.join("logs").join("operator.log");
    let _ = std::fs::create_dir_all(env.dir.join("logs"));
    let log = std::fs::File::options().create(true).append(true).open(&log_path).expect("operator log");
    let child = std::process::Command::new(&wrapper[0])
        .args(&wrapper[1..])
        .arg(MOLTMATE)
        .args(["operator", "--storage-class", STORAGE_CLASS, "--http-addr", &addr, "--master-key-file"])
        .arg(&key)
        .args(["--lease-namespace", SYSTEM_NS, "--identity", "operator"])
        .env("KUBECONFIG", env.operator_kubeconfig())
        .env("RUST_LOG", "info,kube=warn")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("operator log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("spawn the wrapped operator");
    let line = format!("{} operator\n", child.id());
    let _ = std::fs::OpenOptions::new().append(true).open(env.dir.join("pids")).and_then(|mut f| {
        use std::io::Write;
        f.write_all(line.as_bytes())
    });
    Proc { child, log: log_path }
}

impl Cluster {
    /// Control plane, CRD and RBAC, and node stand-ins for `users` pods (no operator yet).
    pub async fn up(name: &str, users: usize) -> Cluster {
        let env = TestEnv::up(name);
        env.install().await;
        env.install_gateway_rbac().await;
        let admin = env.admin().await;
        let count = users.div_ceil(PODS_PER_NODE).max(1);
        let mut nodes = vec![env.spawn_node()];
        for i in 1..count {
            nodes.push(spawn_extra_node(&env, i));
        }
        let nodes_api: Api<Node> = Api::all(admin.clone());
        wait_until(&format!("{count} nodes registered"), Duration::from_secs(60), || async {
            (nodes_api.list(&ListParams::default()).await.ok()?.items.len() >= count).then_some(())
        })
        .await;
        Cluster { operator: None, nodes, admin, env }
    }

    /// Start the operator and wait until it leads and its caches are synced (`/readyz`);
    /// returns its pid. With a `wrapper` (e.g. `heaptrack -o FILE`), the operator runs under
    /// it, in a process group of its own so that it can be stopped with the wrapper.
    pub async fn start_operator(&mut self, wrapper: &[String]) -> u32 {
        self.spawn_operator(wrapper);
        let http_port = self.operator.as_ref().map_or(0, |o| o.http_port);
        wait_until("operator /readyz", Duration::from_secs(120), || async {
            (http_get(http_port, "/readyz").await?.0 == 200).then_some(())
        })
        .await;
        self.operator.as_ref().map_or(0, Operator::pid)
    }

    /// Start the operator and return at once, before it is ready; its pid.
    pub fn spawn_operator(&mut self, wrapper: &[String]) -> u32 {
        let http_port = free_port();
        let proc = if wrapper.is_empty() {
            self.env.spawn_operator("operator", http_port)
        } else {
            spawn_wrapped(&self.env, wrapper, http_port)
        };
        let operator = Operator { proc, http_port, wrapped: !wrapper.is_empty() };
        let pid = operator.pid();
        self.operator = Some(operator);
        pid
    }

    /// SIGKILL the operator (an unwrapped one: the wrapper would outlive it) and reap it;
    /// whether it was still running when killed.
    pub fn kill_operator(&mut self) -> bool {
        let Some(mut operator) = self.operator.take() else { return false };
        let running = operator.proc.is_running();
        operator.proc.kill();
        running
    }

    /// Wait until the operator answers `/readyz` with 200 (it leads, its caches are synced).
    pub async fn wait_operator_ready(&self, timeout: Duration) -> Result<(), String> {
        let port = self.operator.as_ref().ok_or("no operator running")?.http_port;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if http_get(port, "/readyz").await.is_some_and(|(code, _)| code == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("the operator did not answer /readyz with 200 within {timeout:?}"))
    }

    /// Stop the operator: SIGKILL, or for a wrapped one SIGINT to its group, so that the
    /// operator shuts down and the wrapper writes its output.
    pub fn stop_operator(&mut self) {
        let Some(mut operator) = self.operator.take() else { return };
        if operator.wrapped {
            let group = nix::unistd::Pid::from_raw(operator.proc.child.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT);
            operator.proc.interrupt(Duration::from_secs(60));
        }
        operator.proc.kill();
    }

    /// Stop the operator and start a new one on the same cluster; its new pid.
    pub async fn restart_operator(&mut self, wrapper: &[String]) -> u32 {
        self.stop_operator();
        self.start_operator(wrapper).await
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn dir(&self) -> &Path {
        &self.env.dir
    }
}

/// A further node stand-in with its own name, data and pod network. Only the first node
/// provisions volumes: the others get a StorageClass no claim uses, so that they do not race
/// for every claim.
fn spawn_extra_node(env: &TestEnv, index: usize) -> Proc {
    let name = format!("moltmate-bench-node-{index}");
    let data = env.dir.join(format!("node-{index}"));
    let network = pod_network(&env.dir, index);
    let args = [
        "dev",
        "node",
        "--name",
        &name,
        "--data-dir",
        data.to_str().unwrap_or_default(),
        "--storage-class",
        "moltmate-bench-unused",
        "--pod-network",
        &network,
    ];
    assert_ne!(STORAGE_CLASS, "moltmate-bench-unused");
    env.spawn(&format!("node-{index}"), &env.admin_kubeconfig(), &args)
}

/// A loopback /24 per extra node. Without agents a pod's address is only a status field, so
/// a clash with another environment's network would be harmless.
fn pod_network(dir: &Path, index: usize) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (dir, index).hash(&mut hasher);
    let h = hasher.finish();
    format!("127.{}.{}.0", 1 + h % 254, (h >> 8) % 256)
}

/// Wait until `username` has written nothing (Leases aside) for `quiet`, at most `timeout`:
/// the last status writes and events of a provisioning have landed. Returns how long it took.
pub async fn wait_quiet(
    audit_log: &Path,
    username: &str,
    quiet: Duration,
    timeout: Duration,
) -> Result<Duration, String> {
    let started = Instant::now();
    let mut offset = crate::audit::offset(audit_log);
    let mut last_write = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let end = crate::audit::offset(audit_log);
        let entries = crate::audit::entries_after(audit_log, offset);
        offset = end;
        if crate::audit::tally(&entries, username).write_count() > 0 {
            last_write = Instant::now();
        }
        if last_write.elapsed() >= quiet {
            return Ok(started.elapsed());
        }
        if started.elapsed() > timeout {
            return Err(format!("{username} still writing after {timeout:?}"));
        }
    }
}
