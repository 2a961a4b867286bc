//! GitOps beyond the users folder (tests/packaging.rs checks that one): the Argo CD health
//! check for MoltmateUser, run as Argo CD runs it (gopher-lua, tests/argocd-lua) on the
//! statuses the operator's own code writes, and the examples that install the chart with Flux
//! or Argo CD, their values rendered by the real Helm CLI.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::support::{REPO, helm_ok};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use moltmates::MoltmateUser;
use moltmates::crd::{MoltmateUserStatus, Phase};
use moltmates::operator::status::{self, Observation, Reason, next_status};
use serde_json::{Value, json};

const GITOPS: &str = "manifests/examples/gitops";
const HEALTH_LUA: &str = "manifests/examples/gitops/argocd-health.lua";
const ARGOCD_CM: &str = "manifests/examples/gitops/argocd-cm-health.yaml";
const FLUX_CHART: &str = "manifests/examples/gitops/chart/flux-helmrelease.yaml";
const ARGOCD_CHART: &str = "manifests/examples/gitops/chart/argocd-application.yaml";
const CHART_DIR: &str = "charts/moltmates";
/// The Secret both chart examples name; what docs/gitops.md tells to create.
const SECRET: &str = "moltmates";

fn read(relative: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(relative)).unwrap_or_else(|e| panic!("read {relative}: {e}"))
}

fn documents(relative: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

// ------------------------------------------------------------------------------------------
// The Argo CD health check
// ------------------------------------------------------------------------------------------

/// tests/argocd-lua, built once per run; Go is on every machine that runs the tests
/// (`scripts/testenv install` builds Kubernetes with it).
fn argocd_lua() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("argocd-lua");
        let out = Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(Path::new(REPO).join("tests/argocd-lua"))
            .env("GOFLAGS", "-mod=readonly")
            .env("GOTOOLCHAIN", "local")
            .output()
            .expect("run go (on PATH, as for scripts/testenv install)");
        assert!(out.status.success(), "go build tests/argocd-lua:\n{}", String::from_utf8_lossy(&out.stderr));
        bin
    })
}

/// Argo CD's verdict on `object`: (status, message).
fn argo_health(object: &Value) -> (String, String) {
    let mut child = Command::new(argocd_lua())
        .arg(Path::new(REPO).join(HEALTH_LUA))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run argocd-lua");
    child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{HEALTH_LUA} on {object}:\n{}", String::from_utf8_lossy(&out.stderr));
    let hs: BTreeMap<String, String> = serde_json::from_slice(&out.stdout).unwrap();
    (hs.get("status").cloned().unwrap_or_default(), hs.get("message").cloned().unwrap_or_default())
}

/// A user as the API server hands it to Argo CD: an example user at `generation`, with `status`.
fn live_user(generation: i64, status: Option<MoltmateUserStatus>) -> Value {
    let mut user: MoltmateUser = serde_saphyr::from_str(&read(&format!("{GITOPS}/users/alice.yaml"))).unwrap();
    user.metadata.generation = Some(generation);
    user.status = status;
    serde_json::to_value(&user).unwrap()
}

/// What the operator writes for a user in `phase`, for spec generation `observed`.
fn written(phase: Phase, observed: i64) -> MoltmateUserStatus {
    let observation = Observation::new(phase, Reason::InvalidSpec, format!("what {} means", phase.as_str()));
    let now = Time(jiff::Timestamp::from_second(1_700_000_000).unwrap());
    next_status(None, Some(observed), Some("moltmate-alice".into()), &observation, now)
}

