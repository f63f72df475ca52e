//! How workers claim and run step jobs (`LEADFLOW_POLL_INTERVAL_MS`,
//! `LEADFLOW_RESCUE_AFTER_S`, …).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// How workers claim and run step jobs.
#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// Directory of workflow definitions (TOML).
    #[arg(long, env = "LEADFLOW_WORKFLOWS_DIR", default_value = "workflows")]
    pub workflows_dir: PathBuf,

    /// How often an idle worker looks for due jobs. New jobs also wake workers at once
    /// through LISTEN/NOTIFY; this interval bounds the pickup of delayed ones.
    #[arg(long, env = "LEADFLOW_POLL_INTERVAL_MS", default_value_t = 200)]
    pub poll_interval_ms: u64,

    /// A job held by a worker that stopped heart-beating for this long is handed to another.
    #[arg(long, env = "LEADFLOW_RESCUE_AFTER_S", default_value_t = 300)]
    pub rescue_after_s: u64,

    /// Jobs claimed per fetch.
    #[arg(long, env = "LEADFLOW_BATCH_SIZE", default_value_t = 10)]
    pub batch_size: usize,

    /// Jobs run at once per queue in this process.
    #[arg(long, env = "LEADFLOW_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,

    /// On SIGTERM, how long in-flight steps may take to finish before the process exits.
    #[arg(long, env = "LEADFLOW_SHUTDOWN_TIMEOUT_S", default_value_t = 30)]
    pub shutdown_timeout_s: u64,

    /// Finished jobs and webhook-log bodies (personal data) are pruned after this many days.
    #[arg(long, env = "LEADFLOW_RETENTION_DAYS", default_value_t = 30)]
    pub retention_days: u32,

    /// When the pruning runs (cron: sec min hour day month weekday, UTC).
    #[arg(long, env = "LEADFLOW_RETENTION_CRON", default_value = "0 30 3 * * *")]
    pub retention_cron: String,
}

impl WorkerSettings {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.poll_interval_ms.max(1))
    }
    pub fn rescue_after(&self) -> Duration {
        Duration::from_secs(self.rescue_after_s.max(1))
    }
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_s)
    }
}
