//! Per-profile defaults an administrator sets for the whole installation (the Helm chart's
//! `profiles:` value, passed to the operator and the gateway as `--profiles-file`).
//!
//! They sit between a preset and a user's spec: a field the user's spec sets wins, then the
//! installation's default for that profile, then the built-in preset.
//!
//! ```yaml
//! family:
//!   exec: { safeBins: [cat, ls, pdftotext] }
//!   web: { fetch: { allowedDomains: [wikipedia.org, example.org] } }
//!   resources: { memory: 2Gi }
//!   idleTimeout: 30m
//!   llm: { requestsPerMinute: 30, tokensPerDay: 1000000, models: [gpt-4o-mini, gpt-4o] }
//!   media: { photos: false }
//!   reminders: { maxPending: 50, minRepeat: 30m, perDay: 200 }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::crd::{ExecSpec, MoltmateUserSpec, Profile, ResourcesSpec, SandboxSpec, WebSpec};

/// The installation's defaults for one profile; every field optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Defaults {
    pub sandbox: Option<SandboxSpec>,
    pub exec: Option<ExecSpec>,
    pub web: Option<WebSpec>,
    pub resources: Option<ResourcesSpec>,
    pub idle_timeout: Option<String>,
    pub llm: Option<LlmDefaults>,
    pub media: Option<MediaDefaults>,
    pub reminders: Option<ReminderDefaults>,
}

/// How many reminders the profile's people may keep and set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReminderDefaults {
    /// Reminders waiting at once (at most 100).
    pub max_pending: Option<u32>,
    /// The shortest interval of a repeating reminder (e.g. `1h`; at least 5m).
    pub min_repeat: Option<String>,
    /// New reminders per UTC day.
    pub per_day: Option<u64>,
}

/// What the profile's people may send besides text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaDefaults {
    /// Photos go to the model as image input; `false` refuses them for this profile even when
    /// the installation takes photos (`--photos`), `true` cannot turn them on without it.
    pub photos: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmDefaults {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_day: Option<u64>,
    /// The models the profile's people may pick with `/model` (a spec's `llm.models` wins).
    pub models: Option<Vec<String>>,
}

/// Defaults by profile. Empty: the built-in presets as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileDefaults {
    by_profile: BTreeMap<Profile, Defaults>,
}

#[derive(Debug, thiserror::Error)]
pub enum DefaultsError {
    #[error("reading profile defaults {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("profile defaults {path}: {message}")]
    Invalid { path: String, message: String },
}

impl ProfileDefaults {
    pub fn new(by_profile: BTreeMap<Profile, Defaults>) -> Self {
        Self { by_profile }
    }

    pub fn get(&self, profile: Profile) -> Option<&Defaults> {
        self.by_profile.get(&profile)
    }

