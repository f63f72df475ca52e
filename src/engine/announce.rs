//! Announcing new jobs after the transaction that stored them, once per burst.
//!
//! A `NOTIFY` makes its transaction take a database-wide lock when it commits and hold it
//! until the commit is durable, so transactions that notify commit one at a time, each
//! waiting for its own WAL flush. With apalis's insert trigger announcing every intake's
//! qualify job, intake ran at one flush per lead (bench, intake only: 2.1k leads/s; 3.4k
//! without the notifications). So the intake statement marks its transaction
//! (`leadflow.announce = 'after_commit'`, which the trigger honours: migration
//! `announce_after_commit`), and the request tells [`Announcements`] once the lead is
//! stored. A task of its own then announces each queue once for every lead stored while
//! its previous notification was under way, in a transaction that stores nothing and so
//! need not wait for its flush.
//!
//! An announcement is a hint: one lost (the database down for a moment) delays a job by at
//! most a worker's poll interval, never loses it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

/// The value of `leadflow.announce` that keeps the insert trigger quiet for a transaction.
pub const AFTER_COMMIT: &str = "after_commit";

/// Where requests leave the queues to announce; cheap to clone.
#[derive(Clone, Default)]
pub struct Announcements {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Queue → the last job stored for it since its last announcement.
    due: Mutex<HashMap<&'static str, String>>,
    wake: Notify,
}

/// The task that sends the announcements; stop it to send the last ones.
pub struct Announcing {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Announcements {
    /// Starts the announcing task on `pool`.
    pub fn start(pool: PgPool) -> (Announcements, Announcing) {
        let announcements = Announcements::default();
        let (stop, stopped) = watch::channel(false);
        let shared = announcements.shared.clone();
        let task = tokio::spawn(run(shared, pool, stopped));
        (announcements, Announcing { stop, task })
    }

    /// Job `job_id` of `queue` has been stored, due now, by a transaction that has committed.
    pub fn announce(&self, queue: &'static str, job_id: &str) {
        self.shared.lock().insert(queue, job_id.to_owned());
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, String>> {
        // The map stays consistent whatever a panicking holder did: entries are independent.
        self.due.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn take(&self) -> HashMap<&'static str, String> {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back what could not be sent, unless a newer job of the queue is already due.
    fn restore(&self, unsent: HashMap<&'static str, String>) {
        let mut due = self.lock();
        for (queue, id) in unsent {
            due.entry(queue).or_insert(id);
        }
    }
}

impl Announcing {
    /// Sends what is still due (bounded by a second) and ends the task.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "the announcing task ended abnormally");
        }
    }

    /// Ends the task at once, as a crash would.
    pub fn abort(self) {
        self.task.abort();
    }
}

/// How long the task waits after a failed announcement before it tries again.
const RETRY: Duration = Duration::from_secs(1);

async fn run(shared: Arc<Shared>, pool: PgPool, mut stop: watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = shared.wake.notified() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        if stopping {
            let last = shared.take();
            if !last.is_empty() {
                let sent = tokio::time::timeout(RETRY, send(&pool, &last)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::warn!(queues = last.len(), "last job announcements not sent");
                }
            }
            return;
        }
        let due = shared.take();
        if due.is_empty() {
            continue;
        }
        if let Err(e) = send(&pool, &due).await {
            tracing::warn!(error = %e, "could not announce new jobs; workers poll for them");
            shared.restore(due);
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => shared.wake.notify_one(),
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    }
}

/// One notification per queue, in one statement. Its transaction stores nothing, so its
/// commit need not wait for the WAL flush.
async fn send(pool: &PgPool, due: &HashMap<&'static str, String>) -> Result<(), sqlx::Error> {
    let (queues, ids): (Vec<&str>, Vec<&str>) = due.iter().map(|(q, id)| (*q, id.as_str())).unzip();
    sqlx::query(concat!(
        "SELECT set_config('synchronous_commit', 'off', true), ",
        crate::engine::queue::notify_sql!("u.queue", "u.id"),
        " FROM UNNEST($1::text[], $2::text[]) AS u(queue, id)"
    ))
    .bind(queues)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}
