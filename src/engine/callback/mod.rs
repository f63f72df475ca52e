//! The callback step: call the lead, at once or at the next moment the team's hours and the
//! lead's calling window allow, and act on the outcome.
//!
//! One execution of the step owns one attempt. Its job places the call, then the step
//! *waits*: it hands itself a follow-up job due at a given time
//! (`run:{run}:callback:{n}:wait:{k}`), so waiting costs no worker and survives restarts. The
//! call's final status settles the step in the status's own transaction (the follow-up job is
//! retired unrun); the follow-up runs only when no status came in time, to ask the provider.
//!
//! Exactly one call per attempt: the attempt row is committed before the provider is called;
//! an execution that finds its attempt `placing` or `unknown` (a crash mid-call, a timeout
//! after sending) never sends it again, but waits for a status callback until the unknown
//! window has passed, then asks the provider whether the call went out ([`lookup`]): a call
//! found is adopted, and only a provider that lists none lets the attempt count as lost. Only
//! a provider that certainly did not take the call (`retry`) is asked again, and that is not a
//! new attempt.

mod attempt;
mod lookup;
mod lookups;
mod machine;
mod matching;
pub mod outcome;
pub mod plan;
pub mod policy;
mod recorder;
pub mod reports;
mod speed;
mod state;
pub mod webhook;

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{Engine, LockedStep, RunContext, StepError, Writes};
use crate::engine::queue::{self, StepJob};
use crate::graph::Step;
use crate::lead::{RunStatus, StepStatus};
use crate::metrics::{Observation, Pending};
use crate::timeline;
use crate::workflow::{Team, Workflow};
pub(crate) use attempt::Answer;
pub(crate) use lookups::{Attempts, Lookups};
use machine::{Event, Then, Timing, Write};
use plan::{Plan, Rule};
use policy::{Next, Outcome};
pub(crate) use recorder::Recorder;
use state::{AttemptRow, State};

/// What one delivery of a callback job works with.
struct Exec<'a> {
    engine: &'a Engine,
    ctx: RunContext,
    job: StepJob,
    attempt: u32,
    workflow: &'a Workflow,
    team_id: String,
    team: &'a Team,
    /// What the current transaction observed, counted once it commits.
    pending: &'a Pending,
    /// What a group read for its executions, this one's among them (see [`Lookups`]).
    group: Option<&'a Lookups>,
}

impl<'a> Exec<'a> {
    fn new(
        engine: &'a Engine,
        ctx: RunContext,
        job: StepJob,
        attempt: u32,
        pending: &'a Pending,
    ) -> Result<Self, StepError> {
        let workflow = engine.workflow(&ctx.workflow)?;
        let team_id = ctx
            .team
            .clone()
            .unwrap_or_else(|| workflow.default_team.clone());
        let team = engine.team(&ctx.workflow, &team_id)?;
        Ok(Exec {
            engine,
            ctx,
            job,
            attempt,
            workflow,
            team_id,
            team,
            pending,
            group: None,
        })
    }
}

pub(super) async fn execute(
    engine: &Engine,
    job: StepJob,
    job_id: &str,
    attempt: u32,
) -> Result<(), StepError> {
    let mut tx = engine.pool.begin().await?;
    let Some(ctx) = super::claim(&mut tx, Step::Callback, job, job_id, attempt).await? else {
        tx.commit().await?;
        return Ok(());
    };
    engine.faults.check(Step::Callback).await?;
    let pending = Pending::default();
    let prepared = prepare(&mut tx, engine, ctx, job, attempt, &pending, None).await?;
    tx.commit().await?;
    pending.committed();
    match prepared {
        Prepared::Call(call) => place(engine, job, job_id, attempt, call, None, None)
            .await
            .map(|_| ()),
        // Alone, an execution is never `Alone` or `New`.
        Prepared::Done | Prepared::Alone | Prepared::New(_) => Ok(()),
    }
}

