//! Group commit for the worker steps. Executions of a step that are ready at the same time
//! share one transaction: one statement locks all their steps and runs, and each decides as it
//! would alone. Database-only steps read what they declare once for the group, decide
//! ([`super::decide`]) and record their transitions through [`Writes`], one statement per
//! kind of write for the whole group; the callback step prepares its attempts there
//! (and places the calls after the commit, each on its own, as it does alone). Under load a
//! lead's steps then cost a fraction of their own transactions.
//!
//! Each execution still ends with its own apalis job's acknowledgement, after the shared
//! commit: no job is acknowledged before its effects are durable. If the group fails (a
//! database error, a lock timeout, one lead's unreadable submission), it rolls back and each
//! of its executions runs on its own through [`super::run_job`], with its usual failure
//! handling and retries; an execution whose step the group had settled finds it settled. A
//! callback execution that would ask the provider how a call stands runs alone, so that no
//! group waits on the provider.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::batch::{spawn_runners, split_repeats};
use super::callback::{self, Call, Prepared};
use super::{Engine, RunContext, StepError, Writes, decide, eager, fused};
use crate::engine::queue::{ClaimedDone, StepJob};
use crate::graph::{Kind, Step};
use crate::metrics::Pending;

/// The entry to one step's group commit. Cheap to clone; its runners end once every clone is
/// dropped.
#[derive(Clone)]
pub struct Group {
    step: Step,
    sender: mpsc::Sender<Item>,
    /// The callback step's: records the provider's answers to calls placed at the same time
    /// in one transaction.
    recorder: Option<callback::Recorder>,
    /// Qualify's: what its groups need to route their leads and claim their callbacks (see
    /// [`fused`]).
    fusion: Option<fused::Fusion>,
}

struct Item {
    job: StepJob,
    job_id: String,
    attempt: u32,
    /// The worker this process claimed the job for, if it did (see [`eager`]): the group
    /// then acknowledges the job in its own transaction.
    claimed_by: Option<String>,
    done: oneshot::Sender<Reply>,
}

/// What became of an execution handed to a group.
enum Reply {
    /// The group committed it: the lead, when its step row was found, and the call to place
    /// now, if any.
    Committed {
        lead_id: Option<Uuid>,
        call: Option<Box<Call>>,
        claimed: Option<eager::Claimed>,
        /// The job, claimed for this process, was acknowledged in the group's transaction.
        acked: bool,
    },
    /// Run it alone.
    Alone,
}

/// What a group's committed transaction leaves to its executions, by `(run_id, n)`.
#[derive(Default)]
struct Outcome {
    leads: HashMap<(Uuid, i32), Uuid>,
    calls: HashMap<(Uuid, i32), Box<Call>>,
    alone: HashSet<(Uuid, i32)>,
    /// Callbacks claimed for this process, by run.
    claimed: HashMap<Uuid, eager::Claimed>,
}

impl Outcome {
    /// Whether the group's commit completes `item`: it is not left to run alone and has no
    /// call to place after the commit.
    fn completes(&self, item: &Item) -> bool {
        let key = (item.job.run_id, item.job.n);
        !self.alone.contains(&key) && !self.calls.contains_key(&key)
    }
}

impl Group {
    /// Starts the group's runners on `tasks`. A group holds at most `max` executions.
    /// `fusion` is qualify's: its groups then route their leads and claim their callbacks.
    pub fn start(
        engine: Arc<Engine>,
        step: Step,
        max: usize,
        fusion: Option<fused::Fusion>,
        tasks: &mut JoinSet<()>,
    ) -> Group {
        let max = max.max(1);
        let recorder = (step.kind() == Kind::Effect)
            .then(|| callback::Recorder::start(engine.clone(), max, tasks));
        let for_runners = fusion.clone();
        Group {
            step,
            sender: spawn_runners(tasks, max, move |items| {
                run(engine.clone(), step, for_runners.clone(), items)
            }),
            recorder,
            fusion,
        }
    }

    /// The step whose executions this group runs.
    pub fn step(&self) -> Step {
        self.step
    }

    /// Runs one delivery of a job of this group's step: in the next group, or alone when the
    /// step has a test fault set or the group could not take it.
    pub async fn run_job(
        &self,
        engine: &Engine,
        job: StepJob,
        job_id: &str,
        attempt: u32,
    ) -> Result<(), StepError> {
        self.run(engine, job, job_id, attempt, None).await.0
    }

    /// [`Group::run_job`] for the first delivery of a job claimed for `worker` in this
    /// process (see [`eager`]). `true` with the result when the job's acknowledgement was
    /// committed with its effects.
    pub(crate) async fn run_claimed_job(
        &self,
        engine: &Engine,
        job: StepJob,
        job_id: &str,
        worker: &str,
    ) -> (Result<(), StepError>, bool) {
        self.run(engine, job, job_id, 1, Some(worker)).await
    }

