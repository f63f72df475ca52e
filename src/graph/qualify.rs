//! qualify: a lead accepted earlier within the workflow's dedupe window ends as `duplicate`;
//! otherwise the workflow's rules decide between `disqualified` and going on.

use jiff::Timestamp;
use serde_json::json;

use super::{Decision, Read, Reads, View};
use crate::lead::RunStatus;

/// What qualify needs read.
pub(super) const READS: &[Read] = &[Read::EarlierMatch];

pub(super) fn decide(view: &View, reads: &Reads, _now: Timestamp) -> Decision {
    if view.workflow.dedupe_window.is_some()
        && let Some(first) = &reads.earlier_match
    {
        let (lead, matched) = (first.lead_id, &first.matched);
        return Decision {
            duplicate_of: Some(lead),
            ..Decision::end(
                RunStatus::Duplicate,
                Some(format!("same {matched} as lead {lead}")),
                json!({ "duplicate_of": lead, "matched": matched }),
                "duplicate",
            )
        };
    }
    let verdict = view.workflow.qualify(&view.run.submission);
    if verdict.qualified {
        Decision::go_on(json!({ "qualified": true }), "qualified")
    } else {
        Decision::end(
            RunStatus::Disqualified,
            Some(verdict.reasons.join("; ")),
            json!({ "qualified": false, "reasons": verdict.reasons }),
            "disqualified",
        )
    }
}
