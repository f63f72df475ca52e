//! When to call: the first moment, no sooner than asked, at which the team is open, the lead's
//! local time is inside its calling window, and the lead's daily call cap allows another call.
//! [`when`] is pure; [`stagger`] spaces the first calls queued for one team opening.

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sqlx::PgConnection;

use crate::schedule::{self, Decider, LeadWindow, NoOpening};
use crate::tz::{self, ZoneRule};
use crate::workflow::{QuietHours, Team};

/// What set a call's time; recorded with the run and shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Callable at once.
    Now,
    /// Waiting for the team's business hours.
    TeamHours,
    /// Waiting for the lead's local calling window (quiet hours).
    LeadQuietHours,
    /// Waiting for the lead's calls in the last 24 hours to drop under the daily cap.
    DailyCap,
    /// Waiting out the delay after the previous attempt's outcome.
    RetryDelay,
    /// Spaced after other leads queued for the same team opening.
    Stagger,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Now => "now",
            Rule::TeamHours => "team_hours",
            Rule::LeadQuietHours => "lead_quiet_hours",
            Rule::DailyCap => "daily_cap",
            Rule::RetryDelay => "retry_delay",
            Rule::Stagger => "stagger",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub at: Timestamp,
    pub rule: Rule,
    /// The zone the lead's calling window was read in, and how it was decided.
    pub zone: String,
    pub zone_rule: ZoneRule,
}

/// The lead's calling window: in the zone its number gives; a number whose zone cannot be
/// determined (unknown, or several zones) falls back to the team's zone, as the rule says.
pub fn lead_window(
    team: &Team,
    quiet: &QuietHours,
    e164: &str,
    country: Option<&str>,
) -> (Option<LeadWindow>, String, ZoneRule) {
    let found = tz::lead_zone(e164);
    let (zone, rule) = match found.zone {
        Some(zone) => (zone, found.rule),
        None => (team.schedule.timezone.clone(), found.rule),
    };
    let name = zone.iana_name().unwrap_or("UTC").to_owned();
    let region = found.subdivision.or(country).unwrap_or("");
    (
        LeadWindow::from_quiet_hours(zone, quiet, region),
        name,
        rule,
    )
}

/// The first callable moment at or after `earliest`. `asked` names why `earliest` is what it
/// is (now, or a retry delay); `recent` are the lead's calls placed in the last 24 hours.
pub fn when(
    team: &Team,
    quiet: &QuietHours,
    e164: &str,
    country: Option<&str>,
    earliest: Timestamp,
    asked: Rule,
    recent: &[Timestamp],
) -> Result<Plan, NoOpening> {
    let (window, zone, zone_rule) = lead_window(team, quiet, e164, country);
    let (earliest, asked) = match cap_lifts_at(recent, team.callback.daily_cap) {
        Some(lifts) if lifts > earliest => (lifts, Rule::DailyCap),
        _ => (earliest, asked),
    };
    let opening = schedule::next_opening(&team.schedule, window.as_ref(), earliest)?;
    let rule = match opening.decided_by {
        Decider::Now => asked,
        Decider::TeamHours => Rule::TeamHours,
        Decider::LeadQuietHours => Rule::LeadQuietHours,
    };
    Ok(Plan {
        at: opening.at,
        rule,
        zone,
        zone_rule,
    })
}

/// When the trailing 24 hours will hold fewer than `cap` calls, if they hold `cap` now.
fn cap_lifts_at(recent: &[Timestamp], cap: u32) -> Option<Timestamp> {
    let cap = cap.max(1) as usize;
    let mut sorted = recent.to_vec();
    sorted.sort();
    let oldest_counted = sorted.len().checked_sub(cap).map(|i| sorted[i])?;
    oldest_counted
        .checked_add(SignedDuration::from_hours(24))
        .ok()
}

