//! Applying a call's status to its attempt: from Twilio's status webhook or from the
//! simulator's reports, through this one path. Statuses only move forward: a duplicated or
//! out-of-order callback changes nothing. A final status settles the waiting callback step
//! in the same transaction (or wakes its job, when the step is not waiting yet).

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use super::attempt;
use super::machine;
use super::speed;
use super::state::{AttemptRow, Progress, State};
use crate::db::At;
use crate::engine::queue::{self, StepJob};
use crate::engine::{Engine, LockedStep, RunContext, StepError};
use crate::graph::Step;
use crate::lead::StepStatus;
use crate::metrics::{Observation, Pending};
use crate::telephony::StatusEvent;
use crate::timeline;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The attempt moved forward.
    Moved,
    /// A duplicate, out-of-order or foreign callback: nothing changed.
    Ignored,
}

#[derive(Debug, thiserror::Error)]
pub enum OutcomeError {
    #[error("no call attempt {0}")]
    NoAttempt(Uuid),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("settling the callback step: {0}")]
    Step(#[from] StepError),
}

/// For the callback step, which applies statuses it asked the provider for inside its own
/// execution: an attempt that vanished under its lock means its run is gone.
impl From<OutcomeError> for StepError {
    fn from(e: OutcomeError) -> StepError {
        match e {
            OutcomeError::Db(db) => StepError::Db(db),
            OutcomeError::NoAttempt(id) => StepError::RunMissing(id),
            OutcomeError::Step(e) => e,
        }
    }
}

#[derive(sqlx::FromRow)]
struct Target {
    id: Uuid,
    n: i32,
    state: String,
    status_rank: i16,
    provider_call_id: Option<String>,
    answered_by: Option<String>,
    team: String,
    placed_at: Option<At>,
}

pub async fn apply(
    engine: &Engine,
    attempt_id: Uuid,
    event: &StatusEvent,
) -> Result<Applied, OutcomeError> {
    apply_in_order(engine, attempt_id, std::slice::from_ref(event)).await
}

/// Statuses of one call, in order, in one transaction (the simulator reports a call's
/// statuses together, so one commit serves them all). `Moved` if any of them moved it.
///
/// A final status for an attempt whose step is waiting for it settles the step here, in the
/// same commit, rather than waking the step's job for another trip through the queue.
pub(super) async fn apply_in_order(
    engine: &Engine,
    attempt_id: Uuid,
    events: &[StatusEvent],
) -> Result<Applied, OutcomeError> {
    let mut tx = engine.pool.begin().await?;
    // The step's and the run's locks before the attempt's: the order the callback step takes
    // them in, so that the two never wait on each other.
    let owner = RunContext::lock_attempt_step(&mut tx, attempt_id).await?;
    let owner = owner.ok_or(OutcomeError::NoAttempt(attempt_id))?;
    let pending = Pending::default();
    let applied = apply_locked(&mut tx, engine, attempt_id, events, owner, &pending).await?;
    tx.commit().await?;
    pending.committed();
    Ok(applied)
}

/// [`apply_in_order`] once the caller's transaction holds the locks of the attempt's step
/// execution (`owner`: its number, and the step and run as locked). Metrics go to `pending`.
pub(super) async fn apply_locked(
    tx: &mut PgConnection,
    engine: &Engine,
    attempt_id: Uuid,
    events: &[StatusEvent],
    owner: (i32, LockedStep),
    pending: &Pending,
) -> Result<Applied, OutcomeError> {
    let ctx = &owner.1.ctx;
    let moved = apply_on(tx, engine, ctx, attempt_id, events, pending).await?;
    conclude(tx, engine, owner, moved, pending).await
}

/// What statuses that moved an attempt lead to, in the caller's transaction, which holds the
/// locks of the attempt's step execution (`owner`): a final status settles the step waiting
/// for it; news the step may be waiting on wakes its job.
pub(super) async fn conclude(
    tx: &mut PgConnection,
    engine: &Engine,
    owner: (i32, LockedStep),
    moved: Option<Moved>,
    pending: &Pending,
) -> Result<Applied, OutcomeError> {
    let Some(moved) = moved else {
        return Ok(Applied::Ignored);
    };
    let (step_n, locked) = owner;
    let LockedStep {
        status: step_status,
        job_id,
        ctx,
    } = locked;
    let job = StepJob {
        run_id: ctx.run_id,
        n: step_n,
    };
    let settled = moved.attempt.state == State::Done;
    let settled_here = settled
        && step_status == StepStatus::Waiting
        && !ctx.status.is_terminal()
        && super::settle_waiting(tx, engine, ctx, job, &moved.attempt, pending).await?;
    if settled_here {
        if let Some(id) = job_id.as_deref() {
            queue::retire(tx, id).await?;
        }
    } else if let Some(id) = job_id.as_deref()
        && (settled || moved.was_uncertain)
    {
        wake(tx, id).await?;
    }
    Ok(Applied::Moved)
}

