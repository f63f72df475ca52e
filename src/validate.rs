//! The `validate` step: a pure check of a raw [`Submission`] against the webhook contract,
//! returning the normalised lead or the first [`Rejection`]. No I/O, no clock.
//!
//! Checks run in this order and stop at the first failure, so a sender fixing one error at a
//! time always sees the same sequence:
//! 1. required fields, in the spec's order: `hookName`, `name_field`, `country_code_field`,
//!    `phone_field`, `date_submitted_field`, `time_submitted_field`, `status` (blank counts as
//!    missing);
//! 2. `status` is the integer text `1`, whitespace around it allowed;
//! 3. `is_auto` is absent/blank, `1`/`0` or `true`/`false` (any case);
//! 4. the phone normalises (see [`crate::phone`]);
//! 5. the phone's region is in [`Policy::allowed_countries`];
//! 6. the email, when given, is plausible: one `@`; a local part of at most 64 characters
//!    with no whitespace or control characters; a domain of two or more dot-separated labels of
//!    ASCII letters, digits and inner hyphens, each at most 63 long, ending in a TLD of two or
//!    more letters (or a punycode `xn--` TLD); 254 characters at most overall. No RFC 5322
//!    quoting or comments: web forms do not produce them;
//! 7. the date: `YYYY-MM-DD`, `MM/DD/YYYY`, `DD.MM.YYYY` (one-digit month and day allowed in
//!    the last two), or an ISO datetime whose date part is taken as written, not converted;
//! 8. the time: `HH:MM[:SS[.fff]]` on the 24-hour clock, or `h:MM[:SS] AM/PM` (any case, with
//!    or without a space or dots).
//!
//! Phone and country rejections carry the spec's callback error body ("Failed to initiate auto
//! callback"); the others say "Validation failed". `reason` is a small fixed set ([`REASONS`])
//! so it can be a metrics label; `details` echoes at most 64 characters of a bad value, and
//! never the phone number or email address.

use jiff::civil::{Date, DateTime, Time};
use serde::{Deserialize, Serialize};

use crate::lead::Submission;
use crate::phone::{Phone, normalize};

const VALIDATION_FAILED: &str = "Validation failed";
const CALLBACK_FAILED: &str = "Failed to initiate auto callback";
const MAX_ECHO_CHARS: usize = 64;

/// Every `Rejection::reason` this module produces.
pub const REASONS: [&str; 11] = [
    "missing_field",
    "wrong_type",
    "bad_characters",
    "bad_status",
    "bad_is_auto",
    "invalid_phone",
    "country_not_allowed",
    "invalid_email",
    "bad_date",
    "bad_time",
    "blocked",
];

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// ISO 3166 alpha-2 codes, upper case; `None` allows every region. `Some(vec![])` allows
    /// none, and non-geographic numbers (+800) pass only when this is `None`.
    pub allowed_countries: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidLead {
    pub phone: Phone,
    /// Trimmed, domain lower-cased; the local part keeps its case (it may be case-sensitive).
    pub email: Option<String>,
    /// `None` when absent: the hook's default applies.
    pub is_auto: Option<bool>,
    pub submitted_date: Date,
    pub submitted_time: Time,
}

#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[error("{field}: {details}")]
pub struct Rejection {
    /// The wire name, e.g. `phone_field`.
    pub field: &'static str,
    /// A bounded label for metrics, one of [`REASONS`].
    pub reason: &'static str,
    pub message: String,
    pub details: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    Phone,
    Email,
}

/// The rejection for a documented field that arrived as an array or object, which the body
/// parser reports before validation runs.
pub fn wrong_type(field: &'static str) -> Rejection {
    reject(
        field,
        "wrong_type",
        VALIDATION_FAILED,
        format!("{field} must be a string or a number"),
    )
}

