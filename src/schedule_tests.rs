use std::path::Path;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

use super::*;
use crate::workflow::{BusinessHours, DailyWindow, QuietHours, WeeklyHours, Workflow};

const NY: &str = "America/New_York";
const LA: &str = "America/Los_Angeles";
const BERLIN: &str = "Europe/Berlin";
const LONDON: &str = "Europe/London";

const WEEKDAYS_9_TO_5: &str = r#"
mon = ["09:00-17:00"]
tue = ["09:00-17:00"]
wed = ["09:00-17:00"]
thu = ["09:00-17:00"]
fri = ["09:00-17:00"]
"#;

fn zone(name: &str) -> TimeZone {
    match TimeZone::get(name) {
        Ok(z) => z,
        Err(e) => panic!("{name}: {e}"),
    }
}

/// An instant written with its zone, e.g. `2026-03-06T16:59-05:00[America/New_York]`, or in
/// UTC, e.g. `2026-03-08T07:00Z`. The offset is checked against the zone, so fold instants are
/// unambiguous and typos fail.
fn at(s: &str) -> Timestamp {
    if s.ends_with('Z') {
        return match s.parse::<Timestamp>() {
            Ok(t) => t,
            Err(e) => panic!("{s}: {e}"),
        };
    }
    match s.parse::<Zoned>() {
        Ok(z) => z.timestamp(),
        Err(e) => panic!("{s}: {e}"),
    }
}

fn window(s: &str) -> DailyWindow {
    match s.parse() {
        Ok(w) => w,
        Err(e) => panic!("{s}: {e}"),
    }
}

fn team(tz: &str, hours: &str, holidays: &[&str]) -> BusinessHours {
    let hours: WeeklyHours = match toml::from_str(hours) {
        Ok(h) => h,
        Err(e) => panic!("{hours}: {e}"),
    };
    let holidays = holidays
        .iter()
        .map(|d| match d.parse::<Date>() {
            Ok(d) => d,
            Err(e) => panic!("{d}: {e}"),
        })
        .collect();
    BusinessHours {
        timezone: zone(tz),
        hours,
        holidays,
    }
}

/// The same windows (a TOML array) on all seven days.
fn every_day(windows: &str) -> String {
    ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .map(|d| format!("{d} = {windows}\n"))
        .concat()
}

fn office(tz: &str) -> BusinessHours {
    team(tz, WEEKDAYS_9_TO_5, &[])
}

