//! Database-only steps run in their predecessor's transaction (the engine's fusion policy,
//! chosen by step kind). A group of a database-only step whose decisions send leads on to
//! another database-only step runs that step's decisions before it commits (and the next
//! one's, down the graph), as Temporal runs a local activity in its workflow task: their
//! steps and jobs are written as a worker of theirs would write them (a job `Done` at its
//! first attempt, a settled step, the run's changes, the timeline's entry), without the trip
//! through their queue (a wake-up, a claim, a transaction and an acknowledgement per hop).
//! If anything fails, the whole group rolls back and each of its executions runs on its own,
//! queueing its successor's job as usual.
//!
//! Not for a step whose queue is paused here (its jobs must wait), nor one with a test fault
//! set (the fault's retries must go through the queue).
//!
//! An effect-step execution (a callback) due at once goes on in this process too
//! ([`super::eager`]): its job is written claimed by this process's callback worker, and its first part runs here as well: the
//! attempt is written `placing` (or the run ends, its lead now on the block list). After the
//! commit the call is placed on a task of its own (a slow provider must not hold the
//! database steps' workers), and the provider's answer recorded as any. An attempt committed `placing` is
//! never called again (see `steps/callback`): if the process dies before the call is placed,
//! the rescued job counts the attempt as `lost` once the unknown window has passed and the
//! team's policy decides; a job handed back unplaced ([`super::eager::release`]) marks its
//! attempt `retry` first, as the provider's certain refusal does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::callback::Prepared;
use super::eager::{Claimed, Eager};
use super::{Engine, Group, RunContext, StepError, Writes, callback, decide};
use crate::engine::pause::PauseBoard;
use crate::engine::queue::{self, StepJob};
use crate::graph::{GRAPH, Kind, Step};
use crate::metrics::{Observation, Pending};

/// What qualify's group needs to route its leads and claim their callbacks: the process's
/// pause board and the runner of claimed callbacks. Cheap to clone.
#[derive(Clone)]
pub struct Fusion {
    pauses: Arc<PauseBoard>,
    eager: Eager,
}

impl Fusion {
    /// Starts the runner of claimed callbacks (through `callbacks`, the callback step's
    /// group) on `tasks`; at most `limit` at once.
    pub fn start(
        engine: Arc<Engine>,
        pauses: Arc<PauseBoard>,
        callbacks: Group,
        limit: usize,
        tasks: &mut JoinSet<()>,
    ) -> Fusion {
        Fusion {
            pauses,
            eager: Eager::start(engine, callbacks, limit, None, tasks),
        }
    }
}

/// What a group of a database-only step may do itself now.
pub(super) struct Plan {
    /// The database-only steps its decisions may go on to in its transaction: not while
    /// their queue is paused here (their jobs must wait), nor while a test fault is set on
    /// them (the fault's retries must go through the queue).
    fuses: Vec<Step>,
    /// The effect step, and the worker its executions due now are claimed for (the effect
    /// queue's, here).
    effect: Option<(Step, String)>,
}

impl Plan {
    pub fn now(engine: &Engine, fusion: &Fusion) -> Plan {
        let pauses = &fusion.pauses;
        let open = |s: &Step| !engine.faults.armed(*s) && !pauses.is_paused(s.queue());
        let fuses = Step::ALL
            .into_iter()
            .filter(|s| s.kind() == Kind::Database)
            .filter(open)
            .collect();
        let effect = Step::ALL.into_iter().find(|s| s.kind() == Kind::Effect);
        let effect = effect.and_then(|s| Some((s, fusion.eager.worker(engine, pauses, s)?)));
        Plan { fuses, effect }
    }

    /// The step whose new executions due now this group's process claims, and how.
    pub fn claims(&self) -> Option<(Step, queue::Started)> {
        let (step, worker) = self.effect.as_ref()?;
        Some((*step, queue::Started::ClaimedBy(worker.clone())))
    }
}

