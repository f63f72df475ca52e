//! Telephony adapters: the [`Provider`] trait that places one outbound call, its two
//! implementations ([`twilio::Twilio`] and [`sim::Sim`]), and the typed status events both
//! report back.
//!
//! Adapters sit at the bottom of the dependency arrows: they never call up into steps. A
//! provider places a call and returns; outcomes come back later as [`StatusEvent`]s, from
//! Twilio's webhook or the simulator's channel, and the callback step applies them.

pub mod sim;
pub mod twilio;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One outbound call to place: the lead's number, rung from the team's caller ID, running the
/// TwiML leadflow serves for this attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    pub attempt_id: uuid::Uuid,
    /// The lead's number, E.164.
    pub to: String,
    /// The team's caller ID, E.164.
    pub from: String,
    /// The signed URL of this attempt's TwiML.
    pub twiml_url: String,
    /// Where the provider reports progress, e.g.
    /// `{LEADFLOW_PUBLIC_URL}/v1/telephony/twilio/status?attempt=<id>`.
    pub status_callback: String,
    /// How long the lead's phone rings before the call is `no-answer` (Twilio's `Timeout`).
    pub timeout: Duration,
    pub lead_id: uuid::Uuid,
    /// 1-based count of attempts for this lead; the simulator picks its outcome by it.
    pub attempt_number: u32,
}

/// What the provider said when it accepted the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The provider's call id (`CA…` for Twilio, `SIM…` for the simulator).
    pub call_sid: String,
    /// The provider's first status word, usually `queued`.
    pub status: String,
}

/// Why a call could not be placed, classified by what the caller may safely do next.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlaceError {
    /// The provider never took the request (no connection, 5xx, 429). Retry the same attempt
    /// later; it is not a new call attempt.
    #[error("transient provider failure: {0}")]
    Transient(String),
    /// The provider refused the request (4xx); retrying cannot help. Holds its message.
    #[error("provider refused the call: {0}")]
    Permanent(String),
    /// The request went out but no answer came back: the call may have been placed. Never
    /// re-send blindly; wait for a status callback to settle the attempt.
    #[error("provider outcome unknown, the call may have been placed: {0}")]
    Unknown(String),
}

impl PlaceError {
    /// What the provider (or the transport) said, without the classification.
    pub fn message(&self) -> &str {
        match self {
            PlaceError::Transient(m) | PlaceError::Permanent(m) | PlaceError::Unknown(m) => m,
        }
    }
}

/// The future [`Provider::place`] returns. Boxed so the trait stays object-safe and the
/// service can hold an `Arc<dyn Provider>`; one allocation per phone call is free.
pub type PlaceFuture<'a> = Pin<Box<dyn Future<Output = Result<Placed, PlaceError>> + Send + 'a>>;

/// The future [`Provider::status`] returns: the call's current status as the provider sees it,
/// `None` when the provider does not know the call.
pub type StatusFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Option<StatusEvent>, PlaceError>> + Send + 'a>>;

/// The future [`Provider::calls_to`] returns: the calls the provider lists.
pub type ListFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<ListedCall>, PlaceError>> + Send + 'a>>;

/// A call as the provider lists it: enough to tell whether it is an attempt's call whose
/// answer was lost, and how it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCall {
    pub call_sid: String,
    pub to: String,
    pub from: String,
    /// When the provider created the call, by the provider's clock.
    pub created: jiff::Timestamp,
    /// The attempt whose TwiML the call runs, where the provider lists it. Twilio's Call
    /// resource does not list the URL a call was created with; the simulator knows it.
    pub attempt_id: Option<uuid::Uuid>,
    pub status: Option<CallStatus>,
    pub answered_by: Option<String>,
    pub duration: Option<u32>,
}

impl ListedCall {
    /// The listed call as the status callback that would bring its status; `None` when the
    /// provider gave no status leadflow knows.
    pub fn status_event(&self) -> Option<StatusEvent> {
        Some(StatusEvent {
            call_sid: self.call_sid.clone(),
            call_status: self.status?,
            sequence_number: None,
            answered_by: self.answered_by.clone(),
            call_duration: self.duration,
            sip_response_code: None,
            error_code: None,
        })
    }
}

/// Places outbound calls. Implementations are held to one contract suite
/// (`tests/provider_contract.rs`).
pub trait Provider: Send + Sync {
    /// A short stable name for logs and metrics (`twilio`, `sim`).
    fn name(&self) -> &'static str;

    /// Asks the provider to ring `req.to`. At most one provider-side call per invocation;
    /// the outcome arrives later as [`StatusEvent`]s.
    fn place<'a>(&'a self, req: &'a CallRequest) -> PlaceFuture<'a>;

    /// Asks the provider how a placed call stands. Status callbacks get lost (a restart, a
    /// network blip, a provider that does not retry them); this settles a call they never
    /// reported on.
    fn status<'a>(&'a self, call_sid: &'a str) -> StatusFuture<'a>;