/// What the first part of an execution left to do once its transaction commits.
pub(crate) enum Prepared {
    /// Nothing: the step waits, or has ended.
    Done,
    /// Place this call.
    Call(Box<Call>),
    /// Nothing was written: the execution must ask the provider, which it does alone, not
    /// while holding a group's transaction (see [`prepare`]).
    Alone,
    /// A new attempt, for the group to write with the others ([`NewAttempts`]) before its
    /// commit: its call comes from that write.
    New(Box<attempt::NewAttempt>),
}

/// A call whose attempt row is committed, to be placed.
pub(crate) struct Call {
    ctx: RunContext,
    row: AttemptRow,
}

impl Call {
    /// The lead to call.
    pub(crate) fn lead_id(&self) -> Uuid {
        self.ctx.lead_id
    }
}

/// The first part of an execution, in the caller's transaction (its own, or a group's, with
/// what the group read for its executions): start, resume or settle the execution's attempt.
/// In a group, an execution that would ask the provider how a call stands comes back
/// [`Prepared::Alone`], and a new attempt [`Prepared::New`], for the group to write with the
/// others ([`NewAttempts::write`]) before its commit.
pub(crate) async fn prepare(
    tx: &mut PgConnection,
    engine: &Engine,
    ctx: RunContext,
    job: StepJob,
    attempt: u32,
    pending: &Pending,
    group: Option<&Lookups>,
) -> Result<Prepared, StepError> {
    let mut exec = Exec::new(engine, ctx, job, attempt, pending)?;
    exec.group = group;
    let may_ask_provider = group.is_none();
    let now = engine.clock.now();
    let current = match group {
        Some(read) => read.current(job),
        None => attempt::current(tx, job).await?,
    };
    let to_place = match current {
        None => exec.begin_attempt(tx, now).await?,
        Some(a) => {
            let timing = Timing::of(&engine.callbacks);
            let step = machine::next(&a, Event::Run, now, &timing, rand::random());
            match step.then {
                Then::PlaceAgain => match exec.retry_attempt(tx, a, now).await? {
                    Some(row) => ToPlace::Row(row),
                    None => ToPlace::Nothing,
                },
                // Asking the provider is done alone, not while holding a group's transaction.
                Then::LookUp | Then::AskStatus if !may_ask_provider => {
                    return Ok(Prepared::Alone);
                }
                Then::LookUp => {
                    exec.look_up(tx, a, now).await?;
                    ToPlace::Nothing
                }
                Then::AskStatus => {
                    exec.follow_up(tx, a, now).await?;
                    ToPlace::Nothing
                }
                then => {
                    exec.then(tx, &a, then, now).await?;
                    ToPlace::Nothing
                }
            }
        }
    };
    Ok(match to_place {
        ToPlace::Row(row) => Prepared::Call(Box::new(Call { ctx: exec.ctx, row })),
        ToPlace::New(new) => Prepared::New(new),
        ToPlace::Nothing => Prepared::Done,
    })
}

/// What the first part of an execution left to place.
enum ToPlace {
    Nothing,
    Row(AttemptRow),
    /// A new attempt, not written yet: a group writes its executions' together.
    New(Box<attempt::NewAttempt>),
}

/// The new attempts of a group's executions, written together once all have decided (see
/// [`NewAttempts::write`]): in bulk, one statement for the group rather than two per lead.
#[derive(Default)]
pub(crate) struct NewAttempts(Vec<attempt::NewAttempt>);

impl NewAttempts {
    /// Adds the attempt of an execution [`prepare`] returned as [`Prepared::New`].
    pub(crate) fn add(&mut self, new: Box<attempt::NewAttempt>) {
        self.0.push(*new);
    }

