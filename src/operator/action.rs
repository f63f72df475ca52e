//! What an action on a job did. Every action is safe to repeat: a second retry of a job that
//! is already queued, or a second cancel of a cancelled run, changes nothing and says so.

use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::error::{OperatorError, Result};
use super::queues;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A dead job was reset and queued again; its run resumed.
    Retried,
    /// A job waiting for its backoff was made due now.
    BroughtForward,
    /// The run was cancelled.
    Cancelled,
    /// Nothing needed doing (already queued, running, or cancelled).
    Unchanged,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActionResult {
    pub job_id: String,
    pub result: Outcome,
    pub message: String,
    pub run_id: Uuid,
    pub lead_id: Uuid,
}

/// The run a job belongs to, from its arguments, or `NotFound`.
pub(super) async fn run_of_job(conn: &mut PgConnection, job_id: &str) -> Result<Uuid> {
    let run: Option<(Option<Uuid>,)> = sqlx::query_as(
        "SELECT (convert_from(job, 'UTF8')::jsonb ->> 'run_id')::uuid FROM apalis.jobs \
         WHERE id = $1 AND job_type = ANY($2)",
    )
    .bind(job_id)
    .bind(queues::all_names())
    .fetch_optional(conn)
    .await?;
    run.and_then(|(r,)| r)
        .ok_or_else(|| OperatorError::NotFound(format!("No job {job_id:?}")))
}
