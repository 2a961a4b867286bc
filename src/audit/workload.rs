//! How the operator and the gateway are configured, read from their Deployments (pure).
//!
//! A setting comes from a `--flag` in the container's command line, else from the
//! environment variable clap also reads; a file setting (`--master-key-file`) is traced
//! through the container's volume mounts to the Secret, ConfigMap or other volume behind it.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, EnvVarSource, KeyToPath, PodSpec, Volume};
use kube::ResourceExt;

use super::finding::object;
use crate::names;

/// One of our components as deployed.
#[derive(Debug, Clone, Copy)]
pub struct Component<'a> {
    /// `operator` or `gateway`.
    pub role: &'static str,
    pub deployment: &'a Deployment,
    pub pod: &'a PodSpec,
    pub container: &'a Container,
}

impl<'a> Component<'a> {
    /// The Deployment labelled `app.kubernetes.io/name=moltmate-<role>` (as the chart labels
    /// them), and in it the container running `moltmate <role>` (else the first container).
    pub fn find(deployments: &'a [Deployment], role: &'static str) -> Option<Self> {
        let wanted = format!("moltmate-{role}");
        let deployment = deployments
            .iter()
            .find(|d| d.labels().get(names::LABEL_NAME) == Some(&wanted))
            .or_else(|| deployments.iter().find(|d| d.name_any() == wanted))?;
        let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
        let container = pod
            .containers
            .iter()
            .find(|c| argv(c).into_iter().find(|a| !a.starts_with('-')).is_some_and(|a| a == role))
            .or_else(|| pod.containers.first())?;
        Some(Self { role, deployment, pod, container })
    }

    /// `Deployment namespace/name`.
    pub fn object(&self) -> String {
        object("Deployment", self.deployment.namespace().as_deref(), &self.deployment.name_any())
    }

    pub fn namespace(&self) -> String {
        self.deployment.namespace().unwrap_or_default()
    }

    pub fn setting(&self, flag: &str, env: &str) -> Option<Setting<'a>> {
        setting(self.container, flag, env)
    }

    /// A setting's literal value (flag or plain env), if it has one.
    pub fn value(&self, flag: &str, env: &str) -> Option<String> {
        match self.setting(flag, env)? {
            Setting::Arg(v) => Some(v),
            Setting::Env { value, .. } => Some(value.to_string()),
            Setting::EnvFrom { .. } => None,
        }
    }

    /// The labels of the Deployment's pods.
    pub fn pod_labels(&self) -> std::collections::BTreeMap<String, String> {
        let template = self.deployment.spec.as_ref().map(|s| &s.template);
        template.and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default()
    }
}

/// Where a setting's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting<'a> {
    /// `--flag=value` or `--flag value` on the command line (wins over the environment).
    Arg(String),
    /// A literal `value` of an environment variable.
    Env { name: &'a str, value: &'a str },
    /// `valueFrom` of an environment variable.
    EnvFrom { name: &'a str, source: &'a EnvVarSource },
}

/// The container's command line: `command` then `args`.
pub fn argv(container: &Container) -> Vec<&str> {
    container.command.iter().flatten().chain(container.args.iter().flatten()).map(String::as_str).collect()
}

/// The value of `--flag` (last one wins), else of env var `env`.
pub fn setting<'a>(container: &'a Container, flag: &str, env: &str) -> Option<Setting<'a>> {
    let argv = argv(container);
    let long = format!("--{flag}");
    let mut found = None;
    for (i, arg) in argv.iter().enumerate() {
        if let Some(value) = arg.strip_prefix(&long).and_then(|rest| rest.strip_prefix('=')) {
            found = Some(value.to_string());
        } else if *arg == long
            && let Some(next) = argv.get(i + 1).filter(|n| !n.starts_with("--"))
        {
            found = Some(next.to_string());
        }
    }
    match found {
        Some(value) => Some(Setting::Arg(value)),
        None => env_setting(container, env),
    }
}

/// The value of env var `env` alone (settings that have no flag).
pub fn env_setting<'a>(container: &'a Container, env: &str) -> Option<Setting<'a>> {
    let var = container.env.iter().flatten().rev().find(|e| e.name == env)?;
    match (&var.value, &var.value_from) {
        (_, Some(source)) => Some(Setting::EnvFrom { name: &var.name, source }),
        // An empty variable counts as unset, as clap reads it.
        (Some(value), None) if !value.is_empty() => Some(Setting::Env { name: &var.name, value }),
        _ => None,
    }
}