    /// Parse the YAML form. Unknown keys are errors: a misspelt `safebins` silently ignored
    /// would leave a profile looser than its administrator meant.
    pub fn parse(yaml: &str) -> Result<Self, String> {
        let value: serde_json::Value = if yaml.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_saphyr::from_str(yaml).map_err(|e| e.to_string())?
        };
        if value.is_null() {
            return Ok(Self::default());
        }
        let mut unknown = Vec::new();
        let by_profile: BTreeMap<Profile, Defaults> =
            serde_ignored::deserialize(value, |path| unknown.push(path.to_string().replace(".?", "")))
                .map_err(|e| e.to_string())?;
        if !unknown.is_empty() {
            return Err(format!("unknown field(s): {}", unknown.join(", ")));
        }
        let parsed = Self { by_profile };
        // Check every profile resolves, so a bad default fails at start, not per user.
        for profile in parsed.by_profile.keys() {
            super::resolve_with(&MoltmateUserSpec::new(1, *profile), &parsed)
                .map_err(|e| format!("{}: {}", profile_name(*profile), e.to_string().replace("spec.", "")))?;
        }
        Ok(parsed)
    }

    /// From `path`, or the built-in presets when no file is configured.
    pub fn load(path: Option<&Path>) -> Result<Self, DefaultsError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| DefaultsError::Read { path: shown.clone(), source })?;
        Self::parse(&text).map_err(|message| DefaultsError::Invalid { path: shown, message })
    }

    /// `spec` with every field it leaves unset taken from its profile's defaults.
    pub fn fill(&self, spec: &MoltmateUserSpec) -> MoltmateUserSpec {
        let Some(d) = self.get(spec.profile) else { return spec.clone() };
        let mut out = spec.clone();
        if let Some(ds) = &d.sandbox {
            let s = out.sandbox.get_or_insert_with(Default::default);
            s.image = s.image.take().or_else(|| ds.image.clone());
            s.network = s.network.or(ds.network);
            s.workspace_access = s.workspace_access.or(ds.workspace_access);
        }
        if let Some(de) = &d.exec {
            let e = out.exec.get_or_insert_with(Default::default);
            e.security = e.security.or(de.security);
            e.safe_bins = e.safe_bins.take().or_else(|| de.safe_bins.clone());
        }
        if let Some(dfetch) = d.web.as_ref().and_then(|w| w.fetch.as_ref()) {
            let f = out.web.get_or_insert_with(Default::default).fetch.get_or_insert_with(Default::default);
            f.enabled = f.enabled.or(dfetch.enabled);
            f.allowed_domains = f.allowed_domains.take().or_else(|| dfetch.allowed_domains.clone());
        }
        if let Some(dr) = &d.resources {
            let r = out.resources.get_or_insert_with(Default::default);
            r.cpu = r.cpu.take().or_else(|| dr.cpu.clone());
            r.memory = r.memory.take().or_else(|| dr.memory.clone());
            r.storage = r.storage.take().or_else(|| dr.storage.clone());
        }
        out.idle_timeout = out.idle_timeout.take().or_else(|| d.idle_timeout.clone());
        out
    }
}

