//! The engine: it runs the steps of the graph ([`crate::graph`]) on the queues. Its queue
//! machinery is here ([`queue`], [`announce`], [`wakeup`], [`claims`], [`pause`],
//! [`retention`]), with its policies (group commit, [`Group`]; fusion, `fused.rs`; hand-off
//! and eager runs, [`Handoff`]) and the effect step ([`callback`]).
//!
//! A step job is executed in one transaction: lock the step row, skip it if a previous
//! delivery already applied it (apalis may deliver a job again after a crash), decide, then
//! record the output, move the run, and enqueue the next step — all committed together, so the
//! graph never forks or stalls. A failure is recorded in its own transaction with the next
//! attempt time, which is also written to the job's `run_at`: retries survive restarts.
//! Executions of a step that are ready together share that transaction ([`Group`]).

pub mod announce;
mod batch;
pub mod callback;
pub mod claims;
mod context;
mod decide;
mod eager;
#[cfg(feature = "testing")]
pub mod faults;
#[cfg(not(feature = "testing"))]
#[path = "faults_off.rs"]
pub mod faults;
mod fused;
mod group;
pub mod pause;
pub mod queue;
mod reads;
mod resources;
pub mod retention;
mod settings;
pub mod wakeup;
mod writes;

use std::time::Instant;

use serde_json::{Value, json};
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use crate::graph::{Kind, Step};
use crate::lead::{RunStatus, StepStatus};
use crate::metrics::{self, Observation, StepOutcome};
use crate::timeline;
pub use context::{LockedStep, RunContext};
pub use eager::Handoff;
pub use fused::Fusion;
pub use group::Group;
use queue::{NewJob, QueueError, StepJob};
pub use resources::{CallbackSettings, Engine, EngineConfig, EngineError, ProviderConfig};
pub use settings::{TelephonyError, TelephonyKind, TelephonySettings};
use writes::Writes;
pub(crate) use writes::{Executions, NewRow, insert_step_rows_sql, run_ended};

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("run {0} has no lead or does not exist")]
    RunMissing(Uuid),
    #[error("workflow {0:?} is not loaded")]
    WorkflowMissing(String),
    #[error("team {team:?} is not in workflow {workflow:?}")]
    TeamMissing { workflow: String, team: String },
    #[error("stored submission of lead {lead_id} is unreadable: {source}")]
    Submission {
        lead_id: Uuid,
        source: serde_json::Error,
    },
    #[error("injected fault in {0}")]
    Injected(Step),
    #[error("step {0} is not a database-only step: the engine has no decision to run for it")]
    NotDatabase(Step),
}

impl StepError {
    /// The database error underneath, if that is what this is (to tell an outage apart).
    pub fn db_error(&self) -> Option<&sqlx::Error> {
        match self {
            StepError::Db(e) => Some(e),
            StepError::Queue(QueueError::Push {
                source: apalis_postgres::Error::Database(e),
                ..
            }) => Some(e),
            _ => None,
        }
    }
}

/// A step's decision: go on to another step, or end the run.
pub(crate) enum Transition {
    Next {
        step: Step,
        output: Value,
        event: &'static str,
        run_at: Option<jiff::Timestamp>,
    },
    Finish {
        status: RunStatus,
        reason: Option<String>,
        output: Value,
        event: &'static str,
    },
}

/// The span of one step execution. `lead_id` is filled in by [`admit`] once the run is
/// loaded, so that every log line of the step (JSON logs carry the span) names the lead, the
/// run and the job.
pub(crate) fn span(step: Step, job: StepJob, job_id: &str, attempt: u32) -> tracing::Span {
    tracing::info_span!(
        "step",
        %step,
        lead_id = tracing::field::Empty,
        run_id = %job.run_id,
        n = job.n,
        job_id,
        attempt
    )
}

/// Runs one delivery of a step job. `attempt` is 1 for the first execution.
pub async fn run_job(
    engine: &Engine,
    step: Step,
    job: StepJob,
    job_id: &str,
    attempt: u32,
) -> Result<(), StepError> {
    async {
        let started = Instant::now();
        let result = execute(engine, step, job, job_id, attempt).await;
        conclude(engine, step, job, job_id, attempt, started, result).await
    }
    .instrument(span(step, job, job_id, attempt))
    .await
}

