//! Prometheus metrics of the agent.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::registered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabel {
    /// One of the known tool names or `unknown`: the model picks the name, not the label set.
    pub tool: &'static str,
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

#[derive(Clone)]
pub struct AgentMetrics {
    pub turns: Family<OutcomeLabel, Counter>,
    pub tool_calls: Family<ToolLabel, Counter>,
    pub llm_errors: Family<KindLabel, Counter>,
    pub turn_duration: Histogram,
}

impl AgentMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("moltmate_agent");
        Self {
            turns: registered(
                r,
                "turns",
                "Turns by outcome (answered, duplicate, model_unavailable, error)",
                Family::default(),
            ),
            tool_calls: registered(
                r,
                "tool_calls",
                "Tool calls by tool and decision (allowed, denied, error)",
                Family::default(),
            ),
            llm_errors: registered(r, "llm_errors", "Failed LLM requests (after retries) by kind", Family::default()),
            // 10 ms .. ~80 min: a turn is a few LLM calls and tools.
            turn_duration: registered(
                r,
                "turn_duration_seconds",
                "Time from a turn's start to its reply",
                Histogram::new(exponential_buckets(0.01, 2.0, 19)),
            ),
        }
    }

    pub fn turn(&self, outcome: &'static str, took: Duration) {
        self.turns.get_or_create(&OutcomeLabel { outcome }).inc();
        self.turn_duration.observe(took.as_secs_f64());
    }

    pub fn tool_call(&self, tool: &'static str, decision: &'static str) {
        self.tool_calls.get_or_create(&ToolLabel { tool, decision }).inc();
    }

    pub fn llm_error(&self, kind: &'static str) {
        self.llm_errors.get_or_create(&KindLabel { kind }).inc();
    }
}
