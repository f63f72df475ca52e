//! How a process is monitored: its own `/metrics` listener, and the refresh of the
//! database-wide gauges.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// How this process is monitored (see `metrics`).
#[derive(Debug, Clone, Args)]
pub struct MetricsSettings {
    /// Address of a listener that answers only `/metrics` and `/healthz`. `leadflow worker`
    /// has no other HTTP server, so set it there; `serve` also answers `/metrics` on its main
    /// listener.
    #[arg(long, env = "LEADFLOW_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// How often the database-wide gauges (jobs per queue, callbacks waiting for hours) are
    /// refreshed, by the one process that holds their advisory lock.
    #[arg(long, env = "LEADFLOW_METRICS_REFRESH_MS", default_value_t = 15_000)]
    pub metrics_refresh_ms: u64,
}

impl MetricsSettings {
    pub const DEFAULT_REFRESH: Duration = Duration::from_secs(15);

    pub fn refresh(&self) -> Duration {
        Duration::from_millis(self.metrics_refresh_ms.max(100))
    }
}
