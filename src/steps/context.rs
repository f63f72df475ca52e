//! What a step knows about its run: the run's state and the lead it is about.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StepError;
use crate::lead::{RunStatus, Submission};

#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: Uuid,
    pub lead_id: Uuid,
    pub workflow: String,
    pub status: RunStatus,
    pub team: Option<String>,
    pub submission: Submission,
    pub phone_e164: Option<String>,
    /// ISO 3166 alpha-2 of the phone number (`US`).
    pub phone_region: Option<String>,
    pub email: Option<String>,
    pub received_at: jiff::Timestamp,
    pub auto_callback: bool,
}

#[derive(sqlx::FromRow)]
struct Row {
    step_status: String,
    job_id: Option<String>,
    status: String,
    workflow: String,
    team: Option<String>,
    lead_id: Uuid,
    submission: serde_json::Value,
    phone_e164: Option<String>,
    phone_region: Option<String>,
    email: Option<String>,
    received_at: crate::db::At,
    auto_callback: bool,
}

impl RunContext {
    /// Locks a step row and its run, and loads the run with its lead, in one round trip (a
    /// step's first statement). Returns the step's status and job id with the context, or
    /// `None` when there is no such step. The run row's lock keeps operator actions on the
    /// same run out until the step commits.
    pub async fn lock_step(
        conn: &mut PgConnection,
        run_id: Uuid,
        step: &str,
        n: i32,
    ) -> Result<Option<(String, Option<String>, RunContext)>, StepError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT s.status AS step_status, s.job_id, r.status, r.workflow, r.team, \
                    l.id AS lead_id, l.submission, l.phone_e164, l.phone_region, l.email, \
                    l.received_at, l.auto_callback \
             FROM steps s JOIN runs r ON r.id = s.run_id JOIN leads l ON l.id = r.lead_id \
             WHERE s.run_id = $1 AND s.name = $2 AND s.n = $3 FOR UPDATE OF s, r",
        )
        .bind(run_id)
        .bind(step)
        .bind(n)
        .fetch_optional(conn)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let lead_id = row.lead_id;
        let submission: Submission = serde_json::from_value(row.submission)
            .map_err(|source| StepError::Submission { lead_id, source })?;
        let ctx = RunContext {
            run_id,
            lead_id,
            workflow: row.workflow,
            // An unknown status can only come from a newer version; treat the run as ended
            // rather than act on it.
            status: row.status.parse().unwrap_or(RunStatus::Cancelled),
            team: row.team,
            submission,
            phone_e164: row.phone_e164,
            phone_region: row.phone_region,
            email: row.email,
            received_at: row.received_at.0,
            auto_callback: row.auto_callback,
        };
        Ok(Some((row.step_status, row.job_id, ctx)))
    }
}
