//! One call attempt: its row (written before the provider is called), placing the call, and
//! recording what the provider said. The row and its states are the guard that makes a
//! redelivered job never phone the lead twice: Twilio's Calls API takes no idempotency key.

use std::collections::HashMap;

use jiff::Timestamp;
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::machine::{self, Event, Timing, Write};
use super::plan::Plan;
use super::policy::Outcome;
use super::state::{AttemptRow, Progress, State};
use super::{Exec, speed, webhook};
use crate::db::At;
use crate::engine::queue::StepJob;
use crate::engine::{LockedStep, RunContext, StepError};
use crate::graph::Step;
use crate::telephony::{CallRequest, PlaceError, Placed};
use crate::timeline;

#[derive(sqlx::FromRow)]
struct Raw {
    id: Uuid,
    n: i32,
    state: String,
    placed_at: Option<At>,
    updated_at: At,
    outcome: Option<String>,
    place_errors: i32,
    provider_call_id: Option<String>,
    created_at: At,
    lookups: i32,
    next_lookup_at: Option<At>,
}

impl From<Raw> for AttemptRow {
    fn from(r: Raw) -> Self {
        AttemptRow {
            id: r.id,
            n: r.n,
            state: State::parse(&r.state),
            placed_at: r.placed_at,
            updated_at: r.updated_at,
            outcome: r.outcome.as_deref().and_then(Outcome::parse),
            place_errors: r.place_errors,
            provider_call_id: r.provider_call_id,
            created_at: r.created_at,
            lookups: r.lookups,
            next_lookup_at: r.next_lookup_at,
        }
    }
}

const COLUMNS: &str = "id, n, state, placed_at, updated_at, outcome, place_errors, \
                       provider_call_id, created_at, lookups, next_lookup_at";

/// The attempt owned by this step execution, locked.
pub(super) async fn current(
    tx: &mut PgConnection,
    job: StepJob,
) -> Result<Option<AttemptRow>, sqlx::Error> {
    Ok(current_many(tx, &[job]).await?.remove(&(job.run_id, job.n)))
}

/// [`current`] for several step executions, in one statement (locking in run order).
/// Returns the attempts found by `(run_id, step_n)`.
pub(super) async fn current_many(
    tx: &mut PgConnection,
    jobs: &[StepJob],
) -> Result<HashMap<(Uuid, i32), AttemptRow>, sqlx::Error> {
    let runs: Vec<Uuid> = jobs.iter().map(|j| j.run_id).collect();
    let ns: Vec<i32> = jobs.iter().map(|j| j.n).collect();
    let rows: Vec<Owned> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT run_id, step_n, {COLUMNS} FROM callback_attempts \
         WHERE (run_id, step_n) IN (SELECT * FROM UNNEST($1::uuid[], $2::int[])) \
         ORDER BY run_id, step_n FOR NO KEY UPDATE"
    )))
    .bind(&runs)
    .bind(&ns)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|o| ((o.run_id, o.step_n), AttemptRow::from(o.raw)))
        .collect())
}

/// An attempt's row with the step execution that owns it.
#[derive(sqlx::FromRow)]
struct Owned {
    run_id: Uuid,
    step_n: i32,
    #[sqlx(flatten)]
    raw: Raw,
}

/// A new attempt for execution `job` of run `ctx`, planned by `plan` at `now`.
pub(crate) struct NewAttempt {
    pub(super) ctx: RunContext,
    pub(super) job: StepJob,
    team: String,
    provider: &'static str,
    zone: String,
    zone_rule: &'static str,
    now: Timestamp,
}

impl NewAttempt {
    pub(super) fn planned(
        ctx: &RunContext,
        job: StepJob,
        team: &str,
        provider: &'static str,
        plan: &Plan,
        now: Timestamp,
    ) -> NewAttempt {
        NewAttempt {
            ctx: ctx.clone(),
            job,
            team: team.to_owned(),
            provider,
            zone: plan.zone.clone(),
            zone_rule: plan.zone_rule.as_str(),
            now,
        }
    }
}