    /// Writes the attempts and moves their runs to `calling`, in one statement each. Returns
    /// the calls to place once the caller commits, by `(run_id, step_n)`.
    pub(crate) async fn write(
        self,
        tx: &mut PgConnection,
        pending: &Pending,
    ) -> Result<HashMap<(Uuid, i32), Box<Call>>, StepError> {
        let batch = self.0;
        if batch.is_empty() {
            return Ok(HashMap::new());
        }
        let mut rows = attempt::create_many(tx, &batch).await?;
        let moves: Vec<_> = batch
            .iter()
            .map(|new| super::writes::RunMove {
                run_id: new.ctx.run_id,
                status: Some(RunStatus::Calling),
                reason: None,
                team: None,
                duplicate_of: None,
            })
            .collect();
        for ended in super::writes::move_runs(tx, &moves).await? {
            pending.push(ended);
        }
        let mut calls = HashMap::with_capacity(batch.len());
        for new in batch {
            let key = (new.job.run_id, new.job.n);
            let row = rows.remove(&key).ok_or(StepError::RunMissing(key.0))?;
            calls.insert(key, Box::new(Call { ctx: new.ctx, row }));
        }
        Ok(calls)
    }
}

/// Places a prepared call, then records the provider's answer: with `recorder`, in a group
/// with other answers that came at the same time (which also acknowledges the job, when it
/// was claimed for worker `claimed_by` in this process), else (or if the group failed) in a
/// transaction of its own. `true` when the job's acknowledgement was committed so.
pub(crate) async fn place(
    engine: &Engine,
    job: StepJob,
    job_id: &str,
    attempt: u32,
    call: Box<Call>,
    recorder: Option<&Recorder>,
    claimed_by: Option<&str>,
) -> Result<bool, StepError> {
    let pending = Pending::default();
    let Call { ctx, row } = *call;
    let exec = Exec::new(engine, ctx, job, attempt, &pending)?;
    let answer = exec.call(&row).await;
    if let Some(recorder) = recorder
        && recorder
            .record(job, job_id, attempt, exec.ctx.clone(), &answer, claimed_by)
            .await
    {
        return Ok(claimed_by.is_some());
    }
    // The answer is the one record of whether the call went out: worth waiting out a
    // database restart for, rather than leaving the attempt to a lookup.
    let record = || exec.record_alone(&answer);
    let transient = |e: &StepError| e.db_error().is_some_and(crate::db::is_unavailable);
    crate::db::outlast_restart("record the provider's answer", transient, record).await?;
    Ok(false)
}

/// A prepared call that will not be placed by this process after all (its job goes back to
/// the queue): its attempt is marked for the job's next execution to place.
pub(crate) async fn unplaced(pool: &sqlx::PgPool, call: &Call) -> Result<(), sqlx::Error> {
    attempt::unplaced(pool, call.row.id).await
}

/// Records a provider's answer for execution `job` in the caller's (a group's) transaction,
/// which holds the step's and the run's locks; `locked` is the step and run as locked there.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_answer(
    tx: &mut PgConnection,
    engine: &Engine,
    job: StepJob,
    attempt: u32,
    ctx: RunContext,
    locked: Option<&LockedStep>,
    answer: &Answer,
    pending: &Pending,
    attempts: &Attempts,
) -> Result<(), StepError> {
    let exec = Exec::new(engine, ctx, job, attempt, pending)?;
    exec.record_answer(tx, locked, attempts.get(job), answer)
        .await
}

