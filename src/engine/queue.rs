//! The job queues on `apalis.jobs`: one named queue per worker step, and transactional
//! enqueue. apalis 1.0 names a queue after a Rust type path by default (see DESIGN.md), so
//! every queue is named here explicitly. How idle workers learn of new jobs is
//! [`crate::engine::wakeup`].

use apalis::prelude::{TaskBuilder, TaskId};
use apalis_postgres::PgTask;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use ulid::Ulid;
use uuid::Uuid;

use crate::graph::Step;

/// The apalis queue (its `job_type`) that runs a step, as the graph names it. `validate` runs
/// inline at intake.
pub fn queue_name(step: Step) -> &'static str {
    step.queue()
}

/// The steps that run on workers, each on its own queue.
pub use crate::graph::WORKER_STEPS;

/// A step job's arguments: which run, and which execution of the step in that run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepJob {
    pub run_id: Uuid,
    /// Counts this step's executions within the run (1 for the first). Part of the job's
    /// idempotency key, so a second callback attempt never collides with the first.
    pub n: i32,
}

impl StepJob {
    /// `run:{run_id}:{step}:{n}`: apalis keeps keys in a unique index forever, so the key
    /// must name the run and the execution, not just the lead and the step.
    pub fn idempotency_key(&self, step: Step) -> String {
        format!("run:{}:{}:{}", self.run_id, step, self.n)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("encoding the {step} job of run {run_id}: {source}")]
    Encode {
        step: Step,
        run_id: Uuid,
        source: serde_json::Error,
    },
    #[error("pushing the {step} job of run {run_id}: {source}")]
    Push {
        step: Step,
        run_id: Uuid,
        source: apalis_postgres::Error,
    },
}

/// A new job's id, for a caller that records it before pushing the job
/// ([`push_step_keyed`]).
pub fn new_job_id() -> Ulid {
    Ulid::generate()
}

/// Enqueues one job of `step`'s queue on the caller's connection, so that it commits or rolls
/// back with the caller's own writes; with the caller's job id and idempotency key (a step
/// that waits pushes a follow-up job for the same execution, keyed `…:wait:{k}`).
pub async fn push_step_keyed(
    conn: &mut PgConnection,
    step: Step,
    job: StepJob,
    id: Ulid,
    key: &str,
    run_at: Option<jiff::Timestamp>,
    max_attempts: u32,
) -> Result<(), QueueError> {
    let task = task(step, job, id, key, run_at, max_attempts)?;
    push(conn, step, job.run_id, vec![task]).await
}

/// A step job to insert: due at `run_at` (now if `None`), with its retry budget ([`JobRow`]).
#[derive(Debug, Clone, Copy)]
pub struct NewJob {
    pub job: StepJob,
    pub run_at: Option<jiff::Timestamp>,
    pub max_attempts: u32,
}

fn task(
    step: Step,
    job: StepJob,
    id: Ulid,
    key: &str,
    run_at: Option<jiff::Timestamp>,
    max_attempts: u32,
) -> Result<PgTask, QueueError> {
    let mut builder = TaskBuilder::new(encode(step, job)?)
        .task_id(TaskId::from_ulid(id))
        .idempotency_key(key)
        .max_attempts(max_attempts.max(1) as usize);
    if let Some(at) = run_at {
        builder = builder.run_at_timestamp(due_second(at).max(0) as u64);
    }
    Ok(builder.build())
}

/// The whole second a job due at `at` is stored for: apalis counts time in whole seconds,
/// and rounding up means a job never runs before its time.
fn due_second(at: jiff::Timestamp) -> i64 {
    at.as_second() + i64::from(at.subsec_nanosecond() > 0)
}

/// A step job's arguments as apalis stores them (JSON bytes).
fn encode(step: Step, job: StepJob) -> Result<Vec<u8>, QueueError> {
    serde_json::to_vec(&job).map_err(|source| QueueError::Encode {
        step,
        run_id: job.run_id,
        source,
    })
}

/// `run_id` names the (first) run in an error.
async fn push(
    conn: &mut PgConnection,
    step: Step,
    run_id: Uuid,
    tasks: Vec<PgTask>,
) -> Result<(), QueueError> {
    apalis_postgres::queries::push_tasks(&mut *conn, queue_name(step), tasks)
        .await
        .map_err(|source| QueueError::Push {
            step,
            run_id,
            source,
        })
}

