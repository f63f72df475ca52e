//! A team: who takes the call (agents, ring order, caller ID), when (business hours) and how
//! hard the callback tries (attempt policy). The callback step reads all of it; the routing step
//! only needs the team's id.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::duration;
use super::schedule::{self, BusinessHours, WeeklyHours};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "TeamFile")]
pub struct Team {
    /// The number the lead sees: a provider number or a verified caller ID.
    pub caller_id: E164,
    /// In ring order when `ring` is `sequence`.
    pub agents: Vec<E164>,
    pub ring: Ring,
    /// How long each agent leg rings before it counts as unanswered.
    #[serde(serialize_with = "duration::serialize")]
    pub ring_timeout: Duration,
    /// Said to the lead when they answer, before the agents are dialled.
    pub whisper: Option<String>,
    #[serde(flatten)]
    pub schedule: BusinessHours,
    pub callback: CallbackPolicy,
}

/// The file shape of a team: flat, as people write it; [`Team`] groups the schedule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamFile {
    #[serde(deserialize_with = "schedule::deserialize_tz")]
    timezone: jiff::tz::TimeZone,
    hours: WeeklyHours,
    #[serde(default, deserialize_with = "schedule::deserialize_holidays")]
    holidays: std::collections::BTreeSet<jiff::civil::Date>,
    caller_id: E164,
    #[serde(deserialize_with = "deserialize_agents")]
    agents: Vec<E164>,
    #[serde(default)]
    ring: Ring,
    #[serde(
        default = "default_ring_timeout",
        deserialize_with = "deserialize_ring_timeout"
    )]
    ring_timeout: Duration,
    #[serde(default, deserialize_with = "deserialize_whisper")]
    whisper: Option<String>,
    #[serde(default)]
    callback: CallbackPolicy,
}

/// A whisper is read out by text-to-speech while the lead waits: keep it short.
fn deserialize_whisper<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    let text = text.trim();
    match text.chars().count() {
        0 => Ok(None),
        1..=300 => Ok(Some(text.to_owned())),
        _ => Err(serde::de::Error::custom(
            "whisper must be at most 300 characters",
        )),
    }
}

impl From<TeamFile> for Team {
    fn from(f: TeamFile) -> Self {
        Team {
            caller_id: f.caller_id,
            agents: f.agents,
            ring: f.ring,
            ring_timeout: f.ring_timeout,
            whisper: f.whisper,
            schedule: BusinessHours {
                timezone: f.timezone,
                hours: f.hours,
                holidays: f.holidays,
            },
            callback: f.callback,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ring {
    /// Every agent at once; the first to answer takes the lead.
    #[default]
    Simultaneous,
    /// One agent after another, each for `ring_timeout`.
    Sequence,
}

fn default_ring_timeout() -> Duration {
    Duration::from_secs(20)
}

/// Twilio caps a call's `Timeout` at 600 s; zero would never ring.
fn deserialize_ring_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let t = duration::deserialize(d)?;
    if t < Duration::from_secs(1) || t > Duration::from_secs(600) {
        return Err(serde::de::Error::custom(
            "ring_timeout must be between \"1s\" and \"10m\"",
        ));
    }
    Ok(t)
}

/// Providers ring at most this many numbers at once (Twilio's `<Dial>` limit).
pub const MAX_AGENTS: usize = 10;

fn deserialize_agents<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<E164>, D::Error> {
    use serde::de::Error;
    let agents = Vec::<E164>::deserialize(d)?;
    if agents.is_empty() {
        return Err(Error::custom("a team needs at least one agent"));
    }
    if agents.len() > MAX_AGENTS {
        return Err(Error::custom(format!(
            "a team has at most {MAX_AGENTS} agents"
        )));
    }
    for (i, a) in agents.iter().enumerate() {
        if agents[..i].contains(a) {
            return Err(Error::custom(format!("agent {a} is listed twice")));
        }
    }
    Ok(agents)
}

/// A phone number in E.164 form (`+` and 7 to 15 digits, no leading 0). Only the shape is checked here:
/// caller IDs and agent lines are the operator's own numbers, not leads' input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct E164(String);

impl E164 {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let digits = s.strip_prefix('+').unwrap_or("");
        let ok = (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "{s:?} is not an E.164 number: write it as + and the digits, e.g. \"+12125550100\""
            )));
        }
        Ok(E164(s))
    }
}

