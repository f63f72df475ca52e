//! leadflow's own Prometheus metrics: every name, label and bucket in one place, the
//! process-global recorder, and the functions the rest of the code records through.
//!
//! **Labels.** A label value is either one of a fixed set written in this crate (a step, a run
//! status, a call outcome, a rejection reason, an HTTP status code) or a name an operator
//! configured (a hook, a workflow, a team). Never a lead id, phone number, email or token, and
//! never a value the sender of a request chose: a request whose token is not recognised counts
//! under `hook="unknown"`, and an authenticated one under its token's hook, whatever its body
//! claims.
//!
//! **One recorder per process.** The `metrics` facade keeps a single global recorder, so
//! [`install`] sets it once and later calls return the same handle. Several services in one
//! process (the tests) therefore share their counters.
//!
//! **Counted on commit.** What happens inside a database transaction is counted only once the
//! transaction commits ([`Pending`]): a rolled-back step runs again and must not be counted
//! twice.

mod exposure;
mod http;
mod monitor;
mod pending;
mod queue_stats;
mod settings;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use sqlx::PgPool;

use crate::engine::queue;
use crate::graph::Step;
use crate::lead::RunStatus;

pub use exposure::{Exposure, ExposureError};
pub use http::endpoint;
pub use pending::{Observation, Pending};
pub use settings::MetricsSettings;

pub const INTAKE_REQUESTS: &str = "leadflow_intake_requests_total";
pub const INTAKE_DURATION: &str = "leadflow_intake_request_duration_seconds";
pub const LEADS: &str = "leadflow_leads_total";
pub const LEAD_REJECTIONS: &str = "leadflow_lead_rejections_total";
pub const STEP_RUNS: &str = "leadflow_step_runs_total";
pub const STEP_DURATION: &str = "leadflow_step_duration_seconds";
pub const RUNS_FINISHED: &str = "leadflow_runs_finished_total";
pub const CALLBACK_ATTEMPTS: &str = "leadflow_callback_attempts_total";
pub const CALL_LOOKUPS: &str = "leadflow_call_lookups_total";
pub const SPEED_TO_LEAD: &str = "leadflow_speed_to_lead_seconds";
pub const QUEUE_JOBS: &str = "leadflow_queue_jobs";
pub const QUEUE_OLDEST_PENDING_AGE: &str = "leadflow_queue_oldest_pending_age_seconds";
pub const SCHEDULED_CALLBACKS: &str = "leadflow_scheduled_callbacks";
pub const QUEUE_STATS_REFRESHER: &str = "leadflow_queue_stats_refresher";
pub const WORKERS_ALIVE: &str = "leadflow_workers_alive";
pub const DB_POOL_CONNECTIONS: &str = "leadflow_db_pool_connections";
pub const DB_POOL_MAX: &str = "leadflow_db_pool_max";
pub const BUILD_INFO: &str = "leadflow_build_info";

/// Every metric leadflow exports (dashboards may use no other `leadflow_` name).
pub const ALL: [&str; 18] = [
    INTAKE_REQUESTS,
    INTAKE_DURATION,
    LEADS,
    LEAD_REJECTIONS,
    STEP_RUNS,
    STEP_DURATION,
    RUNS_FINISHED,
    CALLBACK_ATTEMPTS,
    CALL_LOOKUPS,
    SPEED_TO_LEAD,
    QUEUE_JOBS,
    QUEUE_OLDEST_PENDING_AGE,
    SCHEDULED_CALLBACKS,
    QUEUE_STATS_REFRESHER,
    WORKERS_ALIVE,
    DB_POOL_CONNECTIONS,
    DB_POOL_MAX,
    BUILD_INFO,
];

/// HTTP handling and step transactions: a millisecond for a warm intake, up to the 10 s
/// request timeout (and a slow provider inside the callback step) at the top.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Speed to lead spans six orders of magnitude. A lead called at once is a matter of
/// milliseconds (the target is a p50 under 25 ms), the alert's line is 60 s, and a lead
/// that arrives on a Friday evening waits for Monday's opening, about 2.5 days, or longer
/// over a holiday. Hence roughly 1-2.5-5 steps up to a minute, then the natural units of a
/// wait: minutes, hours, a working day, a day, a weekend, a week. 60 s is a bucket edge so
/// the alert compares against an exact boundary.
pub const SPEED_TO_LEAD_BUCKETS: [f64; 26] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 43200.0, 86400.0, 172800.0, 345600.0, 604800.0,
];

