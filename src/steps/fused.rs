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
//! A callback due at once goes on in this process too, as Temporal dispatches an activity
//! eagerly: its job is written claimed by this process's callback worker, and after the
//! commit [`Eager`] runs it through the callback group, on a task of its own (a slow
//! provider must not hold qualify's workers), then acknowledges it. Until then it is that
//! worker's job like any it fetched: if the process dies, apalis rescues it once the
//! worker's heartbeat stops; the callback's attempt record keeps a call from going out
//! twice, as for any second delivery. At most a fetch batch of claimed callbacks wait or
//! run at once; past that, callbacks are queued as usual, for any process to take.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{Engine, Group, RunContext, StepError, Writes};
use crate::lead::Step;
use crate::metrics::{Observation, Pending};
use crate::pause::PauseBoard;
use crate::queue::{self, ClaimedDone, Started, StepJob};

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
            eager: Eager::start(engine, callbacks, limit, tasks),
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
        let room = fusion.eager.has_room();
        let callback_worker = if route && room && !engine.faults.armed(Step::Callback) {
            pauses.ready_worker(queue::queue_name(Step::Callback))
        } else {
            None
        };
        Plan {
            route,
            callback_worker,
        }
    }
}

/// A callback execution claimed for this process's callback worker, to run once the
/// transaction that created it has committed.
#[derive(Debug)]
pub(crate) struct Claimed {
    pub job: StepJob,
    pub job_id: String,
    pub worker: String,
}

/// Routes the runs whose route executions `jobs` the caller's transaction has just created
/// (with [`Writes::run_here`]), each from the run context its qualify execution loaded.
/// Returns the callbacks it claimed for `callback_worker`.
pub(super) async fn route(
    tx: &mut sqlx::PgConnection,
    engine: &Engine,
    jobs: &[(StepJob, String)],
    contexts: &HashMap<Uuid, RunContext>,
    callback_worker: Option<&str>,
    pending: &Pending,
) -> Result<Vec<Claimed>, StepError> {
    if jobs.is_empty() {
        return Ok(Vec::new());
    }
    let mut writes = Writes::new(Step::Route);
    if let Some(worker) = callback_worker {
        writes.run_here(Step::Callback, Started::ClaimedBy(worker.to_owned()));
    }
    for (job, job_id) in jobs {
        let ctx = contexts
            .get(&job.run_id)
            .ok_or(StepError::RunMissing(job.run_id))?;
        let started = Instant::now();
        let span = super::span(Step::Route, *job, job_id, 1);
        span.record("lead_id", tracing::field::display(ctx.lead_id));
        async {
            super::decide(tx, engine, Step::Route, *job, 1, ctx, &mut writes).await?;
            // Not "step done": that is logged once a transaction has committed.
            tracing::debug!("decided in qualify's transaction");
            Ok::<(), StepError>(())
        }
        .instrument(span)
        .await?;
        pending.push(Observation::StepRan {
            step: Step::Route,
            elapsed: started.elapsed(),
        });
    }
    let flushed = writes.flush(tx).await?;
    for ended in flushed.ended {
        pending.push(ended);
    }
    let Some(worker) = callback_worker else {
        return Ok(Vec::new());
    };
    Ok(flushed
        .here
        .into_iter()
        .map(|(job, job_id)| Claimed {
            job,
            job_id,
            worker: worker.to_owned(),
        })
        .collect())
}

