//! Speed to lead, the product's headline number: from the lead's acceptance to the moment its
//! first call went out. Observed where a run's first attempt first gets a `placed_at`: the
//! provider's answer to `place`, or a status callback that overtook it.

use jiff::Timestamp;

use crate::engine::RunContext;
use crate::metrics::Observation;

/// The observation for attempt 1 of the run of `ctx`, placed at `placed_at` (real time).
///
/// `waited` is true when the first call was deliberately held: for the team's hours, the
/// lead's calling window, the stagger after an opening, or the daily cap. Any such hold sets
/// the run's `schedule_rule` before a first attempt, and nothing else does, so those leads
/// can be told apart from leads called as fast as the system can. `ctx` must be read in the
/// transaction that records the placement.
pub(super) fn first_call(ctx: &RunContext, team: &str, placed_at: Timestamp) -> Observation {
    Observation::SpeedToLead {
        team: team.to_owned(),
        waited: ctx.schedule_rule.as_deref().is_some_and(|r| r != "now"),
        seconds: placed_at.duration_since(ctx.received_at).as_secs_f64(),
    }
}
