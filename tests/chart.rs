//! The Helm chart `charts/moltmates`, through the real Helm CLI (`scripts/helm`, Helm v4):
//! lint, what it renders for several value sets, what its schema refuses, that
//! `manifests/install.yaml` is its current render, and that both install into a real API server.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use crate::support::{REPO, TestEnv, helm, helm_ok, wait_until};
use serde_json::{Value, json};

const NS: &str = "moltmate-system";
const RELEASE: &str = "moltmates";
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/moltmates");
/// The values a minimal install needs.
const REQUIRED: &[&str] = &[
    "image.repository=localhost/moltmates/moltmate",
    "llm.baseUrl=https://llm.example.org/v1",
    "llm.defaultModel=gpt-4o-mini",
    "telegram.botToken=123:abc",
    "llm.apiKey=sk-test",
];
const REGENERATE: &str = "scripts/render-install > manifests/install.yaml";

// ---------------------------------------------------------------------------------------------
// Running Helm
// ---------------------------------------------------------------------------------------------

// `helm` and `helm_ok` are in tests/support.

/// `args` followed by one `--set` per entry of `sets`.
fn with_sets(mut args: Vec<String>, sets: &[&str]) -> Vec<String> {
    for s in sets {
        args.push("--set".into());
        args.push(s.to_string());
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// A values file in the test's temp dir (profiles are easier to read as YAML).
fn values_file(name: &str, yaml: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path.to_string_lossy().into_owned()
}

fn template_args(sets: &[&str], files: &[String]) -> Vec<String> {
    let mut args: Vec<String> = ["template", RELEASE, CHART, "--namespace", NS].map(String::from).to_vec();
    for f in files {
        args.extend(["-f".to_string(), f.clone()]);
    }
    with_sets(args, sets)
}

/// The chart rendered with exactly these `--set` values and values files, as parsed documents.
fn render_with(sets: &[&str], files: &[String]) -> Rendered {
    let out = helm_ok(&strs(&template_args(sets, files)));
    Rendered(parse_all(&out))
}

/// The chart rendered with REQUIRED plus `extra`.
fn render(extra: &[&str]) -> Rendered {
    render_with(&[REQUIRED, extra].concat(), &[])
}

/// The error Helm gives for `sets` (which must fail).
fn render_error(sets: &[&str]) -> String {
    let args = template_args(sets, &[]);
    let out = helm(&strs(&args));
    assert!(
        !out.status.success(),
        "expected a failure for {sets:?}; rendered:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Multi-document YAML; duplicate keys are errors (serde-saphyr's default), empty documents skipped.
fn parse_all(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml).unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{yaml}"))
}

struct Rendered(Vec<Value>);

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.0.iter().filter(|d| d["kind"] == kind).collect()
    }
    fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.0.iter().find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
    }
    fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name).unwrap_or_else(|| panic!("no {kind} {name} rendered; got {:?}", self.names()))
    }
    fn names(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|d| format!("{}/{}", d["kind"].as_str().unwrap_or("?"), d["metadata"]["name"].as_str().unwrap_or("?")))
            .collect()
    }
    fn container(&self, component: &str) -> &Value {
        &self.get("Deployment", &format!("moltmate-{component}"))["spec"]["template"]["spec"]["containers"][0]
    }
    fn args(&self, component: &str) -> Vec<String> {
        args_of(self.container(component))
    }
}

fn args_of(container: &Value) -> Vec<String> {
    container["args"].as_array().expect("args").iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let prefix = format!("--{name}=");
    args.iter().find_map(|a| a.strip_prefix(&prefix))
}

/// A Secret's `data[key]`, decoded (k8s-openapi's ByteString reads the base64).
fn secret_value(secret: &Value, key: &str) -> String {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(secret.clone()).expect("a Secret");
    let bytes = secret.data.unwrap_or_default().remove(key).unwrap_or_else(|| panic!("no key {key}"));
    String::from_utf8(bytes.0).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Value sets used across the tests
// ---------------------------------------------------------------------------------------------

const WEBHOOK: &[&str] = &[
    "telegram.mode=webhook",
    "telegram.webhook.url=https://bot.example.org/telegram",
    "ingress.enabled=true",
    "ingress.className=traefik",
    "ingress.tls[0].secretName=bot-tls",
    "ingress.tls[0].hosts[0]=bot.example.org",
];
const ACCESS: &[&str] = &["access.admins={4242,4343}", "access.profiles={public,family}"];
const EXISTING_SECRET: &[&str] = &[
    "image.repository=localhost/moltmates/moltmate",
    "llm.baseUrl=https://llm.example.org/v1",
    "llm.defaultModel=gpt-4o-mini",
    "secrets.existingSecret=moltmates",
];
const PROFILES_YAML: &str = "profiles:
  family:
    exec: {safeBins: [cat, ls, pdftotext]}
    web: {fetch: {enabled: true, allowedDomains: [wikipedia.org, example.org]}}
    resources: {memory: 2Gi}
    idleTimeout: 30m
    llm: {requestsPerMinute: 30, tokensPerDay: 1000000}
  high-security:
    sandbox: {image: moltmates/sandbox:0.1.0-slim, network: none, workspaceAccess: ro}
    exec: {security: allowlist, safeBins: [cat]}
";

/// (name, --set values, values files) of every value set lint and the renders are checked with.
fn value_sets() -> Vec<(&'static str, Vec<&'static str>, Vec<String>)> {
    let profiles = values_file("profiles.yaml", PROFILES_YAML);
    vec![
        ("defaults", REQUIRED.to_vec(), vec![]),
        ("webhook + ingress", [REQUIRED, WEBHOOK].concat(), vec![]),
        ("existingSecret", EXISTING_SECRET.to_vec(), vec![]),
        ("custom profiles", REQUIRED.to_vec(), vec![profiles]),
        ("2 gateway replicas", [REQUIRED, &["gateway.replicas=2"]].concat(), vec![]),
        ("access requests", [REQUIRED, ACCESS].concat(), vec![]),
        (
            "ServiceMonitor",
            [REQUIRED, &["serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom"]].concat(),
            vec![],
        ),
        (
            "everything optional set",
            [
                REQUIRED,
                &[
                    "storageClass=local-path",
                    "llm.defaultModel=gpt-4o-mini",
                    "telegram.apiUrl=http://bot-api.bots.svc:8081",
                    "telegram.allowGroups=true",
                    "logFormat=text",
                    "operator.nodeSelector.kubernetes\\.io/arch=arm64",
                    "gateway.tolerations[0].operator=Exists",
                    "imagePullSecrets[0].name=regcred",
                ],
            ]
            .concat(),
            vec![],
        ),
        ("install.yaml", vec![], vec![format!("{REPO}/manifests/install-values.yaml")]),
    ]
}

// ---------------------------------------------------------------------------------------------
// Lint and render
// ---------------------------------------------------------------------------------------------

#[test]
fn lint_strict_is_clean_with_every_value_set() {
    for (name, sets, files) in value_sets() {
        let mut args: Vec<String> = ["lint", CHART, "--strict", "--namespace", NS].map(String::from).to_vec();
        for f in &files {
            args.extend(["-f".to_string(), f.clone()]);
        }
        let args = with_sets(args, &sets);
        let out = helm(&strs(&args));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "lint failed for {name}:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(!stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"), "lint of {name} reports:\n{stdout}");
    }
}

