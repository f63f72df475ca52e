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
mod block_check;
mod execution;
mod first_call;
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

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Engine, LockedStep, RunContext, StepError};
use crate::engine::queue::StepJob;
use crate::graph::Step;
use crate::lead::RunStatus;
use crate::metrics::Pending;
use crate::workflow::{Team, Workflow};
pub(crate) use attempt::Answer;
pub(crate) use lookups::{Attempts, Lookups};
use machine::{Event, Then, Timing};
pub(crate) use recorder::Recorder;
use state::AttemptRow;

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

use block_check::{blocked, blocked_many};
use execution::{mark_scheduled, settle_waiting};
pub(crate) use first_call::plan_first;
