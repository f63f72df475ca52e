//! Phone normalisation: turn what a web form sent (a country code field and a phone field, as
//! typed by a person) into one E.164 number we are willing to call.
//!
//! Rules, in order:
//! 1. Clean each field: keep ASCII digits and a `+` that comes before the first digit. Text
//!    before the first digit (`tel:`, `Phone:`) is ignored; the first letter, `#`, `;` or `,`
//!    after a digit starts an extension (`x123`, `ext. 123`, `#123`), which is dropped. A `+`
//!    after a digit, or more than [`MAX_DIGITS`] digits, is unparseable.
//! 2. The phone field wins when it is international by itself: a leading `+`, `00`, or `011`
//!    (the NANP exit code, honoured only when the country code is empty or `1`, because `011x`
//!    is an ordinary trunk + area prefix elsewhere, e.g. Leeds `0113`).
//! 3. Otherwise the country code (`+44`, `44`, `0044`, or a two-letter region such as `GB`) is
//!    put in front of the national digits, and the crate strips the trunk prefix (`020…`).
//!    When that is not a valid number and the national digits already start with the country
//!    code (`1-650-253-0000` with `1`), the national digits are tried alone. With no country
//!    code the phone field is read as international with the `+` left out.
//! 4. The number must pass `is_valid()`, and its type must be a line a person answers:
//!    fixed line, mobile, either, toll free, personal or VoIP. Premium rate (NANP 900), shared
//!    cost, UAN, pager, voicemail, emergency, short codes and anything unknown are refused.

use phonenumber::metadata::{DATABASE, Metadata};
use phonenumber::{PhoneNumber, Type};
use serde::{Deserialize, Serialize};

/// E.164 allows 15 digits; the slack covers an exit code, a trunk prefix and a repeated
/// country code, while keeping the work bounded for hostile input.
pub const MAX_DIGITS: usize = 24;

/// The metadata's pseudo-region for non-geographic codes such as +800.
const NON_GEO_REGION: &str = "001";

/// A callable number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    /// `+` and digits only, e.g. `+16502530000`.
    pub e164: String,
    /// ISO 3166 alpha-2 region from the number's metadata (`US`, `CA`, `GB`), `None` for
    /// non-geographic numbers such as +800.
    pub region: Option<String>,
    /// The crate's type name, for display: `Mobile`, `FixedLine`, `FixedLineOrMobile`, ….
    pub number_type: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number could not be parsed")]
    Unparseable,
    #[error("phone number is not a valid number")]
    Invalid,
    #[error("phone numbers of type {0} are not accepted")]
    DisallowedType(&'static str),
}

/// Normalise a country code field and a phone field into a callable E.164 number.
pub fn normalize(country_code: &str, national: &str) -> Result<Phone, PhoneError> {
    if national.trim().is_empty() {
        return Err(PhoneError::Empty);
    }
    let number = clean(national)?;
    if number.digits.is_empty() {
        return Err(PhoneError::Unparseable);
    }

    let mut parsed_any = false;
    for candidate in candidates(country_code, &number)? {
        // The crate only ever sees `+` and ASCII digits, which keeps it on its well-trodden
        // path (several of its internal `unwrap`s assume sane input).
        let Ok(parsed) = phonenumber::parse(None, format!("+{candidate}")) else {
            continue;
        };
        parsed_any = true;
        if parsed.is_valid() {
            return accept(&parsed);
        }
    }
    Err(if parsed_any {
        PhoneError::Invalid
    } else {
        PhoneError::Unparseable
    })
}

/// Mask an E.164 number for logs: `+12125550123` -> `+*******0123`.
///
/// Every character becomes `*` except a leading `+` and the last four ASCII digits, so odd
/// input cannot leak more than four digits. With four digits or fewer nothing is revealed,
/// since the "last four" would then be the whole number.
pub fn mask(e164: &str) -> String {
    let digits = e164.chars().filter(char::is_ascii_digit).count();
    let reveal_from = if digits > 4 { digits - 4 } else { usize::MAX };
    let mut seen = 0;
    let mut out = String::with_capacity(e164.len());
    for (i, c) in e164.chars().enumerate() {
        if c.is_ascii_digit() {
            out.push(if seen >= reveal_from { c } else { '*' });
            seen += 1;
        } else if i == 0 && c == '+' {
            out.push('+');
        } else {
            out.push('*');
        }
    }
    out
}

