//! What step executions decided, written with one statement per kind of write however many
//! executions share the transaction: a group of leads' steps then costs PostgreSQL about what
//! one does (see [`super::group`]). A single execution goes through the same path.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{RunContext, StepError, Transition};
use crate::engine::queue::{self, NewJob, StepJob};
use crate::graph::Step;
use crate::lead::{RunStatus, StepStatus};
use crate::metrics::Observation;
use crate::timeline;

/// The writes of the transitions added so far: of executions of one step, and of the next
/// executions run in the same transaction ([`Writes::add_done`]).
pub(crate) struct Writes {
    step: Step,
    settled: Vec<Settle>,
    next: Vec<Next>,
    runs: Vec<RunMove>,
    events: Vec<timeline::Entry>,
    /// Timeline entries that follow the transitions' own (see [`Writes::add_event_after`]).
    later: Vec<timeline::Entry>,
    /// Teams chosen for runs whose transition is not added yet.
    teams: HashMap<Uuid, String>,
    /// Leads found repeated by runs whose transition is not added yet.
    duplicates: HashMap<Uuid, Uuid>,
    /// The step whose next executions run here, and how their jobs start (see
    /// [`Writes::run_here`]).
    here: Option<(Step, queue::Started)>,
}

/// A new execution of `step`: its step row and job.
struct Next {
    step: Step,
    job: NewJob,
    /// Its job's id, chosen up front: an execution run in this transaction logs it.
    id: ulid::Ulid,
    /// Run in this transaction already, with this output: its row and job are written settled.
    done: Option<Value>,
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
    /// The lead this run's lead repeats, recorded whatever the run's status.
    pub duplicate_of: Option<Uuid>,
}

impl Writes {
    pub fn new(step: Step) -> Self {
        Writes {
            step,
            settled: Vec::new(),
            next: Vec::new(),
            runs: Vec::new(),
            events: Vec::new(),
            later: Vec::new(),
            teams: HashMap::new(),
            duplicates: HashMap::new(),
            here: None,
        }
    }

    /// The next executions of `step` that are due now will run in this process after the
    /// commit, their jobs inserted `started` (claimed): no worker is woken for them, and the
    /// flush hands them back.
    pub fn run_here(&mut self, step: Step, started: queue::Started) {
        self.here = Some((step, started));
    }

    /// Records on run `run_id`, with the transition added next for it, what its decision
    /// found: the team chosen, the lead repeated.
    pub fn note(&mut self, run_id: Uuid, team: Option<String>, duplicate_of: Option<Uuid>) {
        if let Some(team) = team {
            self.teams.insert(run_id, team);
        }
        if let Some(first) = duplicate_of {
            self.duplicates.insert(run_id, first);
        }
    }

    /// The team recorded for run `run_id` by the transitions added so far, if any.
    pub fn team(&self, run_id: Uuid) -> Option<&str> {
        self.runs
            .iter()
            .rev()
            .find(|m| m.run_id == run_id)
            .and_then(|m| m.team.as_deref())
    }

    /// Adds a timeline entry that follows the transitions' own (a decision records what it
    /// scheduled after the step that decided it).
    pub fn add_event_after(&mut self, entry: timeline::Entry) {
        self.later.push(entry);
    }

    /// The runs whose next execution of `step`, added so far, is due now and not run yet,
    /// with the execution's job id.
    pub fn due_now(&self, step: Step) -> Vec<(Uuid, String)> {
        self.next
            .iter()
            .filter(|n| n.step == step && n.job.run_at.is_none() && n.done.is_none())
            .map(|n| (n.job.job.run_id, n.id.to_string()))
            .collect()
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
        let output = self.follow(ctx, transition, max_attempts);
        self.settled.push(Settle {
            job,
            attempt,
            output: Some(output),
            error: None,
        });
    }

