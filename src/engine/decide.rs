//! How the engine runs the decisions of database-only steps ([`Kind::Database`]): for a
//! group of runs, it reads once what the step declares, asks the step's pure
//! [`Decide`](crate::graph::Decide) for each run, turns each decision into a transition along
//! the graph and adds it to [`Writes`]. A run alone is a group of one; a step run inside its
//! predecessor's transaction ([`super::fused`]) goes through the same function.
//!
//! Entering the effect step ([`Kind::Effect`]) plans its first action before the transition
//! is written: when the lead may be called (team hours, quiet hours, daily cap, stagger), or
//! that it cannot be, which ends the run.

use std::collections::HashMap;

use serde_json::json;
use sqlx::PgConnection;
use tracing::Instrument;
use uuid::Uuid;

use super::{Engine, RunContext, StepError, Transition, Writes, callback, reads};
use crate::engine::queue::StepJob;
use crate::graph::{Decision, Kind, Step, Verdict, View};
use crate::lead::RunStatus;

/// An execution to decide: a queued one (its job, its delivery count and its job id) or one
/// run in its predecessor's transaction (its job id, chosen by [`Writes`]).
pub(super) enum Execution<'a> {
    Queued {
        job: StepJob,
        attempt: u32,
        job_id: &'a str,
    },
    Fused {
        job_id: &'a str,
    },
}

/// Decides `step` for `runs` and adds their transitions to `writes`. When the step goes on
/// to the effect step, returns what was read for the first plans of its runs, which the
/// effect's executions prepared in this transaction reuse.
pub(super) async fn decide_all(
    tx: &mut PgConnection,
    engine: &Engine,
    step: Step,
    runs: &[(Execution<'_>, &RunContext)],
    writes: &mut Writes,
) -> Result<Option<callback::Lookups>, StepError> {
    let node = step.node();
    let Some(decide) = node.decide else {
        return Err(StepError::NotDatabase(step));
    };
    let ctxs: Vec<&RunContext> = runs.iter().map(|(_, ctx)| *ctx).collect();
    let mut read = reads::load(tx, engine, node.reads, &ctxs).await?;
    let entering = step.following().filter(|next| next.kind() == Kind::Effect);
    let first_plans = match entering {
        Some(_) if !ctxs.is_empty() => Some(callback::Lookups::for_new(tx, engine, &ctxs).await?),
        _ => None,
    };
    let now = engine.clock.now();
    for (execution, ctx) in runs {
        let (job, attempt, job_id) = match execution {
            Execution::Queued {
                job,
                attempt,
                job_id,
            } => (*job, *attempt, *job_id),
            Execution::Fused { job_id } => (
                StepJob {
                    run_id: ctx.run_id,
                    n: 0,
                },
                1,
                *job_id,
            ),
        };
        let span = super::span(step, job, job_id, attempt);
        span.record("lead_id", tracing::field::display(ctx.lead_id));
        async {
            let workflow = engine.workflow(&ctx.workflow)?;
            let view = View { run: ctx, workflow };
            let reads = read.remove(&ctx.run_id).unwrap_or_default();
            let decision = decide(&view, &reads, now);
            writes.note(ctx.run_id, decision.team.clone(), decision.duplicate_of);
            let transition = transition(
                tx,
                engine,
                step,
                &view,
                decision,
                first_plans.as_ref(),
                writes,
            )
            .await?;
            let max = workflow.retry.max_attempts;
            match execution {
                Execution::Queued { .. } => writes.add(job, attempt, ctx, transition, max),
                Execution::Fused { .. } => {
                    writes.add_done(step, ctx, transition, max);
                    // Not "step done": that is logged once a transaction has committed.
                    tracing::debug!("decided in its predecessor's transaction");
                }
            }
            Ok::<(), StepError>(())
        }
        .instrument(span)
        .await?;
    }
    Ok(first_plans)
}

/// The transition a decision makes along the graph: on to the step that follows (planning it
/// first when it is the effect step), or the end of the run.
async fn transition(
    tx: &mut PgConnection,
    engine: &Engine,
    step: Step,
    view: &View<'_>,
    decision: Decision,
    first_plans: Option<&callback::Lookups>,
    writes: &mut Writes,
) -> Result<Transition, StepError> {
    let Decision {
        verdict,
        mut output,
        event,
        team,
        ..
    } = decision;
    let next = match verdict {
        Verdict::End { status, reason } => {
            return Ok(Transition::Finish {
                status,
                reason,
                output,
                event,
            });
        }
        Verdict::GoOn => step.following(),
    };
    let Some(next) = next else {
        return Ok(Transition::Finish {
            status: RunStatus::Failed,
            reason: Some(format!("step {step} has no step after it")),
            output,
            event,
        });
    };
    let (Kind::Effect, Some(first_plans)) = (next.kind(), first_plans) else {
        return Ok(Transition::Next {
            step: next,
            output,
            event,
            run_at: None,
        });
    };
    let ctx = view.run;
    let Some(team) = team.as_deref().or(ctx.team.as_deref()) else {
        return Ok(Transition::Finish {
            status: RunStatus::Failed,
            reason: Some(format!("no team chosen before {next}")),
            output,
            event,
        });
    };
    let planned =
        callback::plan_first(tx, engine, view.workflow, team, ctx, first_plans, writes).await?;
    match planned {
        Ok(plan) => {
            output["callback_at"] = json!(plan.at);
            output["callback_rule"] = json!(plan.rule);
            let now = engine.clock.now();
            Ok(Transition::Next {
                step: next,
                output,
                event,
                run_at: (plan.at > now).then(|| engine.clock.to_real(plan.at)),
            })
        }
        Err(reason) => Ok(Transition::Finish {
            status: RunStatus::Failed,
            reason: Some(reason),
            output,
            event,
        }),
    }
}

/// What a step's view of the runs it decides leaves for the next: the team a decision chose
/// becomes the run's, for the steps run after it in the same transaction.
pub(super) fn carry_teams(writes: &Writes, contexts: &mut HashMap<Uuid, RunContext>) {
    for (run_id, ctx) in contexts.iter_mut() {
        if let Some(team) = writes.team(*run_id) {
            ctx.team = Some(team.to_owned());
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::graph::{GRAPH, Kind};

    #[test]
    fn an_effect_step_is_entered_only_from_a_database_step() {
        for node in &GRAPH {
            for next in node.next {
                if next.kind() == Kind::Effect {
                    assert_eq!(node.kind, Kind::Database, "{}", node.name);
                }
            }
        }
    }
}