#[test]
fn every_pod_runs_restricted_with_secrets_as_files() {
    for (name, sets, files) in value_sets() {
        let rendered = render_with(&sets, &files);
        let deployments = rendered.all("Deployment");
        assert_eq!(deployments.len(), 2, "{name}: {:?}", rendered.names());
        for deployment in deployments {
            let what = format!("{name}: {}", deployment["metadata"]["name"]);
            let pod = &deployment["spec"]["template"]["spec"];
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{what}");
            assert_eq!(psc["runAsUser"], 65532, "{what}");
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
            assert_eq!(pod["automountServiceAccountToken"], true, "{what}: operator and gateway use the API");
            assert!(pod["hostNetwork"].is_null() && pod["hostPID"].is_null(), "{what}");
            let containers = pod["containers"].as_array().unwrap();
            assert_eq!(containers.len(), 1, "{what}");
            assert!(pod["initContainers"].is_null(), "{what}");
            let c = &containers[0];
            let sc = &c["securityContext"];
            assert_eq!(sc["runAsNonRoot"], true, "{what}");
            assert_eq!(sc["runAsUser"], 65532, "{what}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
            assert!(sc["capabilities"]["add"].is_null(), "{what}");
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
            for kind in ["requests", "limits"] {
                for resource in ["cpu", "memory"] {
                    assert!(!c["resources"][kind][resource].is_null(), "{what}: resources.{kind}.{resource}");
                }
            }
            assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}), "{what}");
            assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}), "{what}");
            let http = c["ports"].as_array().unwrap().iter().find(|p| p["name"] == "http").expect("http port");
            assert_eq!(http["containerPort"], 9090, "{what}");
            // The only env var is POD_NAME, from the downward API: no secret is a literal value.
            assert_eq!(
                c["env"],
                json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
                "{what}"
            );
            assert!(c["envFrom"].is_null(), "{what}");
            let args = args_of(c);
            let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "secrets");
            let Some(mount) = mount else {
                // Only an operator that generates the master key reads no file: it keeps the
                // key in a Secret it reads through the API.
                assert!(flag(&args, "master-key-secret").is_some(), "{what}: no secrets mount");
                assert!(!args.iter().any(|a| a.contains("/etc/moltmate/secrets/")), "{what}: {args:?}");
                continue;
            };
            assert_eq!(mount["mountPath"], "/etc/moltmate/secrets", "{what}");
            assert_eq!(mount["readOnly"], true, "{what}");
            // Every *-file flag under the secrets dir names a file the projected volume holds.
            let volume =
                pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "secrets").expect("secrets volume");
            let files: Vec<&str> = volume["projected"]["sources"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["secret"]["items"].as_array().unwrap().iter().map(|i| i["path"].as_str().unwrap()))
                .collect();
            let secret_flags: Vec<&str> =
                args.iter().filter_map(|a| a.split_once("=/etc/moltmate/secrets/").map(|(_, f)| f)).collect();
            assert!(!secret_flags.is_empty(), "{what}");
            for file in &secret_flags {
                assert!(files.contains(file), "{what}: {file} is passed as a flag but not mounted ({files:?})");
            }
            assert_eq!(secret_flags.len(), files.len(), "{what}: mounted {files:?}, used {secret_flags:?}");
            // And no flag carries a secret's value.
            for arg in &args {
                assert!(!arg.contains("123:abc") && !arg.contains("sk-test"), "{what}: secret in {arg}");
            }
        }
        for sa in rendered.all("ServiceAccount") {
            assert_eq!(sa["automountServiceAccountToken"], false, "{name}: only the pod specs mount tokens");
        }
    }
}

#[test]
fn operator_command_line() {
    let rendered = render(&[]);
    let container = rendered.container("operator");
    assert_eq!(container["image"], "localhost/moltmates/moltmate:0.1.0", "the appVersion");
    assert_eq!(
        rendered.args("operator"),
        [
            "operator",
            "--log-format=json",
            "--sandbox-image=localhost/moltmates/sandbox:0.1.0",
            "--gateway-namespace=moltmate-system",
            "--gateway-pod-labels=app.kubernetes.io/name=moltmate-gateway,app.kubernetes.io/instance=moltmates",
            "--broker-service=moltmate-broker",
            "--broker-port=8081",
            "--agent-port=8080",
            "--master-key-secret=moltmate-master-key",
            "--http-addr=0.0.0.0:9090",
            "--leader-elect=true",
            "--lease-namespace=moltmate-system",
            "--profiles-file=/etc/moltmate/profiles/profiles.yaml",
        ]
    );
    let deployment = rendered.get("Deployment", "moltmate-operator");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], "moltmate-operator");

    // The gateway pods carry exactly the labels the operator is told to admit.
    let labels = &rendered.get("Deployment", "moltmate-gateway")["spec"]["template"]["metadata"]["labels"];
    let told = flag(&rendered.args("operator"), "gateway-pod-labels").unwrap().to_string();
    for pair in told.split(',') {
        let (k, v) = pair.split_once('=').unwrap();
        assert_eq!(labels[k], v, "gateway pod label {k}");
    }

    let custom = render(&["storageClass=local-path", "sandbox.image=moltmates/sandbox:0.2.0", "logFormat=text"]);
    let args = custom.args("operator");
    assert_eq!(flag(&args, "storage-class"), Some("local-path"));
    assert_eq!(flag(&args, "sandbox-image"), Some("moltmates/sandbox:0.2.0"));
    assert_eq!(flag(&args, "log-format"), Some("text"));
    assert_eq!(flag(&rendered.args("operator"), "storage-class"), None, "empty storageClass: the cluster default");

    // The agent pods' settings reach the operator as one flag it parses (or none at all).
    assert_eq!(flag(&rendered.args("operator"), "agent-pod"), None);
    let placed = render(&[
        "imagePullSecrets[0].name=regcred",
        "sandbox.runtimeClassName=gvisor",
        "sandbox.nodeSelector.pool=agents",
        "sandbox.tolerations[0].key=dedicated",
        "sandbox.tolerations[0].operator=Exists",
        "sandbox.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].weight=1",
        "sandbox.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].key=ssd",
        "sandbox.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[0].preference.matchExpressions[0].operator=Exists",
        "sandbox.priorityClassName=agents",
    ]);
    let settings = moltmates::builders::AgentPodSettings::parse(flag(&placed.args("operator"), "agent-pod").unwrap())
        .expect("the operator accepts what the chart renders");
    assert_eq!(settings.image_pull_secrets, ["regcred"]);
    assert_eq!(settings.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(settings.node_selector["pool"], "agents");
    assert_eq!(settings.tolerations[0].operator.as_deref(), Some("Exists"));
    assert!(settings.affinity.and_then(|a| a.node_affinity).is_some());
    assert_eq!(settings.priority_class_name.as_deref(), Some("agents"));
    assert!(
        render_error(&[REQUIRED, &["sandbox.runtimeClassName=Not_A_Name"][..]].concat()).contains("runtimeClassName")
    );
}

