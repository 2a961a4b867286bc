//! A real control plane for integration tests: `scripts/testenv up`, the CRD and the
//! operator's RBAC installed, the local node stand-in and the operator as real processes.
#![allow(dead_code)]

use std::fs::File;
use std::future::Future;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

pub mod apiserver;
pub mod real_node;
pub mod stack;

#[allow(unused_imports)] // the benchmarks use only some
pub use stack::{BOT_TOKEN, GatewayCommand, Stack};

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const MOLTMATE: &str = env!("CARGO_BIN_EXE_moltmate");
/// The lean agent binary of the sandbox image (the node stand-in runs it for agent pods).
pub const MOLTMATE_AGENT: &str = env!("CARGO_BIN_EXE_moltmate-agent");
pub const SYSTEM_NS: &str = "moltmate-system";
pub const STORAGE_CLASS: &str = "moltmate-dev";
pub const MASTER_KEY: &str = "test-master-key-0123456789abcdef0123456789abcdef";
pub const OPERATOR_USER: &str = "system:serviceaccount:moltmate-system:moltmate-operator";

/// One control plane; `down` runs when this is dropped, or when the test process dies.
pub struct TestEnv {
    pub dir: PathBuf,
    /// Started by `scripts/node` (a real node in network namespaces), which also stops it.
    real_node: bool,
}

impl TestEnv {
    /// Start a fresh control plane in its own directory.
    pub fn up(name: &str) -> TestEnv {
        Self::start(name, "testenv")
    }

    /// A control plane and a real node (`scripts/node`): kubelet, containerd, kube-proxy,
    /// kube-router and local-path, sealed in network namespaces.
    pub fn up_real_node(name: &str) -> TestEnv {
        Self::start(name, "node")
    }

