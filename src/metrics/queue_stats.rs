//! The database-wide gauges: jobs per queue and state, the oldest due job, and callbacks
//! waiting for hours. Read by the one elected process ([`super::monitor`]) and published as
//! gauges, every label set every time, so a queue that empties reads 0 rather than its last
//! non-zero value.

use std::collections::BTreeSet;

use metrics::gauge;
use sqlx::PgConnection;

use super::{QUEUE_JOBS, QUEUE_OLDEST_PENDING_AGE, QUEUE_STATES, SCHEDULED_CALLBACKS};
use crate::engine::queue;

#[derive(Debug, Default, sqlx::FromRow)]
struct QueueRow {
    queue: String,
    pending: i64,
    scheduled: i64,
    running: i64,
    retrying: i64,
    dead: i64,
    done: i64,
    oldest_due_s: Option<f64>,
}

impl QueueRow {
    fn counts(&self) -> [i64; 6] {
        [
            self.pending,
            self.scheduled,
            self.running,
            self.retrying,
            self.dead,
            self.done,
        ]
    }
}

/// The schedule rules under which a waiting callback is "waiting for hours".
const HOURS_RULES: [&str; 3] = ["team_hours", "lead_quiet_hours", "stagger"];

/// Reads the stats and sets the gauges. `teams` are the teams to report (0 when none wait);
/// teams found waiting are added to it, so they read 0 once their callbacks have gone out.
pub(super) async fn refresh(
    conn: &mut PgConnection,
    teams: &mut BTreeSet<String>,
) -> Result<(), sqlx::Error> {
    let names: Vec<&str> = queue::WORKER_STEPS
        .into_iter()
        .map(queue::queue_name)
        .collect();
    // One pass over apalis.jobs: `done` rows are kept until retention prunes them, so this
    // is the query that must not run on every replica.
    let rows: Vec<QueueRow> = sqlx::query_as(
        "SELECT job_type AS queue, \
           count(*) FILTER (WHERE status = 'Pending' AND run_at <= now()) AS pending, \
           count(*) FILTER (WHERE status = 'Pending' AND run_at > now()) AS scheduled, \
           count(*) FILTER (WHERE status IN ('Queued', 'Running')) AS running, \
           count(*) FILTER (WHERE status = 'Failed' AND attempts < max_attempts) AS retrying, \
           count(*) FILTER (WHERE status = 'Killed' \
                              OR (status = 'Failed' AND attempts >= max_attempts)) AS dead, \
           count(*) FILTER (WHERE status = 'Done') AS done, \
           extract(epoch FROM now() - min(run_at) FILTER ( \
               WHERE run_at <= now() AND (status = 'Pending' \
                     OR (status = 'Failed' AND attempts < max_attempts))))::float8 AS oldest_due_s \
         FROM apalis.jobs WHERE job_type = ANY($1) GROUP BY job_type",
    )
    .bind(&names)
    .fetch_all(&mut *conn)
    .await?;
    let waiting: Vec<(String, i64)> = sqlx::query_as(
        "SELECT team, count(*) FROM runs \
         WHERE status = 'scheduled' AND schedule_rule = ANY($1) AND team IS NOT NULL \
         GROUP BY team",
    )
    .bind(&HOURS_RULES[..])
    .fetch_all(&mut *conn)
    .await?;

    for name in names {
        let empty = QueueRow::default();
        let row = rows.iter().find(|r| r.queue == name).unwrap_or(&empty);
        for (state, count) in QUEUE_STATES.into_iter().zip(row.counts()) {
            gauge!(QUEUE_JOBS, "queue" => name, "state" => state).set(count as f64);
        }
        let age = row.oldest_due_s.unwrap_or(0.0).max(0.0);
        gauge!(QUEUE_OLDEST_PENDING_AGE, "queue" => name).set(age);
    }
    teams.extend(waiting.iter().map(|(team, _)| team.clone()));
    for team in teams.iter() {
        let count = waiting
            .iter()
            .find(|(t, _)| t == team)
            .map_or(0, |(_, n)| *n);
        gauge!(SCHEDULED_CALLBACKS, "team" => team.clone()).set(count as f64);
    }
    Ok(())
}
