//! Retention: a daily job (a `cron` schedule) that prunes what must not be kept forever —
//! finished jobs, the raw bodies in the webhook log (they hold personal data), old
//! idempotency keys and spent stagger slots. Every process runs the schedule; a PostgreSQL
//! advisory lock makes one of them do the work.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use tokio::sync::watch;

/// Key of the advisory lock that elects the pruning process (`"leadflow-retention"`).
const LOCK_KEY: i64 = 0x6c66_7265_7465_6e74;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Pruned {
    /// False when another process held the lock and did the work.
    pub ran: bool,
    pub jobs: u64,
    pub webhook_bodies: u64,
    pub idempotency_keys: u64,
    pub slots: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("LEADFLOW_RETENTION_CRON {0:?} is not a cron schedule: {1}")]
    Schedule(String, String),
    #[error("pruning: {0}")]
    Db(#[from] sqlx::Error),
}

/// Parses a schedule (`sec min hour day month weekday`, e.g. `0 30 3 * * *`).
pub fn schedule(expr: &str) -> Result<cron::Schedule, RetentionError> {
    cron::Schedule::from_str(expr)
        .map_err(|e| RetentionError::Schedule(expr.to_owned(), e.to_string()))
}

/// Removes finished jobs and webhook-log bodies older than `days` days, idempotency keys older
/// than `max(days, 1)` days (they must outlive a day of sender retries) and stagger slots of
/// openings more than a day past.
pub async fn prune(pool: &PgPool, days: u32) -> Result<Pruned, RetentionError> {
    let mut tx = pool.begin().await?;
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Pruned::default());
    }
    let cutoff = f64::from(days) * 86_400.0;
    let jobs = sqlx::query(
        "DELETE FROM apalis.jobs WHERE done_at < now() - make_interval(secs => $1) \
         AND (status IN ('Done', 'Killed') OR (status = 'Failed' AND attempts >= max_attempts))",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let webhook_bodies = sqlx::query(
        "UPDATE webhook_log SET body = NULL \
         WHERE received_at < now() - make_interval(secs => $1) AND body IS NOT NULL",
    )
    .bind(cutoff)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let idempotency_keys = sqlx::query(
        "DELETE FROM idempotency_keys WHERE created_at < now() - make_interval(secs => $1)",
    )
    .bind(cutoff.max(86_400.0))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let slots = sqlx::query("DELETE FROM callback_slots WHERE opening < now() - interval '1 day'")
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(Pruned {
        ran: true,
        jobs,
        webhook_bodies,
        idempotency_keys,
        slots,
    })
}

/// Runs [`prune`] at every firing of `schedule` until `stop` turns true.
pub async fn run_daily(
    pool: PgPool,
    schedule: cron::Schedule,
    days: u32,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let Some(next) = schedule.upcoming(chrono::Utc).next() else {
            return;
        };
        let wait = (next - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match prune(&pool, days).await {
            Ok(p) if p.ran => tracing::info!(
                jobs = p.jobs,
                webhook_bodies = p.webhook_bodies,
                idempotency_keys = p.idempotency_keys,
                "retention: pruned"
            ),
            Ok(_) => tracing::debug!("retention: another process pruned"),
            Err(e) => tracing::warn!(error = %e, "retention: pruning failed; next run tomorrow"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_bad_ones_say_why() {
        assert!(schedule("0 30 3 * * *").is_ok());
        let err = schedule("every night").map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("every night"), "{err}");
    }
}
