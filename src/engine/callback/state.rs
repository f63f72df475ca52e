//! An attempt as the state machine reads it: its state, its row and where its call stands.
//! [`super::attempt`] reads and writes them; [`super::machine`] decides on them.

use uuid::Uuid;

use super::policy::Outcome;
use crate::db::At;
use crate::telephony::CallStatus;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// Written; the provider may or may not have the call.
    Placing,
    /// The provider certainly did not take the call: it may be asked again.
    Retry,
    /// The provider returned a call id.
    Placed,
    /// Sent, but no answer came back: the call may be out.
    Unknown,
    Done,
}

impl State {
    pub(super) fn parse(s: &str) -> State {
        match s {
            "placing" => State::Placing,
            "retry" => State::Retry,
            "placed" => State::Placed,
            "unknown" => State::Unknown,
            _ => State::Done,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            State::Placing => "placing",
            State::Retry => "retry",
            State::Placed => "placed",
            State::Unknown => "unknown",
            State::Done => "done",
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct AttemptRow {
    pub id: Uuid,
    pub n: i32,
    pub state: State,
    pub placed_at: Option<At>,
    pub updated_at: At,
    pub outcome: Option<Outcome>,
    pub place_errors: i32,
    pub provider_call_id: Option<String>,
    /// When the row was written, before the provider was asked for the call.
    pub created_at: At,
    /// How often the provider was asked whether the call went out (see `lookup.rs`).
    pub lookups: i32,
    /// When it may be asked again, after it could not answer.
    pub next_lookup_at: Option<At>,
}

/// Where an attempt's call stands, as its row says; statuses advance it in memory and the
/// row is written once.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Progress {
    pub state: State,
    pub status_rank: i16,
    pub call_status: Option<CallStatus>,
    pub provider_call_id: Option<String>,
    pub answered_by: Option<String>,
    pub outcome: Option<Outcome>,
}
