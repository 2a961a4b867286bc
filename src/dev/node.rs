//! `moltmate dev node`: a Node that is not a kubelet.
//!
//! The test control plane has an API server, a scheduler and controllers but no kubelet.
//! This stand-in registers a Ready Node, keeps its heartbeat, marks agent pods bound to it
//! Running/Ready with a podIP on its own 127.0.0.x address, finishes pod deletions the way
//! a kubelet does, and provisions local volumes for claims of its storage class. With
//! `--run-agents` it also runs each pod's agent as a local process (see `agents`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    HostPathVolumeSource, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, PersistentVolumeSpec, Pod,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::agents::{self, AgentLauncher};
use crate::cache;

#[derive(clap::Args, Debug, Clone)]
pub struct NodeArgs {
    /// Node name to register.
    #[arg(long, default_value = "moltmate-dev-node")]
    pub name: String,
    /// Where local volumes live.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Claims of this StorageClass get a local volume.
    #[arg(long, default_value = "moltmate-dev")]
    pub storage_class: String,
    /// Address of /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub http_addr: SocketAddr,
    /// Run each agent pod as a local process, the sandbox image's entrypoint given the pod's
    /// args (`moltmate-agent agent`); otherwise only its status is written.
    #[arg(long)]
    pub run_agents: bool,
    /// The program standing in for the sandbox image's entrypoint (default: `moltmate-agent`
    /// beside this binary, where cargo builds both).
    #[arg(long)]
    pub agent_entrypoint: Option<PathBuf>,
    /// Broker URL given to agents instead of the pod's (whose ClusterIP is not routable here).
    #[arg(long)]
    pub broker_url: Option<String>,
    /// The loopback /24 pods get addresses from (`.2` to `.254`). Give each node on one machine
    /// its own, so that two stacks never share agent addresses.
    #[arg(long, default_value = "127.0.0.0", value_parser = parse_pod_network)]
    pub pod_network: Ipv4Addr,
}

/// `moltmate-agent` in the running binary's directory: cargo builds both side by side.
fn lean_agent_beside_this_binary() -> PathBuf {
    let dir = std::env::current_exe().ok().and_then(|exe| exe.parent().map(PathBuf::from));
    dir.unwrap_or_default().join("moltmate-agent")
}

fn parse_pod_network(text: &str) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = text.trim_end_matches("/24").parse().map_err(|e| format!("{text:?}: {e}"))?;
    if !ip.is_loopback() || ip.octets()[3] != 0 {
        return Err(format!("{text:?} is not a loopback /24 such as 127.0.5.0"));
    }
    Ok(ip)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

const FIELD_MANAGER: &str = "moltmate-dev-node";
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Until SIGINT or SIGTERM; returning drops the agent supervisors, which stops their processes.
pub async fn run(args: NodeArgs) -> Result<(), Error> {
    let shutdown = crate::shutdown::Shutdown::on_signals()?;
    let client = Client::try_default().await?;
    std::fs::create_dir_all(args.data_dir.join("volumes"))?;
    register(&client, &args.name).await?;
    info!(node = %args.name, "node registered");

    let health = crate::http::Health::new();
    health.set_ready(true);
    let app = crate::http::router(health, Default::default(), Box::new(|| {}));
    crate::http::serve(args.http_addr, app).await?;

    let launcher = args.run_agents.then(|| AgentLauncher {
        entrypoint: args.agent_entrypoint.clone().unwrap_or_else(lean_agent_beside_this_binary),
        broker_url: args.broker_url.clone(),
        log_dir: args.data_dir.join("logs"),
    });
    let heartbeat = {
        let client = client.clone();
        let name = args.name.clone();
        async move {
            loop {
                tokio::time::sleep(HEARTBEAT).await;
                if let Err(e) = set_node_status(&client, &name).await {
                    warn!(error = %e, "node heartbeat failed");
                }
            }
        }
    };
    tokio::select! {
        r = run_pods(client.clone(), args.name.clone(), launcher, args.pod_network) => r,
        r = run_volumes(client.clone(), args.clone()) => r,
        _ = heartbeat => Ok(()),
        () = shutdown.requested() => Ok(()),
    }
}

