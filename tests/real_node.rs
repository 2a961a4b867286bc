//! The operator's sandboxes on a real node (`scripts/node`): kubelet and containerd run the
//! pods, kube-router enforces the NetworkPolicies, k3s's local-path provisions the volumes.
//! The agent image is the node's probe (it answers the agent's port and carries busybox), so
//! every "cannot reach" is a connection tried with packets from inside an agent's container.
//! Nothing here can leave the machine: the node's namespaces have no route off it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::real_node::{CHART_BOT_TOKEN, CHART_LLM_KEY, ChartOnNode, node_env};
use crate::support::*;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

/// Whether a TCP connection from inside `namespace`/`pod` to `address`:`port` is accepted.
/// Panics if the attempt itself could not be made (the pod gone, exec refused).
fn connects(env: &TestEnv, namespace: &str, pod: &str, address: &str, port: u16) -> bool {
    let port = port.to_string();
    let out = env.kubectl(&["exec", "-n", namespace, pod, "--", "/bin/busybox", "nc", "-w", "2", address, &port]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return true;
    }
    assert!(stderr.contains("nc: "), "could not try {address}:{port} from {namespace}/{pod}: {stderr}");
    false
}

/// A pod standing in for the gateway in the release namespace: the broker's peer.
async fn gateway_stand_in(client: &Client, image: &str) -> String {
    let pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "gateway", "namespace": SYSTEM_NS, "labels": { "app.kubernetes.io/name": "moltmate-gateway" } },
        "spec": {
            "containers": [{ "name": "gateway", "image": image, "imagePullPolicy": "Never",
                "securityContext": { "runAsNonRoot": true, "runAsUser": 65534, "allowPrivilegeEscalation": false,
                    "capabilities": { "drop": ["ALL"] }, "seccompProfile": { "type": "RuntimeDefault" } } }],
        },
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM_NS);
    pods.create(&PostParams::default(), &pod).await.unwrap();
    wait_until("the gateway stand-in running", Duration::from_secs(60), || async {
        let pod = pods.get("gateway").await.ok()?;
        let ready = pod.status.as_ref()?.conditions.as_ref()?.iter().any(|c| c.type_ == "Ready" && c.status == "True");
        ready.then(|| pod.status?.pod_ip).flatten()
    })
    .await
}

/// One more policy for a namespace's pods that lets all their egress out (policies add up):
/// what a careless or hostile edit of a live install would add.
fn let_everything_out() -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": { "name": "let-everything-out" },
        "spec": { "podSelector": {}, "policyTypes": ["Egress"], "egress": [{}] },
    }))
    .unwrap()
}

async fn pod_ip(client: &Client, namespace: &str, name: &str) -> String {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace).get(name).await.unwrap();
    pod.status.and_then(|s| s.pod_ip).unwrap_or_else(|| panic!("{namespace}/{name} has no address"))
}

async fn cluster_ip(client: &Client, namespace: &str, name: &str) -> String {
    let service = Api::<Service>::namespaced(client.clone(), namespace).get(name).await.unwrap();
    service.spec.and_then(|s| s.cluster_ip).unwrap_or_else(|| panic!("{namespace}/{name} has no ClusterIP"))
}

