//! When a lead may be called: the first instant, at or after `now`, at which the team is open
//! and the lead's own local time is inside its calling window (quiet hours). The callback step
//! persists that instant as the job's `run_at` instead of sleeping; the stagger is added by the
//! caller. Everything here is a pure function of (team schedule, lead window, now): no clock, no
//! I/O.
//!
//! # What "callable" means
//!
//! An instant `t` is callable when both hold:
//!
//! - the team is open: the team's wall clock at `t` (in `BusinessHours::timezone`) shows a date
//!   that is not a holiday and a time inside one of that weekday's windows;
//! - when quiet hours are on, the lead's wall clock at `t` (in `LeadWindow::zone`) shows a time
//!   inside `LeadWindow::allowed`, whatever the day.
//!
//! This is, on purpose, exactly [`BusinessHours::is_open`] and [`DailyWindow::contains`] applied
//! to `zone.to_datetime(t).time()`. A worker that re-checks those before dialling therefore
//! always agrees with the `run_at` computed here; if the two could disagree, a job scheduled at
//! an instant the re-check refuses would be rescheduled to that same instant forever.
//!
//! # Windows
//!
//! Windows are half-open, `[start, end)`, on the wall clock of their zone. An end of `24:00` is
//! the next local midnight, so `00:00-24:00` lasts 23 or 25 hours on DST days. Windows that
//! touch (`09:00-12:00`, `12:00-13:00`, or `22:00-24:00` then the next day's `00:00-02:00`) make
//! one callable stretch. A holiday closes the whole team-local day, which need not be the UTC
//! day.
//!
//! # DST
//!
//! Both rules follow from reading windows on the wall clock:
//!
//! - **Gap** (spring forward; wall times that never show): a window whose start falls in the gap
//!   opens at the first instant after the gap, i.e. at the transition. `02:30-04:00` on
//!   2026-03-08 in New York opens at 03:00 EDT and lasts one hour. jiff's
//!   `Disambiguation::Compatible` is *not* used: it maps 02:30 to 03:30 EDT (it reads the
//!   skipped time with the pre-gap offset), which would drop 30 minutes that `is_open` counts as
//!   open. A window whose end falls in the gap closes at the transition; a window lying wholly
//!   in the gap does not open that day.
//! - **Fold** (fall back; wall times that show twice): the repeated times count each time they
//!   show. A window opens at the *first* occurrence of its start, and a window inside the fold
//!   opens twice: `01:00-01:30` on 2026-11-01 in New York is open 01:00–01:30 EDT and again
//!   01:00–01:30 EST. A window that straddles a fold edge is split, not shortened:
//!   `00:00-01:30` is open 00:00–01:30 EDT, closed until the clock falls back, then open
//!   01:00–01:30 EST. So a fold never takes callable time away from a window; it can only add
//!   a second pass over the repeated hour.
//!
//! # Decider
//!
//! [`Opening::decided_by`] names the constraint that set the time:
//!
//! - [`Decider::Now`] when `now` itself is callable;
//! - otherwise [`Decider::TeamHours`] when the team was closed one nanosecond before the
//!   returned instant (the team opening is what made it callable; this includes the tie where
//!   team and lead window open at the same instant, and every case without quiet hours);
//! - otherwise [`Decider::LeadQuietHours`]: the team was already open and the lead's window is
//!   what opened.
//!
//! # Bounds
//!
//! The search looks [`HORIZON_DAYS`] × 24 hours ahead and gives up with
//! [`NoOpening::NoneWithin`] when team hours and lead window never meet in that time (or
//! holidays close every window). It steps from boundary to boundary (window starts and ends,
//! zone transitions), never minute by minute, so an empty answer is as cheap as a full one.
//! A team with no windows at all never gets here: it is refused when the workflow is loaded.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{Offset, TimeZone};
use jiff::{SignedDuration, Timestamp};

use crate::workflow::{BusinessHours, DailyWindow, QuietHours};

/// How far ahead [`next_opening`] and [`open_until`] look, in 24-hour days. A year and a bit:
/// long enough for any real schedule and its holidays, short enough to bound the work.
pub const HORIZON_DAYS: u32 = 400;

