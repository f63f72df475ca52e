//! Assembles and supervises the apalis workers: one per worker step's queue, each with a
//! unique name, fetches gated by [`Wakeup`], a concurrency limit and the shared [`Engine`].
//!
//! apalis stops a worker when its backend errors (a heartbeat or fetch that fails while the
//! database restarts), so each queue runs under a supervisor loop that starts a fresh worker,
//! under a fresh name, after a growing pause. A fresh name matters: a worker that comes back
//! under an old name would never have its orphaned jobs rescued. The replaced worker's claims
//! are handed back at once ([`crate::engine::claims`]), not after the rescue timeout.

mod settings;

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::{
    Attempt, BoxDynError, Data, Event, EventListenerExt, TaskId, WorkerBuilder, WorkerBuilderExt,
};
use apalis_postgres::{Config, PostgresStorage};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::engine::pause::PauseBoard;
use crate::engine::queue::{self, StepJob};
use crate::engine::retention;
use crate::engine::wakeup::{Announcer, Gated, Signal, Wakeup};
use crate::engine::{Engine, Fusion, Group, Handoff};
use crate::graph::{Kind, Step};
pub use settings::WorkerSettings;

/// A running set of workers. Dropping it does not stop them; call [`Workers::shutdown`].
pub struct Workers {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    shutdown_timeout: Duration,
    handoff: Handoff,
}

