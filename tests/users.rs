//! `moltmate users` and `moltmate users reset` against a real control plane, the real
//! operator and gateway, real agent processes (the node stand-in), and the Telegram and LLM
//! stand-ins: a user who chatted is listed, reset (a new, empty workspace volume, the
//! MoltmateUser kept), told once, and answered by a fresh agent.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use moltmates::MoltmateUser;
use moltmates::dev::llm::Scripted;
use moltmates::dev::telegram::{StatsCondition, TelegramStandIn};
use moltmates::gateway::resets::RESET_NOTICE;
use serde_json::{Value, json};

const ALICE: i64 = 3001;
const BOB: i64 = 3002;
const RORY: i64 = 3003;

fn notices(tg: &TelegramStandIn, chat: i64) -> usize {
    texts(tg, chat).iter().filter(|t| *t == RESET_NOTICE).count()
}

/// `moltmate users ARGS` as an administrator runs it; (success, stdout, stderr).
fn users_cli(env: &TestEnv, args: &[&str]) -> (bool, String, String) {
    let out =
        Command::new(MOLTMATE).arg("users").args(args).env("KUBECONFIG", env.admin_kubeconfig()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_rows(env: &TestEnv, extra: &[&str]) -> Vec<Value> {
    let (ok, out, err) = users_cli(env, &[&["-o", "json"], extra].concat());
    assert!(ok, "{err}");
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name} not in {rows:?}"))
}

/// The directory behind a user's workspace claim on the local node.
async fn volume_dir(client: &Client, user: &str) -> PathBuf {
    let ns = format!("moltmate-{user}");
    let volume = wait_until("claim bound", Duration::from_secs(20), || async {
        let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns).get_opt("workspace").await.ok()??;
        pvc.spec?.volume_name
    })
    .await;
    let pv = Api::<PersistentVolume>::all(client.clone()).get(&volume).await.unwrap();
    pv.spec.unwrap().host_path.unwrap().path.into()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// Everything under `dir` as text (names and contents), links not followed.
fn all_text(dir: &Path) -> String {
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        text += &format!("{}\n", path.display());
        if kind.is_dir() {
            text += &all_text(&path);
        } else if kind.is_file() {
            text += &String::from_utf8_lossy(&std::fs::read(&path).unwrap());
        }
    }
    text
}

async fn agent_pod_uid(client: &Client, user: &str) -> Option<String> {
    let pod = Api::<Pod>::namespaced(client.clone(), &format!("moltmate-{user}")).get_opt("agent").await.ok()??;
    pod.metadata.deletion_timestamp.is_none().then(|| pod.uid()).flatten()
}

async fn status_of(client: &Client, user: &str) -> moltmates::crd::MoltmateUserStatus {
    Api::<MoltmateUser>::all(client.clone()).get(user).await.unwrap().status.unwrap_or_default()
}