impl Exec<'_> {
    /// A fresh execution: call now if the hours allow (the attempt row is returned, committed
    /// by the caller before the provider is called; in a group, the attempt to write with the
    /// group's others), else wait for the time.
    async fn begin_attempt(
        &self,
        tx: &mut PgConnection,
        now: Timestamp,
    ) -> Result<ToPlace, StepError> {
        let blocked = match self.group {
            Some(read) => read.blocked(self.ctx.run_id),
            None => blocked(tx, &self.ctx).await?,
        };
        if let Some(what) = blocked {
            let reason = format!("the lead's {what} is on the block list");
            self.end_without_attempt(tx, RunStatus::Unreachable, &reason)
                .await?;
            return Ok(ToPlace::Nothing);
        }
        let Some(plan) = self.plan(tx, now, Rule::Now).await? else {
            return Ok(ToPlace::Nothing);
        };
        if plan.at > now + SignedDuration::from_secs(1) {
            self.wait(tx, plan.at, Some(&plan)).await?;
            return Ok(ToPlace::Nothing);
        }
        let provider = self.engine.provider.name();
        let new =
            attempt::NewAttempt::planned(&self.ctx, self.job, &self.team_id, provider, &plan, now);
        if self.group.is_some() {
            return Ok(ToPlace::New(Box::new(new)));
        }
        let row = attempt::create(tx, new).await?;
        super::touch_run(tx, self.ctx.run_id, Some(RunStatus::Calling), None).await?;
        Ok(ToPlace::Row(row))
    }

    /// The provider did not take the call last time: ask again, still inside hours.
    async fn retry_attempt(
        &self,
        tx: &mut PgConnection,
        a: AttemptRow,
        now: Timestamp,
    ) -> Result<Option<AttemptRow>, StepError> {
        let Some(plan) = self.plan(tx, now, Rule::Now).await? else {
            return Ok(None);
        };
        if plan.at > now + SignedDuration::from_secs(1) {
            self.wait(tx, plan.at, Some(&plan)).await?;
            return Ok(None);
        }
        Ok(Some(attempt::mark_placing(tx, a.id, now).await?))
    }

    /// When to call, or `None` (the run is failed) when the hours never allow it.
    async fn plan(
        &self,
        tx: &mut PgConnection,
        earliest: Timestamp,
        asked: Rule,
    ) -> Result<Option<Plan>, StepError> {
        let recent = match self.group {
            Some(read) => read.recent_calls(self.ctx.lead_id),
            None => attempt::recent_calls(tx, self.ctx.lead_id, self.engine.clock.now()).await?,
        };
        let e164 = self.ctx.phone_e164.as_deref().unwrap_or_default();
        let plan = plan::when(
            self.team,
            &self.workflow.quiet_hours,
            e164,
            self.ctx.phone_region.as_deref(),
            earliest,
            asked,
            &recent,
        );
        match plan {
            Ok(plan) => Ok(Some(plan)),
            Err(no) => {
                self.end_without_attempt(tx, RunStatus::Failed, &no.to_string())
                    .await?;
                Ok(None)
            }
        }
    }

    /// Hands the step a follow-up job due at `until`; the current job then ends.
    async fn wait(
        &self,
        tx: &mut PgConnection,
        until: Timestamp,
        plan: Option<&Plan>,
    ) -> Result<(), StepError> {
        let due = self.engine.clock.to_real(until);
        // The follow-up's id is known before its key (which counts the waits), so the step
        // row takes both in one statement.
        let job_id = queue::new_job_id();
        let (waits,): (i32,) = sqlx::query_as(
            "UPDATE steps SET waits = waits + 1, job_id = $3, status = $6, \
             next_run_at = $4, attempts = GREATEST(attempts, $5), \
             started_at = COALESCE(started_at, now()) \
             WHERE run_id = $1 AND name = $7 AND n = $2 RETURNING waits",
        )
        .bind(self.job.run_id)
        .bind(self.job.n)
        .bind(job_id.to_string())
        .bind(jiff_sqlx::Timestamp::from(due))
        .bind(self.attempt as i32)
        .bind(StepStatus::Waiting.as_str())
        .bind(Step::Callback.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let key = format!("{}:wait:{waits}", self.job.idempotency_key(Step::Callback));
        let max = self.workflow.retry.max_attempts;
        queue::push_step_keyed(tx, Step::Callback, self.job, job_id, &key, Some(due), max).await?;
        if let Some(plan) = plan {
            let attempt = attempt::count(tx, self.ctx.run_id).await? + 1;
            schedule_run(tx, &self.ctx, plan, attempt, None).await?;
        }
        Ok(())
    }

    /// A placed call whose final status has not come, its check due: ask the provider how it
    /// stands, and act on the answer as [`machine::next`] says.
    async fn follow_up(
        &self,
        tx: &mut PgConnection,
        a: AttemptRow,
        now: Timestamp,
    ) -> Result<(), StepError> {
        let sid = a.provider_call_id.clone().unwrap_or_default();
        let asked = self.engine.provider.status(&sid).await;
        if let Err(e) = &asked {
            tracing::warn!(attempt_id = %a.id, error = %e, "could not ask the provider about the call");
        }
        let message = asked.as_ref().err().map(|e| e.to_string());
        let event = match &asked {
            Ok(status) => Event::Asked(Ok(status.as_ref())),
            Err(_) => Event::Asked(Err(message.as_deref().unwrap_or_default())),
        };
        let timing = Timing::of(&self.engine.callbacks);
        let step = machine::next(&a, event, now, &timing, rand::random());
        let a = match (step.write, &asked) {
            (Write::Status, Ok(Some(event))) => {
                let events = std::slice::from_ref(event);
                outcome::apply_on(tx, self.engine, &self.ctx, a.id, events, self.pending).await?;
                let detail = json!({ "attempt": a.n, "status": event.call_status.as_str(), "source": "provider" });
                let (lead, run) = (self.ctx.lead_id, Some(self.ctx.run_id));
                timeline::record(tx, lead, run, "call.reconciled", timeline::SYSTEM, detail)
                    .await?;
                match attempt::current(tx, self.job).await? {
                    Some(settled) => settled,
                    None => return Ok(()),
                }
            }
            (Write::Settle(outcome), _) => self.settle(tx, a.id, outcome, now).await?,
            _ => a,
        };
        self.then(tx, &a, step.then, now).await
    }

    /// Carries out what an attempt's transition says to do next ([`machine::Then`]), `a`
    /// being the attempt as now written. Asking the provider is not among them: the
    /// execution does that itself ([`prepare`]).
    async fn then(
        &self,
        tx: &mut PgConnection,
        a: &AttemptRow,
        then: Then,
        now: Timestamp,
    ) -> Result<(), StepError> {
        match then {
            Then::Nothing => Ok(()),
            Then::Wait(until) => self.wait(tx, until, None).await,
            Then::Decide => self.decide(tx, a, now).await,
            Then::DecideOrWait(_) if a.state == State::Done => self.decide(tx, a, now).await,
            Then::DecideOrWait(until) => self.wait(tx, until, None).await,
            Then::Fail(reason) if a.outcome.is_some() => {
                self.finish(tx, RunStatus::Failed, &reason, a).await
            }
            Then::Fail(reason) => {
                let output = json!({ "attempt": a.n, "outcome": null });
                self.close(tx, RunStatus::Failed, &reason, output, Some(a.n))
                    .await
            }
            Then::PlaceAgain | Then::LookUp | Then::AskStatus => {
                tracing::error!(?then, attempt_id = %a.id, "not an action for after a write");
                Ok(())
            }
        }
    }

    /// The attempt is settled: end the run, or schedule the next attempt.
    async fn decide(
        &self,
        tx: &mut PgConnection,
        a: &AttemptRow,
        now: Timestamp,
    ) -> Result<(), StepError> {
        let outcome = a.outcome.unwrap_or(Outcome::Lost);
        let earlier = attempt::earlier_outcomes(tx, self.ctx.run_id, a.n).await?;
        match policy::next(outcome, &earlier, &self.team.callback) {
            Next::Finish { status, reason } => self.finish(tx, status, &reason, a).await,
            Next::Retry { after, reason } => {
                let after = SignedDuration::try_from(after).unwrap_or(SignedDuration::ZERO);
                let earliest = now.checked_add(after).unwrap_or(now);
                let Some(plan) = self.plan(tx, earliest, Rule::RetryDelay).await? else {
                    return Ok(());
                };
                let next = StepJob {
                    run_id: self.job.run_id,
                    n: self.job.n + 1,
                };
                let due = self.engine.clock.to_real(plan.at);
                super::enqueue(
                    tx,
                    Step::Callback,
                    next,
                    Some(due),
                    self.workflow.retry.max_attempts,
                )
                .await?;
                let output = json!({ "attempt": a.n, "outcome": outcome.as_str(), "next_attempt_at": plan.at, "rule": plan.rule });
                super::set_step(
                    tx,
                    Step::Callback,
                    self.job,
                    StepStatus::Ok,
                    self.attempt,
                    Some(&output),
                    None,
                )
                .await?;
                schedule_run(tx, &self.ctx, &plan, a.n + 1, Some(&reason)).await?;
                Ok(())
            }
        }
    }

    async fn finish(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
        a: &AttemptRow,
    ) -> Result<(), StepError> {
        let outcome = a.outcome.unwrap_or(Outcome::Lost);
        let output = json!({ "attempt": a.n, "outcome": outcome.as_str() });
        self.close(tx, status, reason, output, Some(a.n)).await
    }

    /// Ends the run unless something (an operator, say) already did; counted once committed.
    async fn end_run(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
    ) -> Result<(), sqlx::Error> {
        if let Some(ended) =
            super::touch_run(tx, self.ctx.run_id, Some(status), Some(reason)).await?
        {
            self.pending.push(ended);
        }
        Ok(())
    }

    /// Gives an attempt the final outcome leadflow decided (the provider never told).
    async fn settle(
        &self,
        tx: &mut PgConnection,
        id: uuid::Uuid,
        outcome: Outcome,
        now: Timestamp,
    ) -> Result<AttemptRow, sqlx::Error> {
        let row = attempt::settle(tx, id, outcome, now).await?;
        self.pending.push(Observation::CallbackAttempt {
            team: self.team_id.clone(),
            outcome: outcome.as_str(),
        });
        Ok(row)
    }

    async fn end_without_attempt(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
    ) -> Result<(), StepError> {
        self.close(tx, status, reason, json!({ "reason": reason }), None)
            .await
    }

    /// Settles the step with `output` and ends the run, in the run and its timeline.
    async fn close(
        &self,
        tx: &mut PgConnection,
        status: RunStatus,
        reason: &str,
        output: serde_json::Value,
        attempts: Option<i32>,
    ) -> Result<(), StepError> {
        let step = Step::Callback;
        let ok = StepStatus::Ok;
        super::set_step(tx, step, self.job, ok, self.attempt, Some(&output), None).await?;
        self.end_run(tx, status, reason).await?;
        let detail = json!({ "status": status, "reason": reason, "attempts": attempts });
        let (lead, run) = (self.ctx.lead_id, Some(self.ctx.run_id));
        timeline::record(tx, lead, run, "callback.finished", timeline::SYSTEM, detail).await?;
        Ok(())
    }
}

