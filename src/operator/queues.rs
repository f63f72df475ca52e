//! The worker queues: jobs per state with the oldest waiting age, and pausing.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::PgPool;

use super::actor::Actor;
use super::error::{OperatorError, Result};
use super::state::{JobState, STATE_SQL};
use crate::db::At;
use crate::engine::queue::{WORKER_STEPS, queue_name};
use crate::graph::Step;

/// The names of leadflow's queues, as `apalis.jobs.job_type` holds them.
pub fn all_names() -> Vec<&'static str> {
    WORKER_STEPS.iter().map(|s| queue_name(*s)).collect()
}

/// A queue by its full name (`leadflow.qualify`) or its step's (`qualify`).
pub fn parse(name: &str) -> Result<Step> {
    let name = name.trim();
    WORKER_STEPS
        .into_iter()
        .find(|s| name == queue_name(*s) || name == s.as_str())
        .ok_or_else(|| {
            OperatorError::NotFound(format!(
                "No queue {name:?} (queues: {})",
                all_names().join(", ")
            ))
        })
}

#[derive(Debug, Serialize)]
pub struct QueueStats {
    pub queue: &'static str,
    pub step: Step,
    pub paused: bool,
    pub paused_at: Option<At>,
    pub paused_by: Option<String>,
    /// Every state, zero included, so that dashboards and tables have fixed columns.
    pub counts: BTreeMap<&'static str, i64>,
    /// The run time of the longest-waiting available job.
    pub oldest_available_at: Option<At>,
    /// How long it has waited, in seconds.
    pub oldest_wait_s: Option<f64>,
}

#[derive(sqlx::FromRow)]
struct CountRow {
    queue: String,
    state: String,
    n: i64,
    oldest: Option<At>,
    wait_s: Option<f64>,
}

pub async fn overview(pool: &PgPool) -> Result<Vec<QueueStats>> {
    let rows: Vec<CountRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT j.job_type AS queue, {STATE_SQL} AS state, count(*) AS n, \
                min(j.run_at) FILTER (WHERE j.status = 'Pending' AND j.run_at <= now()) AS oldest, \
                EXTRACT(EPOCH FROM now() - min(j.run_at) \
                    FILTER (WHERE j.status = 'Pending' AND j.run_at <= now()))::float8 AS wait_s \
         FROM apalis.jobs j WHERE j.job_type = ANY($1) GROUP BY 1, 2"
    )))
    .bind(all_names())
    .fetch_all(pool)
    .await?;
    let pauses: Vec<(String, At, String)> =
        sqlx::query_as("SELECT queue, paused_at, paused_by FROM queue_pauses")
            .fetch_all(pool)
            .await?;
    Ok(WORKER_STEPS
        .into_iter()
        .map(|step| {
            let queue = queue_name(step);
            let mut counts: BTreeMap<&'static str, i64> =
                JobState::ALL.iter().map(|s| (s.as_str(), 0)).collect();
            let mut oldest = None;
            let mut wait = None;
            for row in rows.iter().filter(|r| r.queue == queue) {
                if let Ok(state) = row.state.parse::<JobState>() {
                    counts.insert(state.as_str(), row.n);
                }
                oldest = oldest.or(row.oldest);
                wait = wait.or(row.wait_s);
            }
            let pause = pauses.iter().find(|(q, _, _)| q == queue);
            QueueStats {
                queue,
                step,
                paused: pause.is_some(),
                paused_at: pause.map(|p| p.1),
                paused_by: pause.map(|p| p.2.clone()),
                counts,
                oldest_available_at: oldest,
                oldest_wait_s: wait,
            }
        })
        .collect())
}

#[derive(Debug, Serialize)]
pub struct PauseChange {
    pub queue: &'static str,
    pub paused: bool,
    /// False when the queue was already in that state (the action is safe to repeat).
    pub changed: bool,
}

/// Pauses a queue: every worker on the database stops claiming its jobs within one poll
/// interval, and it stays paused across restarts until resumed.
pub async fn pause(pool: &PgPool, step: Step, actor: &Actor) -> Result<PauseChange> {
    let queue = queue_name(step);
    let done = sqlx::query(
        "INSERT INTO queue_pauses (queue, paused_by) VALUES ($1, $2) ON CONFLICT (queue) DO NOTHING",
    )
    .bind(queue)
    .bind(actor.as_str())
    .execute(pool)
    .await?;
    tracing::info!(queue, %actor, "queue paused");
    Ok(PauseChange {
        queue,
        paused: true,
        changed: done.rows_affected() == 1,
    })
}

pub async fn resume(pool: &PgPool, step: Step, actor: &Actor) -> Result<PauseChange> {
    let queue = queue_name(step);
    let done = sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
        .bind(queue)
        .execute(pool)
        .await?;
    tracing::info!(queue, %actor, "queue resumed");
    Ok(PauseChange {
        queue,
        paused: false,
        changed: done.rows_affected() == 1,
    })
}