#[derive(Debug, PartialEq)]
struct Cleaned {
    plus: bool,
    digits: String,
}

fn clean(raw: &str) -> Result<Cleaned, PhoneError> {
    let mut plus = false;
    let mut digits = String::new();
    for c in raw.chars() {
        if c.is_ascii_digit() {
            if digits.len() == MAX_DIGITS {
                return Err(PhoneError::Unparseable);
            }
            digits.push(c);
        } else if matches!(c, '+' | '\u{FF0B}') {
            if !digits.is_empty() {
                return Err(PhoneError::Unparseable);
            }
            plus = true;
        } else if !digits.is_empty() && (c.is_alphabetic() || matches!(c, '#' | ';' | ',')) {
            break;
        }
    }
    Ok(Cleaned { plus, digits })
}

/// The digits of the calling code, or `None` when the field gives none.
fn calling_code(raw: &str) -> Result<Option<String>, PhoneError> {
    let trimmed = raw.trim();
    if trimmed.len() == 2 && trimmed.chars().all(|c| c.is_ascii_alphabetic()) {
        let mut region = trimmed.to_ascii_uppercase();
        // Forms say UK; ISO 3166 (and the metadata) say GB.
        if region == "UK" {
            region = "GB".to_owned();
        }
        return match DATABASE.by_id(region.as_str()) {
            Some(meta) => Ok(Some(meta.country_code().to_string())),
            None => Err(PhoneError::Unparseable),
        };
    }
    let cleaned = clean(trimmed)?;
    // Calling codes never start with 0, so leading zeros are an exit code (`001`, `0044`).
    let digits = cleaned.digits.trim_start_matches('0');
    Ok((!digits.is_empty()).then(|| digits.to_owned()))
}

/// International digit strings (without `+`) to try, best guess first.
fn candidates(country_code: &str, number: &Cleaned) -> Result<Vec<String>, PhoneError> {
    let digits = number.digits.as_str();
    if number.plus {
        return Ok(vec![digits.to_owned()]);
    }
    if let Some(rest) = digits.strip_prefix("00") {
        return Ok(vec![rest.to_owned()]);
    }
    let code = calling_code(country_code)?;
    if let Some(rest) = digits.strip_prefix("011")
        && code.as_deref().is_none_or(|c| c == "1")
    {
        return Ok(vec![rest.to_owned()]);
    }
    Ok(match code {
        None => vec![digits.to_owned()],
        Some(code) if digits.starts_with(code.as_str()) => {
            vec![format!("{code}{digits}"), digits.to_owned()]
        }
        Some(code) => vec![format!("{code}{digits}")],
    })
}

fn accept(parsed: &PhoneNumber) -> Result<Phone, PhoneError> {
    let code = parsed.code().value();
    // `to_string` keeps the leading zeros of Italian-style numbers; `value()` would not.
    let nsn = parsed.national().to_string();
    let (region, kind) = classify(code, &nsn);
    let label = type_label(kind);
    if !is_callable(kind) {
        return Err(PhoneError::DisallowedType(label));
    }
    Ok(Phone {
        e164: format!("+{code}{nsn}"),
        region,
        number_type: label.to_owned(),
    })
}

