//! The chart on a real node (`scripts/node`), for tests and benchmarks alike: the prebuilt
//! images imported into the node's containerd, the Telegram and LLM stand-ins on the address
//! pods reach this host at, and `helm install` of the chart against them.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use moltmates::dev::llm::{LlmStandIn, MODEL};
use moltmates::dev::telegram::TelegramStandIn;

use super::{SYSTEM_NS, TestEnv, helm_ok};

pub const CHART_BOT_TOKEN: &str = "123456:real-node-token";
pub const CHART_LLM_KEY: &str = "sk-real-node";

/// What the node's environment file says (`scripts/node up` writes it).
pub fn node_env(env: &TestEnv, key: &str) -> String {
    let text = std::fs::read_to_string(env.dir.join("env")).unwrap();
    let prefix = format!("{key}=");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{key} in env")).to_string()
}

/// The images `scripts/images` built (scripts/test builds them first), into the node's
/// containerd; returns their tag.
pub fn load_images(env: &TestEnv) -> String {
    let cache = std::env::var("MOLTMATES_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        let home = std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache"));
        home.join("moltmates")
    });
    let socket = node_env(env, "CONTAINERD_SOCKET");
    for image in ["moltmate", "sandbox"] {
        let archive = cache.join("images").join(format!("{image}.tar"));
        assert!(archive.exists(), "{} missing: run scripts/images first", archive.display());
        let out = Command::new("ctr")
            .args(["-a", &socket, "-n", "k8s.io", "images", "import"])
            .arg(&archive)
            .output()
            .unwrap();
        assert!(out.status.success(), "importing {}: {}", archive.display(), String::from_utf8_lossy(&out.stderr));
    }
    env!("CARGO_PKG_VERSION").to_string()
}

/// The release installed as the README installs it, with its stand-ins.
pub struct ChartOnNode {
    pub tg: TelegramStandIn,
    pub llm: LlmStandIn,
    /// The images' tag (`load_images`).
    pub tag: String,
}

impl ChartOnNode {
    /// Import the images, start the stand-ins where a pod can reach this host (the gateway's
    /// way out), and install the chart into the release namespace under Pod Security
    /// `restricted`, `extra_sets` (`key=value`) over the test's values; returns once the
    /// operator and the gateway are rolled out.
    pub async fn install(env: &TestEnv, extra_sets: &[String]) -> ChartOnNode {
        let tag = load_images(env);
        let host_ip = node_env(env, "HOST_IP");
        let tg = TelegramStandIn::start(format!("{host_ip}:0").parse().unwrap(), CHART_BOT_TOKEN).await.unwrap();
        let llm = LlmStandIn::start(format!("{host_ip}:0").parse().unwrap(), Some(CHART_LLM_KEY.into())).await.unwrap();
        let kubectl_ok = |args: &[&str]| {
            let out = env.kubectl(args);
            assert!(out.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        kubectl_ok(&["create", "namespace", SYSTEM_NS]);
        kubectl_ok(&["label", "namespace", SYSTEM_NS, "pod-security.kubernetes.io/enforce=restricted"]);
        let mut sets = vec![
            "image.repository=localhost/moltmates/moltmate".to_string(),
            format!("image.tag={tag}"),
            "image.pullPolicy=Never".to_string(),
            format!("sandbox.image=localhost/moltmates/sandbox:{tag}"),
            format!("telegram.apiUrl={}", tg.url()),
            format!("telegram.botToken={CHART_BOT_TOKEN}"),
            "telegram.pollTimeout=5s".to_string(),
            format!("llm.baseUrl={}", llm.url()),
            format!("llm.defaultModel={MODEL}"),
            format!("llm.models={{{MODEL},gpt-other}}"),
            format!("llm.apiKey={CHART_LLM_KEY}"),
        ];
        sets.extend(extra_sets.iter().cloned());
        let kubeconfig = env.admin_kubeconfig();
        let mut args: Vec<String> = ["install", "moltmates", concat!(env!("CARGO_MANIFEST_DIR"), "/charts/moltmates")]
            .map(String::from)
            .to_vec();
        args.extend([
            "--kubeconfig".into(),
            kubeconfig.to_string_lossy().into_owned(),
            "--namespace".into(),
            SYSTEM_NS.into(),
        ]);
        for set in &sets {
            args.extend(["--set".to_string(), set.clone()]);
        }
        helm_ok(&args);
        let rollout = Duration::from_secs(120);
        for deployment in ["moltmate-operator", "moltmate-gateway"] {
            kubectl_ok(&[
                "rollout",
                "status",
                "-n",
                SYSTEM_NS,
                &format!("deployment/{deployment}"),
                &format!("--timeout={}s", rollout.as_secs()),
            ]);
        }
        ChartOnNode { tg, llm, tag }
    }
}