/// What a path in the container is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// A key of a Secret (a `secret` or `projected` volume).
    Secret { name: String, key: String },
    /// A key of a ConfigMap.
    ConfigMap { name: String, key: String },
    /// A volume of another kind (`emptyDir`, `hostPath`, ...), or a projection that is neither.
    Volume { volume: String, kind: &'static str },
    /// A volume that has no file at that path (its `items` leave it out).
    Absent { volume: String },
    /// No volume is mounted there: the file would come from the image.
    Image,
}

/// Trace `path` through the container's mounts to what provides it.
pub fn file_source(pod: &PodSpec, container: &Container, path: &str) -> FileSource {
    let mount = container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let root = m.mount_path.trim_end_matches('/');
            let sub = m.sub_path.as_deref().filter(|s| !s.is_empty());
            // A subPath mount places one file (or directory) of the volume at mountPath.
            let inner = if path == root {
                sub.map(str::to_string)
            } else {
                let rest = path.strip_prefix(root)?.strip_prefix('/')?;
                Some(match sub {
                    Some(sub) => format!("{}/{rest}", sub.trim_end_matches('/')),
                    None => rest.to_string(),
                })
            }?;
            Some((root.len(), m, inner))
        })
        .max_by_key(|(depth, _, _)| *depth);
    let Some((_, mount, inner)) = mount else { return FileSource::Image };
    let Some(volume) = pod.volumes.iter().flatten().find(|v| v.name == mount.name) else {
        return FileSource::Absent { volume: mount.name.clone() };
    };
    volume_file(volume, &inner)
}

/// The key that `items` map to `inner`, or `inner` itself when there are no items.
fn key_for(items: Option<&Vec<KeyToPath>>, inner: &str) -> Option<String> {
    match items.filter(|i| !i.is_empty()) {
        None => Some(inner.to_string()),
        Some(items) => items.iter().find(|i| i.path.trim_start_matches("./") == inner).map(|i| i.key.clone()),
    }
}

fn volume_file(volume: &Volume, inner: &str) -> FileSource {
    let absent = || FileSource::Absent { volume: volume.name.clone() };
    if let Some(secret) = &volume.secret {
        return match key_for(secret.items.as_ref(), inner) {
            Some(key) => FileSource::Secret { name: secret.secret_name.clone().unwrap_or_default(), key },
            None => absent(),
        };
    }
    if let Some(cm) = &volume.config_map {
        return match key_for(cm.items.as_ref(), inner) {
            Some(key) => FileSource::ConfigMap { name: cm.name.clone(), key },
            None => absent(),
        };
    }
    if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if let Some(s) = &source.secret
                && let Some(key) =
                    s.items.as_ref().filter(|i| !i.is_empty()).and_then(|_| key_for(s.items.as_ref(), inner))
            {
                return FileSource::Secret { name: s.name.clone(), key };
            }
            if let Some(c) = &source.config_map
                && let Some(key) =
                    c.items.as_ref().filter(|i| !i.is_empty()).and_then(|_| key_for(c.items.as_ref(), inner))
            {
                return FileSource::ConfigMap { name: c.name.clone(), key };
            }
            if source.service_account_token.as_ref().is_some_and(|t| t.path == inner) {
                return FileSource::Volume { volume: volume.name.clone(), kind: "service-account token" };
            }
        }
        // Sources without `items` project every key; the first such Secret or ConfigMap.
        for source in projected.sources.iter().flatten() {
            if let Some(s) = source.secret.as_ref().filter(|s| s.items.as_ref().is_none_or(|i| i.is_empty())) {
                return FileSource::Secret { name: s.name.clone(), key: inner.to_string() };
            }
            if let Some(c) = source.config_map.as_ref().filter(|c| c.items.as_ref().is_none_or(|i| i.is_empty())) {
                return FileSource::ConfigMap { name: c.name.clone(), key: inner.to_string() };
            }
        }
        return absent();
    }
    FileSource::Volume { volume: volume.name.clone(), kind: volume_kind(volume) }
}