/// A final status settled attempt `a`, whose step execution `job` waits for it: decide what
/// comes next now, inside the status's transaction, which holds the step's and the run's locks.
/// `false` when this process cannot decide for the run (its workflow or team is no longer
/// loaded): the caller wakes the step's job instead, whose failure and retries operators see,
/// and the status itself is still recorded.
async fn settle_waiting(
    tx: &mut PgConnection,
    engine: &Engine,
    ctx: RunContext,
    job: StepJob,
    a: &AttemptRow,
    pending: &Pending,
) -> Result<bool, StepError> {
    // The job's delivery count is not known here; `set_step` keeps the larger one recorded.
    let exec = match Exec::new(engine, ctx, job, 0, pending) {
        Ok(exec) => exec,
        Err(e) => {
            tracing::warn!(run_id = %job.run_id, error = %e, "final status not settled here");
            return Ok(false);
        }
    };
    exec.decide(tx, a, engine.clock.now()).await?;
    Ok(true)
}

/// The run waits for its next call: `scheduled`, with the time and what set it, in the run
/// and in the lead's timeline (`because`: the outcome that led to a retry).
async fn schedule_run(
    tx: &mut PgConnection,
    ctx: &RunContext,
    plan: &Plan,
    attempt: i32,
    because: Option<&str>,
) -> Result<(), sqlx::Error> {
    let entry = mark_scheduled(tx, ctx, plan, attempt, because).await?;
    timeline::record_many(tx, timeline::SYSTEM, vec![entry]).await
}

