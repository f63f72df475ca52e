//! route: pick the lead's team (its `team_id_field` when that names a known team, else the
//! first matching rule, else the workflow's default) and record it on the run; then, when the
//! lead wants a callback, plan its first call.

use serde_json::json;
use sqlx::PgConnection;

use super::{Engine, RunContext, StepError, Transition, Writes, callback};
use crate::lead::{RunStatus, Step};
use crate::workflow::Workflow;

pub(super) async fn decide(
    conn: &mut PgConnection,
    engine: &Engine,
    workflow: &Workflow,
    ctx: &RunContext,
    writes: &mut Writes,
    read: Option<&callback::Lookups>,
) -> Result<Transition, StepError> {
    let routing = workflow.route(&ctx.submission);
    writes.assign_team(ctx.run_id, &routing.team);
    let mut output = json!({ "team": routing.team, "rule": routing.rule });
    if let Some(unknown) = &routing.unknown_team_id {
        output["unknown_team_id"] = json!(unknown);
    }
    if !ctx.auto_callback {
        return Ok(Transition::Finish {
            status: RunStatus::Routed,
            reason: None,
            output,
            event: "routed",
        });
    }
    match callback::plan_first(conn, engine, workflow, &routing.team, ctx, read, writes).await? {
        Ok(plan) => {
            output["callback_at"] = json!(plan.at);
            output["callback_rule"] = json!(plan.rule);
            let now = engine.clock.now();
            Ok(Transition::Next {
                step: Step::Callback,
                output,
                event: "routed",
                run_at: (plan.at > now).then(|| engine.clock.to_real(plan.at)),
            })
        }
        Err(reason) => Ok(Transition::Finish {
            status: RunStatus::Failed,
            reason: Some(reason),
            output,
            event: "routed",
        }),
    }
}
