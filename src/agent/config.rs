//! The agent's configuration: flags, each also read from the environment the operator sets
//! on the pod, validated into a [`Config`] before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::profile::ResolvedProfile;
use crate::secret::Secret;

/// Shorter tokens are refused at start: the operator's are 64 hex characters.
pub const MIN_TOKEN_LEN: usize = 16;

#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// The MoltmateUser this agent serves (the `user` field of every log line).
    #[arg(long, env = "MOLTMATE_USER")]
    pub user: Option<String>,
    /// The user's Telegram id (the `telegram_id` field of every log line).
    #[arg(long, env = "MOLTMATE_TELEGRAM_ID")]
    pub telegram_id: Option<i64>,
    /// The user's workspace volume (SOUL.md, MEMORY.md, sessions/, files/).
    #[arg(long, env = "MOLTMATE_WORKSPACE", default_value = "/workspace")]
    pub workspace: PathBuf,
    /// Address of the turn API, /healthz, /readyz and /metrics.
    #[arg(long, env = "MOLTMATE_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The gateway's broker: `{url}/v1` is the OpenAI-compatible base URL, `{url}/v1/fetch` the fetch proxy.
    #[arg(long, env = "MOLTMATE_BROKER_URL")]
    pub broker_url: Option<String>,
    /// The resolved profile (JSON, as the operator writes it).
    #[arg(long, env = "MOLTMATE_PROFILE", hide_env_values = true)]
    pub profile: Option<String>,
    /// Bearer token: callers of the turn API must present it; the broker identifies the user by it.
    #[arg(long = "agent-token", env = "MOLTMATE_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Model name passed to the broker.
    #[arg(long, env = "MOLTMATE_MODEL", default_value = "default")]
    pub model: String,
    /// Tool rounds the model may take in one turn before it must answer.
    #[arg(long, env = "MOLTMATE_MAX_TOOL_ROUNDS", default_value_t = 8)]
    pub max_tool_rounds: u32,
    /// Timeout of one LLM request (each retry gets its own).
    #[arg(long, env = "MOLTMATE_LLM_TIMEOUT", default_value = "60s", value_parser = crate::duration::parse_arg)]
    pub llm_timeout: Duration,
    /// Retries of an LLM request on 429, 5xx and connection errors, with exponential backoff.
    #[arg(long, env = "MOLTMATE_LLM_RETRIES", default_value_t = 3)]
    pub llm_retries: u32,
    /// History sent to the model, in characters (roughly 4 per token); older turns are left out.
    #[arg(long, env = "MOLTMATE_HISTORY_BUDGET", default_value_t = 48_000)]
    pub history_budget: usize,
    /// Timeout of one exec tool call.
    #[arg(long, env = "MOLTMATE_EXEC_TIMEOUT", default_value = "10s", value_parser = crate::duration::parse_arg)]
    pub exec_timeout: Duration,
    /// Timeout of one web_fetch tool call.
    #[arg(long, env = "MOLTMATE_WEB_FETCH_TIMEOUT", default_value = "30s", value_parser = crate::duration::parse_arg)]
    pub web_fetch_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub user: String,
    pub telegram_id: Option<i64>,
    pub workspace: PathBuf,
    pub listen: SocketAddr,
    /// Broker base without a trailing slash.
    pub broker: Url,
    pub profile: ResolvedProfile,
    pub token: Secret<String>,
    pub model: String,
    pub max_tool_rounds: u32,
    pub llm_timeout: Duration,
    pub llm_retries: u32,
    pub history_budget: usize,
    pub exec_timeout: Duration,
    pub web_fetch_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{0} is not set (the operator sets it on the pod; the matching --flag works too)")]
    Missing(&'static str),
    #[error("MOLTMATE_USER is empty or not a plain name")]
    User,
    #[error("MOLTMATE_BROKER_URL {0:?} is not an http(s) URL without query or credentials")]
    BrokerUrl(String),
    #[error("MOLTMATE_PROFILE is not a resolved profile: {0}")]
    Profile(String),
    #[error("MOLTMATE_AGENT_TOKEN must be at least {MIN_TOKEN_LEN} printable characters without spaces")]
    Token,
    #[error("MOLTMATE_MODEL is empty or too long")]
    Model,
    #[error("{name} is {value}; it must be between {min} and {max}")]
    OutOfRange { name: &'static str, value: String, min: String, max: String },
}

impl Config {
    pub fn from_args(args: AgentArgs) -> Result<Self, ConfigError> {
        // Required values are checked here rather than by clap, so the error names the variable.
        let required = |value: Option<String>, name: &'static str| value.ok_or(ConfigError::Missing(name));
        let user = required(args.user, "MOLTMATE_USER")?.trim().to_string();
        if user.is_empty() || user.len() > 253 || user.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(ConfigError::User);
        }
        let broker = parse_broker(&required(args.broker_url, "MOLTMATE_BROKER_URL")?)?;
        let profile: ResolvedProfile = serde_json::from_str(&required(args.profile, "MOLTMATE_PROFILE")?)
            .map_err(|e| ConfigError::Profile(e.to_string()))?;
        let token = required(args.token, "MOLTMATE_AGENT_TOKEN")?;
        let token = token.trim();
        // The token goes into an HTTP header as is: printable ASCII only.
        if token.len() < MIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::Token);
        }
        let model = args.model.trim().to_string();
        if model.is_empty() || model.len() > 256 {
            return Err(ConfigError::Model);
        }
        in_range("MOLTMATE_MAX_TOOL_ROUNDS", args.max_tool_rounds, 1, 64)?;
        in_range("MOLTMATE_LLM_RETRIES", args.llm_retries, 0, 10)?;
        in_range("MOLTMATE_HISTORY_BUDGET", args.history_budget, 2_000, 4_000_000)?;
        let (second, ten_minutes) = (Duration::from_secs(1), Duration::from_secs(600));
        for (name, value) in [
            ("MOLTMATE_LLM_TIMEOUT", args.llm_timeout),
            ("MOLTMATE_EXEC_TIMEOUT", args.exec_timeout),
            ("MOLTMATE_WEB_FETCH_TIMEOUT", args.web_fetch_timeout),
        ] {
            if value < second || value > ten_minutes {
                return Err(ConfigError::OutOfRange {
                    name,
                    value: format!("{value:?}"),
                    min: "1s".into(),
                    max: "10m".into(),
                });
            }
        }
        Ok(Self {
            user,
            workspace: args.workspace,
            listen: args.listen,
            broker,
            profile,
            token: Secret::new(token),
            model,
            max_tool_rounds: args.max_tool_rounds,
            llm_timeout: args.llm_timeout,
            llm_retries: args.llm_retries,
            history_budget: args.history_budget,
            exec_timeout: args.exec_timeout,
            web_fetch_timeout: args.web_fetch_timeout,
            telegram_id: args.telegram_id,
        })
    }

    /// The OpenAI-compatible base URL: `{broker}/v1`.
    pub fn llm_base(&self) -> String {
        format!("{}/v1", self.broker.as_str().trim_end_matches('/'))
    }

    /// The broker's fetch proxy: `{broker}/v1/fetch`.
    pub fn fetch_url(&self) -> String {
        format!("{}/v1/fetch", self.broker.as_str().trim_end_matches('/'))
    }

    pub fn reminders_url(&self) -> String {
        format!("{}/v1/reminders", self.broker.as_str().trim_end_matches('/'))
    }
}