fn profile_name(profile: Profile) -> String {
    serde_json::to_value(profile).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExecSecurity, ExecSpec};
    use crate::profile::{resolve, resolve_with};

    #[test]
    fn empty_means_the_presets() {
        for text in ["", "{}", "# nothing\n"] {
            let d = ProfileDefaults::parse(text).unwrap();
            let spec = MoltmateUserSpec::new(1, Profile::Family);
            assert_eq!(resolve_with(&spec, &d), resolve(&spec));
        }
    }

    #[test]
    fn a_default_sits_between_the_preset_and_the_spec() {
        let d = ProfileDefaults::parse(
            "family:\n  exec: { safeBins: [cat, ls] }\n  resources: { memory: 2Gi }\n  idleTimeout: 30m\n  llm: { requestsPerMinute: 99 }\n",
        )
        .unwrap();
        let plain = resolve_with(&MoltmateUserSpec::new(1, Profile::Family), &d).unwrap();
        assert_eq!(plain.safe_bins, ["cat", "ls"]);
        assert_eq!(plain.memory, "2Gi");
        assert_eq!(plain.cpu, "1", "untouched fields keep the preset");
        assert_eq!(plain.idle_timeout, Some(std::time::Duration::from_secs(1800)));
        assert_eq!(plain.llm.requests_per_minute, 99);
        assert_eq!(plain.llm.tokens_per_day, 500_000, "the preset's budget stays");

        let mut spec = MoltmateUserSpec::new(1, Profile::Family);
        spec.exec = Some(ExecSpec { security: Some(ExecSecurity::Full), safe_bins: Some(vec!["wc".into()]) });
        spec.idle_timeout = Some("0".into());
        let own = resolve_with(&spec, &d).unwrap();
        assert_eq!((own.exec_security, own.safe_bins.as_slice()), (ExecSecurity::Full, ["wc".to_string()].as_slice()));
        assert_eq!(own.idle_timeout, None, "the user's explicit 0 (never) wins over the default");

        assert_eq!(plain.models, None, "no list: the installation's");
        assert_eq!(plain.photos, None, "photos as the installation says");
        assert_eq!(plain.reminders, crate::profile::ReminderLimits::default(), "the gateway's reminder limits");
        let reminders =
            ProfileDefaults::parse("family:\n  reminders: { maxPending: 3, minRepeat: 30m, perDay: 7 }\n").unwrap();
        let limits = resolve_with(&MoltmateUserSpec::new(1, Profile::Family), &reminders).unwrap().reminders;
        assert_eq!(
            (limits.max_pending, limits.min_repeat, limits.per_day),
            (Some(3), Some(std::time::Duration::from_secs(1800)), Some(7))
        );
        let no_photos = ProfileDefaults::parse("family:\n  media: { photos: false }\n").unwrap();
        assert_eq!(resolve_with(&MoltmateUserSpec::new(1, Profile::Family), &no_photos).unwrap().photos, Some(false));
        let listed = ProfileDefaults::parse("family:\n  llm: { models: [gpt-small, gpt-big] }\n").unwrap();
        let mut own = MoltmateUserSpec::new(1, Profile::Family);
        assert_eq!(resolve_with(&own, &listed).unwrap().models.unwrap(), ["gpt-small", "gpt-big"]);
        own.llm = Some(crate::crd::LlmSpec { models: Some(vec!["gpt-mini".into()]) });
        assert_eq!(resolve_with(&own, &listed).unwrap().models.unwrap(), ["gpt-mini"], "the spec's list wins");

        let other = resolve_with(&MoltmateUserSpec::new(1, Profile::Public), &d).unwrap();
        assert_eq!(other, resolve(&MoltmateUserSpec::new(1, Profile::Public)).unwrap(), "other profiles untouched");
    }

    #[test]
    fn mistakes_are_named() {
        let typo = ProfileDefaults::parse("family:\n  exec: { safebins: [cat] }\n").unwrap_err();
        assert!(typo.contains("family.exec.safebins"), "{typo}");
        let profile = ProfileDefaults::parse("friends: {}\n").unwrap_err();
        assert!(profile.contains("friends"), "{profile}");
        let value = ProfileDefaults::parse("public:\n  resources: { cpu: \"0\" }\n").unwrap_err();
        assert!(value.contains("public") && value.contains("cpu"), "{value}");
        let zero = ProfileDefaults::parse("public:\n  resources: { cpu: 0 }\n").unwrap_err();
        assert!(zero.contains("public") && zero.contains("cpu"), "{zero}");
        // Unquoted whole numbers, as Kubernetes takes them.
        let whole = ProfileDefaults::parse("public:\n  resources: { cpu: 2, memory: 1Gi }\n").unwrap();
        assert_eq!(whole.get(Profile::Public).unwrap().resources.as_ref().unwrap().cpu.as_deref(), Some("2"));
        let duration = ProfileDefaults::parse("public:\n  idleTimeout: soon\n").unwrap_err();
        assert!(duration.contains("idleTimeout"), "{duration}");
        let models = ProfileDefaults::parse("family:\n  llm: { models: [] }\n").unwrap_err();
        assert!(models.contains("family") && models.contains("llm.models"), "{models}");
        let model = ProfileDefaults::parse("family:\n  llm: { models: [\"two words\"] }\n").unwrap_err();
        assert!(model.contains("two words"), "{model}");
        for (bad, named) in [
            ("{ maxPending: 0 }", "reminders.maxPending"),
            ("{ maxPending: 101 }", "reminders.maxPending"),
            ("{ minRepeat: 1m }", "reminders.minRepeat"),
            ("{ minRepeat: often }", "reminders.minRepeat"),
            ("{ perDay: 0 }", "reminders.perDay"),
        ] {
            let err = ProfileDefaults::parse(&format!("family:\n  reminders: {bad}\n")).unwrap_err();
            assert!(err.contains("family") && err.contains(named), "{bad}: {err}");
        }
        let missing = ProfileDefaults::load(Some(Path::new("/nonexistent/profiles.yaml"))).unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/profiles.yaml"), "{missing}");
    }
}