#[test]
fn gateway_command_line() {
    let rendered = render(&[]);
    assert_eq!(
        rendered.args("gateway"),
        [
            "gateway",
            "--log-format=json",
            "--bot-token-file=/etc/moltmate/secrets/bot-token",
            "--allow-groups=false",
            "--poll-timeout=25s",
            "--queue-size=20",
            "--agent-port=8080",
            "--agent-timeout=180s",
            "--drain-timeout=190s",
            "--wake-timeout=60s",
            "--broker-addr=0.0.0.0:8081",
            "--http-addr=0.0.0.0:9090",
            "--llm-base-url=https://llm.example.org/v1",
            "--llm-api-key-file=/etc/moltmate/secrets/llm-api-key",
            "--llm-default-model=gpt-4o-mini",
            "--master-key-file=/etc/moltmate/secrets/master-key",
            "--leader-elect=true",
            "--lease-namespace=moltmate-system",
            "--profiles-file=/etc/moltmate/profiles/profiles.yaml",
            "--telegram-mode=polling",
            "--file-max-size=10Mi",
            "--transcription-model=whisper-1",
            "--photos=false",
        ]
    );
    let ports: Vec<&str> = rendered.container("gateway")["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(ports, ["http", "broker"]);

    let optional = render(&[
        "llm.defaultModel=gpt-4o",
        "telegram.apiUrl=http://bot-api.bots.svc:8081",
        "telegram.allowGroups=true",
        "media.fileMaxSize=5Mi",
        "media.fileTypes={pdf,csv}",
        "media.transcriptionModel=off",
        "media.photos=true",
        "llm.models={gpt-4o-mini,gpt-4o}",
    ]);
    let args = optional.args("gateway");
    assert_eq!(flag(&args, "llm-models"), Some("gpt-4o-mini,gpt-4o"));
    assert_eq!(flag(&rendered.args("gateway"), "llm-models"), None, "no list: the default model alone");
    let media: Vec<Option<&str>> =
        ["file-max-size", "file-types", "transcription-model", "photos"].iter().map(|f| flag(&args, f)).collect();
    assert_eq!(media, [Some("5Mi"), Some("pdf,csv"), Some("off"), Some("true")]);
    assert!(render_error(&[REQUIRED, &["media.fileTypes={../x}"][..]].concat()).contains("fileTypes"));
    assert_eq!(flag(&args, "llm-default-model"), Some("gpt-4o"));
    assert_eq!(flag(&args, "telegram-api-url"), Some("http://bot-api.bots.svc:8081"));
    assert_eq!(flag(&args, "allow-groups"), Some("true"));

    let webhook = render(WEBHOOK);
    let args = webhook.args("gateway");
    assert_eq!(flag(&args, "telegram-mode"), Some("webhook"));
    assert_eq!(flag(&args, "webhook-addr"), Some("0.0.0.0:8443"));
    assert_eq!(flag(&args, "webhook-path"), Some("/telegram"));
    assert_eq!(flag(&args, "webhook-url"), Some("https://bot.example.org/telegram"));
    assert_eq!(flag(&args, "webhook-secret-file"), Some("/etc/moltmate/secrets/webhook-secret"));
    let ports: Vec<&str> =
        webhook.container("gateway")["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(ports, ["http", "broker", "webhook"]);

    assert_eq!(render(&["gateway.replicas=2"]).get("Deployment", "moltmate-gateway")["spec"]["replicas"], 2);

    // A stopping gateway finishes its messages within the pod's grace period, 10 s kept for the exit.
    let pod_spec = |r: &Rendered| r.get("Deployment", "moltmate-gateway")["spec"]["template"]["spec"].clone();
    assert_eq!(pod_spec(&rendered)["terminationGracePeriodSeconds"], 200);
    let longer = render(&["gateway.terminationGracePeriodSeconds=400"]);
    assert_eq!(pod_spec(&longer)["terminationGracePeriodSeconds"], 400);
    assert_eq!(flag(&longer.args("gateway"), "drain-timeout"), Some("390s"));
}

#[test]
fn defaults_match_the_binary() {
    let help = Command::new(env!("CARGO_BIN_EXE_moltmate")).args(["operator", "--help"]).output().unwrap();
    let help = String::from_utf8(help.stdout).unwrap();
    let default_of = |flag: &str| -> String {
        let at = help.find(&format!("--{flag} ")).unwrap_or_else(|| panic!("--{flag} not in:\n{help}"));
        let rest = &help[at..];
        let start = rest.find("[default: ").unwrap() + "[default: ".len();
        rest[start..start + rest[start..].find(']').unwrap()].to_string()
    };
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/values.yaml")).unwrap()).unwrap();
    // The chart's agent image beside its own, as the operator's default is beside the image
    // `make images` builds.
    assert_eq!(values["sandbox"]["image"], "", "empty: beside image.repository");
    let local = render(&[]);
    assert_eq!(flag(&local.args("operator"), "sandbox-image"), Some(default_of("sandbox-image").as_str()));
    let args = render(&[]).args("operator");
    assert_eq!(flag(&args, "broker-service").unwrap(), default_of("broker-service"));
    assert_eq!(flag(&args, "broker-port").unwrap(), default_of("broker-port"));
    assert_eq!(flag(&args, "agent-port").unwrap(), default_of("agent-port"));

    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(values["image"]["repository"], "", "no default image: nobody publishes one for the user");
    // The agents' image follows the operator's: beside it, with the same tag.
    let elsewhere = render(&["image.repository=localhost:5000/home/moltmate", "image.tag=0.2.0"]);
    assert_eq!(flag(&elsewhere.args("operator"), "sandbox-image"), Some("localhost:5000/home/sandbox:0.2.0"));
    assert_eq!(values["image"]["tag"], "", "the tag follows appVersion");
}

#[test]
fn cluster_roles_are_the_files() {
    let rendered = render(&[]);
    for component in ["operator", "gateway"] {
        let name = format!("moltmate-{component}");
        let file: Value = serde_saphyr::from_str(
            &std::fs::read_to_string(format!("{CHART}/files/{component}-clusterrole.yaml")).unwrap(),
        )
        .unwrap();
        assert_eq!(rendered.get("ClusterRole", &name), &file, "{name} differs from files/{component}-clusterrole.yaml");
        let binding = rendered.get("ClusterRoleBinding", &name);
        assert_eq!(
            binding["roleRef"],
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name})
        );
        assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": name, "namespace": NS}]));
        assert_eq!(rendered.get("Deployment", &name)["spec"]["template"]["spec"]["serviceAccountName"], name.as_str());
    }
    assert_eq!(rendered.all("ClusterRole").len(), 2, "no other cluster-wide permissions");
    // Leases only in the release namespace: neither ClusterRole may write a Lease anywhere.
    for component in ["operator", "gateway"] {
        let rules = rendered.get("ClusterRole", &format!("moltmate-{component}"))["rules"].to_string();
        assert!(!rules.contains("leases"), "{component}: {rules}");
    }
    let mut file: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/files/leader-election-role.yaml")).unwrap())
            .unwrap();
    file["metadata"]["namespace"] = NS.into();
    assert_eq!(rendered.get("Role", "moltmate-leader-election"), &file);
    let binding = rendered.get("RoleBinding", "moltmate-leader-election");
    assert_eq!(binding["metadata"]["namespace"], NS);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "moltmate-leader-election"})
    );
    let subjects = json!(
        ["operator", "gateway"]
            .map(|c| json!({"kind": "ServiceAccount", "name": format!("moltmate-{c}"), "namespace": NS}))
    );
    assert_eq!(binding["subjects"], subjects);
    // The gateway's usage record: one ConfigMap by name, in the release namespace, for the gateway.
    let mut file: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(format!("{CHART}/files/gateway-role.yaml")).unwrap()).unwrap();
    file["metadata"]["namespace"] = NS.into();
    assert_eq!(rendered.get("Role", "moltmate-gateway"), &file);
    let binding = rendered.get("RoleBinding", "moltmate-gateway");
    assert_eq!(
        (binding["metadata"]["namespace"].as_str(), binding["roleRef"]["name"].as_str()),
        (Some(NS), Some("moltmate-gateway"))
    );
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "moltmate-gateway", "namespace": NS}]));
    assert_eq!((rendered.all("Role").len(), rendered.all("RoleBinding").len()), (2, 2));
}

