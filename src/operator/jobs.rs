//! Jobs on leadflow's queues: a filtered, paged list, and one job in full. A job's arguments
//! name its run and step execution; they are decoded here so that every job, even a waiting
//! step's superseded one, leads back to its lead.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::error::Result;
use super::page::{Page, PageRequest};
use super::queues;
use super::state::{JobState, STATE_SQL};
use crate::db::At;
use crate::engine::queue::queue_name;
use crate::graph::Step;

#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub queue: Option<Step>,
    pub state: Option<JobState>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobSummary {
    pub id: String,
    pub queue: String,
    pub step: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// When it runs (or ran, or retries).
    pub run_at: At,
    pub done_at: Option<At>,
    /// The worker that holds or last held it.
    pub worker: Option<String>,
    pub run_id: Option<Uuid>,
    pub lead_id: Option<Uuid>,
    /// Which execution of the step in its run.
    pub n: Option<i32>,
    /// The last error, while the job is failed, retrying or cancelled.
    pub last_error: Option<String>,
}

/// The columns of [`JobSummary`] over `apalis.jobs j`, its decoded arguments `a`, its run
/// `r` and its step execution `s`.
const SUMMARY_SQL: &str = "j.id, j.job_type AS queue, substr(j.job_type, 10) AS step, \
     j.attempts, j.max_attempts, j.run_at, j.done_at, j.lock_by AS worker, \
     a.run_id, r.lead_id, a.n, \
     CASE WHEN j.status IN ('Failed', 'Killed') \
          THEN COALESCE(j.last_result ->> 'Err', s.error) END AS last_error";

const FROM_SQL: &str = "FROM apalis.jobs j \
     CROSS JOIN LATERAL (SELECT (args ->> 'run_id')::uuid AS run_id, (args ->> 'n')::int AS n \
                         FROM (SELECT convert_from(j.job, 'UTF8')::jsonb AS args) x) a \
     LEFT JOIN runs r ON r.id = a.run_id \
     LEFT JOIN steps s ON s.run_id = a.run_id AND s.name = substr(j.job_type, 10) AND s.n = a.n";

pub async fn list(
    pool: &PgPool,
    filter: &JobFilter,
    page: &PageRequest,
) -> Result<Page<JobSummary>> {
    let limit = page.limit();
    let queues: Vec<&str> = match filter.queue {
        Some(step) => vec![queue_name(step)],
        None => queues::all_names(),
    };
    let state = filter.state.map(JobState::filter);
    let mut tx = crate::db::custom_plans(pool).await?;
    let rows: Vec<JobSummary> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_SQL}, {STATE_SQL} AS state {FROM_SQL} \
         WHERE j.job_type = ANY($1) \
           AND ($2::text[] IS NULL OR j.status = ANY($2)) \
           AND ($3::bool IS NULL OR (j.run_at > now()) = $3) \
           AND ($4::bool IS NULL OR (j.attempts >= j.max_attempts) = $4) \
           AND ($5::text IS NULL OR j.id < $5) \
         ORDER BY j.id DESC LIMIT $6"
    )))
    .bind(&queues)
    .bind(state.as_ref().map(|s| s.statuses.to_vec()))
    .bind(state.as_ref().and_then(|s| s.later))
    .bind(state.as_ref().and_then(|s| s.exhausted))
    .bind(page.position()?)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Page::from_rows(rows, limit, |job| job.id.clone()))
}

/// One job in full: what it was asked to do, how it went, what comes next.
#[derive(Debug, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub summary: JobSummary,
    /// apalis's own status (`Pending`, `Queued`, `Running`, `Done`, `Failed`, `Killed`).
    pub status: String,
    pub args: Value,
    pub idempotency_key: Option<String>,
    pub locked_at: Option<At>,
    /// When it will run next, if it will.
    pub next_run_at: Option<At>,
    pub last_result: Option<Value>,
    /// The step execution this job belongs to.
    pub step_execution: Option<StepExecution>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StepExecution {
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    /// The job the step waits on now; another id than this one means this job is superseded.
    pub job_id: Option<String>,
    pub started_at: Option<At>,
    pub finished_at: Option<At>,
    pub next_run_at: Option<At>,
    pub output: Option<Value>,
    pub error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DetailRow {
    #[sqlx(flatten)]
    summary: JobSummary,
    status: String,
    args: Value,
    idempotency_key: Option<String>,
    lock_at: Option<At>,
    last_result: Option<Value>,
}

pub async fn show(pool: &PgPool, id: &str) -> Result<Option<JobDetail>> {
    let row: Option<DetailRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_SQL}, {STATE_SQL} AS state, j.status, \
                convert_from(j.job, 'UTF8')::jsonb AS args, j.idempotency_key, j.lock_at, \
                j.last_result \
         {FROM_SQL} WHERE j.id = $1 AND j.job_type = ANY($2)"
    )))
    .bind(id)
    .bind(queues::all_names())
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let step_execution = match (row.summary.run_id, row.summary.n) {
        (Some(run_id), Some(n)) => {
            sqlx::query_as(
                "SELECT status, attempts, max_attempts, job_id, started_at, finished_at, \
                        next_run_at, output, error \
                 FROM steps WHERE run_id = $1 AND name = $2 AND n = $3",
            )
            .bind(run_id)
            .bind(&row.summary.step)
            .bind(n)
            .fetch_optional(pool)
            .await?
        }
        _ => None,
    };
    let waits = matches!(
        row.summary.state.as_str(),
        "available" | "scheduled" | "retrying"
    );
    Ok(Some(JobDetail {
        next_run_at: waits.then_some(row.summary.run_at),
        summary: row.summary,
        status: row.status,
        args: row.args,
        idempotency_key: row.idempotency_key,
        locked_at: row.lock_at,
        last_result: row.last_result,
        step_execution,
    }))
}
