//! Trust-level presets and their resolution against a user's explicit spec.
//!
//! The trust levels (personal, family, public, high-security) as data. `resolve` is the one place that
//! decides what a user may do; the operator, the agent and the gateway all read its output.

mod defaults;
pub mod models;

use std::time::Duration;

pub use defaults::{Defaults, DefaultsError, LlmDefaults, MediaDefaults, ProfileDefaults, ReminderDefaults};
use serde::{Deserialize, Serialize};

use crate::crd::{DeletionPolicy, ExecSecurity, MoltmateUserSpec, NetworkMode, Profile, WorkspaceAccess};

/// Read-only inspection tools: none of them writes files, runs other programs or talks to
/// the network. (`sed` and `awk` are left out on purpose: GNU sed's `e` command and awk's
/// `system()` run shell commands.)
const READ_ONLY_BINS: &[&str] = &["cat", "head", "tail", "grep", "wc", "ls"];
const FAMILY_BINS: &[&str] = &["cat", "head", "tail", "grep", "wc", "ls", "sort", "uniq", "cut", "tr", "pdftotext"];
const FAMILY_DOMAINS: &[&str] = &["wikipedia.org", "docs.python.org"];

/// Everything a user's sandbox is, after the preset and the overrides are combined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedProfile {
    pub profile: Profile,
    pub exec_security: ExecSecurity,
    pub safe_bins: Vec<String>,
    pub network: NetworkMode,
    pub workspace_access: WorkspaceAccess,
    pub web_fetch: WebFetchPolicy,
    pub cpu: String,
    pub memory: String,
    pub storage: String,
    /// `None`: the image the operator is configured with.
    pub image: Option<String>,
    /// `None`: never idle out. Operator-only, like `deletion_policy`: kept out of the
    /// agent's environment so that changing them does not replace the pod.
    #[serde(skip)]
    pub idle_timeout: Option<Duration>,
    #[serde(skip)]
    pub deletion_policy: DeletionPolicy,
    /// Broker-only, like the two above.
    #[serde(skip)]
    pub llm: LlmLimits,
    /// The models the person may use (the spec's, else the profile's); `None`: the
    /// installation's. Broker-only.
    #[serde(skip)]
    pub models: Option<Vec<String>>,
    /// Whether the profile lets photos reach the model (`None`: as the installation says).
    /// Gateway-only.
    #[serde(skip)]
    pub photos: Option<bool>,
    /// The profile's reminder limits where it sets them. Gateway-only.
    #[serde(skip)]
    pub reminders: ReminderLimits,
}

/// Reminder limits a profile sets; `None`: the gateway's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReminderLimits {
    pub max_pending: Option<usize>,
    pub min_repeat: Option<Duration>,
    pub per_day: Option<u64>,
}

/// The most reminders one person may have waiting (what `status.reminders` holds).
pub const MAX_PENDING_REMINDERS: usize = 100;
/// The shortest repeat a profile may allow: each repeat is a message.
pub const SHORTEST_REPEAT: Duration = Duration::from_secs(300);

fn reminder_limits(defaults: Option<&ReminderDefaults>) -> Result<ReminderLimits, ProfileError> {
    let Some(d) = defaults else { return Ok(ReminderLimits::default()) };
    let bad = |message: String| Err(ProfileError::Reminders(message));
    let max_pending = match d.max_pending {
        Some(n) if n == 0 || n as usize > MAX_PENDING_REMINDERS => {
            return bad(format!("maxPending {n} must be 1 to {MAX_PENDING_REMINDERS}"));
        }
        n => n.map(|n| n as usize),
    };
    let min_repeat = match d.min_repeat.as_deref() {
        None => None,
        Some(text) => match crate::duration::parse(text) {
            Ok(d) if d >= SHORTEST_REPEAT => Some(d),
            Ok(_) => return bad(format!("minRepeat {text:?} must be at least 5m")),
            Err(e) => return bad(format!("minRepeat {e}")),
        },
    };
    if d.per_day == Some(0) {
        return bad("perDay must be at least 1".into());
    }
    Ok(ReminderLimits { max_pending, min_repeat, per_day: d.per_day })
}

