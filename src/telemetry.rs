//! Logging set-up: human-readable by default, JSON lines for log pipelines; and what every
//! component's metrics share.

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};
use tracing_subscriber::EnvFilter;

/// `metric`, registered as `name`: each metric is made and registered in one expression.
pub fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

/// `moltmate_build_info{component, version} 1`: which build runs where, and, by its absence,
/// which component is not scraped (the operator-down alert).
pub fn register_build_info(registry: &mut Registry, component: &'static str) {
    let info = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
    info.get_or_create(&vec![("component", component), ("version", env!("CARGO_PKG_VERSION"))]).set(1);
    registry.register("moltmate_build_info", "The running build: component and version (always 1)", info);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// As `--log-format` and `MOLTMATE_LOG_FORMAT` take it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `RUST_LOG` filters as usual (default `info`).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
