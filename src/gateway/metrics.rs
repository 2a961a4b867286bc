//! The gateway's message metrics (the broker registers its own).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::commands::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

pub struct Metrics {
    messages: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    unknown_senders: Counter,
    confirmed: Counter,
    repeats_suppressed: Counter,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            messages: Family::default(),
            latency: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            unknown_senders: Counter::default(),
            confirmed: Counter::default(),
            repeats_suppressed: Counter::default(),
        };
        registry.register("moltmate_gateway_messages", "Telegram messages handled, by outcome", metrics.messages.clone());
        registry.register(
            "moltmate_gateway_routing_seconds",
            "From receiving a message to its answer (or refusal) being sent",
            metrics.latency.clone(),
        );
        registry.register("moltmate_gateway_unknown_senders", "Messages from senders not on the allowlist", metrics.unknown_senders.clone());
        registry.register(
            "moltmate_gateway_replies_confirmed",
            "Replies sent to Telegram and recorded as delivered by their agent",
            metrics.confirmed.clone(),
        );
        registry.register(
            "moltmate_gateway_repeats_suppressed",
            "Redelivered updates whose reply had been delivered already: nothing sent",
            metrics.repeats_suppressed.clone(),
        );
        metrics
    }

    pub fn finished(&self, outcome: Outcome, seconds: f64) {
        self.messages.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
        self.latency.observe(seconds);
    }

    pub fn unknown_sender(&self) {
        self.unknown_senders.inc();
    }

    pub fn confirmed(&self) {
        self.confirmed.inc();
    }

    pub fn repeat_suppressed(&self) {
        self.repeats_suppressed.inc();
    }
}
