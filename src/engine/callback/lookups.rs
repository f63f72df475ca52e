//! What the first part of a group's callback executions reads, read once for all of them
//! (see `steps/group.rs`): the attempt each execution owns (locked), what of each lead is on
//! the block list, and each lead's calls of the last 24 hours. The statements are those an
//! execution alone makes, each over the whole group. No execution's writes change what
//! another read: an attempt belongs to one execution, and a call counts toward the daily cap
//! once placed, which happens after the group's commit. A group recording the providers'
//! answers reads only the attempts ([`Attempts`]); qualify's group, which routes its leads
//! and prepares the first calls of those due at once, reads only the block list and the
//! recent calls ([`Lookups::for_new`]): the executions it creates own no attempt yet.

use std::collections::HashMap;

use jiff::Timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use super::attempt;
use super::state::AttemptRow;
use crate::engine::queue::StepJob;
use crate::engine::{Engine, RunContext};

pub(crate) struct Lookups {
    attempts: Attempts,
    blocked: HashMap<Uuid, &'static str>,
    recent: HashMap<Uuid, Vec<Timestamp>>,
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
            attempts: Attempts::load(tx, &jobs).await?,
            blocked: super::blocked_many(tx, &ctxs).await?,
            recent: attempt::recent_calls_many(tx, &leads, engine.clock.now()).await?,
        })
    }

    /// What routing and the first call of new runs (`ctxs`) need, in two statements: their
    /// callback executions are created in the caller's transaction, so they own no attempt.
    pub(crate) async fn for_new(
        tx: &mut PgConnection,
        engine: &Engine,
        ctxs: &[&RunContext],
    ) -> Result<Lookups, sqlx::Error> {
        let leads: Vec<Uuid> = ctxs.iter().map(|ctx| ctx.lead_id).collect();
        Ok(Lookups {
            attempts: Attempts(HashMap::new()),
            blocked: super::blocked_many(tx, ctxs).await?,
            recent: attempt::recent_calls_many(tx, &leads, engine.clock.now()).await?,
        })
    }

    /// The attempt execution `job` owns, as [`attempt::current`] reads it.
    pub(super) fn current(&self, job: StepJob) -> Option<AttemptRow> {
        self.attempts.get(job)
    }

    /// What of run `run_id`'s lead is on the block list, if anything.
    pub(super) fn blocked(&self, run_id: Uuid) -> Option<&'static str> {
        self.blocked.get(&run_id).copied()
    }

    /// The lead's calls placed in the 24 hours before the group's start.
    pub(crate) fn recent_calls(&self, lead_id: Uuid) -> Vec<Timestamp> {
        self.recent.get(&lead_id).cloned().unwrap_or_default()
    }
}

/// The attempts a group's executions own, read (and locked, in run order) in one statement:
/// all a group recording the providers' answers reads for them up front.
pub(crate) struct Attempts(HashMap<(Uuid, i32), AttemptRow>);

impl Attempts {
    pub(crate) async fn load(
        tx: &mut PgConnection,
        jobs: &[StepJob],
    ) -> Result<Attempts, sqlx::Error> {
        Ok(Attempts(attempt::current_many(tx, jobs).await?))
    }

    /// The attempt execution `job` owns, as [`attempt::current`] reads it.
    pub(super) fn get(&self, job: StepJob) -> Option<AttemptRow> {
        self.0.get(&(job.run_id, job.n)).cloned()
    }
}
