//! Retrying jobs: a dead letter is reset and its run resumes from that step; a job waiting
//! for its backoff is made due now.
//!
//! Race-free against workers: the transaction locks the step row, then the run row, then the
//! job row — the order a worker's own step transaction takes them — and only touches a job
//! that no worker holds (`Failed`). A second retry of the same job finds it `Pending` and
//! changes nothing.

use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::action::{ActionResult, Outcome, run_of_job};
use super::actor::Actor;
use super::error::{OperatorError, Result};
use super::queues;
use crate::engine::queue::{self, queue_name};
use crate::graph::Step;
use crate::lead::{RunStatus, StepStatus};
use crate::timeline;

#[derive(sqlx::FromRow)]
struct Locked {
    run_id: Uuid,
    name: String,
    n: i32,
    status: String,
}

/// What a retry does to a job, given apalis's status of the job, whether its attempts are
/// spent, and its step's and run's statuses (`None`: a status this version does not know).
#[derive(Debug, PartialEq, Eq)]
enum Retry {
    /// The job waits or runs already: nothing to do.
    AlreadyQueued,
    /// The job waits out a backoff: it runs now instead.
    BringForward,
    /// The job is dead and its run failed: fresh attempts, the step and run reopened.
    Reset,
    Refused,
}

fn choose(job: &str, exhausted: bool, step: Option<StepStatus>, run: Option<RunStatus>) -> Retry {
    match (job, step, run) {
        ("Pending" | "Queued" | "Running", _, _) => Retry::AlreadyQueued,
        ("Failed", Some(StepStatus::Retrying), _) if !exhausted => Retry::BringForward,
        ("Failed", Some(StepStatus::Failed), Some(RunStatus::Failed)) => Retry::Reset,
        _ => Retry::Refused,
    }
}

pub async fn retry(pool: &PgPool, job_id: &str, actor: &Actor) -> Result<ActionResult> {
    let mut tx = pool.begin().await?;
    let step: Option<Locked> =
        sqlx::query_as("SELECT run_id, name, n, status FROM steps WHERE job_id = $1 FOR UPDATE")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(step) = step else {
        // Either no such job, or one a waiting step has since replaced with a newer job.
        run_of_job(&mut tx, job_id).await?;
        return Err(OperatorError::Conflict(format!(
            "Job {job_id} has been superseded by a newer job of its step; retry that one"
        )));
    };
    let (run_status, lead_id): (String, Uuid) =
        sqlx::query_as("SELECT status, lead_id FROM runs WHERE id = $1 FOR UPDATE")
            .bind(step.run_id)
            .fetch_one(&mut *tx)
            .await?;
    let (job_status, exhausted): (String, bool) = sqlx::query_as(
        "SELECT status, attempts >= max_attempts FROM apalis.jobs WHERE id = $1 FOR UPDATE",
    )
    .bind(job_id)
    .fetch_one(&mut *tx)
    .await?;
    let result = |outcome, message: String| ActionResult {
        job_id: job_id.to_owned(),
        result: outcome,
        message,
        run_id: step.run_id,
        lead_id,
    };
    let step_name: Step = step
        .name
        .parse()
        .map_err(|e| OperatorError::Conflict(format!("job {job_id}: {e}")))?;
    let step_status = step.status.parse::<StepStatus>().ok();
    let run_now = run_status.parse::<RunStatus>().ok();
    let done = match choose(&job_status, exhausted, step_status, run_now) {
        Retry::AlreadyQueued => result(
            Outcome::Unchanged,
            format!("Job {job_id} is already queued or running"),
        ),
        Retry::BringForward => {
            bring_forward(&mut tx, job_id, &step).await?;
            result(
                Outcome::BroughtForward,
                format!("Job {job_id} will run now instead of after its backoff"),
            )
        }
        Retry::Reset => {
            reset(&mut tx, job_id, &step).await?;
            result(
                Outcome::Retried,
                format!(
                    "Job {job_id} is queued again; its run resumes at {}",
                    step.name
                ),
            )
        }
        Retry::Refused => {
            let ended =
                run_now.is_some_and(|r| r == RunStatus::Failed || r == RunStatus::Cancelled);
            return Err(OperatorError::Conflict(format!(
                "Job {job_id} cannot be retried: the job is {job_status}, its {} step {} and its run {run_status}{}",
                step.name,
                step.status,
                if ended {
                    " (replay the lead to run it again)"
                } else {
                    ""
                }
            )));
        }
    };
    // Recorded even when nothing changed: the timeline answers "who asked for what, when".
    let detail = json!({ "job_id": job_id, "step": step.name, "n": step.n, "result": done.result });
    timeline::record(
        &mut tx,
        lead_id,
        Some(step.run_id),
        "operator.retry",
        actor.as_str(),
        detail,
    )
    .await?;
    if done.result != Outcome::Unchanged {
        queue::announce(&mut tx, step_name, job_id).await?;
    }
    tx.commit().await?;
    tracing::info!(job_id, %actor, result = ?done.result, "job retried");
    Ok(done)
}

