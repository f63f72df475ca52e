//! Replaying a lead: a new run of the same lead, from a chosen step, after an operator fixed
//! what stopped it (a mapping, a rule, an outage). The old run stays in the history, and the
//! new one points back at it (`runs.replay_of`).
//!
//! Race-free: the lead row is locked first, so two replays of one lead queue up and the second
//! sees the first's run; the latest run must have ended (a worker never changes an ended run),
//! and the new run's jobs are keyed by its own id, so they can never collide with the old ones.
//!
//! The locks are `FOR NO KEY UPDATE`, not `FOR UPDATE`: a worker holding a run of the lead
//! inserts timeline events, which take `FOR KEY SHARE` on the lead. Under `FOR UPDATE` that
//! insert waits for the replay while the replay waits for the worker's run: a deadlock that
//! PostgreSQL breaks by failing one side (a 500 to the operator).

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::actor::Actor;
use super::error::{OperatorError, Result};
use crate::engine;
use crate::engine::queue::StepJob;
use crate::graph::Step;
use crate::intake::records;
use crate::lead::{RunStatus, StepStatus, Submission};
use crate::timeline;
use crate::validate::{self, Policy, ValidLead};
use crate::workflow::{Workflow, Workflows};

/// Latest-run statuses a replay may follow. Not the active ones (cancel first), and not
/// `called`: the lead was reached, and a replay would phone them again.
pub const REPLAYABLE: [RunStatus; 8] = [
    RunStatus::Rejected,
    RunStatus::Disqualified,
    RunStatus::Duplicate,
    RunStatus::Routed,
    RunStatus::Unreachable,
    RunStatus::Exhausted,
    RunStatus::Failed,
    RunStatus::Cancelled,
];

#[derive(Debug, Serialize)]
pub struct Replayed {
    pub lead_id: Uuid,
    pub run_id: Uuid,
    pub replay_of: Uuid,
    pub from: Step,
    /// `running`, or `rejected` when validation failed again.
    pub status: RunStatus,
    pub reason: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LeadRow {
    workflow: String,
    submission: Value,
    accepted: bool,
    hook_auto_callback: bool,
}

#[derive(sqlx::FromRow)]
struct OldRun {
    id: Uuid,
    status: String,
    team: Option<String>,
}

/// Starts a new run of `lead_id` at `from` (default: validate, the whole workflow again).
pub async fn replay(
    pool: &PgPool,
    workflows: &Workflows,
    lead_id: Uuid,
    from: Option<Step>,
    actor: &Actor,
) -> Result<Replayed> {
    let from = from.unwrap_or(Step::ALL[0]);
    let mut tx = pool.begin().await?;
    let lead: LeadRow = sqlx::query_as(
        "SELECT l.workflow, l.submission, l.accepted, h.auto_callback AS hook_auto_callback \
         FROM leads l JOIN hooks h ON h.id = l.hook_id WHERE l.id = $1 FOR NO KEY UPDATE OF l",
    )
    .bind(lead_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| OperatorError::NotFound(format!("No lead {lead_id}")))?;
    let old: OldRun = sqlx::query_as(
        "SELECT id, status, team FROM runs WHERE lead_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 1 FOR NO KEY UPDATE",
    )
    .bind(lead_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| OperatorError::Conflict(format!("Lead {lead_id} has no run to replay")))?;
    let replayable = old
        .status
        .parse::<RunStatus>()
        .is_ok_and(|s| REPLAYABLE.contains(&s));
    if !replayable {
        return Err(OperatorError::Conflict(format!(
            "Lead {lead_id}'s run is {}; only a rejected, disqualified, duplicate, routed, \
             unreachable, exhausted, failed or cancelled lead can be replayed{}",
            old.status,
            if old.status == "called" {
                ""
            } else {
                " (cancel it first)"
            }
        )));
    }
    let workflow = workflows.get(&lead.workflow).ok_or_else(|| {
        OperatorError::Conflict(format!("Workflow {:?} is not loaded", lead.workflow))
    })?;
    let new = NewRun {
        id: Uuid::now_v7(),
        lead_id,
        old: &old,
        workflow,
    };
    let (status, reason) = if from.on_workers() {
        new.check_prerequisites(&mut tx, &lead, from).await?;
        new.insert(&mut tx, RunStatus::Running, None).await?;
        new.enqueue(&mut tx, from).await?;
        (RunStatus::Running, None)
    } else {
        new.revalidate(&mut tx, &lead).await?
    };
    let detail = json!({ "replay_of": old.id, "from": from, "status": status });
    timeline::record(
        &mut tx,
        lead_id,
        Some(new.id),
        "operator.replay",
        actor.as_str(),
        detail,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%lead_id, run_id = %new.id, %from, %actor, "lead replayed");
    Ok(Replayed {
        lead_id,
        run_id: new.id,
        replay_of: old.id,
        from,
        status,
        reason,
    })
}

struct NewRun<'a> {
    id: Uuid,
    lead_id: Uuid,
    old: &'a OldRun,
    workflow: &'a Workflow,
}

