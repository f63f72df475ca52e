//! The database settings every command shares (`DATABASE_URL`, the data folder, the pool).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

/// Where the database is and how to reach it. Shared by every command.
#[derive(Debug, Clone, Args)]
pub struct DbSettings {
    /// PostgreSQL URL. When unset, leadflow starts (or reuses) a private PostgreSQL from the
    /// machine's server binaries, with its files under the data folder.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Data folder for the private PostgreSQL and the generated admin token.
    #[arg(long, env = "LEADFLOW_DATA_DIR", default_value = ".leadflow")]
    pub data_dir: PathBuf,

    /// Connections in the pool.
    #[arg(long, env = "LEADFLOW_DB_POOL_MAX", default_value_t = 20)]
    pub pool_max: u32,

    /// How long a request waits for a database connection before answering 503.
    #[arg(long, env = "LEADFLOW_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 3000)]
    pub acquire_timeout_ms: u64,
}

impl DbSettings {
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms)
    }
}
