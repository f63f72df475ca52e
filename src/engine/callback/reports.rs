//! The simulator's status reports, applied as Twilio's status webhooks are (through
//! [`outcome`]), but in groups: the reports waiting when a transaction starts share it, as the
//! callback step's executions share theirs (`steps/group.rs`). In bulk, a call's statuses were
//! the one transaction of its own that each lead still cost.
//!
//! A group takes every step's and run's lock first, in run order, as the callback step's
//! groups take them, then the attempts', records every call's progress in one statement per
//! kind of write, and settles each waiting step as alone. If anything fails, the group rolls
//! back and its reports are applied one by one, in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use tokio::sync::mpsc::UnboundedReceiver;
use tracing::Instrument;

use super::outcome::{self, Applied, OutcomeError, Statuses};
use crate::engine::{Engine, RunContext};
use crate::metrics::Pending;
use crate::telephony::sim::SimReport;

/// Reports applied in one transaction at most.
const GROUP_MAX: usize = 32;

/// Groups applied at once. Reports of different calls arrive in parallel, like Twilio's
/// webhooks; one transaction at a time capped the pipeline.
const GROUPS_IN_FLIGHT: usize = 4;

/// Feeds the simulator's reports through [`apply`], those waiting together, and counts each
/// one off `outstanding` once applied. A report's own events stay in order.
pub async fn pump_sim_reports(
    engine: Arc<Engine>,
    reports: UnboundedReceiver<SimReport>,
    outstanding: Arc<AtomicUsize>,
) {
    let reports = futures::stream::unfold(reports, |mut rx| async move {
        rx.recv().await.map(|report| (report, rx))
    });
    reports
        .ready_chunks(GROUP_MAX)
        .for_each_concurrent(GROUPS_IN_FLIGHT, |reports| {
            let (engine, outstanding) = (&engine, &outstanding);
            async move {
                let results = apply(engine, &reports).await;
                for (report, result) in reports.iter().zip(results) {
                    if let Err(e) = result {
                        tracing::warn!(attempt_id = %report.attempt_id, error = %e, "simulated statuses not applied");
                    }
                }
                outstanding.fetch_sub(reports.len(), Ordering::SeqCst);
            }
        })
        .await;
}

/// Applies `reports` in one transaction, or, when that fails, each in a transaction of its
/// own, in order. Returns what became of each, in order.
pub async fn apply(engine: &Engine, reports: &[SimReport]) -> Vec<Result<Applied, OutcomeError>> {
    let attempts: HashSet<_> = reports.iter().map(|r| r.attempt_id).collect();
    if reports.len() > 1 && attempts.len() == reports.len() {
        let span = tracing::debug_span!("status_group", size = reports.len());
        match apply_together(engine, reports).instrument(span).await {
            Ok(Some(applied)) => return applied.into_iter().map(Ok).collect(),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(size = reports.len(), error = %e,
                    "status group failed; its reports are applied one by one");
            }
        }
    }
    let mut results = Vec::with_capacity(reports.len());
    for report in reports {
        results.push(outcome::apply_in_order(engine, report.attempt_id, &report.events).await);
    }
    results
}

/// The group's transaction. `None` (nothing written) when two reports are of one run: each
/// must see the run as no other report of its group left it.
async fn apply_together(
    engine: &Engine,
    reports: &[SimReport],
) -> Result<Option<Vec<Applied>>, OutcomeError> {
    let mut tx = engine.pool.begin().await?;
    let ids: Vec<_> = reports.iter().map(|r| r.attempt_id).collect();
    let mut owners = HashMap::new();
    let mut runs = HashSet::new();
    for (attempt_id, owner) in RunContext::lock_attempt_steps(&mut tx, &ids).await? {
        if !runs.insert(owner.1.ctx.run_id) {
            return Ok(None);
        }
        owners.insert(attempt_id, owner);
    }
    let owned = reports
        .iter()
        .map(|r| {
            let id = r.attempt_id;
            owners.remove(&id).ok_or(OutcomeError::NoAttempt(id))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let statuses: Vec<Statuses> = reports
        .iter()
        .zip(&owned)
        .map(|(report, (_, locked))| Statuses {
            attempt_id: report.attempt_id,
            ctx: &locked.ctx,
            events: &report.events,
        })
        .collect();
    let pending = Pending::default();
    let moved = outcome::apply_on_many(&mut tx, engine, &statuses, &pending).await?;
    let mut applied = Vec::with_capacity(reports.len());
    for (owner, moved) in owned.into_iter().zip(moved) {
        applied.push(outcome::conclude(&mut tx, engine, owner, moved, &pending).await?);
    }
    tx.commit().await?;
    pending.committed();
    Ok(Some(applied))
}
