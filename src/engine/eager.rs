//! Jobs run in the process that created them, as Temporal dispatches an activity eagerly: a
//! transaction that creates a job due at once, in a process whose worker for that queue is
//! taking jobs, writes the job already claimed by that worker, and after the commit hands it
//! to [`Eager`], which runs it through the step's group on a task of its own and then
//! acknowledges it. No notification, fetch or apalis acknowledgement per job.
//!
//! Until then it is that worker's job like any it fetched: if the process dies, apalis
//! rescues it once the worker's heartbeat stops; a step's records keep its effects from being
//! applied twice, as for any second delivery. At most `limit` claimed jobs wait or run at
//! once; past that, jobs are queued as usual, for any process to take. Two sources hand jobs
//! over: qualify's groups their leads' callbacks ([`super::fused`]), and intake its leads'
//! qualify jobs ([`Handoff`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::callback::{self, Prepared};
use super::{Engine, Group};
use crate::db;
use crate::engine::claims::Executing;
use crate::engine::pause::PauseBoard;
use crate::engine::queue::{self, ClaimedDone, StepJob};
use crate::graph::Step;

/// An execution claimed for this process's worker of its queue, to run once the transaction
/// that created it has committed.
pub(crate) struct Claimed {
    pub job: StepJob,
    pub job_id: String,
    pub worker: String,
    /// What that transaction already did of the execution (a callback's first part, in
    /// qualify's group); `None` runs it from the start.
    pub prepared: Option<Prepared>,
}

/// Runs claimed executions of one step, each on a task of its own. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Eager {
    sender: mpsc::UnboundedSender<(Claimed, Executing)>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
}

