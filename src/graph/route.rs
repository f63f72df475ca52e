//! route: pick the lead's team (its `team_id_field` when that names a known team, else the
//! first matching rule, else the workflow's default) and record it on the run; the run goes
//! on to its callback when the lead wants one, and ends `routed` otherwise.

use jiff::Timestamp;
use serde_json::json;

use super::{Decision, Read, Reads, View};
use crate::lead::RunStatus;

pub(super) const READS: &[Read] = &[];

pub(super) fn decide(view: &View, _reads: &Reads, _now: Timestamp) -> Decision {
    let routing = view.workflow.route(&view.run.submission);
    let mut output = json!({ "team": routing.team, "rule": routing.rule });
    if let Some(unknown) = &routing.unknown_team_id {
        output["unknown_team_id"] = json!(unknown);
    }
    let decision = if view.run.auto_callback {
        Decision::go_on(output, "routed")
    } else {
        Decision::end(RunStatus::Routed, None, output, "routed")
    };
    Decision {
        team: Some(routing.team),
        ..decision
    }
}
