//! Settings, read from the environment (or the equivalent flags). Every knob a user may turn
//! lives here, documented once, so `leadflow --help` and the README say the same thing.

use std::net::SocketAddr;
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

/// The HTTP side of `serve`.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Address the HTTP API listens on.
    #[arg(long, env = "LEADFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// The URL the outside world reaches this service at (used in webhook URLs shown to
    /// users and in callback URLs given to providers). Defaults to http://<listen>.
    #[arg(long, env = "LEADFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Token guarding the operator routes. When unset, one is generated at first start and
    /// kept in <data dir>/admin-token.
    #[arg(long, env = "LEADFLOW_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "LEADFLOW_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    pub max_body_bytes: usize,

    /// Upper bound on handling one request, database waits included.
    #[arg(long, env = "LEADFLOW_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
}

impl HttpSettings {
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }
}