/// Ends a delivery that started at `started`: a failure is recorded (a retry, or the run
/// failed); the execution is counted and logged.
pub(crate) async fn conclude(
    engine: &Engine,
    step: Step,
    job: StepJob,
    job_id: &str,
    attempt: u32,
    started: Instant,
    result: Result<(), StepError>,
) -> Result<(), StepError> {
    let outcome = match &result {
        Ok(()) => StepOutcome::Ok,
        Err(err) => {
            tracing::warn!(error = %err, "step failed");
            match record_failure(engine, step, job, job_id, attempt, err).await {
                Ok(outcome) => outcome,
                Err(record_err) => {
                    // The job stays claimed; apalis re-delivers it after the rescue timeout.
                    tracing::error!(error = %record_err, "could not record the step failure");
                    StepOutcome::Retry
                }
            }
        }
    };
    let elapsed = started.elapsed();
    metrics::step_run(step, outcome, elapsed);
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    tracing::debug!(outcome = outcome.as_str(), elapsed_ms, "step done");
    result
}

/// Locks the step row and loads its run; see [`admit`].
pub(crate) async fn claim(
    tx: &mut PgConnection,
    step: Step,
    job: StepJob,
    job_id: &str,
    attempt: u32,
) -> Result<Option<RunContext>, StepError> {
    let row = RunContext::lock_step(tx, job.run_id, step.as_str(), job.n).await?;
    admit(tx, step, job, job_id, attempt, row).await
}

/// Decides whether a delivery runs, given its locked step row. `None` when there is nothing
/// to do: the job is a stale delivery (the step has moved on to another job), the step is
/// already settled, or the run has ended (the step is then marked cancelled).
async fn admit(
    tx: &mut PgConnection,
    step: Step,
    job: StepJob,
    job_id: &str,
    attempt: u32,
    row: Option<LockedStep>,
) -> Result<Option<RunContext>, StepError> {
    let Some(row) = row else {
        tracing::warn!("no step row for this job; nothing to do");
        return Ok(None);
    };
    if row.job_id.as_deref().is_some_and(|j| j != job_id) {
        tracing::info!("stale delivery: the step has moved on to another job");
        return Ok(None);
    }
    if row.is_settled() {
        tracing::info!(
            status = %row.status,
            "step already settled by an earlier delivery; skipping"
        );
        return Ok(None);
    }
    let ctx = row.ctx;
    tracing::Span::current().record("lead_id", tracing::field::display(ctx.lead_id));
    if ctx.status.is_terminal() {
        set_step(tx, step, job, StepStatus::Cancelled, attempt, None, None).await?;
        tracing::info!(run_status = %ctx.status, "run already ended; step not executed");
        return Ok(None);
    }
    Ok(Some(ctx))
}

async fn execute(
    engine: &Engine,
    step: Step,
    job: StepJob,
    job_id: &str,
    attempt: u32,
) -> Result<(), StepError> {
    if step.kind() == Kind::Effect {
        return callback::execute(engine, job, job_id, attempt).await;
    }
    let mut tx = engine.pool.begin().await?;
    let Some(ctx) = claim(&mut tx, step, job, job_id, attempt).await? else {
        tx.commit().await?;
        return Ok(());
    };
    engine.faults.check(step).await?;
    let mut writes = Writes::new(step);
    let execution = decide::Execution::Queued {
        job,
        attempt,
        job_id,
    };
    decide::decide_all(&mut tx, engine, step, &[(execution, &ctx)], &mut writes).await?;
    let ended = writes.flush(&mut tx).await?.ended;
    tx.commit().await?;
    for ended in ended {
        ended.record();
    }
    Ok(())
}

/// Creates the step row and its job together. Used by intake for the first worker step and
/// by each step for the next one.
pub async fn enqueue(
    conn: &mut PgConnection,
    step: Step,
    job: StepJob,
    run_at: Option<jiff::Timestamp>,
    max_attempts: u32,
) -> Result<(), StepError> {
    let new = NewJob {
        job,
        run_at,
        max_attempts,
    };
    enqueue_all(conn, step, &[new], None).await?;
    Ok(())
}

/// New executions of `step` to insert ([`Executions`]), each with a new job id; with
/// `started`, their jobs start so (due now) instead of queued.
pub(crate) fn new_executions<'a>(
    step: Step,
    jobs: &[NewJob],
    started: Option<&'a queue::Started>,
) -> Vec<NewRow<'a>> {
    jobs.iter()
        .map(|job| NewRow {
            step,
            job: *job,
            job_id: queue::new_job_id().to_string(),
            output: None,
            started,
        })
        .collect()
}

/// [`enqueue`] for several executions of `step`, in one statement; with `started`, their jobs
/// start so (due now) instead of queued. Returns their job ids.
pub(crate) async fn enqueue_all(
    conn: &mut PgConnection,
    step: Step,
    jobs: &[NewJob],
    started: Option<&queue::Started>,
) -> Result<Vec<String>, StepError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = new_executions(step, jobs, started);
    writes::insert_steps(conn, &rows).await?;
    Ok(rows.into_iter().map(|r| r.job_id).collect())
}

