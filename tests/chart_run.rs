//! The operator and the gateway started exactly as the Helm chart starts them (its rendered
//! args, env, Secrets and profiles ConfigMap) reconcile `manifests/examples/user-family.yaml`
//! to Ready, and that user's Telegram message is answered by their agent.
//!
//! Only what cannot work outside a cluster is rewritten, all of it in `rewrite_args` and
//! `rewrite_env`, and the test asserts which flags were rewritten: a flag the chart adds runs
//! unchanged, so a chart the binary refuses fails here. The pods' in-cluster credentials are
//! the test environment's kubeconfigs for the same ServiceAccounts (moltmate-operator and
//! moltmate-gateway in moltmate-system), bound to the chart's ClusterRoles.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota};
use kube::Api;
use moltmates::dev::llm::{LlmStandIn, MODEL};
use moltmates::dev::telegram::TelegramStandIn;
use moltmates::names;
use serde_json::Value;

const BOT_TOKEN: &str = "123456:chart-run-token";
const LLM_KEY: &str = "chart-run-llm-key";
/// The family preset's memory is 1Gi; the installation raises it.
const FAMILY_MEMORY: &str = "1536Mi";

/// What an administrator would write: secrets, a self-hosted Bot API server, an in-cluster
/// LLM, the cluster's storage class (the node stand-in's), and one profile default.
fn values_yaml() -> String {
    format!(
        "image:
  repository: localhost/moltmates/moltmate
telegram:
  botToken: \"{BOT_TOKEN}\"
  apiUrl: http://telegram-bot-api.bots.svc:8081
llm:
  baseUrl: http://ollama.ollama.svc:11434/v1
  apiKey: {LLM_KEY}
  defaultModel: {MODEL}
storageClass: {STORAGE_CLASS}
profiles:
  family:
    resources: {{memory: {FAMILY_MEMORY}}}
"
    )
}

// ---------------------------------------------------------------------------------------------
// The chart, rendered
// ---------------------------------------------------------------------------------------------

/// `helm template` of the chart with `values`, as parsed documents.
fn render(values: &Path) -> Vec<Value> {
    let chart = format!("{REPO}/charts/moltmates");
    let yaml = helm_ok(&["template", "moltmates", &chart, "--namespace", SYSTEM_NS, "-f", values.to_str().unwrap()]);
    serde_saphyr::from_multiple::<Value>(&yaml).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}"))
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"))
}

/// One Deployment's pod as the chart renders it.
struct Rendered {
    args: Vec<String>,
    env: Vec<Value>,
    /// (path in the container, content) of every file its volume mounts hold.
    files: Vec<(String, Vec<u8>)>,
    mount_paths: Vec<String>,
}

fn rendered_pod(docs: &[Value], deployment: &str) -> Rendered {
    let pod = &find(docs, "Deployment", deployment)["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{deployment}: one container");
    let container = &containers[0];
    let args = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_string())
        .collect();
    let env = container["env"].as_array().cloned().unwrap_or_default();
    assert!(
        container["command"].is_null() && container["envFrom"].is_null(),
        "{deployment}: only args and env are run here"
    );
    let mut files = Vec::new();
    let mut mount_paths = Vec::new();
    for mount in container["volumeMounts"].as_array().into_iter().flatten() {
        assert!(mount["subPath"].is_null(), "{deployment}: subPath mounts are not handled");
        let dir = mount["mountPath"].as_str().unwrap().to_string();
        let volume =
            pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).expect("mounted volume");
        for (relative, content) in volume_files(docs, volume) {
            files.push((format!("{dir}/{relative}"), content));
        }
        mount_paths.push(dir);
    }
    Rendered { args, env, files, mount_paths }
}

/// The files a Secret, ConfigMap or projected volume holds, read from the rendered objects.
fn volume_files(docs: &[Value], volume: &Value) -> Vec<(String, Vec<u8>)> {
    let sources: Vec<(&str, &str, &Value)> = if let Some(sources) = volume["projected"]["sources"].as_array() {
        sources
            .iter()
            .map(|s| match (s.get("secret"), s.get("configMap")) {
                (Some(secret), _) => ("Secret", secret["name"].as_str().unwrap(), &secret["items"]),
                (_, Some(map)) => ("ConfigMap", map["name"].as_str().unwrap(), &map["items"]),
                _ => panic!("projected source {s} is neither a Secret nor a ConfigMap"),
            })
            .collect()
    } else if let Some(secret) = volume.get("secret") {
        vec![("Secret", secret["secretName"].as_str().unwrap(), &secret["items"])]
    } else if let Some(map) = volume.get("configMap") {
        vec![("ConfigMap", map["name"].as_str().unwrap(), &map["items"])]
    } else {
        panic!("volume {volume} is not one this test can provide")
    };
    let mut files = Vec::new();
    for (kind, name, items) in sources {
        let data = object_data(find(docs, kind, name));
        let pick = |key: &str| {
            data.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("{kind} {name} has no key {key}")).1.clone()
        };
        match items.as_array() {
            Some(items) => files.extend(
                items.iter().map(|i| (i["path"].as_str().unwrap().to_string(), pick(i["key"].as_str().unwrap()))),
            ),
            None => files.extend(data.iter().cloned()),
        }
    }
    files
}

