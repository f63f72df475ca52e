//! What the first part of a group's callback executions reads, read once for all of them
//! (see `steps/group.rs`): the attempt each execution owns (locked), what of each lead is on
//! the block list, and each lead's calls of the last 24 hours. The statements are those an
//! execution alone makes, each over the whole group. No execution's writes change what
//! another read: an attempt belongs to one execution, and a call counts toward the daily cap
//! once placed, which happens after the group's commit.

use std::collections::HashMap;

use jiff::Timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use super::attempt::{self, AttemptRow};
use crate::queue::StepJob;
use crate::steps::{Engine, RunContext};

pub(crate) struct Lookups {
    current: HashMap<(Uuid, i32), AttemptRow>,
    /// `None` when not read for the group ([`Lookups::attempts`]): read per execution.
    blocked: Option<HashMap<Uuid, &'static str>>,
    recent: Option<HashMap<Uuid, Vec<Timestamp>>>,
}

impl Lookups {
    /// Reads, in three statements, what `executions` (each with its run's context) need.
    pub(crate) async fn load(
        tx: &mut PgConnection,
        engine: &Engine,
        executions: &[(StepJob, &RunContext)],
    ) -> Result<Lookups, sqlx::Error> {
        let jobs: Vec<StepJob> = executions.iter().map(|(job, _)| *job).collect();
        let ctxs: Vec<&RunContext> = executions.iter().map(|(_, ctx)| *ctx).collect();
        let leads: Vec<Uuid> = ctxs.iter().map(|ctx| ctx.lead_id).collect();
        Ok(Lookups {
            current: attempt::current_many(tx, &jobs).await?,
            blocked: Some(super::blocked_many(tx, &ctxs).await?),
            recent: Some(attempt::recent_calls_many(tx, &leads, engine.clock.now()).await?),
        })
    }

    /// Only the attempts `jobs` own (locked), in one statement: what a group recording the
    /// provider's answers reads first. The block list and recent calls, which only a rare
    /// next attempt planned there needs, are then read by that execution itself.
    pub(crate) async fn attempts(
        tx: &mut PgConnection,
        jobs: &[StepJob],
    ) -> Result<Lookups, sqlx::Error> {
        Ok(Lookups {
            current: attempt::current_many(tx, jobs).await?,
            blocked: None,
            recent: None,
        })
    }

    /// The attempt execution `job` owns, as [`attempt::current`] reads it.
    pub(super) fn current(&self, job: StepJob) -> Option<AttemptRow> {
        self.current.get(&(job.run_id, job.n)).cloned()
    }

    /// What of run `run_id`'s lead is on the block list, if anything; `None` when the group
    /// did not read it.
    pub(super) fn blocked(&self, run_id: Uuid) -> Option<Option<&'static str>> {
        Some(self.blocked.as_ref()?.get(&run_id).copied())
    }

    /// The lead's calls placed in the 24 hours before the group's start; `None` when the
    /// group did not read them.
    pub(super) fn recent_calls(&self, lead_id: Uuid) -> Option<Vec<Timestamp>> {
        Some(
            self.recent
                .as_ref()?
                .get(&lead_id)
                .cloned()
                .unwrap_or_default(),
        )
    }
}