impl NewRun<'_> {
    async fn insert(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO runs (id, lead_id, workflow, status, reason, team, replay_of) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(self.id)
        .bind(self.lead_id)
        .bind(&self.workflow.name)
        .bind(status.as_str())
        .bind(reason)
        .bind(self.old.team.as_deref())
        .bind(self.old.id)
        .execute(tx)
        .await?;
        Ok(())
    }

    async fn enqueue(&self, tx: &mut PgConnection, step: Step) -> Result<()> {
        let job = StepJob {
            run_id: self.id,
            n: 1,
        };
        engine::enqueue(tx, step, job, None, self.workflow.retry.max_attempts).await?;
        Ok(())
    }

    /// A later step needs what the step before it produced (a valid phone for qualify, a
    /// qualified lead for route, a team for callback): that step must have passed in the
    /// last run, as the graph says it does ([`crate::graph::Node::passed`]).
    async fn check_prerequisites(
        &self,
        tx: &mut PgConnection,
        lead: &LeadRow,
        from: Step,
    ) -> Result<()> {
        if !lead.accepted {
            return Err(OperatorError::Conflict(format!(
                "Lead {} never passed validation; replay it from validate",
                self.lead_id
            )));
        }
        let Some(needed) = from.previous().filter(|p| p.on_workers()) else {
            return Ok(());
        };
        let output: Option<(Option<serde_json::Value>,)> = sqlx::query_as(
            "SELECT output FROM steps WHERE run_id = $1 AND name = $2 AND status = $3 \
             ORDER BY n DESC LIMIT 1",
        )
        .bind(self.old.id)
        .bind(needed.as_str())
        .bind(StepStatus::Ok.as_str())
        .fetch_optional(tx)
        .await?;
        let passed = output
            .and_then(|(o,)| o)
            .is_some_and(|o| (needed.node().passed)(&o));
        if passed {
            Ok(())
        } else {
            Err(OperatorError::Conflict(format!(
                "Lead {}'s last run did not pass {needed}; replay it from an earlier step",
                self.lead_id
            )))
        }
    }

    /// Validation again, against the stored submission and the workflow as loaded now; the
    /// lead's normalised phone and email are updated with the verdict.
    async fn revalidate(
        &self,
        tx: &mut PgConnection,
        lead: &LeadRow,
    ) -> Result<(RunStatus, Option<String>)> {
        let submission: Submission = serde_json::from_value(lead.submission.clone())
            .map_err(|e| OperatorError::Conflict(format!("stored submission unreadable: {e}")))?;
        let policy = Policy {
            allowed_countries: self.workflow.allowed_countries.clone(),
        };
        let verdict = validate::validate(&submission, &policy);
        let outcome = match &verdict {
            Ok(valid) => {
                self.accept(tx, valid, lead.hook_auto_callback).await?;
                (RunStatus::Running, None)
            }
            Err(rejection) => (RunStatus::Rejected, Some(rejection.details.clone())),
        };
        self.insert(tx, outcome.0, outcome.1.as_deref()).await?;
        records::record_validate_step(tx, self.lead_id, self.id, &verdict).await?;
        if verdict.is_ok() {
            self.enqueue(tx, Step::first_on_workers()).await?;
        }
        Ok(outcome)
    }

    async fn accept(
        &self,
        tx: &mut PgConnection,
        valid: &ValidLead,
        hook_auto: bool,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE leads SET accepted = true, phone_e164 = $2, phone_region = $3, \
                    email = COALESCE($4, email), auto_callback = $5 WHERE id = $1",
        )
        .bind(self.lead_id)
        .bind(&valid.phone.e164)
        .bind(valid.phone.region.as_deref())
        .bind(valid.email.as_deref())
        .bind(valid.is_auto.unwrap_or(hook_auto))
        .execute(tx)
        .await?;
        Ok(())
    }
}
