//! Prometheus metrics of the broker. A user label only on the token counter, and only for
//! callers with a valid agent token: users are the allowlist the admin keeps, never
//! strangers, so its series are as many as the MoltmateUsers. Everything else per user goes to
//! the logs (every request is logged with its user).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::registered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabel {
    /// `chat_completions`, `models` or `fetch`.
    pub endpoint: &'static str,
    /// `allowed`, `refused`, `limited` or `error`.
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabel {
    /// The MoltmateUser's name.
    pub user: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone)]
pub struct BrokerMetrics {
    pub requests: Family<RequestLabel, Counter>,
    pub llm_tokens: Counter,
    pub user_llm_tokens: Family<UserLabel, Counter>,
    pub duration: Family<EndpointLabel, Histogram>,
}

impl BrokerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("moltmate_broker");
        Self {
            requests: registered(
                r,
                "requests",
                "Broker requests by endpoint and decision (allowed, refused, limited, error)",
                Family::default(),
            ),
            llm_tokens: registered(
                r,
                "llm_tokens",
                "LLM tokens (prompt plus completion) the provider reported, all users",
                Counter::default(),
            ),
            user_llm_tokens: registered(
                r,
                "user_llm_tokens",
                "LLM tokens (prompt plus completion) the provider reported, by user",
                Family::default(),
            ),
            // 1 ms .. ~4.5 min: a refusal is instant, a completion may take a minute.
            duration: registered(
                r,
                "request_duration_seconds",
                "Time to answer a broker request, by endpoint",
                Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.001, 2.0, 19))),
            ),
        }
    }

    pub fn request(&self, endpoint: &'static str, decision: &'static str, took: Duration) {
        self.requests.get_or_create(&RequestLabel { endpoint, decision }).inc();
        self.duration.get_or_create(&EndpointLabel { endpoint }).observe(took.as_secs_f64());
    }
}