/// [`schedule_run`]'s write to the run; returns its timeline entry, to be written by the
/// caller.
async fn mark_scheduled(
    tx: &mut PgConnection,
    ctx: &RunContext,
    plan: &Plan,
    attempt: i32,
    because: Option<&str>,
) -> Result<timeline::Entry, sqlx::Error> {
    sqlx::query(
        "UPDATE runs SET status = $4, scheduled_for = $2, schedule_rule = $3, updated_at = now() \
         WHERE id = $1 AND status = ANY($5)",
    )
    .bind(ctx.run_id)
    .bind(jiff_sqlx::Timestamp::from(plan.at))
    .bind(plan.rule.as_str())
    .bind(RunStatus::Scheduled.as_str())
    .bind(RunStatus::active_names())
    .execute(&mut *tx)
    .await?;
    let detail = json!({
        "at": plan.at, "rule": plan.rule, "attempt": attempt,
        "lead_zone": plan.zone, "zone_rule": plan.zone_rule, "because": because,
    });
    Ok(timeline::Entry {
        lead_id: ctx.lead_id,
        run_id: Some(ctx.run_id),
        event: "callback.scheduled".to_owned(),
        detail,
    })
}

/// Re-checked before every attempt: the block list may have grown since intake.
async fn blocked(
    tx: &mut PgConnection,
    ctx: &RunContext,
) -> Result<Option<&'static str>, sqlx::Error> {
    Ok(blocked_many(tx, &[ctx]).await?.remove(&ctx.run_id))
}

