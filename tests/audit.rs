//! `moltmate audit` against a real control plane: `manifests/install.yaml` applied as a user
//! would, the operator reconciling users, then the built binary run as an admin. A clean
//! install has no FAIL; then the install is weakened one thing at a time (the operator
//! stopped, so nothing is repaired) and each weakening must be a FAIL (or WARN) row naming
//! the object, in the table and in `-o json` alike.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

/// One run of `moltmate audit`.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn audit_with(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = Command::new(MOLTMATE)
        .arg("audit")
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run moltmate audit");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// (status, check, object) of the table's FAIL and WARN rows. Columns are separated by at
/// least two spaces; objects and messages contain single ones.
fn table_rows(text: &str) -> BTreeSet<(String, String, String)> {
    text.lines()
        .filter(|l| l.starts_with("FAIL") || l.starts_with("WARN"))
        .map(|l| {
            let cols: Vec<&str> = l.split("  ").map(str::trim).filter(|c| !c.is_empty()).collect();
            (cols[0].to_string(), cols[1].to_string(), cols[2].to_string())
        })
        .collect()
}

/// The same from `-o json`.
fn json_rows(report: &Value) -> BTreeSet<(String, String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["status"] != "PASS")
        .map(|f| {
            (
                f["status"].as_str().unwrap().into(),
                f["check"].as_str().unwrap().into(),
                f["object"].as_str().unwrap().into(),
            )
        })
        .collect()
}

struct Auditor<'a> {
    env: &'a TestEnv,
}

impl Auditor<'_> {
    fn run(&self, args: &[&str]) -> Run {
        audit_with(&self.env.admin_kubeconfig(), args)
    }

    /// Table and JSON; both must agree on every FAIL and WARN row.
    fn both(&self, extra: &[&str]) -> (Run, Value) {
        let text = self.run(extra);
        let json_run = self.run(&[extra, &["-o", "json"]].concat());
        assert_eq!(text.code, json_run.code, "exit codes differ:\n{}\n{}", text.stderr, json_run.stderr);
        let report: Value = serde_json::from_str(&json_run.stdout)
            .unwrap_or_else(|e| panic!("-o json does not parse ({e}):\n{}", json_run.stdout));
        assert_eq!(table_rows(&text.stdout), json_rows(&report), "the table and -o json disagree:\n{}", text.stdout);
        let yaml_run = self.run(&[extra, &["-o", "yaml"]].concat());
        let yaml: Value = serde_saphyr::from_str(&yaml_run.stdout)
            .unwrap_or_else(|e| panic!("-o yaml does not parse ({e}):\n{}", yaml_run.stdout));
        // Two runs: the same rows and summary (messages may name an age that moved on).
        assert_eq!(json_rows(&yaml), json_rows(&report), "-o yaml and -o json disagree");
        assert_eq!(yaml["summary"], report["summary"], "-o yaml and -o json disagree");
        (text, report)
    }

    /// Audit and insist on a row (status, check, object); exit 1 for any FAIL.
    fn expect(&self, what: &str, status: &str, check: &str, object: &str, extra: &[&str]) -> Value {
        let (text, report) = self.both(extra);
        let row = (status.to_string(), check.to_string(), object.to_string());
        assert!(
            table_rows(&text.stdout).contains(&row),
            "{what}: no {status} {check} row for {object}:\n{}{}",
            text.stdout,
            text.stderr
        );
        let finding = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["check"] == check && f["object"] == object && f["status"] == status)
            .unwrap();
        assert!(finding["fix"].as_str().is_some_and(|f| !f.is_empty()), "{what}: no fix: {finding}");
        assert_eq!(text.code, 1, "{what}: a FAIL exits 1");
        eprintln!("{what}: {status} {check} {object}: {}", finding["message"]);
        finding.clone()
    }
}

