//! Cancelling a job's run: the run ends `cancelled` and nothing more of it executes.
//!
//! The transaction locks the run row first and never waits on a step row. A worker holds the
//! run row for the whole of a step (its step transaction locks it when it loads the run), so a
//! running step finishes first and the cancel lands after it; a step that is about to start
//! finds the run ended and does nothing (`steps::claim`). Jobs that no worker holds
//! (`Pending`, `Failed`) are killed, so a waiting callback is never even fetched; one that a
//! worker already fetched is let through to that same no-op. Step rows that a worker holds at
//! this moment are skipped (`SKIP LOCKED`) rather than waited for: the worker settles them
//! itself, and waiting could deadlock with its own lock order (step, then run).

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::action::{ActionResult, Outcome, run_of_job};
use super::actor::Actor;
use super::error::{OperatorError, Result};
use crate::lead::{RunStatus, StepStatus};
use crate::metrics::Pending;
use crate::timeline;

/// Whether a cancel may end a run in `status`: an active one, or a `failed` one (discarding its
/// dead letter).
fn cancellable(status: RunStatus) -> bool {
    !status.is_terminal() || status == RunStatus::Failed
}

pub async fn cancel(pool: &PgPool, job_id: &str, actor: &Actor) -> Result<ActionResult> {
    let mut tx = pool.begin().await?;
    // Counted once the cancel commits (leadflow_runs_finished_total{status="cancelled"}).
    let finished = Pending::default();
    let run_id = run_of_job(&mut tx, job_id).await?;
    let (status, lead_id): (String, Uuid) =
        sqlx::query_as("SELECT status, lead_id FROM runs WHERE id = $1 FOR UPDATE")
            .bind(run_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| OperatorError::NotFound(format!("No run for job {job_id}")))?;
    let previous = status.parse::<RunStatus>().ok();
    let (outcome, message, detail) = if previous == Some(RunStatus::Cancelled) {
        // Recorded all the same: the timeline answers "who asked for what, when".
        let detail = json!({ "job_id": job_id, "result": Outcome::Unchanged });
        let message = format!("Run {run_id} is already cancelled");
        (Outcome::Unchanged, message, detail)
    } else if let Some(before) = previous.filter(|s| cancellable(*s)) {
        let (workflow, killed) = end_run(&mut tx, run_id, actor).await?;
        if let Some(ended) = crate::engine::run_ended(before, RunStatus::Cancelled, workflow) {
            finished.push(ended);
        }
        let message = format!(
            "Run {run_id} is cancelled ({} waiting job{} killed)",
            killed.len(),
            if killed.len() == 1 { "" } else { "s" }
        );
        let detail = json!({ "job_id": job_id, "result": Outcome::Cancelled, "previous_status": status, "killed_jobs": killed });
        (Outcome::Cancelled, message, detail)
    } else {
        return Err(OperatorError::Conflict(format!(
            "Run {run_id} already ended {status}; there is nothing to cancel"
        )));
    };
    timeline::record(
        &mut tx,
        lead_id,
        Some(run_id),
        "operator.cancel",
        actor.as_str(),
        detail,
    )
    .await?;
    tx.commit().await?;
    finished.committed();
    tracing::info!(job_id, %run_id, %actor, ?outcome, "cancel");
    Ok(ActionResult {
        job_id: job_id.to_owned(),
        result: outcome,
        message,
        run_id,
        lead_id,
    })
}

/// Ends the (locked) run, kills its jobs that no worker holds and settles the steps no
/// worker holds; returns the run's workflow and the killed jobs' ids.
async fn end_run(
    tx: &mut PgConnection,
    run_id: Uuid,
    actor: &Actor,
) -> Result<(String, Vec<String>)> {
    let (workflow,): (String,) = sqlx::query_as(
        "UPDATE runs SET status = $3, reason = $2, updated_at = now() WHERE id = $1 \
         RETURNING workflow",
    )
    .bind(run_id)
    .bind(format!("cancelled by {actor}"))
    .bind(RunStatus::Cancelled.as_str())
    .fetch_one(&mut *tx)
    .await?;
    let killed: Vec<(String,)> = sqlx::query_as(
        "UPDATE apalis.jobs SET status = 'Killed', done_at = now() \
         WHERE id IN (SELECT job_id FROM steps WHERE run_id = $1 AND job_id IS NOT NULL \
                        AND (status = ANY($2) OR status = $3)) \
           AND status IN ('Pending', 'Failed') \
         RETURNING id",
    )
    .bind(run_id)
    .bind(StepStatus::open_names())
    .bind(StepStatus::Failed.as_str())
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE steps SET status = $3, finished_at = now(), next_run_at = NULL \
         WHERE (run_id, name, n) IN ( \
             SELECT run_id, name, n FROM steps \
             WHERE run_id = $1 AND status = ANY($2) \
             FOR UPDATE SKIP LOCKED)",
    )
    .bind(run_id)
    .bind(StepStatus::open_names())
    .bind(StepStatus::Cancelled.as_str())
    .execute(&mut *tx)
    .await?;
    Ok((workflow, killed.into_iter().map(|(id,)| id).collect()))
}