fn parse_broker(text: &str) -> Result<Url, ConfigError> {
    let bad = || ConfigError::BrokerUrl(text.to_string());
    let url = Url::parse(text.trim()).map_err(|_| bad())?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|h| !h.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if plain { Ok(url) } else { Err(bad()) }
}

fn in_range<T: PartialOrd + fmt::Display>(name: &'static str, value: T, min: T, max: T) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::OutOfRange {
            name,
            value: value.to_string(),
            min: min.to_string(),
            max: max.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::Profile;
    use crate::profile::ResolvedProfile;

    pub(crate) fn profile(p: Profile) -> ResolvedProfile {
        crate::profile::resolve(&crate::crd::MoltmateUserSpec::new(42, p)).unwrap()
    }

    fn args() -> AgentArgs {
        AgentArgs {
            user: Some("alice".into()),
            telegram_id: Some(42),
            workspace: "/workspace".into(),
            listen: "127.0.0.1:0".parse().unwrap(),
            broker_url: Some("http://moltmate-broker:8081".into()),
            profile: Some(serde_json::to_string(&profile(Profile::Family)).unwrap()),
            token: Some("0123456789abcdef0123".into()),
            model: "default".into(),
            max_tool_rounds: 8,
            llm_timeout: Duration::from_secs(60),
            llm_retries: 3,
            history_budget: 48_000,
            exec_timeout: Duration::from_secs(10),
            web_fetch_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn operator_environment_is_a_valid_config() {
        let c = Config::from_args(args()).unwrap();
        assert_eq!(c.llm_base(), "http://moltmate-broker:8081/v1");
        assert_eq!(c.fetch_url(), "http://moltmate-broker:8081/v1/fetch");
        assert_eq!(c.profile.profile, Profile::Family);
        assert_eq!(format!("{:?}", c.token), "Secret(..)");
        let mut a = args();
        a.broker_url = Some("http://127.0.0.1:9/".into());
        assert_eq!(Config::from_args(a).unwrap().llm_base(), "http://127.0.0.1:9/v1");
    }

    #[test]
    fn bad_values_are_clear_errors() {
        type Case = (fn(&mut AgentArgs), &'static str);
        let cases: Vec<Case> = vec![
            (|a| a.user = Some(" ".into()), "MOLTMATE_USER"),
            (|a| a.user = None, "MOLTMATE_USER"),
            (|a| a.broker_url = Some("moltmate-broker:8081".into()), "MOLTMATE_BROKER_URL"),
            (|a| a.broker_url = Some("ftp://x".into()), "MOLTMATE_BROKER_URL"),
            (|a| a.broker_url = Some("http://u:p@x".into()), "MOLTMATE_BROKER_URL"),
            (|a| a.broker_url = None, "MOLTMATE_BROKER_URL"),
            (|a| a.profile = Some("{}".into()), "MOLTMATE_PROFILE"),
            (|a| a.profile = Some("not json".into()), "MOLTMATE_PROFILE"),
            (|a| a.profile = None, "MOLTMATE_PROFILE"),
            (|a| a.token = Some("short".into()), "MOLTMATE_AGENT_TOKEN"),
            (|a| a.token = Some("with a space in the token".into()), "MOLTMATE_AGENT_TOKEN"),
            (|a| a.token = None, "MOLTMATE_AGENT_TOKEN"),
            (|a| a.max_tool_rounds = 0, "MOLTMATE_MAX_TOOL_ROUNDS"),
            (|a| a.llm_retries = 50, "MOLTMATE_LLM_RETRIES"),
            (|a| a.history_budget = 10, "MOLTMATE_HISTORY_BUDGET"),
            (|a| a.llm_timeout = Duration::from_millis(10), "MOLTMATE_LLM_TIMEOUT"),
        ];
        for (mutate, name) in cases {
            let mut a = args();
            mutate(&mut a);
            let err = Config::from_args(a).unwrap_err().to_string();
            assert!(err.contains(name), "{err} should name {name}");
        }
    }
}