pub(super) async fn create(
    tx: &mut PgConnection,
    new: NewAttempt,
) -> Result<AttemptRow, sqlx::Error> {
    let key = (new.job.run_id, new.job.n);
    create_many(tx, &[new])
        .await?
        .remove(&key)
        .ok_or(sqlx::Error::RowNotFound)
}

/// Writes new attempts, `placing`, in one statement: each numbered after its run's earlier
/// ones (a run's attempts are created one at a time, under its step's lock). Returns them by
/// `(run_id, step_n)`.
pub(super) async fn create_many(
    tx: &mut PgConnection,
    new: &[NewAttempt],
) -> Result<HashMap<(Uuid, i32), AttemptRow>, sqlx::Error> {
    let ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
    let runs: Vec<Uuid> = new.iter().map(|a| a.ctx.run_id).collect();
    let leads: Vec<Uuid> = new.iter().map(|a| a.ctx.lead_id).collect();
    let steps: Vec<i32> = new.iter().map(|a| a.job.n).collect();
    let teams: Vec<&str> = new.iter().map(|a| a.team.as_str()).collect();
    let providers: Vec<&str> = new.iter().map(|a| a.provider).collect();
    let zones: Vec<&str> = new.iter().map(|a| a.zone.as_str()).collect();
    let rules: Vec<&str> = new.iter().map(|a| a.zone_rule).collect();
    let nows: Vec<jiff_sqlx::Timestamp> = new.iter().map(|a| a.now.into()).collect();
    let rows: Vec<Owned> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO callback_attempts (id, run_id, lead_id, n, step_n, team, provider, state, \
                                        scheduled_for, lead_zone, zone_rule, created_at, updated_at) \
         SELECT u.id, u.run_id, u.lead_id, \
                COALESCE((SELECT MAX(c.n) FROM callback_attempts c WHERE c.run_id = u.run_id), 0) + 1, \
                u.step_n, u.team, u.provider, 'placing', \
                COALESCE((SELECT r.scheduled_for FROM runs r WHERE r.id = u.run_id), u.at), \
                u.zone, u.zone_rule, u.at, u.at \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::uuid[], $4::int[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $9::timestamptz[]) \
              AS u(id, run_id, lead_id, step_n, team, provider, zone, zone_rule, at) \
         RETURNING run_id, step_n, {COLUMNS}"
    )))
    .bind(&ids)
    .bind(&runs)
    .bind(&leads)
    .bind(&steps)
    .bind(&teams)
    .bind(&providers)
    .bind(&zones)
    .bind(&rules)
    .bind(&nows)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|o| ((o.run_id, o.step_n), AttemptRow::from(o.raw)))
        .collect())
}

pub(super) async fn mark_placing(
    tx: &mut PgConnection,
    id: Uuid,
    now: Timestamp,
) -> Result<AttemptRow, sqlx::Error> {
    let row: Raw = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE callback_attempts SET state = 'placing', updated_at = $2 WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(At(now))
    .fetch_one(tx)
    .await?;
    Ok(row.into())
}

/// A `placing` attempt whose call certainly did not go out: the next execution asks again,
/// as after a provider's refusal.
pub(super) async fn unplaced<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE callback_attempts SET state = 'retry', updated_at = now() \
         WHERE id = $1 AND state = 'placing'",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts one lookup of the attempt's call; `again`: when the provider may be asked again,
/// after it could not answer.
pub(super) async fn record_lookup(
    tx: &mut PgConnection,
    id: Uuid,
    again: Option<Timestamp>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE callback_attempts SET lookups = lookups + 1, next_lookup_at = $2 WHERE id = $1",
    )
    .bind(id)
    .bind(again.map(At))
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes call `sid`, found by a lookup, as the attempt's: placed at `placed_at`. Its status
/// is applied afterwards as a status callback's would be.
pub(super) async fn adopt(
    tx: &mut PgConnection,
    id: Uuid,
    sid: &str,
    placed_at: Timestamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE callback_attempts SET provider_call_id = $2, placed_at = COALESCE(placed_at, $3), \
                state = CASE WHEN state IN ('placing', 'unknown') THEN 'placed' ELSE state END \
         WHERE id = $1 AND provider_call_id IS NULL",
    )
    .bind(id)
    .bind(sid)
    .bind(At(placed_at))
    .execute(tx)
    .await?;
    Ok(())
}

