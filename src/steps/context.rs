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
    /// Loads the run and its lead, locking the run row so operator actions on the same run
    /// wait for this step's transaction.
    pub async fn load(conn: &mut PgConnection, run_id: Uuid) -> Result<RunContext, StepError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT r.status, r.workflow, r.team, l.id AS lead_id, l.submission, l.phone_e164, \
                    l.phone_region, l.email, l.received_at, l.auto_callback \
             FROM runs r JOIN leads l ON l.id = r.lead_id WHERE r.id = $1 FOR UPDATE OF r",
        )
        .bind(run_id)
        .fetch_optional(conn)
        .await?;
        let row = row.ok_or(StepError::RunMissing(run_id))?;
        let lead_id = row.lead_id;
        let submission: Submission = serde_json::from_value(row.submission)
            .map_err(|source| StepError::Submission { lead_id, source })?;
        Ok(RunContext {
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
        })
    }
}
