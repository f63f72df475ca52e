//! Applying a call's status to its attempt: from Twilio's status webhook or from the
//! simulator's reports, through this one path. Statuses only move forward: a duplicated or
//! out-of-order callback changes nothing. A final status wakes the waiting callback job.

use futures::StreamExt;
use serde_json::json;
use sqlx::PgConnection;
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

use super::policy::Outcome;
use super::speed;
use crate::db::At;
use crate::lead::Step;
use crate::metrics::{Observation, Pending};
use crate::queue;
use crate::steps::Engine;
use crate::telephony::StatusEvent;
use crate::telephony::sim::SimReport;
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
}

#[derive(sqlx::FromRow)]
struct Target {
    run_id: Uuid,
    lead_id: Uuid,
    n: i32,
    step_n: i32,
    state: String,
    status_rank: i16,
    provider_call_id: Option<String>,
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
async fn apply_in_order(
    engine: &Engine,
    attempt_id: Uuid,
    events: &[StatusEvent],
) -> Result<Applied, OutcomeError> {
    let mut tx = engine.pool.begin().await?;
    let pending = Pending::default();
    let mut applied = Applied::Ignored;
    for event in events {
        if apply_on(&mut tx, engine, attempt_id, event, &pending).await? == Applied::Moved {
            applied = Applied::Moved;
        }
    }
    tx.commit().await?;
    pending.committed();
    Ok(applied)
}

/// [`apply`] inside the caller's transaction: the callback step uses it when it asked the
/// provider itself about a call whose status never arrived. Metrics go to `pending`, to be
/// recorded once the caller commits.
pub(super) async fn apply_on(
    tx: &mut PgConnection,
    engine: &Engine,
    attempt_id: Uuid,
    event: &StatusEvent,
    pending: &Pending,
) -> Result<Applied, OutcomeError> {
    let target: Option<Target> = sqlx::query_as(
        "SELECT run_id, lead_id, n, step_n, state, status_rank, provider_call_id, team, placed_at \
         FROM callback_attempts WHERE id = $1 FOR UPDATE",
    )
    .bind(attempt_id)
    .fetch_optional(&mut *tx)
    .await?;
    let t = target.ok_or(OutcomeError::NoAttempt(attempt_id))?;
    if t.provider_call_id
        .as_deref()
        .is_some_and(|sid| sid != event.call_sid)
    {
        tracing::warn!(%attempt_id, "status callback for a call that is not this attempt's; ignored");
        return Ok(Applied::Ignored);
    }
    let rank = i16::from(event.call_status.rank());
    if t.state == "done" || rank <= t.status_rank {
        return Ok(Applied::Ignored);
    }
    let outcome = Outcome::of_status(event);
    let now = engine.clock.now();
    sqlx::query(
        "UPDATE callback_attempts SET call_status = $2, status_rank = $3, \
                provider_call_id = COALESCE(provider_call_id, $4), \
                answered_by = COALESCE($5, answered_by), \
                placed_at = COALESCE(placed_at, $6), updated_at = $6, \
                state = CASE WHEN $7::text IS NOT NULL THEN 'done' \
                             WHEN state IN ('placing', 'unknown') THEN 'placed' ELSE state END, \
                outcome = COALESCE($7, outcome) \
         WHERE id = $1",
    )
    .bind(attempt_id)
    .bind(event.call_status.as_str())
    .bind(rank)
    .bind(&event.call_sid)
    .bind(event.answered_by.as_deref())
    .bind(At(now))
    .bind(outcome.map(Outcome::as_str))
    .execute(&mut *tx)
    .await?;
    let detail = json!({
        "attempt": t.n,
        "status": event.call_status.as_str(),
        "answered_by": event.answered_by,
        "duration_s": event.call_duration,
        "outcome": outcome.map(Outcome::as_str),
    });
    let name = format!("call.{}", event.call_status.as_str());
    timeline::record(
        tx,
        t.lead_id,
        Some(t.run_id),
        &name,
        timeline::SYSTEM,
        detail,
    )
    .await?;
    let was_uncertain = matches!(t.state.as_str(), "placing" | "unknown");
    if outcome.is_some() || was_uncertain {
        wake(tx, t.run_id, t.step_n).await?;
    }
    if let Some(outcome) = outcome {
        let team = t.team.clone();
        let outcome = outcome.as_str();
        pending.push(Observation::CallbackAttempt { team, outcome });
    }
    // This status overtook the provider's answer to `place`: it is what placed the call.
    if t.placed_at.is_none() && t.n == 1 {
        let placed_at = engine.clock.to_real(now);
        if let Some(observed) = speed::first_call(tx, t.run_id, &t.team, placed_at).await? {
            pending.push(observed);
        }
    }
    Ok(Applied::Moved)
}

/// Brings the step's waiting job forward to now and announces it, so a worker acts on the
/// news within milliseconds instead of at the wait's end.
async fn wake(tx: &mut PgConnection, run_id: Uuid, step_n: i32) -> Result<(), sqlx::Error> {
    let woken: Option<(String,)> = sqlx::query_as(
        "UPDATE apalis.jobs j SET run_at = now() FROM steps s \
         WHERE s.run_id = $1 AND s.name = 'callback' AND s.n = $2 AND j.id = s.job_id \
           AND j.status IN ('Pending', 'Failed') \
         RETURNING j.id",
    )
    .bind(run_id)
    .bind(step_n)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some((id,)) = woken {
        queue::announce(tx, Step::Callback, &id).await?;
    }
    Ok(())
}

/// Reports applied at once, as Twilio's webhooks for different calls arrive in parallel. One
/// at a time capped the whole pipeline at one report per few milliseconds.
const SIM_REPORTS_IN_FLIGHT: usize = 32;

/// Feeds the simulator's reports through [`apply_in_order`], as Twilio's webhook would, and
/// counts each one off `outstanding` once applied. A report's own events stay in order.
pub async fn pump_sim_reports(
    engine: std::sync::Arc<Engine>,
    reports: UnboundedReceiver<SimReport>,
    outstanding: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let reports = futures::stream::unfold(reports, |mut rx| async move {
        rx.recv().await.map(|report| (report, rx))
    });
    reports
        .for_each_concurrent(SIM_REPORTS_IN_FLIGHT, |report| {
            let (engine, outstanding) = (&engine, &outstanding);
            async move {
                if let Err(e) = apply_in_order(engine, report.attempt_id, &report.events).await {
                    tracing::warn!(attempt_id = %report.attempt_id, error = %e, "simulated statuses not applied");
                }
                outstanding.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
        .await;
}