/// How persistently a lead is called back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackPolicy {
    /// Calls placed to one lead in all, the first included.
    #[serde(default = "three", deserialize_with = "at_least_one")]
    pub max_attempts: u32,
    /// Calls to one lead in any 24 hours (Florida and Oklahoma cap it at 3).
    #[serde(default = "three", deserialize_with = "at_least_one")]
    pub daily_cap: u32,
    /// Spacing between callbacks queued for the same opening, so agents are not flooded.
    #[serde(
        default = "default_stagger",
        deserialize_with = "duration::deserialize",
        serialize_with = "duration::serialize"
    )]
    pub stagger: Duration,
    #[serde(default)]
    pub delays: OutcomeDelays,
    /// When an answering machine picks up: `false` (the default) counts it as no-answer and
    /// tries again; `true` lets the call go on to voicemail and counts it as called.
    #[serde(default)]
    pub leave_voicemail: bool,
}

impl Default for CallbackPolicy {
    fn default() -> Self {
        CallbackPolicy {
            max_attempts: 3,
            daily_cap: 3,
            stagger: default_stagger(),
            delays: OutcomeDelays::default(),
            leave_voicemail: false,
        }
    }
}

fn three() -> u32 {
    3
}

fn default_stagger() -> Duration {
    Duration::from_secs(15)
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        0 => Err(serde::de::Error::custom("must be at least 1")),
        n => Ok(n),
    }
}

/// The wait before calling again, per outcome of the previous call. The n-th retry after an
/// outcome waits the n-th delay of its list; the last delay repeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeDelays {
    #[serde(
        default = "default_busy",
        deserialize_with = "delay_list",
        serialize_with = "duration::list::serialize"
    )]
    pub busy: Vec<Duration>,
    /// Also used when a machine answers.
    #[serde(
        default = "default_no_answer",
        deserialize_with = "delay_list",
        serialize_with = "duration::list::serialize"
    )]
    pub no_answer: Vec<Duration>,
    /// After a call whose fate never became known (most likely it never rang): short.
    #[serde(
        default = "default_lost",
        deserialize_with = "delay_list",
        serialize_with = "duration::list::serialize"
    )]
    pub lost: Vec<Duration>,
}

impl Default for OutcomeDelays {
    fn default() -> Self {
        OutcomeDelays {
            busy: default_busy(),
            no_answer: default_no_answer(),
            lost: default_lost(),
        }
    }
}

impl OutcomeDelays {
    /// `earlier` counts the busy outcomes before this one (0 for the first).
    pub fn after_busy(&self, earlier: usize) -> Duration {
        nth_or_last(&self.busy, earlier)
    }

    /// `earlier` counts the no-answer outcomes before this one (0 for the first).
    pub fn after_no_answer(&self, earlier: usize) -> Duration {
        nth_or_last(&self.no_answer, earlier)
    }

    pub fn after_lost(&self, earlier: usize) -> Duration {
        nth_or_last(&self.lost, earlier)
    }
}

fn nth_or_last(list: &[Duration], n: usize) -> Duration {
    // Lists are non-empty by validation; the default is never reached.
    list.get(n).or(list.last()).copied().unwrap_or_default()
}

fn default_busy() -> Vec<Duration> {
    vec![Duration::from_secs(10 * 60)]
}

fn default_lost() -> Vec<Duration> {
    vec![Duration::from_secs(60)]
}