/// Access requests: the gateway's flags from the values; creating MoltmateUsers (create only,
/// nothing else) is granted only with admins named and not in GitOps mode.
#[test]
fn access_requests_grant_create_only_in_create_mode() {
    let off = render(&[]);
    assert!(off.args("gateway").iter().all(|a| !a.starts_with("--access-")), "{:?}", off.args("gateway"));
    assert!(off.find("ClusterRole", "moltmate-gateway-access").is_none());

    let on = render(ACCESS);
    let args = on.args("gateway");
    for (name, value) in [
        ("access-admins", "4242,4343"),
        ("access-profiles", "public,family"),
        ("access-mode", "create"),
        ("access-request-ttl", "24h"),
        ("access-requests-per-hour", "10"),
        ("access-max-open", "20"),
    ] {
        assert_eq!(flag(&args, name), Some(value), "{name} in {args:?}");
    }
    let file: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{CHART}/files/gateway-access-clusterrole.yaml")).unwrap(),
    )
    .unwrap();
    let role = on.get("ClusterRole", "moltmate-gateway-access");
    assert_eq!(role, &file);
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": ["moltmate.io"], "resources": ["moltmateusers"], "verbs": ["create"]}])
    );
    let binding = on.get("ClusterRoleBinding", "moltmate-gateway-access");
    assert_eq!(binding["roleRef"]["name"], "moltmate-gateway-access");
    assert_eq!(binding["subjects"], json!([{"kind": "ServiceAccount", "name": "moltmate-gateway", "namespace": NS}]));
    assert_eq!(on.all("ClusterRole").len(), 3);

    let gitops = render(&[ACCESS, &["access.mode=gitops"]].concat());
    assert_eq!(flag(&gitops.args("gateway"), "access-mode"), Some("gitops"));
    assert!(gitops.find("ClusterRole", "moltmate-gateway-access").is_none(), "GitOps: no create");
    assert_eq!(gitops.all("ClusterRole").len(), 2);
    for (sets, expected) in [
        (&["access.mode=open"][..], "/access/mode"),
        (&["access.profiles={root}"][..], "/access/profiles"),
        (&["access.admins={0}"][..], "/access/admins"),
        (&["access.requestTtl=soon"][..], "/access/requestTtl"),
    ] {
        let error = render_error(&[REQUIRED, sets].concat());
        assert!(error.contains(expected), "{sets:?}: expected {expected:?} in:\n{error}");
    }
}