/// The rejection for a documented field that held a NUL character (replaced in what is
/// stored, since PostgreSQL cannot keep it).
pub fn nul_character(field: &'static str) -> Rejection {
    reject(
        field,
        "bad_characters",
        VALIDATION_FAILED,
        format!("{field} contains a NUL character"),
    )
}

/// The rejection for a block-list hit, which the caller finds in the database.
pub fn blocked(kind: BlockKind) -> Rejection {
    match kind {
        BlockKind::Phone => reject(
            "phone_field",
            "blocked",
            CALLBACK_FAILED,
            "This phone number is blocked".into(),
        ),
        BlockKind::Email => reject(
            "email_field",
            "blocked",
            CALLBACK_FAILED,
            "This email address is blocked".into(),
        ),
    }
}

pub fn validate(sub: &Submission, policy: &Policy) -> Result<ValidLead, Rejection> {
    let required = [
        ("hookName", &sub.hook_name),
        ("name_field", &sub.name),
        ("country_code_field", &sub.country_code),
        ("phone_field", &sub.phone),
        ("date_submitted_field", &sub.date_submitted),
        ("time_submitted_field", &sub.time_submitted),
        ("status", &sub.status),
    ];
    for (field, value) in required {
        if non_blank(value).is_none() {
            return Err(reject(
                field,
                "missing_field",
                VALIDATION_FAILED,
                format!("{field} is required"),
            ));
        }
    }

    let status = text(&sub.status);
    if status != "1" {
        return Err(reject(
            "status",
            "bad_status",
            VALIDATION_FAILED,
            format!("status must be 1 (active), got {:?}", echo(status)),
        ));
    }

    let is_auto = match non_blank(&sub.is_auto) {
        None => None,
        Some(v) => Some(parse_flag(v).ok_or_else(|| {
            reject(
                "is_auto",
                "bad_is_auto",
                VALIDATION_FAILED,
                format!("is_auto must be 1, 0, true or false, got {:?}", echo(v)),
            )
        })?),
    };

    let phone = normalize(text(&sub.country_code), text(&sub.phone)).map_err(|_| {
        reject(
            "phone_field",
            "invalid_phone",
            CALLBACK_FAILED,
            "Invalid phone number format".into(),
        )
    })?;

    if let Some(allowed) = &policy.allowed_countries {
        let ok = phone
            .region
            .as_deref()
            .is_some_and(|r| allowed.iter().any(|a| a.trim().eq_ignore_ascii_case(r)));
        if !ok {
            let details = match &phone.region {
                Some(region) => format!("Calls to {region} are not allowed for this workflow"),
                None => "Calls to non-geographic numbers are not allowed for this workflow".into(),
            };
            return Err(reject(
                "phone_field",
                "country_not_allowed",
                CALLBACK_FAILED,
                details,
            ));
        }
    }

    let email = match non_blank(&sub.email) {
        None => None,
        Some(raw) => Some(normalize_email(raw).ok_or_else(|| {
            reject(
                "email_field",
                "invalid_email",
                VALIDATION_FAILED,
                "email_field is not a valid email address".into(),
            )
        })?),
    };

    let date_text = text(&sub.date_submitted);
    let submitted_date = parse_date(date_text).ok_or_else(|| {
        reject(
            "date_submitted_field",
            "bad_date",
            VALIDATION_FAILED,
            format!(
                "date_submitted_field must be YYYY-MM-DD, MM/DD/YYYY or DD.MM.YYYY, got {:?}",
                echo(date_text)
            ),
        )
    })?;

    let time_text = text(&sub.time_submitted);
    let submitted_time = parse_time(time_text).ok_or_else(|| {
        reject(
            "time_submitted_field",
            "bad_time",
            VALIDATION_FAILED,
            format!(
                "time_submitted_field must be HH:MM[:SS] or h:MM[:SS] AM/PM, got {:?}",
                echo(time_text)
            ),
        )
    })?;

    Ok(ValidLead {
        phone,
        email,
        is_auto,
        submitted_date,
        submitted_time,
    })
}