    /// Adds the transition of run `ctx`'s next execution of `step` (one of [`Writes::due_now`]),
    /// decided in this transaction: its row and job are written settled, at their first
    /// attempt, with no trip through the queue.
    pub fn add_done(
        &mut self,
        step: Step,
        ctx: &RunContext,
        transition: Transition,
        max_attempts: u32,
    ) {
        let output = self.follow(ctx, transition, max_attempts);
        let run_id = ctx.run_id;
        if let Some(next) = self
            .next
            .iter_mut()
            .find(|n| n.step == step && n.job.job.run_id == run_id && n.done.is_none())
        {
            next.done = Some(output);
        }
    }

    /// What a transition of run `ctx` writes besides its step row; returns the step's output.
    fn follow(&mut self, ctx: &RunContext, transition: Transition, max_attempts: u32) -> Value {
        let run_id = ctx.run_id;
        let (output, event, status, reason) = match transition {
            Transition::Next {
                step,
                output,
                event,
                run_at,
            } => {
                // `n` is filled in at flush time, from the step rows.
                let job = StepJob { run_id, n: 0 };
                self.next.push(Next {
                    step,
                    job: NewJob {
                        job,
                        run_at,
                        max_attempts,
                    },
                    id: queue::new_job_id(),
                    done: None,
                });
                (output, event, None, None)
            }
            Transition::Finish {
                status,
                reason,
                output,
                event,
            } => (output, event, Some(status), reason),
        };
        self.runs.push(RunMove {
            run_id,
            status,
            reason,
            team: self.teams.remove(&run_id),
            duplicate_of: self.duplicates.remove(&run_id),
        });
        self.events.push(timeline::Entry {
            lead_id: ctx.lead_id,
            run_id: Some(run_id),
            event: event.to_owned(),
            detail: output.clone(),
        });
        output
    }

    /// Writes everything added: one statement per kind of write.
    pub async fn flush(mut self, tx: &mut PgConnection) -> Result<Flushed, StepError> {
        settle_steps(tx, self.step, StepStatus::Ok, &self.settled).await?;
        number_executions(tx, &mut self.next).await?;
        let mut rows = Vec::with_capacity(self.next.len());
        let mut here = Vec::new();
        for next in &self.next {
            let started = match (&next.done, &self.here) {
                (None, Some((step, how))) if *step == next.step && next.job.run_at.is_none() => {
                    here.push((next.job.job, next.id.to_string()));
                    Some(how)
                }
                _ => None,
            };
            rows.push(NewRow {
                step: next.step,
                job: next.job,
                job_id: next.id.to_string(),
                output: next.done.clone(),
                started,
            });
        }
        insert_steps(tx, &rows).await?;
        let ended = move_runs(tx, &merge_moves(std::mem::take(&mut self.runs))).await?;
        let mut events = std::mem::take(&mut self.events);
        events.append(&mut self.later);
        timeline::record_many(tx, timeline::SYSTEM, events).await?;
        Ok(Flushed { ended, here })
    }
}

/// One move per run, in first-seen order: a later move's status, reason and team win.
fn merge_moves(moves: Vec<RunMove>) -> Vec<RunMove> {
    let mut merged: Vec<RunMove> = Vec::with_capacity(moves.len());
    for m in moves {
        match merged.iter_mut().find(|x| x.run_id == m.run_id) {
            Some(x) => {
                if m.status.is_some() {
                    x.status = m.status;
                    x.reason = m.reason;
                }
                if m.team.is_some() {
                    x.team = m.team;
                }
                if m.duplicate_of.is_some() {
                    x.duplicate_of = m.duplicate_of;
                }
            }
            None => merged.push(m),
        }
    }
    merged
}