/// The lead's calling window in their own zone (quiet hours). Absent when quiet hours are off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadWindow {
    pub zone: TimeZone,
    pub allowed: DailyWindow,
}

impl LeadWindow {
    /// The window that applies to a lead in `zone` and `region` (`"US-FL"` or `"US"`), or
    /// `None` when the workflow's quiet hours are switched off.
    pub fn from_quiet_hours(zone: TimeZone, quiet: &QuietHours, region: &str) -> Option<Self> {
        quiet
            .allowed_for(region)
            .map(|allowed| LeadWindow { zone, allowed })
    }
}

/// What set the time of an [`Opening`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decider {
    /// Callable at `now`.
    Now,
    /// The team opening made it callable.
    TeamHours,
    /// The team was open; the lead's local calling window opening made it callable.
    LeadQuietHours,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opening {
    pub at: Timestamp,
    pub decided_by: Decider,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoOpening {
    #[error(
        "no moment in the next {horizon_days} days when the team is open and the lead may be \
         called: the team's hours and the lead's calling window never meet"
    )]
    NoneWithin { horizon_days: u32 },
}

/// The first instant `>= now` at which the team is open and, when quiet hours are on, the
/// lead's local time is inside its window. See the module documentation for the exact rules.
pub fn next_opening(
    team: &BusinessHours,
    lead: Option<&LeadWindow>,
    now: Timestamp,
) -> Result<Opening, NoOpening> {
    let none = NoOpening::NoneWithin {
        horizon_days: HORIZON_DAYS,
    };
    let limit = horizon_end(now);
    // Each constraint in turn jumps to its own next opening; when neither moves, both hold.
    // Every jump lands on a boundary of one of them, and there are finitely many before
    // `limit`, so this ends.
    let mut t = now;
    let at = loop {
        t = next_open(team, t, limit).ok_or(none)?;
        let Some(lead) = lead else { break t };
        let u = next_open(lead, t, limit).ok_or(none)?;
        if u == t {
            break t;
        }
        t = u;
    };
    let decided_by = if at == now {
        Decider::Now
    } else {
        // `at > now`, so the instant before it exists; the fallback is unreachable.
        let team_was_closed = at
            .checked_sub(SignedDuration::from_nanos(1))
            .ok()
            .is_none_or(|before| !team.open_at(before));
        if team_was_closed {
            Decider::TeamHours
        } else {
            Decider::LeadQuietHours
        }
    };
    Ok(Opening { at, decided_by })
}

/// The end of the callable stretch that contains `at`: the first instant after `at` at which
/// the team closes or the lead's window ends, whichever comes first. A call placed at `at` fits
/// when it is over before then (e.g. a window that "closes in 30 seconds" gives `at + 30s`).
///
/// `None` when the stretch does not end within [`HORIZON_DAYS`] (a team open round the clock
/// and no quiet hours). `Some(at)`, an empty stretch, when `at` is not callable, so a "does
/// the call still fit" check fails safe.
pub fn open_until(
    team: &BusinessHours,
    lead: Option<&LeadWindow>,
    at: Timestamp,
) -> Option<Timestamp> {
    // Callable is "team open and lead open", so it ends when the first of the two ends. The
    // lead's window ends within a day or never; bounding the team's search by it saves walking
    // a round-the-clock team day by day to the horizon.
    let limit = horizon_end(at);
    let lead_closes = lead.and_then(|lead| next_close(lead, at, limit));
    let team_closes = next_close(team, at, lead_closes.unwrap_or(limit));
    match (team_closes, lead_closes) {
        (Some(team), Some(lead)) => Some(team.min(lead)),
        (team, lead) => team.or(lead),
    }
}

fn horizon_end(from: Timestamp) -> Timestamp {
    from.checked_add(SignedDuration::from_hours(24 * i64::from(HORIZON_DAYS)))
        .unwrap_or(Timestamp::MAX)
}

/// A constraint read on a wall clock: a zone, and the windows of each local date.
trait WallClock {
    fn zone(&self) -> &TimeZone;