/// Runs the callbacks that qualify's groups claimed, each on a task of its own. Cheap to
/// clone.
#[derive(Clone)]
struct Eager {
    sender: mpsc::UnboundedSender<Claimed>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

impl Eager {
    /// Starts the runner and its acknowledger on `tasks`: aborting them aborts the
    /// callbacks, as a crash would; once every sender is dropped the runner ends after its
    /// last callback, and the acknowledger after the last acknowledgement.
    fn start(
        engine: Arc<Engine>,
        callbacks: Group,
        limit: usize,
        tasks: &mut JoinSet<()>,
    ) -> Eager {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Claimed>();
        let (acks, ack_receiver) = mpsc::unbounded_channel::<ClaimedDone>();
        tasks.spawn(acknowledge(engine.clone(), ack_receiver));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        tasks.spawn(async move {
            let mut running = JoinSet::new();
            loop {
                tokio::select! {
                    claimed = receiver.recv() => match claimed {
                        Some(claimed) => {
                            let (engine, callbacks, counter, acks) =
                                (engine.clone(), callbacks.clone(), counter.clone(), acks.clone());
                            running.spawn(async move {
                                let done = run_claimed(&engine, &callbacks, claimed).await;
                                counter.fetch_sub(1, Ordering::AcqRel);
                                let _ = acks.send(done);
                            });
                        }
                        None => break,
                    },
                    Some(_) = running.join_next() => {}
                }
            }
            while running.join_next().await.is_some() {}
        });
        Eager {
            sender,
            in_flight,
            limit: limit.max(1),
        }
    }

    fn has_room(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) < self.limit
    }
}

/// Hands a claimed callback to `fusion`'s runner. Without a runner to take it, the job is
/// handed back to the queue rather than left claimed by a live worker.
pub(super) async fn dispatch(engine: &Engine, fusion: Option<&Fusion>, claimed: Claimed) {
    let claimed = match fusion.map(|f| &f.eager) {
        Some(eager) => {
            eager.in_flight.fetch_add(1, Ordering::AcqRel);
            match eager.sender.send(claimed) {
                Ok(()) => return,
                Err(mpsc::error::SendError(claimed)) => {
                    eager.in_flight.fetch_sub(1, Ordering::AcqRel);
                    claimed
                }
            }
        }
        None => claimed,
    };
    if let Err(e) = queue::release(&engine.pool, &claimed.job_id, &claimed.worker).await {
        tracing::warn!(job_id = %claimed.job_id, error = %e, "claimed job not handed back; it is rescued with its worker's jobs");
    }
}

/// Runs a claimed callback through the callback step's group; its acknowledgement is left
/// to [`acknowledge`].
async fn run_claimed(engine: &Engine, callbacks: &Group, claimed: Claimed) -> ClaimedDone {
    let Claimed {
        job,
        job_id,
        worker,
    } = claimed;
    // Boxed: run_job is also what hands claimed callbacks over, for qualify's executions.
    let result = Box::pin(callbacks.run_job(engine, job, &job_id, 1)).await;
    ClaimedDone {
        id: job_id,
        worker,
        error: result.err().map(|e| e.to_string()),
    }
}

/// Acknowledges executed claimed callbacks, all those waiting in one statement, as apalis
/// acknowledges a worker's jobs. A statement the database refuses is retried for a while:
/// until it lands the jobs stay claimed, and only a dead worker's jobs are rescued.
async fn acknowledge(engine: Arc<Engine>, mut receiver: mpsc::UnboundedReceiver<ClaimedDone>) {
    while let Some(first) = receiver.recv().await {
        let mut done = vec![first];
        while let Ok(more) = receiver.try_recv() {
            done.push(more);
        }
        let mut pause = Duration::from_millis(200);
        let mut tries = 0;
        while let Err(e) = queue::finish_claimed(&engine.pool, &done).await {
            tries += 1;
            if tries >= ACK_TRIES {
                tracing::error!(jobs = done.len(), error = %e,
                    "claimed jobs not acknowledged; they stay claimed until their worker restarts");
                break;
            }
            tracing::warn!(jobs = done.len(), error = %e, ?pause,
                "could not acknowledge claimed jobs; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// About a minute of retries: longer than a database restart, and by then a worker whose
/// heartbeat fails has been replaced, so its claimed jobs are rescued anyway.
const ACK_TRIES: usize = 16;