/// What [`apply_on`] changed.
pub(super) struct Moved {
    /// The attempt as now recorded.
    pub attempt: AttemptRow,
    /// The attempt was `placing` or `unknown`: whether the call went out was not known.
    pub was_uncertain: bool,
}

/// Applies `events` to the attempt inside the caller's transaction (the callback step uses it
/// when it asked the provider itself about a call whose status never arrived). `None` when
/// none of them moved it. Metrics go to `pending`, to be recorded once the caller commits.
pub(super) async fn apply_on(
    tx: &mut PgConnection,
    engine: &Engine,
    ctx: &RunContext,
    attempt_id: Uuid,
    events: &[StatusEvent],
    pending: &Pending,
) -> Result<Option<Moved>, OutcomeError> {
    let one = Statuses {
        attempt_id,
        ctx,
        events,
    };
    let mut moved = apply_on_many(tx, engine, &[one], pending).await?;
    Ok(moved.pop().flatten())
}

/// Statuses of one attempt's call, in order, and the run the attempt belongs to.
pub(super) struct Statuses<'a> {
    pub attempt_id: Uuid,
    pub ctx: &'a RunContext,
    pub events: &'a [StatusEvent],
}

/// [`apply_on`] for several attempts, in three statements however many there are. Returns
/// what moved each, in the order given.
pub(super) async fn apply_on_many(
    tx: &mut PgConnection,
    engine: &Engine,
    items: &[Statuses<'_>],
    pending: &Pending,
) -> Result<Vec<Option<Moved>>, OutcomeError> {
    let ids: Vec<Uuid> = items.iter().map(|i| i.attempt_id).collect();
    let targets: Vec<Target> = sqlx::query_as(
        "SELECT id, n, state, status_rank, provider_call_id, answered_by, team, placed_at \
         FROM callback_attempts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut targets: HashMap<Uuid, Target> = targets.into_iter().map(|t| (t.id, t)).collect();
    let mut progressed = Vec::new();
    let mut entries = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let id = item.attempt_id;
        let t = targets.remove(&id).ok_or(OutcomeError::NoAttempt(id))?;
        let state = State::parse(&t.state);
        let was_uncertain = matches!(state, State::Placing | State::Unknown);
        let mut progress = Progress {
            state,
            status_rank: t.status_rank,
            call_status: None,
            provider_call_id: t.provider_call_id.clone(),
            answered_by: t.answered_by.clone(),
            outcome: None,
        };
        let before = entries.len();
        {
            let _span = tracing::info_span!("status", attempt_id = %id).entered();
            for event in item.events {
                if let Some((event, detail)) = machine::advance(&mut progress, t.n, event) {
                    entries.push(timeline::Entry {
                        lead_id: item.ctx.lead_id,
                        run_id: Some(item.ctx.run_id),
                        event,
                        detail,
                    });
                }
            }
        }
        if entries.len() > before {
            progressed.push((index, progress, was_uncertain, t));
        }
    }
    let mut moved: Vec<Option<Moved>> = items.iter().map(|_| None).collect();
    if progressed.is_empty() {
        return Ok(moved);
    }
    let now = engine.clock.now();
    let moves: Vec<(Uuid, &Progress)> = progressed
        .iter()
        .map(|(index, progress, ..)| (items[*index].attempt_id, progress))
        .collect();
    let rows = attempt::record_progress(tx, &moves, now).await?;
    let mut rows: HashMap<Uuid, AttemptRow> = rows.into_iter().map(|a| (a.id, a)).collect();
    timeline::record_many(tx, timeline::SYSTEM, entries).await?;
    for (index, progress, was_uncertain, t) in progressed {
        let item = &items[index];
        let attempt = rows
            .remove(&item.attempt_id)
            .ok_or(OutcomeError::NoAttempt(item.attempt_id))?;
        if let Some(outcome) = progress.outcome {
            let team = t.team.clone();
            let outcome = outcome.as_str();
            pending.push(Observation::CallbackAttempt { team, outcome });
        }
        // A status overtook the provider's answer to `place`: it is what placed the call.
        if t.placed_at.is_none() && t.n == 1 {
            let placed_at = engine.clock.to_real(now);
            pending.push(speed::first_call(item.ctx, &t.team, placed_at));
        }
        moved[index] = Some(Moved {
            attempt,
            was_uncertain,
        });
    }
    Ok(moved)
}

/// Brings the step's waiting job forward to now and announces it, so a worker acts on the
/// news within milliseconds instead of at the wait's end.
async fn wake(tx: &mut PgConnection, job_id: &str) -> Result<(), sqlx::Error> {
    let woken: Option<(String,)> = sqlx::query_as(
        "UPDATE apalis.jobs SET run_at = now() WHERE id = $1 AND status IN ('Pending', 'Failed') \
         RETURNING id",
    )
    .bind(job_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id,)) = woken {
        queue::announce(tx, Step::Callback, &id).await?;
    }
    Ok(())
}