    async fn run(
        &self,
        engine: &Engine,
        job: StepJob,
        job_id: &str,
        attempt: u32,
        claimed_by: Option<&str>,
    ) -> (Result<(), StepError>, bool) {
        let step = self.step;
        if !engine.faults.armed(step) {
            let started = Instant::now();
            let (done, committed) = oneshot::channel();
            let item = Item {
                job,
                job_id: job_id.to_owned(),
                attempt,
                claimed_by: claimed_by.map(str::to_owned),
                done,
            };
            if self.sender.send(item).await.is_ok()
                && let Ok(Reply::Committed {
                    lead_id,
                    call,
                    claimed,
                    acked,
                }) = committed.await
            {
                let span = super::span(step, job, job_id, attempt);
                if let Some(lead_id) = lead_id {
                    span.record("lead_id", tracing::field::display(lead_id));
                }
                let (result, _) = self
                    .after_commit(engine, job, job_id, attempt, started, call, None)
                    .instrument(span)
                    .await;
                if let Some(claimed) = claimed {
                    fused::dispatch(engine, self.fusion.as_ref(), claimed).await;
                }
                return (result, acked);
            }
        }
        (
            super::run_job(engine, step, job, job_id, attempt).await,
            false,
        )
    }

    /// Ends the first delivery of callback execution `job`, claimed for `worker`, whose first
    /// part another step's transaction ran and committed: places `call`, if it prepared one.
    /// `true` with the result when the job's acknowledgement was committed with the answer.
    pub(crate) async fn go_on(
        &self,
        engine: &Engine,
        job: StepJob,
        job_id: &str,
        call: Option<Box<Call>>,
        worker: &str,
    ) -> (Result<(), StepError>, bool) {
        let span = super::span(self.step, job, job_id, 1);
        if let Some(call) = &call {
            span.record("lead_id", tracing::field::display(call.lead_id()));
        }
        let claimed_by = Some(worker);
        self.after_commit(engine, job, job_id, 1, Instant::now(), call, claimed_by)
            .instrument(span)
            .await
    }

    /// What an execution does once its group committed: place its call, if it has one (and
    /// record the answer, with the acknowledgement of a job claimed for `claimed_by`), then
    /// count and log it. `true` with the result when that acknowledgement was committed.
    #[allow(clippy::too_many_arguments)]
    async fn after_commit(
        &self,
        engine: &Engine,
        job: StepJob,
        job_id: &str,
        attempt: u32,
        started: Instant,
        call: Option<Box<Call>>,
        claimed_by: Option<&str>,
    ) -> (Result<(), StepError>, bool) {
        let (result, acked) = match call {
            Some(call) => {
                let recorder = self.recorder.as_ref();
                match callback::place(engine, job, job_id, attempt, call, recorder, claimed_by)
                    .await
                {
                    Ok(acked) => (Ok(()), acked),
                    Err(e) => (Err(e), false),
                }
            }
            None => (Ok(()), false),
        };
        let result = super::conclude(engine, self.step, job, job_id, attempt, started, result);
        (result.await, acked)
    }
}

/// Runs one batch of step executions as a group and tells each how it went.
async fn run(engine: Arc<Engine>, step: Step, fusion: Option<fused::Fusion>, items: Vec<Item>) {
    let (items, alone) = split_repeats(items, |i| (i.job.run_id, i.job.n));
    for item in alone {
        let _ = item.done.send(Reply::Alone);
    }
    let span = tracing::debug_span!("step_group", %step, size = items.len());
    let pending = Pending::default();
    match execute(&engine, step, fusion.as_ref(), &items, &pending)
        .instrument(span)
        .await
    {
        Ok(mut outcome) => {
            pending.committed();
            for item in items {
                let key = (item.job.run_id, item.job.n);
                // As acknowledged in the transaction (before this takes the item's call).
                let acked = item.claimed_by.is_some() && outcome.completes(&item);
                let reply = if outcome.alone.contains(&key) {
                    Reply::Alone
                } else {
                    Reply::Committed {
                        lead_id: outcome.leads.remove(&key),
                        call: outcome.calls.remove(&key),
                        claimed: outcome.claimed.remove(&key.0),
                        acked,
                    }
                };
                let _ = item.done.send(reply);
            }
        }
        Err(err) => {
            pending.discard();
            tracing::warn!(%step, size = items.len(), error = %err,
                "step group failed; its executions run one by one");
            for item in items {
                let _ = item.done.send(Reply::Alone);
            }
        }
    }
}

