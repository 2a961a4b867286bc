//! The local node runs each agent pod as a real process of the sandbox image's program
//! (`moltmate-agent agent`), on the pod's own address, with the claim's directory as its
//! workspace — so data outlives the pod.

use std::time::Duration;

use crate::support::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use serde_json::json;

async fn pod_ip(client: &Client, ns: &str) -> String {
    let pod = Api::<Pod>::namespaced(client.clone(), ns).get("agent").await.unwrap();
    pod.status.unwrap().pod_ip.unwrap()
}

/// GET with an optional bearer token, to an agent at `ip:8080`.
async fn agent_get(ip: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    http_get_from(ip, 8080, path, token).await
}

/// The command lines of the node's children (`/proc/PID/cmdline` is readable even for the
/// agent, which makes itself non-dumpable).
fn children_of(pid: u32) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // `PID (comm) STATE PPID ...`: the fields after the last `)`.
        let parent = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if parent == Some(pid) {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty());
            out.push(args.map(|a| String::from_utf8_lossy(a).into_owned()).collect());
        }
    }
    out
}

async fn workspace_dir(client: &Client, ns: &str) -> std::path::PathBuf {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns).get("workspace").await.unwrap();
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get(pvc.spec.unwrap().volume_name.as_deref().unwrap())
        .await
        .unwrap();
    pv.spec.unwrap().host_path.unwrap().path.into()
}

#[tokio::test]
async fn agent_pods_run_as_processes_and_keep_their_workspace() {
    let env = TestEnv::up("node-agents");
    env.install().await;
    let client = env.admin().await;
    let mut node = env.spawn_node_with(&["--run-agents", "--broker-url", "http://127.0.0.1:9"]);
    let _operator = env.spawn_operator("operator", free_port());

    let name = "runner";
    let ns = format!("moltmate-{name}");
    apply_user(&client, &user_manifest(name, 3001, json!({}))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(30)).await;

    let secret = Api::<Secret>::namespaced(client.clone(), &ns).get("agent-token").await.unwrap();
    let token = String::from_utf8(secret.data.unwrap()["token"].0.clone()).unwrap();
    let ip = pod_ip(&client, &ns).await;
    let (code, body) = agent_get(&ip, "/v1/status", Some(&token)).await.expect("the agent answers on its pod IP");
    assert_eq!(code, 200, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["user"], name);
    assert_eq!(status["profile"]["profile"], "public", "the pod's resolved profile reached the process");
    assert_eq!(agent_get(&ip, "/v1/status", None).await.unwrap().0, 401, "the token from the Secret is required");
    assert_eq!(agent_get(&ip, "/v1/status", Some("not-the-token-of-this-user")).await.unwrap().0, 401);
    // The image's entrypoint given the pod's args: the lean binary, as in the sandbox image.
    let agents = children_of(node.child.id());
    assert_eq!(agents, [vec![MOLTMATE_AGENT.to_string(), "agent".to_string()]], "the node's processes");

    let dir = workspace_dir(&client, &ns).await;
    assert!(dir.join("SOUL.md").exists(), "the agent initialised the volume's directory");
    std::fs::create_dir_all(dir.join("files")).unwrap();
    std::fs::write(dir.join("files/keep.txt"), "still here\n").unwrap();

    // A new pod (profile change) is a new process on a new address, with the same files.
    let old_uid = Api::<Pod>::namespaced(client.clone(), &ns).get("agent").await.unwrap().uid();
    apply_user(&client, &user_manifest(name, 3001, json!({ "profile": "family" }))).await.unwrap();
    wait_until("a new, ready pod", Duration::from_secs(30), || async {
        let pod = Api::<Pod>::namespaced(client.clone(), &ns).get("agent").await.ok()?;
        let ready = pod.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        (pod.uid() != old_uid && ready).then_some(())
    })
    .await;
    let ip = pod_ip(&client, &ns).await;
    let (code, body) = agent_get(&ip, "/v1/status", Some(&token)).await.unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("\"family\""), "{body}");
    assert_eq!(std::fs::read_to_string(dir.join("files/keep.txt")).unwrap(), "still here\n");

    // Deleting the user stops the process.
    let users: Api<moltmates::MoltmateUser> = Api::all(client.clone());
    users.delete(name, &DeleteParams::default()).await.unwrap();
    wait_until("agent process stopped", Duration::from_secs(30), || async {
        agent_get(&ip, "/healthz", None).await.is_none().then_some(())
    })
    .await;
    // The pod goes first; the user itself only once its cleanup is done. Applied before
    // then, the manifest would land on the departing object.
    wait_until("the user gone", Duration::from_secs(30), || async {
        users.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;

    // An agent never outlives its node, even one killed with SIGKILL (it would keep its
    // pod's address and answer for a pod that no longer exists).
    apply_user(&client, &user_manifest(name, 3001, json!({}))).await.unwrap();
    wait_phase(&client, name, "Ready", Duration::from_secs(30)).await;
    let ip = pod_ip(&client, &ns).await;
    assert_eq!(agent_get(&ip, "/healthz", None).await.map(|r| r.0), Some(200));
    node.kill();
    wait_until("agents gone with their node", Duration::from_secs(10), || async {
        agent_get(&ip, "/healthz", None).await.is_none().then_some(())
    })
    .await;
}