/// A Secret's data (decoded from base64 by k8s-openapi) or a ConfigMap's.
fn object_data(object: &Value) -> Vec<(String, Vec<u8>)> {
    if object["kind"] == "Secret" {
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(object.clone()).expect("a Secret");
        let mut data: Vec<_> = secret.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
        data.extend(secret.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
        data
    } else {
        object["data"]
            .as_object()
            .expect("ConfigMap data")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().as_bytes().to_vec()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The only changes: what a cluster gives a pod and this machine cannot
// ---------------------------------------------------------------------------------------------

/// What stands in here for the cluster's side of a pod.
struct Local<'a> {
    /// The pod's volume mounts are written under this directory (`/etc/x` -> `ROOT/etc/x`).
    root: &'a Path,
    mount_paths: &'a [String],
    telegram_api_url: &'a str,
    llm_base_url: &'a str,
}

/// The container's args made runnable on this machine, and the flags that were changed:
/// - a path under a volume mount -> the same path under `root`, where the files were written;
/// - a listen address `0.0.0.0:PORT` -> `127.0.0.1:<free port>` (a pod has its own network
///   namespace; here the host's ports are shared with other tests);
/// - `--telegram-api-url` -> the Telegram stand-in; `--llm-base-url` -> the LLM stand-in.
///
/// Everything else is passed as rendered.
fn rewrite_args(args: &[String], local: &Local, mut free_port: impl FnMut() -> u16) -> (Vec<String>, BTreeSet<String>) {
    let mut changed = BTreeSet::new();
    let out = args
        .iter()
        .map(|arg| {
            let Some((flag, value)) = arg.split_once('=').filter(|(f, _)| f.starts_with("--")) else {
                return arg.clone();
            };
            let new = if flag == "--telegram-api-url" {
                local.telegram_api_url.to_string()
            } else if flag == "--llm-base-url" {
                local.llm_base_url.to_string()
            } else if value.starts_with("0.0.0.0:") {
                format!("127.0.0.1:{}", free_port())
            } else if local.mount_paths.iter().any(|m| value.starts_with(&format!("{m}/"))) {
                local.root.join(value.trim_start_matches('/')).to_str().unwrap().to_string()
            } else {
                return arg.clone();
            };
            changed.insert(flag.to_string());
            format!("{flag}={new}")
        })
        .collect();
    (out, changed)
}

/// The container's env: literal values as rendered; the downward API's `metadata.name` (the
/// pod name, the replica's identity in its Lease) -> `pod_name`. Anything else is refused.
fn rewrite_env(env: &[Value], pod_name: &str) -> (Vec<(String, String)>, BTreeSet<String>) {
    let mut changed = BTreeSet::new();
    let vars = env
        .iter()
        .map(|var| {
            let name = var["name"].as_str().unwrap().to_string();
            if let Some(value) = var["value"].as_str() {
                return (name, value.to_string());
            }
            assert_eq!(
                var["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
                "env {var} is not one this test can provide"
            );
            changed.insert(format!("${name}"));
            (name, pod_name.to_string())
        })
        .collect();
    (vars, changed)
}

/// Write the pod's mounted files under `root`, where the rewritten paths point.
fn write_files(root: &Path, files: &[(String, Vec<u8>)]) {
    for (path, content) in files {
        let local = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, content).unwrap();
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> &'a str {
    let prefix = format!("--{name}=");
    args.iter().find_map(|a| a.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no --{name} in {args:?}"))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// A component as the chart runs it: (args, env) rewritten, files written, changes checked.
fn prepare(
    docs: &[Value],
    component: &str,
    root: &Path,
    tg: &str,
    llm: &str,
    expected: &[&str],
) -> (Vec<String>, Vec<(String, String)>) {
    let pod = rendered_pod(docs, &format!("moltmate-{component}"));
    assert_eq!(pod.args[0], component, "the chart runs `moltmate {component}`");
    let local = Local { root, mount_paths: &pod.mount_paths, telegram_api_url: tg, llm_base_url: llm };
    let (args, mut changed) = rewrite_args(&pod.args, &local, free_port);
    let (env, env_changed) = rewrite_env(&pod.env, &format!("moltmate-{component}-0"));
    changed.extend(env_changed);
    assert_eq!(
        changed,
        set(expected),
        "{component}: rewritten flags and env (the chart changed: update this test's list)"
    );
    write_files(root, &pod.files);
    (args, env)
}

#[tokio::test]
async fn chart_rendered_operator_and_gateway_serve_an_example_user() {
    let started = Instant::now();
    let env = TestEnv::up("chart-run");
    let root = env.dir.join("pod-files");
    let values = env.dir.join("values.yaml");
    std::fs::write(&values, values_yaml()).unwrap();
    let docs = render(&values);

    let llm = LlmStandIn::start("127.0.0.1:0".parse().unwrap(), Some(LLM_KEY.into())).await.unwrap();
    let tg = TelegramStandIn::start("127.0.0.1:0".parse().unwrap(), BOT_TOKEN).await.unwrap();
    let (tg_url, llm_url) = (tg.url(), llm.url());
    let both = ["--profiles-file", "--http-addr", "$POD_NAME"];
    let (operator_args, operator_env) = prepare(&docs, "operator", &root, &tg_url, &llm_url, &both);
    let profiles = std::fs::read_to_string(flag(&operator_args, "profiles-file")).unwrap();
    assert!(profiles.contains(FAMILY_MEMORY), "the profiles ConfigMap carries the override: {profiles}");

    env.install().await;
    env.install_gateway_rbac().await;
    let client = env.admin().await;
    let mut operator = env.spawn_with_env("operator", &env.operator_kubeconfig(), &operator_args, &operator_env);

    // The chart renders no master key: the operator generates it into a Secret on its first
    // start, and the gateway's volume (kubelet's part, here) mounts it from the cluster.
    let secret_name = flag(&operator_args, "master-key-secret").to_string();
    let namespace = flag(&operator_args, "gateway-namespace").to_string();
    let generated: Value = wait_until("the operator's master key Secret", Duration::from_secs(30), || async {
        let out = env.kubectl(&["get", "secret", "-n", &namespace, &secret_name, "-o", "json"]);
        out.status.success().then(|| serde_json::from_slice(&out.stdout).unwrap())
    })
    .await;
    assert_eq!(generated["metadata"]["labels"]["app.kubernetes.io/managed-by"], "moltmate-operator");
    let mut docs = docs;
    docs.push(generated);
    let gateway_changes = [
        &both[..],
        &[
            "--master-key-file",
            "--bot-token-file",
            "--llm-api-key-file",
            "--broker-addr",
            "--telegram-api-url",
            "--llm-base-url",
        ],
    ]
    .concat();
    let (gateway_args, gateway_env) = prepare(&docs, "gateway", &root, &tg_url, &llm_url, &gateway_changes);
    let broker_url = format!("http://127.0.0.1:{}", port_of(flag(&gateway_args, "broker-addr")));
    let _node = env.spawn_agent_node(&broker_url);
    let mut gateway = env.spawn_with_env("gateway", &env.gateway_kubeconfig(), &gateway_args, &gateway_env);

    // The chart's readiness probes (/readyz on the http port) pass.
    for (name, args, proc) in [("operator", &operator_args, &mut operator), ("gateway", &gateway_args, &mut gateway)] {
        let port = port_of(flag(args, "http-addr"));
        let log = proc.log.clone();
        wait_until(&format!("{name} /readyz"), Duration::from_secs(30), || {
            let running = proc.is_running();
            let log = &log;
            async move {
                assert!(running, "{name} exited; log:\n{}", std::fs::read_to_string(log).unwrap_or_default());
                (http_get(port, "/readyz").await?.0 == 200).then_some(())
            }
        })
        .await;
    }

    // The example user, applied as a user would.
    let example = format!("{REPO}/manifests/examples/user-family.yaml");
    let manifest: Value = serde_saphyr::from_str(&std::fs::read_to_string(&example).unwrap()).unwrap();
    let name = manifest["metadata"]["name"].as_str().unwrap();
    let telegram_id = manifest["spec"]["telegram"]["userId"].as_i64().unwrap();
    assert_eq!(manifest["spec"]["profile"], "family");
    assert!(manifest["spec"]["resources"]["memory"].is_null(), "the example leaves memory to the profile");
    let out = env.kubectl(&["apply", "-f", &example]);
    assert!(out.status.success(), "kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    let user = wait_phase(&client, name, "Ready", Duration::from_secs(60)).await;
    let ns = user.status.and_then(|s| s.namespace).expect("status.namespace");

    // The installation's family memory, from the chart's profiles ConfigMap, is in force.
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &ns).get(names::RESOURCE_QUOTA).await.unwrap();
    let hard = quota.spec.and_then(|s| s.hard).unwrap_or_default();
    assert_eq!(hard.get("limits.memory").map(|q| q.0.as_str()), Some(FAMILY_MEMORY), "{hard:?}");
    let pod = Api::<Pod>::namespaced(client.clone(), &ns).get(names::AGENT_POD).await.unwrap();
    let limits = pod.spec.unwrap().containers[0].resources.clone().and_then(|r| r.limits).unwrap_or_default();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some(FAMILY_MEMORY), "{limits:?}");

    // The user's message goes through the chart-configured gateway to their agent and back.
    tg.inject_text(telegram_id, "hello from the chart").unwrap();
    let answered = wait_until("the agent's answer", Duration::from_secs(30), || async {
        let sent: Vec<String> = tg.sent_to(telegram_id).into_iter().map(|m| m.rendered).collect();
        sent.iter().any(|t| t.contains("You said: hello from the chart")).then_some(sent)
    })
    .await;
    assert_eq!(answered.len(), 1, "one answer: {answered:?}");
    assert!(operator.is_running() && gateway.is_running());
    eprintln!("chart run took {:?}", started.elapsed());
}
