//! The contract of a database-only step: a pure [`Decide`] from what the step sees of its run
//! ([`View`]) and what the engine read for it ([`Reads`]) to a [`Decision`]. No SQL and no
//! clock of its own: the engine reads, for a whole group at once, what the step's node
//! declares in [`super::Node::reads`], then writes the decisions and commits.

use jiff::Timestamp;
use serde_json::Value;
use uuid::Uuid;

use crate::lead::{RunStatus, Submission};
use crate::workflow::Workflow;

/// What a step knows about its run: the run's state and the lead it is about.
#[derive(Debug, Clone)]
pub struct RunContext {
    pub run_id: Uuid,
    pub lead_id: Uuid,
    pub workflow: String,
    pub status: RunStatus,
    pub team: Option<String>,
    pub submission: Submission,
    pub phone_e164: Option<String>,
    /// ISO 3166 alpha-2 of the phone number (`US`).
    pub phone_region: Option<String>,
    pub email: Option<String>,
    pub received_at: Timestamp,
    pub auto_callback: bool,
    /// What last held the first call back (`team_hours`, `stagger`, …), if anything did.
    pub schedule_rule: Option<String>,
}

/// What a step decides from.
pub struct View<'a> {
    pub run: &'a RunContext,
    pub workflow: &'a Workflow,
}

/// A read a step needs, done by the engine for all the runs of a group in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// The earliest accepted lead received before this one, within the workflow's dedupe
    /// window, with the same E.164 phone or the same email.
    EarlierMatch,
}

/// What the engine read for one run, per the step's [`Read`]s; what was not asked is empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reads {
    pub earlier_match: Option<EarlierMatch>,
}

/// A lead that came first with the same phone or email.
#[derive(Debug, Clone, PartialEq)]
pub struct EarlierMatch {
    pub lead_id: Uuid,
    /// `phone` or `email`.
    pub matched: String,
}

/// A database-only step's decision function.
pub type Decide = fn(&View, &Reads, Timestamp) -> Decision;

/// What a step decided for its run.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The step's output, stored with the step and shown in the timeline.
    pub output: Value,
    /// The timeline event that records the decision.
    pub event: &'static str,
    /// The team the run is now for, if the step chose one.
    pub team: Option<String>,
    /// The lead this one repeats, if the step found one.
    pub duplicate_of: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The run goes on to the step that follows in the graph.
    GoOn,
    /// The run ends.
    End {
        status: RunStatus,
        reason: Option<String>,
    },
}

impl Decision {
    pub fn go_on(output: Value, event: &'static str) -> Decision {
        Decision {
            verdict: Verdict::GoOn,
            output,
            event,
            team: None,
            duplicate_of: None,
        }
    }

    pub fn end(
        status: RunStatus,
        reason: Option<String>,
        output: Value,
        event: &'static str,
    ) -> Decision {
        Decision {
            verdict: Verdict::End { status, reason },
            output,
            event,
            team: None,
            duplicate_of: None,
        }
    }
}
