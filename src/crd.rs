//! The `MoltmateUser` custom resource: one object per allowlisted person.
//!
//! Everything the API server can check is in the schema (enums, minimums,
//! patterns, and CEL rules for what those cannot say: the name, zero quantities, a
//! Telegram id that must not change), so a bad value is refused at `kubectl apply` time
//! with a message naming the field. Whatever only the cluster can tell (a Telegram id
//! that another user holds) is checked by the operator and reported in `status`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Kubernetes quantity without sign or exponent, e.g. `500m`, `2`, `512Mi`, `10Gi`.
pub const QUANTITY_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$";
/// A bare program name: no directory part, no spaces, no leading dot or dash.
pub const PROGRAM_NAME_PATTERN: &str = r"^[A-Za-z0-9_+][A-Za-z0-9._+-]{0,63}$";
/// A lowercase DNS name (subdomains of it are allowed too).
pub const HOSTNAME_PATTERN: &str = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$";
/// A Go-style duration such as `30m`, `1h30m` or `90s`; empty means never.
pub const DURATION_PATTERN: &str = r"^(([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)?$";

/// One allowlisted person and the sandbox their agent runs in.
///
/// The operator gives each MoltmateUser its own namespace `moltmate-<name>` holding the
/// agent pod, its workspace volume, a NetworkPolicy that denies egress, a ResourceQuota and
/// a LimitRange. Fields left out take their value from the chosen `profile`.
// Several `printcolumn`s repeat `type_ = "string"`, which clippy takes for a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "moltmate.io",
    version = "v1alpha1",
    kind = "MoltmateUser",
    plural = "moltmateusers",
    shortname = "mmu",
    status = "MoltmateUserStatus",
    doc = "One allowlisted Telegram user and the isolated sandbox their AI agent runs in.",
    category = "moltmates",
    selectable = ".spec.telegram.userId",
    printcolumn(name = "Profile", type_ = "string", json_path = ".spec.profile"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        description = "Why the user is where it is (the Ready condition's reason)"
    ),
    printcolumn(name = "Telegram ID", type_ = "integer", json_path = ".spec.telegram.userId", priority = "1"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // The user's namespace is `moltmate-<name>`, and a namespace name is a DNS label of at
    // most 63 characters.
    validation = Rule::new("self.metadata.name.size() <= 54")
        .message("metadata.name must be at most 54 characters: it names the user's namespace moltmate-<name>"),
    validation = Rule::new("self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("metadata.name must be lowercase letters, digits and '-' (no dots): it names the user's namespace moltmate-<name>")
)]
#[serde(rename_all = "camelCase")]
pub struct MoltmateUserSpec {
    /// The person's Telegram identity. Messages from this user id are routed to this agent.
    pub telegram: TelegramIdentity,

    /// A human-readable name, shown in logs and in the agent's greeting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub display_name: Option<String>,

    /// Trust level preset (see the README's profiles table): personal, family, public or
    /// high-security. Every other field of the spec overrides its preset value.
    #[serde(default)]
    pub profile: Profile,

    /// The agent's container sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<SandboxSpec>,

    /// What the agent's exec tool may run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecSpec>,

    /// Web access, always brokered by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web: Option<WebSpec>,

    /// Compute and storage limits of the user's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,

    /// Pause the agent: its pod is removed, its workspace and settings are kept.
    #[serde(default)]
    pub suspend: bool,

    /// Remove the agent pod after this long without messages (e.g. `30m`, `2h`); the next
    /// message starts it again. Empty or absent means never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: Option<String>,

    /// What happens to the workspace when this MoltmateUser is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceSpec>,

    /// Bump to wipe the workspace (files, memory, conversation history); also from GitOps.
    /// The operator deletes the agent pod and the workspace volume and makes a new, empty
    /// volume; `status.resetGeneration` follows once it exists. `moltmate users reset NAME`
    /// adds one. It cannot go down.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self >= oldSelf",
        "message": "spec.resetGeneration cannot go down: the workspace was reset for the higher value already; to reset again, set a higher one",
    }]))]
    pub reset_generation: i64,

    /// The person's time zone (IANA name, e.g. `Europe/Berlin`) for reminders given as a
    /// local time; UTC when absent. The person's own choice (`/timezone` in the chat, kept in
    /// `status.reminders.timezone`) wins over this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: Option<String>,

    /// The language models this person's agent may use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmSpec>,
}

