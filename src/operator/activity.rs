//! Recent activity for the console's overview: leads received per hour, and the runs that
//! failed lately. Both read a bounded window of time and return bounded rows.

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::error::Result;
use crate::db::At;
use crate::lead::RunStatus;

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct HourCount {
    pub hour: At,
    pub leads: i64,
}

/// Leads received in each of the last `hours` hours (UTC hours), oldest first; hours without
/// leads are included, so the series has no gaps.
pub async fn leads_per_hour(pool: &PgPool, hours: i32) -> Result<Vec<HourCount>> {
    Ok(sqlx::query_as(
        "SELECT h.hour, count(l.id) AS leads \
         FROM generate_series(date_trunc('hour', now()) - make_interval(hours => $1 - 1), \
                              date_trunc('hour', now()), interval '1 hour') AS h(hour) \
         LEFT JOIN leads l ON l.received_at >= h.hour AND l.received_at < h.hour + interval '1 hour' \
         GROUP BY h.hour ORDER BY h.hour",
    )
    .bind(hours.clamp(1, 24 * 7))
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct FailedRun {
    pub lead_id: Uuid,
    pub run_id: Uuid,
    pub failed_at: At,
    pub reason: Option<String>,
}

/// Runs that ended `failed` in the last hour: how many, and the latest `limit` of them.
pub async fn failed_last_hour(pool: &PgPool, limit: i64) -> Result<(i64, Vec<FailedRun>)> {
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM runs WHERE status = $1 AND updated_at > now() - interval '1 hour'",
    )
    .bind(RunStatus::Failed.as_str())
    .fetch_one(pool)
    .await?;
    let latest = sqlx::query_as(
        "SELECT lead_id, id AS run_id, updated_at AS failed_at, reason FROM runs \
         WHERE status = $2 AND updated_at > now() - interval '1 hour' \
         ORDER BY updated_at DESC LIMIT $1",
    )
    .bind(limit)
    .bind(RunStatus::Failed.as_str())
    .fetch_all(pool)
    .await?;
    Ok((count, latest))
}