/// Sets each new execution's `n` to its run's next execution number of its step, in one
/// statement.
async fn number_executions(conn: &mut PgConnection, next: &mut [Next]) -> Result<(), sqlx::Error> {
    if next.is_empty() {
        return Ok(());
    }
    let runs: Vec<Uuid> = next.iter().map(|n| n.job.job.run_id).collect();
    let names: Vec<&str> = next.iter().map(|n| n.step.as_str()).collect();
    let rows: Vec<(i64, i32)> = sqlx::query_as(
        "SELECT u.i, COALESCE(MAX(s.n), 0) + 1 \
         FROM UNNEST($1::uuid[], $2::text[]) WITH ORDINALITY AS u(run_id, name, i) \
         LEFT JOIN steps s ON s.run_id = u.run_id AND s.name = u.name GROUP BY u.i",
    )
    .bind(&runs)
    .bind(&names)
    .fetch_all(conn)
    .await?;
    for (i, n) in rows {
        if let Some(next) = usize::try_from(i - 1).ok().and_then(|i| next.get_mut(i)) {
            next.job.job.n = n;
        }
    }
    Ok(())
}

/// A new step execution: its row, and its job, queued for `job.run_at` or already
/// `started`. With an `output` the row is settled `ok` at its first attempt and its job
/// inserted [`queue::Started::Done`], whatever `started` says.
pub(crate) struct NewRow<'a> {
    pub step: Step,
    pub job: NewJob,
    pub job_id: String,
    pub output: Option<Value>,
    pub started: Option<&'a queue::Started>,
}

/// Inserts step executions, of any steps, rows and jobs together in one statement.
pub(crate) async fn insert_steps(
    conn: &mut PgConnection,
    rows: &[NewRow<'_>],
) -> Result<(), StepError> {
    if rows.is_empty() {
        return Ok(());
    }
    let query = sqlx::query(concat!(
        "WITH jobs AS (",
        queue::insert_jobs_sql!(),
        ") ",
        insert_step_rows_sql!()
    ));
    Executions::new(rows)?.bind(query).execute(conn).await?;
    Ok(())
}

/// The `INSERT` of the step rows of [`Executions`] (`$1`–`$15`, the jobs' own included), to
/// follow the jobs' insert in one statement.
macro_rules! insert_step_rows_sql {
    () => {
        "INSERT INTO steps (run_id, name, n, job_id, status, attempts, max_attempts, \
                            next_run_at, started_at, finished_at, output) \
         SELECT u.run_id, u.name, u.n, u.job_id, CASE WHEN u.done THEN 'ok' ELSE 'pending' END, \
                CASE WHEN u.done THEN 1 ELSE 0 END, u.max_attempts, \
                CASE WHEN u.done THEN NULL ELSE COALESCE(u.run_at, now()) END, \
                CASE WHEN u.done THEN now() END, CASE WHEN u.done THEN now() END, u.output \
         FROM UNNEST($10::uuid[], $11::text[], $12::int[], $1::text[], $6::int[], \
                     $13::timestamptz[], $14::bool[], $15::jsonb[]) \
              AS u(run_id, name, n, job_id, max_attempts, run_at, done, output)"
    };
}
pub(crate) use insert_step_rows_sql;

/// New step executions as the parameters `$1`–`$15` of [`queue::insert_jobs_sql!`] followed
/// by [`insert_step_rows_sql!`].
pub(crate) struct Executions<'a> {
    jobs: queue::JobColumns<'a>,
    runs: Vec<Uuid>,
    names: Vec<&'static str>,
    ns: Vec<i32>,
    run_ats: Vec<Option<jiff_sqlx::Timestamp>>,
    done: Vec<bool>,
    outputs: Vec<Option<&'a Value>>,
}

