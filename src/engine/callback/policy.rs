//! What a call's outcome means for the lead: done, or call again after a delay. Pure: the
//! outcome of this attempt, those of the earlier ones, and the team's policy.
//!
//! | outcome | reaction |
//! | --- | --- |
//! | answered by a person | `called` |
//! | answering machine | as no-answer, unless the team leaves voicemail (`called`) |
//! | busy | again after the busy delay |
//! | no-answer | again after the no-answer delay |
//! | a call whose fate never became known (lost) | again after the lost delay (1 min) |
//! | failed (network, congestion) | again, after at least an hour |
//! | unreachable number (provider refusal of the number, SIP 404/410/484/604) | `unreachable` |
//! | refused by the provider for another reason (bad credentials, …) | `failed` |
//! | canceled | `cancelled` |
//!
//! A retry past the team's `max_attempts` ends the run `exhausted` instead.

use std::time::Duration;

use crate::lead::RunStatus;
use crate::telephony::{CallStatus, StatusEvent};
use crate::workflow::team::CallbackPolicy;

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Called,
    Machine,
    Busy,
    NoAnswer,
    Failed,
    Unreachable,
    /// The provider refused the request for a reason other than the number.
    Refused,
    Canceled,
    /// No final status ever came for a call that may have gone out.
    Lost,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Called => "called",
            Outcome::Machine => "machine",
            Outcome::Busy => "busy",
            Outcome::NoAnswer => "no-answer",
            Outcome::Failed => "failed",
            Outcome::Unreachable => "unreachable",
            Outcome::Refused => "refused",
            Outcome::Canceled => "canceled",
            Outcome::Lost => "lost",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Called,
            Outcome::Machine,
            Outcome::Busy,
            Outcome::NoAnswer,
            Outcome::Failed,
            Outcome::Unreachable,
            Outcome::Refused,
            Outcome::Canceled,
            Outcome::Lost,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// The outcome a final status callback reports; `None` for a status that is not final.
    pub fn of_status(event: &StatusEvent) -> Option<Outcome> {
        Some(match event.call_status {
            CallStatus::Completed if event.answered_by_human() => Outcome::Called,
            CallStatus::Completed => Outcome::Machine,
            CallStatus::Busy => Outcome::Busy,
            CallStatus::NoAnswer => Outcome::NoAnswer,
            CallStatus::Canceled => Outcome::Canceled,
            CallStatus::Failed if number_is_bad(event) => Outcome::Unreachable,
            CallStatus::Failed => Outcome::Failed,
            CallStatus::Queued
            | CallStatus::Initiated
            | CallStatus::Ringing
            | CallStatus::InProgress => {
                return None;
            }
        })
    }

    /// The outcome of a provider's refusal to place the call (a 4xx).
    pub fn of_refusal(message: &str) -> Outcome {
        // Twilio's codes for a `To` that is not a callable number.
        const BAD_NUMBER: [&str; 5] = ["21211", "21214", "21217", "21614", "13224"];
        if BAD_NUMBER.iter().any(|code| message.contains(code)) {
            Outcome::Unreachable
        } else {
            Outcome::Refused
        }
    }
}

/// SIP says the number does not exist (404, 410 gone, 484 incomplete, 604 does not exist
/// anywhere), or Twilio's error code says it is invalid.
fn number_is_bad(event: &StatusEvent) -> bool {
    matches!(event.sip_response_code, Some(404 | 410 | 484 | 604))
        || matches!(
            event.error_code.as_deref(),
            Some("13224" | "21211" | "21214" | "21217")
        )
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    Finish {
        status: RunStatus,
        reason: String,
    },
    /// Call again, no sooner than this after now (hours and caps may push it later).
    Retry {
        after: Duration,
        reason: String,
    },
}

/// A congested or failing network gets a long pause before the next try.
const AFTER_FAILURE: Duration = Duration::from_secs(3600);