fn always(tz: &str) -> BusinessHours {
    team(tz, &every_day(r#"["00:00-24:00"]"#), &[])
}

fn lead(tz: &str, allowed: &str) -> LeadWindow {
    LeadWindow {
        zone: zone(tz),
        allowed: window(allowed),
    }
}

fn opening(when: &str, decided_by: Decider) -> Result<Opening, NoOpening> {
    Ok(Opening {
        at: at(when),
        decided_by,
    })
}

fn now(when: &str) -> Result<Opening, NoOpening> {
    opening(when, Decider::Now)
}

/// Walks the callable stretches from `from`: each item is (opening, end of its stretch).
fn stretches(
    team: &BusinessHours,
    lead: Option<&LeadWindow>,
    from: &str,
    n: usize,
) -> Vec<(Timestamp, Timestamp)> {
    let mut t = at(from);
    let mut out = Vec::new();
    for _ in 0..n {
        let open = match next_opening(team, lead, t) {
            Ok(o) => o.at,
            Err(e) => panic!("{e}"),
        };
        let Some(end) = open_until(team, lead, open) else {
            panic!("stretch from {open} never ends")
        };
        out.push((open, end));
        t = end;
    }
    out
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(Timestamp, Timestamp)> {
    expected.iter().map(|(a, b)| (at(a), at(b))).collect()
}

#[test]
fn an_open_team_is_callable_now() {
    let t = office(NY);
    let wed = "2026-03-04T10:00-05:00[America/New_York]";
    assert_eq!(next_opening(&t, None, at(wed)), now(wed));
    assert_eq!(
        next_opening(&t, Some(&lead(NY, "08:00-21:00")), at(wed)),
        now(wed)
    );
    let start = "2026-03-04T09:00-05:00[America/New_York]";
    assert_eq!(next_opening(&t, None, at(start)), now(start));
}

#[test]
fn friday_one_minute_before_close_is_now_and_after_close_is_monday() {
    let t = office(NY);
    let fri_1659 = "2026-03-06T16:59-05:00[America/New_York]";
    assert_eq!(next_opening(&t, None, at(fri_1659)), now(fri_1659));
    assert_eq!(
        open_until(&t, None, at(fri_1659)),
        Some(at("2026-03-06T17:00-05:00[America/New_York]"))
    );
    // Monday is already on EDT: the wall clock, not the elapsed time, sets the opening.
    let monday = opening(
        "2026-03-09T09:00-04:00[America/New_York]",
        Decider::TeamHours,
    );
    let fri_1710 = at("2026-03-06T17:10-05:00[America/New_York]");
    assert_eq!(next_opening(&t, None, fri_1710), monday);
    assert_eq!(
        next_opening(&t, Some(&lead(NY, "08:00-21:00")), fri_1710),
        monday
    );
}

#[test]
fn a_window_closing_in_30_seconds_is_now_with_30_seconds_left() {
    let t = office(NY);
    let fri = "2026-03-06T16:59:30-05:00[America/New_York]";
    assert_eq!(next_opening(&t, None, at(fri)), now(fri));
    let left = open_until(&t, None, at(fri)).map(|end| end.duration_since(at(fri)));
    assert_eq!(left, Some(SignedDuration::from_secs(30)));

    let last_ns = "2026-03-06T16:59:59.999999999-05:00[America/New_York]";
    assert_eq!(next_opening(&t, None, at(last_ns)), now(last_ns));
    let left = open_until(&t, None, at(last_ns)).map(|end| end.duration_since(at(last_ns)));
    assert_eq!(left, Some(SignedDuration::from_nanos(1)));
}

#[test]
fn the_end_of_a_window_is_closed() {
    let t = office(NY);
    let close = at("2026-03-06T17:00-05:00[America/New_York]");
    assert_ne!(next_opening(&t, None, close).map(|o| o.at), Ok(close));
    // Not callable: an empty stretch, so a "does the call fit" check fails safe.
    assert_eq!(open_until(&t, None, close), Some(close));
}

#[test]
fn a_lunch_break_waits_for_the_afternoon() {
    let t = team(
        NY,
        &WEEKDAYS_9_TO_5.replace(r#"["09:00-17:00"]"#, r#"["13:00-17:00", "09:00-12:00"]"#),
        &[],
    );
    assert_eq!(
        next_opening(&t, None, at("2026-06-16T12:00-04:00[America/New_York]")),
        opening(
            "2026-06-16T13:00-04:00[America/New_York]",
            Decider::TeamHours
        )
    );
    let before = "2026-06-16T11:59:59-04:00[America/New_York]";
    assert_eq!(next_opening(&t, None, at(before)), now(before));
    assert_eq!(
        open_until(&t, None, at(before)),
        Some(at("2026-06-16T12:00-04:00[America/New_York]"))
    );
}

#[test]
fn touching_windows_make_one_stretch() {
    let t = team(
        "UTC",
        r#"
        tue = ["09:00-12:00", "12:00-13:00"]
        sat = ["22:00-24:00"]
        sun = ["00:00-02:00"]
        "#,
        &[],
    );
    assert_eq!(
        open_until(&t, None, at("2026-06-16T10:00Z")),
        Some(at("2026-06-16T13:00Z"))
    );
    assert_eq!(
        open_until(&t, None, at("2026-06-20T23:00Z")),
        Some(at("2026-06-21T02:00Z"))
    );
}

#[test]
fn a_holiday_friday_then_the_weekend_waits_for_monday() {
    let t = team(NY, WEEKDAYS_9_TO_5, &["2026-07-03"]);
    let monday = opening(
        "2026-07-06T09:00-04:00[America/New_York]",
        Decider::TeamHours,
    );
    for from in [
        "2026-07-02T17:30-04:00[America/New_York]",
        "2026-07-03T10:00-04:00[America/New_York]",
        "2026-07-04T12:00-04:00[America/New_York]",
    ] {
        assert_eq!(next_opening(&t, None, at(from)), monday, "from {from}");
    }
    let thursday = "2026-07-02T16:00-04:00[America/New_York]";
    assert_eq!(
        open_until(&t, None, at(thursday)),
        Some(at("2026-07-02T17:00-04:00[America/New_York]"))
    );
}

#[test]
fn a_holiday_closes_the_team_local_day_not_the_utc_day() {
    let t = team(NY, &every_day(r#"["00:00-24:00"]"#), &["2026-12-25"]);
    // 03:00Z on the 25th is still the 24th in New York.
    assert_eq!(
        next_opening(&t, None, at("2026-12-25T03:00Z")),
        now("2026-12-25T03:00Z")
    );
    assert_eq!(
        open_until(&t, None, at("2026-12-25T03:00Z")),
        Some(at("2026-12-25T00:00-05:00[America/New_York]"))
    );
    assert_eq!(
        next_opening(&t, None, at("2026-12-25T05:00Z")),
        opening(
            "2026-12-26T00:00-05:00[America/New_York]",
            Decider::TeamHours
        )
    );
}

#[test]
fn jiff_compatible_would_put_a_gap_start_30_minutes_late() {
    // Why the module does not resolve window starts with `Disambiguation::Compatible`: it
    // reads 02:30 with the pre-gap offset, landing at 03:30 EDT, while `is_open` (wall-clock
    // membership) is already open at 03:00 EDT for a 02:30 start.
    let compatible = match Date::constant(2026, 3, 8)
        .at(2, 30, 0, 0)
        .to_zoned(zone(NY))
    {
        Ok(z) => z.timestamp(),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(compatible, at("2026-03-08T03:30-04:00[America/New_York]"));
    let t = team(NY, r#"sun = ["02:30-04:00"]"#, &[]);
    assert!(t.is_open(at("2026-03-08T03:00-04:00[America/New_York]")));
}

#[test]
fn us_spring_forward_a_window_starting_in_the_gap_opens_when_the_gap_ends() {
    let t = team(NY, r#"sun = ["02:30-04:00"]"#, &[]);
    assert_eq!(
        stretches(&t, None, "2026-03-08T00:00-05:00[America/New_York]", 2),
        pairs(&[
            (
                "2026-03-08T03:00-04:00[America/New_York]",
                "2026-03-08T04:00-04:00[America/New_York]"
            ),
            (
                "2026-03-15T02:30-04:00[America/New_York]",
                "2026-03-15T04:00-04:00[America/New_York]"
            ),
        ])
    );
    assert_eq!(
        next_opening(&t, None, at("2026-03-08T00:00-05:00[America/New_York]"))
            .map(|o| o.decided_by),
        Ok(Decider::TeamHours)
    );
}

#[test]
fn us_spring_forward_a_window_ending_in_the_gap_closes_at_the_jump() {
    let t = team(NY, r#"sun = ["01:00-02:30"]"#, &[]);
    assert_eq!(
        stretches(&t, None, "2026-03-08T00:00-05:00[America/New_York]", 2),
        pairs(&[
            (
                "2026-03-08T01:00-05:00[America/New_York]",
                "2026-03-08T03:00-04:00[America/New_York]"
            ),
            (
                "2026-03-15T01:00-04:00[America/New_York]",
                "2026-03-15T02:30-04:00[America/New_York]"
            ),
        ])
    );
}

#[test]
fn us_spring_forward_a_window_wholly_in_the_gap_does_not_open_that_day() {
    let t = team(NY, r#"sun = ["02:00-03:00"]"#, &[]);
    assert_eq!(
        next_opening(&t, None, at("2026-03-08T00:00-05:00[America/New_York]")),
        opening(
            "2026-03-15T02:00-04:00[America/New_York]",
            Decider::TeamHours
        )
    );
}

#[test]
fn us_fall_back_a_window_inside_the_fold_opens_twice() {
    let t = team(NY, r#"sun = ["01:00-01:30"]"#, &[]);
    assert_eq!(
        stretches(&t, None, "2026-11-01T00:00-04:00[America/New_York]", 3),
        pairs(&[
            (
                "2026-11-01T01:00-04:00[America/New_York]",
                "2026-11-01T01:30-04:00[America/New_York]"
            ),
            (
                "2026-11-01T01:00-05:00[America/New_York]",
                "2026-11-01T01:30-05:00[America/New_York]"
            ),
            (
                "2026-11-08T01:00-05:00[America/New_York]",
                "2026-11-08T01:30-05:00[America/New_York]"
            ),
        ])
    );
    assert_eq!(
        next_opening(&t, None, at("2026-11-01T01:30-04:00[America/New_York]")),
        opening(
            "2026-11-01T01:00-05:00[America/New_York]",
            Decider::TeamHours
        )
    );
}

#[test]
fn us_fall_back_windows_across_a_fold_edge_are_split_not_shortened() {
    let ends_in_fold = team(NY, r#"sun = ["00:00-01:30"]"#, &[]);
    assert_eq!(
        stretches(
            &ends_in_fold,
            None,
            "2026-11-01T00:00-04:00[America/New_York]",
            2
        ),
        pairs(&[
            (
                "2026-11-01T00:00-04:00[America/New_York]",
                "2026-11-01T01:30-04:00[America/New_York]"
            ),
            (
                "2026-11-01T01:00-05:00[America/New_York]",
                "2026-11-01T01:30-05:00[America/New_York]"
            ),
        ])
    );
    let starts_in_fold = team(NY, r#"sun = ["01:30-03:00"]"#, &[]);
    assert_eq!(
        stretches(
            &starts_in_fold,
            None,
            "2026-11-01T00:00-04:00[America/New_York]",
            2
        ),
        pairs(&[
            (
                "2026-11-01T01:30-04:00[America/New_York]",
                "2026-11-01T01:00-05:00[America/New_York]"
            ),
            (
                "2026-11-01T01:30-05:00[America/New_York]",
                "2026-11-01T03:00-05:00[America/New_York]"
            ),
        ])
    );
    // Covering the whole fold, a window is one stretch an hour longer than written.
    let covers_fold = team(NY, r#"sun = ["00:30-02:30"]"#, &[]);
    let from = at("2026-11-01T00:30-04:00[America/New_York]");
    let end = open_until(&covers_fold, None, from);
    assert_eq!(end, Some(at("2026-11-01T02:30-05:00[America/New_York]")));
    assert_eq!(
        end.map(|e| e.duration_since(from)),
        Some(SignedDuration::from_hours(3))
    );
}

#[test]
fn an_end_of_24_00_is_the_next_local_midnight_on_dst_days() {
    let t = team(NY, r#"sun = ["00:00-24:00"]"#, &[]);
    let length = |from: &str| {
        let from = at(from);
        open_until(&t, None, from).map(|end| end.duration_since(from))
    };
    assert_eq!(
        length("2026-03-08T00:00-05:00[America/New_York]"),
        Some(SignedDuration::from_hours(23))
    );
    assert_eq!(
        length("2026-11-01T00:00-04:00[America/New_York]"),
        Some(SignedDuration::from_hours(25))
    );
    assert_eq!(
        length("2026-06-14T00:00-04:00[America/New_York]"),
        Some(SignedDuration::from_hours(24))
    );
}

#[test]
fn eu_spring_forward_in_berlin() {
    // Berlin skips 02:00-03:00 on 2026-03-29 (01:00Z).
    let t = team(BERLIN, r#"sun = ["02:30-05:00"]"#, &[]);
    assert_eq!(
        stretches(&t, None, "2026-03-29T00:00+01:00[Europe/Berlin]", 1),
        pairs(&[(
            "2026-03-29T03:00+02:00[Europe/Berlin]",
            "2026-03-29T05:00+02:00[Europe/Berlin]"
        )])
    );
    // The same rule on the lead's side, which then decides the time.
    let l = lead(BERLIN, "02:30-21:00");
    assert_eq!(
        next_opening(&always("UTC"), Some(&l), at("2026-03-29T00:00Z")),
        opening("2026-03-29T01:00Z", Decider::LeadQuietHours)
    );
}

#[test]
fn eu_fall_back_in_berlin() {
    // Berlin shows 02:00-03:00 twice on 2026-10-25: CEST from 00:00Z, CET from 01:00Z.
    let t = team(BERLIN, r#"sun = ["02:00-02:30"]"#, &[]);
    assert_eq!(
        stretches(&t, None, "2026-10-25T00:00+02:00[Europe/Berlin]", 2),
        pairs(&[
            (
                "2026-10-25T02:00+02:00[Europe/Berlin]",
                "2026-10-25T02:30+02:00[Europe/Berlin]"
            ),
            (
                "2026-10-25T02:00+01:00[Europe/Berlin]",
                "2026-10-25T02:30+01:00[Europe/Berlin]"
            ),
        ])
    );
    let l = lead(BERLIN, "02:30-03:30");
    let utc = always("UTC");
    assert_eq!(
        stretches(&utc, Some(&l), "2026-10-24T22:00Z", 2),
        pairs(&[
            ("2026-10-25T00:30Z", "2026-10-25T01:00Z"),
            ("2026-10-25T01:30Z", "2026-10-25T02:30Z"),
        ])
    );
    assert_eq!(
        next_opening(&utc, Some(&l), at("2026-10-25T01:00Z")),
        opening("2026-10-25T01:30Z", Decider::LeadQuietHours)
    );
}

#[test]
fn a_london_lead_before_8_waits_for_8_london() {
    let Some(l) = LeadWindow::from_quiet_hours(zone(LONDON), &QuietHours::default(), "GB") else {
        panic!("quiet hours are on by default")
    };
    assert_eq!(l.allowed, window("08:00-21:00"));
    let t = always("UTC");
    assert_eq!(
        next_opening(&t, Some(&l), at("2026-06-15T07:30+01:00[Europe/London]")),
        opening(
            "2026-06-15T08:00+01:00[Europe/London]",
            Decider::LeadQuietHours
        )
    );
    assert_eq!(
        open_until(&t, Some(&l), at("2026-06-15T08:00+01:00[Europe/London]")),
        Some(at("2026-06-15T21:00+01:00[Europe/London]"))
    );
    // After 21:00 the next morning, in winter time too.
    assert_eq!(
        next_opening(&t, Some(&l), at("2026-12-15T21:00Z")),
        opening("2026-12-16T08:00Z", Decider::LeadQuietHours)
    );
}

#[test]
fn a_los_angeles_lead_and_a_new_york_team_must_both_hold() {
    let t = office(NY);
    let l = lead(LA, "08:00-21:00");
    let eleven_ny = opening(
        "2026-06-15T11:00-04:00[America/New_York]",
        Decider::LeadQuietHours,
    );
    for from in [
        "2026-06-15T07:00-04:00[America/New_York]",
        "2026-06-15T09:00-04:00[America/New_York]",
        "2026-06-15T10:59:59-04:00[America/New_York]",
    ] {
        assert_eq!(
            next_opening(&t, Some(&l), at(from)),
            eleven_ny,
            "from {from}"
        );
    }
    assert_eq!(
        at("2026-06-15T11:00-04:00[America/New_York]"),
        at("2026-06-15T08:00-07:00[America/Los_Angeles]")
    );
    // The team closes before the lead's window does.
    assert_eq!(
        open_until(&t, Some(&l), at("2026-06-15T11:00-04:00[America/New_York]")),
        Some(at("2026-06-15T17:00-04:00[America/New_York]"))
    );
}

#[test]
fn a_new_york_lead_and_a_los_angeles_team() {
    let l = lead(NY, "08:00-21:00");
    let t = office(LA);
    assert_eq!(
        next_opening(&t, Some(&l), at("2026-06-15T08:00-04:00[America/New_York]")),
        opening(
            "2026-06-15T12:00-04:00[America/New_York]",
            Decider::TeamHours
        )
    );
    // Here the lead's window ends first.
    let late = team(LA, r#"mon = ["09:00-19:00"]"#, &[]);
    let five_la = "2026-06-15T17:00-07:00[America/Los_Angeles]";
    assert_eq!(next_opening(&late, Some(&l), at(five_la)), now(five_la));
    assert_eq!(
        open_until(&late, Some(&l), at(five_la)),
        Some(at("2026-06-15T21:00-04:00[America/New_York]"))
    );
}

#[test]
fn team_and_lead_opening_together_is_decided_by_team_hours() {
    let t = office(NY);
    let l = lead(NY, "09:00-21:00");
    assert_eq!(
        next_opening(&t, Some(&l), at("2026-06-15T08:00-04:00[America/New_York]")),
        opening(
            "2026-06-15T09:00-04:00[America/New_York]",
            Decider::TeamHours
        )
    );
}

#[test]
fn with_quiet_hours_off_only_team_hours_count() {
    let off = QuietHours {
        enabled: false,
        ..QuietHours::default()
    };
    assert_eq!(LeadWindow::from_quiet_hours(zone(LONDON), &off, "GB"), None);
    let t = always("UTC");
    let three_am = "2026-06-15T03:00+01:00[Europe/London]";
    assert_eq!(next_opening(&t, None, at(three_am)), now(three_am));
    assert_eq!(open_until(&t, None, at(three_am)), None);
    assert_eq!(
        next_opening(
            &office(NY),
            None,
            at("2026-06-15T05:00-04:00[America/New_York]")
        ),
        opening(
            "2026-06-15T09:00-04:00[America/New_York]",
            Decider::TeamHours
        )
    );
}

#[test]
fn open_until_never_ends_only_without_any_closing() {
    let t = always(NY);
    assert_eq!(open_until(&t, None, at("2026-03-08T01:59Z")), None);
    assert_eq!(
        open_until(
            &t,
            Some(&lead("UTC", "00:00-24:00")),
            at("2026-11-01T05:30Z")
        ),
        None
    );
    assert_eq!(
        open_until(
            &t,
            Some(&lead("UTC", "00:00-12:00")),
            at("2026-11-01T05:30Z")
        ),
        Some(at("2026-11-01T12:00Z"))
    );
    // Open every day but Sunday: the stretch runs across the weekdays' midnights.
    let no_sundays = team(
        "UTC",
        &every_day(r#"["00:00-24:00"]"#).replace(r#"sun = ["00:00-24:00"]"#, ""),
        &[],
    );
    assert_eq!(
        open_until(&no_sundays, None, at("2026-06-15T12:00Z")),
        Some(at("2026-06-21T00:00Z"))
    );
}

#[test]
fn a_team_and_lead_that_never_meet_are_an_error() {
    let t = team("UTC", &every_day(r#"["01:00-02:00"]"#), &[]);
    let l = lead("UTC", "08:00-21:00");
    let err = next_opening(&t, Some(&l), at("2026-06-15T00:00Z"));
    assert_eq!(err, Err(NoOpening::NoneWithin { horizon_days: 400 }));
    if let Err(e) = err {
        assert!(
            e.to_string().starts_with("no moment in the next 400 days"),
            "{e}"
        );
    }
    assert_eq!(
        open_until(&t, Some(&l), at("2026-06-15T01:30Z")),
        Some(at("2026-06-15T01:30Z"))
    );
}

#[test]
fn holidays_on_every_open_day_are_an_error_not_a_hang() {
    let mondays = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let days = i64::try_from(i * 7).unwrap_or(i64::MAX);
                match Date::constant(2026, 1, 5).checked_add(jiff::Span::new().days(days)) {
                    Ok(d) => d.to_string(),
                    Err(e) => panic!("{e}"),
                }
            })
            .collect()
    };
    let closed_all_year = mondays(60);
    let refs: Vec<&str> = closed_all_year.iter().map(String::as_str).collect();
    let t = team("UTC", r#"mon = ["09:00-17:00"]"#, &refs);
    assert_eq!(
        next_opening(&t, None, at("2026-01-01T00:00Z")),
        Err(NoOpening::NoneWithin { horizon_days: 400 })
    );
    // Within the horizon the first free Monday is found.
    let fifty = mondays(50);
    let refs: Vec<&str> = fifty.iter().map(String::as_str).collect();
    let t = team("UTC", r#"mon = ["09:00-17:00"]"#, &refs);
    assert_eq!(
        next_opening(&t, None, at("2026-01-01T00:00Z")),
        opening("2026-12-21T09:00Z", Decider::TeamHours)
    );
}

#[test]
fn a_team_with_no_windows_is_refused_at_load() {
    // The load error and its line are tested in workflow::load; `next_opening` relies on it
    // (and still ends with `NoOpening` for a schedule it is given that never opens).
    let text = r#"name = "w"
default_team = "t1"

[teams.t1]
timezone = "UTC"
caller_id = "+12025550100"
agents = ["+12025550101"]
hours = { mon = [] }
"#;
    match Workflow::parse(Path::new("w.toml"), text) {
        Ok(w) => panic!("accepted {w:?}"),
        Err(e) => assert!(e.to_string().contains("no business hours"), "{e}"),
    }
}

#[test]
fn deciders_serialize_in_snake_case() {
    let json = |d: Decider| serde_json::to_string(&d).unwrap_or_default();
    assert_eq!(json(Decider::Now), r#""now""#);
    assert_eq!(json(Decider::TeamHours), r#""team_hours""#);
    assert_eq!(json(Decider::LeadQuietHours), r#""lead_quiet_hours""#);
}

/// The oracle: the existing predicates, read minute by minute.
fn callable(team: &BusinessHours, lead: Option<&LeadWindow>, t: Timestamp) -> bool {
    team.is_open(t) && lead.is_none_or(|l| l.allowed.contains(l.zone.to_datetime(t).time()))
}

struct Case {
    name: &'static str,
    team: BusinessHours,
    lead: Option<LeadWindow>,
}

fn sweep_cases() -> Vec<Case> {
    vec![
        Case {
            name: "new york office, los angeles lead",
            team: office(NY),
            lead: Some(lead(LA, "08:00-21:00")),
        },
        Case {
            name: "new york night shift through gap and fold",
            team: team(
                NY,
                &every_day(r#"["00:00-01:30", "01:45-02:15", "02:30-04:00", "23:00-24:00"]"#),
                &[],
            ),
            lead: None,
        },
        Case {
            name: "berlin night shift, new york lead",
            team: team(
                BERLIN,
                &every_day(r#"["01:00-02:30", "02:45-03:15", "22:00-24:00"]"#),
                &[],
            ),
            lead: Some(lead(NY, "08:00-21:00")),
        },
        Case {
            name: "round the clock, london lead",
            team: always("UTC"),
            lead: Some(lead(LONDON, "08:00-21:00")),
        },
        Case {
            name: "round the clock, berlin lead window on the switch hours",
            team: always("UTC"),
            lead: Some(lead(BERLIN, "02:30-03:30")),
        },
        Case {
            name: "new york office with holidays, london lead",
            team: team(
                NY,
                WEEKDAYS_9_TO_5,
                &[
                    "2026-03-06",
                    "2026-03-27",
                    "2026-10-23",
                    "2026-10-30",
                    "2026-11-02",
                ],
            ),
            lead: Some(lead(LONDON, "08:00-21:00")),
        },
        Case {
            name: "new york weekend, 24:00 ends on dst sundays",
            team: team(
                NY,
                r#"
                sat = ["12:00-24:00"]
                sun = ["00:00-24:00"]
                mon = ["00:00-06:00"]
                "#,
                &[],
            ),
            lead: None,
        },
    ]
}

/// Every 7th minute over the two weeks around each 2026 switch in New York and Berlin, plus
/// the same minutes shifted by 29 s: `next_opening` must equal the first callable minute the
/// oracle finds (so it is >= now, callable, and no earlier callable minute exists), its
/// decider must match the oracle's team state just before, and `open_until` must equal the
/// first closed minute after it. All zones here have whole-hour offsets and all windows
/// whole-minute bounds, so callability is constant within each minute and minutes suffice.
#[test]
fn sweep_around_dst_switches_matches_a_minute_by_minute_oracle() {
    const SWEEP: usize = 14 * 1440;
    // Room after the sweep for the longest wait plus the longest stretch of any case.
    const TOTAL: usize = SWEEP + 10 * 1440;
    let switches = [
        "2026-03-08T07:00Z",
        "2026-11-01T06:00Z",
        "2026-03-29T01:00Z",
        "2026-10-25T01:00Z",
    ];
    let mut checked = 0usize;
    for case in sweep_cases() {
        let lead = case.lead.as_ref();
        for switch in switches {
            let start = at(switch) - SignedDuration::from_hours(7 * 24);
            let minute =
                |m: usize| start + SignedDuration::from_mins(i64::try_from(m).unwrap_or(i64::MAX));
            let open: Vec<bool> = (0..TOTAL)
                .map(|m| callable(&case.team, lead, minute(m)))
                .collect();
            // first_open[m] / first_closed[m]: the first minute >= m that is callable / not.
            let mut first_open = vec![None; TOTAL + 1];
            let mut first_closed = vec![None; TOTAL + 1];
            for m in (0..TOTAL).rev() {
                first_open[m] = if open[m] { Some(m) } else { first_open[m + 1] };
                first_closed[m] = if open[m] {
                    first_closed[m + 1]
                } else {
                    Some(m)
                };
            }
            for m in (0..SWEEP).step_by(7) {
                for shift in [SignedDuration::ZERO, SignedDuration::from_secs(29)] {
                    let now = minute(m) + shift;
                    let ctx = format!("{}: now {now} (switch {switch})", case.name);
                    let Some(j) = first_open[m] else {
                        panic!("{ctx}: the oracle finds no opening in range")
                    };
                    let (want_at, want_decider) = if j == m {
                        (now, Decider::Now)
                    } else if !case.team.is_open(minute(j - 1)) {
                        (minute(j), Decider::TeamHours)
                    } else {
                        (minute(j), Decider::LeadQuietHours)
                    };
                    let got = next_opening(&case.team, lead, now);
                    assert_eq!(
                        got,
                        Ok(Opening {
                            at: want_at,
                            decided_by: want_decider
                        }),
                        "{ctx}"
                    );
                    let Some(k) = first_closed[j] else {
                        panic!("{ctx}: the oracle finds no end in range")
                    };
                    assert_eq!(
                        open_until(&case.team, lead, want_at),
                        Some(minute(k)),
                        "{ctx}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 7 * 4 * SWEEP.div_ceil(7) * 2);
}