/// Mask an email for logs: `john.doe@example.com` -> `j***@example.com`. Shows at most the
/// first character of the local part and the domain, whatever the input.
pub fn mask_email(email: &str) -> String {
    match email.rsplit_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        None => {
            let first = email.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***")
        }
    }
}

fn reject(field: &'static str, reason: &'static str, message: &str, details: String) -> Rejection {
    Rejection {
        field,
        reason,
        message: message.to_owned(),
        details,
    }
}

fn non_blank(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A required field, already checked to be present.
fn text(value: &Option<String>) -> &str {
    non_blank(value).unwrap_or_default()
}

/// At most [`MAX_ECHO_CHARS`] characters, so a hostile value cannot bloat logs or responses.
fn echo(value: &str) -> &str {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => &value[..cut],
        None => value,
    }
}

fn parse_flag(value: &str) -> Option<bool> {
    match value {
        "1" => Some(true),
        "0" => Some(false),
        v if v.eq_ignore_ascii_case("true") => Some(true),
        v if v.eq_ignore_ascii_case("false") => Some(false),
        _ => None,
    }
}

/// The address trimmed with its domain lower-cased, or `None` when it is not plausible (the
/// rules are in the module documentation).
pub fn normalize_email(raw: &str) -> Option<String> {
    if raw.len() > 254 {
        return None;
    }
    let (local, domain) = raw.split_once('@')?;
    let local_ok = !local.is_empty()
        && local.chars().count() <= 64
        && !local.chars().any(|c| c.is_whitespace() || c.is_control());
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let tld_ok = labels.last().is_some_and(|tld| {
        (tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic())) || tld.starts_with("xn--")
    });
    let domain_ok = labels.len() >= 2 && labels.iter().all(label_ok) && tld_ok;
    (local_ok && domain_ok).then(|| format!("{local}@{domain}"))
}

/// ASCII digits only, `min..=max` of them (`str::parse` alone would accept `+5`).
fn number(text: &str, min: usize, max: usize) -> Option<u16> {
    let ok = (min..=max).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| text.parse().ok()).flatten()
}

fn parse_date(text: &str) -> Option<Date> {
    if let Some((head, tail)) = text.split_at_checked(10)
        && tail.starts_with(['T', 't', ' '])
    {
        // A full datetime: check it all, keep the date as written (no time zone conversion).
        let whole_ok = text.parse::<DateTime>().is_ok() || text.parse::<jiff::Timestamp>().is_ok();
        let (y, m, d) = three_parts(head, '-')?;
        return whole_ok.then(|| ymd(y, m, d, 2)).flatten();
    }
    if let Some((y, m, d)) = three_parts(text, '-') {
        return ymd(y, m, d, 2);
    }
    if let Some((m, d, y)) = three_parts(text, '/') {
        return ymd(y, m, d, 1);
    }
    if let Some((d, m, y)) = three_parts(text, '.') {
        return ymd(y, m, d, 1);
    }
    None
}

fn three_parts(text: &str, sep: char) -> Option<(&str, &str, &str)> {
    let mut it = text.split(sep);
    let parts = (it.next()?, it.next()?, it.next()?);
    it.next().is_none().then_some(parts)
}

/// A four-digit year, and a month and day of `min_digits` to two digits each.
fn ymd(year: &str, month: &str, day: &str, min_digits: usize) -> Option<Date> {
    let year = i16::try_from(number(year, 4, 4)?).ok()?;
    let month = i8::try_from(number(month, min_digits, 2)?).ok()?;
    let day = i8::try_from(number(day, min_digits, 2)?).ok()?;
    Date::new(year, month, day).ok()
}

