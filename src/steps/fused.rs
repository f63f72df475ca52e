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

use std::collections::HashMap;
use std::time::Instant;

use tracing::Instrument;
use uuid::Uuid;

use super::{Engine, RunContext, StepError, Writes};
use crate::lead::Step;
use crate::metrics::{Observation, Pending};
use crate::pause::PauseBoard;
use crate::queue::{self, StepJob};

/// Whether qualify's group may route its leads itself now.
pub(super) fn may_route(engine: &Engine, pauses: &PauseBoard) -> bool {
    !engine.faults.armed(Step::Route) && !pauses.is_paused(queue::queue_name(Step::Route))
}

/// Routes the runs whose route executions `jobs` the caller's transaction has just created
/// (with [`Writes::run_here`]), each from the run context its qualify execution loaded.
pub(super) async fn route(
    tx: &mut sqlx::PgConnection,
    engine: &Engine,
    jobs: &[(StepJob, String)],
    contexts: &HashMap<Uuid, RunContext>,
    pending: &Pending,
) -> Result<(), StepError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = jobs.iter().map(|(_, id)| id.clone()).collect();
    queue::mark_done(tx, &ids).await?;
    let mut writes = Writes::new(Step::Route);
    for (job, job_id) in jobs {
        let ctx = contexts
            .get(&job.run_id)
            .ok_or(StepError::RunMissing(job.run_id))?;
        let started = Instant::now();
        let span = super::span(Step::Route, *job, job_id, 1);
        span.record("lead_id", tracing::field::display(ctx.lead_id));
        async {
            super::decide(tx, engine, Step::Route, *job, 1, ctx, &mut writes).await?;
            tracing::debug!(outcome = "ok", in_qualify = true, "step done");
            Ok::<(), StepError>(())
        }
        .instrument(span)
        .await?;
        pending.push(Observation::StepRan {
            step: Step::Route,
            elapsed: started.elapsed(),
        });
    }
    for ended in writes.flush(tx).await?.ended {
        pending.push(ended);
    }
    Ok(())
}
