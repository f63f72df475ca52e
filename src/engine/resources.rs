//! [`Engine`]: what the steps share — the pool, the workflows, the clock, the telephony
//! provider and the callback settings — built in one place by `serve`, `worker` and tests.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;

use super::StepError;
use super::callback;
use super::faults::Faults;
use crate::clock::Clock;
use crate::engine::claims::Claims;
use crate::retry::RetryPolicy;
use crate::telephony::Provider;
use crate::telephony::sim::{Sim, SimConfig};
use crate::telephony::twilio::{ConfigError, Twilio, TwilioConfig};
use crate::workflow::{Team, Workflow, Workflows};

/// Which provider places calls.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    /// No network: outcomes come back through an in-process channel after a delay.
    Sim(SimConfig),
    Twilio(TwilioConfig),
}

#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// The URL providers reach leadflow at, for TwiML and status callbacks.
    pub public_url: String,
    /// How long a call that may have gone out waits for a status callback before the
    /// attempt may be retried.
    pub unknown_window: Duration,
    /// How long after a call was placed, without a final status, leadflow asks the provider
    /// itself how the call stands (and again at this interval).
    pub reconcile_after: Duration,
    /// How long a placed call may go without a final status before its run is failed.
    pub outcome_timeout: Duration,
    /// Backoff while the provider is unreachable (connection refused, 5xx); long enough to
    /// outlast an outage of several minutes.
    pub provider_retry: RetryPolicy,
    /// How long the lead's phone rings before the attempt is `no-answer`.
    pub lead_ring_timeout: Duration,
    /// Calls being placed at once by this process. A slow provider then holds at most this
    /// many callback executions; the other steps, on their own queues, go on.
    pub provider_concurrency: usize,
}

impl Default for CallbackSettings {
    fn default() -> Self {
        CallbackSettings {
            public_url: "http://127.0.0.1:8080".to_owned(),
            unknown_window: Duration::from_secs(120),
            reconcile_after: Duration::from_secs(120),
            outcome_timeout: Duration::from_secs(2 * 3600),
            provider_retry: RetryPolicy {
                max_attempts: 12,
                base: Duration::from_secs(2),
                max: Duration::from_secs(300),
            },
            lead_ring_timeout: Duration::from_secs(30),
            provider_concurrency: 8,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub clock: Clock,
    pub provider: ProviderConfig,
    pub callbacks: CallbackSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("Twilio settings: {0}")]
    Twilio(#[from] ConfigError),
}

pub struct Engine {
    pub pool: PgPool,
    pub workflows: Arc<Workflows>,
    pub faults: Faults,
    pub clock: Clock,
    pub provider: Arc<dyn Provider>,
    pub callbacks: CallbackSettings,
    /// Twilio's auth token: verifies its status callbacks and keys the signed TwiML URLs.
    /// `None` with the simulator, whose outcomes never come over HTTP.
    pub twilio_auth_token: Option<String>,
    /// Keys the attempt id signed into TwiML URLs.
    pub url_key: Vec<u8>,
    /// Bounds the calls being placed at once (see [`CallbackSettings::provider_concurrency`]).
    pub provider_slots: tokio::sync::Semaphore,
    /// The jobs this process's workers claimed and execute, and those of its gone workers.
    pub claims: Claims,
    /// The simulator's count of calls whose report is not applied yet (see
    /// [`Engine::drain_reports`]).
    sim_outstanding: std::sync::Mutex<Option<Arc<std::sync::atomic::AtomicUsize>>>,
}

impl Engine {
    /// Builds the engine. With the simulator, also starts the task that feeds its reports to
    /// the same outcome path Twilio's status callbacks take (so it needs a Tokio runtime).
    pub fn build(
        pool: PgPool,
        workflows: Arc<Workflows>,
        config: EngineConfig,
    ) -> Result<Arc<Engine>, EngineError> {
        let (provider, reports, token): (Arc<dyn Provider>, _, _) = match config.provider {
            ProviderConfig::Sim(sim) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let sim = Sim::new(sim, tx);
                let outstanding = sim.outstanding();
                (Arc::new(sim), Some((rx, outstanding)), None)
            }
            ProviderConfig::Twilio(cfg) => {
                let token = cfg.auth_token.clone();
                (Arc::new(Twilio::new(cfg)?), None, Some(token))
            }
        };
        let url_key = match &token {
            Some(t) => t.as_bytes().to_vec(),
            // Only Twilio fetches TwiML; a per-process key keeps the route closed otherwise.
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let engine = Arc::new(Engine {
            pool,
            workflows,
            faults: Faults::default(),
            clock: config.clock,
            provider,
            provider_slots: tokio::sync::Semaphore::new(
                config.callbacks.provider_concurrency.max(1),
            ),
            callbacks: config.callbacks,
            claims: Claims::of_this_process(),
            twilio_auth_token: token,
            url_key,
            sim_outstanding: std::sync::Mutex::new(None),
        });
        if let Some((rx, outstanding)) = reports {
            *engine
                .sim_outstanding
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(outstanding.clone());
            tokio::spawn(callback::reports::pump_sim_reports(
                engine.clone(),
                rx,
                outstanding,
            ));
        }
        Ok(engine)
    }

    /// Waits (up to `within`) until every simulated call placed by this process has had its
    /// outcome applied; a no-op for real providers, whose reports reach any instance over HTTP.
    /// `true` when nothing is left outstanding.
    pub async fn drain_reports(&self, within: Duration) -> bool {
        let outstanding = self
            .sim_outstanding
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(outstanding) = outstanding else {
            return true;
        };
        let deadline = tokio::time::Instant::now() + within;
        while outstanding.load(std::sync::atomic::Ordering::SeqCst) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub fn workflow(&self, name: &str) -> Result<&Workflow, StepError> {
        self.workflows
            .get(name)
            .ok_or_else(|| StepError::WorkflowMissing(name.to_owned()))
    }

    pub fn team(&self, workflow: &str, team: &str) -> Result<&Team, StepError> {
        self.workflow(workflow)?
            .teams
            .get(team)
            .ok_or_else(|| StepError::TeamMissing {
                workflow: workflow.to_owned(),
                team: team.to_owned(),
            })
    }
}