/// The group's transaction. What it observed goes to `pending`, to be counted once the caller
/// knows it committed.
async fn execute(
    engine: &Engine,
    step: Step,
    fusion: Option<&fused::Fusion>,
    items: &[Item],
    pending: &Pending,
) -> Result<Outcome, StepError> {
    let mut tx = engine.pool.begin().await?;
    let keys: Vec<(Uuid, i32)> = items.iter().map(|i| (i.job.run_id, i.job.n)).collect();
    let mut locked: HashMap<(Uuid, i32), _> = RunContext::lock_steps(&mut tx, step.as_str(), &keys)
        .await?
        .into_iter()
        .collect();
    let mut outcome = Outcome {
        leads: locked
            .iter()
            .map(|(key, row)| (*key, row.ctx.lead_id))
            .collect(),
        ..Outcome::default()
    };
    let mut writes = Writes::new(step);
    let plan = fusion.map(|f| fused::Plan::now(engine, f));
    if let Some(claimed) = plan.as_ref().and_then(fused::Plan::claims) {
        writes.run_here(claimed.0, claimed.1);
    }
    let mut contexts = HashMap::new();
    // Executions admitted, decided (or, the effect step's, prepared) together once all are.
    let mut admitted = Vec::new();
    for item in items {
        let key = (item.job.run_id, item.job.n);
        let row = locked.remove(&key);
        let (job, attempt) = (item.job, item.attempt);
        let ctx = super::admit(&mut tx, step, job, &item.job_id, attempt, row)
            .instrument(super::span(step, job, &item.job_id, attempt))
            .await?;
        if let Some(ctx) = ctx {
            admitted.push((item, ctx));
        }
    }
    let mut first_plans = None;
    if step.kind() == Kind::Effect {
        prepare_effects(&mut tx, engine, step, admitted, &mut outcome, pending).await?;
    } else {
        let runs: Vec<_> = admitted
            .iter()
            .map(|(item, ctx)| {
                let execution = decide::Execution::Queued {
                    job: item.job,
                    attempt: item.attempt,
                    job_id: &item.job_id,
                };
                (execution, ctx)
            })
            .collect();
        first_plans = decide::decide_all(&mut tx, engine, step, &runs, &mut writes).await?;
        if plan.is_some() {
            contexts = admitted
                .into_iter()
                .map(|(_, ctx)| (ctx.run_id, ctx))
                .collect();
        }
    }
    if let Some(plan) = &plan {
        let chained = fused::chain(&mut tx, engine, plan, &mut writes, &mut contexts, pending);
        first_plans = chained.await?.or(first_plans);
    }
    let flushed = writes.flush(&mut tx).await?;
    for ended in flushed.ended {
        pending.push(ended);
    }
    let claimed = match plan.as_ref().and_then(fused::Plan::claims) {
        Some((_, crate::engine::queue::Started::ClaimedBy(worker))) => {
            let here = flushed.here;
            let read = first_plans;
            fused::claim_callbacks(&mut tx, engine, here, &contexts, &worker, read, pending).await?
        }
        _ => Vec::new(),
    };
    // Jobs claimed for this process are acknowledged with their effects, when the commit
    // completes them (not those left to run alone, nor a callback whose call is placed
    // after it: a failed call must leave its job to be retried); apalis acknowledges the
    // ones it fetched.
    let acks: Vec<ClaimedDone> = items
        .iter()
        .filter(|i| outcome.completes(i))
        .filter_map(|i| ClaimedDone::succeeded(&i.job_id, i.claimed_by.as_deref()))
        .collect();
    crate::engine::queue::finish_claimed(&mut *tx, &acks).await?;
    tx.commit().await?;
    outcome.claimed = claimed.into_iter().map(|c| (c.job.run_id, c)).collect();
    Ok(outcome)
}

/// The first part of a group of effect-step executions: what they all read is read once,
/// then each prepares its action (a new attempt, a call to place after the commit, or
/// nothing left to do).
async fn prepare_effects(
    tx: &mut sqlx::PgConnection,
    engine: &Engine,
    step: Step,
    admitted: Vec<(&Item, RunContext)>,
    outcome: &mut Outcome,
    pending: &Pending,
) -> Result<(), StepError> {
    if admitted.is_empty() {
        return Ok(());
    }
    let executions: Vec<_> = admitted.iter().map(|(i, ctx)| (i.job, ctx)).collect();
    let read = callback::Lookups::load(tx, engine, &executions).await?;
    let mut batch = callback::NewAttempts::default();
    for (item, ctx) in admitted {
        let (job, attempt) = (item.job, item.attempt);
        let key = (job.run_id, job.n);
        let span = super::span(step, job, &item.job_id, attempt);
        span.record("lead_id", tracing::field::display(ctx.lead_id));
        let prepared = callback::prepare(tx, engine, ctx, job, attempt, pending, Some(&read))
            .instrument(span)
            .await?;
        match prepared {
            Prepared::Call(call) => {
                outcome.calls.insert(key, call);
            }
            Prepared::Alone => {
                outcome.alone.insert(key);
            }
            Prepared::New(new) => batch.add(new),
            Prepared::Done => {}
        }
    }
    outcome.calls.extend(batch.write(tx, pending).await?);
    Ok(())
}
