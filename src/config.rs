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

/// The HTTP side of `serve`.
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// Address the HTTP API listens on.
    #[arg(long, env = "LEADFLOW_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

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

    /// A client must send a request's headers within this long (from connecting, or from the
    /// previous response); slower connections are closed (slowloris).
    #[arg(long, env = "LEADFLOW_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,

    /// Intake requests per minute per hook, unless the hook has its own limit (0: none).
    #[arg(long, env = "LEADFLOW_RATE_LIMIT_PER_MIN", default_value_t = 600)]
    pub rate_limit_per_min: u32,
}

impl HttpSettings {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms.max(1))
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TelephonyKind {
    /// No network: each call's outcome is simulated and reported after a delay.
    Sim,
    /// Twilio's Calls API (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN).
    Twilio,
}

/// Who places the callback calls, and how the callback step waits for them.
#[derive(Debug, Clone, Args)]
pub struct TelephonySettings {
    /// Who places calls: `sim` (the default; no network) or `twilio`.
    #[arg(long, env = "LEADFLOW_TELEPHONY", value_enum, default_value_t = TelephonyKind::Sim)]
    pub telephony: TelephonyKind,

    /// The URL providers reach leadflow at, for TwiML and status callbacks (and shown in hook
    /// URLs). Defaults to http://<LEADFLOW_LISTEN>.
    #[arg(long, env = "LEADFLOW_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Simulated outcomes, Twilio CallStatus words: a lead's attempt N ends as entry N
    /// (the last entry repeats), e.g. `busy,no-answer,completed`.
    #[arg(long, env = "LEADFLOW_SIM_OUTCOMES", default_value = "completed")]
    pub sim_outcomes: String,

    /// How long after a simulated call its statuses are reported.
    #[arg(long, env = "LEADFLOW_SIM_DELAY_MS", default_value_t = 1000)]
    pub sim_delay_ms: u64,

    /// Twilio account SID.
    #[arg(long, env = "TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,

    /// Twilio auth token: authenticates API calls and verifies status callbacks.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<String>,

    /// Twilio's API host; tests point it at a local server.
    #[arg(long, env = "TWILIO_API_BASE", default_value = crate::telephony::twilio::DEFAULT_API_BASE)]
    pub twilio_api_base: String,

    /// A call that may have been placed (the provider timed out after the request went out)
    /// waits this long for a status callback before the attempt may be retried.
    #[arg(
        long,
        env = "LEADFLOW_CALLBACK_UNKNOWN_WINDOW_S",
        default_value_t = 120
    )]
    pub unknown_window_s: u64,

    /// A placed call without a final status after this long fails its run (no second call
    /// is risked).
    #[arg(
        long,
        env = "LEADFLOW_CALLBACK_OUTCOME_TIMEOUT_S",
        default_value_t = 7200
    )]
    pub outcome_timeout_s: u64,

    /// A placed call with no final status this long after it was placed: ask the provider
    /// how it stands (status callbacks get lost).
    #[arg(long, env = "LEADFLOW_CALLBACK_RECONCILE_S", default_value_t = 120)]
    pub reconcile_s: u64,

    /// Calls being placed at once by one process (a slow provider holds no more workers).
    #[arg(long, env = "LEADFLOW_PROVIDER_CONCURRENCY", default_value_t = 8)]
    pub provider_concurrency: usize,

    /// Twilio API timeout for one request (connect included), in milliseconds.
    #[arg(long, env = "TWILIO_TIMEOUT_MS", default_value_t = 10_000)]
    pub twilio_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TelephonyError {
    #[error("LEADFLOW_SIM_OUTCOMES: {0}")]
    SimOutcomes(#[from] crate::telephony::sim::SimConfigError),
    #[error("LEADFLOW_TELEPHONY=twilio needs TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")]
    TwilioMissing,
}

impl TelephonySettings {
    /// The public URL, defaulting to the address the service listens on.
    pub fn public_url(&self, listen: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{listen}"),
        }
    }

    pub fn engine_config(
        &self,
        listen: SocketAddr,
    ) -> Result<crate::steps::EngineConfig, TelephonyError> {
        use crate::steps::{CallbackSettings, EngineConfig, ProviderConfig};
        use crate::telephony::{sim, twilio};
        let provider = match self.telephony {
            TelephonyKind::Sim => ProviderConfig::Sim(sim::SimConfig {
                delay: Duration::from_millis(self.sim_delay_ms),
                outcomes: sim::parse_outcomes(&self.sim_outcomes)?,
            }),
            TelephonyKind::Twilio => {
                let (Some(sid), Some(token)) = (&self.twilio_account_sid, &self.twilio_auth_token)
                else {
                    return Err(TelephonyError::TwilioMissing);
                };
                let mut cfg = twilio::TwilioConfig::new(sid.clone(), token.clone());
                cfg.api_base = self.twilio_api_base.trim_end_matches('/').to_owned();
                cfg.request_timeout = Duration::from_millis(self.twilio_timeout_ms.max(1));
                cfg.connect_timeout = cfg.connect_timeout.min(cfg.request_timeout / 2);
                ProviderConfig::Twilio(cfg)
            }
        };
        Ok(EngineConfig {
            clock: crate::clock::Clock::System,
            provider,
            callbacks: CallbackSettings {
                public_url: self.public_url(listen),
                unknown_window: Duration::from_secs(self.unknown_window_s),
                outcome_timeout: Duration::from_secs(self.outcome_timeout_s),
                provider_concurrency: self.provider_concurrency.max(1),
                reconcile_after: Duration::from_secs(self.reconcile_s.max(1)),
                ..CallbackSettings::default()
            },
        })
    }
}