/// What the broker lets one user spend on the LLM provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LlmLimits {
    pub requests_per_minute: u32,
    /// Prompt plus completion tokens, as the provider reports them, per UTC day.
    pub tokens_per_day: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebFetchPolicy {
    pub enabled: bool,
    /// `None`: any public domain (the `personal` preset); otherwise these domains and their
    /// subdomains only. An empty list allows nothing.
    pub allowed_domains: Option<Vec<String>>,
}

/// A preset row of the trust-level table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preset {
    pub exec_security: ExecSecurity,
    pub safe_bins: Vec<String>,
    pub network: NetworkMode,
    pub workspace_access: WorkspaceAccess,
    pub web_fetch: WebFetchPolicy,
    pub cpu: &'static str,
    pub memory: &'static str,
    pub storage: &'static str,
    pub llm: LlmLimits,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The preset for a profile.
pub fn preset(profile: Profile) -> Preset {
    match profile {
        Profile::Personal => Preset {
            exec_security: ExecSecurity::Full,
            safe_bins: vec![],
            network: NetworkMode::Full,
            workspace_access: WorkspaceAccess::Rw,
            web_fetch: WebFetchPolicy { enabled: true, allowed_domains: None },
            cpu: "2",
            memory: "2Gi",
            storage: "10Gi",
            llm: LlmLimits { requests_per_minute: 60, tokens_per_day: 2_000_000 },
        },
        Profile::Family => Preset {
            exec_security: ExecSecurity::Allowlist,
            safe_bins: strings(FAMILY_BINS),
            network: NetworkMode::Limited,
            workspace_access: WorkspaceAccess::Rw,
            web_fetch: WebFetchPolicy { enabled: true, allowed_domains: Some(strings(FAMILY_DOMAINS)) },
            cpu: "1",
            memory: "1Gi",
            storage: "5Gi",
            llm: LlmLimits { requests_per_minute: 20, tokens_per_day: 500_000 },
        },
        Profile::Public => Preset {
            exec_security: ExecSecurity::Allowlist,
            safe_bins: strings(READ_ONLY_BINS),
            network: NetworkMode::None,
            workspace_access: WorkspaceAccess::Rw,
            web_fetch: WebFetchPolicy { enabled: false, allowed_domains: Some(vec![]) },
            cpu: "500m",
            memory: "512Mi",
            storage: "1Gi",
            llm: LlmLimits { requests_per_minute: 10, tokens_per_day: 100_000 },
        },
        // Public's sandbox with a read-only workspace and half the resources.
        Profile::HighSecurity => Preset {
            workspace_access: WorkspaceAccess::Ro,
            cpu: "250m",
            memory: "256Mi",
            storage: "512Mi",
            ..preset(Profile::Public)
        },
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error("spec.idleTimeout {0}")]
    IdleTimeout(crate::duration::DurationError),
    #[error("spec.resources.{field} {value:?} must be greater than zero")]
    ZeroQuantity { field: &'static str, value: String },
    #[error("spec.llm.models {0}")]
    Models(String),
    #[error("reminders.{0}")]
    Reminders(String),
}

/// Combine the preset of `spec.profile` with every field the spec sets explicitly.
pub fn resolve(spec: &MoltmateUserSpec) -> Result<ResolvedProfile, ProfileError> {
    resolve_with(spec, &ProfileDefaults::default())
}

/// As [`resolve`], with the installation's per-profile defaults between preset and spec.
pub fn resolve_with(spec: &MoltmateUserSpec, defaults: &ProfileDefaults) -> Result<ResolvedProfile, ProfileError> {
    let own = defaults.get(spec.profile);
    let spec = &defaults.fill(spec);
    let mut p = preset(spec.profile);
    if let Some(llm) = own.and_then(|d| d.llm.as_ref()) {
        p.llm.requests_per_minute = llm.requests_per_minute.unwrap_or(p.llm.requests_per_minute);
        p.llm.tokens_per_day = llm.tokens_per_day.unwrap_or(p.llm.tokens_per_day);
    }
    let sandbox = spec.sandbox.clone().unwrap_or_default();
    let exec = spec.exec.clone().unwrap_or_default();
    let fetch = spec.web.as_ref().and_then(|w| w.fetch.clone()).unwrap_or_default();
    let resources = spec.resources.clone().unwrap_or_default();

    let quantity = |field: &'static str, value: Option<String>, default: &str| -> Result<String, ProfileError> {
        let value = value.unwrap_or_else(|| default.to_string());
        match crate::quantity::Quantity::parse(&value) {
            Ok(q) if q.millis() > 0 => Ok(value),
            _ => Err(ProfileError::ZeroQuantity { field, value }),
        }
    };
    let models = spec
        .llm
        .as_ref()
        .and_then(|l| l.models.clone())
        .or_else(|| own.and_then(|d| d.llm.as_ref()).and_then(|l| l.models.clone()));
    if let Some(list) = &models {
        models::check(list).map_err(ProfileError::Models)?;
    }
    let idle_timeout = match spec.idle_timeout.as_deref() {
        None | Some("") => None,
        Some(text) => Some(crate::duration::parse(text).map_err(ProfileError::IdleTimeout)?).filter(|d| !d.is_zero()),
    };

    Ok(ResolvedProfile {
        profile: spec.profile,
        exec_security: exec.security.unwrap_or(p.exec_security),
        safe_bins: exec.safe_bins.unwrap_or(p.safe_bins),
        network: sandbox.network.unwrap_or(p.network),
        workspace_access: sandbox.workspace_access.unwrap_or(p.workspace_access),
        web_fetch: WebFetchPolicy {
            enabled: fetch.enabled.unwrap_or(p.web_fetch.enabled),
            allowed_domains: match fetch.allowed_domains {
                Some(domains) => Some(domains),
                None => p.web_fetch.allowed_domains,
            },
        },
        cpu: quantity("cpu", resources.cpu, p.cpu)?,
        memory: quantity("memory", resources.memory, p.memory)?,
        storage: quantity("storage", resources.storage, p.storage)?,
        image: sandbox.image,
        idle_timeout,
        deletion_policy: spec.workspace.as_ref().map(|w| w.deletion_policy).unwrap_or_default(),
        llm: p.llm,
        models,
        photos: own.and_then(|d| d.media).and_then(|m| m.photos),
        reminders: reminder_limits(own.and_then(|d| d.reminders.as_ref()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ExecSpec, ResourcesSpec, SandboxSpec, WebFetchSpec, WebSpec, WorkspaceSpec};

    fn spec(profile: Profile) -> MoltmateUserSpec {
        MoltmateUserSpec::new(42, profile)
    }

    #[test]
    fn presets_follow_the_trust_level_table() {
        // (profile, exec, network, fetch enabled, workspace, cpu, memory, storage)
        let table = [
            (Profile::Personal, ExecSecurity::Full, NetworkMode::Full, true, WorkspaceAccess::Rw, "2", "2Gi", "10Gi"),
            (
                Profile::Family,
                ExecSecurity::Allowlist,
                NetworkMode::Limited,
                true,
                WorkspaceAccess::Rw,
                "1",
                "1Gi",
                "5Gi",
            ),
            (
                Profile::Public,
                ExecSecurity::Allowlist,
                NetworkMode::None,
                false,
                WorkspaceAccess::Rw,
                "500m",
                "512Mi",
                "1Gi",
            ),
            (
                Profile::HighSecurity,
                ExecSecurity::Allowlist,
                NetworkMode::None,
                false,
                WorkspaceAccess::Ro,
                "250m",
                "256Mi",
                "512Mi",
            ),
        ];
        for (profile, exec, network, fetch, access, cpu, memory, storage) in table {
            let r = resolve(&spec(profile)).unwrap();
            assert_eq!(
                (
                    r.exec_security,
                    r.network,
                    r.web_fetch.enabled,
                    r.workspace_access,
                    r.cpu.as_str(),
                    r.memory.as_str(),
                    r.storage.as_str()
                ),
                (exec, network, fetch, access, cpu, memory, storage),
                "{profile:?}"
            );
            assert_eq!(r.deletion_policy, DeletionPolicy::Retain);
            assert_eq!(r.idle_timeout, None);
        }
    }

    #[test]
    fn llm_limits_tighten_with_trust() {
        let limits = |p| resolve(&spec(p)).unwrap().llm;
        assert_eq!(limits(Profile::Personal), LlmLimits { requests_per_minute: 60, tokens_per_day: 2_000_000 });
        assert_eq!(limits(Profile::Family), LlmLimits { requests_per_minute: 20, tokens_per_day: 500_000 });
        assert_eq!(limits(Profile::Public), LlmLimits { requests_per_minute: 10, tokens_per_day: 100_000 });
        assert_eq!(limits(Profile::HighSecurity), limits(Profile::Public));
    }

    #[test]
    fn high_security_tools_are_read_only() {
        let r = resolve(&spec(Profile::HighSecurity)).unwrap();
        for bin in &r.safe_bins {
            assert!(READ_ONLY_BINS.contains(&bin.as_str()), "{bin} is not read-only");
        }
        assert_eq!(r.workspace_access, WorkspaceAccess::Ro);
    }

    #[test]
    fn no_preset_allowlists_a_program_that_runs_programs() {
        for profile in [Profile::Family, Profile::Public, Profile::HighSecurity] {
            let bins = preset(profile).safe_bins;
            for dangerous in ["sh", "bash", "python3", "env", "xargs", "awk", "sed", "curl", "rm", "find"] {
                assert!(!bins.iter().any(|b| b == dangerous), "{profile:?} allows {dangerous}");
            }
        }
    }

    #[test]
    fn every_explicit_field_overrides_its_preset() {
        let mut s = spec(Profile::HighSecurity);
        s.sandbox = Some(SandboxSpec {
            image: Some("example/agent:1".into()),
            network: Some(NetworkMode::Limited),
            workspace_access: Some(WorkspaceAccess::Rw),
        });
        s.exec = Some(ExecSpec { security: Some(ExecSecurity::Blocklist), safe_bins: Some(vec!["jq".into()]) });
        s.web = Some(WebSpec {
            fetch: Some(WebFetchSpec { enabled: Some(true), allowed_domains: Some(vec!["example.org".into()]) }),
        });
        s.resources =
            Some(ResourcesSpec { cpu: Some("3".into()), memory: Some("3Gi".into()), storage: Some("30Gi".into()) });
        s.idle_timeout = Some("1h30m".into());
        s.workspace = Some(WorkspaceSpec { deletion_policy: DeletionPolicy::Delete });
        let r = resolve(&s).unwrap();
        assert_eq!(r.image.as_deref(), Some("example/agent:1"));
        assert_eq!(r.network, NetworkMode::Limited);
        assert_eq!(r.workspace_access, WorkspaceAccess::Rw);
        assert_eq!(r.exec_security, ExecSecurity::Blocklist);
        assert_eq!(r.safe_bins, vec!["jq".to_string()]);
        assert_eq!(r.web_fetch, WebFetchPolicy { enabled: true, allowed_domains: Some(vec!["example.org".into()]) });
        assert_eq!((r.cpu.as_str(), r.memory.as_str(), r.storage.as_str()), ("3", "3Gi", "30Gi"));
        assert_eq!(r.idle_timeout, Some(Duration::from_secs(90 * 60)));
        assert_eq!(r.deletion_policy, DeletionPolicy::Delete);
    }

    #[test]
    fn partial_overrides_keep_the_rest_of_the_preset() {
        let mut s = spec(Profile::Family);
        s.exec = Some(ExecSpec { security: None, safe_bins: Some(vec!["cat".into()]) });
        s.web = Some(WebSpec { fetch: Some(WebFetchSpec { enabled: Some(false), allowed_domains: None }) });
        let r = resolve(&s).unwrap();
        assert_eq!(r.exec_security, ExecSecurity::Allowlist);
        assert_eq!(r.safe_bins, vec!["cat".to_string()]);
        assert!(!r.web_fetch.enabled);
        assert_eq!(r.web_fetch.allowed_domains, Some(strings(FAMILY_DOMAINS)));
    }

    #[test]
    fn bad_values_the_schema_lets_through_are_errors() {
        let mut s = spec(Profile::Public);
        s.idle_timeout = Some("5x".into());
        assert_eq!(resolve(&s), Err(ProfileError::IdleTimeout(crate::duration::DurationError::Invalid("5x".into()))));
        s.idle_timeout = Some("".into());
        assert_eq!(resolve(&s).unwrap().idle_timeout, None);
        s.resources = Some(ResourcesSpec { cpu: Some("0".into()), ..Default::default() });
        assert!(matches!(resolve(&s), Err(ProfileError::ZeroQuantity { field: "cpu", .. })));
    }
}