#[test]
fn argo_cd_health_of_every_phase_the_operator_writes() {
    for phase in Phase::ALL {
        // Exhaustive: a new phase needs a decision here.
        let expected = match phase {
            Phase::Pending | Phase::Provisioning => "Progressing",
            // Idle and Suspended are settled as asked (see the script): Healthy, not Suspended.
            Phase::Ready | Phase::Idle | Phase::Suspended => "Healthy",
            Phase::Failed => "Degraded",
        };
        let (health, message) = argo_health(&live_user(2, Some(written(phase, 2))));
        assert_eq!(health, expected, "{phase:?}: {message}");
        assert_eq!(message, format!("{0}: what {0} means", phase.as_str()), "{phase:?}: the condition's message");

        // A status for an older spec says nothing about the current one, whatever it says.
        let (health, message) = argo_health(&live_user(3, Some(written(phase, 2))));
        assert_eq!(
            (health.as_str(), message.as_str()),
            ("Progressing", "Waiting for the operator to observe generation 3"),
            "{phase:?}, status of generation 2"
        );
    }
}

/// kstatus's order when conditions disagree, which the operator does not write today: a Ready
/// status with `Reconciling` or `Stalled` also True.
#[test]
fn argo_cd_health_reads_the_conditions_in_kstatus_order() {
    let ready_and = |type_: &str| {
        let mut status = written(Phase::Ready, 2);
        status.conditions.iter_mut().filter(|c| c.type_ == type_).for_each(|c| c.status = "True".into());
        argo_health(&live_user(2, Some(status))).0
    };
    assert_eq!(ready_and(status::RECONCILING), "Progressing");
    assert_eq!(ready_and(status::STALLED), "Degraded");
}

#[test]
fn argo_cd_health_waits_for_the_operators_first_status() {
    let waiting = ("Progressing".to_string(), "Waiting for the operator".to_string());
    assert_eq!(argo_health(&live_user(1, None)), waiting, "no status");
    // The gateway's field alone: the operator has not been here yet.
    let activity_only = MoltmateUserStatus { last_activity: Some("2025-03-01T10:00:00Z".into()), ..Default::default() };
    assert_eq!(argo_health(&live_user(1, Some(activity_only))), waiting, "lastActivity only");
}

#[test]
fn the_argocd_cm_patch_is_the_script_under_the_kinds_key() {
    let [patch] = documents(ARGOCD_CM).try_into().unwrap_or_else(|d: Vec<Value>| panic!("{ARGOCD_CM}: {d:?}"));
    assert_eq!((&patch["apiVersion"], &patch["kind"]), (&json!("v1"), &json!("ConfigMap")));
    assert_eq!((&patch["metadata"]["name"], &patch["metadata"]["namespace"]), (&json!("argocd-cm"), &json!("argocd")));
    // Argo CD's key for a health check: resource.customizations.health.<group>_<kind>.
    let key = format!("resource.customizations.health.{}_{}", MoltmateUser::group(&()), MoltmateUser::kind(&()));
    let data = patch["data"].as_object().expect("data");
    assert_eq!(data.keys().collect::<Vec<_>>(), [&key], "{ARGOCD_CM}: one key");
    assert_eq!(data[&key].as_str(), Some(read(HEALTH_LUA).as_str()), "{ARGOCD_CM} embeds {HEALTH_LUA} verbatim");
}

// ------------------------------------------------------------------------------------------
// The chart, installed by Flux or Argo CD
// ------------------------------------------------------------------------------------------

fn chart_field(key: &str) -> String {
    let chart: Value = serde_saphyr::from_str(&read(&format!("{CHART_DIR}/Chart.yaml"))).unwrap();
    chart[key].as_str().unwrap_or_else(|| panic!("Chart.yaml: {key}")).to_string()
}

fn find<'a>(docs: &'a [Value], api_version: &str, kind: &str, file: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["apiVersion"] == api_version && d["kind"] == kind)
        .unwrap_or_else(|| panic!("{file}: no {api_version} {kind}"))
}

