//! Group commit for the providers' answers: callback executions whose calls were answered at
//! the same time record them in one transaction (see `steps/group.rs` for the executions'
//! own group commit).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::Instrument;
use uuid::Uuid;

use super::{Answer, Attempts};
use crate::engine::batch::{spawn_runners, split_repeats};
use crate::engine::queue::{ClaimedDone, StepJob};
use crate::engine::{Engine, RunContext, StepError};
use crate::graph::Step;
use crate::metrics::Pending;

/// Group commit for the providers' answers: callback executions whose calls were answered at
/// the same time record them in one transaction, with the locks taken as the status path
/// takes them (step and run, in run order, before any attempt).
#[derive(Clone)]
pub(crate) struct Recorder {
    sender: mpsc::Sender<Answered>,
}

struct Answered {
    job: StepJob,
    job_id: String,
    attempt: u32,
    ctx: RunContext,
    answer: Answer,
    /// The worker this process claimed the job for, if it did: acknowledged with the answer.
    claimed_by: Option<String>,
    /// `true` once the group committed it; `false` to record it alone.
    done: oneshot::Sender<bool>,
}

impl Recorder {
    /// Starts the runners that record answers in groups of up to `max`, on `tasks`.
    pub(crate) fn start(engine: Arc<Engine>, max: usize, tasks: &mut JoinSet<()>) -> Recorder {
        Recorder {
            sender: spawn_runners(tasks, max, move |items| {
                record_answers(engine.clone(), items)
            }),
        }
    }

    /// Records `answer` for execution `job` in the next group (and acknowledges its job, when
    /// claimed for worker `claimed_by` in this process). `false` if the group could not: the
    /// caller then records it alone.
    pub(crate) async fn record(
        &self,
        job: StepJob,
        job_id: &str,
        attempt: u32,
        ctx: RunContext,
        answer: &Answer,
        claimed_by: Option<&str>,
    ) -> bool {
        let (done, committed) = oneshot::channel();
        let item = Answered {
            job,
            job_id: job_id.to_owned(),
            attempt,
            ctx,
            answer: answer.clone(),
            claimed_by: claimed_by.map(str::to_owned),
            done,
        };
        self.sender.send(item).await.is_ok() && committed.await == Ok(true)
    }
}

/// Records one batch of answers as a group and tells each whether it was committed.
async fn record_answers(engine: Arc<Engine>, items: Vec<Answered>) {
    let (items, alone) = split_repeats(items, |i| (i.job.run_id, i.job.n));
    for item in alone {
        let _ = item.done.send(false);
    }
    let span = tracing::debug_span!("answer_group", size = items.len());
    let pending = Pending::default();
    let committed = match record_group(&engine, &items, &pending)
        .instrument(span)
        .await
    {
        Ok(()) => {
            pending.committed();
            true
        }
        Err(err) => {
            pending.discard();
            tracing::warn!(size = items.len(), error = %err,
                "answer group failed; its answers are recorded one by one");
            false
        }
    };
    for item in items {
        let _ = item.done.send(committed);
    }
}

async fn record_group(
    engine: &Engine,
    items: &[Answered],
    pending: &Pending,
) -> Result<(), StepError> {
    let mut tx = engine.pool.begin().await?;
    let keys: Vec<(Uuid, i32)> = items.iter().map(|i| (i.job.run_id, i.job.n)).collect();
    let mut locked: HashMap<(Uuid, i32), _> =
        RunContext::lock_steps(&mut tx, Step::Callback.as_str(), &keys)
            .await?
            .into_iter()
            .collect();
    let jobs: Vec<_> = items.iter().map(|i| i.job).collect();
    let attempts = Attempts::load(&mut tx, &jobs).await?;
    for item in items {
        let row = locked.remove(&(item.job.run_id, item.job.n));
        let span = crate::engine::span(Step::Callback, item.job, &item.job_id, item.attempt);
        span.record("lead_id", tracing::field::display(item.ctx.lead_id));
        super::record_answer(
            &mut tx,
            engine,
            item.job,
            item.attempt,
            item.ctx.clone(),
            row.as_ref(),
            &item.answer,
            pending,
            &attempts,
        )
        .instrument(span)
        .await?;
    }
    let acks: Vec<ClaimedDone> = items
        .iter()
        .filter_map(|i| ClaimedDone::succeeded(&i.job_id, i.claimed_by.as_deref()))
        .collect();
    crate::engine::queue::finish_claimed(&mut *tx, &acks).await?;
    tx.commit().await?;
    Ok(())
}