    /// The windows of `date`; empty when closed all day.
    fn windows_on(&self, date: Date) -> &[DailyWindow];

    fn open_at(&self, at: Timestamp) -> bool {
        let local = self.zone().to_datetime(at);
        self.windows_on(local.date())
            .iter()
            .any(|w| w.contains(local.time()))
    }
}

impl WallClock for BusinessHours {
    fn zone(&self) -> &TimeZone {
        &self.timezone
    }

    fn windows_on(&self, date: Date) -> &[DailyWindow] {
        if self.holidays.contains(&date) {
            &[]
        } else {
            self.hours.on(date.weekday())
        }
    }
}

impl WallClock for LeadWindow {
    fn zone(&self) -> &TimeZone {
        &self.zone
    }

    fn windows_on(&self, _: Date) -> &[DailyWindow] {
        std::slice::from_ref(&self.allowed)
    }
}

/// A stretch of constant UTC offset: the one in force at some instant, up to the zone's next
/// transition (`None`: no further transition, as in UTC). Inside it the wall clock moves in step
/// with the instant, so civil times and instants convert exactly, with no gap or fold.
struct OffsetSpan {
    offset: Offset,
    until: Option<Timestamp>,
}

impl OffsetSpan {
    fn at(zone: &TimeZone, t: Timestamp) -> OffsetSpan {
        OffsetSpan {
            offset: zone.to_offset(t),
            until: zone.following(t).next().map(|tr| tr.timestamp()),
        }
    }

    /// `civil` as an instant of this span, if it falls inside it.
    fn instant(&self, civil: DateTime) -> Option<Timestamp> {
        let t = self.offset.to_timestamp(civil).ok()?;
        self.until.is_none_or(|until| t < until).then_some(t)
    }
}

/// The first instant in `[from, limit]` at which `clock` is open.
fn next_open(clock: &impl WallClock, from: Timestamp, limit: Timestamp) -> Option<Timestamp> {
    let mut t = from;
    while t <= limit {
        if clock.open_at(t) {
            return Some(t);
        }
        // Closed at `t`: it opens next either at a window start reached by the wall clock
        // within this offset span, or, failing that, possibly at the span's end, where the
        // clock jumps (into a window, for a start that fell in a gap, or back before a start
        // that shows again in a fold). The loop re-checks there.
        let span = OffsetSpan::at(clock.zone(), t);
        let local = span.offset.to_datetime(t);
        let last = span.offset.to_datetime(limit).date();
        t = match next_start(clock, local, last).and_then(|s| span.instant(s)) {
            Some(start) => start,
            None => span.until?,
        };
    }
    None
}

/// The first window start at or after `local`, looking no further than the date `last` (plus
/// one, so a limit read with a later offset is still covered).
fn next_start(clock: &impl WallClock, local: DateTime, last: Date) -> Option<DateTime> {
    let last = last.tomorrow().unwrap_or(last);
    let mut date = local.date();
    while date <= last {
        let start = clock
            .windows_on(date)
            .iter()
            .map(|w| date.to_datetime(w.start()))
            .filter(|&s| s >= local)
            .min();
        if start.is_some() {
            return start;
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// The first instant after `at` at which `clock` is closed, or `at` when closed there; `None`
/// when it stays open past `limit`.
fn next_close(clock: &impl WallClock, at: Timestamp, limit: Timestamp) -> Option<Timestamp> {
    let mut t = at;
    while t <= limit {
        let local = clock.zone().to_datetime(t);
        let Some(window) = clock
            .windows_on(local.date())
            .iter()
            .find(|w| w.contains(local.time()))
        else {
            return Some(t);
        };
        // Open until the window's end on the wall clock, unless the clock jumps first; either
        // way the loop re-checks there, since a touching window or the landing side of a
        // jump may keep it open.
        let end = match window.end() {
            Some(end) => local.date().to_datetime(end),
            None => local.date().tomorrow().ok()?.to_datetime(Time::MIN),
        };
        let span = OffsetSpan::at(clock.zone(), t);
        t = match span.instant(end) {
            Some(end) => end,
            None => span.until?,
        };
    }
    None
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