async fn register(client: &Client, name: &str) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name, "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" } },
    });
    nodes.patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&node)).await?;
    set_node_status(client, name).await
}

async fn set_node_status(client: &Client, name: &str) -> Result<(), Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = jiff::Timestamp::now().to_string();
    let capacity = json!({ "cpu": "64", "memory": "256Gi", "pods": "500", "ephemeral-storage": "100Gi" });
    let status = json!({
        "status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [{ "type": "InternalIP", "address": "127.0.0.1" }, { "type": "Hostname", "address": name }],
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "moltmate dev node stand-in", "lastHeartbeatTime": now, "lastTransitionTime": now,
            }],
            "nodeInfo": {
                "architecture": std::env::consts::ARCH, "operatingSystem": "linux", "kubeletVersion": "v1.37.2",
                "kubeProxyVersion": "v1.37.2", "containerRuntimeVersion": "moltmate-dev://0", "kernelVersion": "",
                "osImage": "", "bootID": "", "machineID": "", "systemUUID": "",
            },
        }
    });
    nodes.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    Ok(())
}

/// Hands out addresses of the pod network (a loopback /24), one per pod uid.
struct Addresses {
    network: [u8; 4],
    by_pod: HashMap<String, Ipv4Addr>,
}

impl Addresses {
    fn new(network: Ipv4Addr) -> Self {
        Self { network: network.octets(), by_pod: HashMap::new() }
    }

    fn assign(&mut self, uid: &str) -> Option<Ipv4Addr> {
        if let Some(ip) = self.by_pod.get(uid) {
            return Some(*ip);
        }
        let taken: Vec<Ipv4Addr> = self.by_pod.values().copied().collect();
        let [a, b, c, _] = self.network;
        let ip = (2..=254u8).map(|n| Ipv4Addr::new(a, b, c, n)).find(|ip| !taken.contains(ip))?;
        self.by_pod.insert(uid.to_string(), ip);
        Some(ip)
    }
    fn keep(&mut self, uid: &str, ip: Ipv4Addr) {
        self.by_pod.insert(uid.to_string(), ip);
    }
    fn release(&mut self, uid: &str) {
        self.by_pod.remove(uid);
    }
}

/// What the node does with pods bound to it.
struct Kubelet {
    client: Client,
    addresses: Mutex<Addresses>,
    /// `None`: only write pod status (no processes).
    launcher: Option<AgentLauncher>,
    /// Running agents by pod uid.
    agents: Mutex<HashMap<String, Supervisor>>,
}

/// A pod's agent supervisor: send (or drop) `stop` to end it; `task` finishes when it has.
type Supervisor = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

async fn run_pods(
    client: Client,
    node: String,
    launcher: Option<AgentLauncher>,
    pod_network: Ipv4Addr,
) -> Result<(), Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let kubelet = Arc::new(Kubelet {
        client,
        addresses: Mutex::new(Addresses::new(pod_network)),
        launcher,
        agents: Mutex::default(),
    });
    // A kubelet outlives its API server: watch errors are logged and the watch resumes (with
    // backoff), while the agents keep running.
    let mut events = cache::watch(pods, cache::config().fields(&format!("spec.nodeName={node}"))).boxed();
    // Pods seen by the current (re)list: after a watch gap (the API server away), pods deleted
    // meanwhile come with no Delete event, only as missing from the new list.
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        match event {
            watcher::Event::Init => listed = Some(HashSet::new()),
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                if let Some(listed) = listed.as_mut() {
                    listed.insert(pod.uid().unwrap_or_default());
                }
                if let Err(e) = kubelet.handle_pod(&pod).await {
                    warn!(pod = %pod.name_any(), namespace = ?pod.namespace(), error = %e, "could not update pod");
                }
            }
            watcher::Event::InitDone => {
                if let Some(listed) = listed.take() {
                    for uid in kubelet.running_agents().into_iter().filter(|uid| !listed.contains(uid)) {
                        info!(uid = %uid, "pod gone while the watch was down; stopping its agent");
                        kubelet.forget(&uid).await;
                    }
                }
            }
            watcher::Event::Delete(pod) => kubelet.forget(&pod.uid().unwrap_or_default()).await,
        }
    }
    Ok(())
}