/// The notification apalis's insert trigger sends for a new due job of queue `$queue`, as
/// an SQL expression.
macro_rules! notify_sql {
    ($queue:literal, $id:literal) => {
        concat!(
            "pg_notify('apalis::job::insert', json_build_object('job_type', ",
            $queue,
            ", 'id', ",
            $id,
            ", 'run_at', now())::text)"
        )
    };
}
pub(crate) use notify_sql;

/// Tells idle workers of `step`'s queue that job `id` is due now, the way apalis's insert
/// trigger does for new jobs; used when an existing job is brought forward.
pub async fn announce(conn: &mut PgConnection, step: Step, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(concat!("SELECT ", notify_sql!("$1::text", "$2::text")))
        .bind(queue_name(step))
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// How a job starts when the transaction that creates it runs it too, or hands it to this
/// process: it is inserted in that state, never queued (apalis's insert trigger announces
/// only queued jobs; see the migration `notify_pending_only`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Done by its first attempt, as apalis acknowledges a handler's success: for executions
    /// run in the transaction that created them.
    Done,
    /// Claimed for this worker, as its fetch would: their creator runs them in this process
    /// after its commit. If the process dies first, apalis rescues them with the worker's
    /// other jobs once its heartbeat stops.
    ClaimedBy(String),
}

/// A step job to insert, with its id: queued for its `run_at` (`started` is `None`), or
/// already [`Started`].
pub struct JobRow<'a> {
    pub step: Step,
    pub job: NewJob,
    pub id: &'a str,
    pub started: Option<&'a Started>,
}

/// New `apalis.jobs` rows as the arrays of [`insert_jobs_sql!`]'s parameters `$1`–`$9`, so
/// that a caller inserts them in the same statement as its own rows.
pub struct JobColumns<'a> {
    ids: Vec<&'a str>,
    types: Vec<&'static str>,
    args: Vec<Vec<u8>>,
    statuses: Vec<&'static str>,
    attempts: Vec<i32>,
    maxes: Vec<i32>,
    keys: Vec<String>,
    workers: Vec<Option<&'a str>>,
    run_ats: Vec<Option<jiff_sqlx::Timestamp>>,
}

impl<'a> JobColumns<'a> {
    /// The columns apalis's own insert fills, plus what its fetch or acknowledgement would
    /// set for a started job.
    pub fn new(rows: &[JobRow<'a>]) -> Result<JobColumns<'a>, QueueError> {
        let n = rows.len();
        let mut cols = JobColumns {
            ids: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            args: Vec::with_capacity(n),
            statuses: Vec::with_capacity(n),
            attempts: Vec::with_capacity(n),
            maxes: Vec::with_capacity(n),
            keys: Vec::with_capacity(n),
            workers: Vec::with_capacity(n),
            run_ats: Vec::with_capacity(n),
        };
        for row in rows {
            let (step, new) = (row.step, row.job);
            cols.ids.push(row.id);
            cols.types.push(queue_name(step));
            cols.args.push(encode(step, new.job)?);
            cols.keys.push(new.job.idempotency_key(step));
            cols.maxes
                .push(i32::try_from(new.max_attempts.max(1)).unwrap_or(i32::MAX));
            let (status, attempt, worker) = match row.started {
                None => ("Pending", 0, None),
                Some(Started::Done) => ("Done", 1, None),
                Some(Started::ClaimedBy(worker)) => ("Queued", 0, Some(worker.as_str())),
            };
            cols.statuses.push(status);
            cols.attempts.push(attempt);
            cols.workers.push(worker);
            // Started jobs are due now.
            let run_at = match (row.started, new.run_at) {
                (None, Some(at)) => jiff::Timestamp::from_second(due_second(at)).ok(),
                _ => None,
            };
            cols.run_ats.push(run_at.map(jiff_sqlx::Timestamp::from));
        }
        Ok(cols)
    }

    /// Binds the columns as `$1`–`$9`.
    pub fn bind<'q>(self, query: crate::db::Query<'q>) -> crate::db::Query<'q> {
        query
            .bind(self.ids)
            .bind(self.types)
            .bind(self.args)
            .bind(self.statuses)
            .bind(self.attempts)
            .bind(self.maxes)
            .bind(self.keys)
            .bind(self.workers)
            .bind(self.run_ats)
    }
}