async fn bring_forward(tx: &mut PgConnection, job_id: &str, step: &Locked) -> Result<()> {
    sqlx::query("UPDATE apalis.jobs SET run_at = now() WHERE id = $1")
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE steps SET next_run_at = now() WHERE run_id = $1 AND name = $2 AND n = $3")
        .bind(step.run_id)
        .bind(&step.name)
        .bind(step.n)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// Gives the dead job a fresh set of attempts and reopens its step and run. `lock_by` is
/// cleared so that a late acknowledgement from the worker that last held it cannot land.
async fn reset(tx: &mut PgConnection, job_id: &str, step: &Locked) -> Result<()> {
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), \
                lock_by = NULL, lock_at = NULL, done_at = NULL WHERE id = $1",
    )
    .bind(job_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE steps SET status = $4, attempts = 0, finished_at = NULL, \
                next_run_at = now(), error = NULL WHERE run_id = $1 AND name = $2 AND n = $3",
    )
    .bind(step.run_id)
    .bind(&step.name)
    .bind(step.n)
    .bind(StepStatus::Pending.as_str())
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE runs SET status = $2, reason = NULL, updated_at = now() WHERE id = $1")
        .bind(step.run_id)
        .bind(RunStatus::Running.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// What a bulk retry did.
#[derive(Debug, Default, Serialize)]
pub struct BulkSummary {
    pub retried: u64,
    pub unchanged: u64,
    /// Jobs that could not be retried, with why (a concurrent cancel, say).
    pub errors: Vec<BulkError>,
    /// More failed jobs remain beyond this call's limit.
    pub more: bool,
}

#[derive(Debug, Serialize)]
pub struct BulkError {
    pub job_id: String,
    pub message: String,
}

/// How many jobs one bulk retry handles at most, per call.
pub const BULK_MAX: u32 = 1000;
const BATCH: i64 = 100;

/// How many dead jobs a queue (or every queue) holds.
pub async fn count_failed(pool: &PgPool, queue: Option<Step>) -> Result<u64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM apalis.jobs \
         WHERE job_type = ANY($1) AND status = 'Failed' AND attempts >= max_attempts",
    )
    .bind(queue_filter(queue))
    .fetch_one(pool)
    .await?;
    Ok(n.max(0) as u64)
}

/// Retries up to `limit` dead jobs, oldest first, each in its own transaction (one failure
/// does not undo the others). `progress` is told after each job.
pub async fn retry_failed(
    pool: &PgPool,
    queue: Option<Step>,
    limit: u32,
    actor: &Actor,
    mut progress: impl FnMut(&str, &Result<ActionResult>),
) -> Result<BulkSummary> {
    let limit = u64::from(limit.clamp(1, BULK_MAX));
    let mut summary = BulkSummary::default();
    let mut after = String::new();
    let mut handled = 0u64;
    loop {
        let ids: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM apalis.jobs \
             WHERE job_type = ANY($1) AND status = 'Failed' AND attempts >= max_attempts AND id > $2 \
             ORDER BY id LIMIT $3",
        )
        .bind(queue_filter(queue))
        .bind(&after)
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        let Some((last,)) = ids.last() else {
            return Ok(summary);
        };
        after = last.clone();
        for (id,) in ids {
            if handled == limit {
                summary.more = true;
                return Ok(summary);
            }
            handled += 1;
            let outcome = retry(pool, &id, actor).await;
            progress(&id, &outcome);
            match outcome {
                Ok(r) if r.result == Outcome::Unchanged => summary.unchanged += 1,
                Ok(_) => summary.retried += 1,
                Err(OperatorError::Db(e)) => return Err(OperatorError::Db(e)),
                Err(e) => summary.errors.push(BulkError {
                    job_id: id,
                    message: e.to_string(),
                }),
            }
        }
    }
}

fn queue_filter(queue: Option<Step>) -> Vec<&'static str> {
    match queue {
        Some(step) => vec![queue_name(step)],
        None => queues::all_names(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_brings_a_backoff_forward_reopens_a_dead_run_and_refuses_the_rest() {
        let (retrying, failed, ok) = (
            Some(StepStatus::Retrying),
            Some(StepStatus::Failed),
            Some(StepStatus::Ok),
        );
        let (running, dead, cancelled) = (
            Some(RunStatus::Running),
            Some(RunStatus::Failed),
            Some(RunStatus::Cancelled),
        );
        assert_eq!(
            choose("Queued", false, retrying, running),
            Retry::AlreadyQueued
        );
        assert_eq!(
            choose("Failed", false, retrying, running),
            Retry::BringForward
        );
        assert_eq!(choose("Failed", true, retrying, running), Retry::Refused);
        assert_eq!(choose("Failed", true, failed, dead), Retry::Reset);
        assert_eq!(choose("Failed", true, failed, cancelled), Retry::Refused);
        assert_eq!(choose("Done", false, ok, running), Retry::Refused);
        assert_eq!(choose("Failed", true, None, dead), Retry::Refused);
    }
}
