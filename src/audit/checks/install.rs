//! The installation the other checks compare against: the operator's and the gateway's
//! Deployments, the operator's flags (what it builds sandboxes with) and its profile defaults.

use crate::audit::finding::{AuditConfig, Finding, object};
use crate::audit::snapshot::Snapshot;
use crate::audit::workload::{Component, FileSource};
use crate::builders::ClusterConfig;
use crate::profile::ProfileDefaults;

pub const CHECK: &str = "components";

pub struct Install<'a> {
    pub namespace: &'a str,
    pub operator: Option<Component<'a>>,
    pub gateway: Option<Component<'a>>,
    /// What the operator builds sandboxes with: its flags, else its defaults.
    pub cluster: ClusterConfig,
}

pub fn read<'a>(snap: &'a Snapshot, config: &'a AuditConfig, out: &mut Vec<Finding>) -> Install<'a> {
    let ns = config.namespace.as_str();
    let operator = Component::find(&snap.deployments, "operator");
    let gateway = Component::find(&snap.deployments, "gateway");
    for (role, found) in [("operator", operator.is_some()), ("gateway", gateway.is_some())] {
        let what = object("Deployment", Some(ns), &format!("moltmate-{role}"));
        if found {
            out.push(Finding::pass(CHECK, what, format!("the {role} is deployed here")));
        } else {
            out.push(Finding::warn(
                CHECK,
                what,
                format!("no Deployment labelled app.kubernetes.io/name=moltmate-{role} in namespace {ns}: the checks of its settings are skipped"),
                "pass the release namespace with --namespace",
            ));
        }
    }
    let mut cluster = ClusterConfig::default();
    if let Some(op) = &operator {
        operator_flags(op, &mut cluster, out);
    }
    cluster.profiles = match &config.profiles {
        Some((defaults, source)) => {
            out.push(Finding::pass(CHECK, "profile defaults", format!("from {source}")));
            defaults.clone()
        }
        None => operator.as_ref().map(|op| profiles_of(snap, op, out)).unwrap_or_default(),
    };
    Install { namespace: ns, operator, gateway, cluster }
}

/// The operator's flags that shape a sandbox (the rest of `OperatorArgs` does not).
fn operator_flags(op: &Component, cluster: &mut ClusterConfig, out: &mut Vec<Finding>) {
    let mut bad = Vec::new();
    if let Some(image) = op.value("sandbox-image", "MOLTMATE_SANDBOX_IMAGE") {
        cluster.default_image = image;
    }
    cluster.storage_class = op.value("storage-class", "MOLTMATE_STORAGE_CLASS");
    if let Some(ns) = op.value("gateway-namespace", "MOLTMATE_GATEWAY_NAMESPACE") {
        cluster.gateway_namespace = ns;
    }
    if let Some(service) = op.value("broker-service", "MOLTMATE_BROKER_SERVICE") {
        cluster.broker_service = service;
    }
    if let Some(text) = op.value("gateway-pod-labels", "MOLTMATE_GATEWAY_POD_LABELS") {
        match crate::operator::parse_labels(&text) {
            Ok(labels) => cluster.gateway_pod_labels = labels,
            Err(e) => bad.push(format!("--gateway-pod-labels: {e}")),
        }
    }
    if let Some(text) = op.value("agent-pod", "MOLTMATE_AGENT_POD") {
        match crate::builders::AgentPodSettings::parse(&text) {
            Ok(settings) => cluster.agent_pod = settings,
            Err(e) => bad.push(e),
        }
    }
    for (flag, env, field) in [
        ("broker-port", "MOLTMATE_BROKER_PORT", &mut cluster.broker_port),
        ("agent-port", "MOLTMATE_AGENT_PORT", &mut cluster.agent_port),
    ] {
        if let Some(text) = op.value(flag, env) {
            match text.parse() {
                Ok(port) => *field = port,
                Err(_) => bad.push(format!("--{flag} {text:?} is not a port")),
            }
        }
    }
    if !bad.is_empty() {
        out.push(Finding::warn(
            CHECK,
            op.object(),
            format!("cannot read the operator's flags ({}); its defaults are assumed", bad.join("; ")),
            "correct the flags in the Deployment (the operator itself refuses them too)",
        ));
    }
}

/// The operator's `--profiles-file`, read from the ConfigMap it is mounted from.
fn profiles_of(snap: &Snapshot, op: &Component, out: &mut Vec<Finding>) -> ProfileDefaults {
    let Some(path) = op.value("profiles-file", "MOLTMATE_PROFILES_FILE") else {
        out.push(Finding::pass(CHECK, op.object(), "no --profiles-file: the built-in presets"));
        return ProfileDefaults::default();
    };
    let mut unreadable = |why: String| {
        out.push(Finding::warn(
            CHECK,
            op.object(),
            format!("the operator's --profiles-file {path} {why}; the built-in presets are assumed, so the exec and guard-rail checks may differ from what it builds"),
            "pass the same file to the audit with --profiles-file",
        ));
        ProfileDefaults::default()
    };
    let (name, key) = match crate::audit::workload::file_source(op.pod, op.container, &path) {
        FileSource::ConfigMap { name, key } => (name, key),
        other => return unreadable(format!("comes from {other:?}, which the audit does not read")),
    };
    let ns = op.namespace();
    let Some(text) = snap.config_map(&ns, &name).and_then(|cm| cm.data.as_ref()?.get(&key).cloned()) else {
        return unreadable(format!("(ConfigMap {ns}/{name} key {key}) is missing"));
    };
    match ProfileDefaults::parse(&text) {
        Ok(defaults) => {
            out.push(Finding::pass(
                CHECK,
                object("ConfigMap", Some(&ns), &name),
                format!("the operator's profile defaults ({key})"),
            ));
            defaults
        }
        Err(e) => unreadable(format!("(ConfigMap {ns}/{name}) does not parse: {e}")),
    }
}