/// The states `leadflow_queue_jobs` reports, from apalis's job statuses: `pending` is due and
/// unclaimed, `scheduled` waits for its `run_at` (a callback held for hours, say), `running`
/// is claimed, `retrying` failed with attempts left, `dead` failed for good or was killed.
pub const QUEUE_STATES: [&str; 6] = [
    "pending",
    "scheduled",
    "running",
    "retrying",
    "dead",
    "done",
];

/// The results `leadflow_call_lookups_total` counts: the call was found and adopted, the
/// provider listed none, or the provider could not be asked.
pub const LOOKUP_RESULTS: [&str; 3] = ["adopted", "none", "error"];

/// The label for requests whose token named no hook.
pub const UNKNOWN_HOOK: &str = "unknown";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs leadflow's recorder as the process's global one (once), and returns its handle.
///
/// Gauges not set for `gauge_idle` disappear from the output: that is how a process that
/// stops refreshing the database-wide gauges (it lost the election) stops exporting stale
/// values. Every other gauge is set at each scrape.
pub fn install(gauge_idle: Duration) -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = builder(gauge_idle).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "metric buckets rejected; histograms export as summaries");
            PrometheusBuilder::new()
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; leadflow's metrics will be empty");
        }
        describe();
        handle
    })
}

/// The handle, installing with the default idle time if nothing installed it yet.
pub fn handle() -> &'static PrometheusHandle {
    install(gauge_idle_for(MetricsSettings::DEFAULT_REFRESH))
}

/// How long a gauge may go unset: three refreshes, and never under a minute.
pub fn gauge_idle_for(refresh: Duration) -> Duration {
    (refresh * 3).max(Duration::from_secs(60))
}

fn builder(gauge_idle: Duration) -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .idle_timeout(MetricKindMask::GAUGE, Some(gauge_idle))
        .set_buckets_for_metric(Matcher::Full(INTAKE_DURATION.into()), &LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(STEP_DURATION.into()), &LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(SPEED_TO_LEAD.into()), &SPEED_TO_LEAD_BUCKETS)
}

fn describe() {
    use Unit::{Count, Seconds};
    describe_counter!(
        INTAKE_REQUESTS,
        Count,
        "Intake webhook requests by hook and HTTP status code"
    );
    describe_histogram!(INTAKE_DURATION, Seconds, "Time to answer an intake request");
    describe_counter!(
        LEADS,
        Count,
        "Leads stored by intake: accepted, rejected (422, kept) or duplicate (idempotent replay)"
    );
    describe_counter!(
        LEAD_REJECTIONS,
        Count,
        "Rejected leads by validation reason"
    );
    describe_counter!(
        STEP_RUNS,
        Count,
        "Worker step executions by outcome: ok, retry (backoff scheduled) or failed (last attempt)"
    );
    describe_histogram!(
        STEP_DURATION,
        Seconds,
        "Time one worker step execution takes, provider calls included"
    );
    describe_counter!(RUNS_FINISHED, Count, "Runs that reached a terminal status");
    describe_counter!(
        CALLBACK_ATTEMPTS,
        Count,
        "Callback attempts by team and final outcome"
    );
    describe_counter!(
        CALL_LOOKUPS,
        Count,
        "Provider lookups for calls whose answer was lost, by result: adopted (the call was found), none (it never went out), error (the provider could not be asked)"
    );
    describe_histogram!(
        SPEED_TO_LEAD,
        Seconds,
        "From a lead's acceptance to its first call placed; waited=true when the call was held for hours or the daily cap"
    );
    describe_gauge!(
        QUEUE_JOBS,
        Count,
        "Jobs per queue and state (exported by the one process elected to refresh it)"
    );
    describe_gauge!(
        QUEUE_OLDEST_PENDING_AGE,
        Seconds,
        "Age of the oldest due, unclaimed job per queue (0 when none)"
    );
    describe_gauge!(
        SCHEDULED_CALLBACKS,
        Count,
        "Callbacks waiting for the team's hours or the lead's calling window"
    );
    describe_gauge!(
        QUEUE_STATS_REFRESHER,
        Count,
        "1 when this process holds the lock that elects it to refresh the database-wide gauges"
    );
    describe_gauge!(
        WORKERS_ALIVE,
        Count,
        "Workers running in this process per queue"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Count,
        "Database pool connections by state (idle, in_use)"
    );
    describe_gauge!(DB_POOL_MAX, Count, "Database pool size limit");
    describe_gauge!(
        BUILD_INFO,
        Count,
        "Always 1; the version label says which build runs"
    );
}