#[tokio::test]
async fn users_are_listed_and_a_reset_wipes_the_workspace_and_keeps_the_user() {
    let started = Instant::now();
    let Stack { env, client, llm, tg, broker_port } = Stack::up("users").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    apply_user(&client, &user_manifest("alice", ALICE, json!({ "profile": "family" }))).await.unwrap();
    apply_user(&client, &user_manifest("bob", BOB, json!({ "profile": "family" }))).await.unwrap();
    let refused = apply_user(&client, &user_manifest("negative", 3009, json!({ "resetGeneration": -1 })))
        .await
        .expect_err("a negative reset generation is refused");
    assert!(refused.to_string().contains("spec.resetGeneration"), "{refused}");

    let http_port = free_port();
    let metrics_url = format!("http://127.0.0.1:{http_port}/metrics");
    let _gateway = GatewayCommand::against(&env, &tg, &llm, broker_port).spawn_on(&env, http_port);
    for name in ["alice", "bob"] {
        wait_phase(&client, name, "Ready", Duration::from_secs(30)).await;
    }

    // Alice chats: memory, a file and history land in her workspace.
    tg.inject_text(ALICE, "/tool remember alice loves marmalade").unwrap();
    tg.inject_text(ALICE, "/tool write_file diary.txt dear diary, apples today").unwrap();
    tg.inject_text(ALICE, "apples from alice").unwrap();
    wait_text(&tg, ALICE, "You said: apples from alice", Duration::from_secs(30)).await;
    let workspace = volume_dir(&client, "alice").await;
    let before = all_text(&workspace);
    assert!(
        before.contains("marmalade") && before.contains("dear diary") && before.contains("apples from alice"),
        "{before}"
    );
    // What anything in the sandbox could leave to survive a reset: a link out of the
    // workspace, a forged reset record, a directory it cannot be emptied of.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("precious.txt"), "not the agent's").unwrap();
    std::os::unix::fs::symlink(outside.path(), workspace.join("files/escape")).unwrap();
    std::fs::create_dir_all(workspace.join(".moltmate")).unwrap();
    std::fs::write(workspace.join(".moltmate/reset-generation"), "99 forged\n").unwrap();
    std::fs::create_dir(workspace.join("files/locked")).unwrap();
    std::fs::write(workspace.join("files/locked/apples-kept.txt"), "apples").unwrap();
    std::fs::set_permissions(workspace.join("files/locked"), std::fs::Permissions::from_mode(0o500)).unwrap();

    // A slow turn holds alice's worker; two more messages wait in her queue.
    let requests = llm.requests().len();
    tg.inject_text(ALICE, "/slow 6000 take your time").unwrap();
    llm.wait_for_requests(requests + 1, Duration::from_secs(20)).await.expect("the slow turn started");
    tg.inject_text(ALICE, "queued one").unwrap();
    tg.inject_text(ALICE, "queued two").unwrap();
    let rows = wait_until("alice's queue in `moltmate users`", Duration::from_secs(10), || async {
        let rows = json_rows(&env, &["--gateway-metrics", &metrics_url]);
        (row(&rows, "alice")["queue"] == 2).then_some(rows)
    })
    .await;
    let alice = row(&rows, "alice");
    assert_eq!(
        (alice["telegramId"].as_i64(), alice["profile"].as_str(), alice["phase"].as_str()),
        (Some(ALICE), Some("family"), Some("Ready"))
    );
    assert_eq!((alice["pod"].as_str(), alice["volume"].as_str()), (Some("Running"), Some("5Gi")), "{alice}");
    assert_eq!(alice["resetGeneration"], json!({ "spec": 0, "status": 0 }));
    assert_eq!(row(&rows, "bob")["queue"], 0, "bob never wrote");
    wait_text(&tg, ALICE, "You said: queued two", Duration::from_secs(30)).await;

    // The operator copies the gateway's activity stamp into the status; the table shows it.
    wait_until("status.lastActivity", Duration::from_secs(10), || async {
        status_of(&client, "alice").await.last_activity
    })
    .await;
    let (ok, table, err) = users_cli(&env, &[]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("TELEGRAM ID") && lines[0].contains("LAST ACTIVITY"),
        "{table}"
    );
    let alice_line = lines.iter().find(|l| l.starts_with("alice ")).unwrap();
    let cells: Vec<&str> = alice_line.split("   ").map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[..5], ["alice", "3001", "family", "Ready", "Running"], "{table}");
    assert!(cells[5].ends_with(" ago") && cells[6] == "5Gi" && cells[7] == "-" && cells[8] == "-", "{table}");
    let (ok, _, err) = users_cli(&env, &["--gateway-metrics", "http://127.0.0.1:9/metrics"]);
    assert!(ok && err.contains("QUEUE shows -"), "an unreachable gateway is a warning: {err}");

    // Reset alice.
    let old_pod = agent_pod_uid(&client, "alice").await.unwrap();
    let bob_pod = agent_pod_uid(&client, "bob").await.unwrap();
    let before_requests = llm.requests().len();
    let asked = Instant::now();
    let (ok, out, err) = users_cli(&env, &["reset", "alice"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("alice: spec.resetGeneration 0 -> 1.") && out.contains("RESET 1/1"), "{out}");
    let status = wait_until("status.resetGeneration 1", Duration::from_secs(30), || async {
        let status = status_of(&client, "alice").await;
        (status.reset_generation == Some(1)).then_some(status)
    })
    .await;
    eprintln!("reset done {:?} after `moltmate users reset`", asked.elapsed());
    assert_ne!(status.phase.map(|p| p.as_str()), Some("Failed"));
    wait_phase(&client, "alice", "Ready", Duration::from_secs(30)).await;
    let new_pod = agent_pod_uid(&client, "alice").await.expect("a new agent pod");
    assert_ne!(new_pod, old_pod, "the agent pod was replaced");
    assert_eq!(agent_pod_uid(&client, "bob").await.as_deref(), Some(bob_pod.as_str()), "bob's agent is untouched");
    let claim =
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), "moltmate-alice").get("workspace").await.unwrap();
    assert_eq!(claim.annotations().get("moltmate.io/reset-generation").map(String::as_str), Some("1"));

    // A new volume, laid out afresh by the new agent; nothing of the old one is in it.
    let fresh_volume = volume_dir(&client, "alice").await;
    assert_ne!(fresh_volume, workspace, "a new volume");
    let after = all_text(&fresh_volume);
    for gone in ["marmalade", "dear diary", "apples", "queued", "forged"] {
        assert!(!after.contains(gone), "{gone:?} survived the reset:\n{after}");
    }
    assert_eq!(entries(&fresh_volume), ["SOUL.md", "files", "sessions"]);
    assert!(entries(&fresh_volume.join("files")).is_empty());
    assert_eq!(entries(outside.path()), ["precious.txt"], "nothing followed the link");
    let workspace = fresh_volume;

    // Told once; then a fresh agent answers, with nothing of before in what it sends the model.
    wait_text(&tg, ALICE, RESET_NOTICE, Duration::from_secs(30)).await;
    tg.inject_text(ALICE, "do you remember me?").unwrap();
    wait_text(&tg, ALICE, "You said: do you remember me?", Duration::from_secs(30)).await;
    let drained = StatsCondition { max_pending_updates: Some(0), ..Default::default() };
    tg.wait_for_stats(&drained, Duration::from_secs(20)).await.expect("every update confirmed");
    assert_eq!(notices(&tg, ALICE), 1, "{:?}", texts(&tg, ALICE));
    assert_eq!(notices(&tg, BOB), 0);
    let fresh = llm.requests()[before_requests..].iter().map(|r| r.body.to_string()).collect::<Vec<_>>().join("\n");
    assert!(fresh.contains("do you remember me?"), "{fresh}");
    for old in ["marmalade", "apples", "queued"] {
        assert!(!fresh.contains(old), "the fresh agent told the model {old:?}: {fresh}");
    }

    // Again, waiting for it: two resets are two wipes, each told once.
    std::fs::write(workspace.join("files/new.txt"), "written after the first reset").unwrap();
    let (ok, out, err) = users_cli(&env, &["reset", "alice", "--wait", "--timeout", "60s"]);
    assert!(ok && out.contains("1 -> 2") && out.contains("reset done"), "{out}{err}");
    let third_volume = volume_dir(&client, "alice").await;
    assert_ne!(third_volume, workspace);
    assert!(!third_volume.join("files/new.txt").exists());
    wait_until("the second notice", Duration::from_secs(10), || async { (notices(&tg, ALICE) == 2).then_some(()) })
        .await;
    let rows = json_rows(&env, &[]);
    // The same rows in YAML, and through --kubeconfig instead of $KUBECONFIG.
    let kubeconfig = env.admin_kubeconfig();
    let yaml = Command::new(MOLTMATE)
        .args(["users", "-o", "yaml", "--kubeconfig"])
        .arg(&kubeconfig)
        .env_remove("KUBECONFIG")
        .output()
        .unwrap();
    assert!(yaml.status.success(), "{}", String::from_utf8_lossy(&yaml.stderr));
    let yaml: Vec<Value> = serde_saphyr::from_str(&String::from_utf8_lossy(&yaml.stdout)).unwrap();
    assert_eq!(yaml, rows);
    // A wrong kubeconfig: one line that names it, exit 1.
    let missing = Command::new(MOLTMATE).args(["users", "--kubeconfig", "/nonexistent/kubeconfig"]).output().unwrap();
    let said = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{said}");
    assert_eq!(said.lines().count(), 1, "the error once: {said}");
    assert!(said.contains("/nonexistent/kubeconfig"), "{said}");
    assert_eq!(row(&rows, "alice")["resetGeneration"], json!({ "spec": 2, "status": 2 }));
    assert!(row(&rows, "alice")["queue"].is_null(), "no gateway asked");
    let (ok, _, err) = users_cli(&env, &["reset", "nobody"]);
    assert!(!ok && err.contains("MoltmateUser nobody not found"), "{err}");

    // The generation cannot go down (a lowered value would wipe nothing and hide the record).
    let lower = json!({ "spec": { "resetGeneration": 1 } });
    let refused = Api::<MoltmateUser>::all(client.clone())
        .patch("alice", &PatchParams::default(), &Patch::Merge(&lower))
        .await
        .expect_err("a lower reset generation is refused");
    assert!(refused.to_string().contains("spec.resetGeneration cannot go down"), "{refused}");

    // A read-only workspace needs no agent to wipe it: reset all the same.
    apply_user(&client, &user_manifest("rory", RORY, json!({ "profile": "high-security" }))).await.unwrap();
    wait_phase(&client, "rory", "Ready", Duration::from_secs(30)).await;
    let rory_ws = volume_dir(&client, "rory").await;
    std::fs::write(rory_ws.join("MEMORY.md"), "- rory's secret\n").unwrap();
    // A bot can only write to people who have written to it.
    tg.inject_text(RORY, "hello").unwrap();
    wait_text(&tg, RORY, "You said: hello", Duration::from_secs(30)).await;
    let (ok, out, err) = users_cli(&env, &["reset", "rory", "--wait", "--timeout", "60s"]);
    assert!(ok && out.contains("reset done"), "{out}{err}");
    let rory_fresh = volume_dir(&client, "rory").await;
    assert!(rory_fresh != rory_ws && !rory_fresh.join("MEMORY.md").exists());
    wait_phase(&client, "rory", "Ready", Duration::from_secs(30)).await;
    wait_text(&tg, RORY, RESET_NOTICE, Duration::from_secs(30)).await;
    eprintln!("users test took {:?}", started.elapsed());
}

