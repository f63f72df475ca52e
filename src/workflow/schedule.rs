//! Time declarations: a team's business hours (time zone, weekly windows, holidays) and a
//! workflow's lead-local quiet hours. Only parsing and validation live here for now; the types
//! are shaped for the next-opening computation of the callback step: windows are civil times
//! looked up per weekday, holidays are civil dates, both read in the team's time zone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use jiff::tz::TimeZone;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One window of a day, `start` inclusive, `end` exclusive. Written `"09:00-17:30"`; a window
/// may run to the end of the day with `"24:00"` as its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    start: Time,
    /// `None` is 24:00, which `civil::Time` cannot hold.
    end: Option<Time>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("malformed window {0:?}: expected \"HH:MM-HH:MM\", e.g. \"09:00-17:30\"")]
    Malformed(String),
    #[error(
        "window {0:?} does not end after it starts (a window cannot cross midnight: split it at 24:00)"
    )]
    Inverted(String),
}

impl DailyWindow {
    pub const ALL_DAY: DailyWindow = DailyWindow {
        start: Time::MIN,
        end: None,
    };

    pub fn start(&self) -> Time {
        self.start
    }

    /// The exclusive end; `None` means the window runs to midnight at the end of the day.
    pub fn end(&self) -> Option<Time> {
        self.end
    }

    pub fn contains(&self, t: Time) -> bool {
        t >= self.start && self.end.is_none_or(|end| t < end)
    }

    /// Touching windows (`09:00-12:00`, `12:00-13:00`) do not overlap.
    fn overlaps(&self, later: &DailyWindow) -> bool {
        self.end.is_none_or(|end| later.start < end)
    }
}

/// `H:MM` or `HH:MM`; `24:00` only where `allow_midnight_end` says so.
fn parse_clock(s: &str, allow_midnight_end: bool) -> Option<Option<Time>> {
    let (h, m) = s.trim().split_once(':')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(h) || h.len() > 2 || !digits(m) || m.len() != 2 {
        return None;
    }
    let (h, m): (i8, i8) = (h.parse().ok()?, m.parse().ok()?);
    if allow_midnight_end && h == 24 && m == 0 {
        return Some(None);
    }
    Time::new(h, m, 0, 0).ok().map(Some)
}

impl FromStr for DailyWindow {
    type Err = WindowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || WindowError::Malformed(s.to_owned());
        let (a, b) = s.split_once('-').ok_or_else(malformed)?;
        let start = parse_clock(a, false).flatten().ok_or_else(malformed)?;
        let end = parse_clock(b, true).ok_or_else(malformed)?;
        if end.is_some_and(|end| end <= start) {
            return Err(WindowError::Inverted(s.to_owned()));
        }
        Ok(DailyWindow { start, end })
    }
}

impl fmt::Display for DailyWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let clock = |t: Time| format!("{:02}:{:02}", t.hour(), t.minute());
        let end = self.end.map_or_else(|| "24:00".to_owned(), clock);
        write!(f, "{}-{end}", clock(self.start))
    }
}

impl<'de> Deserialize<'de> for DailyWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for DailyWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The windows of one weekday, sorted by start, none overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
struct DayWindows(Vec<DailyWindow>);

impl<'de> Deserialize<'de> for DayWindows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut windows = Vec::<DailyWindow>::deserialize(d)?;
        windows.sort_by_key(|w| w.start);
        for pair in windows.windows(2) {
            if pair[0].overlaps(&pair[1]) {
                return Err(serde::de::Error::custom(format!(
                    "windows {} and {} overlap",
                    pair[0], pair[1]
                )));
            }
        }
        Ok(DayWindows(windows))
    }
}

/// Weekly business hours. A day that is absent or empty is closed all day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WeekFile")]
#[serde(into = "WeekFile")]
pub struct WeeklyHours {
    /// Indexed by `Weekday::to_monday_zero_offset`.
    days: [Vec<DailyWindow>; 7],
}

impl WeeklyHours {
    pub fn on(&self, day: Weekday) -> &[DailyWindow] {
        // The offset is 0..=6 by construction; `get` keeps the no-panic rule anyway.
        usize::try_from(day.to_monday_zero_offset())
            .ok()
            .and_then(|i| self.days.get(i))
            .map_or(&[], Vec::as_slice)
    }

    /// Open round the clock on every day of the week.
    pub fn is_always_open(&self) -> bool {
        self.days
            .iter()
            .all(|d| d.as_slice() == [DailyWindow::ALL_DAY])
    }
}

