//! Applying a call's status to its attempt: from Twilio's status webhook or from the
//! simulator's reports, through this one path. Statuses only move forward: a duplicated or
//! out-of-order callback changes nothing. A final status settles the waiting callback step
//! in the same transaction (or wakes its job, when the step is not waiting yet).

use std::collections::HashMap;

use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::attempt::{self, AttemptRow, Progress, State};
use super::policy::Outcome;
use super::speed;
use crate::db::At;
use crate::lead::Step;
use crate::metrics::{Observation, Pending};
use crate::queue::{self, StepJob};
use crate::steps::{Engine, LockedStep, RunContext, StepError};
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

/// Moves `p` by `event` when the event is news: the same call, further along than recorded,
/// and the attempt not settled yet. Returns the event's timeline entry when it moved.
fn advance(p: &mut Progress, attempt_n: i32, event: &StatusEvent) -> Option<(String, Value)> {
    if p.provider_call_id
        .as_deref()
        .is_some_and(|sid| sid != event.call_sid)
    {
        tracing::warn!("status callback for a call that is not this attempt's; ignored");
        return None;
    }
    let rank = i16::from(event.call_status.rank());
    if p.state == State::Done || rank <= p.status_rank {
        return None;
    }
    let outcome = Outcome::of_status(event);
    p.status_rank = rank;
    p.call_status = Some(event.call_status);
    p.provider_call_id = Some(event.call_sid.clone());
    p.answered_by = event.answered_by.clone().or(p.answered_by.take());
    if outcome.is_some() {
        p.state = State::Done;
        p.outcome = outcome;
    } else if matches!(p.state, State::Placing | State::Unknown) {
        p.state = State::Placed;
    }
    let detail = json!({
        "attempt": attempt_n,
        "status": event.call_status.as_str(),
        "answered_by": event.answered_by,
        "duration_s": event.call_duration,
        "outcome": outcome.map(Outcome::as_str),
    });
    Some((format!("call.{}", event.call_status.as_str()), detail))
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
        && step_status == "waiting"
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
                if let Some((event, detail)) = advance(&mut progress, t.n, event) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telephony::CallStatus;
    use crate::telephony::sim::events_for;

    fn placed(sid: Option<&str>) -> Progress {
        Progress {
            state: State::Placed,
            status_rank: -1,
            call_status: None,
            provider_call_id: sid.map(str::to_owned),
            answered_by: None,
            outcome: None,
        }
    }

    fn names(entries: &[(String, Value)]) -> Vec<&str> {
        entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn a_calls_statuses_in_order_end_in_its_outcome() {
        let mut p = placed(Some("CA1"));
        let events = events_for("CA1", CallStatus::Completed);
        let entries: Vec<_> = events
            .iter()
            .filter_map(|e| advance(&mut p, 1, e))
            .collect();
        assert_eq!(
            names(&entries),
            [
                "call.initiated",
                "call.ringing",
                "call.in-progress",
                "call.completed"
            ]
        );
        assert_eq!(p.state, State::Done);
        assert_eq!(p.outcome, Some(Outcome::Called));
        assert_eq!(p.call_status, Some(CallStatus::Completed));
        assert_eq!(p.status_rank, 4);
        assert_eq!(p.answered_by.as_deref(), Some("human"));
        assert_eq!(entries[3].1["outcome"], "called");
        assert_eq!(entries[0].1["outcome"], Value::Null);
    }

    #[test]
    fn duplicates_late_statuses_and_news_after_the_end_change_nothing() {
        let mut p = placed(Some("CA1"));
        let busy = events_for("CA1", CallStatus::Busy);
        let mut shuffled = vec![busy[1].clone(), busy[0].clone(), busy[1].clone()];
        shuffled.extend(events_for("CA1", CallStatus::Completed));
        let entries: Vec<_> = shuffled
            .iter()
            .filter_map(|e| advance(&mut p, 2, e))
            .collect();
        assert_eq!(names(&entries), ["call.busy"]);
        assert_eq!(p.outcome, Some(Outcome::Busy));
        assert_eq!(entries[0].1["attempt"], 2);
    }

    #[test]
    fn another_calls_status_is_ignored() {
        let mut p = placed(Some("CA1"));
        let before = p.clone();
        for e in events_for("CA2", CallStatus::Completed) {
            assert!(advance(&mut p, 1, &e).is_none());
        }
        assert_eq!(p, before);
    }

    #[test]
    fn a_status_that_overtakes_the_providers_answer_places_the_call() {
        let mut p = Progress {
            state: State::Placing,
            ..placed(None)
        };
        let events = events_for("CA9", CallStatus::Completed);
        assert!(advance(&mut p, 1, &events[0]).is_some());
        assert_eq!(p.state, State::Placed);
        assert_eq!(p.provider_call_id.as_deref(), Some("CA9"));
        // Once the call id is known, another call's statuses do not count.
        assert!(advance(&mut p, 1, &events_for("CA8", CallStatus::Busy)[1]).is_none());
        assert_eq!(p.outcome, None);
    }
}