/// A person sees what their assistant remembers and has a note forgotten; a memory past its
/// bound has its oldest notes summarised into one, and the person is told.
#[tokio::test]
async fn a_person_lists_and_forgets_notes_and_a_full_memory_is_summarised_with_a_notice() {
    let Stack { env, client, llm, tg, broker_port } = Stack::up("memory").await;
    let _node = env.spawn_agent_node(&format!("http://127.0.0.1:{broker_port}"));
    let _operator = env.spawn_operator("operator", free_port());
    let _gateway = GatewayCommand::against(&env, &tg, &llm, broker_port).spawn(&env);
    apply_user(&client, &user_manifest("rory", RORY, json!({ "profile": "personal" }))).await.unwrap();
    wait_phase(&client, "rory", "Ready", Duration::from_secs(30)).await;

    tg.inject_text(RORY, "/memory").unwrap();
    wait_text(&tg, RORY, "I have no notes about you yet", Duration::from_secs(30)).await;
    tg.inject_text(RORY, "/tool remember rory takes tea with lemon").unwrap();
    tg.inject_text(RORY, "/tool remember rory's sister is called Jo").unwrap();
    tg.inject_text(RORY, "/memory").unwrap();
    let listed = wait_text(&tg, RORY, "What I remember (2 notes", Duration::from_secs(30)).await;
    let listing = listed.iter().find(|t| t.starts_with("What I remember")).unwrap();
    assert!(listing.contains("1. rory takes tea with lemon (") && listing.contains("2. rory's sister is called Jo ("));

    // Forgotten at once, and for good: the file no longer has it.
    tg.inject_text(RORY, "/forget 1").unwrap();
    wait_text(&tg, RORY, "Forgotten: rory takes tea with lemon", Duration::from_secs(30)).await;
    let workspace = volume_dir(&client, "rory").await;
    let memory = std::fs::read_to_string(workspace.join("MEMORY.md")).unwrap();
    assert!(!memory.contains("lemon") && memory.contains("sister is called Jo"), "{memory}");
    tg.inject_text(RORY, "/forget 7").unwrap();
    wait_text(&tg, RORY, "there is no note number 7", Duration::from_secs(30)).await;
    tg.inject_text(RORY, "/forget").unwrap();
    wait_text(&tg, RORY, "/forget 2", Duration::from_secs(30)).await;

    // Months of notes (as the remember tool writes them), then one more.
    let old: String =
        (1..=120).map(|i| format!("- 2026-06-{:02}: old note {i:03} {}\n", i % 28 + 1, "x".repeat(60))).collect();
    std::fs::write(workspace.join("MEMORY.md"), format!("{old}{memory}")).unwrap();
    llm.script([
        Scripted::ToolCall {
            name: "remember".into(),
            arguments: json!({ "text": "rory moved to Leeds" }),
            total_tokens: None,
        },
        Scripted::Reply { content: "Noted: Leeds.".into(), total_tokens: None },
        Scripted::Reply { content: "All through June, Rory kept short notes.".into(), total_tokens: None },
    ]);
    tg.inject_text(RORY, "I moved to Leeds").unwrap();
    let replies = wait_text(&tg, RORY, "so I summarised", Duration::from_secs(30)).await;
    assert!(replies.iter().any(|r| r.starts_with("Noted: Leeds.\n\n(My memory was getting full")), "{replies:?}");
    let memory = std::fs::read_to_string(workspace.join("MEMORY.md")).unwrap();
    assert!(memory.len() <= 8 * 1024, "back under the bound: {} bytes", memory.len());
    let first = memory.lines().next().unwrap();
    assert!(first.contains("(summary of ") && first.ends_with("All through June, Rory kept short notes."), "{memory}");
    assert!(
        memory.contains("old note 120") && memory.contains("sister is called Jo") && memory.contains("moved to Leeds")
    );
    assert!(!memory.contains("old note 001 "), "the oldest are in the summary now: {memory}");
    // The summary was the model's, through the broker, with rory's token.
    assert!(llm.requests().iter().any(|r| r.body.to_string().contains("old note 001")), "asked to summarise");
    let before = texts(&tg, RORY).len();
    tg.inject_text(RORY, "/memory").unwrap();
    let listing = wait_until("the new listing", Duration::from_secs(30), || async {
        let listing = texts(&tg, RORY)[before..].join("\n");
        listing.contains("Send /forget N").then_some(listing)
    })
    .await;
    assert!(listing.contains("\n1. (summary of 52 older notes") && listing.contains("moved to Leeds ("), "{listing}");
}
