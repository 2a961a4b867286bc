//! `moltmate gateway` flags. Secrets (bot token, LLM key, master key) come from files or the
//! environment, never from flag values, so they stay out of process listings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::secret::{Secret, SecretSource};

use super::webhook::{WebhookConfig, validate_path, validate_secret};

/// The gateway's secrets: each from the file its flag names, else from the variable.
pub const BOT_TOKEN: SecretSource =
    SecretSource { what: "bot token", flag: "bot-token-file", env: "MOLTMATE_BOT_TOKEN" };
pub const LLM_API_KEY: SecretSource =
    SecretSource { what: "LLM API key", flag: "llm-api-key-file", env: "MOLTMATE_LLM_API_KEY" };
pub const WEBHOOK_SECRET: SecretSource =
    SecretSource { what: "webhook secret", flag: "webhook-secret-file", env: "MOLTMATE_WEBHOOK_SECRET" };

#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Bot API base URL (a local stand-in in tests and the local stack).
    #[arg(long, env = "MOLTMATE_TELEGRAM_API_URL", default_value = teloxide::net::TELEGRAM_API_URL)]
    pub telegram_api_url: url::Url,
    /// How updates arrive: `polling` (getUpdates, needs no inbound traffic) or `webhook`
    /// (Telegram POSTs to --webhook-url; TLS is the Ingress's job).
    #[arg(long, env = "MOLTMATE_TELEGRAM_MODE", value_enum, default_value = "polling")]
    pub telegram_mode: TelegramMode,
    /// Webhook mode: address the webhook is served on.
    #[arg(long, env = "MOLTMATE_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,
    /// Webhook mode: path the webhook is served at.
    #[arg(long, env = "MOLTMATE_WEBHOOK_PATH", default_value = "/telegram")]
    pub webhook_path: String,
    /// Webhook mode: the public https URL Telegram posts to (the Ingress, ending in the path).
    #[arg(long, env = "MOLTMATE_WEBHOOK_URL")]
    pub webhook_url: Option<url::Url>,
    /// Webhook mode: file holding the secret Telegram sends in every request (else env
    /// MOLTMATE_WEBHOOK_SECRET); 1-256 of A-Z a-z 0-9 _ -.
    #[arg(long, env = "MOLTMATE_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding the bot token (else env MOLTMATE_BOT_TOKEN).
    #[arg(long, env = "MOLTMATE_BOT_TOKEN_FILE")]
    pub bot_token_file: Option<PathBuf>,
    /// Serve group chats too (private chats only by default).
    #[arg(long, env = "MOLTMATE_ALLOW_GROUPS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allow_groups: bool,
    /// Long-poll timeout of getUpdates.
    #[arg(long, env = "MOLTMATE_POLL_TIMEOUT", default_value = "25s", value_parser = crate::duration::parse_arg)]
    pub poll_timeout: Duration,
    /// Messages waiting per user before they are told to wait.
    #[arg(long, env = "MOLTMATE_QUEUE_SIZE", default_value_t = 20)]
    pub queue_size: usize,
    /// Port agents listen on.
    #[arg(long, env = "MOLTMATE_AGENT_PORT", default_value_t = 8080)]
    pub agent_port: u16,
    /// For one agent turn (the agent runs the model and tools meanwhile).
    #[arg(long, env = "MOLTMATE_AGENT_TIMEOUT", default_value = "180s", value_parser = crate::duration::parse_arg)]
    pub agent_timeout: Duration,
    /// At SIGTERM: how long the messages in flight may take to finish before the gateway
    /// exits anyway (those left are answered by the next gateway). Keep the pod's
    /// terminationGracePeriodSeconds longer.
    #[arg(long, env = "MOLTMATE_DRAIN_TIMEOUT", default_value = "30s", value_parser = crate::duration::parse_arg)]
    pub drain_timeout: Duration,
    /// How long a message to an idle user waits for its agent to start.
    #[arg(long, env = "MOLTMATE_WAKE_TIMEOUT", default_value = "60s", value_parser = crate::duration::parse_arg)]
    pub wake_timeout: Duration,
    /// Address of the broker (agents' LLM and web_fetch endpoint).
    #[arg(long, env = "MOLTMATE_BROKER_ADDR", default_value = "0.0.0.0:8081")]
    pub broker_addr: SocketAddr,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "MOLTMATE_HTTP_ADDR", default_value = "0.0.0.0:9090")]
    pub http_addr: SocketAddr,
    /// OpenAI-compatible provider base URL, without `/chat/completions`.
    #[arg(long, env = "MOLTMATE_LLM_BASE_URL")]
    pub llm_base_url: String,
    /// File holding the provider API key (else env MOLTMATE_LLM_API_KEY).
    #[arg(long, env = "MOLTMATE_LLM_API_KEY_FILE")]
    pub llm_api_key_file: Option<PathBuf>,
    /// The model every agent request uses, as the provider names it (e.g. gpt-4o-mini). Agents
    /// ask for `default`, which no provider serves, and the broker puts this in its place; any
    /// other model is refused.
    #[arg(long, env = "MOLTMATE_LLM_DEFAULT_MODEL", value_parser = parse_model)]
    pub llm_default_model: String,
    /// The models people may pick with `/model` (comma-separated, as the provider names
    /// them), unless their profile or spec lists their own. Empty: the default model only.
    #[arg(long, env = "MOLTMATE_LLM_MODELS", value_delimiter = ',', value_parser = parse_model)]
    pub llm_models: Vec<String>,
    /// The longest answer an agent may ask the model for, in tokens (larger `max_tokens` are
    /// lowered, and requests without one get it); 0: no cap.
    #[arg(long, env = "MOLTMATE_LLM_MAX_OUTPUT_TOKENS", default_value_t = crate::gateway::broker::DEFAULT_MAX_OUTPUT_TOKENS)]
    pub llm_max_output_tokens: u64,
    /// File holding the master key agent tokens are derived from (else env MOLTMATE_MASTER_KEY).
    #[arg(long, env = "MOLTMATE_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Elect a leader on a Lease so that only one replica polls Telegram.
    #[arg(long, env = "MOLTMATE_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// How often this replica writes its LLM and fetch counts to the shared usage record (a
    /// ConfigMap beside the Lease) and reads the other replicas' back.
    #[arg(long, env = "MOLTMATE_USAGE_SYNC_INTERVAL", default_value = "5s", value_parser = parse_interval)]
    pub usage_sync_interval: Duration,
    /// Namespace of the Lease and of the usage record (the release namespace).
    #[arg(long, env = "MOLTMATE_LEASE_NAMESPACE", default_value = "moltmate-system")]
    pub lease_namespace: String,
    /// This replica's name in the Lease (default: POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// The largest document a person may send (e.g. `10Mi`); at most 20M, Telegram's limit for
    /// bots. Larger ones get a reply naming the limit.
    #[arg(long, env = "MOLTMATE_FILE_MAX_SIZE", default_value = "10Mi", value_parser = crate::gateway::media::parse_max_bytes)]
    pub file_max_size: u64,
    /// The kinds of document people may send, as file extensions (`pdf,txt,csv`); a file
    /// without a usable name is judged by its declared MIME type. Others get a reply listing these.
    #[arg(long, env = "MOLTMATE_FILE_TYPES", default_value = crate::gateway::media::DEFAULT_TYPES, value_parser = crate::gateway::media::FileTypes::parse)]
    pub file_types: crate::gateway::media::FileTypes,
    /// The provider's speech-to-text model for voice notes and audio files (its OpenAI-compatible
    /// `/audio/transcriptions`), counted in each user's budget; `off`: voice notes get a reply
    /// asking for text.
    #[arg(long, env = "MOLTMATE_TRANSCRIPTION_MODEL", default_value = "whisper-1")]
    pub transcription_model: String,
    /// Send photos to the model as image input (saved in the user's files/ too). Only for a
    /// model that takes images (e.g. gpt-4o-mini); off: photos get a reply asking for text.
    #[arg(long, env = "MOLTMATE_PHOTOS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub photos: bool,
    /// YAML file of per-profile defaults, the same file the operator reads.
    #[arg(long, env = "MOLTMATE_PROFILES_FILE")]
    pub profiles_file: Option<PathBuf>,
    /// Telegram ids of the admins who decide access requests (comma-separated). None: a
    /// stranger's /start is refused as before, and no requests are taken.
    #[arg(long, env = "MOLTMATE_ACCESS_ADMINS", value_delimiter = ',')]
    pub access_admins: Vec<i64>,
    /// The profiles an admin may approve a request with, one button each; the first is what
    /// `moltmate users approve` gives without --profile.
    #[arg(long, env = "MOLTMATE_ACCESS_PROFILES", value_delimiter = ',', default_value = "public", value_parser = parse_profile)]
    pub access_profiles: Vec<crate::crd::Profile>,
    /// `create`: an approval creates the MoltmateUser (the gateway needs RBAC to create them);
    /// `gitops`: the admin gets its manifest to commit, and the gateway creates nothing.
    #[arg(long, env = "MOLTMATE_ACCESS_MODE", value_enum, default_value = "create")]
    pub access_mode: crate::access::Mode,
    /// How long a request waits for a decision.
    #[arg(long, env = "MOLTMATE_ACCESS_REQUEST_TTL", default_value = "24h", value_parser = parse_interval)]
    pub access_request_ttl: Duration,
    /// New requests per hour, everyone together (more are told to try later).
    #[arg(long, env = "MOLTMATE_ACCESS_REQUESTS_PER_HOUR", default_value_t = 10)]
    pub access_requests_per_hour: usize,
    /// Requests waiting for a decision at once, everyone together.
    #[arg(long, env = "MOLTMATE_ACCESS_MAX_OPEN", default_value_t = 20)]
    pub access_max_open: usize,
}