#[tokio::test]
async fn agents_on_a_real_node_reach_only_what_their_policy_allows() {
    let started = Instant::now();
    let env = TestEnv::up_real_node("real-node");
    env.install().await;
    let client = env.admin().await;
    let probe = node_env(&env, "PROBE_IMAGE");
    let (node_ip, host_ip) = (node_env(&env, "NODE_IP"), node_env(&env, "HOST_IP"));
    let (world_ip, metadata_ip) = (node_env(&env, "WORLD_IP"), node_env(&env, "METADATA_IP"));
    let api_port: u16 = node_env(&env, "APISERVER_PORT").parse().unwrap();
    // A service on this host, where the Telegram and LLM stand-ins would listen.
    let host_service = TcpListener::bind((host_ip.as_str(), 0)).unwrap();
    let host_port = host_service.local_addr().unwrap().port();

    let gateway_ip = gateway_stand_in(&client, &probe).await;
    let key = env.dir.join("master.key");
    let _operator = env.spawn(
        "operator",
        &env.operator_kubeconfig(),
        &[
            "operator",
            "--sandbox-image",
            &probe,
            "--http-addr",
            "127.0.0.1:0",
            "--master-key-file",
            key.to_str().unwrap(),
            "--lease-namespace",
            SYSTEM_NS,
        ],
    );
    // No network, the web through the broker only, and the whole internet.
    apply_user(&client, &user_manifest("nell", 5001, json!({ "profile": "public" }))).await.unwrap();
    apply_user(&client, &user_manifest("lin", 5003, json!({ "profile": "family" }))).await.unwrap();
    apply_user(&client, &user_manifest("fay", 5002, json!({ "profile": "personal" }))).await.unwrap();
    for user in ["nell", "lin", "fay"] {
        wait_phase(&client, user, "Ready", Duration::from_secs(120)).await;
    }
    eprintln!("three agents Ready on the real node after {:?}", started.elapsed());

    // The container runs as the operator says: uid 10001, read-only root, a writable workspace.
    let id = env.kubectl(&["exec", "-n", "moltmate-nell", "agent", "--", "/bin/busybox", "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&id.stdout).trim(), "10001", "{}", String::from_utf8_lossy(&id.stderr));
    let root = env.kubectl(&["exec", "-n", "moltmate-nell", "agent", "--", "/bin/busybox", "touch", "/x"]);
    assert!(!root.status.success(), "the root filesystem is read-only");
    let workspace =
        env.kubectl(&["exec", "-n", "moltmate-nell", "agent", "--", "/bin/busybox", "touch", "/workspace/x"]);
    assert!(workspace.status.success(), "{}", String::from_utf8_lossy(&workspace.stderr));
    // The kernel holds the container to its profile's memory (public: 512Mi): a process that
    // fills a 768 MiB buffer is killed, where the same on this host would not be.
    let hog = env.kubectl(&[
        "exec",
        "-n",
        "moltmate-nell",
        "agent",
        "--",
        "/bin/busybox",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=768M",
        "count=1",
    ]);
    let hog_err = String::from_utf8_lossy(&hog.stderr);
    assert!(hog_err.contains("exit code 137"), "a 768 MiB buffer in a 512Mi container: {hog_err}");

    let broker_ip = cluster_ip(&client, SYSTEM_NS, "moltmate-broker").await;
    let (fay_ip, fay_service) =
        (pod_ip(&client, "moltmate-fay", "agent").await, cluster_ip(&client, "moltmate-fay", "agent").await);
    let nell = |address: &str, port: u16| connects(&env, "moltmate-nell", "agent", address, port);
    let fay = |address: &str, port: u16| connects(&env, "moltmate-fay", "agent", address, port);

    // network: none and limited reach the broker and nothing else (limited's web goes
    // through the broker).
    let unreachable = [
        (fay_ip.as_str(), 8080, "another user's agent"),
        (fay_service.as_str(), 8080, "another user's Service"),
        (gateway_ip.as_str(), 9090, "the gateway's other ports"),
        ("10.96.0.1", 443, "the API server's Service"),
        (node_ip.as_str(), api_port, "the API server"),
        (node_ip.as_str(), 10250, "the kubelet"),
        (host_ip.as_str(), host_port, "this host"),
        (world_ip.as_str(), 80, "the internet"),
        (world_ip.as_str(), 53, "a DNS server"),
        (metadata_ip.as_str(), 80, "the metadata endpoint"),
    ];
    for (user, network) in [("nell", "none"), ("lin", "limited")] {
        let namespace = format!("moltmate-{user}");
        let reaches = |address: &str, port: u16| connects(&env, &namespace, "agent", address, port);
        assert!(reaches(&gateway_ip, 8081), "network {network}: the broker's pod");
        assert!(reaches(&broker_ip, 8081), "network {network}: the broker's Service");
        for (address, port, what) in unreachable {
            assert!(!reaches(address, port), "network {network} reached {what} at {address}:{port}");
        }
    }

    // network: full reaches the internet, never the cluster, this host or the metadata endpoint.
    assert!(fay(&world_ip, 80), "full reaches the internet");
    assert!(fay(&broker_ip, 8081), "and the broker");
    for (address, port, what) in [
        (metadata_ip.as_str(), 80, "the metadata endpoint"),
        (node_ip.as_str(), 10250, "the kubelet"),
        (node_ip.as_str(), api_port, "the API server"),
        (host_ip.as_str(), host_port, "this host"),
        (gateway_ip.as_str(), 9090, "the gateway's other ports"),
    ] {
        assert!(!fay(address, port), "network full reached {what} at {address}:{port}");
    }

    // The fence is the policy: with one more policy that lets everything out (policies add up),
    // the same container reaches the internet; without it, not again.
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), "moltmate-nell");
    policies.create(&PostParams::default(), &let_everything_out()).await.unwrap();
    wait_until("the loosened policy enforced", Duration::from_secs(30), || async { nell(&world_ip, 80).then_some(()) })
        .await;
    policies.delete("let-everything-out", &DeleteParams::default()).await.unwrap();
    wait_until("the fence back", Duration::from_secs(30), || async { (!nell(&world_ip, 80)).then_some(()) }).await;
    eprintln!("real node test took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_chart_on_a_real_node_answers_through_the_agents_container_and_a_reset_wipes_its_volume() {
    use moltmates::gateway::resets::RESET_NOTICE;
    const ALICE: i64 = 6001;
    const BOB: i64 = 6002;

    let started = Instant::now();
    let env = TestEnv::up_real_node("real-chart");
    let ChartOnNode { tg, llm, .. } = ChartOnNode::install(&env, &[]).await;
    let kubectl_ok = |args: &[&str]| {
        let out = env.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let kubeconfig = env.admin_kubeconfig();
    eprintln!("operator and gateway containers Ready after {:?}", started.elapsed());

    let client = env.admin().await;
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "family" }))).await.unwrap();
    // Bob's agent goes idle soon after each answer; his next message must start it again.
    apply_user(&client, &user_manifest("bob", BOB, json!({ "profile": "public", "idleTimeout": "5s" }))).await.unwrap();
    wait_phase(&client, "alice", "Ready", Duration::from_secs(120)).await;
    eprintln!("an agent container Ready after {:?}", started.elapsed());
    let uid = env.kubectl(&[
        "get",
        "pod",
        "-n",
        "moltmate-alice",
        "agent",
        "-o",
        "jsonpath={.spec.securityContext.runAsUser}",
    ]);
    assert_eq!(String::from_utf8_lossy(&uid.stdout), "10001");
    // The keys stay in the gateway: the agent's container holds its own token and neither the
    // bot token nor the provider's key.
    let environment = env.kubectl(&["exec", "-n", "moltmate-alice", "agent", "--", "/usr/bin/env"]);
    let environment = String::from_utf8_lossy(&environment.stdout).into_owned();
    assert!(environment.contains("MOLTMATE_AGENT_TOKEN="), "{environment}");
    for secret in [CHART_BOT_TOKEN, CHART_LLM_KEY] {
        assert!(!environment.contains(secret), "{secret} in the agent's environment");
    }

    // Telegram -> gateway pod -> agent pod -> broker -> the LLM stand-in, and back.
    tg.inject_text(ALICE, "/tool write_file diary.txt dear diary, from the real node").unwrap();
    tg.inject_text(ALICE, "hello from a real container").unwrap();
    tg.inject_text(BOB, "bob here").unwrap();
    wait_text(&tg, ALICE, "You said: hello from a real container", Duration::from_secs(60)).await;
    // Each person's messages reach their own agent, whose answer reaches them only.
    wait_text(&tg, BOB, "You said: bob here", Duration::from_secs(120)).await;
    assert!(!texts(&tg, ALICE).iter().any(|t| t.contains("bob here")), "{:?}", texts(&tg, ALICE));
    assert!(!texts(&tg, BOB).iter().any(|t| t.contains("real container")), "{:?}", texts(&tg, BOB));
    // One person's trail across the containers' logs, as the runtime keeps them: the same
    // `user` and `telegram_id` in the gateway's and the agent's JSON lines.
    for (namespace, target) in [(SYSTEM_NS, "deploy/moltmate-gateway"), ("moltmate-alice", "pod/agent")] {
        let logs = env.kubectl(&["logs", "-n", namespace, target]);
        let logs = String::from_utf8_lossy(&logs.stdout);
        let trail = logs.lines().filter(|l| l.contains(r#""user":"alice""#) && l.contains(r#""telegram_id":6001"#));
        assert!(trail.count() > 0, "no line of alice's in {target}'s log:\n{logs}");
    }

    // The exec tool in the sandbox image: an allowlisted program runs on the workspace's
    // file; a path out of `files/` is refused before anything runs.
    tg.inject_text(ALICE, "/tool exec cat diary.txt").unwrap();
    wait_text(&tg, ALICE, "dear diary, from the real node", Duration::from_secs(60)).await;
    tg.inject_text(ALICE, "/tool exec cat /etc/passwd").unwrap();
    let replies = wait_text(&tg, ALICE, "denied", Duration::from_secs(60)).await;
    assert!(!replies.iter().any(|t| t.contains("root:x:0")), "{replies:?}");

    // A document: fetched by the gateway's container from Telegram, written by the agent's
    // (uid 10001, read-only root) into its volume, read there by an allowlisted program, and
    // handed back with send_file.
    let wait = Duration::from_secs(60);
    tg.inject_document(ALICE, "pears.txt", "text/plain", "pears: 7\n", "how many pears?").unwrap();
    wait_text(&tg, ALICE, "files/pears.txt (9 bytes, text/plain)", wait).await;
    tg.inject_text(ALICE, "/tool exec grep pears pears.txt").unwrap();
    wait_text(&tg, ALICE, "pears: 7", wait).await;
    tg.inject_text(ALICE, "/tool send_file pears.txt").unwrap();
    let document =
        wait_until("the document back", wait, || async { tg.sent_to(ALICE).into_iter().find_map(|m| m.document) })
            .await;
    assert_eq!((document.file_name.as_str(), document.bytes.as_slice()), ("pears.txt", &b"pears: 7\n"[..]));

    // What the gateway keeps in the cluster, through the chart's RBAC: the person's model
    // choice and reminders in their status, the usage record in the release namespace.
    tg.inject_text(ALICE, "/model gpt-other").unwrap();
    wait_text(&tg, ALICE, "From now on your assistant uses gpt-other.", wait).await;
    tg.inject_text(ALICE, "which model?").unwrap();
    wait_text(&tg, ALICE, "You said: which model?", wait).await;
    let asked = llm.requests().into_iter().rfind(|r| r.body.to_string().contains("which model?")).unwrap();
    assert_eq!(asked.body["model"], "gpt-other", "the broker's container applied the choice");
    tg.inject_text(ALICE, "/model default").unwrap();
    wait_text(&tg, ALICE, "the default model again", wait).await;
    let remind = json!({ "text": "stretch", "when": "in 3s" });
    tg.inject_text(ALICE, &format!("/tool schedule {remind}")).unwrap();
    wait_text(&tg, ALICE, "⏰ Reminder: stretch", wait).await;
    tg.inject_text(ALICE, "/usage").unwrap();
    let usage = wait_text(&tg, ALICE, "Your usage", wait).await;
    assert!(!usage.last().unwrap().contains("Today: 0 of"), "the turns were counted: {usage:?}");

    // The agent serves only while its egress is blocked: with one more policy that lets
    // everything out, its container stops being Ready (the API Service answers it), and the
    // user shows it; once the policy is gone it serves again.
    let ready_condition = || {
        let out = env.kubectl(&[
            "get",
            "pod",
            "-n",
            "moltmate-alice",
            "agent",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), "moltmate-alice");
    policies.create(&PostParams::default(), &let_everything_out()).await.unwrap();
    wait_until("alice's agent not Ready with its egress open", Duration::from_secs(60), || async {
        (ready_condition() == "False").then_some(())
    })
    .await;
    wait_phase(&client, "alice", "Provisioning", Duration::from_secs(30)).await;
    let logs = env.kubectl(&["logs", "-n", "moltmate-alice", "agent"]);
    assert!(String::from_utf8_lossy(&logs.stdout).contains("egress is open"), "the agent says why");
    // A message meanwhile waits: the gateway, waking the agent, asks it whether it serves
    // rather than wait for the kubelet, and it says no while its egress is open.
    tg.inject_text(ALICE, "sent while open").unwrap();
    let sent = Instant::now();
    while sent.elapsed() < Duration::from_secs(4) {
        let served = llm.requests().iter().any(|r| r.body.to_string().contains("sent while open"));
        assert!(!served, "the agent was given a message with its egress open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    policies.delete("let-everything-out", &DeleteParams::default()).await.unwrap();
    wait_phase(&client, "alice", "Ready", Duration::from_secs(60)).await;
    wait_text(&tg, ALICE, "You said: sent while open", Duration::from_secs(60)).await;
    tg.inject_text(ALICE, "fenced again").unwrap();
    wait_text(&tg, ALICE, "You said: fenced again", Duration::from_secs(60)).await;

    // An idle user: the operator removes the pod; a message starts a container again.
    wait_phase(&client, "bob", "Idle", Duration::from_secs(60)).await;
    wait_until("bob's agent pod gone", Duration::from_secs(60), || async {
        let out = env.kubectl(&["get", "pod", "-n", "moltmate-bob", "agent", "--ignore-not-found", "-o", "name"]);
        out.stdout.is_empty().then_some(())
    })
    .await;
    let woken = Instant::now();
    tg.inject_text(BOB, "wake up").unwrap();
    wait_text(&tg, BOB, "You said: wake up", Duration::from_secs(60)).await;
    eprintln!("an idle user's message answered by a new container after {:?}", woken.elapsed());

    let volume_of = || {
        let out =
            env.kubectl(&["get", "pvc", "-n", "moltmate-alice", "workspace", "-o", "jsonpath={.spec.volumeName}"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let old_volume = volume_of();
    let volumes = env.dir.join("node/volumes");
    let old_dir = std::fs::read_dir(&volumes)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains(&old_volume))
        .expect("the workspace's folder on the node");
    assert!(old_dir.join("files/diary.txt").exists(), "the agent wrote into its volume");

    // A reset: a new volume; local-path deletes the old one's folder.
    let reset = Command::new(MOLTMATE)
        .args(["users", "reset", "alice", "--wait", "--timeout", "120s"])
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .unwrap();
    assert!(reset.status.success(), "{}", String::from_utf8_lossy(&reset.stderr));
    wait_text(&tg, ALICE, RESET_NOTICE, Duration::from_secs(60)).await;
    wait_phase(&client, "alice", "Ready", Duration::from_secs(120)).await;
    assert_ne!(volume_of(), old_volume, "a new volume");
    wait_until("the old volume's folder deleted", Duration::from_secs(60), || async {
        (!old_dir.exists()).then_some(())
    })
    .await;
    tg.inject_text(ALICE, "still there?").unwrap();
    wait_text(&tg, ALICE, "You said: still there?", Duration::from_secs(60)).await;

    // The master key: generated by the operator into a Secret the chart does not own.
    let get = |args: &[&str]| String::from_utf8_lossy(&env.kubectl(args).stdout).into_owned();
    let master_key =
        || get(&["get", "secret", "-n", SYSTEM_NS, "moltmate-master-key", "-o", "jsonpath={.data.master-key}"]);
    let key = master_key();
    assert!(!key.is_empty(), "the operator generated no master key");
    let alice_pod = || get(&["get", "pod", "-n", "moltmate-alice", "agent", "-o", "jsonpath={.metadata.uid}"]);
    let pod_before = alice_pod();

    // Upgrade as the README says: the CRD first, then the release. A changed value rolls the
    // gateway; agents keep their tokens, so their pods stay.
    let crds = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/moltmates/crds/");
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", crds]);
    let release = |verb: &str, extra: &[&str]| {
        let mut args: Vec<String> = [verb, "moltmates"].map(String::from).to_vec();
        if verb == "upgrade" {
            args.push(concat!(env!("CARGO_MANIFEST_DIR"), "/charts/moltmates").into());
        }
        args.extend(["--kubeconfig".into(), kubeconfig.to_string_lossy().into_owned()]);
        args.extend(["--namespace".into(), SYSTEM_NS.into()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        helm_ok(&args)
    };
    let upgraded = release("upgrade", &["--reuse-values", "--set", "gateway.terminationGracePeriodSeconds=150"]);
    assert!(upgraded.contains("REVISION: 2"), "{upgraded}");
    kubectl_ok(&["rollout", "status", "-n", SYSTEM_NS, "deployment/moltmate-gateway", "--timeout=240s"]);
    let grace = get(&[
        "get",
        "deployment",
        "-n",
        SYSTEM_NS,
        "moltmate-gateway",
        "-o",
        "jsonpath={.spec.template.spec.terminationGracePeriodSeconds}",
    ]);
    assert_eq!(grace, "150", "the upgrade applied");
    assert_eq!(master_key(), key, "the master key survives the upgrade");
    tg.inject_text(ALICE, "after the upgrade").unwrap();
    wait_text(&tg, ALICE, "You said: after the upgrade", Duration::from_secs(120)).await;
    assert_eq!(alice_pod(), pod_before, "the upgrade restarted an agent");

    // Uninstall in the README's order: the users while the operator runs, then the release.
    kubectl_ok(&["delete", "mmu", "--all", "--wait", "--timeout=120s"]);
    release("uninstall", &["--wait", "--timeout", "120s"]);
    let deployments = get(&["get", "deployments", "-n", SYSTEM_NS, "-o", "name"]);
    assert!(deployments.trim().is_empty(), "left running: {deployments}");
    // What stays, as the README lists it: the CRD, the master key, retained workspaces.
    assert_eq!(master_key(), key, "the master key outlives the uninstall");
    assert!(!get(&["get", "crd", "moltmateusers.moltmate.io", "-o", "name"]).is_empty(), "the CRD stays");
    for user in ["alice", "bob"] {
        let ns = format!("moltmate-{user}");
        let retained = get(&["get", "namespace", &ns, "-o", "jsonpath={.metadata.labels.moltmate\\.io/retained}"]);
        assert_eq!(retained, "true", "{ns}: Retain keeps the namespace, labelled");
        assert!(!get(&["get", "pvc", "-n", &ns, "workspace", "-o", "name"]).is_empty(), "{ns}: the workspace stays");
        assert!(get(&["get", "pods", "-n", &ns, "-o", "name"]).trim().is_empty(), "{ns}: no agent runs");
    }
    eprintln!("real chart test took {:?}", started.elapsed());
}

#[test]
fn make_dev_cluster_chats_with_each_users_agent_in_its_container_and_leaves_nothing_running() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dev-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    let mut chat = Command::new(format!("{REPO}/scripts/dev"))
        .arg("--real-node")
        .env("DEV_STACK_DIR", &dir)
        .env("MOLTMATE_BIN", MOLTMATE)
        .env("TESTENV_WATCH_PID", std::process::id().to_string())
        .env_remove("MOLTMATE_LLM_BASE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    chat.stdin.take().unwrap().write_all(b"grandma: hello from a container\nvisitor: /status\n").unwrap();
    let out = chat.wait_with_output().unwrap();
    let (transcript, said) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/dev --real-node failed:\n{transcript}\n{said}");
    eprintln!("make dev-cluster took {:?}", started.elapsed());
    assert!(said.contains("each behind its own"), "the banner says where agents run: {said}");
    for want in ["grandma> hello from a container", "bot> You said: hello from a container", "bot> Profile: public"] {
        assert!(transcript.lines().any(|l| l == want), "{want:?} missing in:\n{transcript}");
    }
    // Stopped whole: the node's network namespace is gone with everything in it.
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    let netns = env.lines().find_map(|l| l.strip_prefix("NETNS_NODE=")).expect("NETNS_NODE in env");
    assert!(!std::path::Path::new("/run/netns").join(netns).exists(), "{netns} left behind");
}