impl Kubelet {
    async fn handle_pod(self: &Arc<Self>, pod: &Pod) -> Result<(), Error> {
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        if pod.metadata.deletion_timestamp.is_some() {
            // What a kubelet does once the containers are gone: confirm the deletion.
            self.stop_agent(&uid).await;
            let params = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            self.addresses.lock().expect("address lock").release(&uid);
            return Ok(());
        }
        let status = pod.status.clone().unwrap_or_default();
        if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok()) {
            self.addresses.lock().expect("address lock").keep(&uid, ip);
        }
        let Some(ip) = self.addresses.lock().expect("address lock").assign(&uid) else {
            warn!(pod = %name, "no free 127.0.0.x address left");
            return Ok(());
        };
        match &self.launcher {
            None => {
                if status.phase.as_deref() != Some("Running") || status.pod_ip.is_none() {
                    set_pod_status(&api, pod, ip, true, 0).await?;
                    info!(pod = %name, namespace = %ns, ip = %ip, "pod running");
                }
            }
            Some(launcher) => {
                self.agents.lock().expect("agents lock").entry(uid).or_insert_with(|| {
                    let (stop, stopped) = oneshot::channel();
                    (stop, tokio::spawn(supervise(self.client.clone(), launcher.clone(), pod.clone(), ip, stopped)))
                });
            }
        }
        Ok(())
    }

    /// A pod that is gone: stop its agent and free its address.
    async fn forget(&self, uid: &str) {
        self.stop_agent(uid).await;
        self.addresses.lock().expect("address lock").release(uid);
    }

    /// Pod uids whose agents run here.
    fn running_agents(&self) -> Vec<String> {
        self.agents.lock().expect("agents lock").keys().cloned().collect()
    }

    /// Stop the pod's agent process, if any, and wait for it to be gone.
    async fn stop_agent(&self, uid: &str) {
        let entry = self.agents.lock().expect("agents lock").remove(uid);
        if let Some((stop, task)) = entry {
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

/// Run the pod's agent; report readiness; restart it (with backoff) if it exits, as a
/// kubelet does for `restartPolicy: Always`; stop it when told.
async fn supervise(client: Client, launcher: AgentLauncher, pod: Pod, ip: Ipv4Addr, mut stop: oneshot::Receiver<()>) {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let name = pod.name_any();
    let mut restarts = 0;
    loop {
        let (mut child, addr) = match launcher.start(&client, &pod, ip).await {
            Ok(started) => started,
            Err(e) => {
                warn!(pod = %name, error = %e, "could not start agent");
                let _ = set_pod_status(&api, &pod, ip, false, restarts).await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff(restarts)) => { restarts += 1; continue; }
                    _ = &mut stop => return,
                }
            }
        };
        tokio::select! {
            ready = agents::wait_ready(addr, Duration::from_secs(30)) => {
                if let Err(e) = set_pod_status(&api, &pod, ip, ready, restarts).await {
                    warn!(pod = %name, error = %e, "could not write pod status");
                }
                if ready {
                    info!(pod = %name, addr = %addr, "agent running");
                }
            }
            _ = child.wait() => {}
            _ = &mut stop => { terminate(&mut child).await; return; }
        }
        tokio::select! {
            exit = child.wait() => {
                warn!(pod = %name, status = ?exit, "agent exited; restarting");
                let _ = set_pod_status(&api, &pod, ip, false, restarts + 1).await;
                restarts += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff(restarts)) => {}
                    _ = &mut stop => return,
                }
            }
            _ = &mut stop => { terminate(&mut child).await; return; }
        }
    }
}

/// As a kubelet's CrashLoopBackOff, shorter: 0.25 s doubling, at most 32 s.
fn backoff(restarts: i32) -> Duration {
    crate::backoff::Backoff::new(Duration::from_millis(250), Duration::from_secs(32)).delay(restarts.max(0) as u32)
}

/// SIGTERM, then SIGKILL after a grace period, as a kubelet stops a container.
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        if tokio::time::timeout(Duration::from_secs(5), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}

