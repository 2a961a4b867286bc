//! Prometheus metrics of the operator.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{MoltmateUser, Phase};
use crate::telemetry::registered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: &'static str,
}

pub struct OperatorMetrics {
    pub reconciles: Family<ResultLabel, Counter>,
    pub reconcile_duration: Histogram,
    pub writes: Family<KindLabel, Counter>,
    pub users: Family<PhaseLabel, Gauge>,
}

impl OperatorMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("moltmate_operator");
        Self {
            reconciles: registered(r, "reconciles", "Reconciles by result (ok or error)", Family::default()),
            reconcile_duration: registered(
                r,
                "reconcile_duration_seconds",
                "Time one reconcile takes",
                Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            ),
            writes: registered(r, "writes", "Writes to the API server by object kind", Family::default()),
            users: registered(r, "users", "MoltmateUsers by phase", Family::default()),
        }
    }

    pub fn observe_reconcile(&self, took: Duration, ok: bool) {
        self.reconcile_duration.observe(took.as_secs_f64());
        self.reconciles.get_or_create(&ResultLabel { result: if ok { "ok" } else { "error" } }).inc();
    }

    pub fn count_write(&self, kind: &str) {
        self.writes.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
    }

    /// Refresh the per-phase gauge from the cache (called when metrics are scraped).
    pub fn count_users<'a>(&self, users: impl IntoIterator<Item = &'a MoltmateUser>) {
        let mut counts = [0i64; Phase::ALL.len()];
        for user in users {
            let phase = user.status.as_ref().and_then(|s| s.phase).unwrap_or(Phase::Pending);
            counts[Phase::ALL.iter().position(|p| *p == phase).unwrap_or(0)] += 1;
        }
        for (phase, count) in Phase::ALL.iter().zip(counts) {
            self.users.get_or_create(&PhaseLabel { phase: phase.as_str() }).set(count);
        }
    }
}