fn kubectl_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.kubectl(args);
    assert!(out.status.success(), "kubectl {} failed:\n{}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The directory of the test environment's kubectl.
fn bindir(env: &TestEnv) -> String {
    let text = std::fs::read_to_string(env.dir.join("env")).unwrap();
    text.lines().find_map(|l| l.strip_prefix("BINDIR=")).expect("BINDIR").trim_matches('"').to_string()
}

#[tokio::test]
async fn a_clean_install_passes_and_each_weakening_is_reported() {
    let started = Instant::now();
    let env = TestEnv::up("audit");
    let client = env.admin().await;

    // The install as manifests/install.yaml's header tells a user to do it.
    kubectl_ok(&env, &["create", "namespace", SYSTEM_NS]);
    let master = format!("--from-literal=master-key={MASTER_KEY}");
    kubectl_ok(
        &env,
        &[
            "create",
            "secret",
            "generic",
            "moltmates",
            "-n",
            SYSTEM_NS,
            "--from-literal=bot-token=123:abc",
            "--from-literal=llm-api-key=sk-test",
            &master,
        ],
    );
    kubectl_ok(&env, &["apply", "--server-side", "-f", &format!("{REPO}/manifests/install.yaml")]);
    // The CRD of this build (install.yaml's may trail it while the chart is regenerated).
    kubectl_ok(&env, &["apply", "--server-side", "--force-conflicts", "-f", &format!("{REPO}/crds/moltmateuser.yaml")]);
    kubectl_ok(&env, &["wait", "--for=condition=Established", "crd/moltmateusers.moltmate.io", "--timeout=30s"]);

    // The operator with the sandbox-shaping flags its Deployment has (no kubelet runs that).
    let _node = env.spawn_node_with(&[]);
    let key = env.dir.join("master.key");
    let http = format!("127.0.0.1:{}", free_port());
    let mut operator = env.spawn(
        "operator",
        &env.operator_kubeconfig(),
        &[
            "operator",
            "--storage-class",
            STORAGE_CLASS,
            "--http-addr",
            &http,
            "--master-key-file",
            key.to_str().unwrap(),
            "--lease-namespace",
            SYSTEM_NS,
            "--identity",
            "audit-operator",
            "--gateway-pod-labels",
            "app.kubernetes.io/name=moltmate-gateway,app.kubernetes.io/instance=moltmates",
        ],
    );
    for (name, id, profile) in [("ann", 2001, "family"), ("bob", 2002, "public"), ("carol", 2003, "public")] {
        apply_user(&client, &user_manifest(name, id, json!({ "profile": profile }))).await.unwrap();
    }
    for name in ["ann", "bob", "carol"] {
        wait_phase(&client, name, "Ready", Duration::from_secs(30)).await;
    }
    // carol leaves; her workspace is retained (deletionPolicy Retain, the default).
    Api::<moltmates::MoltmateUser>::all(client.clone()).delete("carol", &DeleteParams::default()).await.unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "moltmate-carol");
    wait_until("carol's workspace retained", Duration::from_secs(30), || async {
        let gone = Api::<moltmates::MoltmateUser>::all(client.clone()).get_opt("carol").await.ok()?.is_none();
        let pvc = claims.get("workspace").await.ok()?;
        (gone && pvc.metadata.labels?.get("moltmate.io/retained").map(String::as_str) == Some("true")).then_some(())
    })
    .await;
    eprintln!("installed with 2 users and a retained workspace after {:?}", started.elapsed());

    // Clean: no FAIL, exit 0.
    let auditor = Auditor { env: &env };
    let (clean, report) = auditor.both(&[]);
    eprintln!("clean install:\n{}", clean.stdout);
    assert_eq!(clean.code, 0, "a clean install exits 0:\n{}{}", clean.stdout, clean.stderr);
    assert!(!clean.stdout.lines().any(|l| l.starts_with("FAIL")), "{}", clean.stdout);
    assert_eq!(report["summary"]["fail"], 0);
    let checks: BTreeSet<&str> =
        report["findings"].as_array().unwrap().iter().filter_map(|f| f["check"].as_str()).collect();
    for check in [
        "user-provisioned",
        "network-policy",
        "resource-quota",
        "limit-range",
        "pod-security",
        "exec-security",
        "safe-bins",
        "agent-pod",
        "service-exposure",
        "broker-access",
        "secret-source",
        "master-key",
        "retained-workspace",
        "image-pinned",
    ] {
        assert!(checks.contains(check), "no {check} rows in a clean audit: {checks:?}");
    }
    let retained = report["findings"].as_array().unwrap().iter().find(|f| f["check"] == "retained-workspace").unwrap();
    assert_eq!(
        (retained["status"].as_str(), retained["object"].as_str()),
        (Some("PASS"), Some("PersistentVolumeClaim moltmate-carol/workspace"))
    );

    // As a kubectl plugin: `kubectl moltmate audit`, with the binary on PATH as kubectl-moltmate.
    let plugins = env.dir.join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::os::unix::fs::symlink(MOLTMATE, plugins.join("kubectl-moltmate")).unwrap();
    let path = format!("{}:{}", plugins.display(), std::env::var("PATH").unwrap_or_default());
    let kubectl = |args: &[&str]| {
        Command::new(format!("{}/kubectl", bindir(&env)))
            .args(args)
            .env("PATH", &path)
            .env("KUBECONFIG", env.admin_kubeconfig())
            .output()
            .unwrap()
    };
    let plugin = kubectl(&["moltmate", "audit", "-o", "json"]);
    assert!(plugin.status.success(), "kubectl moltmate audit: {}", String::from_utf8_lossy(&plugin.stderr));
    let plugin_report: Value = serde_json::from_slice(&plugin.stdout).unwrap();
    assert_eq!(plugin_report["summary"]["fail"], 0);
    let help = String::from_utf8_lossy(&kubectl(&["moltmate", "audit", "--help"]).stdout).into_owned();
    assert!(help.contains("Usage: kubectl moltmate audit"), "{help}");

    // From here on nothing repairs what the tests break.
    operator.kill();

    kubectl_ok(&env, &["delete", "networkpolicy", "-n", "moltmate-bob", "moltmate-isolation"]);
    auditor.expect(
        "NetworkPolicy deleted",
        "FAIL",
        "network-policy",
        "NetworkPolicy moltmate-bob/moltmate-isolation",
        &[],
    );

    kubectl_ok(
        &env,
        &[
            "patch",
            "resourcequota",
            "-n",
            "moltmate-ann",
            "moltmate-quota",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"hard":{"limits.cpu":"8","limits.memory":"8Gi"}}}"#,
        ],
    );
    let f = auditor.expect("quota widened", "FAIL", "resource-quota", "ResourceQuota moltmate-ann/moltmate-quota", &[]);
    assert!(f["message"].as_str().unwrap().contains("limits.cpu is 8"), "{f}");

    kubectl_ok(
        &env,
        &[
            "patch",
            "limitrange",
            "-n",
            "moltmate-bob",
            "moltmate-limits",
            "--type",
            "json",
            "-p",
            r#"[{"op":"replace","path":"/spec/limits/0/max/cpu","value":"4"}]"#,
        ],
    );
    auditor.expect("LimitRange widened", "FAIL", "limit-range", "LimitRange moltmate-bob/moltmate-limits", &[]);

    kubectl_ok(
        &env,
        &[
            "patch",
            "moltmateusers.moltmate.io",
            "ann",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"exec":{"safeBins":["cat","bash"]}}}"#,
        ],
    );
    let f = auditor.expect("a shell in safeBins", "FAIL", "safe-bins", "MoltmateUser ann", &[]);
    assert!(f["message"].as_str().unwrap().contains("`bash` is a shell"), "{f}");

    kubectl_ok(
        &env,
        &[
            "patch",
            "moltmateusers.moltmate.io",
            "bob",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"exec":{"security":"full"}}}"#,
        ],
    );
    auditor.expect("exec security full", "FAIL", "exec-security", "MoltmateUser bob", &[]);

    kubectl_ok(&env, &["label", "namespace", "moltmate-ann", "pod-security.kubernetes.io/enforce-"]);
    auditor.expect("namespace not restricted", "FAIL", "pod-security", "Namespace moltmate-ann", &[]);

    // RBAC made by hand that reaches into a sandbox: the agent's ServiceAccount made an admin.
    kubectl_ok(
        &env,
        &[
            "create",
            "rolebinding",
            "helpful",
            "-n",
            "moltmate-ann",
            "--clusterrole=cluster-admin",
            "--serviceaccount=moltmate-ann:agent",
        ],
    );
    let f = auditor.expect(
        "a RoleBinding to cluster-admin in a sandbox",
        "FAIL",
        "rbac-bindings",
        "RoleBinding moltmate-ann/helpful",
        &[],
    );
    assert!(f["message"].as_str().unwrap().contains("ClusterRole cluster-admin"), "{f}");
    kubectl_ok(
        &env,
        &["create", "clusterrolebinding", "agent-reader", "--clusterrole=view", "--serviceaccount=moltmate-bob:agent"],
    );
    auditor.expect(
        "a ClusterRoleBinding for a sandbox's ServiceAccount",
        "FAIL",
        "rbac-bindings",
        "ClusterRoleBinding agent-reader",
        &[],
    );

    // A pod passing itself off as an agent, with an API token (the widened quota lets it in).
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), "moltmate-ann");
    wait_until("the widened quota in force", Duration::from_secs(30), || async {
        let q = quotas.get("moltmate-quota").await.ok()?;
        (q.status?.hard?.get("limits.cpu")?.0 == "8").then_some(())
    })
    .await;
    let rogue: Pod = serde_json::from_value(json!({
        "metadata": { "name": "rogue", "labels": { "app.kubernetes.io/name": "moltmate-agent", "moltmate.io/user": "ann" } },
        "spec": {
            "automountServiceAccountToken": true,
            "containers": [{ "name": "agent", "image": "moltmates/sandbox:0.1.0",
                "resources": { "limits": { "cpu": "100m", "memory": "64Mi" }, "requests": { "cpu": "100m", "memory": "64Mi" } } }],
        },
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "moltmate-ann");
    // Retried: the namespace's token Secret may still be on its way (ServiceAccount admission).
    wait_until("the rogue pod admitted", Duration::from_secs(30), || async {
        pods.create(&PostParams::default(), &rogue).await.ok()
    })
    .await;
    let f = auditor.expect("a pod with an API token", "FAIL", "agent-pod", "Pod moltmate-ann/rogue", &[]);
    assert!(f["message"].as_str().unwrap().contains("service-account token"), "{f}");

    kubectl_ok(
        &env,
        &["patch", "service", "-n", SYSTEM_NS, "moltmate-metrics", "-p", r#"{"spec":{"type":"NodePort"}}"#],
    );
    auditor.expect("a NodePort Service", "FAIL", "service-exposure", "Service moltmate-system/moltmate-metrics", &[]);

    let ingress: Ingress = serde_json::from_value(json!({
        "metadata": { "name": "moltmate" },
        "spec": { "rules": [{ "host": "bot.example.org", "http": { "paths": [{ "path": "/", "pathType": "Prefix",
            "backend": { "service": { "name": "moltmate-metrics", "port": { "name": "http" } } } }] } }] },
    }))
    .unwrap();
    Api::<Ingress>::namespaced(client.clone(), SYSTEM_NS).create(&PostParams::default(), &ingress).await.unwrap();
    auditor.expect("an Ingress in polling mode", "FAIL", "ingress", "Ingress moltmate-system/moltmate", &[]);

    kubectl_ok(
        &env,
        &["set", "env", "-n", SYSTEM_NS, "deployment/moltmate-gateway", "MOLTMATE_LLM_API_KEY=sk-literal-value"],
    );
    let f = auditor.expect(
        "a literal LLM key",
        "FAIL",
        "secret-source",
        "Deployment moltmate-system/moltmate-gateway",
        &[],
    );
    assert!(f["message"].as_str().unwrap().contains("MOLTMATE_LLM_API_KEY"), "{f}");

    kubectl_ok(&env, &["patch", "secret", "-n", SYSTEM_NS, "moltmates", "-p", r#"{"data":{"master-key":"c2hvcnQ="}}"#]);
    let f = auditor.expect(
        "a short master key",
        "FAIL",
        "master-key",
        "Secret moltmate-system/moltmates key master-key",
        &[],
    );
    assert!(f["message"].as_str().unwrap().contains("5 bytes"), "{f}");

    kubectl_ok(
        &env,
        &["set", "image", "-n", SYSTEM_NS, "deployment/moltmate-operator", "operator=moltmates/moltmate:latest"],
    );
    auditor.expect(
        "an image :latest",
        "FAIL",
        "image-pinned",
        "Deployment moltmate-system/moltmate-operator container operator",
        &[],
    );

    kubectl_ok(&env, &["delete", "networkpolicy", "-n", SYSTEM_NS, "moltmate-gateway"]);
    auditor.expect(
        "the broker open to all",
        "FAIL",
        "broker-access",
        "Deployment moltmate-system/moltmate-gateway",
        &[],
    );

    // carol's workspace, older than a (short) limit; polled: it has to age past a second.
    wait_until("the retained workspace reported", Duration::from_secs(10), || async {
        let run = auditor.run(&["--retained-max-age", "1s"]);
        table_rows(&run.stdout)
            .contains(&(
                "WARN".into(),
                "retained-workspace".into(),
                "PersistentVolumeClaim moltmate-carol/workspace".into(),
            ))
            .then_some(())
    })
    .await;
    auditor.expect(
        "an old retained workspace",
        "WARN",
        "retained-workspace",
        "PersistentVolumeClaim moltmate-carol/workspace",
        &["--retained-max-age", "1s"],
    );

    // Nothing secret in any output.
    let (all, _) = auditor.both(&["-v"]);
    eprintln!("weakened install:\n{}", all.stdout);
    for secret in ["sk-literal-value", "sk-test", MASTER_KEY, "123:abc"] {
        assert!(!all.stdout.contains(secret), "a secret value in the report: {secret}");
    }
    eprintln!("audit test done after {:?}", started.elapsed());
}

#[test]
fn usage_and_connection_errors_exit_2() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port(); // closed again: nothing listens there
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}\n\
         users:\n- name: u\n  user: {{token: t}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    ))
    .unwrap();

    let unreachable = audit_with(&kubeconfig, &[]);
    assert_eq!(unreachable.code, 2, "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains(&format!("cannot reach the Kubernetes API at https://127.0.0.1:{port}")),
        "{}",
        unreachable.stderr
    );
    assert!(unreachable.stdout.is_empty());

    let missing = audit_with(&kubeconfig, &["--kubeconfig", "/nonexistent/kubeconfig"]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("kubeconfig: /nonexistent/kubeconfig"), "{}", missing.stderr);

    let usage = audit_with(&kubeconfig, &["-o", "xml"]);
    assert_eq!(usage.code, 2);
    assert!(usage.stderr.contains("invalid value 'xml'"), "{}", usage.stderr);

    let profiles = audit_with(&kubeconfig, &["--profiles-file", "/nonexistent/profiles.yaml"]);
    assert_eq!(profiles.code, 2);
    assert!(profiles.stderr.contains("/nonexistent/profiles.yaml"), "{}", profiles.stderr);
}