fn parse_profile(text: &str) -> Result<crate::crd::Profile, String> {
    let names = crate::crd::Profile::ALL.map(|p| p.as_str());
    crate::crd::Profile::ALL
        .into_iter()
        .find(|p| p.as_str() == text.trim())
        .ok_or_else(|| format!("{text:?} is not a profile; one of {}", names.join(", ")))
}

/// A model name: not empty, and not the placeholder agents ask for.
fn parse_model(text: &str) -> Result<String, String> {
    match text.trim() {
        "" => Err("must name the provider's model, e.g. gpt-4o-mini".into()),
        crate::gateway::broker::shape::PLACEHOLDER_MODEL => {
            Err("\"default\" is what agents ask for; name the provider's model, e.g. gpt-4o-mini".into())
        }
        model => crate::profile::models::check_name(model).map(|()| model.to_string()),
    }
}

/// A duration that is not zero (it paces a loop).
fn parse_interval(text: &str) -> Result<Duration, String> {
    match crate::duration::parse_arg(text)? {
        d if d.is_zero() => Err("must be longer than zero".into()),
        d => Ok(d),
    }
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum TelegramMode {
    Polling,
    Webhook,
}

#[derive(Debug, thiserror::Error)]
#[error("webhook mode: {0}")]
pub struct WebhookConfigError(String);

impl GatewayArgs {
    /// The access-request settings, when admins are named.
    pub fn access(&self) -> Option<crate::gateway::access::AccessConfig> {
        if self.access_admins.is_empty() {
            return None;
        }
        let mut profiles = self.access_profiles.clone();
        profiles.dedup();
        Some(crate::gateway::access::AccessConfig {
            admins: self.access_admins.clone(),
            profiles,
            mode: self.access_mode,
            limits: crate::access::Limits {
                ttl: i64::try_from(self.access_request_ttl.as_secs()).unwrap_or(i64::MAX),
                per_hour: self.access_requests_per_hour,
                max_open: self.access_max_open,
                ..crate::access::Limits::default()
            },
            namespace: self.lease_namespace.clone(),
        })
    }

    /// Which documents are fetched and handed to the agents.
    pub fn media_policy(&self) -> crate::gateway::media::MediaPolicy {
        crate::gateway::media::MediaPolicy {
            max_bytes: self.file_max_size,
            types: self.file_types.0.clone(),
            transcribe: self.transcription_model().is_some(),
            photos: self.photos,
        }
    }

    /// The transcription model, unless transcription is off.
    pub fn transcription_model(&self) -> Option<String> {
        match self.transcription_model.trim() {
            "" | "off" | "none" => None,
            model => Some(model.to_string()),
        }
    }

    /// The webhook settings in webhook mode (None when polling), checked.
    pub fn webhook(&self) -> Result<Option<WebhookConfig>, WebhookConfigError> {
        if self.telegram_mode == TelegramMode::Polling {
            return Ok(None);
        }
        let url = self
            .webhook_url
            .clone()
            .ok_or_else(|| WebhookConfigError("--webhook-url (MOLTMATE_WEBHOOK_URL) is required".into()))?;
        let secret = WEBHOOK_SECRET
            .parse(self.webhook_secret_file.as_deref(), |bytes| {
                let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())?;
                validate_secret(text)?;
                Ok(Secret::new(text))
            })
            .map_err(|e| WebhookConfigError(e.to_string()))?;
        validate_path(&self.webhook_path).map_err(WebhookConfigError)?;
        Ok(Some(WebhookConfig { addr: self.webhook_addr, path: self.webhook_path.clone(), url, secret }))
    }
}
