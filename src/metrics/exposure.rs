//! [`Exposure`]: everything one process does to be monitored. `serve` and `worker` start one
//! at start-up and stop it at shutdown.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;

use sqlx::PgPool;

use super::MetricsSettings;
use super::http::MetricsServer;
use super::monitor::Monitor;
use crate::workflow::Workflows;

#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error("serving metrics on {addr} (LEADFLOW_METRICS_LISTEN): {source}")]
    Listen { addr: SocketAddr, source: io::Error },
}

pub struct Exposure {
    monitor: Monitor,
    server: Option<MetricsServer>,
}

impl Exposure {
    /// Installs the recorder, starts the monitor that refreshes the database-wide gauges
    /// (when this process wins the election), and the metrics-only listener when
    /// `settings.metrics_listen` is set.
    pub async fn start(
        pool: &PgPool,
        workflows: &Workflows,
        settings: &MetricsSettings,
    ) -> Result<Exposure, ExposureError> {
        let refresh = settings.refresh();
        super::install(super::gauge_idle_for(refresh));
        let names: Vec<&str> = workflows.names().collect();
        super::init_series(names.iter().copied());
        let teams: BTreeSet<String> = names
            .iter()
            .filter_map(|name| workflows.get(name))
            .flat_map(|w| w.teams.keys().cloned())
            .collect();
        let monitor = Monitor::spawn(pool, teams, refresh);
        let server = match settings.metrics_listen {
            Some(addr) => {
                let server = MetricsServer::start(addr, pool.clone())
                    .await
                    .map_err(|source| ExposureError::Listen { addr, source });
                match server {
                    Ok(server) => {
                        tracing::info!(addr = %server.addr, "serving /metrics and /healthz");
                        Some(server)
                    }
                    Err(e) => {
                        monitor.stop().await;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        Ok(Exposure { monitor, server })
    }

    /// Where the metrics-only listener listens, if it runs.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(|s| s.addr)
    }

    pub async fn stop(self) {
        if let Some(server) = self.server {
            server.stop().await;
        }
        self.monitor.stop().await;
    }
}