/// Which of the call ids `sids` an attempt already holds: calls that are some other
/// attempt's, never to be adopted again.
pub(super) async fn held_calls(
    tx: &mut PgConnection,
    sids: &[&str],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    if sids.is_empty() {
        return Ok(Default::default());
    }
    let held: Vec<(String,)> = sqlx::query_as(
        "SELECT provider_call_id FROM callback_attempts WHERE provider_call_id = ANY($1)",
    )
    .bind(sids)
    .fetch_all(tx)
    .await?;
    Ok(held.into_iter().map(|(sid,)| sid).collect())
}

/// Records a final outcome that leadflow itself decided (a call whose fate never became known).
pub(super) async fn settle(
    tx: &mut PgConnection,
    id: Uuid,
    outcome: Outcome,
    now: Timestamp,
) -> Result<AttemptRow, sqlx::Error> {
    let row: Raw = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE callback_attempts SET state = 'done', outcome = $2, updated_at = $3 WHERE id = $1 RETURNING {COLUMNS}"
    )))
    .bind(id)
    .bind(outcome.as_str())
    .bind(At(now))
    .fetch_one(tx)
    .await?;
    Ok(row.into())
}

/// Writes where each attempt's call stands now, all in one statement. Returns the attempts
/// as now recorded, in no particular order.
pub(super) async fn record_progress(
    tx: &mut PgConnection,
    moves: &[(Uuid, &Progress)],
    now: Timestamp,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    let ids: Vec<Uuid> = moves.iter().map(|(id, _)| *id).collect();
    let statuses: Vec<Option<&str>> = moves
        .iter()
        .map(|(_, p)| p.call_status.map(|s| s.as_str()))
        .collect();
    let ranks: Vec<i16> = moves.iter().map(|(_, p)| p.status_rank).collect();
    let sids: Vec<Option<&str>> = moves
        .iter()
        .map(|(_, p)| p.provider_call_id.as_deref())
        .collect();
    let answered: Vec<Option<&str>> = moves
        .iter()
        .map(|(_, p)| p.answered_by.as_deref())
        .collect();
    let states: Vec<&str> = moves.iter().map(|(_, p)| p.state.as_str()).collect();
    let outcomes: Vec<Option<&str>> = moves
        .iter()
        .map(|(_, p)| p.outcome.map(Outcome::as_str))
        .collect();
    // The new values' names differ from the table's, so that RETURNING's columns are its.
    let rows: Vec<Raw> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE callback_attempts a SET call_status = u.new_status, status_rank = u.new_rank, \
                provider_call_id = COALESCE(a.provider_call_id, u.new_sid), \
                answered_by = u.new_answered, placed_at = COALESCE(a.placed_at, $2), \
                updated_at = $2, state = u.new_state, outcome = COALESCE(u.new_outcome, a.outcome) \
         FROM UNNEST($1::uuid[], $3::text[], $4::smallint[], $5::text[], $6::text[], $7::text[], \
                     $8::text[]) \
              AS u(attempt, new_status, new_rank, new_sid, new_answered, new_state, new_outcome) \
         WHERE a.id = u.attempt RETURNING {COLUMNS}"
    )))
    .bind(&ids)
    .bind(At(now))
    .bind(&statuses)
    .bind(&ranks)
    .bind(&sids)
    .bind(&answered)
    .bind(&states)
    .bind(&outcomes)
    .fetch_all(tx)
    .await?;
    Ok(rows.into_iter().map(AttemptRow::from).collect())
}

/// The lead's calls placed in the 24 hours before `now`, across all its runs (the daily cap).
pub(super) async fn recent_calls(
    tx: &mut PgConnection,
    lead_id: Uuid,
    now: Timestamp,
) -> Result<Vec<Timestamp>, sqlx::Error> {
    let mut calls = recent_calls_many(tx, &[lead_id], now).await?;
    Ok(calls.remove(&lead_id).unwrap_or_default())
}