/// [`blocked`] for the leads of several runs, in one statement: what of each run's lead is
/// on the block list (its phone number before its email address), by run.
async fn blocked_many(
    tx: &mut PgConnection,
    ctxs: &[&RunContext],
) -> Result<HashMap<Uuid, &'static str>, sqlx::Error> {
    let runs: Vec<Uuid> = ctxs.iter().map(|c| c.run_id).collect();
    let phones: Vec<Option<&str>> = ctxs.iter().map(|c| c.phone_e164.as_deref()).collect();
    let emails: Vec<Option<&str>> = ctxs.iter().map(|c| c.email.as_deref()).collect();
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT u.run_id, b.kind FROM UNNEST($1::uuid[], $2::text[], $3::text[]) \
              AS u(run_id, phone, email) \
         JOIN blocklist b ON (b.kind = 'phone' AND b.value = u.phone) \
                          OR (b.kind = 'email' AND b.value = lower(u.email)) \
         ORDER BY b.kind",
    )
    .bind(&runs)
    .bind(&phones)
    .bind(&emails)
    .fetch_all(tx)
    .await?;
    // Ordered by kind: a run's phone row comes last and wins.
    Ok(rows
        .into_iter()
        .map(|(run, kind)| {
            let what = if kind == "phone" {
                "phone number"
            } else {
                "email address"
            };
            (run, what)
        })
        .collect())
}

/// The first call of a lead entering the callback step: when, with the stagger, recorded on
/// the run (its timeline entry goes to `writes`, after the entering decision's). `read`: what
/// its group read for its leads' first calls ([`Lookups::for_new`]).
pub(super) async fn plan_first(
    tx: &mut PgConnection,
    engine: &Engine,
    workflow: &Workflow,
    team_id: &str,
    ctx: &RunContext,
    read: &Lookups,
    writes: &mut Writes,
) -> Result<Result<Plan, String>, StepError> {
    let team = engine.team(&workflow.name, team_id)?;
    let now = engine.clock.now();
    let recent = read.recent_calls(ctx.lead_id);
    let plan = plan::when(
        team,
        &workflow.quiet_hours,
        ctx.phone_e164.as_deref().unwrap_or_default(),
        ctx.phone_region.as_deref(),
        now,
        Rule::Now,
        &recent,
    );
    let plan = match plan {
        Ok(plan) => plan,
        Err(no) => return Ok(Err(no.to_string())),
    };
    let plan = plan::stagger(tx, team_id, team, plan).await?;
    if plan.rule != Rule::Now {
        writes.add_event_after(mark_scheduled(tx, ctx, &plan, 1, None).await?);
    }
    Ok(Ok(plan))
}
