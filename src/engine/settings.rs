//! Who places the callback calls, and how the callback step waits for them: the settings
//! behind [`EngineConfig`].

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::{CallbackSettings, EngineConfig, ProviderConfig};

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

    pub fn engine_config(&self, listen: SocketAddr) -> Result<EngineConfig, TelephonyError> {
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