/// A model name as the provider spells it (`gpt-4o-mini`, `llama3.1:8b`, `openai/gpt-4o`):
/// printable, without spaces.
pub const MODEL_NAME_PATTERN: &str = r"^[!-~]{1,128}$";

/// The language models a person's agent may use; the broker enforces it.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmSpec {
    /// The models the person may pick with `/model`, as the provider names them; the broker
    /// refuses any other. Their default is the installation's default model (the chart's
    /// `llm.defaultModel`) when it is on the list, else the list's first. Absent: the
    /// profile's list (the chart's `profiles.<profile>.llm.models`), else the installation's
    /// (`llm.models`), else the installation's default model alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    #[schemars(inner(regex(pattern = MODEL_NAME_PATTERN)))]
    pub models: Option<Vec<String>>,
}

fn is_zero(value: &i64) -> bool {
    *value == 0
}

impl MoltmateUserSpec {
    /// The smallest valid spec: a Telegram id and a profile, everything else from the preset.
    pub fn new(telegram_user_id: i64, profile: Profile) -> Self {
        Self {
            telegram: TelegramIdentity { user_id: telegram_user_id },
            display_name: None,
            profile,
            sandbox: None,
            exec: None,
            web: None,
            resources: None,
            suspend: false,
            idle_timeout: None,
            workspace: None,
            reset_generation: 0,
            timezone: None,
            llm: None,
        }
    }
}

/// The person's Telegram identity.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelegramIdentity {
    /// Numeric Telegram user id (the sender's id; the bot's /whoami command tells it).
    /// It cannot change: it decides whose messages reach this agent, its memory and files.
    #[schemars(range(min = 1))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.telegram.userId cannot change: it decides whose messages reach this agent, its memory and its files. To give them to another Telegram account, delete this MoltmateUser and create it again with the new id",
    }]))]
    pub user_id: i64,
}

/// Trust-level presets.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    // Just you: full tools and network.
    Personal,
    // Family and friends: allowlisted tools, brokered web access to a few domains.
    Family,
    // Strangers: minimal tools, no network.
    #[default]
    Public,
    // Read-only tools, read-only workspace, no network, tight limits.
    HighSecurity,
}

impl Profile {
    pub const ALL: [Profile; 4] = [Profile::Personal, Profile::Family, Profile::Public, Profile::HighSecurity];

    /// The name as in the spec: `public`, `high-security`.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Personal => "personal",
            Profile::Family => "family",
            Profile::Public => "public",
            Profile::HighSecurity => "high-security",
        }
    }
}

/// The agent's container sandbox.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SandboxSpec {
    /// Agent container image; defaults to the operator's configured sandbox image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Network access: `none` (gateway broker only, no DNS), `limited` (broker only, web
    /// fetch through it) or `full` (public internet, never private ranges or cloud metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,

    /// Workspace mount: `rw` (read-write) or `ro` (read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_access: Option<WorkspaceAccess>,
}

/// Network access of the agent pod.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    None,
    Limited,
    Full,
}

/// Workspace mount mode.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkspaceAccess {
    Rw,
    Ro,
}

/// What the agent's exec tool may run (never through a shell).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecSpec {
    /// `allowlist` (only safeBins), `blocklist` (anything but dangerous programs) or `full`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<ExecSecurity>,

    /// Programs the agent may run under `allowlist`: bare names such as `cat` or `grep`,
    /// looked up only in /usr/bin and /bin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), inner(regex(pattern = PROGRAM_NAME_PATTERN)))]
    pub safe_bins: Option<Vec<String>>,
}

/// Exec security levels.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExecSecurity {
    Allowlist,
    Blocklist,
    Full,
}

/// Web access, brokered by the gateway.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSpec {
    /// The web_fetch tool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<WebFetchSpec>,
}

/// The web_fetch tool.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebFetchSpec {
    /// Whether the agent may fetch web pages (through the gateway's broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,

    /// Domains the agent may fetch from; each also allows its subdomains
    /// (`wikipedia.org` allows `en.wikipedia.org`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256), inner(regex(pattern = HOSTNAME_PATTERN)))]
    pub allowed_domains: Option<Vec<String>>,
}

