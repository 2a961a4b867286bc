//! The gateway's message metrics (the broker registers its own).

use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::commands::MessageOutcome;
use crate::telemetry::registered;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UserLabel {
    pub user: String,
}

pub struct GatewayMetrics {
    messages: Family<OutcomeLabel, Counter>,
    queue_depth: Family<UserLabel, Gauge>,
    latency: Histogram,
    unknown_senders: Counter,
    users: Gauge,
    confirmed: Counter,
    repeats_suppressed: Counter,
    reminders_delivered: Counter,
    reminder_failures: Counter,
    last_poll: Gauge<f64, AtomicU64>,
    access_requests: Family<OutcomeLabel, Counter>,
    access_presses: Family<OutcomeLabel, Counter>,
}

impl GatewayMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("moltmate_gateway");
        Self {
            messages: registered(r, "messages", "Telegram messages handled, by outcome", Family::default()),
            latency: registered(
                r,
                "routing_seconds",
                "From receiving a message to its answer (or refusal) being sent",
                Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            ),
            queue_depth: registered(
                r,
                "queue_depth",
                "Messages waiting in a user's queue behind the one being answered (users with a queue on this replica)",
                Family::default(),
            ),
            unknown_senders: registered(
                r,
                "unknown_senders",
                "Messages from senders not on the allowlist",
                Counter::default(),
            ),
            users: registered(
                r,
                "users",
                "MoltmateUsers in the gateway's allowlist cache, those being deleted not counted: what it routes from",
                Gauge::default(),
            ),
            confirmed: registered(
                r,
                "replies_confirmed",
                "Replies sent to Telegram and recorded as delivered by their agent",
                Counter::default(),
            ),
            repeats_suppressed: registered(
                r,
                "repeats_suppressed",
                "Redelivered updates whose reply had been delivered already: nothing sent",
                Counter::default(),
            ),
            reminders_delivered: registered(
                r,
                "reminders_delivered",
                "Reminders sent to their person's chat when due",
                Counter::default(),
            ),
            reminder_failures: registered(
                r,
                "reminder_send_failures",
                "Reminders Telegram did not take when due (each is tried again 30 s later)",
                Counter::default(),
            ),
            access_requests: registered(
                r,
                "access_requests",
                "Strangers' /start and /request, by outcome: new, open (asked again), declined (denied lately), busy (the caps), throttled (no answer), admin, failed",
                Family::default(),
            ),
            access_presses: registered(
                r,
                "access_presses",
                "Presses of the access buttons, by outcome: approved, denied, refused (expired, decided, failed), not_an_admin, unknown",
                Family::default(),
            ),
            // A timestamp, not a counter: "no success for 5 minutes" is then one subtraction,
            // right after a restart too (alert MoltmateGatewayNotPolling).
            last_poll: registered(
                r,
                "last_poll_timestamp_seconds",
                "Unix time of the last successful getUpdates call (0 before the first, in webhook mode, and on replicas not leading)",
                Gauge::default(),
            ),
        }
    }

    pub fn access_request(&self, outcome: &'static str) {
        self.access_requests.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn access_press(&self, outcome: &'static str) {
        self.access_presses.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    pub fn finished(&self, outcome: MessageOutcome, seconds: f64) {
        self.messages.get_or_create(&OutcomeLabel { outcome: outcome.as_str() }).inc();
        self.latency.observe(seconds);
    }

    /// Replace the queue gauges with `depths` (taken at scrape time).
    pub fn set_queue_depths(&self, depths: &[(String, usize)]) {
        self.queue_depth.clear();
        for (user, depth) in depths {
            self.queue_depth
                .get_or_create(&UserLabel { user: user.clone() })
                .set(i64::try_from(*depth).unwrap_or(i64::MAX));
        }
    }

    /// The allowlist as the gateway sees it now (taken at scrape time).
    pub fn set_users(&self, users: usize) {
        self.users.set(i64::try_from(users).unwrap_or(i64::MAX));
    }

    pub fn unknown_sender(&self) {
        self.unknown_senders.inc();
    }

    pub fn confirmed(&self) {
        self.confirmed.inc();
    }

    pub fn reminder_delivered(&self) {
        self.reminders_delivered.inc();
    }

    pub fn reminder_failed(&self) {
        self.reminder_failures.inc();
    }

    pub fn repeat_suppressed(&self) {
        self.repeats_suppressed.inc();
    }

    /// A getUpdates call succeeded just now.
    pub fn polled(&self) {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.last_poll.set(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_its_full_name() {
        let mut registry = Registry::default();
        let metrics = GatewayMetrics::register(&mut registry);
        // A family shows once it has a series.
        metrics.finished(MessageOutcome::QueueFull, 0.1);
        metrics.set_queue_depths(&[("alice".into(), 1)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "moltmate_gateway_messages",
            "moltmate_gateway_routing_seconds",
            "moltmate_gateway_queue_depth",
            "moltmate_gateway_unknown_senders",
            "moltmate_gateway_users",
            "moltmate_gateway_replies_confirmed",
            "moltmate_gateway_repeats_suppressed",
            "moltmate_gateway_last_poll_timestamp_seconds",
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name} in:\n{text}");
        }
    }
}
