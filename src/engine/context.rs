//! Locking a step's row with its run, and loading the run's context ([`RunContext`]) in the
//! same statement.

use sqlx::PgConnection;
use uuid::Uuid;

use super::StepError;
pub use crate::graph::RunContext;
use crate::lead::{RunStatus, StepStatus, Submission};

/// A step row locked with its run: the step's status and current job, and the run's context.
#[derive(Debug)]
pub struct LockedStep {
    pub status: StepStatus,
    pub job_id: Option<String>,
    pub ctx: RunContext,
}

impl LockedStep {
    /// The step has ended (an earlier delivery, a status callback, an operator settled it):
    /// nothing more is decided for it.
    pub fn is_settled(&self) -> bool {
        self.status.is_settled()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    step_status: String,
    job_id: Option<String>,
    run_id: Uuid,
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
    schedule_rule: Option<String>,
}

impl RunContext {
    /// Locks a step row and its run, and loads the run with its lead, in one round trip (a
    /// step's first statement). Returns the step's status and job id with the context, or
    /// `None` when there is no such step. The run row's lock keeps operator actions on the
    /// same run out until the step commits.
    ///
    /// `FOR NO KEY UPDATE`, as every step's lock: it excludes the other steps and the
    /// operator's actions as `FOR UPDATE` would, but not the `KEY SHARE` locks that inserts
    /// referencing the run (its steps, its call attempts) take for their foreign keys.
    pub async fn lock_step(
        conn: &mut PgConnection,
        run_id: Uuid,
        step: &str,
        n: i32,
    ) -> Result<Option<LockedStep>, StepError> {
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM steps s {JOINS} \
             WHERE s.run_id = $1 AND s.name = $2 AND s.n = $3 FOR NO KEY UPDATE OF s, r"
        )))
        .bind(run_id)
        .bind(step)
        .bind(n)
        .fetch_optional(conn)
        .await?;
        row.map(Row::into_locked).transpose()
    }

    /// [`RunContext::lock_step`] for several executions of one step (`(run_id, n)` pairs),
    /// in one round trip. Locks in run order, so that two groups never wait on each other in
    /// a cycle. Returns the rows found, each with its `(run_id, n)`.
    pub async fn lock_steps(
        conn: &mut PgConnection,
        step: &str,
        keys: &[(Uuid, i32)],
    ) -> Result<Vec<((Uuid, i32), LockedStep)>, StepError> {
        let (runs, ns): (Vec<Uuid>, Vec<i32>) = keys.iter().copied().unzip();
        let rows: Vec<NumberedRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT s.n AS step_n, {COLUMNS} FROM steps s {JOINS} \
             WHERE s.name = $1 AND (s.run_id, s.n) IN (SELECT * FROM UNNEST($2::uuid[], $3::int[])) \
             ORDER BY s.run_id, s.n FOR NO KEY UPDATE OF s, r"
        )))
        .bind(step)
        .bind(&runs)
        .bind(&ns)
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|NumberedRow { step_n, row }| Ok(((row.run_id, step_n), row.into_locked()?)))
            .collect()
    }

    /// [`RunContext::lock_step`] for the callback step execution that owns call attempt
    /// `attempt_id`, with that execution's number. A status callback takes these locks before
    /// the attempt's, in the order the step itself takes them.
    pub async fn lock_attempt_step(
        conn: &mut PgConnection,
        attempt_id: Uuid,
    ) -> Result<Option<(i32, LockedStep)>, StepError> {
        let mut found = Self::lock_attempt_steps(conn, &[attempt_id]).await?;
        Ok(found.pop().map(|(_, owner)| owner))
    }

    /// [`RunContext::lock_attempt_step`] for several attempts, in one round trip and in run
    /// order (as [`RunContext::lock_steps`] locks). Returns the attempts found, each with its
    /// step execution's number and locked rows.
    pub async fn lock_attempt_steps(
        conn: &mut PgConnection,
        attempt_ids: &[Uuid],
    ) -> Result<Vec<(Uuid, (i32, LockedStep))>, StepError> {
        let rows: Vec<OwnerRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT a.id AS attempt_id, a.step_n, {COLUMNS} FROM callback_attempts a \
             JOIN steps s ON s.run_id = a.run_id AND s.name = 'callback' AND s.n = a.step_n \
             {JOINS} WHERE a.id = ANY($1) ORDER BY s.run_id, s.n FOR NO KEY UPDATE OF s, r"
        )))
        .bind(attempt_ids)
        .fetch_all(conn)
        .await?;
        rows.into_iter()
            .map(|OwnerRow { attempt_id, step }| {
                Ok((attempt_id, (step.step_n, step.row.into_locked()?)))
            })
            .collect()
    }
}

/// A callback step's row with the id of the call attempt it owns.
#[derive(sqlx::FromRow)]
struct OwnerRow {
    attempt_id: Uuid,
    #[sqlx(flatten)]
    step: NumberedRow,
}

/// A step's row with its execution number.
#[derive(sqlx::FromRow)]
struct NumberedRow {
    step_n: i32,
    #[sqlx(flatten)]
    row: Row,
}

const COLUMNS: &str = "s.status AS step_status, s.job_id, s.run_id, r.status, r.workflow, \
     r.team, r.schedule_rule, l.id AS lead_id, l.submission, l.phone_e164, l.phone_region, l.email, \
     l.received_at, l.auto_callback";
const JOINS: &str = "JOIN runs r ON r.id = s.run_id JOIN leads l ON l.id = r.lead_id";

impl Row {
    fn into_locked(self) -> Result<LockedStep, StepError> {
        let run_id = self.run_id;
        let lead_id = self.lead_id;
        let submission: Submission = serde_json::from_value(self.submission)
            .map_err(|source| StepError::Submission { lead_id, source })?;
        let ctx = RunContext {
            run_id,
            lead_id,
            workflow: self.workflow,
            // An unknown status can only come from a newer version; treat the run as ended
            // rather than act on it.
            status: self.status.parse().unwrap_or(RunStatus::Cancelled),
            team: self.team,
            submission,
            phone_e164: self.phone_e164,
            phone_region: self.phone_region,
            email: self.email,
            received_at: self.received_at.0,
            auto_callback: self.auto_callback,
            schedule_rule: self.schedule_rule,
        };
        Ok(LockedStep {
            // As for the run: an unknown status can only come from a newer version.
            status: self.step_status.parse().unwrap_or(StepStatus::Cancelled),
            job_id: self.job_id,
            ctx,
        })
    }
}
