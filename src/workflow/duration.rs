//! Durations as people write them in workflow files: `"30m"`, `"24h"`, `"7d"`, `"1h30m"`, or
//! `"0"`. Read-only views serialize them back in the same notation (largest units first, so
//! `"24h"` reads back as `"1d"`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Units in the order [`format`] emits them; the parser accepts them in any order.
const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "malformed duration {text:?}: write a number and a unit (s, m, h, d), e.g. \"30m\", \"24h\", \"1h30m\", or \"0\""
)]
pub struct DurationError {
    text: String,
}

/// Parses one or more `<integer><unit>` parts. A bare number is refused unless it is `0`,
/// because `"30"` is ambiguous (seconds? minutes?) and a wrong guess is silent.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        text: text.to_owned(),
    };
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut secs: u64 = 0;
    let mut digits = String::new();
    let mut parts = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = UNITS
            .iter()
            .find(|(u, _)| *u == c)
            .map(|(_, n)| *n)
            .ok_or_else(err)?;
        let n: u64 = digits.parse().map_err(|_| err())?;
        secs = n
            .checked_mul(unit)
            .and_then(|v| secs.checked_add(v))
            .ok_or_else(err)?;
        digits.clear();
        parts += 1;
    }
    if parts == 0 || !digits.is_empty() {
        return Err(err());
    }
    Ok(Duration::from_secs(secs))
}

/// The compact text of a whole-second duration, largest units first (`"1d2h"`, `"90s"` →
/// `"1m30s"`); zero is `"0"`.
pub fn format(d: Duration) -> String {
    let mut left = d.as_secs();
    if left == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    for (unit, n) in UNITS {
        if left >= n {
            // Writing to a String cannot fail.
            let _ = write!(out, "{}{unit}", left / n);
            left %= n;
        }
    }
    out
}

/// Text, or a bare integer `0`: `dedupe_window = 0` reads naturally, and any other bare number
/// gets a message that says which unit is missing.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration such as \"30m\" or \"24h\"")
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Duration, E> {
        parse(s).map_err(E::custom)
    }

    fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Duration, E> {
        if n == 0 {
            return Ok(Duration::ZERO);
        }
        Err(E::custom(format!(
            "a duration needs a unit: write \"{n}s\", \"{n}m\", \"{n}h\" or \"{n}d\""
        )))
    }

    fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Duration, E> {
        self.visit_i64(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*d))
}

/// For settings where `"0"` means "off".
pub mod zero_is_off {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let d = super::deserialize(d)?;
        Ok((!d.is_zero()).then_some(d))
    }

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(d.unwrap_or(Duration::ZERO)))
    }
}

pub mod list {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct Item(#[serde(deserialize_with = "super::deserialize")] Duration);
        let items = Vec::<Item>::deserialize(d)?;
        Ok(items.into_iter().map(|Item(d)| d).collect())
    }

    pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|d| format(*d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(parse("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse("30m"), Ok(Duration::from_secs(1_800)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_ambiguous_or_malformed_text() {
        for bad in [
            "",
            "30",
            "h",
            "1.5h",
            "-1h",
            "1 h",
            "1w",
            "1h30",
            "99999999999999999999d",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn a_bare_zero_is_accepted_and_other_bare_numbers_are_explained() {
        #[derive(Debug, Deserialize)]
        struct W {
            #[serde(deserialize_with = "deserialize")]
            #[allow(dead_code)]
            w: Duration,
        }
        assert!(matches!(toml::from_str::<W>("w = 0"), Ok(W { w }) if w.is_zero()));
        let err = toml::from_str::<W>("w = 24").map_err(|e| e.message().to_owned());
        assert_eq!(
            err.err().as_deref(),
            Some("a duration needs a unit: write \"24s\", \"24m\", \"24h\" or \"24d\"")
        );
    }

    #[test]
    fn formats_back_to_what_a_person_writes() {
        for text in ["30m", "7d", "1h30m", "20s", "1d2h3m4s", "0"] {
            assert_eq!(parse(text).map(format).as_deref(), Ok(text));
        }
        assert_eq!(parse("24h").map(format).as_deref(), Ok("1d"));
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
    }
}
