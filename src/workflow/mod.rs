//! Declarative workflows: one TOML file per workflow under `workflows/`, holding its
//! qualification rules, routing rules, teams and policies. Files are loaded and validated once at
//! start ([`Workflows::load_dir`]); a bad file stops start-up with its path, line and problem.
//! Everything after loading is a pure decision over a [`Submission`](crate::lead::Submission).
//!
//! `workflows/default.toml` is the documented reference of the file format.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) mod duration;
mod load;
pub mod routing;
pub mod rules;
pub mod schedule;
pub mod team;

pub use load::LoadError;
pub use routing::{Route, RouteRule, Routing};
pub use rules::{CompareOp, Condition, Qualification, QualifyRule};
pub use schedule::{BusinessHours, DailyWindow, QuietHours, RegionCode, WeeklyHours};
pub use team::{CallbackPolicy, E164, OutcomeDelays, Ring, Team};

/// The loaded workflows, by name (which is also their file stem).
#[derive(Debug, Clone, Default)]
pub struct Workflows {
    by_name: BTreeMap<String, Workflow>,
}

impl Workflows {
    pub fn get(&self, name: &str) -> Option<&Workflow> {
        self.by_name.get(name)
    }

    /// In name order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Workflow {
    pub name: String,
    /// The file it was loaded from, as given to the loader.
    pub source: PathBuf,
    pub default_team: String,
    /// How far back a lead with the same phone or email counts as a duplicate; `None` is off.
    #[serde(with = "duration::zero_is_off")]
    pub dedupe_window: Option<Duration>,
    /// ISO 3166-1 alpha-2 codes; `None` allows every country.
    pub allowed_countries: Option<Vec<String>>,
    pub retry: RetryPolicy,
    pub quiet_hours: QuietHours,
    pub qualify: Vec<QualifyRule>,
    #[serde(rename = "route")]
    pub routes: Vec<Route>,
    pub teams: BTreeMap<String, Team>,
}

impl Workflow {
    /// Whether a lead from `country` (ISO 3166-1 alpha-2, upper case) may be taken.
    pub fn allows_country(&self, country: &str) -> bool {
        self.allowed_countries
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == country))
    }
}

pub use crate::retry::RetryPolicy;

/// The `[retry]` table: how a failing step (qualify, route, callback) is retried, checked into
/// a [`RetryPolicy`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "RetryFile")]
pub(crate) struct RetrySection(pub(crate) RetryPolicy);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryFile {
    max_attempts: Option<u32>,
    #[serde(default, deserialize_with = "some_duration")]
    base: Option<Duration>,
    #[serde(default, deserialize_with = "some_duration")]
    max: Option<Duration>,
}

fn some_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration::deserialize(d).map(Some)
}

impl TryFrom<RetryFile> for RetrySection {
    type Error = String;

    fn try_from(f: RetryFile) -> Result<Self, String> {
        let d = RetryPolicy::default();
        let p = RetryPolicy {
            max_attempts: f.max_attempts.unwrap_or(d.max_attempts),
            base: f.base.unwrap_or(d.base),
            max: f.max.unwrap_or(d.max),
        };
        if p.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1".to_owned());
        }
        if p.base.is_zero() {
            // A zero base would retry in a hot loop.
            return Err("retry.base must be more than \"0\"".to_owned());
        }
        if p.max < p.base {
            return Err(format!(
                "retry.max ({}) is shorter than retry.base ({})",
                duration::format(p.max),
                duration::format(p.base)
            ));
        }
        Ok(RetrySection(p))
    }
}