fn volume_kind(volume: &Volume) -> &'static str {
    if volume.empty_dir.is_some() {
        "emptyDir"
    } else if volume.host_path.is_some() {
        "hostPath"
    } else if volume.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if volume.downward_api.is_some() {
        "downwardAPI"
    } else if volume.csi.is_some() {
        "csi"
    } else {
        "non-Secret"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> PodSpec {
        serde_json::from_value(json!({
            "containers": [{
                "name": "gateway",
                "args": ["gateway", "--bot-token-file=/etc/moltmate/secrets/bot-token", "--telegram-mode", "webhook",
                         "--profiles-file=/etc/moltmate/profiles/profiles.yaml", "--x-file=/etc/moltmate/cfg/x", "--y-file=/data/y",
                         "--z-file=/etc/moltmate/secrets/nope", "--w-file=/etc/moltmate/whole/key"],
                "env": [
                    {"name": "MOLTMATE_LLM_API_KEY", "value": "sk-literal"},
                    {"name": "MOLTMATE_MASTER_KEY", "valueFrom": {"secretKeyRef": {"name": "mk", "key": "master-key"}}},
                    {"name": "EMPTY", "value": ""},
                ],
                "volumeMounts": [
                    {"name": "secrets", "mountPath": "/etc/moltmate/secrets"},
                    {"name": "profiles", "mountPath": "/etc/moltmate/profiles/"},
                    {"name": "cfg", "mountPath": "/etc/moltmate/cfg"},
                    {"name": "data", "mountPath": "/data"},
                    {"name": "whole", "mountPath": "/etc/moltmate/whole"},
                ],
            }],
            "volumes": [
                {"name": "secrets", "projected": {"sources": [
                    {"secret": {"name": "tg", "items": [{"key": "token", "path": "bot-token"}]}},
                    {"secret": {"name": "llm", "items": [{"key": "llm-api-key", "path": "llm-api-key"}]}},
                ]}},
                {"name": "profiles", "configMap": {"name": "moltmate-profiles"}},
                {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "a", "path": "x"}]}},
                {"name": "data", "emptyDir": {}},
                {"name": "whole", "secret": {"secretName": "all"}},
            ],
        }))
        .unwrap()
    }

    #[test]
    fn settings_come_from_flags_then_env() {
        let p = pod();
        let c = &p.containers[0];
        assert_eq!(setting(c, "telegram-mode", "MOLTMATE_TELEGRAM_MODE"), Some(Setting::Arg("webhook".into())));
        assert_eq!(setting(c, "bot-token-file", "X"), Some(Setting::Arg("/etc/moltmate/secrets/bot-token".into())));
        assert_eq!(
            setting(c, "nope", "MOLTMATE_LLM_API_KEY"),
            Some(Setting::Env { name: "MOLTMATE_LLM_API_KEY", value: "sk-literal" })
        );
        assert!(matches!(setting(c, "nope", "MOLTMATE_MASTER_KEY"), Some(Setting::EnvFrom { .. })));
        assert_eq!(setting(c, "nope", "EMPTY"), None);
        assert_eq!(setting(c, "bot-token", "NONE"), None, "a prefix of another flag is not the flag");
    }

    #[test]
    fn files_are_traced_to_what_provides_them() {
        let p = pod();
        let c = &p.containers[0];
        let table = [
            ("/etc/moltmate/secrets/bot-token", FileSource::Secret { name: "tg".into(), key: "token".into() }),
            ("/etc/moltmate/secrets/llm-api-key", FileSource::Secret { name: "llm".into(), key: "llm-api-key".into() }),
            ("/etc/moltmate/secrets/nope", FileSource::Absent { volume: "secrets".into() }),
            (
                "/etc/moltmate/profiles/profiles.yaml",
                FileSource::ConfigMap { name: "moltmate-profiles".into(), key: "profiles.yaml".into() },
            ),
            ("/etc/moltmate/cfg/x", FileSource::ConfigMap { name: "cfg".into(), key: "a".into() }),
            ("/etc/moltmate/cfg/y", FileSource::Absent { volume: "cfg".into() }),
            ("/data/y", FileSource::Volume { volume: "data".into(), kind: "emptyDir" }),
            ("/etc/moltmate/whole/key", FileSource::Secret { name: "all".into(), key: "key".into() }),
            ("/etc/master.key", FileSource::Image),
            ("/etc/moltmate/secretsX/a", FileSource::Image),
        ];
        for (path, want) in table {
            assert_eq!(file_source(&p, c, path), want, "{path}");
        }
    }

    #[test]
    fn sub_path_mounts_place_one_file() {
        let p: PodSpec = serde_json::from_value(json!({
            "containers": [{"name": "c", "volumeMounts": [{"name": "s", "mountPath": "/key", "subPath": "master-key"}]}],
            "volumes": [{"name": "s", "secret": {"secretName": "mk"}}],
        }))
        .unwrap();
        assert_eq!(
            file_source(&p, &p.containers[0], "/key"),
            FileSource::Secret { name: "mk".into(), key: "master-key".into() }
        );
    }
}