#[test]
fn services_are_cluster_ip_and_the_webhook_exists_only_in_webhook_mode() {
    let polling = render(&[]);
    let webhook = render(WEBHOOK);
    let webhook_no_ingress = render(&WEBHOOK[..2]);
    for rendered in [&polling, &webhook, &webhook_no_ingress] {
        for service in rendered.all("Service") {
            assert_eq!(service["spec"]["type"], "ClusterIP", "{}", service["metadata"]["name"]);
        }
        let broker = rendered.get("Service", "moltmate-broker");
        assert_eq!(
            broker["spec"]["ports"],
            json!([{"name": "broker", "port": 8081, "targetPort": "broker", "protocol": "TCP"}])
        );
        assert_eq!(
            broker["spec"]["selector"],
            json!({"app.kubernetes.io/name": "moltmate-gateway", "app.kubernetes.io/instance": RELEASE})
        );
        let metrics = rendered.get("Service", "moltmate-metrics");
        assert_eq!(metrics["spec"]["ports"][0]["port"], 9090);
        // The metrics Service selects both Deployments' pods.
        for component in ["operator", "gateway"] {
            let labels =
                &rendered.get("Deployment", &format!("moltmate-{component}"))["spec"]["template"]["metadata"]["labels"];
            for (k, v) in metrics["spec"]["selector"].as_object().unwrap() {
                assert_eq!(&labels[k], v, "{component} pod label {k}");
            }
        }
    }
    assert!(polling.find("Service", "moltmate-webhook").is_none());
    assert!(polling.all("Ingress").is_empty());
    assert!(webhook_no_ingress.find("Service", "moltmate-webhook").is_some());
    assert!(webhook_no_ingress.all("Ingress").is_empty(), "the Ingress is off by default");

    let service = webhook.get("Service", "moltmate-webhook");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "webhook");
    let ingress = webhook.get("Ingress", "moltmate-webhook");
    assert_eq!(ingress["spec"]["ingressClassName"], "traefik");
    assert_eq!(ingress["spec"]["tls"], json!([{"secretName": "bot-tls", "hosts": ["bot.example.org"]}]));
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "bot.example.org", "the host of telegram.webhook.url");
    assert_eq!(
        rule["http"]["paths"],
        json!([{"path": "/telegram", "pathType": "Exact", "backend": {"service": {"name": "moltmate-webhook", "port": {"name": "webhook"}}}}])
    );
    assert_eq!(
        render(&[WEBHOOK, &["ingress.host=tg.example.net"]].concat()).get("Ingress", "moltmate-webhook")["spec"]["rules"]
            [0]["host"],
        "tg.example.net"
    );
}

#[test]
fn network_policies_admit_only_what_each_pod_serves() {
    let port_rules = |rendered: &Rendered, name: &str| -> BTreeMap<String, Value> {
        let policy = rendered.get("NetworkPolicy", name);
        assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
        let pod_labels = &rendered.get("Deployment", name)["spec"]["template"]["metadata"]["labels"];
        for (k, v) in policy["spec"]["podSelector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&pod_labels[k], v, "{name} policy selects its pods");
        }
        policy["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .map(|rule| {
                let ports = rule["ports"].as_array().unwrap();
                assert_eq!(ports.len(), 1);
                (ports[0]["port"].as_str().unwrap().to_string(), rule.get("from").cloned().unwrap_or(Value::Null))
            })
            .collect()
    };
    let agents = json!([{"namespaceSelector": {"matchLabels": {"app.kubernetes.io/managed-by": "moltmate-operator"}}}]);
    // The gateway's metrics carry a label per user: by default only the release namespace reads them.
    let release_only = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NS}}}]);

    let polling = render(&[]);
    let gateway = port_rules(&polling, "moltmate-gateway");
    assert_eq!(gateway.keys().collect::<Vec<_>>(), ["broker", "http"]);
    assert_eq!(gateway["broker"], agents);
    assert_eq!(gateway["http"], release_only);
    let operator = port_rules(&polling, "moltmate-operator");
    assert_eq!(operator.keys().collect::<Vec<_>>(), ["http"]);
    assert_eq!(operator["http"], release_only);
    // Opened on purpose to every namespace, it says so.
    let open = Rendered(parse_all(&helm_ok(&strs(
        &[template_args(REQUIRED, &[]), vec!["--set-json".into(), "networkPolicy.metrics.namespaceSelector={}".into()]]
            .concat(),
    ))));
    assert_eq!(port_rules(&open, "moltmate-gateway")["http"], json!([{"namespaceSelector": {}}]));

    let webhook = port_rules(&render(WEBHOOK), "moltmate-gateway");
    assert_eq!(webhook.keys().collect::<Vec<_>>(), ["broker", "http", "webhook"]);
    assert_eq!(webhook["webhook"], Value::Null, "no `from`: Telegram arrives through any ingress path");

    let scoped = render(&[
        "networkPolicy.metrics.namespaceSelector.matchLabels.name=monitoring",
        "telegram.mode=webhook",
        "telegram.webhook.url=https://bot.example.org/telegram",
        "networkPolicy.webhook.from[0].namespaceSelector.matchLabels.name=traefik",
    ]);
    let gateway = port_rules(&scoped, "moltmate-gateway");
    assert_eq!(gateway["http"], json!([{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}]));
    assert_eq!(gateway["webhook"], json!([{"namespaceSelector": {"matchLabels": {"name": "traefik"}}}]));
    assert_eq!(
        port_rules(&scoped, "moltmate-operator")["http"],
        json!([{"namespaceSelector": {"matchLabels": {"name": "monitoring"}}}])
    );

    assert!(render(&["networkPolicy.enabled=false"]).all("NetworkPolicy").is_empty());
}

