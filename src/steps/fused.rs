//! Route run in qualify's transaction. Both steps only read and write the database, so a
//! group of qualify executions that sends its leads on to routing routes them before it
//! commits, as Temporal runs a local activity in its workflow task: the route steps and
//! their jobs are written as they would be by a route worker (a job `Done` at its first
//! attempt, a settled step, the run's team, the timeline's `routed`), without the trip
//! through the route queue (a wake-up, a claim, a transaction and an acknowledgement per
//! hop). If anything fails, the whole group rolls back and each qualify execution runs on
//! its own, queueing its route job as usual.
//!
//! Not while the route queue is paused here (its jobs must wait), and not while a test
//! fault is set on route (the fault's retries must go through the queue).
//!
//! A callback due at once goes on in this process too ([`super::eager`]): its job is written
//! claimed by this process's callback worker, and its first part runs here as well: the
//! attempt is written `placing` (or the run ends, its lead now on the block list). After the
//! commit the call is placed on a task of its own (a slow provider must not hold qualify's
//! workers), and the provider's answer recorded as any. An attempt committed `placing` is
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
use super::{Engine, Group, RunContext, StepError, Writes, callback, route};
use crate::lead::Step;
use crate::metrics::{Observation, Pending};
use crate::pause::PauseBoard;
use crate::queue::{self, StepJob};

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

/// What a qualify group may do itself now.
pub(super) struct Plan {
    /// Route the leads it qualifies.
    pub route: bool,
    /// Claim the callbacks due at once for this worker (the callback queue's, here).
    pub callback_worker: Option<String>,
}

impl Plan {
    pub fn now(engine: &Engine, fusion: &Fusion) -> Plan {
        let pauses = &fusion.pauses;
        let route =
            !engine.faults.armed(Step::Route) && !pauses.is_paused(queue::queue_name(Step::Route));
        let callback_worker = route
            .then(|| fusion.eager.worker(engine, pauses, Step::Callback))
            .flatten();
        Plan {
            route,
            callback_worker,
        }
    }
}

/// Routes the runs whose qualify executions, added to `writes`, go on to routing now: each
/// route execution decides from the run context its qualify execution loaded (given the
/// team it chooses) and is added to `writes` as done. Returns what was read for the routed
/// leads' first calls, for [`claim_callbacks`].
pub(super) async fn route(
    tx: &mut sqlx::PgConnection,
    engine: &Engine,
    writes: &mut Writes,
    contexts: &mut HashMap<Uuid, RunContext>,
    pending: &Pending,
) -> Result<Option<callback::Lookups>, StepError> {
    let runs = writes.due_now(Step::Route);
    let ctxs = runs
        .iter()
        .map(|(run, _)| contexts.get(run).ok_or(StepError::RunMissing(*run)))
        .collect::<Result<Vec<_>, _>>()?;
    // Read once for the group: the recent calls route's plans need, and the block list the
    // first calls check.
    let calling: Vec<&RunContext> = ctxs.iter().copied().filter(|c| c.auto_callback).collect();
    let read = if calling.is_empty() {
        None
    } else {
        Some(callback::Lookups::for_new(tx, engine, &calling).await?)
    };
    for (run_id, job_id) in runs {
        let ctx = contexts
            .get_mut(&run_id)
            .ok_or(StepError::RunMissing(run_id))?;
        let started = Instant::now();
        // The execution is numbered when the group's writes are flushed.
        let span = tracing::info_span!("step", step = %Step::Route, lead_id = %ctx.lead_id, %run_id, job_id);
        async {
            let workflow = engine.workflow(&ctx.workflow)?;
            let transition =
                route::decide(tx, engine, workflow, ctx, writes, read.as_ref()).await?;
            let max = workflow.retry.max_attempts;
            writes.add_done(Step::Route, ctx, transition, max);
            // Not "step done": that is logged once a transaction has committed.
            tracing::debug!("decided in qualify's transaction");
            Ok::<(), StepError>(())
        }
        .instrument(span)
        .await?;
        // The callback executions claimed below work for the team routing chose.
        if let Some(team) = writes.team(run_id) {
            ctx.team = Some(team.to_owned());
        }
        pending.push(Observation::StepRan {
            step: Step::Route,
            elapsed: started.elapsed(),
        });
    }
    Ok(read)
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