/// The next move after an attempt ended in `outcome`, given the outcomes of the run's earlier
/// attempts (oldest first, this one excluded).
pub fn next(outcome: Outcome, earlier: &[Outcome], policy: &CallbackPolicy) -> Next {
    let finish = |status, reason: &str| Next::Finish {
        status,
        reason: reason.to_owned(),
    };
    let count = |o: Outcome| earlier.iter().filter(|e| **e == o).count();
    let retry_after = match outcome {
        Outcome::Called => return finish(RunStatus::Called, "answered"),
        Outcome::Machine if policy.leave_voicemail => {
            return finish(RunStatus::Called, "answering machine: voicemail left");
        }
        Outcome::Unreachable => {
            return finish(RunStatus::Unreachable, "the number cannot be reached");
        }
        Outcome::Refused => return finish(RunStatus::Failed, "the provider refused the call"),
        Outcome::Canceled => return finish(RunStatus::Cancelled, "the call was canceled"),
        Outcome::Busy => policy.delays.after_busy(count(Outcome::Busy)),
        // A call whose fate never became known most likely never rang (the process died
        // before sending it): the team's `lost` delay is short.
        Outcome::Lost => policy.delays.after_lost(count(Outcome::Lost)),
        Outcome::Machine | Outcome::NoAnswer => {
            let quiet = earlier
                .iter()
                .filter(|e| matches!(e, Outcome::Machine | Outcome::NoAnswer | Outcome::Lost))
                .count();
            policy.delays.after_no_answer(quiet)
        }
        Outcome::Failed => policy
            .delays
            .after_no_answer(count(Outcome::Failed))
            .max(AFTER_FAILURE),
    };
    let made = earlier.len() + 1;
    if made >= policy.max_attempts as usize {
        return finish(
            RunStatus::Exhausted,
            &format!("{made} attempts made; the last was {}", outcome.as_str()),
        );
    }
    Next::Retry {
        after: retry_after,
        reason: format!("attempt {made} was {}", outcome.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> CallbackPolicy {
        CallbackPolicy::default() // 3 attempts; busy 10m; no-answer 30m then 2h
    }

    fn event(status: CallStatus, answered_by: Option<&str>, sip: Option<u16>) -> StatusEvent {
        StatusEvent {
            call_sid: "CA1".into(),
            call_status: status,
            sequence_number: None,
            answered_by: answered_by.map(str::to_owned),
            call_duration: None,
            sip_response_code: sip,
            error_code: None,
        }
    }

    #[test]
    fn final_statuses_map_to_outcomes() {
        assert_eq!(
            Outcome::of_status(&event(CallStatus::Completed, None, None)),
            Some(Outcome::Called)
        );
        assert_eq!(
            Outcome::of_status(&event(CallStatus::Completed, Some("human"), None)),
            Some(Outcome::Called)
        );
        assert_eq!(
            Outcome::of_status(&event(CallStatus::Completed, Some("machine_start"), None)),
            Some(Outcome::Machine)
        );
        assert_eq!(
            Outcome::of_status(&event(CallStatus::Failed, None, Some(404))),
            Some(Outcome::Unreachable)
        );
        assert_eq!(
            Outcome::of_status(&event(CallStatus::Failed, None, Some(503))),
            Some(Outcome::Failed)
        );
        assert_eq!(
            Outcome::of_status(&event(CallStatus::Ringing, None, None)),
            None
        );
        assert_eq!(
            Outcome::of_refusal("Twilio 400 Bad Request, error 21211: invalid"),
            Outcome::Unreachable
        );
        assert_eq!(
            Outcome::of_refusal("Twilio 401 Unauthorized, error 20003"),
            Outcome::Refused
        );
    }

    #[test]
    fn busy_then_no_answer_then_answered() {
        let p = policy();
        assert_eq!(
            next(Outcome::Busy, &[], &p),
            Next::Retry {
                after: Duration::from_secs(600),
                reason: "attempt 1 was busy".into()
            }
        );
        assert!(matches!(next(Outcome::NoAnswer, &[Outcome::Busy], &p),
            Next::Retry { after, .. } if after == Duration::from_secs(1800)));
        assert!(matches!(
            next(Outcome::Called, &[Outcome::Busy, Outcome::NoAnswer], &p),
            Next::Finish {
                status: RunStatus::Called,
                ..
            }
        ));
    }

    #[test]
    fn no_answer_delays_grow_and_the_last_attempt_exhausts() {
        let mut p = policy();
        p.max_attempts = 4;
        assert!(matches!(next(Outcome::NoAnswer, &[Outcome::NoAnswer], &p),
            Next::Retry { after, .. } if after == Duration::from_secs(7200)));
        assert!(
            matches!(next(Outcome::Machine, &[Outcome::NoAnswer, Outcome::Lost], &p),
            Next::Retry { after, .. } if after == Duration::from_secs(7200))
        );
        assert!(matches!(
            next(
                Outcome::Busy,
                &[Outcome::NoAnswer, Outcome::Lost, Outcome::Busy],
                &p
            ),
            Next::Finish {
                status: RunStatus::Exhausted,
                ..
            }
        ));
    }

    #[test]
    fn voicemail_policy_decides_what_a_machine_means() {
        let mut p = policy();
        assert!(matches!(
            next(Outcome::Machine, &[], &p),
            Next::Retry { .. }
        ));
        p.leave_voicemail = true;
        assert!(matches!(
            next(Outcome::Machine, &[], &p),
            Next::Finish {
                status: RunStatus::Called,
                ..
            }
        ));
    }

    #[test]
    fn terminal_outcomes_end_the_run_whatever_is_left() {
        let p = policy();
        assert!(matches!(
            next(Outcome::Unreachable, &[], &p),
            Next::Finish {
                status: RunStatus::Unreachable,
                ..
            }
        ));
        assert!(matches!(
            next(Outcome::Refused, &[], &p),
            Next::Finish {
                status: RunStatus::Failed,
                ..
            }
        ));
        assert!(matches!(
            next(Outcome::Canceled, &[], &p),
            Next::Finish {
                status: RunStatus::Cancelled,
                ..
            }
        ));
    }

    #[test]
    fn a_failed_network_waits_at_least_an_hour() {
        assert!(matches!(next(Outcome::Failed, &[], &policy()),
            Next::Retry { after, .. } if after >= Duration::from_secs(3600)));
    }

    #[test]
    fn outcome_names_round_trip() {
        for o in [
            Outcome::Called,
            Outcome::Busy,
            Outcome::Lost,
            Outcome::Refused,
        ] {
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
    }
}