/// Spaces first calls queued for the same opening of a team by the team's stagger: the k-th
/// lead waiting for an opening gets `opening + k × stagger`. Only plans that wait for the
/// team or the lead's hours are spaced; a call that can go now goes now.
pub async fn stagger(
    conn: &mut PgConnection,
    team_id: &str,
    team: &Team,
    plan: Plan,
) -> Result<Plan, sqlx::Error> {
    if !matches!(plan.rule, Rule::TeamHours | Rule::LeadQuietHours)
        || team.callback.stagger.is_zero()
    {
        return Ok(plan);
    }
    let (k,): (i32,) = sqlx::query_as(
        "INSERT INTO callback_slots (team, opening, taken) VALUES ($1, $2, 1) \
         ON CONFLICT (team, opening) DO UPDATE SET taken = callback_slots.taken + 1 \
         RETURNING taken - 1",
    )
    .bind(team_id)
    .bind(jiff_sqlx::Timestamp::from(plan.at))
    .fetch_one(conn)
    .await?;
    if k == 0 {
        return Ok(plan);
    }
    let spacing = SignedDuration::try_from(team.callback.stagger).unwrap_or(SignedDuration::ZERO);
    let offset = spacing.checked_mul(k).unwrap_or(SignedDuration::MAX);
    Ok(Plan {
        at: plan.at.checked_add(offset).unwrap_or(plan.at),
        rule: Rule::Stagger,
        ..plan
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::Workflows;

    fn team() -> (Team, QuietHours) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows");
        let flows = Workflows::load_dir(&dir).expect("shipped workflows load");
        let w = flows.get("default").expect("default");
        (w.teams["team_001"].clone(), w.quiet_hours.clone())
    }

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn a_new_york_lead_on_a_tuesday_morning_is_called_now() {
        let (t, q) = team();
        // Tuesday 2027-01-12 10:00 New York.
        let now = at("2027-01-12T15:00:00Z");
        let p = when(&t, &q, "+12125550123", Some("US"), now, Rule::Now, &[]).expect("plan");
        assert_eq!((p.at, p.rule), (now, Rule::Now));
        assert_eq!(p.zone, "America/New_York");
        assert_eq!(p.zone_rule, ZoneRule::AreaCode);
    }

    #[test]
    fn friday_evening_waits_for_monday() {
        let (t, q) = team();
        // Friday 2027-01-08 17:10 New York → Monday 09:00.
        let p = when(
            &t,
            &q,
            "+12125550123",
            Some("US"),
            at("2027-01-08T22:10:00Z"),
            Rule::Now,
            &[],
        )
        .expect("plan");
        assert_eq!(p.at, at("2027-01-11T14:00:00Z"));
        assert_eq!(p.rule, Rule::TeamHours);
    }

    #[test]
    fn a_california_lead_waits_for_eight_in_california() {
        let (t, q) = team();
        // Monday 2027-01-11 09:30 New York = 06:30 Los Angeles → 08:00 LA = 11:00 NY.
        let p = when(
            &t,
            &q,
            "+12135550123",
            Some("US"),
            at("2027-01-11T14:30:00Z"),
            Rule::Now,
            &[],
        )
        .expect("plan");
        assert_eq!(p.at, at("2027-01-11T16:00:00Z"));
        assert_eq!(p.rule, Rule::LeadQuietHours);
        assert_eq!(p.zone, "America/Los_Angeles");
    }

    #[test]
    fn an_unplaceable_number_falls_back_to_the_team_zone() {
        let (t, q) = team();
        let p = when(
            &t,
            &q,
            "+999",
            None,
            at("2027-01-12T15:00:00Z"),
            Rule::Now,
            &[],
        )
        .expect("plan");
        assert_eq!(p.zone, "America/New_York");
        assert_eq!(p.zone_rule, ZoneRule::Unknown);
    }

    #[test]
    fn the_daily_cap_holds_the_fourth_call_until_a_day_after_the_first() {
        let (t, q) = team();
        let recent = [
            at("2027-01-12T14:00:00Z"),
            at("2027-01-12T14:30:00Z"),
            at("2027-01-12T15:00:00Z"),
        ];
        let p = when(
            &t,
            &q,
            "+12125550123",
            Some("US"),
            at("2027-01-12T15:10:00Z"),
            Rule::RetryDelay,
            &recent,
        )
        .expect("plan");
        assert_eq!(p.at, at("2027-01-13T14:00:00Z"));
        assert_eq!(p.rule, Rule::DailyCap);
        assert_eq!(cap_lifts_at(&recent[..2], 3), None);
    }

    #[test]
    fn a_retry_delay_inside_hours_keeps_its_rule() {
        let (t, q) = team();
        let p = when(
            &t,
            &q,
            "+12125550123",
            Some("US"),
            at("2027-01-12T15:10:00Z"),
            Rule::RetryDelay,
            &[],
        )
        .expect("plan");
        assert_eq!(p.rule, Rule::RetryDelay);
    }
}