/// Runs the executions of database-only steps that the decisions added to `writes` so far
/// start due now, each step's as a group ([`decide::decide_all`]), and those that theirs
/// start in turn, until none is left: a lead goes through every database-only step after
/// the group's in the group's transaction. `contexts`: the runs' contexts, as the group's
/// executions loaded them. Returns what was read for the first plans of runs entering the
/// effect step, for [`claim_callbacks`].
pub(super) async fn chain(
    tx: &mut sqlx::PgConnection,
    engine: &Engine,
    plan: &Plan,
    writes: &mut Writes,
    contexts: &mut HashMap<Uuid, RunContext>,
    pending: &Pending,
) -> Result<Option<callback::Lookups>, StepError> {
    let mut first_plans = None;
    // Each round runs at least one step further along the graph.
    for _ in 0..GRAPH.len() {
        let mut ran = false;
        for &step in &plan.fuses {
            let due = writes.due_now(step);
            if due.is_empty() {
                continue;
            }
            ran = true;
            decide::carry_teams(writes, contexts);
            let runs = due
                .iter()
                .map(|(run, job_id)| {
                    let ctx = contexts.get(run).ok_or(StepError::RunMissing(*run))?;
                    Ok((decide::Execution::Fused { job_id }, ctx))
                })
                .collect::<Result<Vec<_>, StepError>>()?;
            let started = Instant::now();
            let plans = decide::decide_all(tx, engine, step, &runs, writes).await?;
            first_plans = plans.or(first_plans);
            let elapsed = started.elapsed() / u32::try_from(runs.len()).unwrap_or(u32::MAX);
            for _ in &runs {
                pending.push(Observation::StepRan { step, elapsed });
            }
        }
        if !ran {
            break;
        }
    }
    // The effect executions claimed after this work for the teams chosen.
    decide::carry_teams(writes, contexts);
    Ok(first_plans)
}

/// Prepares the callbacks that the caller's transaction has just created claimed for
/// `worker` (`here`, from [`Writes::flush`]): their first attempts are written now, their
/// calls placed after the commit. `read`: what [`route`] read for their leads, if it did.
pub(super) async fn claim_callbacks(
    tx: &mut sqlx::PgConnection,
    engine: &Engine,
    here: Vec<(StepJob, String)>,
    contexts: &HashMap<Uuid, RunContext>,
    worker: &str,
    read: Option<callback::Lookups>,
    pending: &Pending,
) -> Result<Vec<Claimed>, StepError> {
    let contexts = here
        .iter()
        .map(|(job, _)| {
            let ctx = contexts.get(&job.run_id);
            ctx.cloned().ok_or(StepError::RunMissing(job.run_id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let read = match read {
        Some(read) => read,
        None if here.is_empty() => return Ok(Vec::new()),
        None => {
            let ctxs: Vec<&RunContext> = contexts.iter().collect();
            callback::Lookups::for_new(tx, engine, &ctxs).await?
        }
    };
    let mut claimed = Vec::with_capacity(here.len());
    let mut batch = callback::NewAttempts::default();
    for ((job, job_id), ctx) in here.into_iter().zip(contexts) {
        let span = super::span(Step::Callback, job, &job_id, 1);
        span.record("lead_id", tracing::field::display(ctx.lead_id));
        let prepared = callback::prepare(tx, engine, ctx, job, 1, pending, Some(&read))
            .instrument(span)
            .await?;
        // A new attempt's call comes from the batch's write, below.
        let prepared = match prepared {
            Prepared::New(new) => {
                batch.add(new);
                None
            }
            prepared => Some(prepared),
        };
        claimed.push(Claimed {
            job,
            job_id,
            worker: worker.to_owned(),
            prepared,
        });
    }
    let mut calls = batch.write(tx, pending).await?;
    for c in claimed.iter_mut().filter(|c| c.prepared.is_none()) {
        c.prepared = calls.remove(&(c.job.run_id, c.job.n)).map(Prepared::Call);
    }
    Ok(claimed)
}

/// Hands a claimed callback to `fusion`'s runner; without one, back to the queue.
pub(super) async fn dispatch(engine: &Engine, fusion: Option<&Fusion>, claimed: Claimed) {
    match fusion {
        Some(fusion) => fusion.eager.dispatch(engine, claimed).await,
        None => super::eager::release(engine, &claimed).await,
    }
}
