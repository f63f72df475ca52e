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
    pub email: Option<String>,
    pub received_at: jiff::Timestamp,
    pub auto_callback: bool,
}

type Row = (
    String,
    String,
    Option<String>,
    Uuid,
    serde_json::Value,
    Option<String>,
    Option<String>,
    jiff_sqlx::Timestamp,
    bool,
);

impl RunContext {
    /// Loads the run and its lead, locking the run row so operator actions on the same run
    /// wait for this step's transaction.
    pub async fn load(conn: &mut PgConnection, run_id: Uuid) -> Result<RunContext, StepError> {
        let row: Option<Row> = sqlx::query_as(
            "SELECT r.status, r.workflow, r.team, l.id, l.submission, l.phone_e164, l.email, \
                    l.received_at, l.auto_callback \
             FROM runs r JOIN leads l ON l.id = r.lead_id WHERE r.id = $1 FOR UPDATE OF r",
        )
        .bind(run_id)
        .fetch_optional(conn)
        .await?;
        let (status, workflow, team, lead_id, submission, phone_e164, email, received_at, auto) =
            row.ok_or(StepError::RunMissing(run_id))?;
        let submission: Submission = serde_json::from_value(submission)
            .map_err(|source| StepError::Submission { lead_id, source })?;
        Ok(RunContext {
            run_id,
            lead_id,
            workflow,
            // An unknown status can only come from a newer version; treat the run as ended
            // rather than act on it.
            status: status.parse().unwrap_or(RunStatus::Cancelled),
            team,
            submission,
            phone_e164,
            email,
            received_at: received_at.to_jiff(),
            auto_callback: auto,
        })
    }
}