#[test]
fn secrets_generated_given_or_existing() {
    let rendered = render(&[]);
    let secret = |r: &Rendered, name: &str, key: &str| secret_value(r.get("Secret", name), key);
    assert_eq!(secret(&rendered, "moltmate-telegram", "bot-token"), "123:abc");
    assert_eq!(secret(&rendered, "moltmate-llm", "llm-api-key"), "sk-test");
    // No master key given: none is rendered (the operator generates it), so `helm template`
    // renders the same thing every time, as Argo CD needs.
    assert!(rendered.find("Secret", "moltmate-master-key").is_none(), "{:?}", rendered.names());
    assert_eq!(flag(&rendered.args("operator"), "master-key-secret"), Some("moltmate-master-key"));
    let operator_volumes = &rendered.get("Deployment", "moltmate-operator")["spec"]["template"]["spec"]["volumes"];
    assert!(!operator_volumes.to_string().contains("master-key"), "the operator reads it through the API");
    assert_eq!(flag(&rendered.args("gateway"), "master-key-file"), Some("/etc/moltmate/secrets/master-key"));
    let text = || helm_ok(&strs(&template_args(REQUIRED, &[])));
    assert_eq!(text(), text(), "two renders differ");
    let given = "0123456789abcdef0123456789abcdef-given";
    let with_value = render(&[&format!("masterKey.value={given}")]);
    assert_eq!(secret(&with_value, "moltmate-master-key", "master-key"), given);
    assert_eq!(flag(&with_value.args("operator"), "master-key-file"), Some("/etc/moltmate/secrets/master-key"));
    assert_eq!(flag(&with_value.args("operator"), "master-key-secret"), None);

    let webhook = render(WEBHOOK);
    let token = secret(&webhook, "moltmate-webhook", "webhook-secret");
    assert_eq!(token.len(), 64, "generated webhook secret");
    assert_eq!(webhook.get("Secret", "moltmate-webhook")["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert!(rendered.find("Secret", "moltmate-webhook").is_none());

    // One existing Secret: the chart creates none and every pod reads that one.
    let existing = render_with(EXISTING_SECRET, &[]);
    assert!(existing.all("Secret").is_empty(), "{:?}", existing.names());
    for deployment in existing.all("Deployment") {
        let volume = deployment["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "secrets")
            .unwrap();
        for source in volume["projected"]["sources"].as_array().unwrap() {
            assert_eq!(source["secret"]["name"], "moltmates");
        }
    }
    // Per-secret existing Secrets mix with chart-managed ones.
    let mixed = render(&["telegram.botToken=", "telegram.existingSecret=my-bot", "masterKey.existingSecret=my-key"]);
    assert!(
        mixed.find("Secret", "moltmate-telegram").is_none() && mixed.find("Secret", "moltmate-master-key").is_none()
    );
    assert!(mixed.find("Secret", "moltmate-llm").is_some());
    let sources =
        &mixed.get("Deployment", "moltmate-gateway")["spec"]["template"]["spec"]["volumes"][0]["projected"]["sources"];
    let names: Vec<&str> = sources.as_array().unwrap().iter().map(|s| s["secret"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["my-bot", "moltmate-llm", "my-key"]);
}

#[test]
fn profiles_reach_both_processes_as_a_file() {
    let file = values_file("profiles-render.yaml", PROFILES_YAML);
    let rendered = render_with(REQUIRED, &[file]);
    let map = rendered.get("ConfigMap", "moltmate-profiles");
    let profiles: Value = serde_saphyr::from_str(map["data"]["profiles.yaml"].as_str().unwrap()).unwrap();
    let expected: Value = serde_saphyr::from_str::<Value>(PROFILES_YAML).unwrap()["profiles"].clone();
    assert_eq!(profiles, expected);

    let defaults = render(&[]);
    let empty: Value = serde_saphyr::from_str(
        defaults.get("ConfigMap", "moltmate-profiles")["data"]["profiles.yaml"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(empty, json!({}), "default: the built-in presets");

    for component in ["operator", "gateway"] {
        let name = format!("moltmate-{component}");
        let pod = &rendered.get("Deployment", &name)["spec"]["template"];
        assert_eq!(flag(&rendered.args(component), "profiles-file"), Some("/etc/moltmate/profiles/profiles.yaml"));
        let mount = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "profiles")
            .unwrap();
        assert_eq!(mount["mountPath"], "/etc/moltmate/profiles");
        let volume = pod["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "profiles").unwrap();
        assert_eq!(volume["configMap"]["name"], "moltmate-profiles");
        // A profile change rolls the pods (they read the file at start).
        let before =
            &defaults.get("Deployment", &name)["spec"]["template"]["metadata"]["annotations"]["checksum/profiles"];
        assert_ne!(before, &pod["metadata"]["annotations"]["checksum/profiles"], "{name}");
    }
}

#[test]
fn service_monitor_only_when_enabled() {
    assert!(render(&[]).all("ServiceMonitor").is_empty());
    let rendered = render(&["serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom"]);
    let monitor = rendered.get("ServiceMonitor", "moltmates");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let metrics_labels = &rendered.get("Service", "moltmate-metrics")["metadata"]["labels"];
    for (k, v) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&metrics_labels[k], v, "the monitor selects moltmate-metrics");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let cases: &[(&[&str], &str)] = &[
        (&["telegram.mode=foo"], "/telegram/mode"),
        (&["gateway.replicas=-1"], "/gateway/replicas"),
        (&["profiles.guest.idleTimeout=1m"], "'guest' not allowed"),
        (&["profiles.family.exec.security=deny"], "/profiles/family/exec/security"),
        (&["profiles.family.resources.memory=lots"], "/profiles/family/resources/memory"),
        (&["profiles.family.resources.cpu=0"], "/profiles/family/resources/cpu"),
        (&["profiles.family.safeBins[0]=cat"], "'safeBins' not allowed"),
        (&["telegram.mode=webhook"], "/telegram/webhook/url"),
        (&["telegram.mode=webhook", "telegram.webhook.url=http://bot.example.org/telegram"], "/telegram/webhook/url"),
        (&["ingress.enabled=true"], "/telegram/mode"),
        (&["operator.replicaz=2"], "'replicaz' not allowed"),
        (&["masterKey.value=short"], "/masterKey/value"),
        (&["logFormat=yaml"], "/logFormat"),
        (&["telegram.pollTimeout=soon"], "/telegram/pollTimeout"),
        (&["gateway.terminationGracePeriodSeconds=5"], "/gateway/terminationGracePeriodSeconds"),
        (&["llm.models={default}"], "/llm/models/0"),
        (&["profiles.family.llm.models[0]=gpt 4"], "/profiles/family/llm/models/0"),
        (&["profiles.family.reminders.maxPending=0"], "/profiles/family/reminders/maxPending"),
        (&["profiles.family.media.photos=maybe"], "/profiles/family/media/photos"),
    ];
    for (sets, expected) in cases {
        let error = render_error(&[REQUIRED, *sets].concat());
        assert!(error.contains(expected), "{sets:?}: expected {expected:?} in:\n{error}");
        assert!(error.starts_with("Error: "), "{error}");
    }
    let missing_url = render_error(&["telegram.botToken=1:a", "llm.apiKey=k", "llm.defaultModel=m"]);
    assert!(missing_url.contains("/llm/baseUrl"), "{missing_url}");
    // No model: no request may reach a provider asking for the agents' placeholder.
    for model in [&[][..], &["llm.defaultModel=default"][..]] {
        let sets = [&["telegram.botToken=1:a", "llm.apiKey=k", "llm.baseUrl=https://llm.example.org/v1"][..], model];
        let no_model = render_error(&sets.concat());
        assert!(no_model.contains("/llm/defaultModel"), "{model:?}: {no_model}");
    }
    let no_token = render_error(&[
        "image.repository=localhost/moltmates/moltmate",
        "llm.baseUrl=https://llm.example.org/v1",
        "llm.defaultModel=m",
        "llm.apiKey=k",
    ]);
    assert!(no_token.contains("telegram.botToken is required"), "{no_token}");
    // No image named: the install stops and says how to build them.
    let no_image: Vec<&str> = REQUIRED.iter().copied().filter(|s| !s.starts_with("image.repository")).collect();
    let no_image = render_error(&no_image);
    assert!(no_image.contains("image.repository is required") && no_image.contains("make images"), "{no_image}");
    let both = render_error(&[REQUIRED, &["secrets.existingSecret=moltmates"]].concat());
    assert!(both.contains("set one of them"), "{both}");

    // lint refuses them too.
    let out = helm(&strs(&with_sets(
        vec!["lint".into(), CHART.into(), "--strict".into()],
        &[REQUIRED, &["telegram.mode=foo"]].concat(),
    )));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/telegram/mode"));
}

/// `scripts/helm` is the real Helm CLI at the version the test environment builds.
#[test]
fn scripts_helm_is_the_real_helm_cli() {
    let version = helm_ok(&["version", "--short"]);
    assert!(version.starts_with("v4.3.2"), "{version}");
    let out = helm(&["template", "x", "/nonexistent/chart"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Error: "), "Helm's own error format: {out:?}");
}

#[test]
fn chart_crd_is_the_committed_crd() {
    let chart = std::fs::read(format!("{CHART}/crds/moltmateuser.yaml")).unwrap();
    let top = std::fs::read(format!("{REPO}/crds/moltmateuser.yaml")).unwrap();
    assert!(
        chart == top,
        "charts/moltmates/crds/moltmateuser.yaml differs; run `cp crds/moltmateuser.yaml charts/moltmates/crds/`"
    );
}

#[test]
fn install_yaml_is_the_current_render() {
    let out = Command::new(format!("{REPO}/scripts/render-install")).output().unwrap();
    assert!(out.status.success(), "scripts/render-install failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let fresh = String::from_utf8(out.stdout).unwrap();
    let committed = std::fs::read_to_string(format!("{REPO}/manifests/install.yaml")).unwrap();
    assert!(fresh == committed, "manifests/install.yaml is out of date; regenerate it with:\n  {REGENERATE}");

    let docs = Rendered(parse_all(&committed));
    assert_eq!(docs.0[0]["kind"], "CustomResourceDefinition");
    assert_eq!(docs.get("Namespace", NS)["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "restricted");
    assert!(docs.all("Secret").is_empty(), "no secret material in a committed file");
    assert!(committed.contains("kubectl create secret generic moltmates -n moltmate-system"));
    assert!(committed.contains(REGENERATE), "the header says how to regenerate it");
}

// ---------------------------------------------------------------------------------------------
// Against a real API server
// ---------------------------------------------------------------------------------------------

fn kubectl_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = env.kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn get_json(env: &TestEnv, args: &[&str]) -> Value {
    serde_json::from_str(&kubectl_ok(env, &[args, &["-o", "json"]].concat())).unwrap()
}

/// Pod Security `restricted` is enforced on the release namespace, and the operator's and the
/// gateway's pods were created there: admission let them in. (The control plane has no node, so
/// they stay Pending; a refused pod would exist only as its ReplicaSet's FailedCreate event,
/// which the failure shows.)
async fn wait_every_pod_admitted(env: &TestEnv) {
    let labels = get_json(env, &["get", "namespace", NS])["metadata"]["labels"].clone();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted", "{labels}");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pods = get_json(env, &["get", "pods", "-n", NS]);
        let admitted: Vec<String> = pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p["metadata"]["labels"]["app.kubernetes.io/name"].as_str().map(String::from))
            .collect();
        if ["moltmate-operator", "moltmate-gateway"].iter().all(|name| admitted.iter().any(|a| a == name)) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let events = kubectl_ok(
                env,
                &[
                    "get",
                    "events",
                    "-n",
                    NS,
                    "--field-selector",
                    "reason=FailedCreate",
                    "-o",
                    "custom-columns=MESSAGE:.message",
                ],
            );
            panic!("pods admitted after 60 s: {admitted:?}; refusals:\n{events}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a user does with install.yaml (its header's steps), then the examples.
#[tokio::test]
async fn install_yaml_applies_to_a_real_api_server() {
    let env = TestEnv::up("chart-kubectl");
    let install = format!("{REPO}/manifests/install.yaml");
    kubectl_ok(&env, &["create", "namespace", NS]);
    kubectl_ok(
        &env,
        &[
            "create",
            "secret",
            "generic",
            "moltmates",
            "-n",
            NS,
            "--from-literal=bot-token=123:abc",
            "--from-literal=llm-api-key=sk-test",
            "--from-literal=master-key=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ],
    );
    kubectl_ok(&env, &["apply", "--server-side", "--dry-run=server", "-f", &install]);
    kubectl_ok(&env, &["apply", "--server-side", "-f", &install]);
    kubectl_ok(&env, &["wait", "--for=condition=Established", "crd/moltmateusers.moltmate.io", "--timeout=30s"]);
    for component in ["operator", "gateway"] {
        let deployment = get_json(&env, &["get", "deployment", "-n", NS, &format!("moltmate-{component}")]);
        let args = args_of(&deployment["spec"]["template"]["spec"]["containers"][0]);
        assert_eq!(args[0], component);
        assert!(args.contains(&"--master-key-file=/etc/moltmate/secrets/master-key".to_string()), "{args:?}");
    }
    // manifests/examples/*.yaml: MoltmateUsers (subfolders hold other tools' objects).
    let examples: Vec<_> = std::fs::read_dir(format!("{REPO}/manifests/examples"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    assert!(examples.len() >= 4);
    for example in examples {
        kubectl_ok(&env, &["apply", "--server-side", "--dry-run=server", "-f", example.to_str().unwrap()]);
    }
    wait_every_pod_admitted(&env).await;
    // Applying again changes nothing and does not fail (the GitOps loop).
    kubectl_ok(&env, &["apply", "--server-side", "-f", &install]);
}

/// `helm install`, upgrade, uninstall and reinstall with real Helm against a real API server.
#[tokio::test]
async fn helm_install_upgrade_uninstall() {
    let env = TestEnv::up("chart-helm");
    let kubeconfig = env.admin_kubeconfig();
    let kubeconfig = kubeconfig.to_str().unwrap();
    let values = [REQUIRED, &["storageClass=local-path"]].concat();
    let base: Vec<String> = ["--kubeconfig", kubeconfig, "--namespace", NS].map(String::from).to_vec();
    // The release namespace as the README has it made: Pod Security "restricted" enforced.
    kubectl_ok(&env, &["create", "namespace", NS]);
    kubectl_ok(&env, &["label", "namespace", NS, "pod-security.kubernetes.io/enforce=restricted"]);
    let install = with_sets([vec!["install".into(), RELEASE.into(), CHART.into()], base.clone()].concat(), &values);
    let out = helm_ok(&strs(&install));
    assert!(out.contains("STATUS: deployed") && out.contains("/whoami"), "{out}");

    // The CRD came with the chart; the Deployments are what `helm template` renders.
    kubectl_ok(&env, &["wait", "--for=condition=Established", "crd/moltmateusers.moltmate.io", "--timeout=30s"]);
    let rendered = render(&["storageClass=local-path"]);
    for component in ["operator", "gateway"] {
        let deployment = get_json(&env, &["get", "deployment", "-n", NS, &format!("moltmate-{component}")]);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(args_of(&pod["containers"][0]), rendered.args(component), "{component} args");
        assert_eq!(pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], 65532);
        if component == "gateway" {
            assert_eq!(pod["volumes"][0]["projected"]["defaultMode"], 0o440, "{component}");
        }
        assert_eq!(deployment["spec"]["replicas"], 1);
    }
    wait_every_pod_admitted(&env).await;
    // The bindings give each identity its role (the test env's tokens carry these names).
    for (who, question, allowed) in [
        ("operator", &["create", "namespaces"][..], "yes"),
        ("operator", &["patch", "moltmateusers.moltmate.io", "--subresource=status"], "yes"),
        ("gateway", &["watch", "moltmateusers.moltmate.io"], "yes"),
        // Its one write is the status (lastActivity): never a user's spec.
        ("gateway", &["patch", "moltmateusers.moltmate.io", "--subresource=status"], "yes"),
        ("gateway", &["patch", "moltmateusers.moltmate.io"], "no"),
        ("gateway", &["update", "moltmateusers.moltmate.io"], "no"),
        ("gateway", &["get", "secrets", "-n", NS], "no"),
        ("gateway", &["create", "pods", "-n", "moltmate-someone"], "no"),
        // Leases: their own, in the release namespace; never a node's heartbeat or the control
        // plane's leader Leases.
        ("operator", &["update", "leases", "-n", NS], "yes"),
        ("gateway", &["create", "leases", "-n", NS], "yes"),
        ("operator", &["update", "leases", "-n", "kube-node-lease"], "no"),
        ("gateway", &["update", "leases", "-n", "kube-system"], "no"),
        ("gateway", &["create", "leases", "-n", "default"], "no"),
    ] {
        let who_arg = format!("--as=system:serviceaccount:{NS}:moltmate-{who}");
        let out = env.kubectl(&[&["auth", "can-i", who_arg.as_str()][..], question].concat());
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), allowed, "{who} {question:?}");
    }

    // The operator's RBAC reaches every namespace (it creates them); the chart's admission
    // policy holds its writes to the user namespaces, checked by the API server.
    let as_operator = format!("--as=system:serviceaccount:{NS}:moltmate-operator");
    kubectl_ok(&env, &["create", "namespace", "moltmate-someone"]);
    let secret = |ns: &str, name: &str| {
        env.kubectl(&["create", "secret", "generic", name, "-n", ns, "--from-literal=k=v", as_operator.as_str()])
    };
    wait_until("the admission policy in force", Duration::from_secs(30), || async {
        let out = secret("kube-system", "planted");
        let refused =
            String::from_utf8_lossy(&out.stderr).contains("the moltmates operator writes only in user namespaces");
        (!out.status.success() && refused).then_some(())
    })
    .await;
    let out = env.kubectl(&["create", "namespace", "not-moltmate", as_operator.as_str()]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("writes only in user namespaces (moltmate-*), not in namespace not-moltmate"),
        "{out:?}"
    );
    let out = secret("moltmate-someone", "agent-token");
    assert!(out.status.success(), "a user namespace is the operator's: {out:?}");

    // The chart renders no master key; the operator creates it once (no operator runs here, so
    // this test does as it would, with its rights: the RBAC and the admission policy allow it).
    let missing = env.kubectl(&["get", "secret", "-n", NS, "moltmate-master-key"]);
    assert!(!missing.status.success(), "the chart made a master key");
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let literal = format!("--from-literal=master-key={key}");
    let made = env.kubectl(&[
        "create",
        "secret",
        "generic",
        "moltmate-master-key",
        "-n",
        NS,
        literal.as_str(),
        as_operator.as_str(),
    ]);
    assert!(made.status.success(), "the operator may create its master key: {made:?}");
    let master_key =
        || secret_value(&get_json(&env, &["get", "secret", "-n", NS, "moltmate-master-key"]), "master-key");

    // Helm does not own the key: an upgrade leaves it and applies the change.
    let upgrade = with_sets(
        [vec!["upgrade".into(), RELEASE.into(), CHART.into()], base.clone()].concat(),
        &[values.as_slice(), &["gateway.replicas=2"][..]].concat(),
    );
    assert!(helm_ok(&strs(&upgrade)).contains("REVISION: 2"));
    assert_eq!(master_key(), key, "the master key survives an upgrade");
    assert_eq!(get_json(&env, &["get", "deployment", "-n", NS, "moltmate-gateway"])["spec"]["replicas"], 2);

    // Uninstall removes the workloads but keeps the master key; a reinstall uses it again.
    helm_ok(&strs(&[vec!["uninstall".to_string(), RELEASE.into()], base.clone()].concat()));
    wait_until("the Deployments to go", Duration::from_secs(30), || async {
        let out = env.kubectl(&["get", "deployments", "-n", NS, "-o", "name"]);
        String::from_utf8_lossy(&out.stdout).trim().is_empty().then_some(())
    })
    .await;
    assert_eq!(master_key(), key, "the master key outlives an uninstall");
    helm_ok(&strs(&install));
    assert_eq!(master_key(), key, "a reinstall keeps the key");
}