/// [`recent_calls`] of several leads, in one statement; a lead without any has no entry.
pub(super) async fn recent_calls_many(
    tx: &mut PgConnection,
    leads: &[Uuid],
    now: Timestamp,
) -> Result<HashMap<Uuid, Vec<Timestamp>>, sqlx::Error> {
    let rows: Vec<(Uuid, At)> = sqlx::query_as(
        "SELECT lead_id, placed_at FROM callback_attempts \
         WHERE lead_id = ANY($1) AND placed_at > $2 - interval '24 hours' AND placed_at <= $2",
    )
    .bind(leads)
    .bind(At(now))
    .fetch_all(tx)
    .await?;
    let mut calls: HashMap<Uuid, Vec<Timestamp>> = HashMap::new();
    for (lead, at) in rows {
        calls.entry(lead).or_default().push(at.0);
    }
    Ok(calls)
}

/// How many attempts the run has made so far.
pub(super) async fn count(tx: &mut PgConnection, run_id: Uuid) -> Result<i32, sqlx::Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM callback_attempts WHERE run_id = $1")
        .bind(run_id)
        .fetch_one(tx)
        .await?;
    Ok(i32::try_from(n).unwrap_or(i32::MAX))
}

/// The outcomes of the run's attempts before attempt `n`, oldest first.
pub(super) async fn earlier_outcomes(
    tx: &mut PgConnection,
    run_id: Uuid,
    n: i32,
) -> Result<Vec<Outcome>, sqlx::Error> {
    if n <= 1 {
        return Ok(Vec::new());
    }
    let rows: Vec<(Option<String>,)> = sqlx::query_as(
        "SELECT outcome FROM callback_attempts WHERE run_id = $1 AND n < $2 ORDER BY n",
    )
    .bind(run_id)
    .bind(n)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(o,)| {
            o.as_deref()
                .and_then(Outcome::parse)
                .unwrap_or(Outcome::Lost)
        })
        .collect())
}

/// What the provider answered to a request to place a call.
/// The provider's answer to a call request, and when it came.
#[derive(Clone)]
pub(crate) struct Answer {
    pub(super) result: Result<Placed, PlaceError>,
    /// A call the provider took was placed then (its attempt's `placed_at`, as a status's
    /// arrival sets it), not when a transaction got to record it.
    pub(super) at: Timestamp,
}