/// The file shape of [`WeeklyHours`]: a key per day, so a misspelt day is an unknown field.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeekFile {
    #[serde(default, skip_serializing_if = "is_closed")]
    mon: DayWindows,
    #[serde(default, skip_serializing_if = "is_closed")]
    tue: DayWindows,
    #[serde(default, skip_serializing_if = "is_closed")]
    wed: DayWindows,
    #[serde(default, skip_serializing_if = "is_closed")]
    thu: DayWindows,
    #[serde(default, skip_serializing_if = "is_closed")]
    fri: DayWindows,
    #[serde(default, skip_serializing_if = "is_closed")]
    sat: DayWindows,
    #[serde(default, skip_serializing_if = "is_closed")]
    sun: DayWindows,
}

fn is_closed(d: &DayWindows) -> bool {
    d.0.is_empty()
}

impl TryFrom<WeekFile> for WeeklyHours {
    type Error = &'static str;

    fn try_from(w: WeekFile) -> Result<Self, Self::Error> {
        let days = [w.mon, w.tue, w.wed, w.thu, w.fri, w.sat, w.sun].map(|d| d.0);
        if days.iter().all(Vec::is_empty) {
            // A team that is never open would queue callbacks forever.
            return Err(
                "no business hours: give at least one window, e.g. mon = [\"09:00-17:00\"]",
            );
        }
        Ok(WeeklyHours { days })
    }
}

impl From<WeeklyHours> for WeekFile {
    fn from(h: WeeklyHours) -> Self {
        let [mon, tue, wed, thu, fri, sat, sun] = h.days.map(DayWindows);
        WeekFile {
            mon,
            tue,
            wed,
            thu,
            fri,
            sat,
            sun,
        }
    }
}

/// When a team takes calls: weekly windows and holidays, both read in the team's time zone.
#[derive(Debug, Clone, Serialize)]
pub struct BusinessHours {
    #[serde(serialize_with = "serialize_tz")]
    pub timezone: TimeZone,
    pub hours: WeeklyHours,
    /// Whole days closed, whatever `hours` says.
    pub holidays: BTreeSet<Date>,
}

impl BusinessHours {
    pub fn is_open(&self, at: Timestamp) -> bool {
        let local = self.timezone.to_datetime(at);
        !self.holidays.contains(&local.date())
            && self
                .hours
                .on(local.weekday())
                .iter()
                .any(|w| w.contains(local.time()))
    }
}

/// Only IANA names are accepted: a fixed offset or POSIX rule would silently ignore DST.
pub(super) fn deserialize_tz<'de, D: Deserializer<'de>>(d: D) -> Result<TimeZone, D::Error> {
    let name = String::deserialize(d)?;
    TimeZone::get(&name).map_err(|_| {
        serde::de::Error::custom(format!(
            "unknown time zone {name:?}: use an IANA name such as \"America/New_York\" or \"Europe/London\""
        ))
    })
}

fn serialize_tz<S: Serializer>(tz: &TimeZone, s: S) -> Result<S::Ok, S::Error> {
    tz.iana_name().serialize(s)
}

/// Holidays are written as TOML dates (`2026-12-25`) or strings (`"2026-12-25"`); both are
/// natural to type, so both are accepted.
pub(super) fn deserialize_holidays<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeSet<Date>, D::Error> {
    use serde::de::Error;
    Vec::<toml::Value>::deserialize(d)?
        .into_iter()
        .map(|v| {
            let text = match &v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => {
                    dt.to_string()
                }
                other => return Err(Error::custom(format!("expected a date, found {other}"))),
            };
            text.parse::<Date>().map_err(|_| {
                Error::custom(format!("malformed holiday {text:?}: expected YYYY-MM-DD"))
            })
        })
        .collect()
}

/// Lead-local calling hours: no call is placed outside the window that applies where the lead
/// is. US rules (TCPA: 08:00–21:00; some states stricter) are the reason for the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuietHours {
    pub enabled: bool,
    /// The window in which calls are allowed, unless a region overrides it.
    pub allowed: DailyWindow,
    /// Overrides by ISO 3166 country (`"US"`) or subdivision (`"US-FL"`).
    pub regions: BTreeMap<RegionCode, DailyWindow>,
}

impl Default for QuietHours {
    fn default() -> Self {
        QuietHours {
            enabled: true,
            allowed: DailyWindow {
                start: Time::constant(8, 0, 0, 0),
                end: Some(Time::constant(21, 0, 0, 0)),
            },
            regions: BTreeMap::new(),
        }
    }
}

impl QuietHours {
    /// The window in which a lead in `region` (`"US-FL"` or `"US"`) may be called: the
    /// subdivision's override, else its country's, else `allowed`. `None` when quiet hours are
    /// switched off.
    pub fn allowed_for(&self, region: &str) -> Option<DailyWindow> {
        if !self.enabled {
            return None;
        }
        let country = region.split_once('-').map_or(region, |(c, _)| c);
        Some(
            self.regions
                .get(region)
                .or_else(|| self.regions.get(country))
                .copied()
                .unwrap_or(self.allowed),
        )
    }
}

