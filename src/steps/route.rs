//! route: pick the lead's team (its `team_id_field` when that names a known team, else the
//! first matching rule, else the workflow's default) and record it on the run.

use serde_json::json;
use sqlx::PgConnection;

use super::{RunContext, StepError, Transition};
use crate::lead::RunStatus;
use crate::workflow::Workflow;

pub(super) async fn decide(
    conn: &mut PgConnection,
    workflow: &Workflow,
    ctx: &RunContext,
) -> Result<Transition, StepError> {
    let routing = workflow.route(&ctx.submission);
    sqlx::query("UPDATE runs SET team = $2 WHERE id = $1")
        .bind(ctx.run_id)
        .bind(&routing.team)
        .execute(conn)
        .await?;
    // The callback step is not part of the graph yet: routing ends the run.
    Ok(Transition::Finish {
        status: RunStatus::Routed,
        reason: None,
        output: json!({ "team": routing.team, "rule": routing.rule }),
        event: "routed",
    })
}
