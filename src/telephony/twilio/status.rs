//! Twilio's status callback form (`application/x-www-form-urlencoded`) as a [`StatusEvent`].

use crate::telephony::{CallStatus, StatusEvent, UnknownCallStatus};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatusFormError {
    #[error("status callback without {0}")]
    Missing(&'static str),
    #[error("status callback with an unknown CallStatus: {0}")]
    UnknownStatus(#[from] UnknownCallStatus),
}

/// Reads a status callback. `CallSid` and `CallStatus` are required; the optional numbers
/// are taken when well-formed and otherwise dropped with a warning, since the status alone
/// still settles the attempt.
pub fn parse_status(form: &[(String, String)]) -> Result<StatusEvent, StatusFormError> {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    };
    let call_sid = field("CallSid").ok_or(StatusFormError::Missing("CallSid"))?;
    let call_status: CallStatus = field("CallStatus")
        .ok_or(StatusFormError::Missing("CallStatus"))?
        .parse()?;
    let number = |name: &'static str| {
        field(name).and_then(|v| match v.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                tracing::warn!(field = name, value = v, %call_sid, "ignoring a malformed number in a status callback");
                None
            }
        })
    };
    Ok(StatusEvent {
        call_sid: call_sid.to_owned(),
        call_status,
        sequence_number: number("SequenceNumber"),
        answered_by: field("AnsweredBy").map(str::to_owned),
        call_duration: number("CallDuration"),
        sip_response_code: number("SipResponseCode").and_then(|n: u32| u16::try_from(n).ok()),
        error_code: field("ErrorCode").map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_a_completed_callback() {
        let event = parse_status(&form(&[
            ("AccountSid", "AC0123"),
            ("CallSid", "CA42"),
            ("CallStatus", "completed"),
            ("CallDuration", "37"),
            ("SequenceNumber", "3"),
            ("AnsweredBy", "human"),
            ("SipResponseCode", "200"),
            ("Direction", "outbound-api"),
        ]))
        .unwrap();
        assert_eq!(
            event,
            StatusEvent {
                call_sid: "CA42".into(),
                call_status: CallStatus::Completed,
                sequence_number: Some(3),
                answered_by: Some("human".into()),
                call_duration: Some(37),
                sip_response_code: Some(200),
                error_code: None,
            }
        );
        assert!(event.answered_by_human());
    }

    #[test]
    fn reads_a_failed_callback_with_error_code() {
        let event = parse_status(&form(&[
            ("CallSid", "CA42"),
            ("CallStatus", "failed"),
            ("SipResponseCode", "404"),
            ("ErrorCode", "13224"),
            ("AnsweredBy", ""),
        ]))
        .unwrap();
        assert_eq!(event.call_status, CallStatus::Failed);
        assert_eq!(event.sip_response_code, Some(404));
        assert_eq!(event.error_code.as_deref(), Some("13224"));
        assert_eq!(event.answered_by, None, "empty means absent");
    }

    #[test]
    fn machine_answers_are_not_human() {
        let event = parse_status(&form(&[
            ("CallSid", "CA1"),
            ("CallStatus", "in-progress"),
            ("AnsweredBy", "machine_start"),
        ]))
        .unwrap();
        assert_eq!(event.call_status, CallStatus::InProgress);
        assert!(!event.answered_by_human());
    }

    #[test]
    fn refuses_missing_or_unknown_status() {
        assert_eq!(
            parse_status(&form(&[("CallStatus", "busy")])),
            Err(StatusFormError::Missing("CallSid"))
        );
        assert_eq!(
            parse_status(&form(&[("CallSid", "CA1"), ("CallStatus", "")])),
            Err(StatusFormError::Missing("CallStatus"))
        );
        assert!(matches!(
            parse_status(&form(&[("CallSid", "CA1"), ("CallStatus", "answered")])),
            Err(StatusFormError::UnknownStatus(_))
        ));
    }

    #[test]
    fn malformed_optional_numbers_are_dropped() {
        let event = parse_status(&form(&[
            ("CallSid", "CA1"),
            ("CallStatus", "busy"),
            ("CallDuration", "-1"),
            ("SequenceNumber", "x"),
            ("SipResponseCode", "99999"),
        ]))
        .unwrap();
        assert_eq!(event.call_status, CallStatus::Busy);
        assert_eq!(
            (
                event.call_duration,
                event.sequence_number,
                event.sip_response_code
            ),
            (None, None, None)
        );
    }
}
