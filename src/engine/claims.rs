//! Jobs claimed by workers this process knows to be gone, handed back at once rather than
//! after the rescue timeout.
//!
//! apalis rescues a worker's claimed jobs once its heartbeat has been silent for
//! `LEADFLOW_RESCUE_AFTER_S` (5 minutes by default): the only safe rule for a worker in
//! another process, which may just be slow. A worker of this process is known, though. When
//! its supervisor replaces it (its backend failed while the database restarted), or when this
//! process is a new incarnation of one that shared its host and pid (a container restarted in
//! place), nothing of the old worker can still be running a job unless this process says so.
//! So the jobs such a worker claimed are released at once, except those still executing here,
//! which are released once their execution has ended: a second delivery of a job that ran is
//! safe (the step lock and the attempt row see to that), but it is not needed while it runs.
//!
//! Worker names are `{host}-{pid}-{random}-{step}` ([`Claims::worker_name`]), so the name
//! says whose a claim is. This relies on each process having its own host name and pid, as
//! machines, Docker containers and Kubernetes pods do by default.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, watch};

use crate::graph::Step;

/// Workers of this process that are gone and may still hold claims, and the jobs executing
/// in this process. Cheap to clone.
#[derive(Clone)]
pub struct Claims(Arc<Shared>);

struct Shared {
    /// `{host}-{pid}-`: the start of every worker name of this process.
    prefix: String,
    state: Mutex<State>,
    wake: Notify,
    /// Set once claims left by an earlier incarnation of this process have been looked for.
    swept_earlier: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    /// Replaced workers (and earlier incarnations' workers) whose claims are not all back.
    gone: HashSet<String>,
    /// Job ids executing in this process, with how many deliveries of each.
    executing: HashMap<String, usize>,
}

/// Marks a job as executing in this process until dropped.
pub struct Executing {
    claims: Claims,
    job_id: String,
}

impl Drop for Executing {
    fn drop(&mut self) {
        let mut state = self.claims.lock();
        if let Some(n) = state.executing.get_mut(&self.job_id) {
            *n -= 1;
            if *n == 0 {
                state.executing.remove(&self.job_id);
            }
        }
        let waiting = !state.gone.is_empty();
        drop(state);
        if waiting {
            self.claims.0.wake.notify_one();
        }
    }
}

/// How often claims still held by executions of a gone worker are looked at again.
const RECHECK: Duration = Duration::from_secs(1);