    fn start(name: &str, script: &str) -> TestEnv {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("testenv");
        remove_stale_dirs(&root);
        let dir = root.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create test env dir");
        let output = Command::new(format!("{REPO}/scripts/{script}"))
            .arg("up")
            .arg(&dir)
            .env("TESTENV_WATCH_PID", std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/testenv up");
        assert!(
            output.status.success(),
            "scripts/{script} up failed (run `scripts/{script} install` first):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(dir.join("master.key"), MASTER_KEY).unwrap();
        TestEnv { dir, real_node: script == "node" }
    }

    /// A control plane as installed, with the node stand-in running; returns an admin client.
    pub async fn up_installed(name: &str) -> (TestEnv, Client, Proc) {
        let env = TestEnv::up(name);
        env.install().await;
        let client = env.admin().await;
        let node = env.spawn_node();
        (env, client, node)
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    pub fn operator_kubeconfig(&self) -> PathBuf {
        self.dir.join("operator.kubeconfig")
    }
    pub fn audit_log(&self) -> PathBuf {
        self.dir.join("audit.log")
    }

    pub async fn admin(&self) -> Client {
        client_from(&self.admin_kubeconfig()).await
    }

    pub async fn operator_client(&self) -> Client {
        client_from(&self.operator_kubeconfig()).await
    }

    /// The cluster as an installation leaves it: CRD, operator RBAC (from the file the chart
    /// uses), the release namespace and the broker Service agents are pointed at.
    pub async fn install(&self) {
        let client = self.admin().await;
        let apply = PatchParams::apply("moltmate-tests").force();

        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&std::fs::read_to_string(format!("{REPO}/crds/moltmateuser.yaml")).unwrap())
                .unwrap();
        crds.patch(
            "moltmateusers.moltmate.io",
            &apply,
            &Patch::Apply(typed(&crd, "apiextensions.k8s.io/v1", "CustomResourceDefinition")),
        )
        .await
        .unwrap();
        wait_until("CRD established", Duration::from_secs(30), || async {
            let crd = crds.get("moltmateusers.moltmate.io").await.ok()?;
            crd.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True").then_some(())
        })
        .await;

        let ns = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": SYSTEM_NS } });
        Api::<Namespace>::all(client.clone()).patch(SYSTEM_NS, &apply, &Patch::Apply(&ns)).await.unwrap();
        bind_cluster_role(&client, "operator").await;
        let sa = json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "moltmate-operator", "namespace": SYSTEM_NS } });
        Api::<ServiceAccount>::namespaced(client.clone(), SYSTEM_NS)
            .patch("moltmate-operator", &apply, &Patch::Apply(&sa))
            .await
            .unwrap();
        let broker = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "moltmate-broker", "namespace": SYSTEM_NS },
            "spec": { "selector": { "app.kubernetes.io/name": "moltmate-gateway" }, "ports": [{ "name": "broker", "port": 8081, "protocol": "TCP" }] },
        });
        Api::<Service>::namespaced(client, SYSTEM_NS)
            .patch("moltmate-broker", &apply, &Patch::Apply(&broker))
            .await
            .unwrap();
    }

    /// Run `moltmate ARGS` as a background process with this env's kubeconfig `kubeconfig`.
    pub fn spawn(&self, log_name: &str, kubeconfig: &Path, args: &[&str]) -> Proc {
        let mut command = Command::new(MOLTMATE);
        command.args(args);
        self.launch(log_name, kubeconfig, command)
    }

    /// `moltmate ARGS` as PID 1 of a PID namespace of its own, as in a container (see [`as_pid1`]).
    pub fn spawn_pid1(&self, log_name: &str, kubeconfig: &Path, args: &[&str]) -> Proc {
        let mut command = Command::new(MOLTMATE);
        command.args(args);
        self.launch(log_name, kubeconfig, as_pid1(&command))
    }

    /// Start `command` logging to DIR/logs/LOG_NAME.log, registered for the testenv watchdog.
    pub fn launch(&self, log_name: &str, kubeconfig: &Path, mut command: Command) -> Proc {
        std::fs::create_dir_all(self.dir.join("logs")).unwrap();
        let log_path = self.dir.join("logs").join(format!("{log_name}.log"));
        let log = File::options().create(true).append(true).open(&log_path).unwrap();
        let child = command
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn moltmate");
        // The testenv watchdog stops what DIR/pids lists once this test process is gone.
        let line = format!("{} {log_name}\n", child.id());
        std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("pids"))
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(line.as_bytes())
            })
            .unwrap();
        Proc { child, log: log_path }
    }

    /// The local node stand-in (kubelet role), with the admin identity.
    pub fn spawn_node(&self) -> Proc {
        self.spawn_node_with(&[])
    }

    /// The node stand-in with extra flags, e.g. `--run-agents`. Its pods get addresses of their
    /// own loopback /24, so test binaries running at once never share agent addresses.
    pub fn spawn_node_with(&self, extra: &[&str]) -> Proc {
        let data = self.dir.join("node");
        let network = pod_network(&self.dir);
        let mut args = vec![
            "dev",
            "node",
            "--data-dir",
            data.to_str().unwrap(),
            "--storage-class",
            STORAGE_CLASS,
            "--pod-network",
            &network,
        ];
        args.extend_from_slice(extra);
        self.spawn("node", &self.admin_kubeconfig(), &args)
    }

    /// The node stand-in running each agent pod as a real `moltmate-agent agent` process (the
    /// sandbox image's entrypoint), pointed at the broker at `broker_url`.
    pub fn spawn_agent_node(&self, broker_url: &str) -> AgentNode {
        AgentNode(self.spawn_node_with(&["--run-agents", "--broker-url", broker_url]))
    }

    /// The operator, under its own identity bound to the chart's ClusterRole.
    pub fn spawn_operator(&self, name: &str, http_port: u16) -> Proc {
        self.spawn_operator_with(name, http_port, &[])
    }

    /// The operator with extra flags, e.g. `--agent-pod=...`.
    pub fn spawn_operator_with(&self, name: &str, http_port: u16, extra: &[&str]) -> Proc {
        let mut args = self.operator_args(name, http_port);
        args.extend(extra.iter().map(|a| a.to_string()));
        self.spawn(name, &self.operator_kubeconfig(), &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The operator as PID 1 of its own PID namespace, as in its container.
    pub fn spawn_operator_pid1(&self, name: &str, http_port: u16) -> Proc {
        let args = self.operator_args(name, http_port);
        self.spawn_pid1(name, &self.operator_kubeconfig(), &args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn operator_args(&self, name: &str, http_port: u16) -> Vec<String> {
        let key = self.dir.join("master.key");
        [
            "operator",
            "--storage-class",
            STORAGE_CLASS,
            "--http-addr",
            &format!("127.0.0.1:{http_port}"),
            "--master-key-file",
            key.to_str().unwrap(),
            "--lease-namespace",
            SYSTEM_NS,
            "--identity",
            name,
        ]
        .map(String::from)
        .to_vec()
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        let bindir = self.dir.join("env");
        let env = std::fs::read_to_string(bindir).unwrap();
        let bin =
            env.lines().find_map(|l| l.strip_prefix("BINDIR=")).expect("BINDIR in env").trim_matches('"').to_string();
        // Discovery cached per environment: a cache shared with an earlier control plane on the
        // same address would hide kinds and categories installed since.
        Command::new(format!("{bin}/kubectl"))
            .arg("--kubeconfig")
            .arg(self.admin_kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .output()
            .expect("run kubectl")
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let script = if self.real_node { "node" } else { "testenv" };
        let _ =
            Command::new(format!("{REPO}/scripts/{script}")).arg("down").arg(&self.dir).stderr(Stdio::null()).status();
    }
}

/// A child process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `command` run as PID 1 of a PID namespace of its own, as a container's process is: the
/// kernel then delivers it no signal it has no handler for (SIGKILL aside). `unshare` forks it,
/// waits for it, exits as it does, and (`--kill-child`) takes it along if killed itself.
pub fn as_pid1(command: &Command) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped.args(["--pid", "--fork", "--kill-child", "--"]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// This host's pid of the PID 1 that `unshare` (pid `unshare`) started.
pub fn pid1_of(unshare: u32) -> u32 {
    let children = format!("/proc/{unshare}/task/{unshare}/children");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&children).unwrap_or_default();
        if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
            return pid;
        }
        assert!(Instant::now() < deadline, "unshare {unshare} started no process");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Send SIGTERM to `pid`, as the kubelet does to a container's PID 1.
pub fn sigterm(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -TERM {pid}");
}

/// `child`'s exit status, or `None` if it still runs after `timeout`.
pub async fn exit_within(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Who holds the Lease `namespace/name` now (`None`: nobody, e.g. released).
pub async fn lease_holder(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(client.clone(), namespace);
    let lease = leases.get(name).await.unwrap();
    lease.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty())
}

/// Directories of earlier runs whose test process is gone; kept until the next run so that
/// a failure can be read. Stopped first: the watchdog of a test process that has just
/// exited may not have run yet, and it needs the directory's pid list to do its job.
fn remove_stale_dirs(root: &Path) {
    for entry in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let pid = name.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = Command::new(format!("{REPO}/scripts/testenv"))
                .arg("down")
                .arg(entry.path())
                .stderr(Stdio::null())
                .status();
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

pub async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// k8s-openapi leaves apiVersion/kind to the caller; server-side apply needs them.
pub fn typed<T: serde::Serialize>(object: &T, api_version: &str, kind: &str) -> serde_json::Value {
    let mut value = serde_json::to_value(object).unwrap();
    value["apiVersion"] = api_version.into();
    value["kind"] = kind.into();
    value
}

/// A loopback /24 for one environment's pods, from its directory name (name and pid).
fn pod_network(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    let h = hasher.finish();
    // 127.0.0.0/24 is left to the local stack and the tests that bind 127.0.0.2-3 themselves.
    format!("127.{}.{}.0", 1 + h % 254, (h >> 8) % 256)
}

/// The node stand-in with agents, stopped with SIGINT when dropped so that it stops its agent
/// processes too (killed, they would keep their addresses and answer the next run's requests).
pub struct AgentNode(pub Proc);

impl Drop for AgentNode {
    fn drop(&mut self) {
        self.0.interrupt(Duration::from_secs(10));
    }
}

/// What the bot sent to a chat of the Telegram stand-in, as the user sees it.
pub fn texts(tg: &moltmates::dev::telegram::TelegramStandIn, chat: i64) -> Vec<String> {
    tg.sent_to(chat).into_iter().map(|m| m.rendered).collect()
}

/// Wait until a message to `chat` contains `needle`; returns all messages of the chat.
pub async fn wait_text(
    tg: &moltmates::dev::telegram::TelegramStandIn,
    chat: i64,
    needle: &str,
    timeout: Duration,
) -> Vec<String> {
    wait_until(&format!("a message to {chat} containing {needle:?}"), timeout, || async {
        let all = texts(tg, chat);
        all.iter().any(|t| t.contains(needle)).then_some(all)
    })
    .await
}

/// `scripts/helm ARGS` (the real Helm CLI, v4) from the repository root, with Helm's own
/// configuration, cache and data in the test's temp dir rather than the user's.
pub fn helm<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    Command::new(format!("{REPO}/scripts/helm"))
        .args(args)
        .current_dir(REPO)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .output()
        .expect("run scripts/helm (`scripts/testenv install` builds Helm)")
}

/// `scripts/helm ARGS`, which must succeed; its standard output.
pub fn helm_ok<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> String {
    let out = helm(args);
    let shown: Vec<String> = args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()).collect();
    assert!(
        out.status.success(),
        "scripts/helm {} failed:\n{}{}",
        shown.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A TCP port free on 127.0.0.1, for a process to bind later. Drawn below the kernel's
/// ephemeral range, as `scripts/testenv` draws its own: a port from `:0` is an ephemeral one,
/// which any outgoing connection (a client of the API server, say) may take as its local port
/// before the process gets to bind it.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, RandomState};
    let ephemeral_lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (20000u16, ephemeral_lo.saturating_sub(1).max(20001));
    let random = RandomState::new();
    let mut attempt = 0u32;
    loop {
        let port = lo + (random.hash_one((attempt, std::process::id())) % u64::from(hi - lo)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        attempt += 1;
        assert!(attempt < 10_000, "no free port between {lo} and {hi}");
    }
}

/// Poll `check` until it returns Some, or panic naming `what` after `timeout`.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A MoltmateUser manifest; `spec` fields are merged over `telegram.userId`.
pub fn user_manifest(name: &str, telegram_id: i64, spec: serde_json::Value) -> serde_json::Value {
    let mut full = json!({ "telegram": { "userId": telegram_id } });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            full.insert(k.clone(), v.clone());
        }
    }
    json!({ "apiVersion": "moltmate.io/v1alpha1", "kind": "MoltmateUser", "metadata": { "name": name }, "spec": full })
}

/// Apply a MoltmateUser as an admin would (`kubectl apply --server-side`).
pub async fn apply_user(client: &Client, manifest: &serde_json::Value) -> Result<moltmates::MoltmateUser, kube::Error> {
    let api: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    let name = manifest["metadata"]["name"].as_str().unwrap();
    api.patch(name, &PatchParams::apply("kubectl").force(), &Patch::Apply(manifest)).await
}

/// Wait for the user's phase and return the user.
pub async fn wait_phase(client: &Client, name: &str, phase: &str, timeout: Duration) -> moltmates::MoltmateUser {
    let api: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    let mut last = String::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(user) = api.get(name).await {
            let status = user.status.clone().unwrap_or_default();
            let now = serde_json::to_string(&status).unwrap();
            if status.phase.map(|p| p.as_str()) == Some(phase) {
                return user;
            }
            last = now;
        }
        assert!(Instant::now() < deadline, "{name} not {phase} within {timeout:?}; last status: {last}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GET http://127.0.0.1:port/path; (status code, body).
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_from("127.0.0.1", port, path, None).await
}

/// GET http://host:port/path, with a bearer token if given; (status code, body), or None
/// when nothing answers.
pub async fn http_get_from(host: &str, port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n").as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((code, body))
}

pub const GATEWAY_USER: &str = "system:serviceaccount:moltmate-system:moltmate-gateway";

impl TestEnv {
    pub fn gateway_kubeconfig(&self) -> PathBuf {
        self.dir.join("gateway.kubeconfig")
    }

    /// The gateway's ClusterRole (from the file the chart uses), bound to its identity.
    pub async fn install_gateway_rbac(&self) {
        bind_cluster_role(&self.admin().await, "gateway").await;
    }

    /// The gateway's extra ClusterRole for approving access requests in create mode, bound as
    /// the chart binds it when `access.admins` is set.
    pub async fn install_gateway_access_rbac(&self) {
        bind_cluster_role(&self.admin().await, "gateway-access").await;
    }
}

/// Apply `charts/moltmates/files/<component>-clusterrole.yaml` (the chart's own file) and bind
/// it to the ServiceAccount `moltmate-<component>` in the release namespace, whose name the
/// test environment's token identities carry; and the leader-election Role there, as the chart
/// binds it.
async fn bind_cluster_role(client: &Client, component: &str) {
    bind_release_roles(client).await;
    let apply = PatchParams::apply("moltmate-tests").force();
    let name = format!("moltmate-{component}");
    // `gateway-access` is the gateway's too.
    let account = format!("moltmate-{}", component.split('-').next().unwrap());
    let file = format!("{REPO}/charts/moltmates/files/{component}-clusterrole.yaml");
    let role: ClusterRole = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    Api::<ClusterRole>::all(client.clone())
        .patch(&name, &apply, &Patch::Apply(typed(&role, "rbac.authorization.k8s.io/v1", "ClusterRole")))
        .await
        .unwrap();
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": { "name": name },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": SYSTEM_NS }],
    });
    Api::<ClusterRoleBinding>::all(client.clone()).patch(&name, &apply, &Patch::Apply(&binding)).await.unwrap();
}