/// Fixtures shared by the tests of this module's files.
#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use crate::lead::Submission;

    pub(crate) const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows");

    pub(crate) fn shipped(name: &str) -> Workflow {
        let path = std::path::Path::new(SHIPPED).join(format!("{name}.toml"));
        match Workflow::from_file(&path) {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        }
    }

    /// The sample payload of the inbound webhook spec.
    pub(crate) fn sample() -> Submission {
        Submission {
            hook_name: Some("captureLeadWebhook".into()),
            name: Some("John Doe".into()),
            country_code: Some("+1".into()),
            phone: Some("1234567890".into()),
            email: Some("john.doe@example.com".into()),
            company_name: Some("Acme Corp".into()),
            ip_address: Some("192.168.1.1".into()),
            industry: Some("Software".into()),
            message: Some("Looking for a demo.".into()),
            size: Some("Medium".into()),
            page_url: Some("https://example.com/demo".into()),
            page_name: Some("Demo Page".into()),
            date_submitted: Some("2025-01-30".into()),
            time_submitted: Some("14:30:00".into()),
            is_auto: Some("1".into()),
            status: Some("1".into()),
            team_id: Some("team_001".into()),
            custom: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{SHIPPED, sample, shipped};
    use super::*;
    use jiff::civil::date;
    use jiff::tz::TimeZone;

    #[test]
    fn the_shipped_directory_loads() {
        let all = match Workflows::load_dir(std::path::Path::new(SHIPPED)) {
            Ok(w) => w,
            Err(e) => panic!("{e}"),
        };
        let names: Vec<&str> = all.names().collect();
        assert!(
            names.contains(&"default") && names.contains(&"always-open"),
            "{names:?}"
        );
    }

    #[test]
    fn the_sample_payload_passes_both_shipped_workflows_by_team_id_field() {
        for name in ["default", "always-open"] {
            let w = shipped(name);
            assert_eq!(
                w.qualify(&sample()),
                Qualification {
                    qualified: true,
                    reasons: vec![]
                },
                "{name}"
            );
            let r = w.route(&sample());
            assert_eq!(
                (r.team.as_str(), &r.rule, &r.unknown_team_id),
                ("team_001", &RouteRule::TeamIdField, &None),
                "{name}"
            );
        }
    }

    #[test]
    fn default_declares_what_the_callback_needs() {
        let w = shipped("default");
        assert_eq!(w.dedupe_window, Some(Duration::from_secs(86_400)));
        assert!(w.allows_country("US") && !w.allows_country("FR"));
        assert_eq!(w.retry, RetryPolicy::default());
        assert_eq!(
            w.quiet_hours.allowed_for("US-FL").map(|w| w.to_string()),
            Some("08:00-20:00".to_owned())
        );
        let Some(team) = w.teams.get("team_001") else {
            panic!("no team_001")
        };
        assert_eq!(team.caller_id.as_str(), "+12125550100");
        assert_eq!(team.ring, Ring::Simultaneous);
        assert_eq!(team.callback, CallbackPolicy::default());
        let hours = &team.schedule;
        let ny = |y, m, d, h, min| match date(y, m, d)
            .at(h, min, 0, 0)
            .to_zoned(hours.timezone.clone())
        {
            Ok(z) => z.timestamp(),
            Err(e) => panic!("{e}"),
        };
        // 2026-03-02 is a Monday; 2026-03-07 a Saturday; 2026-12-25 a Friday (holiday).
        assert!(hours.is_open(ny(2026, 3, 2, 9, 0)));
        assert!(!hours.is_open(ny(2026, 3, 2, 8, 59)));
        assert!(!hours.is_open(ny(2026, 3, 2, 12, 30)));
        assert!(hours.is_open(ny(2026, 3, 2, 17, 29)));
        assert!(!hours.is_open(ny(2026, 3, 2, 17, 30)));
        assert!(!hours.is_open(ny(2026, 3, 6, 16, 0)));
        assert!(!hours.is_open(ny(2026, 3, 7, 10, 0)));
        assert!(hours.is_open(ny(2026, 12, 24, 10, 0)));
        assert!(!hours.is_open(ny(2026, 12, 25, 10, 0)));
    }

    #[test]
    fn always_open_is_open_every_hour_of_every_day_with_quiet_hours_off() {
        let w = shipped("always-open");
        assert!(!w.quiet_hours.enabled);
        for region in ["US", "US-FL", "GB", "JP"] {
            assert_eq!(w.quiet_hours.allowed_for(region), None, "{region}");
        }
        assert_eq!(w.teams.len(), 1);
        for (id, team) in &w.teams {
            let hours = &team.schedule;
            assert!(hours.hours.is_always_open(), "{id}");
            assert!(hours.holidays.is_empty(), "{id}");
            // Every quarter hour of a year, across both DST switches of the zones leads live in.
            let start = match date(2026, 1, 1).to_zoned(TimeZone::UTC) {
                Ok(z) => z.timestamp(),
                Err(e) => panic!("{e}"),
            };
            for quarter in 0..(366 * 24 * 4) {
                let at = start + jiff::SignedDuration::from_mins(15 * quarter);
                assert!(hours.is_open(at), "{id} closed at {at}");
            }
        }
    }

    #[test]
    fn the_read_only_view_serializes() {
        let json = match serde_json::to_value(shipped("default")) {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(json["dedupe_window"], "1d");
        assert_eq!(json["teams"]["team_001"]["timezone"], "America/New_York");
        assert_eq!(json["teams"]["team_001"]["hours"]["mon"][1], "13:00-17:30");
        assert_eq!(json["teams"]["team_001"]["holidays"][5], "2026-12-25");
        assert_eq!(json["route"][0]["team"], "team_enterprise");
    }
}