async fn set_step(
    conn: &mut PgConnection,
    step: Step,
    job: StepJob,
    status: StepStatus,
    attempt: u32,
    output: Option<&Value>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let row = writes::Settle {
        job,
        attempt,
        output: output.cloned(),
        error: error.map(str::to_owned),
    };
    writes::settle_steps(conn, step, status, &[row]).await
}

/// Moves a run to `status` (when given) unless it already ended; always bumps `updated_at`.
/// When this call is what ended the run, returns that fact, to be counted once committed.
async fn touch_run(
    conn: &mut PgConnection,
    run_id: Uuid,
    status: Option<RunStatus>,
    reason: Option<&str>,
) -> Result<Option<Observation>, sqlx::Error> {
    let run = writes::RunMove {
        run_id,
        status,
        reason: reason.map(str::to_owned),
        team: None,
        duplicate_of: None,
    };
    Ok(writes::move_runs(conn, &[run]).await?.pop())
}

/// Records a failed execution: schedules the retry in the job row itself, or, after the last
/// attempt, fails the step and its run (the dead letter an operator sees).
async fn record_failure(
    engine: &Engine,
    step: Step,
    job: StepJob,
    job_id: &str,
    attempt: u32,
    err: &StepError,
) -> Result<StepOutcome, StepError> {
    let mut tx = engine.pool.begin().await?;
    let row: Option<(i32, Uuid, String)> = sqlx::query_as(
        "SELECT s.max_attempts, r.lead_id, r.workflow FROM steps s JOIN runs r ON r.id = s.run_id \
         WHERE s.run_id = $1 AND s.name = $2 AND s.n = $3 FOR NO KEY UPDATE OF s",
    )
    .bind(job.run_id)
    .bind(step.as_str())
    .bind(job.n)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((max_attempts, lead_id, workflow)) = row else {
        // No step row: nothing will run this job again.
        return Ok(StepOutcome::Failed);
    };
    let policy = engine
        .workflows
        .get(&workflow)
        .map(|w| w.retry)
        .unwrap_or_default();
    let policy = crate::retry::RetryPolicy {
        max_attempts: max_attempts.max(1) as u32,
        ..policy
    };
    let message = err.to_string();
    let mut ended = None;
    let outcome = match policy.delay_after(attempt, rand::random()) {
        Some(delay) => {
            let delay_ms = delay.as_millis() as i64;
            let (next_run_at,): (jiff_sqlx::Timestamp,) = sqlx::query_as(
                "UPDATE steps SET status = $7, attempts = GREATEST(attempts, $4), error = $5, \
                 started_at = COALESCE(started_at, now()), \
                 next_run_at = clock_timestamp() + make_interval(secs => $6::float8 / 1000) \
                 WHERE run_id = $1 AND name = $2 AND n = $3 RETURNING next_run_at",
            )
            .bind(job.run_id)
            .bind(step.as_str())
            .bind(job.n)
            .bind(attempt as i32)
            .bind(&message)
            .bind(delay_ms)
            .bind(StepStatus::Retrying.as_str())
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("UPDATE apalis.jobs SET run_at = $2 WHERE id = $1")
                .bind(job_id)
                .bind(next_run_at)
                .execute(&mut *tx)
                .await?;
            let detail = json!({
                "step": step, "attempt": attempt, "error": message,
                "next_run_at": next_run_at.to_jiff().to_string(),
            });
            timeline::record(
                &mut tx,
                lead_id,
                Some(job.run_id),
                "step.retry",
                timeline::SYSTEM,
                detail,
            )
            .await?;
            StepOutcome::Retry
        }
        None => {
            let failed = StepStatus::Failed;
            set_step(&mut tx, step, job, failed, attempt, None, Some(&message)).await?;
            let reason = format!("{step} failed after {attempt} attempts: {message}");
            ended = touch_run(&mut tx, job.run_id, Some(RunStatus::Failed), Some(&reason)).await?;
            let detail = json!({ "step": step, "attempt": attempt, "error": message });
            timeline::record(
                &mut tx,
                lead_id,
                Some(job.run_id),
                "run.failed",
                timeline::SYSTEM,
                detail,
            )
            .await?;
            // The job row is now the dead letter: Failed with attempts = max_attempts.
            sqlx::query(
                "UPDATE apalis.jobs SET max_attempts = LEAST(max_attempts, $2) WHERE id = $1",
            )
            .bind(job_id)
            .bind(attempt as i32)
            .execute(&mut *tx)
            .await?;
            StepOutcome::Failed
        }
    };
    tx.commit().await?;
    if let Some(ended) = ended {
        ended.record();
    }
    Ok(outcome)
}
