//! Keys and tokens come from Secrets, never from literal values in a Deployment; the master
//! key is long enough; webhook mode has a secret token.

use std::collections::{BTreeMap, BTreeSet};

use super::install::Install;
use crate::audit::finding::{Finding, object};
use crate::audit::snapshot::Snapshot;
use crate::audit::workload::{Component, FileSource, Setting, argv, env_setting, file_source};
use crate::token::{MIN_MASTER_KEY_BYTES, SECRET_DATA_KEY};

pub const SOURCE: &str = "secret-source";
pub const MASTER_KEY: &str = "master-key";
pub const WEBHOOK_SECRET: &str = "webhook-secret";

/// Shorter than this, Telegram's secret token is guessable (Telegram allows 1-256 characters;
/// the chart generates 64).
const MIN_WEBHOOK_SECRET: usize = 16;

/// A secret setting of our binaries: a file flag, its env var, and the env var for the value.
#[derive(Debug, Clone, Copy)]
pub struct SecretSetting {
    pub label: &'static str,
    pub flag: &'static str,
    pub file_env: &'static str,
    pub value_env: &'static str,
    /// A flag and its env var naming a Secret the binary reads through the API instead.
    pub secret_flag: Option<(&'static str, &'static str)>,
}

pub const BOT_TOKEN: SecretSetting = SecretSetting {
    label: "bot token",
    flag: "bot-token-file",
    file_env: "MOLTMATE_BOT_TOKEN_FILE",
    value_env: "MOLTMATE_BOT_TOKEN",
    secret_flag: None,
};
pub const LLM_KEY: SecretSetting = SecretSetting {
    label: "LLM API key",
    flag: "llm-api-key-file",
    file_env: "MOLTMATE_LLM_API_KEY_FILE",
    value_env: "MOLTMATE_LLM_API_KEY",
    secret_flag: None,
};
pub const MASTER: SecretSetting = SecretSetting {
    label: "master key",
    flag: "master-key-file",
    file_env: "MOLTMATE_MASTER_KEY_FILE",
    value_env: "MOLTMATE_MASTER_KEY",
    // The operator generates the key into this Secret (in its own namespace) when missing.
    secret_flag: Some(("master-key-secret", "MOLTMATE_MASTER_KEY_SECRET")),
};
pub const WEBHOOK: SecretSetting = SecretSetting {
    label: "webhook secret token",
    flag: "webhook-secret-file",
    file_env: "MOLTMATE_WEBHOOK_SECRET_FILE",
    value_env: "MOLTMATE_WEBHOOK_SECRET",
    secret_flag: None,
};

/// Where a component gets a secret from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Secret {
        name: String,
        key: String,
    },
    /// A literal env value: its variable and length (never the value).
    Literal {
        var: String,
        len: usize,
    },
    /// From something that is not a Secret; says what.
    NotSecret(String),
    /// Cannot tell; says why.
    Unknown(String),
    Missing,
}

/// The file flag (or its env var) wins over the value's env var, as in the binaries.
pub fn source(c: &Component, s: &SecretSetting) -> Source {
    if let Some((flag, env)) = s.secret_flag {
        match c.setting(flag, env) {
            Some(Setting::Arg(name)) => return Source::Secret { name, key: SECRET_DATA_KEY.into() },
            Some(Setting::Env { value, .. }) => {
                return Source::Secret { name: value.to_string(), key: SECRET_DATA_KEY.into() };
            }
            Some(Setting::EnvFrom { name, .. }) => {
                return Source::Unknown(format!("the Secret's name comes from env {name} (valueFrom)"));
            }
            None => {}
        }
    }
    match c.setting(s.flag, s.file_env) {
        Some(Setting::Arg(path)) => from_file(c, &path),
        Some(Setting::Env { value, .. }) => from_file(c, value),
        Some(Setting::EnvFrom { name, .. }) => {
            Source::Unknown(format!("the file's path comes from env {name} (valueFrom)"))
        }
        None => match env_setting(c.container, s.value_env) {
            Some(Setting::Env { name, value }) => Source::Literal { var: name.to_string(), len: value.trim().len() },
            Some(Setting::EnvFrom { name, source }) => {
                if let Some(r) = &source.secret_key_ref {
                    Source::Secret { name: r.name.clone(), key: r.key.clone() }
                } else if let Some(r) = &source.config_map_key_ref {
                    Source::NotSecret(format!("env {name} comes from ConfigMap {}", r.name))
                } else {
                    Source::Unknown(format!("env {name} comes from a field or resource reference"))
                }
            }
            _ => Source::Missing,
        },
    }
}

fn from_file(c: &Component, path: &str) -> Source {
    match file_source(c.pod, c.container, path) {
        FileSource::Secret { name, key } => Source::Secret { name, key },
        FileSource::ConfigMap { name, .. } => Source::NotSecret(format!("the file {path} comes from ConfigMap {name}")),
        FileSource::Volume { volume, kind } => {
            Source::NotSecret(format!("the file {path} is on the {kind} volume {volume}"))
        }
        FileSource::Image => {
            Source::NotSecret(format!("no volume is mounted at {path}, so the file would be part of the image"))
        }
        FileSource::Absent { volume } => Source::Unknown(format!("volume {volume} has no file at {path}")),
    }
}