/// The chart's Roles in the release namespace, bound as the chart binds them: the
/// leader-election Role to the operator and the gateway, the gateway's Role to the gateway.
async fn bind_release_roles(client: &Client) {
    bind_role(client, "leader-election-role.yaml", &["operator", "gateway"]).await;
    bind_role(client, "gateway-role.yaml", &["gateway"]).await;
}

/// `charts/moltmates/files/FILE` in the release namespace, bound to `components`' ServiceAccounts.
async fn bind_role(client: &Client, file: &str, components: &[&str]) {
    use k8s_openapi::api::rbac::v1::Role;
    let apply = PatchParams::apply("moltmate-tests").force();
    let file = format!("{REPO}/charts/moltmates/files/{file}");
    let mut role: Role = serde_saphyr::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    role.metadata.namespace = Some(SYSTEM_NS.into());
    let name = role.metadata.name.clone().unwrap();
    Api::<Role>::namespaced(client.clone(), SYSTEM_NS)
        .patch(&name, &apply, &Patch::Apply(typed(&role, "rbac.authorization.k8s.io/v1", "Role")))
        .await
        .unwrap();
    let subject = |component: &str| json!({ "kind": "ServiceAccount", "name": format!("moltmate-{component}"), "namespace": SYSTEM_NS });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": name, "namespace": SYSTEM_NS },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
        "subjects": components.iter().map(|c| subject(c)).collect::<Vec<_>>(),
    });
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(client.clone(), SYSTEM_NS)
        .patch(&name, &apply, &Patch::Apply(&binding))
        .await
        .unwrap();
}

impl Proc {
    /// SIGINT and wait (up to `timeout`) for a clean exit, so the process can stop its own
    /// children (the node's agent processes); then SIGKILL whatever is left.
    pub fn interrupt(&mut self, timeout: Duration) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGINT);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && self.is_running() {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}

impl TestEnv {
    /// Like `spawn`, but the process sees exactly `vars` plus KUBECONFIG and RUST_LOG, nothing
    /// inherited from the test: to run a component with the environment its manifest gives it.
    pub fn spawn_with_env(
        &self,
        log_name: &str,
        kubeconfig: &Path,
        args: &[String],
        vars: &[(String, String)],
    ) -> Proc {
        let mut command = Command::new(MOLTMATE);
        command.args(args).env_clear().envs(vars.iter().map(|(k, v)| (k, v)));
        self.launch(log_name, kubeconfig, command)
    }
}