/// An ISO 3166-1 alpha-2 country (`"US"`), optionally with a 3166-2 subdivision (`"US-FL"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RegionCode(String);

impl RegionCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for RegionCode {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RegionCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let (country, sub) = match s.split_once('-') {
            Some((c, sub)) => (c, Some(sub)),
            None => (s.as_str(), None),
        };
        let upper = |t: &str, n: std::ops::RangeInclusive<usize>| {
            n.contains(&t.len())
                && t.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        };
        let ok = country.len() == 2
            && country.bytes().all(|b| b.is_ascii_uppercase())
            && sub.is_none_or(|sub| upper(sub, 1..=3));
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "malformed region {s:?}: expected an ISO 3166 code such as \"US\" or \"US-FL\""
            )));
        }
        Ok(RegionCode(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> DailyWindow {
        match s.parse() {
            Ok(w) => w,
            Err(e) => panic!("{s}: {e}"),
        }
    }

    #[test]
    fn windows_parse_and_print_back() {
        for s in ["09:00-12:00", "13:00-17:30", "00:00-24:00", "08:00-21:00"] {
            assert_eq!(w(s).to_string(), s);
        }
        assert_eq!(w("9:00-17:30").to_string(), "09:00-17:30");
        assert_eq!(w("00:00-24:00"), DailyWindow::ALL_DAY);
    }

    #[test]
    fn malformed_and_inverted_windows_are_refused() {
        for bad in [
            "9-5",
            "09:00",
            "09:00-",
            "09:0-10:00",
            "25:00-26:00",
            "09:60-10:00",
            "24:00-24:00",
            "x",
        ] {
            assert!(
                matches!(bad.parse::<DailyWindow>(), Err(WindowError::Malformed(_))),
                "{bad}"
            );
        }
        for bad in ["17:00-09:00", "09:00-09:00", "22:00-06:00"] {
            assert!(
                matches!(bad.parse::<DailyWindow>(), Err(WindowError::Inverted(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn window_bounds_are_start_inclusive_end_exclusive() {
        let win = w("09:00-17:30");
        assert!(win.contains(Time::constant(9, 0, 0, 0)));
        assert!(win.contains(Time::constant(17, 29, 59, 0)));
        assert!(!win.contains(Time::constant(17, 30, 0, 0)));
        assert!(!win.contains(Time::constant(8, 59, 59, 0)));
        assert!(DailyWindow::ALL_DAY.contains(Time::MAX));
    }

    #[test]
    fn weekly_hours_keep_several_windows_a_day_in_order() {
        let hours: WeeklyHours =
            match toml::from_str(r#"mon = ["13:00-17:30", "09:00-12:00", "12:00-13:00"]"#) {
                Ok(h) => h,
                Err(e) => panic!("{e}"),
            };
        let mon: Vec<String> = hours
            .on(Weekday::Monday)
            .iter()
            .map(|w| w.to_string())
            .collect();
        assert_eq!(mon, ["09:00-12:00", "12:00-13:00", "13:00-17:30"]);
        assert!(hours.on(Weekday::Sunday).is_empty());
        assert!(!hours.is_always_open());
    }

    #[test]
    fn overlapping_windows_and_empty_weeks_are_refused() {
        let err = |text: &str| match toml::from_str::<WeeklyHours>(text) {
            Ok(h) => panic!("accepted {h:?}"),
            Err(e) => e.message().to_owned(),
        };
        assert_eq!(
            err(r#"tue = ["09:00-12:00", "11:00-13:00"]"#),
            "windows 09:00-12:00 and 11:00-13:00 overlap"
        );
        assert!(err("mon = []").starts_with("no business hours"));
        assert!(err(r#"monday = ["09:00-12:00"]"#).starts_with("unknown field `monday`"));
    }

    #[test]
    fn quiet_hours_resolve_subdivision_then_country_then_default() {
        let q: QuietHours = match toml::from_str(
            r#"regions = { "US-FL" = "08:00-20:00", "CA" = "09:00-20:00" }"#,
        ) {
            Ok(q) => q,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(q.allowed_for("US-FL"), Some(w("08:00-20:00")));
        assert_eq!(q.allowed_for("US-NY"), Some(w("08:00-21:00")));
        assert_eq!(q.allowed_for("CA-ON"), Some(w("09:00-20:00")));
        assert_eq!(q.allowed_for("GB"), Some(w("08:00-21:00")));
        let off = QuietHours {
            enabled: false,
            ..q
        };
        assert_eq!(off.allowed_for("US-FL"), None);
    }

    #[test]
    fn region_codes_must_be_iso_shaped() {
        for bad in ["us-fl", "USA", "US-", "US-FLOR", "U"] {
            let text = format!(r#"regions = {{ "{bad}" = "08:00-20:00" }}"#);
            assert!(toml::from_str::<QuietHours>(&text).is_err(), "{bad}");
        }
    }
}