/// Region and type of a number. This mirrors the crate's private `source_for` and
/// `number_type`, because its public `number_type()` and `country().id()` look the number up
/// without its leading zeros and so answer `Unknown`/`None` for every Italian landline
/// (+39 06…) and Ivorian number, while `is_valid()` accepts them.
fn classify(code: u16, nsn: &str) -> (Option<String>, Type) {
    let Some(regions) = DATABASE.region(&code) else {
        return (None, Type::Unknown);
    };
    if let [only] = regions.as_slice() {
        if *only == NON_GEO_REGION {
            let meta = DATABASE.by_code(&code).and_then(|m| m.into_iter().next());
            return (None, meta.map_or(Type::Unknown, |m| number_type(m, nsn)));
        }
        let kind = DATABASE
            .by_id(*only)
            .map_or(Type::Unknown, |m| number_type(m, nsn));
        return (Some((*only).to_owned()), kind);
    }
    for region in regions {
        let Some(meta) = DATABASE.by_id(region) else {
            continue;
        };
        match meta.leading_digits() {
            Some(leading) => {
                if leading.find(nsn).is_some_and(|m| m.start() == 0) {
                    return (Some(region.to_owned()), number_type(meta, nsn));
                }
            }
            None => {
                let kind = number_type(meta, nsn);
                if kind != Type::Unknown {
                    return (Some(region.to_owned()), kind);
                }
            }
        }
    }
    (None, Type::Unknown)
}

fn number_type(meta: &Metadata, nsn: &str) -> Type {
    let descriptors = meta.descriptors();
    if !descriptors.general().is_match(nsn) {
        return Type::Unknown;
    }
    let matches = |kind| descriptors.get(kind).is_some_and(|d| d.is_match(nsn));
    // Same precedence as the crate: special services before geographic lines.
    for kind in [
        Type::PremiumRate,
        Type::TollFree,
        Type::SharedCost,
        Type::Voip,
        Type::PersonalNumber,
        Type::Pager,
        Type::Uan,
        Type::Voicemail,
    ] {
        if matches(kind) {
            return kind;
        }
    }
    if matches(Type::FixedLine) {
        let fixed = descriptors
            .fixed_line()
            .map(|d| d.national_number().as_str());
        let mobile = descriptors.mobile().map(|d| d.national_number().as_str());
        return if fixed == mobile || matches(Type::Mobile) {
            Type::FixedLineOrMobile
        } else {
            Type::FixedLine
        };
    }
    if matches(Type::Mobile) {
        return Type::Mobile;
    }
    Type::Unknown
}

/// Exhaustive on purpose: a crate upgrade that adds a type must be decided here.
fn is_callable(kind: Type) -> bool {
    match kind {
        Type::FixedLine
        | Type::Mobile
        | Type::FixedLineOrMobile
        | Type::TollFree
        | Type::PersonalNumber
        | Type::Voip => true,
        Type::PremiumRate
        | Type::SharedCost
        | Type::Pager
        | Type::Uan
        | Type::Emergency
        | Type::Voicemail
        | Type::ShortCode
        | Type::StandardRate
        | Type::Carrier
        | Type::NoInternational
        | Type::Unknown => false,
    }
}