fn parse_time(text: &str) -> Option<Time> {
    let lower = text.to_ascii_lowercase();
    let (clock, meridiem) = if let Some(rest) = strip_meridiem(&lower, ["am", "a.m."]) {
        (rest, Some(false))
    } else if let Some(rest) = strip_meridiem(&lower, ["pm", "p.m."]) {
        (rest, Some(true))
    } else {
        (lower.as_str(), None)
    };

    let mut parts = clock.split(':');
    let hour = number(parts.next()?, 1, 2)?;
    let minute = number(parts.next()?, 2, 2)?;
    let (second, nanos) = match parts.next() {
        None => (0, 0),
        Some(s) => {
            let (whole, fraction) = match s.split_once('.') {
                Some((w, f)) if meridiem.is_none() => (w, Some(f)),
                Some(_) => return None,
                None => (s, None),
            };
            (number(whole, 2, 2)?, fraction.map_or(Some(0), nanoseconds)?)
        }
    };
    if parts.next().is_some() {
        return None;
    }
    let hour = match meridiem {
        None => hour,
        Some(_) if !(1..=12).contains(&hour) => return None,
        Some(pm) => hour % 12 + if pm { 12 } else { 0 },
    };
    let (h, m, s) = (
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
    );
    Time::new(h, m, s, nanos).ok()
}

/// `"2:30 pm"`, `"2:30pm"`, `"2:30 p.m."` -> `"2:30"`.
fn strip_meridiem<'a>(text: &'a str, spellings: [&str; 2]) -> Option<&'a str> {
    spellings
        .iter()
        .find_map(|s| text.strip_suffix(s))
        .map(str::trim_end)
}

