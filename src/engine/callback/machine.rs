//! A call attempt's life, as one table of transitions (after Temporal's state machines):
//! [`next`] takes what the attempt's row says, an event and the time, and returns what to
//! write and what to do next. No I/O and no clock of its own: the step does the writing, the
//! waiting and the asking.
//!
//! | state | event | writes | then |
//! | --- | --- | --- | --- |
//! | `placing` | answer: the provider took the call | its call id, `placed` | a status; until then wait `reconcile_after` (decide now if a status already settled it) |
//! | `placing` | answer: provider down (no connection, 5xx, 429) | `retry`, one more place error | wait the provider backoff |
//! | `placing` | answer: provider down, its tries spent | `done`, `failed` | end the run `failed` |
//! | `placing` | answer: refused (4xx) | `done`, `unreachable` or `refused` | decide by the policy |
//! | `placing` | answer: none after sending (timeout, broken exchange) | `unknown` | wait the unknown window |
//! | any | answer, the step already settled by a later delivery | the call id, if any | nothing |
//! | `done` | answer: an error | — | decide by the policy (a status settled it first) |
//! | `retry` | run | `placing` | place the call again (not a new attempt) |
//! | `placing`, `unknown` | run, inside the unknown window | — | wait for its end |
//! | `placing`, `unknown` | run, before the next lookup is due | — | wait for it |
//! | `placing`, `unknown` | run, window over | — | ask the provider's call list ([`super::lookup`]) |
//! | `placing`, `unknown` | listed: the attempt's call | its call id, `placed`, its status | decide if final, else wait `reconcile_after` |
//! | `placing`, `unknown` | listed: none | `done`, `lost` | decide by the policy |
//! | `placing`, `unknown` | list failed | one more lookup, when to ask again | wait the provider backoff (past the outcome timeout: end the run `failed`, the attempt still `unknown`) |
//! | `placed` | run, before the check | — | wait for the check |
//! | `placed` | run, check due | — | ask the provider how the call stands |
//! | `placed` | asked: a final status | the status | decide by the policy |
//! | `placed` | asked: not final, or no answer | — | wait `reconcile_after` (past the outcome timeout: `done`, `lost`, end the run `failed`) |
//! | not `done` | status further along than recorded (callback or asked) | the status; if final, `done` and its outcome | decide (in the status's transaction, if the step waits) |
//! | any | status not further along, another call's, or after `done` | — | nothing |
//! | `done` | run | — | decide by the policy |
//!
//! Duplicated and out-of-order status callbacks, and a redelivered job after a crash, all land
//! in rows of this table: a status only moves an attempt forward, and an attempt whose fate is
//! unknown is never placed again before the provider has said it has no such call.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::matching::{self, Found};
use super::policy::Outcome;
use super::state::{AttemptRow, Progress, State};
use crate::retry::RetryPolicy;
use crate::telephony::{PlaceError, Placed, StatusEvent};

/// The times and tries that shape an attempt's life (from the callback settings).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub unknown_window: Duration,
    pub reconcile_after: Duration,
    pub outcome_timeout: Duration,
    pub provider_retry: RetryPolicy,
}

/// What happened to the attempt.
#[derive(Debug)]
pub(super) enum Event<'a> {
    /// A delivery of the step's job runs.
    Run,
    /// The provider answered the request to place the call; `open`: the step is not settled.
    Answered {
        answer: &'a Result<Placed, PlaceError>,
        open: bool,
    },
    /// The provider's call list answered, or could not be read.
    Listed(Result<&'a Found, &'a str>),
    /// The provider said how the placed call stands (`None`: it does not know it), or could
    /// not be asked.
    Asked(Result<Option<&'a StatusEvent>, &'a str>),
}