impl Claims {
    /// The claims of this process's workers.
    pub fn of_this_process() -> Claims {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "host".to_owned());
        Claims::new(format!("{host}-{}-", std::process::id()))
    }

    /// The claims of the workers named `{prefix}…`.
    fn new(prefix: String) -> Claims {
        Claims(Arc::new(Shared {
            prefix,
            state: Mutex::default(),
            wake: Notify::new(),
            swept_earlier: watch::channel(false).0,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new name for a worker of `step` in this process: `{host}-{pid}-{random}-{step}`,
    /// unique per process and per start, as apalis requires.
    pub fn worker_name(&self, step: Step) -> String {
        let suffix: u32 = rand::random();
        format!("{}{suffix:08x}-{step}", self.0.prefix)
    }

    /// Whether `name` is a worker name this process's host and pid would give.
    fn is_ours(&self, name: &str) -> bool {
        let Some(rest) = name.strip_prefix(self.0.prefix.as_str()) else {
            return false;
        };
        let (random, step) = rest.split_at_checked(8).unwrap_or(("", ""));
        random.bytes().all(|b| b.is_ascii_hexdigit())
            && !random.is_empty()
            && step
                .strip_prefix('-')
                .is_some_and(|s| Step::ALL.iter().any(|known| known.as_str() == s))
    }

    /// Job `job_id` executes in this process while the guard lives.
    pub fn executing(&self, job_id: &str) -> Executing {
        *self.lock().executing.entry(job_id.to_owned()).or_default() += 1;
        Executing {
            claims: self.clone(),
            job_id: job_id.to_owned(),
        }
    }

    /// Worker `name` of this process has ended and will not run again: its claims go back.
    pub fn gone(&self, name: &str) {
        self.lock().gone.insert(name.to_owned());
        self.0.wake.notify_one();
    }

    /// Resolves once claims left by an earlier incarnation of this process have been handed
    /// back: no worker starts before, so that none of its own claims is taken for one.
    pub async fn wait_swept(&self) {
        let mut rx = self.0.swept_earlier.subscribe();
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Hands back the claims of gone workers until `stop`: first those of earlier
    /// incarnations, then each replaced worker's as it goes. A failed statement (the database
    /// is still down) is tried again after `retry`.
    pub async fn run(self, pool: PgPool, retry: Duration, mut stop: watch::Receiver<bool>) {
        let earlier = loop {
            match earlier_workers(&pool, &self.0.prefix).await {
                Ok(names) => break names.into_iter().filter(|n| self.is_ours(n)),
                Err(e) => {
                    tracing::warn!(error = %e, "could not look for claims of an earlier incarnation; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            }
        };
        self.lock().gone.extend(earlier);
        loop {
            let (gone, executing) = {
                let state = self.lock();
                let gone: Vec<String> = state.gone.iter().cloned().collect();
                let executing: Vec<String> = state.executing.keys().cloned().collect();
                (gone, executing)
            };
            let pause = if gone.is_empty() {
                None
            } else {
                match release(&pool, &gone, &executing).await {
                    Ok(held) => {
                        let mut state = self.lock();
                        state.gone.retain(|name| held.contains(name));
                        (!state.gone.is_empty()).then_some(RECHECK)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not hand back the claims of gone workers; retrying");
                        Some(retry)
                    }
                }
            };
            // Earlier incarnations' claims are back (or there were none): workers may start.
            self.0.swept_earlier.send_replace(true);
            let wake = self.0.wake.notified();
            tokio::select! {
                _ = wake => {}
                _ = async { tokio::time::sleep(pause.unwrap_or(Duration::MAX)).await }, if pause.is_some() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Workers named `{prefix}…` holding claims before this process started any: an earlier
/// incarnation's, since a process's pid is its own while it lives (the caller keeps the
/// names that are exactly this host's and pid's).
async fn earlier_workers(pool: &PgPool, prefix: &str) -> Result<Vec<String>, sqlx::Error> {
    let names: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT lock_by FROM apalis.jobs \
         WHERE (status = 'Queued' OR status = 'Running') AND starts_with(lock_by, $1)",
    )
    .bind(prefix)
    .fetch_all(pool)
    .await?;
    Ok(names.into_iter().map(|(n,)| n).collect())
}

/// Hands the claims of workers `gone` back to their queues, except jobs `executing` here, and
/// announces them to idle workers. Returns the workers that still hold claims.
async fn release(
    pool: &PgPool,
    gone: &[String],
    executing: &[String],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let released: Vec<(String, String, String)> = sqlx::query_as(
        "UPDATE apalis.jobs j SET status = 'Pending', lock_by = NULL, lock_at = NULL \
         FROM (SELECT id, lock_by FROM apalis.jobs \
               WHERE (status = 'Queued' OR status = 'Running') AND lock_by = ANY($1) \
                 AND NOT (id = ANY($2)) \
               FOR UPDATE SKIP LOCKED) AS gone \
         WHERE j.id = gone.id RETURNING j.id, j.job_type, gone.lock_by",
    )
    .bind(gone)
    .bind(executing)
    .fetch_all(&mut *tx)
    .await?;
    if !released.is_empty() {
        let ids: Vec<&str> = released.iter().map(|(id, _, _)| id.as_str()).collect();
        let queues: Vec<&str> = released.iter().map(|(_, q, _)| q.as_str()).collect();
        sqlx::query(concat!(
            "SELECT ",
            crate::engine::queue::notify_sql!("u.queue", "u.id"),
            " FROM UNNEST($1::text[], $2::text[]) AS u(id, queue)"
        ))
        .bind(&ids)
        .bind(&queues)
        .execute(&mut *tx)
        .await?;
    }
    let held: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT lock_by FROM apalis.jobs \
         WHERE (status = 'Queued' OR status = 'Running') AND lock_by = ANY($1)",
    )
    .bind(gone)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for (id, queue, worker) in &released {
        tracing::info!(job_id = %id, queue, worker, "handed back a job claimed by a gone worker");
    }
    Ok(held.into_iter().map(|(n,)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_say_which_host_and_process_a_worker_is_of() {
        let claims = Claims::new("web-1-".to_owned());
        let name = claims.worker_name(Step::Qualify);
        assert!(
            name.starts_with("web-1-") && name.ends_with("-qualify"),
            "{name}"
        );
        assert!(claims.is_ours(&name));
        assert_ne!(name, claims.worker_name(Step::Qualify));
        // Host `web-1`, pid 23: another process, though its name starts the same.
        assert!(!claims.is_ours("web-1-23-0a1b2c3d-qualify"));
        assert!(!claims.is_ours("web-1-0a1b2c3d-nothing"));
        assert!(!claims.is_ours("web-2-0a1b2c3d-route"));
        assert!(claims.is_ours("web-1-0a1b2c3d-callback"));
    }

    #[test]
    fn a_job_counts_as_executing_while_any_of_its_guards_lives() {
        let claims = Claims::new("host-1-".to_owned());
        let first = claims.executing("j1");
        let second = claims.executing("j1");
        let other = claims.executing("j2");
        drop(first);
        assert!(claims.lock().executing.contains_key("j1"));
        drop(second);
        assert!(!claims.lock().executing.contains_key("j1"));
        assert!(claims.lock().executing.contains_key("j2"));
        drop(other);
        assert!(claims.lock().executing.is_empty());
    }
}