/// The `INSERT` of [`JobColumns`] (`$1`–`$9`), to be a caller's statement or a part of it.
/// apalis's insert trigger announces the queued ones, unless the transaction announces them
/// itself after its commit ([`crate::engine::announce`]).
macro_rules! insert_jobs_sql {
    () => {
        "INSERT INTO apalis.jobs (id, job_type, job, status, attempts, max_attempts, run_at, \
         priority, metadata, idempotency_key, lock_by, lock_at, done_at, last_result) \
         SELECT u.id, u.job_type, u.job, u.status, u.attempts, u.max_attempts, \
         COALESCE(u.run_at, now()), 0, ''::hstore, u.key, u.worker, \
         CASE WHEN u.worker IS NULL THEN NULL ELSE now() END, \
         CASE WHEN u.status = 'Done' THEN now() END, \
         CASE WHEN u.status = 'Done' THEN '{\"Ok\": null}'::jsonb END \
         FROM UNNEST($1::text[], $2::text[], $3::bytea[], $4::text[], $5::int[], $6::int[], \
                     $7::text[], $8::text[], $9::timestamptz[]) \
              AS u(id, job_type, job, status, attempts, max_attempts, key, worker, run_at)"
    };
}
pub(crate) use insert_jobs_sql;

/// A job [`Started::ClaimedBy`] `worker`, executed: `error` is `None` if it succeeded.
pub struct ClaimedDone {
    pub id: String,
    pub worker: String,
    pub error: Option<String>,
}

impl ClaimedDone {
    /// Job `id`'s successful execution, when it was claimed for a worker (`claimed_by`).
    pub fn succeeded(id: &str, claimed_by: Option<&str>) -> Option<ClaimedDone> {
        Some(ClaimedDone {
            id: id.to_owned(),
            worker: claimed_by?.to_owned(),
            error: None,
        })
    }
}

/// Acknowledges jobs [`Started::ClaimedBy`] a worker after their execution, in one statement, as
/// apalis acknowledges fetched ones: done, or failed (their retry time is already in
/// `run_at`). A job handed back or rescued meanwhile is left as it is.
pub async fn finish_claimed<'c>(
    conn: impl sqlx::PgExecutor<'c>,
    done: &[ClaimedDone],
) -> Result<(), sqlx::Error> {
    if done.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = done.iter().map(|d| d.id.as_str()).collect();
    let workers: Vec<&str> = done.iter().map(|d| d.worker.as_str()).collect();
    let errors: Vec<Option<&str>> = done.iter().map(|d| d.error.as_deref()).collect();
    sqlx::query(
        "UPDATE apalis.jobs j SET status = CASE WHEN u.error IS NULL THEN 'Done' ELSE 'Failed' END, \
         attempts = 1, done_at = now(), \
         last_result = CASE WHEN u.error IS NULL THEN '{\"Ok\": null}'::jsonb \
                            ELSE jsonb_build_object('Err', u.error) END \
         FROM UNNEST($1::text[], $2::text[], $3::text[]) AS u(id, worker, error) \
         WHERE j.id = u.id AND j.lock_by = u.worker AND j.status IN ('Queued', 'Running')",
    )
    .bind(&ids)
    .bind(&workers)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}

/// Hands job `id`, claimed for `worker`, back to the queue unrun.
pub async fn release(pool: &sqlx::PgPool, id: &str, worker: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', lock_by = NULL, lock_at = NULL \
         WHERE id = $1 AND lock_by = $2 AND status IN ('Queued', 'Running')",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(())
}

/// Ends job `id` unrun when what it waited for was done elsewhere (in the same transaction);
/// a worker that has already claimed it finds its step settled and does nothing.
pub async fn retire(conn: &mut PgConnection, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() \
         WHERE id = $1 AND status IN ('Pending', 'Failed')",
    )
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_stored_for_its_second_or_the_next_one() {
        let at = |s: &str| s.parse::<jiff::Timestamp>().expect("timestamp");
        assert_eq!(due_second(at("2026-12-07T10:00:00Z")), 1_796_637_600);
        assert_eq!(due_second(at("2026-12-07T10:00:00.001Z")), 1_796_637_601);
        assert_eq!(due_second(at("2026-12-07T09:59:59.999Z")), 1_796_637_600);
    }
}
