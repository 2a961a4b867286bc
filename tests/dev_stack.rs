//! The local stack works as the README says: `scripts/dev-stack up` starts everything,
//! `moltmate dev chat` talks to each user's own agent, and `scripts/dev` (`make dev`) does it
//! all in one command and leaves no process behind.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::{MOLTMATE, REPO};
use moltmates::dev::llm::LlmStandIn;

/// Two whole stacks at once (each a control plane, operator, gateway and agents) only slow
/// each other down on a small machine: the stack tests take turns.
static ONE_STACK: Mutex<()> = Mutex::new(());

fn one_stack() -> std::sync::MutexGuard<'static, ()> {
    ONE_STACK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `scripts/dev-stack down DIR` when dropped.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ =
            Command::new(format!("{REPO}/scripts/dev-stack")).arg("down").arg(&self.0).stderr(Stdio::null()).status();
    }
}

fn stack_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn env_value(dir: &Path, key: &str) -> String {
    let env = std::fs::read_to_string(dir.join("env")).unwrap();
    env.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in DIR/env:\n{env}"))
        .to_string()
}

/// The last lines of DIR/logs/NAME.log, for failure messages.
fn log_tail(dir: &Path, name: &str) -> String {
    let log = std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    format!("--- last lines of {name}.log ---\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).to_string()
}

/// `moltmate dev chat` with `script` on its standard input.
fn chat(dir: &Path, extra: &[&str], script: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(MOLTMATE)
        .args(["dev", "chat", "--telegram-url", &env_value(dir, "TELEGRAM_URL"), "--quiet", "1s"])
        .args([
            "--users-from",
            "manifests/examples/user-family.yaml",
            "--users-from",
            "manifests/examples/user-public.yaml",
        ])
        .args(extra)
        .current_dir(REPO)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Each of `expected` is a whole line of `transcript`, in this order.
fn assert_in_order(transcript: &str, expected: &[&str], dir: &Path) {
    let mut lines = transcript.lines();
    for want in expected {
        assert!(
            lines.any(|l| l == *want),
            "{want:?} missing (or out of order) in:\n{transcript}\n{}",
            log_tail(dir, "gateway")
        );
    }
}

/// The pids of DIR/pids still running (zombies count as gone), and agent processes whose
/// workspace is under DIR (the node's children: not in DIR/pids).
fn processes_left(dir: &Path) -> Vec<String> {
    let running = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')))
            .unwrap_or(false)
    };
    let mut left: Vec<String> = std::fs::read_to_string(dir.join("pids"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split_whitespace().next().is_some_and(running))
        .map(|l| format!("pid {l}"))
        .collect();
    let marker = format!("MOLTMATE_WORKSPACE={}/", dir.display());
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if pid.parse::<u32>().is_ok() && running(&pid) && text(&env).split('\0').any(|v| v.starts_with(&marker)) {
            left.push(format!("agent process {pid}"));
        }
    }
    left
}

#[test]
fn dev_stack_up_serves_the_example_users_and_chat_reaches_each_ones_agent() {
    let _one = one_stack();
    let dir = stack_dir("dev-stack");
    let started = Instant::now();
    let up = Command::new(format!("{REPO}/scripts/dev-stack"))
        .arg("up")
        .arg(&dir)
        .env("MOLTMATE_BIN", MOLTMATE)
        .env("TESTENV_WATCH_PID", std::process::id().to_string())
        .env_remove("MOLTMATE_LLM_BASE_URL")
        .output()
        .unwrap();
    let _down = Down(dir.clone());
    let said = text(&up.stderr);
    assert!(up.status.success(), "dev-stack up failed:\n{said}");
    eprintln!("dev-stack up took {:?}", started.elapsed());
    assert!(said.contains("kubectl apply -f manifests/examples/user-public.yaml"), "{said}");
    assert!(said.contains("no container, no network isolation"), "{said}");
    for key in ["TELEGRAM_URL", "LLM_URL", "GATEWAY_METRICS", "OPERATOR_METRICS", "BROKER_URL"] {
        assert!(env_value(&dir, key).starts_with("http://127.0.0.1:"), "{key}");
    }

    let kubectl = env_value(&dir, "KUBECTL");
    let run = |args: &[&str]| {
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .args(args)
            .current_dir(REPO)
            .output()
            .unwrap();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    let (ok, _, err) = run(&["apply", "-f", "manifests/examples/"]);
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, phases, _) = run(&["get", "mmu", "-o", "jsonpath={.items[*].status.phase}"]);
        if phases.split_whitespace().filter(|p| *p == "Ready").count() == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "not all example users Ready: {phases:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, table, _) = run(&["get", "mmu"]);
    assert!(table.contains("grandma") && table.contains("family"), "{table}");

    // Two users, each answered by their own agent: the echo of their own words, and /status
    // as each agent reports it (its own profile).
    let script =
        "grandma: apples from grandma\nvisitor: bananas from visitor\n# a comment\n/status\ngrandma: /status\n";
    let out = chat(&dir, &[], script);
    let transcript = text(&out.stdout);
    assert!(out.status.success(), "chat failed:\n{transcript}\n{}\n{}", text(&out.stderr), log_tail(&dir, "gateway"));
    assert_in_order(
        &transcript,
        &[
            "grandma> apples from grandma",
            "bot> You said: apples from grandma",
            "visitor> bananas from visitor",
            "bot> You said: bananas from visitor",
            "visitor> /status",
            "bot> Profile: public",
            "grandma> /status",
            "bot> Profile: family",
        ],
        &dir,
    );
    assert_eq!(transcript.matches("bot> ").count(), 4, "one reply per message:\n{transcript}");
    let metrics =
        text(&Command::new("curl").args(["-fsS", &env_value(&dir, "GATEWAY_METRICS")]).output().unwrap().stdout);
    assert!(metrics.contains(r#"moltmate_gateway_messages_total{outcome="answered"}"#), "{metrics}");

    // Without the gateway nothing answers: the chat says so and fails.
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    let gateway = pids.lines().find_map(|l| l.strip_suffix(" gateway")).expect("gateway in DIR/pids");
    assert!(Command::new("kill").arg(gateway).status().unwrap().success());
    let out = chat(&dir, &["--reply-timeout", "3s"], "grandma: anyone there?\n");
    let transcript = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{transcript}");
    assert_eq!(transcript, "grandma> anyone there?\n(no reply yet)\n");
}

#[test]
fn dev_stack_wants_the_key_of_a_real_model() {
    let dir = stack_dir("dev-stack-nokey");
    let up = Command::new(format!("{REPO}/scripts/dev-stack"))
        .arg("up")
        .arg(&dir)
        .env("MOLTMATE_LLM_BASE_URL", "http://127.0.0.1:9/v1")
        .env_remove("MOLTMATE_LLM_API_KEY")
        .output()
        .unwrap();
    let said = text(&up.stderr);
    assert!(!up.status.success());
    assert!(said.contains("MOLTMATE_LLM_API_KEY is not"), "{said}");
    assert!(!dir.exists(), "nothing was started");
}

/// `scripts/dev < messages` (what `make dev` runs), with a "real" model: an OpenAI-compatible
/// server of the test's own, reached through MOLTMATE_LLM_BASE_URL and MOLTMATE_LLM_API_KEY.
#[tokio::test(flavor = "multi_thread")]
// The guard only makes whole tests take turns; nothing in this test waits for it again.
#[allow(clippy::await_holding_lock)]
async fn scripts_dev_chats_non_interactively_and_stops_everything() {
    let _one = one_stack();
    let dir = stack_dir("dev");
    let _down = Down(dir.clone());
    let model = LlmStandIn::start("127.0.0.1:0".parse().unwrap(), Some("real-model-key".into())).await.unwrap();
    let started = Instant::now();
    let mut child = tokio::process::Command::new(format!("{REPO}/scripts/dev"))
        .env("DEV_STACK_DIR", &dir)
        .env("MOLTMATE_BIN", MOLTMATE)
        .env("MOLTMATE_LLM_BASE_URL", model.url())
        .env("MOLTMATE_LLM_API_KEY", "real-model-key")
        .env("MOLTMATE_LLM_DEFAULT_MODEL", "the-real-one")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"grandma: hello, I am grandma\nvisitor: hello, I am the visitor\n").await.unwrap();
    }
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("scripts/dev finished")
        .unwrap();
    eprintln!("scripts/dev took {:?}", started.elapsed());
    let (transcript, said) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "scripts/dev failed:\n{transcript}\n{said}\n{}", log_tail(&dir, "gateway"));
    assert!(said.contains("NO container and NO network isolation"), "the banner warns:\n{said}");
    assert_eq!(
        transcript,
        "grandma> hello, I am grandma\nbot> You said: hello, I am grandma\nvisitor> hello, I am the visitor\nbot> You said: hello, I am the visitor\n",
        "stdout holds the chat only\n{}",
        log_tail(&dir, "gateway")
    );
    let asked = model.requests();
    assert!(asked.len() >= 2, "{asked:?}");
    assert!(asked.iter().all(|r| r.authorization.as_deref() == Some("Bearer real-model-key")), "{asked:?}");
    let chats: Vec<_> = asked.iter().filter(|r| r.path.ends_with("/chat/completions")).collect();
    assert!(chats.iter().all(|r| r.body["model"] == "the-real-one"), "{chats:?}");
    assert!(asked.iter().any(|r| r.method == "GET" && r.path.ends_with("/models")), "the start check: {asked:?}");
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap();
    assert!(!pids.contains(" llm"), "no LLM stand-in with a real model: {pids}");
    assert!(pids.contains(" gateway") && pids.contains(" node"), "{pids}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_left(&dir);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running after scripts/dev exited: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