/// `helm template` of the chart with exactly these values, as Flux or Argo CD would render it.
fn render(values: &Value, namespace: &str, extra: &[&str]) -> Vec<Value> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gitops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = tempfile::Builder::new().suffix(".yaml").tempfile_in(&dir).unwrap();
    std::fs::write(file.path(), values.to_string()).unwrap();
    let chart = Path::new(REPO).join(CHART_DIR);
    let mut args = vec!["template", "moltmates", chart.to_str().unwrap(), "--namespace", namespace, "-f"];
    args.push(file.path().to_str().unwrap());
    args.extend_from_slice(extra);
    serde_saphyr::from_multiple::<Value>(&helm_ok(&args)).unwrap()
}

/// The labels the chart gives the namespace it creates (`createNamespace`): Pod Security's.
fn chart_namespace_labels(values: &Value) -> BTreeMap<String, Value> {
    let rendered = render(values, "moltmate-system", &["--set", "createNamespace=true"]);
    let namespace = find(&rendered, "v1", "Namespace", "the chart");
    let labels = namespace["metadata"]["labels"].as_object().unwrap();
    let psa: BTreeMap<_, _> = labels
        .iter()
        .filter(|(k, _)| k.starts_with("pod-security.kubernetes.io/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert!(psa.contains_key("pod-security.kubernetes.io/enforce"), "{labels:?}");
    psa
}

/// What both examples' values must be: the chart renders with them alone, nothing secret is
/// in them, and the bot token and API key come from the Secret `moltmates`.
fn check_values(values: &Value, namespace: &str, file: &str) -> Vec<Value> {
    assert!(values["masterKey"].is_null(), "{file}: the operator makes the master key; set none");
    assert!(values["telegram"]["botToken"].is_null() && values["llm"]["apiKey"].is_null(), "{file}: secrets in git");
    let image = values["image"]["repository"].as_str().expect("image.repository");
    assert!(image.starts_with("<your-registry>/"), "{file}: image.repository {image}: a placeholder, no real registry");

    let rendered = render(values, namespace, &[]);
    assert!(
        !rendered.iter().any(|d| d["kind"] == "Namespace"),
        "{file}: the namespace is the example's, not the chart's"
    );
    let mut token_sources = 0;
    for deployment in rendered.iter().filter(|d| d["kind"] == "Deployment") {
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["image"], format!("{image}:{}", chart_field("appVersion")), "{file}");
        let sources = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|v| v["projected"]["sources"].as_array().cloned().unwrap_or_default());
        for source in sources {
            let key = &source["secret"]["items"][0]["key"];
            if key == "bot-token" || key == "llm-api-key" {
                token_sources += 1;
                assert_eq!(source["secret"]["name"], SECRET, "{file}: {key} of {}", deployment["metadata"]["name"]);
            }
        }
    }
    assert!(token_sources >= 2, "{file}: the gateway reads bot-token and llm-api-key");
    rendered
}