impl Exec<'_> {
    /// [`Exec::record_answer`] in a transaction of its own.
    pub(super) async fn record_alone(&self, answer: &Answer) -> Result<(), StepError> {
        let mut tx = self.engine.pool.begin().await?;
        // The step's and the run's locks before the attempt's, as everywhere (a status
        // callback racing this answer takes them in the same order).
        let locked = RunContext::lock_step(
            &mut tx,
            self.job.run_id,
            Step::Callback.as_str(),
            self.job.n,
        )
        .await?;
        let current = current(&mut tx, self.job).await?;
        self.record_answer(&mut tx, locked.as_ref(), current, answer)
            .await?;
        tx.commit().await?;
        self.pending.committed();
        tracing::debug!(step = %Step::Callback, "attempt recorded");
        Ok(())
    }

    /// Asks the provider to place the attempt's call. No transaction is held meanwhile.
    pub(super) async fn call(&self, row: &AttemptRow) -> Answer {
        let engine = self.engine;
        let settings = &engine.callbacks;
        let req = CallRequest {
            attempt_id: row.id,
            to: self.ctx.phone_e164.clone().unwrap_or_default(),
            from: self.team.caller_id.as_str().to_owned(),
            twiml_url: webhook::twiml_url(engine, row.id),
            status_callback: webhook::status_url(engine, row.id),
            timeout: settings.lead_ring_timeout,
            lead_id: self.ctx.lead_id,
            attempt_number: row.n as u32,
        };
        let span = tracing::info_span!("call", attempt_id = %row.id, n = row.n, provider = engine.provider.name());
        let result = {
            // A closed semaphore cannot happen (it is never closed); placing without a permit
            // would only loosen the bound.
            let _permit = engine.provider_slots.acquire().await.ok();
            tracing::Instrument::instrument(engine.provider.place(&req), span).await
        };
        engine.faults.after_place().await;
        Answer {
            result,
            at: engine.clock.now(),
        }
    }

    /// Records the provider's answer and moves the step on, in the caller's transaction,
    /// which holds the step's and the run's locks; `locked` is the step and run as locked
    /// there, and `current` the execution's attempt as read (locked) after them. What the
    /// answer means is [`machine::next`]'s: a status callback may have settled the attempt
    /// while the request was out, and with it the step, if a later delivery of the job was
    /// waiting for it; a settled step takes the answer as a fact, and decides nothing again.
    pub(super) async fn record_answer(
        &self,
        tx: &mut PgConnection,
        locked: Option<&LockedStep>,
        current: Option<AttemptRow>,
        answer: &Answer,
    ) -> Result<(), StepError> {
        let engine = self.engine;
        let now = engine.clock.now();
        let Some(current) = current else {
            return Ok(());
        };
        let open = locked.is_some_and(|l| !l.is_settled());
        let event = Event::Answered {
            answer: &answer.result,
            open,
        };
        let timing = Timing::of(&engine.callbacks);
        let step = machine::next(&current, event, now, &timing, rand::random());
        let row = match (step.write, &answer.result) {
            (Write::Placed, Ok(placed)) => {
                let ctx = locked.map_or(&self.ctx, |l| &l.ctx);
                self.record_placed(tx, &current, placed, answer.at, ctx)
                    .await?
            }
            (
                Write::Error {
                    state,
                    errors,
                    outcome,
                    timeline,
                },
                Err(error),
            ) => {
                let message = error.message();
                record_error(tx, current.id, state.as_str(), errors, message, now).await?;
                if let Some((event, detail)) = timeline {
                    let (lead, run) = (self.ctx.lead_id, Some(self.ctx.run_id));
                    timeline::record(&mut *tx, lead, run, event, timeline::SYSTEM, detail).await?;
                }
                match outcome {
                    Some(outcome) => self.settle(tx, current.id, outcome, now).await?,
                    None => current,
                }
            }
            _ => current,
        };
        self.then(tx, &row, step.then, now).await
    }

    /// The call the provider took: its id on the attempt (placed, unless a status settled it
    /// first), `call.placed` in the timeline, and speed to lead for a run's first call.
    async fn record_placed(
        &self,
        tx: &mut PgConnection,
        current: &AttemptRow,
        placed: &Placed,
        at: Timestamp,
        ctx: &RunContext,
    ) -> Result<AttemptRow, StepError> {
        let engine = self.engine;
        let row: Raw = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE callback_attempts SET provider_call_id = COALESCE(provider_call_id, $2), \
                    placed_at = COALESCE(placed_at, $4), updated_at = $3, \
                    state = CASE WHEN state = 'done' THEN 'done' ELSE 'placed' END \
             WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(current.id)
        .bind(&placed.call_sid)
        .bind(At(engine.clock.now()))
        .bind(At(at))
        .fetch_one(&mut *tx)
        .await?;
        let detail = json!({ "attempt": row.n, "provider": engine.provider.name(), "provider_call_id": placed.call_sid });
        let (lead, run) = (self.ctx.lead_id, Some(self.ctx.run_id));
        timeline::record(&mut *tx, lead, run, "call.placed", timeline::SYSTEM, detail).await?;
        if current.placed_at.is_none() && current.n == 1 {
            let placed_at = engine.clock.to_real(at);
            self.pending
                .push(speed::first_call(ctx, &self.team_id, placed_at));
        }
        Ok(AttemptRow::from(row))
    }
}

async fn record_error(
    tx: &mut PgConnection,
    id: Uuid,
    state: &str,
    errors: i32,
    message: &str,
    now: Timestamp,
) -> Result<(), sqlx::Error> {
    // A status callback that already settled the attempt keeps it settled.
    sqlx::query(
        "UPDATE callback_attempts SET state = CASE WHEN state = 'done' THEN 'done' ELSE $2 END, \
                place_errors = $3, error = $4, updated_at = $5 WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .bind(errors)
    .bind(message)
    .bind(At(now))
    .execute(tx)
    .await?;
    Ok(())
}