pub fn webhook_mode(gateway: &Component) -> bool {
    gateway.value("telegram-mode", "MOLTMATE_TELEGRAM_MODE").is_some_and(|m| m == "webhook")
}

/// The length of the secret a source names, if the audit can see it.
fn length(snap: &Snapshot, ns: &str, source: &Source) -> Option<usize> {
    match source {
        Source::Secret { name, key } => snap.secret(ns, name)?.lengths.get(key).copied(),
        Source::Literal { len, .. } => Some(*len),
        _ => None,
    }
}

/// Whether the gateway's webhook is protected by a secret token of a sane length.
pub fn webhook_token(snap: &Snapshot, gateway: &Component) -> Result<usize, String> {
    let source = source(gateway, &WEBHOOK);
    match length(snap, &gateway.namespace(), &source) {
        Some(0) | None => Err(match source {
            Source::Missing => "no secret token is configured (--webhook-secret-file)".into(),
            Source::Secret { name, key } => format!("the secret token (Secret {name} key {key}) is missing or empty"),
            Source::NotSecret(why) | Source::Unknown(why) => format!("the secret token cannot be checked: {why}"),
            Source::Literal { var, .. } => format!("the secret token in env {var} is empty"),
        }),
        Some(len) => Ok(len),
    }
}

fn settings_of(component: &Component) -> Vec<SecretSetting> {
    match component.role {
        "gateway" if webhook_mode(component) => vec![BOT_TOKEN, LLM_KEY, MASTER, WEBHOOK],
        "gateway" => vec![BOT_TOKEN, LLM_KEY, MASTER],
        _ => vec![MASTER],
    }
}

pub fn check(snap: &Snapshot, install: &Install, out: &mut Vec<Finding>) {
    let components: Vec<Component> = [install.operator, install.gateway].into_iter().flatten().collect();
    for c in &components {
        let ns = c.namespace();
        let mut reported = BTreeSet::new();
        for s in settings_of(c) {
            let source = source(c, &s);
            if let Source::Literal { var, .. } = &source {
                reported.insert(var.clone());
            }
            out.push(source_finding(snap, c, &ns, &s, &source));
        }
        out.extend(literal_lookalikes(c, &reported));
    }
    master_keys(snap, &components, out);
    if let Some(gateway) = install.gateway.filter(webhook_mode) {
        out.push(match webhook_token(snap, &gateway) {
            Err(why) => Finding::fail(
                WEBHOOK_SECRET,
                gateway.object(),
                format!("webhook mode, but {why}: anyone who learns the webhook URL can post forged updates in any user's name"),
                "set telegram.webhook.secretToken (or leave it empty: the chart generates one) and upgrade",
            ),
            Ok(len) if len < MIN_WEBHOOK_SECRET => Finding::warn(
                WEBHOOK_SECRET,
                gateway.object(),
                format!("the webhook secret token is {len} characters; {MIN_WEBHOOK_SECRET} or more resist guessing"),
                "use a random token, e.g. `openssl rand -hex 32` (letters, digits, _ and - only)",
            ),
            Ok(len) => Finding::pass(WEBHOOK_SECRET, gateway.object(), format!("secret token set ({len} characters)")),
        });
    }
}

fn source_finding(snap: &Snapshot, c: &Component, ns: &str, s: &SecretSetting, source: &Source) -> Finding {
    let role = c.role;
    let move_fix = format!(
        "put it in a Secret in {ns} and mount it (the chart does: secrets.existingSecret), pointing --{} at the file; remove the literal",
        s.flag
    );
    match source {
        Source::Secret { name, key } => match snap.secret(ns, name) {
            None => Finding::warn(
                SOURCE,
                c.object(),
                format!("the {} comes from Secret {ns}/{name}, which does not exist: the {role} cannot start", s.label),
                format!("create it: kubectl create secret generic {name} -n {ns} --from-literal={key}=..."),
            ),
            Some(secret) if !secret.lengths.contains_key(key) => Finding::warn(
                SOURCE,
                c.object(),
                format!(
                    "the {} comes from Secret {ns}/{name}, which has no key {key}: the {role} cannot start",
                    s.label
                ),
                format!("add the key {key} to Secret {ns}/{name}"),
            ),
            Some(_) => Finding::pass(SOURCE, c.object(), format!("{} from Secret {ns}/{name} (key {key})", s.label)),
        },
        Source::Literal { var, .. } => Finding::fail(
            SOURCE,
            c.object(),
            format!(
                "the {} is a literal value of env {var}: anyone who can read the Deployment (or its ReplicaSets) sees it, and it ends up in git with the manifests",
                s.label
            ),
            move_fix,
        ),
        Source::NotSecret(why) => {
            Finding::fail(SOURCE, c.object(), format!("the {}: {why}, not from a Secret", s.label), move_fix)
        }
        Source::Unknown(why) => Finding::warn(
            SOURCE,
            c.object(),
            format!("cannot tell where the {} comes from: {why}", s.label),
            format!("mount a Secret and point --{} at the file in it", s.flag),
        ),
        Source::Missing => Finding::warn(
            SOURCE,
            c.object(),
            format!("no {} configured (--{} or env {}): the {role} will not start", s.label, s.flag, s.value_env),
            format!("mount a Secret and point --{} at the file in it", s.flag),
        ),
    }
}