/// Heartbeat cadence and missed beats such that a silent worker's jobs are rescued after
/// about `rescue_after`.
fn liveness(rescue_after: Duration) -> (Duration, usize) {
    let beat = (rescue_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let missed = rescue_after.as_secs_f64() / beat.as_secs_f64();
    (beat, missed.ceil().max(1.0) as usize)
}

impl Workers {
    pub fn spawn(engine: Arc<Engine>, settings: &WorkerSettings) -> Workers {
        let (stop, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let pauses = PauseBoard::new(engine.pool.clone());
        let announcer = Announcer::new(queue::WORKER_STEPS.map(queue::queue_name));
        tasks.spawn(
            pauses
                .clone()
                .run(settings.poll_interval(), stop.subscribe()),
        );
        tasks.spawn(
            engine
                .claims
                .clone()
                .run(engine.pool.clone(), CLAIMS_RETRY, stop.subscribe()),
        );
        let batch = settings.batch_size;
        // The effect step's group runs first, so that the database-only steps' groups, which
        // chain their successors and claim the effect's executions due now, can run those.
        let effect = queue::WORKER_STEPS
            .into_iter()
            .find(|s| s.kind() == Kind::Effect);
        let effect = effect.map(|s| Group::start(engine.clone(), s, batch, None, &mut tasks));
        let fusion = effect.clone().map(|effects| {
            Fusion::start(engine.clone(), pauses.clone(), effects, batch, &mut tasks)
        });
        let mut groups: Vec<Group> = queue::WORKER_STEPS
            .into_iter()
            .filter(|s| s.kind() == Kind::Database)
            .map(|s| Group::start(engine.clone(), s, batch, fusion.clone(), &mut tasks))
            .collect();
        groups.extend(effect);
        // Intake hands its leads' first jobs to this process's worker of that step.
        let first = Step::first_on_workers();
        let first = groups.iter().find(|g| g.step() == first).cloned();
        let handoff = Handoff::start(
            engine.clone(),
            pauses.clone(),
            first,
            batch,
            stop.subscribe(),
            &mut tasks,
        );
        for group in groups {
            let signal = announcer.signal(queue::queue_name(group.step()));
            let engine = engine.clone();
            let settings = settings.clone();
            let stop_rx = stop.subscribe();
            tasks.spawn(supervise(
                engine,
                settings,
                group,
                signal,
                pauses.clone(),
                stop_rx,
            ));
        }
        tasks.spawn(announcer.run(engine.pool.clone(), stop.subscribe()));
        match retention::schedule(&settings.retention_cron) {
            Ok(schedule) => {
                let pool = engine.pool.clone();
                tasks.spawn(retention::run_daily(
                    pool,
                    schedule,
                    settings.retention_days,
                    stop.subscribe(),
                ));
            }
            Err(e) => tracing::error!(error = %e, "retention is off"),
        }
        Workers {
            stop,
            tasks,
            shutdown_timeout: settings.shutdown_timeout(),
            handoff,
        }
    }

    /// What intake uses to run its leads' qualify jobs in these workers.
    pub fn handoff(&self) -> Handoff {
        self.handoff.clone()
    }

    pub fn shutdown_timeout(&self) -> Duration {
        self.shutdown_timeout
    }

    /// Stops claiming, lets in-flight steps finish (up to the shutdown timeout), then returns.
    /// `true` if every worker finished in time.
    pub async fn shutdown(mut self) -> bool {
        let _ = self.stop.send(true);
        let all_done = async { while self.tasks.join_next().await.is_some() {} };
        match tokio::time::timeout(self.shutdown_timeout, all_done).await {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!("workers did not finish in time; in-flight jobs will be rescued");
                self.tasks.abort_all();
                false
            }
        }
    }

    /// Ends the workers at once, as a crash would: no acknowledgement, no clean-up. Tests use
    /// it to prove that a dead worker's jobs are rescued.
    pub fn abort(mut self) {
        self.tasks.abort_all();
    }
}

/// How soon a hand-back of gone workers' claims that failed (the database is still down) is
/// tried again.
const CLAIMS_RETRY: Duration = Duration::from_secs(1);

async fn supervise(
    engine: Arc<Engine>,
    settings: WorkerSettings,
    group: Group,
    signal: Arc<Signal>,
    pauses: Arc<PauseBoard>,
    mut stop: watch::Receiver<bool>,
) {
    // A queue paused before this process started must not see a single claim, and claims an
    // earlier incarnation of this process left are told apart from this one's first.
    let ready = async { tokio::join!(pauses.wait_loaded(), engine.claims.wait_swept()) };
    tokio::select! {
        _ = ready => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    let step = group.step();
    let mut pause = Duration::from_millis(500);
    loop {
        let name = engine.claims.worker_name(step);
        let alive = crate::metrics::worker_alive(step);
        let result = run_worker(
            engine.clone(),
            &settings,
            group.clone(),
            signal.clone(),
            &name,
            pauses.clone(),
            stop.clone(),
        )
        .await;
        drop(alive);
        if *stop.borrow() {
            release_claimed(&engine.pool, &name).await;
            tracing::info!(worker = %name, "worker stopped");
            return;
        }
        pauses.detach(queue::queue_name(step), &name);
        engine.claims.gone(&name);
        match result {
            Ok(()) => pause = Duration::from_millis(500),
            Err(e) => {
                tracing::warn!(worker = %name, error = %e, ?pause, "worker ended; restarting")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => return,
        }
        // Capped low enough that work resumes soon after the database is back.
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// After a clean stop nothing runs in the worker any more, yet a fetch cut short by the stop
/// can leave jobs claimed in its name: hand them back now rather than after the rescue
/// timeout.
async fn release_claimed(pool: &sqlx::PgPool, worker: &str) {
    let released = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
         WHERE lock_by = $1 AND status IN ('Queued', 'Running')",
    )
    .bind(worker)
    .execute(pool)
    .await;
    match released {
        Ok(done) if done.rows_affected() > 0 => {
            tracing::info!(
                worker,
                jobs = done.rows_affected(),
                "handed claimed jobs back"
            );
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(worker, error = %e, "could not hand claimed jobs back; the rescue will")
        }
    }
}

async fn run_worker(
    engine: Arc<Engine>,
    settings: &WorkerSettings,
    group: Group,
    signal: Arc<Signal>,
    name: &str,
    pauses: Arc<PauseBoard>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), apalis::prelude::WorkerError> {
    let pool = engine.pool.clone();
    let step = group.step();
    let queue = queue::queue_name(step);
    let (beat, missed) = liveness(settings.rescue_after());
    // A fetched job is already ours: `get_jobs` claims it with SKIP LOCKED, marks it `Queued`
    // and sets `lock_by`, which is what the rescue of a dead worker's jobs goes by. apalis's
    // extra lock step would only rewrite every job row a third time (`Queued` → `Running`,
    // into every index of apalis.jobs); operators see both states as `running` anyway.
    let config = Config::default()
        .queue(queue)
        .lock_tasks(false)
        .batch_size(settings.batch_size.max(1))
        .heartbeat_interval(beat)
        .missed_heartbeats(missed);
    let backend = Gated::new(
        PostgresStorage::<StepJob>::new(&pool).with_config(config),
        Wakeup::new(signal, settings.poll_interval()),
    );
    let worker = WorkerBuilder::new(name)
        .backend(backend)
        .concurrency(settings.concurrency.max(1))
        .data(engine)
        .data(group)
        .on_event(move |ctx, event| {
            if matches!(event, Event::Start) {
                pauses.attach(queue, ctx);
            }
        })
        .build(handle);
    tracing::info!(worker = %name, queue, "worker starting");
    worker
        .run_until(async move {
            let _ = stop.wait_for(|s| *s).await;
            Ok::<(), apalis::prelude::WorkerError>(())
        })
        .await
}

async fn handle(
    job: StepJob,
    engine: Data<Arc<Engine>>,
    group: Data<Group>,
    id: TaskId,
    attempt: Attempt,
) -> Result<(), BoxDynError> {
    let attempt = u32::try_from(attempt.current()).unwrap_or(u32::MAX).max(1);
    let id = id.to_string();
    let _executing = engine.claims.executing(&id);
    group.run_job(&engine, job, &id, attempt).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_matches_the_rescue_timeout() {
        assert_eq!(
            liveness(Duration::from_secs(300)),
            (Duration::from_secs(30), 10)
        );
        assert_eq!(
            liveness(Duration::from_secs(3)),
            (Duration::from_secs(1), 3)
        );
        let (beat, missed) = liveness(Duration::from_secs(10));
        assert!(beat * missed as u32 >= Duration::from_secs(10));
    }
}