impl<'a> Executions<'a> {
    pub fn new(rows: &'a [NewRow<'a>]) -> Result<Executions<'a>, queue::QueueError> {
        let jobs: Vec<queue::JobRow> = rows
            .iter()
            .map(|r| queue::JobRow {
                step: r.step,
                job: r.job,
                id: &r.job_id,
                started: match r.output {
                    Some(_) => Some(&queue::Started::Done),
                    None => r.started,
                },
            })
            .collect();
        Ok(Executions {
            jobs: queue::JobColumns::new(&jobs)?,
            runs: rows.iter().map(|r| r.job.job.run_id).collect(),
            names: rows.iter().map(|r| r.step.as_str()).collect(),
            ns: rows.iter().map(|r| r.job.job.n).collect(),
            run_ats: rows
                .iter()
                .map(|r| r.job.run_at.map(jiff_sqlx::Timestamp::from))
                .collect(),
            done: rows.iter().map(|r| r.output.is_some()).collect(),
            outputs: rows.iter().map(|r| r.output.as_ref()).collect(),
        })
    }

    /// Binds `$1`–`$15`.
    pub fn bind<'q>(self, query: crate::db::Query<'q>) -> crate::db::Query<'q> {
        self.jobs
            .bind(query)
            .bind(self.runs)
            .bind(self.names)
            .bind(self.ns)
            .bind(self.run_ats)
            .bind(self.done)
            .bind(self.outputs)
    }
}

/// Settles executions of `step` as `status` (ok, failed, cancelled), in one statement.
pub(crate) async fn settle_steps(
    conn: &mut PgConnection,
    step: Step,
    status: StepStatus,
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
    .bind(status.as_str())
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
    let duplicates: Vec<Option<Uuid>> = moves.iter().map(|m| m.duplicate_of).collect();
    // The CTE reads the status this update replaces (RETURNING sees only the new one); its
    // row lock makes that read the latest committed status.
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "WITH u AS (SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], \
                                         $5::uuid[]) AS u(id, status, reason, team, duplicate_of)), \
         old AS (SELECT r.id, r.status FROM runs r JOIN u ON u.id = r.id ORDER BY r.id FOR NO KEY UPDATE OF r) \
         UPDATE runs r SET \
         status = CASE WHEN u.status IS NOT NULL AND old.status = ANY($6) \
                       THEN u.status ELSE old.status END, \
         reason = CASE WHEN u.status IS NOT NULL AND old.status = ANY($6) \
                       THEN COALESCE(u.reason, r.reason) ELSE r.reason END, \
         team = COALESCE(u.team, r.team), duplicate_of = COALESCE(u.duplicate_of, r.duplicate_of), \
         updated_at = now() FROM old JOIN u ON u.id = old.id WHERE r.id = old.id \
         RETURNING old.status, r.status, r.workflow",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&reasons)
    .bind(&teams)
    .bind(&duplicates)
    .bind(RunStatus::active_names())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(before, after, workflow)| {
            let before = before.parse::<RunStatus>().ok()?;
            let after = after.parse::<RunStatus>().ok()?;
            run_ended(before, after, workflow)
        })
        .collect())
}

/// Whether a run moving from `before` to `after` has just ended, to be counted
/// (`leadflow_runs_finished_total`) once its transaction commits: the one rule for counting a
/// run's end, so that a run is counted once, when it leaves the active statuses (a failed run
/// an operator then cancels is not counted again).
pub(crate) fn run_ended(
    before: RunStatus,
    after: RunStatus,
    workflow: String,
) -> Option<Observation> {
    (!before.is_terminal() && after.is_terminal()).then_some(Observation::RunFinished {
        workflow,
        status: after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_counted_when_it_leaves_the_active_statuses_and_never_again() {
        let ended = |a: RunStatus, b: RunStatus| run_ended(a, b, "default".to_owned()).is_some();
        assert!(ended(RunStatus::Running, RunStatus::Cancelled));
        assert!(ended(RunStatus::Calling, RunStatus::Called));
        assert!(!ended(RunStatus::Running, RunStatus::Scheduled));
        assert!(!ended(RunStatus::Failed, RunStatus::Cancelled));
        assert!(!ended(RunStatus::Called, RunStatus::Called));
    }
}