/// What to write on the attempt's row.
#[derive(Debug, PartialEq)]
pub(super) enum Write {
    Nothing,
    /// The call the provider took: its id, placed (unless a status settled it already).
    Placed,
    /// A place request that failed: the attempt's new state and place errors, the outcome
    /// leadflow decides when that ends it, and the timeline entry that says so.
    Error {
        state: State,
        errors: i32,
        outcome: Option<Outcome>,
        timeline: Option<(&'static str, Value)>,
    },
    /// The outcome leadflow decided (the provider never told it).
    Settle(Outcome),
    /// The call a lookup found: its id, placed, then its status as a callback's.
    Adopt,
    /// One more lookup that failed; ask again at this time.
    LookupFailed {
        again: Timestamp,
    },
    /// A status the provider told when asked, applied as a callback's.
    Status,
}

/// What to do once written.
#[derive(Debug, PartialEq)]
pub(super) enum Then {
    Nothing,
    /// Wait (a follow-up job) until then.
    Wait(Timestamp),
    /// Place the call again: the provider certainly did not take it.
    PlaceAgain,
    /// Ask the provider's call list whether the call went out.
    LookUp,
    /// Ask the provider how the placed call stands.
    AskStatus,
    /// The attempt has its outcome: end the run, or plan the next attempt, by the policy.
    Decide,
    /// Decide if the attempt is now settled, else wait until then.
    DecideOrWait(Timestamp),
    /// End the run `failed` for an operator, for this reason.
    Fail(String),
}

/// One transition: what to write, then what to do.
#[derive(Debug, PartialEq)]
pub(super) struct Step {
    pub write: Write,
    pub then: Then,
}

fn step(write: Write, then: Then) -> Step {
    Step { write, then }
}

fn plus(at: Timestamp, d: Duration) -> Timestamp {
    at.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::ZERO))
        .unwrap_or(at)
}

impl Timing {
    pub fn of(settings: &crate::engine::CallbackSettings) -> Timing {
        Timing {
            unknown_window: settings.unknown_window,
            reconcile_after: settings.reconcile_after,
            outcome_timeout: settings.outcome_timeout,
            provider_retry: settings.provider_retry,
        }
    }
}

/// The transition of attempt `a` on `event` at `now`. `seed` jitters the provider backoff.
pub(super) fn next(a: &AttemptRow, event: Event, now: Timestamp, t: &Timing, seed: u64) -> Step {
    match event {
        Event::Run => on_run(a, now, t),
        Event::Answered { answer, open } => on_answer(a, answer, open, now, t, seed),
        Event::Listed(listed) => on_listed(a, listed, now, t, seed),
        Event::Asked(asked) => on_asked(a, asked, now, t),
    }
}

fn on_run(a: &AttemptRow, now: Timestamp, t: &Timing) -> Step {
    match a.state {
        State::Retry => step(Write::Nothing, Then::PlaceAgain),
        State::Placing | State::Unknown => {
            let window_ends = plus(a.updated_at.0, t.unknown_window);
            let next_lookup = a.next_lookup_at.map(|at| at.0);
            if now < window_ends {
                step(Write::Nothing, Then::Wait(window_ends))
            } else if let Some(at) = next_lookup.filter(|at| now < *at) {
                step(Write::Nothing, Then::Wait(at))
            } else {
                step(Write::Nothing, Then::LookUp)
            }
        }
        State::Placed => {
            let (check, give_up) = follow_up_times(a, t);
            if now < check.min(give_up) {
                step(Write::Nothing, Then::Wait(check.min(give_up)))
            } else if a.provider_call_id.is_some() {
                step(Write::Nothing, Then::AskStatus)
            } else {
                on_asked(a, Err("no call id to ask about"), now, t)
            }
        }
        State::Done => step(Write::Nothing, Then::Decide),
    }
}

/// When a placed call's status is next asked for, and when waiting for it ends.
fn follow_up_times(a: &AttemptRow, t: &Timing) -> (Timestamp, Timestamp) {
    let since = a.placed_at.map_or(a.updated_at.0, |p| p.0);
    (
        plus(since, t.reconcile_after),
        plus(since, t.outcome_timeout),
    )
}