async fn set_pod_status(api: &Api<Pod>, pod: &Pod, ip: Ipv4Addr, ready: bool, restarts: i32) -> Result<(), Error> {
    let now = jiff::Timestamp::now().to_string();
    let containers: Vec<_> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            json!({
                "name": c.name, "ready": ready, "started": true, "restartCount": restarts,
                "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "state": { "running": { "startedAt": now } },
            })
        })
        .collect();
    let flag = if ready { "True" } else { "False" };
    let condition = |t: &str, status: &str| json!({ "type": t, "status": status, "lastTransitionTime": now });
    let patch = json!({
        "status": {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": ip.to_string(),
            "podIPs": [{ "ip": ip.to_string() }],
            "startTime": now,
            "conditions": [condition("Initialized", "True"), condition("Ready", flag), condition("ContainersReady", flag), condition("PodScheduled", "True")],
            "containerStatuses": containers,
        }
    });
    api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await?;
    Ok(())
}

async fn run_volumes(client: Client, args: NodeArgs) -> Result<(), Error> {
    let claims: Api<PersistentVolumeClaim> = Api::all(client.clone());
    let mut events = cache::watch(claims, cache::config()).boxed();
    while let Some(event) = events.next().await {
        let (watcher::Event::Apply(claim) | watcher::Event::InitApply(claim)) = event else { continue };
        if let Err(e) = provision(&client, &args, &claim).await {
            warn!(claim = %claim.name_any(), namespace = ?claim.namespace(), error = %e, "could not provision volume");
        }
    }
    Ok(())
}

/// A local volume for a pending claim of our class, pre-bound to it.
async fn provision(client: &Client, args: &NodeArgs, claim: &PersistentVolumeClaim) -> Result<(), Error> {
    let Some(spec) = claim.spec.as_ref() else { return Ok(()) };
    let pending = claim.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending") == "Pending";
    if spec.storage_class_name.as_deref() != Some(args.storage_class.as_str()) || spec.volume_name.is_some() || !pending
    {
        return Ok(());
    }
    let uid = claim.uid().unwrap_or_default();
    let ns = claim.namespace().unwrap_or_default();
    let path = args.data_dir.join("volumes").join(format!("{ns}-{}-{uid}", claim.name_any()));
    std::fs::create_dir_all(&path)?;
    let capacity: BTreeMap<_, _> = spec.resources.as_ref().and_then(|r| r.requests.clone()).unwrap_or_default();
    let volume = PersistentVolume {
        metadata: ObjectMeta { name: Some(format!("pvc-{uid}")), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(capacity),
            access_modes: spec.access_modes.clone(),
            storage_class_name: Some(args.storage_class.clone()),
            persistent_volume_reclaim_policy: Some("Retain".into()),
            host_path: Some(HostPathVolumeSource { path: path.display().to_string(), type_: Some("Directory".into()) }),
            claim_ref: Some(ObjectReference {
                namespace: Some(ns.clone()),
                name: Some(claim.name_any()),
                uid: Some(uid.clone()),
                ..ObjectReference::default()
            }),
            ..PersistentVolumeSpec::default()
        }),
        ..PersistentVolume::default()
    };
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    match volumes.create(&PostParams::default(), &volume).await {
        Ok(_) => info!(claim = %claim.name_any(), namespace = %ns, path = %path.display(), "volume provisioned"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Addresses;
    use std::net::Ipv4Addr;

    #[test]
    fn addresses_are_unique_and_reused_after_release() {
        let mut a = Addresses::new(Ipv4Addr::new(127, 0, 0, 0));
        let first = a.assign("p1").unwrap();
        assert_eq!(first, Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(Addresses::new(Ipv4Addr::new(127, 9, 3, 0)).assign("p"), Some(Ipv4Addr::new(127, 9, 3, 2)));
        assert!(super::parse_pod_network("127.9.3.0").is_ok() && super::parse_pod_network("127.9.3.0/24").is_ok());
        assert!(super::parse_pod_network("10.0.0.0").is_err() && super::parse_pod_network("127.0.0.5").is_err());
        assert_eq!(a.assign("p1"), Some(first), "stable per pod");
        let second = a.assign("p2").unwrap();
        assert_ne!(first, second);
        a.release("p1");
        assert_eq!(a.assign("p3"), Some(first));
    }
}
