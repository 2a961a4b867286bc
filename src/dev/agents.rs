//! The local node's container runtime: each agent pod becomes a local process, the sandbox
//! image's entrypoint (the lean `moltmate-agent`, built beside this binary) given the
//! container's args (`agent`), as a kubelet would run the image.
//!
//! The process gets the pod's environment (Secret references resolved, as a kubelet does),
//! listens on the pod's own 127.0.0.x address, and uses the directory behind the pod's
//! workspace volume, so data survives pod replacement exactly as a PVC's would.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{EnvVar, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("pod has no containers")]
    NoContainer,
    #[error("env {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("workspace: {0}")]
    Workspace(String),
    #[error("the container sets its command {0:?}; this node runs only the sandbox image's entrypoint")]
    Command(Vec<String>),
    #[error("starting {binary}: {source}")]
    Spawn { binary: String, source: std::io::Error },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// How agents are started on this node.
#[derive(Clone, Debug)]
pub struct AgentLauncher {
    /// The local stand-in for the sandbox image's entrypoint: `moltmate-agent`.
    pub entrypoint: PathBuf,
    /// Replaces the pod's MOLTMATE_BROKER_URL (the broker's ClusterIP is not routable here).
    pub broker_url: Option<String>,
    /// Logs of agent processes go to `DIR/<namespace>-<pod>.log`.
    pub log_dir: PathBuf,
}

impl AgentLauncher {
    /// Start the agent of `pod` on `ip`; returns the process and the address it serves on.
    pub async fn start(&self, client: &Client, pod: &Pod, ip: Ipv4Addr) -> Result<(Child, SocketAddr), LaunchError> {
        let ns = pod.namespace().unwrap_or_default();
        let container = pod.spec.as_ref().and_then(|s| s.containers.first()).ok_or(LaunchError::NoContainer)?;
        let mut env = resolve_env(client, &ns, container.env.as_deref().unwrap_or_default()).await?;
        let port = container.ports.iter().flatten().next().map(|p| p.container_port).unwrap_or(8080);
        let addr = SocketAddr::from((ip, u16::try_from(port).unwrap_or(8080)));
        env.push(("MOLTMATE_LISTEN".into(), addr.to_string()));
        env.push(("MOLTMATE_WORKSPACE".into(), workspace_dir(client, pod).await?.display().to_string()));
        if let Some(url) = &self.broker_url {
            env.push(("MOLTMATE_BROKER_URL".into(), url.clone()));
        }
        std::fs::create_dir_all(&self.log_dir)?;
        let log_path = self.log_dir.join(format!("{ns}-{}.log", pod.name_any()));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path)?;
        if let Some(set) = container.command.as_ref().filter(|c| !c.is_empty()) {
            return Err(LaunchError::Command(set.clone()));
        }
        let binary = &self.entrypoint;
        let mut command = Command::new(binary);
        command
            .args(container.args.iter().flatten())
            .env_clear()
            .envs(env)
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        // SAFETY: runs in the forked child before exec and makes one async-signal-safe call.
        // An agent must not outlive its node, even one killed with SIGKILL: it would keep
        // its pod's address and answer for a pod that no longer exists.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
                Ok(())
            });
        }
        let child =
            command.spawn().map_err(|source| LaunchError::Spawn { binary: binary.display().to_string(), source })?;
        Ok((child, addr))
    }
}

/// The container's env, `valueFrom.secretKeyRef` read from the Secret as a kubelet would.
async fn resolve_env(client: &Client, ns: &str, vars: &[EnvVar]) -> Result<Vec<(String, String)>, LaunchError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::with_capacity(vars.len());
    for var in vars {
        let err = |reason: String| LaunchError::Env { name: var.name.clone(), reason };
        let value = match (&var.value, var.value_from.as_ref().and_then(|v| v.secret_key_ref.as_ref())) {
            (Some(value), _) => value.clone(),
            (None, Some(key_ref)) => {
                let secret = secrets.get(&key_ref.name).await?;
                let bytes = secret
                    .data
                    .and_then(|d| d.get(&key_ref.key).cloned())
                    .ok_or_else(|| err(format!("no key {} in Secret {}", key_ref.key, key_ref.name)))?;
                String::from_utf8(bytes.0).map_err(|_| err("Secret value is not UTF-8".into()))?
            }
            (None, None) => continue,
        };
        out.push((var.name.clone(), value));
    }
    Ok(out)
}

/// The local directory behind the pod's persistent volume claim.
async fn workspace_dir(client: &Client, pod: &Pod) -> Result<PathBuf, LaunchError> {
    let ns = pod.namespace().unwrap_or_default();
    let claim = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .find_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
        .ok_or_else(|| LaunchError::Workspace("the pod mounts no volume claim".into()))?;
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get(&claim).await?;
    let volume = pvc
        .spec
        .and_then(|s| s.volume_name)
        .ok_or_else(|| LaunchError::Workspace(format!("claim {claim} is not bound")))?;
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&volume).await?;
    let path = pv
        .spec
        .and_then(|s| s.host_path)
        .map(|h| h.path)
        .ok_or_else(|| LaunchError::Workspace(format!("volume {volume} is not a local volume")))?;
    Ok(PathBuf::from(path))
}

/// Poll `GET /readyz` until it answers 200 or `deadline` passes.
pub async fn wait_ready(addr: SocketAddr, deadline: Duration) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if readyz(addr).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn readyz(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET /readyz HTTP/1.0\r\nHost: agent\r\n\r\n").await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}
