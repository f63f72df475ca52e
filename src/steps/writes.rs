//! What step executions decided, written with one statement per kind of write however many
//! executions share the transaction: a group of leads' steps then costs PostgreSQL about what
//! one does (see [`super::group`]). A single execution goes through the same path.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{RunContext, StepError, Transition};
use crate::lead::{RunStatus, Step};
use crate::metrics::Observation;
use crate::queue::{self, NewJob, StepJob};
use crate::timeline;

/// The writes of the transitions added so far, all of executions of one step.
pub(crate) struct Writes {
    step: Step,
    settled: Vec<Settle>,
    next: Vec<(Step, NewJob)>,
    runs: Vec<RunMove>,
    events: Vec<timeline::Entry>,
    /// Teams chosen for runs whose transition is not added yet.
    teams: HashMap<Uuid, String>,
    /// The step whose next executions run here, and how their jobs start (see
    /// [`Writes::run_here`]).
    here: Option<(Step, queue::Started)>,
}

/// What [`Writes::flush`] wrote that the caller acts on.
pub(crate) struct Flushed {
    /// The runs this ended, to be counted once the transaction commits.
    pub ended: Vec<Observation>,
    /// The new executions of the [`Writes::run_here`] step due now, with their job ids.
    pub here: Vec<(StepJob, String)>,
}

/// A step row to settle: which execution, its delivery count, what it produced.
pub(crate) struct Settle {
    pub job: StepJob,
    pub attempt: u32,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// A run to touch: bump `updated_at`, and move it to `status` (when given) unless it ended.
pub(crate) struct RunMove {
    pub run_id: Uuid,
    pub status: Option<RunStatus>,
    pub reason: Option<String>,
    /// The team routing chose, recorded whatever the run's status.
    pub team: Option<String>,
}

impl Writes {
    pub fn new(step: Step) -> Self {
        Writes {
            step,
            settled: Vec::new(),
            next: Vec::new(),
            runs: Vec::new(),
            events: Vec::new(),
            teams: HashMap::new(),
            here: None,
        }
    }

    /// The next executions of `step` that are due now will run in this process, right after
    /// the flush (in this transaction: their jobs start [`queue::Started::Done`]) or after its
    /// commit (claimed): their jobs are inserted `started` so, no worker is woken for them,
    /// and the flush hands them back.
    pub fn run_here(&mut self, step: Step, started: queue::Started) {
        self.here = Some((step, started));
    }

    /// Records on run `run_id` the team routing chose, with the transition added next for it.
    pub fn assign_team(&mut self, run_id: Uuid, team: &str) {
        self.teams.insert(run_id, team.to_owned());
    }

    /// The team recorded for run `run_id` by the transitions added so far, if any.
    pub fn team(&self, run_id: Uuid) -> Option<&str> {
        self.runs
            .iter()
            .rev()
            .find(|m| m.run_id == run_id)
            .and_then(|m| m.team.as_deref())
    }

    /// Adds execution `job`'s transition: its step is `ok`, and the run goes on to the next
    /// step (a new execution of it, with its job) or ends.
    pub fn add(
        &mut self,
        job: StepJob,
        attempt: u32,
        ctx: &RunContext,
        transition: Transition,
        max_attempts: u32,
    ) {
        let (output, event, run) = match transition {
            Transition::Next {
                step,
                output,
                event,
                run_at,
            } => {
                // `n` is filled in at flush time, from the step rows.
                let next = StepJob {
                    run_id: job.run_id,
                    n: 0,
                };
                self.next.push((
                    step,
                    NewJob {
                        job: next,
                        run_at,
                        max_attempts,
                    },
                ));
                let run = RunMove {
                    run_id: job.run_id,
                    status: None,
                    reason: None,
                    team: self.teams.remove(&job.run_id),
                };
                (output, event, run)
            }
            Transition::Finish {
                status,
                reason,
                output,
                event,
            } => {
                let run = RunMove {
                    run_id: job.run_id,
                    status: Some(status),
                    reason,
                    team: self.teams.remove(&job.run_id),
                };
                (output, event, run)
            }
        };
        self.events.push(timeline::Entry {
            lead_id: ctx.lead_id,
            run_id: Some(job.run_id),
            event: event.to_owned(),
            detail: output.clone(),
        });
        self.settled.push(Settle {
            job,
            attempt,
            output: Some(output),
            error: None,
        });
        self.runs.push(run);
    }