fn on_answer(
    a: &AttemptRow,
    answer: &Result<Placed, PlaceError>,
    open: bool,
    now: Timestamp,
    t: &Timing,
    seed: u64,
) -> Step {
    match answer {
        Ok(_) if !open => step(Write::Placed, Then::Nothing),
        Ok(_) => step(
            Write::Placed,
            Then::DecideOrWait(plus(now, t.reconcile_after)),
        ),
        Err(_) if !open => step(Write::Nothing, Then::Nothing),
        Err(_) if a.state == State::Done => step(Write::Nothing, Then::Decide),
        Err(PlaceError::Transient(message)) => {
            let errors = a.place_errors + 1;
            let tries = u32::try_from(errors).unwrap_or(u32::MAX);
            match t.provider_retry.delay_after(tries, seed) {
                Some(delay) => {
                    let retry_at = plus(now, delay);
                    let detail = json!({ "attempt": a.n, "error": message, "retry_at": retry_at, "tries": errors });
                    let write = Write::Error {
                        state: State::Retry,
                        errors,
                        outcome: None,
                        timeline: Some(("call.provider_error", detail)),
                    };
                    step(write, Then::Wait(retry_at))
                }
                None => {
                    let write = Write::Error {
                        state: State::Done,
                        errors,
                        outcome: Some(Outcome::Failed),
                        timeline: None,
                    };
                    let reason =
                        format!("the provider stayed unavailable for {errors} tries: {message}");
                    step(write, Then::Fail(reason))
                }
            }
        }
        Err(PlaceError::Permanent(message)) => {
            let write = Write::Error {
                state: State::Done,
                errors: a.place_errors,
                outcome: Some(Outcome::of_refusal(message)),
                timeline: None,
            };
            step(write, Then::Decide)
        }
        Err(PlaceError::Unknown(message)) => {
            let detail = json!({ "attempt": a.n, "error": message });
            let write = Write::Error {
                state: State::Unknown,
                errors: a.place_errors,
                outcome: None,
                timeline: Some(("call.unknown", detail)),
            };
            step(write, Then::Wait(plus(now, t.unknown_window)))
        }
    }
}

fn on_listed(
    a: &AttemptRow,
    listed: Result<&Found, &str>,
    now: Timestamp,
    t: &Timing,
    seed: u64,
) -> Step {
    match listed {
        Ok(Found::Adopt { .. }) => step(
            Write::Adopt,
            Then::DecideOrWait(plus(now, t.reconcile_after)),
        ),
        Ok(Found::None) => step(Write::Settle(Outcome::Lost), Then::Decide),
        Err(_) => {
            let lookups = u32::try_from(a.lookups + 1).unwrap_or(u32::MAX);
            let again = plus(now, matching::retry_delay(&t.provider_retry, lookups, seed));
            let write = Write::LookupFailed { again };
            if now >= plus(a.created_at.0, t.outcome_timeout) {
                let reason = format!(
                    "whether attempt {} went out is unknown: the provider could not be asked ({lookups} tries)",
                    a.n
                );
                step(write, Then::Fail(reason))
            } else {
                step(write, Then::Wait(again))
            }
        }
    }
}

fn on_asked(
    a: &AttemptRow,
    asked: Result<Option<&StatusEvent>, &str>,
    now: Timestamp,
    t: &Timing,
) -> Step {
    if let Ok(Some(event)) = asked
        && event.call_status.is_terminal()
    {
        return step(Write::Status, Then::Decide);
    }
    let (_, give_up) = follow_up_times(a, t);
    if now >= give_up {
        let reason = format!("attempt {} got no final status from the provider", a.n);
        return step(Write::Settle(Outcome::Lost), Then::Fail(reason));
    }
    step(
        Write::Nothing,
        Then::Wait(plus(now, t.reconcile_after).min(give_up)),
    )
}

