//! Speed to lead, the product's headline number: from the lead's acceptance to the moment its
//! first call went out. Observed where a run's first attempt first gets a `placed_at`: the
//! provider's answer to `place`, or a status callback that overtook it.

use jiff::Timestamp;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::At;
use crate::metrics::Observation;

/// The observation for attempt 1 of `run_id`, placed at `placed_at` (real time).
///
/// `waited` is true when the first call was deliberately held: for the team's hours, the
/// lead's calling window, the stagger after an opening, or the daily cap. Any such hold sets
/// the run's `schedule_rule` before a first attempt, and nothing else does, so those leads
/// can be told apart from leads called as fast as the system can.
pub(super) async fn first_call(
    tx: &mut PgConnection,
    run_id: Uuid,
    team: &str,
    placed_at: Timestamp,
) -> Result<Option<Observation>, sqlx::Error> {
    let row: Option<(At, Option<String>)> = sqlx::query_as(
        "SELECT l.received_at, r.schedule_rule FROM runs r JOIN leads l ON l.id = r.lead_id \
         WHERE r.id = $1",
    )
    .bind(run_id)
    .fetch_optional(tx)
    .await?;
    Ok(row.map(|(received_at, rule)| Observation::SpeedToLead {
        team: team.to_owned(),
        waited: rule.is_some_and(|r| r != "now"),
        seconds: placed_at.duration_since(received_at.0).as_secs_f64(),
    }))
}