    /// Writes everything added.
    pub async fn flush(mut self, tx: &mut PgConnection) -> Result<Flushed, StepError> {
        settle_steps(tx, self.step, "ok", &self.settled).await?;
        let mut here = Vec::new();
        for step in queue::WORKER_STEPS {
            let mut jobs: Vec<NewJob> = self
                .next
                .iter()
                .filter(|(s, _)| *s == step)
                .map(|(_, job)| *job)
                .collect();
            if jobs.is_empty() {
                continue;
            }
            number_executions(tx, step, &mut jobs).await?;
            // Only executions due now run here; a later one waits in the queue as usual.
            let started = self
                .here
                .as_ref()
                .filter(|(s, _)| *s == step)
                .map(|(_, s)| s);
            let (now, queued): (Vec<NewJob>, Vec<NewJob>) = match started {
                Some(_) => jobs.into_iter().partition(|j| j.run_at.is_none()),
                None => (Vec::new(), jobs),
            };
            super::enqueue_all(tx, step, &queued, None).await?;
            let ids = super::enqueue_all(tx, step, &now, started).await?;
            here.extend(now.iter().map(|j| j.job).zip(ids));
        }
        let ended = move_runs(tx, &self.runs).await?;
        timeline::record_many(tx, timeline::SYSTEM, std::mem::take(&mut self.events)).await?;
        Ok(Flushed { ended, here })
    }
}

/// Sets each job's `n` to the run's next execution number of `step`.
async fn number_executions(
    conn: &mut PgConnection,
    step: Step,
    jobs: &mut [NewJob],
) -> Result<(), sqlx::Error> {
    let runs: Vec<Uuid> = jobs.iter().map(|j| j.job.run_id).collect();
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT u.run_id, COALESCE(MAX(s.n), 0) + 1 FROM UNNEST($1::uuid[]) AS u(run_id) \
         LEFT JOIN steps s ON s.run_id = u.run_id AND s.name = $2 GROUP BY u.run_id",
    )
    .bind(&runs)
    .bind(step.as_str())
    .fetch_all(conn)
    .await?;
    for job in jobs.iter_mut() {
        job.job.n = rows
            .iter()
            .find(|(run, _)| *run == job.job.run_id)
            .map_or(1, |(_, n)| *n);
    }
    Ok(())
}

/// Settles executions of `step` as `status` (`ok`, `failed`, `cancelled`), in one statement.
pub(crate) async fn settle_steps(
    conn: &mut PgConnection,
    step: Step,
    status: &str,
    rows: &[Settle],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let runs: Vec<Uuid> = rows.iter().map(|r| r.job.run_id).collect();
    let ns: Vec<i32> = rows.iter().map(|r| r.job.n).collect();
    let attempts: Vec<i32> = rows
        .iter()
        .map(|r| i32::try_from(r.attempt).unwrap_or(i32::MAX))
        .collect();
    let outputs: Vec<Option<&Value>> = rows.iter().map(|r| r.output.as_ref()).collect();
    let errors: Vec<Option<&str>> = rows.iter().map(|r| r.error.as_deref()).collect();
    sqlx::query(
        "UPDATE steps s SET status = $2, attempts = GREATEST(s.attempts, u.attempt), \
         started_at = COALESCE(s.started_at, now()), finished_at = now(), next_run_at = NULL, \
         output = COALESCE(u.output, s.output), error = COALESCE(u.error, s.error) \
         FROM UNNEST($3::uuid[], $4::int[], $5::int[], $6::jsonb[], $7::text[]) \
              AS u(run_id, n, attempt, output, error) \
         WHERE s.run_id = u.run_id AND s.name = $1 AND s.n = u.n",
    )
    .bind(step.as_str())
    .bind(status)
    .bind(&runs)
    .bind(&ns)
    .bind(&attempts)
    .bind(&outputs)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}

/// Touches runs in one statement (see [`RunMove`]). Returns the runs this ended.
pub(crate) async fn move_runs(
    conn: &mut PgConnection,
    moves: &[RunMove],
) -> Result<Vec<Observation>, sqlx::Error> {
    if moves.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = moves.iter().map(|m| m.run_id).collect();
    let statuses: Vec<Option<&str>> = moves.iter().map(|m| m.status.map(|s| s.as_str())).collect();
    let reasons: Vec<Option<&str>> = moves.iter().map(|m| m.reason.as_deref()).collect();
    let teams: Vec<Option<&str>> = moves.iter().map(|m| m.team.as_deref()).collect();
    // The CTE reads the status this update replaces (RETURNING sees only the new one); its
    // row lock makes that read the latest committed status.
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) \
                   AS u(id, status, reason, team)), \
         old AS (SELECT r.id, r.status FROM runs r JOIN u ON u.id = r.id ORDER BY r.id FOR NO KEY UPDATE OF r) \
         UPDATE runs r SET \
         status = CASE WHEN u.status IS NOT NULL AND old.status IN ('running', 'scheduled', 'calling') \
                       THEN u.status ELSE old.status END, \
         reason = CASE WHEN u.status IS NOT NULL AND old.status IN ('running', 'scheduled', 'calling') \
                       THEN COALESCE(u.reason, r.reason) ELSE r.reason END, \
         team = COALESCE(u.team, r.team), updated_at = now() FROM old JOIN u ON u.id = old.id WHERE r.id = old.id \
         RETURNING old.status, r.status, r.workflow",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&teams)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(before, after, workflow)| {
            let before = before.parse::<RunStatus>().ok()?;
            let after = after.parse::<RunStatus>().ok()?;
            (!before.is_terminal() && after.is_terminal()).then_some(Observation::RunFinished {
                workflow,
                status: after,
            })
        })
        .collect())
}