    /// Lists the calls to `to` the provider created since the start of `since`'s UTC day
    /// (Twilio filters by date), newest first. A call whose create request got no answer
    /// (a crash, a timeout) is found this way, so that it is adopted rather than placed again.
    /// An error means the provider could not be asked: nothing may be concluded from it.
    fn calls_to<'a>(&'a self, to: &'a str, since: jiff::Timestamp) -> ListFuture<'a>;
}

/// A call's status in Twilio's words, which the simulator reuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
}

impl CallStatus {
    pub const ALL: [CallStatus; 9] = [
        CallStatus::Queued,
        CallStatus::Initiated,
        CallStatus::Ringing,
        CallStatus::InProgress,
        CallStatus::Completed,
        CallStatus::Busy,
        CallStatus::Failed,
        CallStatus::NoAnswer,
        CallStatus::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Initiated => "initiated",
            CallStatus::Ringing => "ringing",
            CallStatus::InProgress => "in-progress",
            CallStatus::Completed => "completed",
            CallStatus::Busy => "busy",
            CallStatus::Failed => "failed",
            CallStatus::NoAnswer => "no-answer",
            CallStatus::Canceled => "canceled",
        }
    }

    /// The call is over; no later status can follow.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            CallStatus::Completed
                | CallStatus::Busy
                | CallStatus::Failed
                | CallStatus::NoAnswer
                | CallStatus::Canceled
        )
    }

    /// Position in a call's life. Callbacks can arrive twice or out of order, so a status
    /// only applies when its rank is above the one already recorded.
    pub fn rank(self) -> u8 {
        match self {
            CallStatus::Queued => 0,
            CallStatus::Initiated => 1,
            CallStatus::Ringing => 2,
            CallStatus::InProgress => 3,
            _ => 4,
        }
    }
}

impl fmt::Display for CallStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown call status {0:?}; expected one of Twilio's CallStatus words")]
pub struct UnknownCallStatus(pub String);

impl FromStr for CallStatus {
    type Err = UnknownCallStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        CallStatus::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCallStatus(s.to_owned()))
    }
}

/// One status callback, Twilio's or the simulator's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEvent {
    pub call_sid: String,
    pub call_status: CallStatus,
    /// Twilio's per-call callback counter, from 0; orders callbacks that arrive shuffled.
    pub sequence_number: Option<u32>,
    /// Answering-machine detection: `human`, `machine_start`, `fax`, `unknown`, or one of the
    /// `machine_end_*` words with `DetectMessageEnd`.
    pub answered_by: Option<String>,
    /// Seconds, on the final callback.
    pub call_duration: Option<u32>,
    /// The SIP final response, e.g. 404 for a number that does not exist, 486 busy, 503
    /// congestion; it tells an unreachable number from a passing network failure.
    pub sip_response_code: Option<u16>,
    pub error_code: Option<String>,
}

impl StatusEvent {
    /// Whether AMD says a person picked up. Without AMD there is no `AnsweredBy`, and an
    /// answered call counts as a person.
    pub fn answered_by_human(&self) -> bool {
        match self.answered_by.as_deref() {
            None | Some("human") => true,
            Some(_) => false,
        }
    }
}

/// `+*******1234`: enough to tell numbers apart in a log without writing one down.
pub fn mask_phone(number: &str) -> String {
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let keep = digits.len().min(4);
    let tail: String = digits[digits.len() - keep..].iter().collect();
    format!("+{}{tail}", "*".repeat(digits.len() - keep))
}

/// Masks every phone-number-like run (7+ digits, optional `+`) in free text, such as a
/// provider's error message that quotes the number it refused.
pub fn redact_phones(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().filter(char::is_ascii_digit).count() >= 7 {
            out.push_str(&mask_phone(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() || (c == '+' && run.is_empty()) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_status_round_trips_twilio_words() {
        for status in CallStatus::ALL {
            assert_eq!(status.as_str().parse::<CallStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert_eq!("No-Answer".parse(), Ok(CallStatus::NoAnswer));
        assert!("answered".parse::<CallStatus>().is_err());
        assert!("in_progress".parse::<CallStatus>().is_err());
    }

    #[test]
    fn terminal_statuses_rank_highest() {
        for status in CallStatus::ALL {
            assert_eq!(status.is_terminal(), status.rank() == 4, "{status}");
        }
        assert!(CallStatus::Ringing.rank() < CallStatus::InProgress.rank());
    }

    #[test]
    fn phones_are_masked_to_their_last_four_digits() {
        assert_eq!(mask_phone("+14155550123"), "+*******0123");
        assert_eq!(mask_phone("+123"), "+123");
        assert_eq!(mask_phone(""), "+");
    }

    #[test]
    fn phones_in_free_text_are_masked() {
        assert_eq!(
            redact_phones("The 'To' number +15005550001 is not a valid phone number."),
            "The 'To' number +*******0001 is not a valid phone number."
        );
        assert_eq!(redact_phones("code 21211, 400"), "code 21211, 400");
        assert_eq!(redact_phones("to 4155550123."), "to +******0123.");
    }
}