#[test]
fn flux_installs_the_chart_from_oci_and_upgrades_its_crd() {
    let docs = documents(FLUX_CHART);
    let namespace = find(&docs, "v1", "Namespace", FLUX_CHART);
    let source = find(&docs, "source.toolkit.fluxcd.io/v1", "OCIRepository", FLUX_CHART);
    let release = find(&docs, "helm.toolkit.fluxcd.io/v2", "HelmRelease", FLUX_CHART);
    assert_eq!(docs.len(), 3, "{FLUX_CHART}: {docs:?}");

    let url = source["spec"]["url"].as_str().expect("OCIRepository spec.url");
    assert!(url.starts_with("oci://<your-registry>/"), "{url}: a placeholder, no real registry");
    assert_eq!(url.rsplit('/').next(), Some(chart_field("name").as_str()), "{url}: the chart's name");
    assert_eq!(source["spec"]["ref"]["tag"], chart_field("version"), "the chart's version");
    assert_eq!(source["spec"]["layerSelector"]["mediaType"], "application/vnd.cncf.helm.chart.content.v1.tar+gzip");
    assert_eq!(release["spec"]["chartRef"], json!({ "kind": "OCIRepository", "name": source["metadata"]["name"] }));
    assert_eq!(
        release["metadata"]["namespace"], source["metadata"]["namespace"],
        "a chartRef without namespace is in its own"
    );
    assert!(
        source["spec"]["interval"].is_string() && release["spec"]["interval"].is_string(),
        "Flux requires spec.interval"
    );

    // Helm installs crds/ once and never again; Flux replaces the CRD at each upgrade.
    assert_eq!(release["spec"]["install"]["crds"], "CreateReplace");
    assert_eq!(release["spec"]["upgrade"]["crds"], "CreateReplace");

    let ns = namespace["metadata"]["name"].as_str().unwrap();
    assert_eq!(release["spec"]["targetNamespace"], ns);
    assert_eq!(release["spec"]["storageNamespace"], ns);
    assert_eq!(
        namespace["metadata"]["annotations"]["kustomize.toolkit.fluxcd.io/prune"], "disabled",
        "it keeps the master key"
    );

    let values = &release["spec"]["values"];
    check_values(values, ns, FLUX_CHART);
    let labels: BTreeMap<String, Value> = serde_json::from_value(namespace["metadata"]["labels"].clone()).unwrap();
    assert_eq!(labels, chart_namespace_labels(values), "{FLUX_CHART}: the namespace's labels are the chart's own");
}

#[test]
fn argo_cd_installs_the_chart_from_its_folder_in_git() {
    let docs = documents(ARGOCD_CHART);
    let [app] = docs.as_slice() else { panic!("{ARGOCD_CHART}: one document") };
    assert_eq!((&app["apiVersion"], &app["kind"]), (&json!("argoproj.io/v1alpha1"), &json!("Application")));
    let source = &app["spec"]["source"];
    let path = source["path"].as_str().expect("spec.source.path");
    assert_eq!(path, CHART_DIR, "the chart's folder");
    assert_eq!(path.rsplit('/').next(), Some(chart_field("name").as_str()));
    assert!(source["repoURL"].is_string() && source["targetRevision"].is_string());
    assert!(app["spec"]["destination"]["server"].is_string(), "Argo CD requires a destination");

    let sync = &app["spec"]["syncPolicy"];
    let options: Vec<&str> = sync["syncOptions"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
    assert!(options.contains(&"CreateNamespace=true") && options.contains(&"ServerSideApply=true"), "{options:?}");
    assert_eq!(sync["automated"]["prune"], true);

    let ns = app["spec"]["destination"]["namespace"].as_str().expect("destination.namespace");
    let values = &source["helm"]["valuesObject"];
    // Argo CD renders with --include-crds: the CRD is applied, and upgraded, with each sync.
    let rendered = check_values(values, ns, ARGOCD_CHART);
    let with_crds = render(values, ns, &["--include-crds"]);
    assert!(with_crds.iter().any(|d| d["kind"] == "CustomResourceDefinition"), "the CRD is part of the sync");
    assert_eq!(with_crds.len(), rendered.len() + 1);

    // Argo CD renders on every refresh and has no `lookup`: whatever differs between two
    // renders (a generated secret) is drift it would sync forever.
    assert_eq!(render(values, ns, &[]), rendered, "two renders differ");

    let labels: BTreeMap<String, Value> =
        serde_json::from_value(sync["managedNamespaceMetadata"]["labels"].clone()).expect("managedNamespaceMetadata");
    assert_eq!(labels, chart_namespace_labels(values), "{ARGOCD_CHART}: the namespace's labels are the chart's own");

    // The two ways install the same thing.
    let flux = documents(FLUX_CHART);
    let release = find(&flux, "helm.toolkit.fluxcd.io/v2", "HelmRelease", FLUX_CHART);
    assert_eq!(values, &release["spec"]["values"], "the same values in both examples");
    assert_eq!(source["helm"]["releaseName"], release["spec"]["releaseName"]);
    assert_eq!(ns, release["spec"]["targetNamespace"]);
}