/// Moves `p` by `event` when the event is news: the same call, further along than recorded,
/// and the attempt not settled yet. Returns the event's timeline entry when it moved.
pub(super) fn advance(
    p: &mut Progress,
    attempt_n: i32,
    event: &StatusEvent,
) -> Option<(String, Value)> {
    if p.provider_call_id
        .as_deref()
        .is_some_and(|sid| sid != event.call_sid)
    {
        tracing::warn!("status callback for a call that is not this attempt's; ignored");
        return None;
    }
    let rank = i16::from(event.call_status.rank());
    if p.state == State::Done || rank <= p.status_rank {
        return None;
    }
    let outcome = Outcome::of_status(event);
    p.status_rank = rank;
    p.call_status = Some(event.call_status);
    p.provider_call_id = Some(event.call_sid.clone());
    p.answered_by = event.answered_by.clone().or(p.answered_by.take());
    if outcome.is_some() {
        p.state = State::Done;
        p.outcome = outcome;
    } else if matches!(p.state, State::Placing | State::Unknown) {
        p.state = State::Placed;
    }
    let detail = json!({
        "attempt": attempt_n,
        "status": event.call_status.as_str(),
        "answered_by": event.answered_by,
        "duration_s": event.call_duration,
        "outcome": outcome.map(Outcome::as_str),
    });
    Some((format!("call.{}", event.call_status.as_str()), detail))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::At;
    use crate::telephony::CallStatus;
    use crate::telephony::sim::events_for;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    const T0: &str = "2026-12-07T10:00:00Z";

    fn timing() -> Timing {
        Timing {
            unknown_window: Duration::from_secs(120),
            reconcile_after: Duration::from_secs(120),
            outcome_timeout: Duration::from_secs(7200),
            provider_retry: RetryPolicy {
                max_attempts: 3,
                base: Duration::from_secs(2),
                max: Duration::from_secs(300),
            },
        }
    }

    /// Attempt 1, written at T0 in `state`.
    fn attempt(state: State) -> AttemptRow {
        AttemptRow {
            id: uuid::Uuid::nil(),
            n: 1,
            state,
            placed_at: None,
            updated_at: At(at(T0)),
            outcome: None,
            place_errors: 0,
            provider_call_id: None,
            created_at: At(at(T0)),
            lookups: 0,
            next_lookup_at: None,
        }
    }

    fn placed_call(a: AttemptRow) -> AttemptRow {
        AttemptRow {
            state: State::Placed,
            placed_at: Some(At(at(T0))),
            provider_call_id: Some("CA1".to_owned()),
            ..a
        }
    }

    fn after(secs: i64) -> Timestamp {
        plus(at(T0), Duration::from_secs(secs as u64))
    }

    fn run(a: &AttemptRow, now: Timestamp) -> Step {
        next(a, Event::Run, now, &timing(), 7)
    }

    fn answer(a: &AttemptRow, answer: Result<Placed, PlaceError>, open: bool) -> Step {
        let event = Event::Answered {
            answer: &answer,
            open,
        };
        next(a, event, after(1), &timing(), 7)
    }

    fn taken() -> Result<Placed, PlaceError> {
        Ok(Placed {
            call_sid: "CA1".to_owned(),
            status: "queued".to_owned(),
        })
    }

    #[test]
    fn a_taken_call_is_placed_and_waits_for_its_status() {
        let s = answer(&attempt(State::Placing), taken(), true);
        assert_eq!(s.write, Write::Placed);
        assert_eq!(s.then, Then::DecideOrWait(after(121)));
    }

    #[test]
    fn a_provider_that_is_down_is_asked_again_on_its_backoff_then_given_up() {
        let down = || Err(PlaceError::Transient("503".to_owned()));
        let s = answer(&attempt(State::Placing), down(), true);
        let Write::Error {
            state,
            errors,
            outcome,
            timeline,
        } = s.write
        else {
            panic!("{s:?}")
        };
        assert_eq!((state, errors, outcome), (State::Retry, 1, None));
        assert_eq!(timeline.map(|(e, _)| e), Some("call.provider_error"));
        let Then::Wait(retry_at) = s.then else {
            panic!("{:?}", s.then)
        };
        assert!(
            retry_at >= after(3) && retry_at < after(5),
            "[2 s, 4 s) after the answer"
        );
        // The retry places the same attempt again.
        let retrying = AttemptRow {
            place_errors: 1,
            ..attempt(State::Retry)
        };
        assert_eq!(run(&retrying, after(10)).then, Then::PlaceAgain);
        // The policy's last try spent: the run fails, for an operator.
        let spent = AttemptRow {
            place_errors: 2,
            ..attempt(State::Placing)
        };
        let s = answer(&spent, down(), true);
        assert!(matches!(
            s.write,
            Write::Error {
                state: State::Done,
                errors: 3,
                outcome: Some(Outcome::Failed),
                ..
            }
        ));
        assert!(matches!(s.then, Then::Fail(r) if r.contains("3 tries")));
    }

    #[test]
    fn a_refusal_settles_the_attempt_by_its_reason() {
        let bad = Err(PlaceError::Permanent(
            "error 21211: not a number".to_owned(),
        ));
        let s = answer(&attempt(State::Placing), bad, true);
        assert!(matches!(
            s.write,
            Write::Error {
                state: State::Done,
                outcome: Some(Outcome::Unreachable),
                ..
            }
        ));
        assert_eq!(s.then, Then::Decide);
        let other = Err(PlaceError::Permanent("401".to_owned()));
        let s = answer(&attempt(State::Placing), other, true);
        assert!(matches!(
            s.write,
            Write::Error {
                outcome: Some(Outcome::Refused),
                ..
            }
        ));
    }

    #[test]
    fn a_timeout_after_sending_is_unknown_and_waits_for_the_window() {
        let lost = Err(PlaceError::Unknown("timed out".to_owned()));
        let s = answer(&attempt(State::Placing), lost, true);
        assert!(matches!(
            s.write,
            Write::Error {
                state: State::Unknown,
                outcome: None,
                timeline: Some(("call.unknown", _)),
                ..
            }
        ));
        assert_eq!(s.then, Then::Wait(after(121)));
    }

    #[test]
    fn an_answer_after_the_step_settled_is_recorded_and_decides_nothing() {
        let s = answer(&attempt(State::Done), taken(), false);
        assert_eq!((s.write, s.then), (Write::Placed, Then::Nothing));
        let err = Err(PlaceError::Transient("503".to_owned()));
        let s = answer(&attempt(State::Done), err, false);
        assert_eq!((s.write, s.then), (Write::Nothing, Then::Nothing));
        // A status settled the attempt while the request was out: its error changes nothing.
        let err = Err(PlaceError::Unknown("reset".to_owned()));
        let s = answer(&attempt(State::Done), err, true);
        assert_eq!((s.write, s.then), (Write::Nothing, Then::Decide));
    }

    #[test]
    fn a_redelivery_after_a_crash_waits_out_the_window_then_asks_the_call_list() {
        for state in [State::Placing, State::Unknown] {
            let a = attempt(state);
            assert_eq!(run(&a, after(30)).then, Then::Wait(after(120)));
            assert_eq!(run(&a, after(120)).then, Then::LookUp);
            assert_eq!(run(&a, after(30)).write, Write::Nothing);
        }
        // After a failed lookup, not again before its backoff step.
        let a = AttemptRow {
            lookups: 1,
            next_lookup_at: Some(At(after(200))),
            ..attempt(State::Unknown)
        };
        assert_eq!(run(&a, after(150)).then, Then::Wait(after(200)));
        assert_eq!(run(&a, after(200)).then, Then::LookUp);
    }

    #[test]
    fn the_call_list_adopts_the_call_or_lets_the_attempt_be_lost() {
        let a = attempt(State::Unknown);
        let call = crate::telephony::ListedCall {
            call_sid: "CA9".to_owned(),
            to: "+14155550123".to_owned(),
            from: "+14155550100".to_owned(),
            created: at(T0),
            attempt_id: None,
            status: Some(CallStatus::InProgress),
            answered_by: None,
            duration: None,
        };
        let adopt = Found::Adopt {
            call,
            others: Vec::new(),
        };
        let s = next(&a, Event::Listed(Ok(&adopt)), after(130), &timing(), 7);
        assert_eq!(s.write, Write::Adopt);
        assert_eq!(s.then, Then::DecideOrWait(after(250)));
        let s = next(
            &a,
            Event::Listed(Ok(&Found::None)),
            after(130),
            &timing(),
            7,
        );
        assert_eq!(s.write, Write::Settle(Outcome::Lost));
        assert_eq!(s.then, Then::Decide);
    }

    #[test]
    fn a_call_list_that_cannot_be_read_concludes_nothing() {
        let a = attempt(State::Unknown);
        let s = next(&a, Event::Listed(Err("503")), after(130), &timing(), 7);
        let Write::LookupFailed { again } = s.write else {
            panic!("{s:?}")
        };
        assert!(
            again >= after(132) && again < after(134),
            "[2 s, 4 s) later"
        );
        assert_eq!(s.then, Then::Wait(again));
        // Past the outcome timeout, the run goes to an operator; the attempt stays unknown.
        let s = next(&a, Event::Listed(Err("503")), after(7200), &timing(), 7);
        assert!(matches!(s.write, Write::LookupFailed { .. }));
        assert!(matches!(s.then, Then::Fail(r) if r.contains("unknown")));
    }

    #[test]
    fn a_placed_call_is_asked_about_when_its_status_is_late() {
        let a = placed_call(attempt(State::Placing));
        assert_eq!(run(&a, after(60)).then, Then::Wait(after(120)));
        assert_eq!(run(&a, after(120)).then, Then::AskStatus);
        let busy = events_for("CA1", CallStatus::Busy).pop().expect("final");
        let s = next(&a, Event::Asked(Ok(Some(&busy))), after(120), &timing(), 7);
        assert_eq!((s.write, s.then), (Write::Status, Then::Decide));
        let ringing = events_for("CA1", CallStatus::NoAnswer)[1].clone();
        let s = next(
            &a,
            Event::Asked(Ok(Some(&ringing))),
            after(120),
            &timing(),
            7,
        );
        assert_eq!((s.write, s.then), (Write::Nothing, Then::Wait(after(240))));
        let s = next(&a, Event::Asked(Err("timeout")), after(7100), &timing(), 7);
        assert_eq!(
            s.then,
            Then::Wait(after(7200)),
            "never past the outcome timeout"
        );
        // No final status by the outcome timeout: lost, and the run goes to an operator.
        let s = next(&a, Event::Asked(Ok(None)), after(7200), &timing(), 7);
        assert_eq!(s.write, Write::Settle(Outcome::Lost));
        assert!(matches!(s.then, Then::Fail(r) if r.contains("no final status")));
    }

    #[test]
    fn a_settled_attempt_is_decided_by_the_policy() {
        let s = run(&attempt(State::Done), after(1));
        assert_eq!((s.write, s.then), (Write::Nothing, Then::Decide));
    }

    fn placed(sid: Option<&str>) -> Progress {
        Progress {
            state: State::Placed,
            status_rank: -1,
            call_status: None,
            provider_call_id: sid.map(str::to_owned),
            answered_by: None,
            outcome: None,
        }
    }

    fn names(entries: &[(String, Value)]) -> Vec<&str> {
        entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn a_calls_statuses_in_order_end_in_its_outcome() {
        let mut p = placed(Some("CA1"));
        let events = events_for("CA1", CallStatus::Completed);
        let entries: Vec<_> = events
            .iter()
            .filter_map(|e| advance(&mut p, 1, e))
            .collect();
        assert_eq!(
            names(&entries),
            [
                "call.initiated",
                "call.ringing",
                "call.in-progress",
                "call.completed"
            ]
        );
        assert_eq!(p.state, State::Done);
        assert_eq!(p.outcome, Some(Outcome::Called));
        assert_eq!(p.call_status, Some(CallStatus::Completed));
        assert_eq!(p.status_rank, 4);
        assert_eq!(p.answered_by.as_deref(), Some("human"));
        assert_eq!(entries[3].1["outcome"], "called");
        assert_eq!(entries[0].1["outcome"], Value::Null);
    }

    #[test]
    fn duplicates_late_statuses_and_news_after_the_end_change_nothing() {
        let mut p = placed(Some("CA1"));
        let busy = events_for("CA1", CallStatus::Busy);
        let mut shuffled = vec![busy[1].clone(), busy[0].clone(), busy[1].clone()];
        shuffled.extend(events_for("CA1", CallStatus::Completed));
        let entries: Vec<_> = shuffled
            .iter()
            .filter_map(|e| advance(&mut p, 2, e))
            .collect();
        assert_eq!(names(&entries), ["call.busy"]);
        assert_eq!(p.outcome, Some(Outcome::Busy));
        assert_eq!(entries[0].1["attempt"], 2);
    }

    #[test]
    fn another_calls_status_is_ignored() {
        let mut p = placed(Some("CA1"));
        let before = p.clone();
        for e in events_for("CA2", CallStatus::Completed) {
            assert!(advance(&mut p, 1, &e).is_none());
        }
        assert_eq!(p, before);
    }

    #[test]
    fn a_status_that_overtakes_the_providers_answer_places_the_call() {
        let mut p = Progress {
            state: State::Placing,
            ..placed(None)
        };
        let events = events_for("CA9", CallStatus::Completed);
        assert!(advance(&mut p, 1, &events[0]).is_some());
        assert_eq!(p.state, State::Placed);
        assert_eq!(p.provider_call_id.as_deref(), Some("CA9"));
        // Once the call id is known, another call's statuses do not count.
        assert!(advance(&mut p, 1, &events_for("CA8", CallStatus::Busy)[1]).is_none());
        assert_eq!(p.outcome, None);
    }
}
