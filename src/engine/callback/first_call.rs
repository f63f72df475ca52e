//! The first call of a lead entering the callback step.

use sqlx::PgConnection;

use super::plan::{self, Plan, Rule};
use super::{Lookups, mark_scheduled};
use crate::engine::{Engine, RunContext, StepError, Writes};
use crate::workflow::Workflow;

/// The first call of a lead entering the callback step: when, with the stagger, recorded on
/// the run (its timeline entry goes to `writes`, after the entering decision's). `read`: what
/// its group read for its leads' first calls ([`Lookups::for_new`]).
pub(crate) async fn plan_first(
    tx: &mut PgConnection,
    engine: &Engine,
    workflow: &Workflow,
    team_id: &str,
    ctx: &RunContext,
    read: &Lookups,
    writes: &mut Writes,
) -> Result<Result<Plan, String>, StepError> {
    let team = engine.team(&workflow.name, team_id)?;
    let now = engine.clock.now();
    let recent = read.recent_calls(ctx.lead_id);
    let plan = plan::when(
        team,
        &workflow.quiet_hours,
        ctx.phone_e164.as_deref().unwrap_or_default(),
        ctx.phone_region.as_deref(),
        now,
        Rule::Now,
        &recent,
    );
    let plan = match plan {
        Ok(plan) => plan,
        Err(no) => return Ok(Err(no.to_string())),
    };
    let plan = plan::stagger(tx, team_id, team, plan).await?;
    if plan.rule != Rule::Now {
        writes.add_event_after(mark_scheduled(tx, ctx, &plan, 1, None).await?);
    }
    Ok(Ok(plan))
}