fn default_no_answer() -> Vec<Duration> {
    vec![Duration::from_secs(30 * 60), Duration::from_secs(2 * 3600)]
}

fn delay_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let list = duration::list::deserialize(d)?;
    if list.is_empty() || list.iter().any(Duration::is_zero) {
        return Err(serde::de::Error::custom(
            "give at least one delay, none of them \"0\"",
        ));
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEAM: &str = r#"
        timezone = "Europe/London"
        caller_id = "+442079460100"
        agents = ["+442079460101", "+442079460102"]
        hours = { mon = ["09:00-17:00"] }
    "#;

    fn team(text: &str) -> Result<Team, String> {
        toml::from_str(text).map_err(|e| e.message().to_owned())
    }

    #[test]
    fn defaults_fill_everything_but_the_essentials() {
        let t = match team(TEAM) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(t.ring, Ring::Simultaneous);
        assert_eq!(t.ring_timeout, Duration::from_secs(20));
        assert_eq!(t.callback, CallbackPolicy::default());
        assert_eq!(t.callback.max_attempts, 3);
        assert_eq!(t.callback.daily_cap, 3);
        assert_eq!(t.callback.stagger, Duration::from_secs(15));
        assert!(t.schedule.holidays.is_empty());
        assert_eq!(t.schedule.timezone.iana_name(), Some("Europe/London"));
    }

    #[test]
    fn delays_follow_the_list_then_repeat_the_last() {
        let d = OutcomeDelays::default();
        assert_eq!(d.after_busy(0), Duration::from_secs(600));
        assert_eq!(d.after_busy(5), Duration::from_secs(600));
        assert_eq!(d.after_no_answer(0), Duration::from_secs(1800));
        assert_eq!(d.after_no_answer(1), Duration::from_secs(7200));
        assert_eq!(d.after_no_answer(9), Duration::from_secs(7200));
    }

    #[test]
    fn bad_team_settings_are_refused_with_a_reason() {
        let with = |extra: &str| team(&format!("{TEAM}\n{extra}"));
        let cases = [
            ("ring = \"random\"", "unknown variant `random`"),
            ("ring_timeout = \"0\"", "ring_timeout must be between"),
            ("ring_timeout = \"11m\"", "ring_timeout must be between"),
            (
                "holidays = [\"25/12/2026\"]",
                "malformed holiday \"25/12/2026\"",
            ),
            ("holidays = [2026-12-25T10:00:00]", "expected a date"),
            ("callback = { max_attempts = 0 }", "must be at least 1"),
            (
                "callback = { delays = { busy = [] } }",
                "give at least one delay",
            ),
            (
                "callback = { delays = { congestion = [\"1h\"] } }",
                "unknown field `congestion`",
            ),
            (
                "callback = { stagger = \"15\" }",
                "malformed duration \"15\"",
            ),
        ];
        for (extra, want) in cases {
            match with(extra) {
                Ok(_) => panic!("accepted {extra}"),
                Err(e) => assert!(e.contains(want), "{extra}: {e}"),
            }
        }
    }

    #[test]
    fn holidays_accept_toml_dates_and_strings() {
        let t = match team(&format!("{TEAM}\nholidays = [2026-12-25, \"2026-12-26\"]")) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        };
        let days: Vec<String> = t.schedule.holidays.iter().map(|d| d.to_string()).collect();
        assert_eq!(days, ["2026-12-25", "2026-12-26"]);
    }

    #[test]
    fn phone_numbers_must_be_e164() {
        for bad in [
            "2125550100",
            "+0125550100",
            "+1 212 555 0100",
            "+12",
            "+1234567890123456",
        ] {
            let text = TEAM.replace("+442079460100", bad);
            assert!(team(&text).is_err(), "{bad}");
        }
        let dup = TEAM.replace("+442079460102", "+442079460101");
        assert_eq!(
            team(&dup).err().as_deref(),
            Some("agent +442079460101 is listed twice")
        );
    }
}
