//! The HTTP side of `serve`: where it listens, the admin token, and the limits every request
//! is held to.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

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
