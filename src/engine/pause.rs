//! Paused queues, as the workers of one process see them.
//!
//! apalis-postgres has no pause of its own, so the `queue_pauses` table (written by operator
//! actions) is the truth, and each process keeps a [`PauseBoard`]: the set of paused queues,
//! reloaded every poll interval, applied to its running workers with apalis's
//! `WorkerContext::pause()` / `resume()`. A paused worker keeps heart-beating (its claimed jobs
//! are not rescued by others) but asks the backend for no new jobs, so a pause takes effect
//! within one poll interval and, being a table row, survives restarts.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::WorkerContext;
use sqlx::PgPool;
use tokio::sync::watch;

pub struct PauseBoard {
    pool: PgPool,
    paused: Mutex<HashSet<String>>,
    /// The running worker of each queue in this process (a supervisor restart replaces it).
    workers: Mutex<HashMap<String, WorkerContext>>,
    loaded: watch::Sender<bool>,
}

impl PauseBoard {
    pub fn new(pool: PgPool) -> Arc<PauseBoard> {
        Arc::new(PauseBoard {
            pool,
            paused: Mutex::default(),
            workers: Mutex::default(),
            loaded: watch::channel(false).0,
        })
    }

    pub fn is_paused(&self, queue: &str) -> bool {
        self.paused.lock().is_ok_and(|p| p.contains(queue))
    }

    /// Registers a worker that has just started, pausing it at once if its queue is paused:
    /// apalis emits the start event before the worker's first fetch.
    pub fn attach(&self, queue: &str, ctx: &WorkerContext) {
        apply(ctx, self.is_paused(queue));
        if let Ok(mut workers) = self.workers.lock() {
            workers.insert(queue.to_owned(), ctx.clone());
        }
    }

    /// Forgets worker `name` of `queue`, which has ended: no job is claimed for it any more
    /// (its replacement registers itself when it starts).
    pub fn detach(&self, queue: &str, name: &str) {
        if let Ok(mut workers) = self.workers.lock()
            && workers.get(queue).is_some_and(|ctx| ctx.name() == name)
        {
            workers.remove(queue);
        }
    }

    /// The name of `queue`'s worker in this process while it is registered with apalis and
    /// taking jobs (not paused, not stopping): the name a job claimed on its behalf carries.
    pub fn ready_worker(&self, queue: &str) -> Option<String> {
        if self.is_paused(queue) {
            return None;
        }
        let workers = self.workers.lock().ok()?;
        let ctx = workers.get(queue)?;
        ctx.is_ready().then(|| ctx.name().to_owned())
    }

    /// Resolves once the table has been read, so that no worker claims a job of a queue that
    /// was paused before this process started.
    pub async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        let _ = rx.wait_for(|loaded| *loaded).await;
    }

    /// Reads the table and pauses or resumes this process's workers to match.
    pub async fn refresh(&self) -> Result<(), sqlx::Error> {
        let rows: Vec<(String,)> = sqlx::query_as("SELECT queue FROM queue_pauses")
            .fetch_all(&self.pool)
            .await?;
        let now: HashSet<String> = rows.into_iter().map(|(q,)| q).collect();
        if let Ok(mut paused) = self.paused.lock() {
            *paused = now.clone();
        }
        if let Ok(workers) = self.workers.lock() {
            for (queue, ctx) in workers.iter() {
                apply(ctx, now.contains(queue));
            }
        }
        self.loaded.send_replace(true);
        Ok(())
    }

    /// Refreshes every `interval` until `stop` turns true. A failed read keeps the last known
    /// state: a database outage neither pauses nor resumes anything.
    pub async fn run(self: Arc<Self>, interval: Duration, mut stop: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "could not read the paused queues; keeping the last known state");
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

fn apply(ctx: &WorkerContext, paused: bool) {
    // Both calls refuse a worker in the wrong state (stopping, not started); that is fine.
    if paused && ctx.is_running() {
        let _ = ctx.pause();
    } else if !paused && ctx.is_paused() {
        let _ = ctx.resume();
    }
}