/// Compute and storage limits.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// CPU limit of the agent, e.g. `500m` or `2` (a string or a whole number).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::quantity::int_or_string::deserialize"
    )]
    #[schemars(schema_with = "crate::quantity::int_or_string_schema")]
    pub cpu: Option<String>,

    /// Memory limit of the agent, e.g. `512Mi` or `2Gi`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::quantity::int_or_string::deserialize"
    )]
    #[schemars(schema_with = "crate::quantity::int_or_string_schema")]
    pub memory: Option<String>,

    /// Size of the workspace volume, e.g. `1Gi`. It can grow later, never shrink.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::quantity::int_or_string::deserialize"
    )]
    #[schemars(schema_with = "crate::quantity::int_or_string_schema")]
    pub storage: Option<String>,
}

/// The workspace volume's fate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceSpec {
    /// `Retain` (default) keeps the namespace and workspace volume when the user is deleted,
    /// for a later MoltmateUser of the same name to adopt; `Delete` removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// What deleting a MoltmateUser does to their data.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// What the operator observed and did.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MoltmateUserStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Pending, Provisioning, Ready, Idle, Suspended or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The namespace holding this user's sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// Standard conditions; `Ready` tells whether the agent is serving, and if not, why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,

    /// The `spec.resetGeneration` the workspace volume was made for: it was new and empty
    /// then. Absent until the first reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_generation: Option<i64>,

    /// When the person last sent a message (RFC 3339), written by the gateway (at most once
    /// a minute); the operator suspends an idle agent from it and wakes it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<String>,

    /// The person's pending reminders and time zone choice, written by the gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reminders: Option<ReminderBook>,

    /// The model the person chose with `/model`, written by the gateway. The broker uses it
    /// while it is one of the person's models (`spec.llm.models` and the defaults behind it),
    /// else their default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = MODEL_NAME_PATTERN))]
    pub model: Option<String>,
}

/// A person's reminders, kept by the gateway (the only writer), so they outlive restarts of
/// the gateway and of the agent, and an idle agent whose pod is gone.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReminderBook {
    /// The time zone the person chose with `/timezone`; it wins over `spec.timezone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub timezone: Option<String>,

    /// The number the next reminder gets.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub next_id: u64,

    /// Reminders not yet delivered (a repeating one stays, with its next time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub pending: Vec<Reminder>,
}

/// One reminder.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reminder {
    /// Its number, as `/reminders` shows it.
    #[schemars(range(min = 1))]
    pub id: u64,
    /// What the person is reminded of.
    #[schemars(length(max = 1000))]
    pub text: String,
    /// When it is next due (RFC 3339, UTC).
    #[schemars(length(max = 64))]
    pub due: String,
    /// `daily`, `weekly` or `every <duration>`; absent: once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub repeat: Option<String>,
    /// The time zone it was set in: a daily one keeps its local time across DST changes.
    #[schemars(length(max = 64))]
    pub timezone: String,
}

/// Lifecycle phase of a MoltmateUser.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    Pending,
    Provisioning,
    Ready,
    /// No messages for `idleTimeout`: the pod is gone until the next message.
    Idle,
    Suspended,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Pending, Phase::Provisioning, Phase::Ready, Phase::Idle, Phase::Suspended, Phase::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Provisioning => "Provisioning",
            Phase::Ready => "Ready",
            Phase::Idle => "Idle",
            Phase::Suspended => "Suspended",
            Phase::Failed => "Failed",
        }
    }
}

/// The CRD as YAML, exactly as committed at `crds/moltmateuser.yaml`.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let mut crd = serde_json::to_value(MoltmateUser::crd()).expect("a CRD always serializes");
    drop_nulls(&mut crd);
    let body = serde_saphyr::to_string(&crd).expect("a CRD always serializes");
    format!("# Generated by `moltmate crd`; do not edit.\n---\n{body}")
}

/// Optional fields come out of schemars as `nullable: true` (and enums with a `null`
/// member). An optional field is simply left out, never written as null; and `nullable`
/// makes API servers publish the field without a type, so `kubectl explain` shows nothing
/// below it and older kubectl validation rejects the null enum member.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("nullable");
            if let Some(serde_json::Value::Array(members)) = map.get_mut("enum") {
                members.retain(|m| !m.is_null());
            }
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_names_are_the_spec_names() {
        for profile in Profile::ALL {
            assert_eq!(serde_json::to_value(profile).unwrap(), profile.as_str());
        }
    }
}