/// A name that says it holds a secret, unless it only names where one is.
fn looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase().replace('-', "_");
    ["KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL"].iter().any(|w| upper.contains(w))
        && !["_FILE", "_PATH", "_DIR", "_URL", "_REF", "_NAME"].iter().any(|s| upper.ends_with(s))
}

/// Literal env values and `--flag=value` arguments whose names look like secrets.
fn literal_lookalikes(c: &Component, reported: &BTreeSet<String>) -> Vec<Finding> {
    let fix = "move the value into a Secret and reference it (env valueFrom.secretKeyRef, or a mounted file)";
    let mut out = Vec::new();
    for var in c.container.env.iter().flatten() {
        let literal = var.value.as_ref().is_some_and(|v| !v.is_empty()) && var.value_from.is_none();
        if literal && looks_secret(&var.name) && !reported.contains(&var.name) {
            out.push(Finding::fail(
                SOURCE,
                c.object(),
                format!("env {} holds a literal value that looks like a secret", var.name),
                fix,
            ));
        }
    }
    for arg in argv(c.container) {
        if let Some((flag, value)) = arg.strip_prefix("--").and_then(|a| a.split_once('='))
            && looks_secret(flag)
            && !value.is_empty()
        {
            out.push(Finding::fail(
                SOURCE,
                c.object(),
                format!("argument --{flag} holds a literal value that looks like a secret"),
                fix,
            ));
        }
    }
    out
}

/// One row per master key in use (the operator and the gateway normally share one).
fn master_keys(snap: &Snapshot, components: &[Component], out: &mut Vec<Finding>) {
    // Row object -> (length, roles reading it); Secrets are the ones normally shared.
    let mut keys: BTreeMap<String, (Option<usize>, Vec<&str>)> = BTreeMap::new();
    let mut secret_keys = BTreeSet::new();
    for c in components {
        let ns = c.namespace();
        let source = source(c, &MASTER);
        let what = match &source {
            Source::Secret { name, key } => {
                secret_keys.insert(format!("{ns}/{name} key {key}"));
                format!("{} key {key}", object("Secret", Some(&ns), name))
            }
            Source::Literal { var, .. } => format!("{} env {var}", c.object()),
            _ => continue, // reported by secret-source
        };
        keys.entry(what).or_insert_with(|| (length(snap, &ns, &source), Vec::new())).1.push(c.role);
    }
    for (what, (len, roles)) in keys {
        let readers = roles.join(" and ");
        match len {
            Some(len) if len < MIN_MASTER_KEY_BYTES => out.push(Finding::fail(
                MASTER_KEY,
                what,
                format!(
                    "the master key ({readers}) is {len} bytes; at least {MIN_MASTER_KEY_BYTES} are needed: the programs refuse a shorter one, and it would make agent tokens guessable"
                ),
                "replace it with `openssl rand -hex 32`, then restart the operator and the gateway (the operator rewrites every agent's token)",
            )),
            Some(len) => out.push(Finding::pass(MASTER_KEY, what, format!("{len} bytes, read by the {readers}"))),
            None => {} // A missing Secret or key is reported by secret-source.
        }
    }
    if secret_keys.len() > 1 {
        let list: Vec<String> = secret_keys.into_iter().collect();
        out.push(Finding::warn(
            MASTER_KEY,
            "operator and gateway",
            format!(
                "they read different master keys ({}): the gateway would refuse every agent's token",
                list.join(", ")
            ),
            "point both at the same Secret key",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_that_keeps_its_key_in_a_secret_reads_that_secret() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::PodSpec;
        let pod: PodSpec = serde_json::from_value(serde_json::json!({"containers": [{
            "name": "operator",
            "args": ["operator", "--master-key-secret=moltmate-master-key"],
        }]}))
        .unwrap();
        let deployment = Deployment::default();
        let c = Component { role: "operator", deployment: &deployment, pod: &pod, container: &pod.containers[0] };
        assert_eq!(
            source(&c, &MASTER),
            Source::Secret { name: "moltmate-master-key".into(), key: SECRET_DATA_KEY.into() }
        );
        assert_eq!(source(&c, &BOT_TOKEN), Source::Missing, "only the master key has a Secret flag");
    }

    #[test]
    fn names_that_look_secret() {
        for name in [
            "MOLTMATE_LLM_API_KEY",
            "OPENAI_API_KEY",
            "BOT_TOKEN",
            "db-password",
            "webhook-secret",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "MOLTMATE_MASTER_KEY_FILE",
            "llm-api-key-file",
            "POD_NAME",
            "RUST_LOG",
            "MOLTMATE_LLM_BASE_URL",
            "telegram-mode",
        ] {
            assert!(!looks_secret(name), "{name}");
        }
    }
}