fn nanoseconds(fraction: &str) -> Option<i32> {
    if !(1..=9).contains(&fraction.len()) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{fraction:0<9}");
    padded.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::{date, time};

    fn spec_sample() -> Submission {
        let s = |v: &str| Some(v.to_owned());
        Submission {
            hook_name: s("captureLeadWebhook"),
            name: s("John Doe"),
            country_code: s("+1"),
            phone: s("650 253 0000"),
            email: s("john.doe@example.com"),
            company_name: s("Acme Corp"),
            date_submitted: s("2025-01-30"),
            time_submitted: s("14:30:00"),
            is_auto: s("1"),
            status: s("1"),
            team_id: s("team_001"),
            ..Default::default()
        }
    }

    fn all() -> Policy {
        Policy::default()
    }

    fn rejection(sub: &Submission) -> Rejection {
        match validate(sub, &all()) {
            Ok(v) => panic!("accepted: {v:?}"),
            Err(r) => r,
        }
    }

    #[test]
    fn accepts_a_good_submission() {
        let lead = validate(&spec_sample(), &all()).unwrap();
        assert_eq!(lead.phone.e164, "+16502530000");
        assert_eq!(lead.phone.region.as_deref(), Some("US"));
        assert_eq!(lead.email.as_deref(), Some("john.doe@example.com"));
        assert_eq!(lead.is_auto, Some(true));
        assert_eq!(lead.submitted_date, date(2025, 1, 30));
        assert_eq!(lead.submitted_time, time(14, 30, 0, 0));
    }

    #[test]
    fn spec_sample_verbatim_is_an_invalid_phone() {
        let mut sub = spec_sample();
        sub.phone = Some("1234567890".into());
        assert_eq!(
            rejection(&sub),
            Rejection {
                field: "phone_field",
                reason: "invalid_phone",
                message: "Failed to initiate auto callback".into(),
                details: "Invalid phone number format".into(),
            }
        );
    }

    #[test]
    fn each_required_field_missing_or_blank() {
        let fields = [
            "hookName",
            "name_field",
            "country_code_field",
            "phone_field",
            "date_submitted_field",
            "time_submitted_field",
            "status",
        ];
        for field in fields {
            for blank in [None, Some(String::new()), Some(" \t\n".to_owned())] {
                let mut sub = spec_sample();
                if let Some(slot) = sub.slot_mut(field) {
                    *slot = blank.clone();
                }
                let r = rejection(&sub);
                assert_eq!(r.field, field);
                assert_eq!(r.reason, "missing_field");
                assert_eq!(r.message, "Validation failed");
                assert_eq!(r.details, format!("{field} is required"));
            }
        }
    }

    #[test]
    fn optional_fields_may_be_missing() {
        let sub = Submission {
            email: None,
            is_auto: None,
            company_name: None,
            team_id: None,
            ..spec_sample()
        };
        let lead = validate(&sub, &all()).unwrap();
        assert_eq!(lead.email, None);
        assert_eq!(lead.is_auto, None);
    }

    #[test]
    fn check_order_follows_the_module_doc() {
        let broken = Submission {
            hook_name: None,
            phone: None,
            status: Some("0".into()),
            is_auto: Some("maybe".into()),
            email: Some("nope".into()),
            date_submitted: Some("yesterday".into()),
            time_submitted: Some("noon".into()),
            ..spec_sample()
        };
        let mut sub = broken.clone();
        let mut seen = vec![];
        for _ in 0..10 {
            let Err(r) = validate(&sub, &all()) else {
                break;
            };
            seen.push((r.field, r.reason));
            let good = spec_sample();
            match r.field {
                "hookName" => sub.hook_name = good.hook_name,
                "phone_field" => sub.phone = good.phone,
                "status" => sub.status = good.status,
                "is_auto" => sub.is_auto = good.is_auto,
                "email_field" => sub.email = good.email,
                "date_submitted_field" => sub.date_submitted = good.date_submitted,
                "time_submitted_field" => sub.time_submitted = good.time_submitted,
                other => panic!("unexpected {other}"),
            }
        }
        assert_eq!(
            seen,
            [
                ("hookName", "missing_field"),
                ("phone_field", "missing_field"),
                ("status", "bad_status"),
                ("is_auto", "bad_is_auto"),
                ("email_field", "invalid_email"),
                ("date_submitted_field", "bad_date"),
                ("time_submitted_field", "bad_time"),
            ]
        );
        let mut sub = broken;
        sub.hook_name = Some("h".into());
        sub.phone = Some("900 555 1234".into());
        sub.status = Some("1".into());
        sub.is_auto = None;
        let strict = Policy {
            allowed_countries: Some(vec!["GB".into()]),
        };
        assert_eq!(validate(&sub, &strict).unwrap_err().reason, "invalid_phone");
        sub.phone = Some("650 253 0000".into());
        assert_eq!(
            validate(&sub, &strict).unwrap_err().reason,
            "country_not_allowed"
        );
    }

    #[test]
    fn status() {
        for ok in ["1", " 1 ", "\t1\n"] {
            let sub = Submission {
                status: Some(ok.into()),
                ..spec_sample()
            };
            assert!(validate(&sub, &all()).is_ok(), "{ok:?}");
        }
        for bad in ["0", "2", "1.0", "01", "+1", "true", "one", "-1"] {
            let sub = Submission {
                status: Some(bad.into()),
                ..spec_sample()
            };
            let r = rejection(&sub);
            assert_eq!((r.field, r.reason), ("status", "bad_status"), "{bad:?}");
        }
        let sub = Submission {
            status: Some("0".into()),
            ..spec_sample()
        };
        assert_eq!(
            rejection(&sub).details,
            "status must be 1 (active), got \"0\""
        );
    }

    #[test]
    fn echoed_values_are_truncated() {
        let sub = Submission {
            status: Some("9".repeat(10_000)),
            ..spec_sample()
        };
        let details = rejection(&sub).details;
        assert_eq!(
            details,
            format!("status must be 1 (active), got \"{}\"", "9".repeat(64))
        );
        let sub = Submission {
            status: Some("é".repeat(100)),
            ..spec_sample()
        };
        assert!(
            rejection(&sub)
                .details
                .ends_with(&format!("{}\"", "é".repeat(64)))
        );
    }

    #[test]
    fn is_auto() {
        let cases = [
            (None, None),
            (Some(""), None),
            (Some("  "), None),
            (Some("1"), Some(true)),
            (Some(" 0 "), Some(false)),
            (Some("true"), Some(true)),
            (Some("FALSE"), Some(false)),
        ];
        for (raw, want) in cases {
            let sub = Submission {
                is_auto: raw.map(str::to_owned),
                ..spec_sample()
            };
            assert_eq!(validate(&sub, &all()).unwrap().is_auto, want, "{raw:?}");
        }
        for bad in ["2", "-1", "yes", "99999999999999999999", "1.0", "\0"] {
            let sub = Submission {
                is_auto: Some(bad.into()),
                ..spec_sample()
            };
            let r = rejection(&sub);
            assert_eq!((r.field, r.reason), ("is_auto", "bad_is_auto"), "{bad:?}");
            assert_eq!(r.message, "Validation failed");
        }
    }

    #[test]
    fn real_world_phone_formats() {
        let cases = [
            ("+1", "(650) 253-0000", "+16502530000"),
            ("1", "1-650-253-0000", "+16502530000"),
            ("+44", "020 7946 0018", "+442079460018"),
            ("+49", "+49 30 901820", "+4930901820"),
            ("+1", "+44 20 7946 0018", "+442079460018"),
            ("+1", "650.253.0000 ext. 12", "+16502530000"),
        ];
        for (cc, phone, want) in cases {
            let sub = Submission {
                country_code: Some(cc.into()),
                phone: Some(phone.into()),
                ..spec_sample()
            };
            assert_eq!(validate(&sub, &all()).unwrap().phone.e164, want, "{phone}");
        }
    }

    #[test]
    fn bad_phones_all_get_the_spec_error_body() {
        let cases = [
            ("+1", "900 555 1234"),  // premium rate
            ("+1", "911"),           // emergency / short code
            ("+1", "22395"),         // SMS short code
            ("+44", "07640 123456"), // pager
            ("+1", "not a number"),
            ("+1", "555-0100"),
            ("+999", "123456"),
        ];
        for (cc, phone) in cases {
            let sub = Submission {
                country_code: Some(cc.into()),
                phone: Some(phone.into()),
                ..spec_sample()
            };
            let r = rejection(&sub);
            assert_eq!(r.field, "phone_field", "{phone}");
            assert_eq!(r.reason, "invalid_phone", "{phone}");
            assert_eq!(r.message, "Failed to initiate auto callback");
            assert_eq!(r.details, "Invalid phone number format");
        }
    }

    #[test]
    fn allowed_countries() {
        let us_only = Policy {
            allowed_countries: Some(vec!["US".into(), "CA".into()]),
        };
        assert!(validate(&spec_sample(), &us_only).is_ok());
        let lower = Policy {
            allowed_countries: Some(vec!["us".into()]),
        };
        assert!(validate(&spec_sample(), &lower).is_ok());

        let uk = Submission {
            country_code: Some("+44".into()),
            phone: Some("020 7946 0018".into()),
            ..spec_sample()
        };
        let r = validate(&uk, &us_only).unwrap_err();
        assert_eq!(r.field, "phone_field");
        assert_eq!(r.reason, "country_not_allowed");
        assert_eq!(r.message, "Failed to initiate auto callback");
        assert_eq!(r.details, "Calls to GB are not allowed for this workflow");
        assert!(validate(&uk, &all()).is_ok());

        let nobody = Policy {
            allowed_countries: Some(vec![]),
        };
        assert_eq!(
            validate(&spec_sample(), &nobody).unwrap_err().reason,
            "country_not_allowed"
        );

        let freephone = Submission {
            phone: Some("+800 1234 5678".into()),
            ..spec_sample()
        };
        assert_eq!(validate(&freephone, &all()).unwrap().phone.region, None);
        let r = validate(&freephone, &us_only).unwrap_err();
        assert_eq!(r.reason, "country_not_allowed");
        assert!(r.details.contains("non-geographic"));
    }

    #[test]
    fn emails() {
        let good = [
            ("john.doe@example.com", "john.doe@example.com"),
            ("  John.Doe@EXAMPLE.COM ", "John.Doe@example.com"),
            ("a+tag@Mail.Example.co.uk", "a+tag@mail.example.co.uk"),
            ("x@sub-domain.example.io", "x@sub-domain.example.io"),
            (
                "user@xn--80ak6aa92e.xn--p1ai",
                "user@xn--80ak6aa92e.xn--p1ai",
            ),
        ];
        for (raw, want) in good {
            let sub = Submission {
                email: Some(raw.into()),
                ..spec_sample()
            };
            assert_eq!(validate(&sub, &all()).unwrap().email.as_deref(), Some(want));
        }
        let bad = [
            "plainaddress",
            "@example.com",
            "john@",
            "john@example",
            "john@@example.com",
            "a@b@example.com",
            "john doe@example.com",
            "john@exa mple.com",
            "john@example.c",
            "john@example.c0m",
            "john@-example.com",
            "john@example-.com",
            "john@example..com",
            "john@.example.com",
            "john@example.com.",
            "john@exämple.com",
            "jo\0hn@example.com",
        ];
        for raw in bad {
            let sub = Submission {
                email: Some(raw.into()),
                ..spec_sample()
            };
            let r = rejection(&sub);
            assert_eq!(
                (r.field, r.reason),
                ("email_field", "invalid_email"),
                "{raw:?}"
            );
            assert!(
                !r.details.contains(raw.trim()),
                "details must not echo the address"
            );
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        let long_label = format!("a@{}.com", "b".repeat(64));
        let long_total = format!("a@{}.com", vec!["c".repeat(60); 5].join("."));
        for raw in [long_local, long_label, long_total] {
            let sub = Submission {
                email: Some(raw),
                ..spec_sample()
            };
            assert_eq!(rejection(&sub).reason, "invalid_email");
        }
        let blank = Submission {
            email: Some("   ".into()),
            ..spec_sample()
        };
        assert_eq!(validate(&blank, &all()).unwrap().email, None);
    }

    #[test]
    fn dates() {
        let good = [
            ("2025-01-30", date(2025, 1, 30)),
            (" 2025-01-30 ", date(2025, 1, 30)),
            ("01/30/2025", date(2025, 1, 30)),
            ("1/5/2025", date(2025, 1, 5)),
            ("30.01.2025", date(2025, 1, 30)),
            ("5.1.2025", date(2025, 1, 5)),
            ("2024-02-29", date(2024, 2, 29)),
            ("2025-01-30T14:30:00", date(2025, 1, 30)),
            ("2025-01-30T23:30:00Z", date(2025, 1, 30)),
            ("2025-01-30T23:30:00.000Z", date(2025, 1, 30)),
            ("2025-01-30T23:30:00-08:00", date(2025, 1, 30)),
            ("2025-01-30 14:30", date(2025, 1, 30)),
        ];
        for (raw, want) in good {
            assert_eq!(parse_date(raw.trim()), Some(want), "{raw:?}");
        }
        let bad = [
            "",
            "2025-1-30",
            "25-01-30",
            "2025-02-30",
            "2025-13-01",
            "13/01/2025",
            "30/01/2025",
            "2025/01/30",
            "30-01-2025",
            "2025-01-30T",
            "2025-01-30Tnoon",
            "2025-01-30T25:00:00",
            "yesterday",
            "2025-01-30-01",
            "+202-01-30",
            "20250130",
            "é025-01-30",
            "2023-02-29",
        ];
        for raw in bad {
            assert_eq!(parse_date(raw), None, "{raw:?}");
        }
        let sub = Submission {
            date_submitted: Some("30/01/2025".into()),
            ..spec_sample()
        };
        let r = rejection(&sub);
        assert_eq!((r.field, r.reason), ("date_submitted_field", "bad_date"));
        assert!(r.details.contains("\"30/01/2025\""));
    }

    #[test]
    fn times() {
        let good = [
            ("14:30:00", time(14, 30, 0, 0)),
            ("14:30", time(14, 30, 0, 0)),
            ("9:05", time(9, 5, 0, 0)),
            ("00:00:00", time(0, 0, 0, 0)),
            ("23:59:59", time(23, 59, 59, 0)),
            ("14:30:00.250", time(14, 30, 0, 250_000_000)),
            ("2:30 PM", time(14, 30, 0, 0)),
            ("2:30pm", time(14, 30, 0, 0)),
            ("2:30:15 pm", time(14, 30, 15, 0)),
            ("02:30 a.m.", time(2, 30, 0, 0)),
            ("12:00 AM", time(0, 0, 0, 0)),
            ("12:15 PM", time(12, 15, 0, 0)),
            ("11:59:59 PM", time(23, 59, 59, 0)),
        ];
        for (raw, want) in good {
            assert_eq!(parse_time(raw), Some(want), "{raw:?}");
        }
        let bad = [
            "",
            "24:00",
            "14:60",
            "14:30:60",
            "14",
            "14:3",
            "14:30:00:00",
            "13:00 PM",
            "0:30 AM",
            "2:30 xm",
            "noon",
            "14h30",
            "-1:30",
            "+1:30",
            "14:30:00.",
            "14:30:00.1234567890",
            "2:30:00.5 PM",
            "１４:30",
        ];
        for raw in bad {
            assert_eq!(parse_time(raw), None, "{raw:?}");
        }
        let sub = Submission {
            time_submitted: Some("noon".into()),
            ..spec_sample()
        };
        let r = rejection(&sub);
        assert_eq!((r.field, r.reason), ("time_submitted_field", "bad_time"));
    }

    #[test]
    fn blocked_rejections() {
        assert_eq!(
            blocked(BlockKind::Phone),
            Rejection {
                field: "phone_field",
                reason: "blocked",
                message: "Failed to initiate auto callback".into(),
                details: "This phone number is blocked".into(),
            }
        );
        let r = blocked(BlockKind::Email);
        assert_eq!((r.field, r.reason), ("email_field", "blocked"));
        assert_eq!(r.details, "This email address is blocked");
    }

    #[test]
    fn reasons_are_bounded() {
        for r in [blocked(BlockKind::Phone), rejection(&Submission::default())] {
            assert!(REASONS.contains(&r.reason));
        }
        let json = serde_json::to_value(blocked(BlockKind::Email)).unwrap();
        assert_eq!(json["field"], "email_field");
        assert_eq!(json["reason"], "blocked");
    }

    #[test]
    fn email_masking() {
        assert_eq!(mask_email("john.doe@example.com"), "j***@example.com");
        assert_eq!(mask_email("@x"), "***@x");
        assert_eq!(mask_email(""), "***");
        assert_eq!(mask_email("johndoe"), "j***");
        assert_eq!(mask_email("éric@example.fr"), "é***@example.fr");
        assert_eq!(mask_email("a@b@example.com"), "a***@example.com");
    }

    #[test]
    fn odd_submissions_never_panic() {
        let odd = [
            "",
            " ",
            "\0",
            "1",
            "0",
            "+",
            "é",
            "😀",
            "\u{202E}",
            "@",
            "..",
            "::",
            "1:1 pm",
            "99999999999999999999",
            "2025-01-30T",
            "0000-00-00",
            "9999-12-31T23:59:59Z",
        ];
        for a in odd {
            for b in odd {
                let sub = Submission {
                    hook_name: Some(a.into()),
                    country_code: Some(a.into()),
                    phone: Some(b.into()),
                    email: Some(b.into()),
                    date_submitted: Some(a.into()),
                    time_submitted: Some(b.into()),
                    is_auto: Some(a.into()),
                    status: Some(b.into()),
                    ..spec_sample()
                };
                let _ = validate(&sub, &all());
                let _ = mask_email(a);
                let _ = parse_date(b);
                let _ = parse_time(a);
            }
        }
    }
}