fn type_label(kind: Type) -> &'static str {
    match kind {
        Type::FixedLine => "FixedLine",
        Type::Mobile => "Mobile",
        Type::FixedLineOrMobile => "FixedLineOrMobile",
        Type::TollFree => "TollFree",
        Type::PremiumRate => "PremiumRate",
        Type::SharedCost => "SharedCost",
        Type::PersonalNumber => "PersonalNumber",
        Type::Voip => "Voip",
        Type::Pager => "Pager",
        Type::Uan => "Uan",
        Type::Emergency => "Emergency",
        Type::Voicemail => "Voicemail",
        Type::ShortCode => "ShortCode",
        Type::StandardRate => "StandardRate",
        Type::Carrier => "Carrier",
        Type::NoInternational => "NoInternational",
        Type::Unknown => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e164(cc: &str, national: &str) -> String {
        match normalize(cc, national) {
            Ok(p) => p.e164,
            Err(e) => panic!("{cc:?} {national:?}: {e:?}"),
        }
    }

    #[test]
    fn country_code_spellings() {
        for cc in ["+1", "1", "001", " +1 ", "+1 (US)", "US", "us"] {
            assert_eq!(e164(cc, "650 253 0000"), "+16502530000", "{cc:?}");
        }
        for cc in [" +44 ", "44", "0044", "GB", "uk"] {
            assert_eq!(e164(cc, "20 7946 0018"), "+442079460018", "{cc:?}");
        }
    }

    #[test]
    fn us_formats() {
        let p = normalize("+1", "(650) 253-0000").unwrap();
        assert_eq!(p.e164, "+16502530000");
        assert_eq!(p.region.as_deref(), Some("US"));
        assert_eq!(p.number_type, "FixedLineOrMobile");
        assert_eq!(e164("1", "1-650-253-0000"), "+16502530000");
        assert_eq!(e164("+1", "650.253.0000"), "+16502530000");
        assert_eq!(e164("+1", "6502530000"), "+16502530000");
        assert_eq!(e164("", "+1 650-253-0000"), "+16502530000");
        assert_eq!(e164("", "tel:+1-650-253-0000"), "+16502530000");
    }

    #[test]
    fn crate_parses_mixed_spaces_and_dashes() {
        // Checked directly so a crate regression shows up here and not as a vague failure.
        let n = phonenumber::parse(None, "+1 650-253-0000").unwrap();
        assert!(n.is_valid());
        assert_eq!(n.national().value(), 6_502_530_000);
    }

    #[test]
    fn uk_trunk_zero_and_international_forms() {
        assert_eq!(e164("+44", "020 7946 0018"), "+442079460018");
        assert_eq!(e164("+44", "(0)20 7946 0018"), "+442079460018");
        assert_eq!(e164("+44", "44 20 7946 0018"), "+442079460018");
        assert_eq!(e164("+1", "+44 20 7946 0018"), "+442079460018");
        assert_eq!(e164("+1", "0044 20 7946 0018"), "+442079460018");
        assert_eq!(e164("+1", "011 44 20 7946 0018"), "+442079460018");
        assert_eq!(e164("", "011 44 20 7946 0018"), "+442079460018");
        assert_eq!(e164("", "+44 (0)20 7946 0018"), "+442079460018");
        let p = normalize("+44", "020 7946 0018").unwrap();
        assert_eq!(p.region.as_deref(), Some("GB"));
        assert_eq!(p.number_type, "FixedLine");
    }

    #[test]
    fn uk_011_area_codes_are_not_an_exit_code() {
        // Bristol is 0117; reading `011` as the NANP exit code would dial Russia.
        let p = normalize("+44", "0117 496 0000").unwrap();
        assert_eq!(p.e164, "+441174960000");
        assert_eq!(p.region.as_deref(), Some("GB"));
    }

    #[test]
    fn other_countries() {
        assert_eq!(e164("", "+49 30 901820"), "+4930901820");
        assert_eq!(e164("+49", "030 901820"), "+4930901820");
        assert_eq!(e164("+49", "030/901820"), "+4930901820");
        assert_eq!(e164("+33", "06 12 34 56 78"), "+33612345678");
        assert_eq!(e164("7", "8 912 345 67 89"), "+79123456789");
        assert_eq!(e164("+1", "264 497 1234"), "+12644971234");
        assert_eq!(e164("+1 264", "497 1234"), "+12644971234");
        let de = normalize("+49", "30 901820").unwrap();
        assert_eq!(de.region.as_deref(), Some("DE"));
        assert_eq!(de.number_type, "FixedLine");
        let ca = normalize("+1", "416 979 1234").unwrap();
        assert_eq!(ca.region.as_deref(), Some("CA"));
        let ai = normalize("+1", "264 497 1234").unwrap();
        assert_eq!(ai.region.as_deref(), Some("AI"));
    }

    #[test]
    fn italian_leading_zero_is_kept_and_classified() {
        let p = normalize("+39", "02 1234 5678").unwrap();
        assert_eq!(p.e164, "+390212345678");
        assert_eq!(p.region.as_deref(), Some("IT"));
        assert_eq!(p.number_type, "FixedLine");
        // The crate's own answer is wrong here; if it ever gets fixed, `classify` can go.
        let n = phonenumber::parse(None, "+390212345678").unwrap();
        assert!(n.is_valid());
        assert_eq!(n.number_type(&DATABASE), Type::Unknown);
    }

    #[test]
    fn classify_agrees_with_the_crate_on_every_example_number() {
        let mut checked = 0;
        for meta in DATABASE.iter() {
            let d = meta.descriptors();
            let examples = [
                d.fixed_line(),
                d.mobile(),
                d.toll_free(),
                d.premium_rate(),
                d.shared_cost(),
                d.personal_number(),
                d.voip(),
                d.pager(),
                d.uan(),
                d.voicemail(),
            ];
            for example in examples.into_iter().flatten().filter_map(|d| d.example()) {
                let Ok(n) = phonenumber::parse(None, format!("+{}{example}", meta.country_code()))
                else {
                    continue;
                };
                if n.national().zeros() > 0 {
                    continue;
                }
                let nsn = n.national().to_string();
                let (region, kind) = classify(n.code().value(), &nsn);
                assert_eq!(kind, n.number_type(&DATABASE), "{}", meta.id());
                let theirs = n.country().id().map(|id| id.as_ref().to_owned());
                assert_eq!(region, theirs, "{}", meta.id());
                checked += 1;
            }
        }
        assert!(checked > 1000, "only {checked} examples");
    }

    #[test]
    fn spec_sample_is_invalid() {
        assert_eq!(normalize("+1", "1234567890"), Err(PhoneError::Invalid));
    }

    #[test]
    fn disallowed_types() {
        assert_eq!(
            normalize("+1", "900 555 1234"),
            Err(PhoneError::DisallowedType("PremiumRate"))
        );
        assert_eq!(
            normalize("+44", "0909 012 3456"),
            Err(PhoneError::DisallowedType("PremiumRate"))
        );
        assert_eq!(
            normalize("+44", "07640 123456"),
            Err(PhoneError::DisallowedType("Pager"))
        );
        for (cc, n, kind) in [
            ("+61", "1300 123 456", "SharedCost"),
            ("+44", "055 1234 5678", "Uan"),
            ("+39", "331 0123 4501", "Voicemail"),
        ] {
            assert_eq!(
                normalize(cc, n),
                Err(PhoneError::DisallowedType(kind)),
                "{n}"
            );
        }
    }

    #[test]
    fn short_and_emergency_codes_are_rejected() {
        for (cc, n) in [
            ("+1", "911"),
            ("+44", "999"),
            ("+44", "112"),
            ("+1", "22395"),
        ] {
            assert!(normalize(cc, n).is_err(), "{cc} {n}");
        }
    }

    #[test]
    fn accepted_types() {
        let p = normalize("+1", "800 253 0000").unwrap();
        assert_eq!(p.number_type, "TollFree");
        let p = normalize("+44", "07400 123456").unwrap();
        assert_eq!(p.number_type, "Mobile");
    }

    #[test]
    fn extensions_are_dropped() {
        for n in [
            "650-253-0000 x123",
            "650-253-0000x123",
            "650 253 0000 ext. 123",
            "650 253 0000 extension 123",
            "650 253 0000 #123",
            "650 253 0000;ext=123",
        ] {
            assert_eq!(e164("+1", n), "+16502530000", "{n:?}");
        }
    }

    #[test]
    fn error_kinds() {
        assert_eq!(normalize("+1", ""), Err(PhoneError::Empty));
        assert_eq!(normalize("+1", "   "), Err(PhoneError::Empty));
        assert_eq!(normalize("", ""), Err(PhoneError::Empty));
        assert_eq!(normalize("+1", "abc"), Err(PhoneError::Unparseable));
        assert_eq!(normalize("+1", "+"), Err(PhoneError::Unparseable));
        assert_eq!(normalize("+1", "650+253"), Err(PhoneError::Unparseable));
        assert_eq!(
            normalize("ZZ", "650 253 0000"),
            Err(PhoneError::Unparseable)
        );
        assert_eq!(normalize("", "+999 123 4567"), Err(PhoneError::Unparseable));
        assert_eq!(normalize("+1", "555 0100"), Err(PhoneError::Invalid));
        assert_eq!(
            normalize("+1", &"1".repeat(MAX_DIGITS + 1)),
            Err(PhoneError::Unparseable)
        );
    }

    #[test]
    fn masking() {
        assert_eq!(mask("+12125550123"), "+*******0123");
        assert_eq!(mask("+442079460018"), "+********0018");
        assert_eq!(mask(""), "");
        assert_eq!(mask("+"), "+");
        assert_eq!(mask("1234"), "****");
        assert_eq!(mask("+12345"), "+*2345");
        assert_eq!(mask("++12345"), "+**2345");
        assert_eq!(mask("call 555 0100 now"), "*********0100****");
        assert_eq!(mask("é1234567"), "****4567");
    }

    /// A small deterministic generator, so the odd-input loop needs no extra crate.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn many_odd_inputs_never_panic() {
        let pieces = [
            "",
            "+",
            "++",
            "＋",
            "0",
            "00",
            "011",
            "1",
            "44",
            "39",
            "650",
            "253",
            "0000",
            "0",
            " ",
            "-",
            ".",
            "(",
            ")",
            "/",
            "x",
            "ext.",
            "#",
            ";",
            ",",
            "\0",
            "é",
            "😀",
            "٣",
            "９",
            "tel:",
            "\u{202E}",
            "\n",
            "999999999999999999999",
            "US",
            "ZZ",
            "001",
        ];
        let codes = [
            "", "+", "+1", "1", "001", "+44", "GB", "+999", "abc", "\0", "+0", "99999",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        for i in 0..6000 {
            let mut input = String::new();
            for _ in 0..(xorshift(&mut state) % 8) {
                let idx = (xorshift(&mut state) % pieces.len() as u64) as usize;
                input.push_str(pieces[idx]);
            }
            let cc = codes[i % codes.len()];
            if let Ok(p) = normalize(cc, &input) {
                assert!(p.e164.starts_with('+'), "{input:?}");
                assert!(p.e164[1..].chars().all(|c| c.is_ascii_digit()), "{input:?}");
                assert!(p.e164.len() <= 18, "{input:?}");
            }
            let masked = mask(&input);
            assert!(masked.chars().filter(char::is_ascii_digit).count() <= 4);
        }
        for huge in [
            "1".repeat(1 << 20),
            "é".repeat(1 << 18),
            "+".repeat(1 << 16),
        ] {
            assert!(normalize("+1", &huge).is_err());
            let _ = normalize(&huge, "650 253 0000");
            assert!(mask(&huge).chars().filter(char::is_ascii_digit).count() <= 4);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// Any text in either field: no panic, and a valid result is a fixed point of
        /// normalisation (feeding its E.164 back in gives the same number).
        #[test]
        fn normalisation_never_panics_and_is_stable(cc in "\\PC{0,8}", national in "\\PC{0,40}") {
            if let Ok(p) = normalize(&cc, &national) {
                proptest::prop_assert!(p.e164.starts_with('+'));
                let again = normalize("", &p.e164);
                proptest::prop_assert_eq!(again.map(|q| q.e164), Ok(p.e164.clone()));
            }
            let masked = mask(&national);
            proptest::prop_assert!(masked.chars().filter(char::is_ascii_digit).count() <= 4);
        }

        /// Real-world spellings of valid numbers all reach the same E.164.
        #[test]
        fn formatting_does_not_change_the_number(
            line in 0u32..10_000,
            style in 0usize..5,
        ) {
            let digits = format!("650253{line:04}");
            let national = match style {
                0 => digits.clone(),
                1 => format!("({}) {}-{}", &digits[..3], &digits[3..6], &digits[6..]),
                2 => format!("{}.{}.{}", &digits[..3], &digits[3..6], &digits[6..]),
                3 => format!("1-{}-{}-{}", &digits[..3], &digits[3..6], &digits[6..]),
                _ => format!("+1 {} {} {}", &digits[..3], &digits[3..6], &digits[6..]),
            };
            let got = normalize("+1", &national).map(|p| p.e164);
            proptest::prop_assert_eq!(got, Ok(format!("+1{digits}")));
        }
    }
}