/// The text exposition, with the gauges of this process read now.
pub fn render(pool: &PgPool) -> String {
    let handle = handle();
    sample(pool);
    handle.render()
}

/// Sets the gauges that describe this process rather than the database: set at every
/// scrape, so they are exact when read and never idle out.
fn sample(pool: &PgPool) {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let size = f64::from(pool.size());
    let idle = pool.num_idle() as f64;
    gauge!(DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
    gauge!(DB_POOL_CONNECTIONS, "state" => "in_use").set((size - idle).max(0.0));
    gauge!(DB_POOL_MAX).set(f64::from(pool.options().get_max_connections()));
    for (i, step) in queue::WORKER_STEPS.into_iter().enumerate() {
        let alive = WORKERS[i].load(Ordering::Relaxed);
        gauge!(WORKERS_ALIVE, "queue" => queue::queue_name(step)).set(alive as f64);
    }
}

/// Zero-valued series for every label set known at start, so that the first increment is a
/// visible change: `increase()` over a series that appears with value 1 sees nothing, and the
/// failed-runs alert would miss the first failure.
pub fn init_series<'a>(workflows: impl IntoIterator<Item = &'a str>) {
    for step in queue::WORKER_STEPS {
        for outcome in StepOutcome::ALL {
            counter!(STEP_RUNS, "step" => step.as_str(), "outcome" => outcome.as_str()).absolute(0);
        }
    }
    for result in LOOKUP_RESULTS {
        counter!(CALL_LOOKUPS, "result" => result).absolute(0);
    }
    for workflow in workflows {
        for status in RunStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            counter!(RUNS_FINISHED, "workflow" => workflow.to_owned(), "status" => status.as_str())
                .absolute(0);
        }
    }
}

/// Live workers per worker queue, in `queue::WORKER_STEPS` order.
static WORKERS: [AtomicI64; crate::graph::WORKER_COUNT] =
    [const { AtomicI64::new(0) }; crate::graph::WORKER_COUNT];

/// Counts a worker as alive for as long as it is held.
pub struct WorkerAlive(Option<&'static AtomicI64>);

pub fn worker_alive(step: Step) -> WorkerAlive {
    let slot = queue::WORKER_STEPS
        .iter()
        .position(|s| *s == step)
        .and_then(|i| WORKERS.get(i));
    if let Some(counter) = slot {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    WorkerAlive(slot)
}

impl Drop for WorkerAlive {
    fn drop(&mut self) {
        if let Some(counter) = self.0 {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How one intake request was answered. `hook` is the token's hook, `None` before (or
/// without) authentication.
pub fn intake_request(hook: Option<&str>, code: u16, elapsed: Duration) {
    let hook = hook.unwrap_or(UNKNOWN_HOOK).to_owned();
    counter!(INTAKE_REQUESTS, "hook" => hook.clone(), "code" => code.to_string()).increment(1);
    metrics::histogram!(INTAKE_DURATION, "hook" => hook).record(elapsed.as_secs_f64());
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadOutcome {
    Accepted,
    /// Stored `rejected` (a 422), with its validation reason.
    Rejected(&'static str),
    /// The same request again under the same idempotency key: the first answer replayed.
    Duplicate,
}

/// A lead stored (or replayed) by intake; call after the intake transaction commits.
pub fn lead(hook: &str, outcome: LeadOutcome) {
    let name = match outcome {
        LeadOutcome::Accepted => "accepted",
        LeadOutcome::Rejected(_) => "rejected",
        LeadOutcome::Duplicate => "duplicate",
    };
    counter!(LEADS, "hook" => hook.to_owned(), "outcome" => name).increment(1);
    if let LeadOutcome::Rejected(reason) = outcome {
        counter!(LEAD_REJECTIONS, "hook" => hook.to_owned(), "reason" => reason).increment(1);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepOutcome {
    Ok,
    /// Failed, with the next attempt scheduled.
    Retry,
    /// Failed on its last attempt: the run is failed.
    Failed,
}

impl StepOutcome {
    pub const ALL: [StepOutcome; 3] = [StepOutcome::Ok, StepOutcome::Retry, StepOutcome::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Ok => "ok",
            StepOutcome::Retry => "retry",
            StepOutcome::Failed => "failed",
        }
    }
}

/// One delivery of a worker step.
pub fn step_run(step: Step, outcome: StepOutcome, elapsed: Duration) {
    counter!(STEP_RUNS, "step" => step.as_str(), "outcome" => outcome.as_str()).increment(1);
    metrics::histogram!(STEP_DURATION, "step" => step.as_str()).record(elapsed.as_secs_f64());
}