impl Eager {
    /// Starts the runner (through `group`) and its acknowledger on `tasks`: aborting them
    /// aborts the executions, as a crash would. The runner stops taking executions once
    /// `stop` is set, or once every sender is dropped, and ends after its last execution; the
    /// acknowledger ends after the last acknowledgement.
    pub fn start(
        engine: Arc<Engine>,
        group: Group,
        limit: usize,
        mut stop: Option<watch::Receiver<bool>>,
        tasks: &mut JoinSet<()>,
    ) -> Eager {
        let (sender, mut receiver) = mpsc::unbounded_channel::<(Claimed, Executing)>();
        let (acks, ack_receiver) = mpsc::unbounded_channel::<ClaimedDone>();
        tasks.spawn(acknowledge(engine.clone(), ack_receiver));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let counter = in_flight.clone();
        tasks.spawn(async move {
            let mut running = JoinSet::new();
            let mut stopping = false;
            loop {
                tokio::select! {
                    claimed = receiver.recv() => match claimed {
                        Some((claimed, executing)) => {
                            let (engine, group, counter, acks) =
                                (engine.clone(), group.clone(), counter.clone(), acks.clone());
                            running.spawn(async move {
                                let done = run_claimed(&engine, &group, claimed).await;
                                drop(executing);
                                counter.fetch_sub(1, Ordering::AcqRel);
                                if let Some(done) = done {
                                    let _ = acks.send(done);
                                }
                            });
                        }
                        None => break,
                    },
                    Some(_) = running.join_next() => {}
                    // Later sends fail, and their jobs go back to the queue; the ones already
                    // sent are still received above.
                    _ = stopped(&mut stop), if !stopping => {
                        stopping = true;
                        receiver.close();
                    }
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

    /// The worker to claim a new job of `step` for: this process's worker of that queue,
    /// when it is taking jobs (not paused, not stopping) and this runner has room. Not while
    /// a test fault is set on the step: the fault's retries must go through the queue.
    /// `None` queues the job as usual.
    pub fn worker(&self, engine: &Engine, pauses: &PauseBoard, step: Step) -> Option<String> {
        let room = self.in_flight.load(Ordering::Acquire) < self.limit;
        if !room || engine.faults.armed(step) {
            return None;
        }
        pauses.ready_worker(queue::queue_name(step))
    }

    /// Hands a claimed execution to the runner. Without a runner to take it, the job is
    /// handed back to the queue rather than left claimed by a live worker.
    pub async fn dispatch(&self, engine: &Engine, claimed: Claimed) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let executing = engine.claims.executing(&claimed.job_id);
        match self.sender.send((claimed, executing)) {
            Ok(()) => {}
            Err(mpsc::error::SendError((claimed, _))) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                release(engine, &claimed).await;
            }
        }
    }
}

/// Resolves once `stop` is set or its sender is gone; never without one.
async fn stopped(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(rx) => {
            let _ = rx.wait_for(|s| *s).await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Hands a claimed job back to its queue, unrun. A call prepared for it was not placed: its
/// attempt is marked so, to be placed by the job's next execution.
pub(super) async fn release(engine: &Engine, claimed: &Claimed) {
    if let Some(Prepared::Call(call)) = &claimed.prepared
        && let Err(e) = callback::unplaced(&engine.pool, call).await
    {
        tracing::warn!(job_id = %claimed.job_id, error = %e, "unplaced call not marked; its attempt counts as lost after the unknown window");
    }
    if let Err(e) = queue::release(&engine.pool, &claimed.job_id, &claimed.worker).await {
        tracing::warn!(job_id = %claimed.job_id, error = %e, "claimed job not handed back; it is rescued with its worker's jobs");
    }
}

/// Runs a claimed execution through its step's group. Its acknowledgement is committed with
/// its effects when a group's transaction could; else it is returned, for [`acknowledge`].
async fn run_claimed(engine: &Engine, group: &Group, claimed: Claimed) -> Option<ClaimedDone> {
    let Claimed {
        job,
        job_id,
        worker,
        prepared,
    } = claimed;
    // Boxed: run_job is also what hands claimed callbacks over, for qualify's executions.
    let (result, acked) = match prepared {
        Some(Prepared::Call(call)) => group.go_on(engine, job, &job_id, Some(call), &worker).await,
        Some(Prepared::Done) => group.go_on(engine, job, &job_id, None, &worker).await,
        // Not prepared (a `New` attempt is written before the commit): from the start.
        None | Some(Prepared::Alone | Prepared::New(_)) => {
            Box::pin(group.run_claimed_job(engine, job, &job_id, &worker)).await
        }
    };
    (!acked).then(|| ClaimedDone {
        id: job_id,
        worker,
        error: result.err().map(|e| e.to_string()),
    })
}

/// Acknowledges executed claimed jobs, all those waiting in one statement, as apalis
/// acknowledges a worker's jobs. A statement the database refuses is retried through a
/// restart: until it lands the jobs stay claimed, and are handed back once their worker is
/// replaced ([`crate::engine::claims`]).
async fn acknowledge(engine: Arc<Engine>, mut receiver: mpsc::UnboundedReceiver<ClaimedDone>) {
    while let Some(first) = receiver.recv().await {
        let mut done = vec![first];
        while let Ok(more) = receiver.try_recv() {
            done.push(more);
        }
        let finish = || queue::finish_claimed(&engine.pool, &done);
        if let Err(e) = db::outlast_restart("acknowledge claimed jobs", |_| true, finish).await {
            tracing::error!(jobs = done.len(), error = %e,
                "claimed jobs not acknowledged; they stay claimed until their worker is replaced");
        }
    }
}

/// Intake's way to hand a new lead's first job (its first step on workers) to this process's
/// worker of that step. Cheap to clone.
#[derive(Clone)]
pub struct Handoff {
    engine: Arc<Engine>,
    pauses: Arc<PauseBoard>,
    /// `None` when this process runs no worker of that step.
    eager: Option<Eager>,
}

impl Handoff {
    /// Starts the runner of handed-over jobs (through `first`, the group of the first step on
    /// workers) on `tasks`; at most `limit` at once. Once `stop` is set, jobs are no longer handed
    /// over, and those that still come (their transaction was under way) go back to the
    /// queue.
    pub fn start(
        engine: Arc<Engine>,
        pauses: Arc<PauseBoard>,
        first: Option<Group>,
        limit: usize,
        stop: watch::Receiver<bool>,
        tasks: &mut JoinSet<()>,
    ) -> Handoff {
        let eager =
            first.map(|first| Eager::start(engine.clone(), first, limit, Some(stop), tasks));
        Handoff {
            engine,
            pauses,
            eager,
        }
    }

    /// The worker to claim a new lead's first job for ([`Eager::worker`]).
    pub fn worker(&self) -> Option<String> {
        let eager = self.eager.as_ref()?;
        eager.worker(&self.engine, &self.pauses, Step::first_on_workers())
    }

    /// Runs `job`, claimed for `worker` by a transaction that has committed.
    pub async fn dispatch(&self, job: StepJob, job_id: String, worker: String) {
        let claimed = Claimed {
            job,
            job_id,
            worker,
            prepared: None,
        };
        match &self.eager {
            Some(eager) => eager.dispatch(&self.engine, claimed).await,
            None => release(&self.engine, &claimed).await,
        }
    }
}
