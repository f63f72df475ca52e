//! A lead's time zone, and its US state or Canadian province, from its E.164 number.
//!
//! The callback step must not call a lead outside their local calling hours, and quiet-hours
//! overrides are keyed by subdivision (`US-FL`), so both come from the number alone: the
//! longest prefix of its digits that the table knows decides. A number whose zone cannot be
//! decided is reported as such ([`ZoneRule::Ambiguous`], [`ZoneRule::Unknown`]) rather than
//! guessed; the caller falls back to the team's zone, or checks every candidate zone.
//!
//! # Data
//! `data.rs` is generated from libphonenumber's prefix → time zone map
//! (`resources/timezones/map_data.txt`) and its English geocoding data for +1, as shipped by
//! the PyPI package `phonenumbers` (see [`PHONENUMBERS_VERSION`]); the `phonenumber` crate
//! carries neither. That data is Copyright The Libphonenumber Authors, under the Apache
//! License 2.0. The PyPI package `tzdata` (IANA tz database, public domain; see
//! [`TZDATA_VERSION`]) tells the generator which zone names are links to the same zone, so
//! that `+44`'s Europe/London, Europe/Jersey, Europe/Guernsey and Europe/Isle_of_Man count as
//! one zone, and which current name replaces a deprecated one (America/Godthab).
//!
//! Regenerate, from the repository root, with the versions pinned in the script:
//!
//! ```text
//! python3 -m venv /tmp/tzgen && /tmp/tzgen/bin/pip install phonenumbers==9.0.43 tzdata==2026.6
//! /tmp/tzgen/bin/python3 src/tz/generate.py            # rewrites src/tz/data.rs
//! /tmp/tzgen/bin/python3 src/tz/generate.py --check    # exit 1 if data.rs is stale
//! ```
//!
//! The output is byte-identical for the same pins and already in rustfmt's layout. Then run
//! this module's tests: they check that every zone resolves in jiff's tz database and that
//! each merged name really is the same zone there.
//!
//! # Policy for several zones
//! Some prefixes map to several zones: the whole of `+1` (which is where toll-free `+1 800`
//! lands), `+7`, `+61`, parts of Idaho's `+1 208`, Alaska's `+1 907`. [`lead_zone`] does not pick one:
//! it returns [`ZoneRule::Ambiguous`] with `zone: None` and the list in `candidates`. Two
//! policies are open to the caller:
//! - fall back to the team's zone, as for [`ZoneRule::Unknown`];
//! - the conservative one: call only when the time is within hours in every zone of
//!   [`all_candidates`], which cannot call a lead who is in one of them too early or too
//!   late, at the price of a narrower window.

mod data;

use jiff::tz::TimeZone;

pub use data::{PHONENUMBERS_VERSION, TZDATA_VERSION};

/// E.164's limit; anything longer is not a number we could have normalised, so its prefix
/// would only be a guess.
const MAX_E164_DIGITS: usize = 15;

// Prefix keys are u32: ten digits would overflow.
const _: () = assert!(data::LONGEST_PREFIX <= 9 && data::NANP_LONGEST_PREFIX <= 9);

/// How a lead's zone was decided, recorded with each callback decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ZoneRule {
    /// A prefix longer than the calling code (an area code, an exchange) has a single zone.
    AreaCode,
    /// Only the calling code matched, and that country has a single zone.
    Country,
    /// The longest matching prefix has several zones; none was picked.
    Ambiguous,
    /// No prefix matched, or the input is not an E.164 number.
    Unknown,
}

impl ZoneRule {
    /// The serialized name, for logs and timeline entries.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneRule::AreaCode => "area_code",
            ZoneRule::Country => "country",
            ZoneRule::Ambiguous => "ambiguous",
            ZoneRule::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ZoneRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the number says about where the lead is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadZone {
    /// Set only for [`ZoneRule::AreaCode`] and [`ZoneRule::Country`].
    pub zone: Option<TimeZone>,
    /// The IANA name of `zone`.
    pub zone_name: Option<&'static str>,
    pub rule: ZoneRule,
    /// ISO 3166-2 code of the US state or territory, or Canadian province (`US-FL`,
    /// `CA-ON`), for +1 numbers whose area code or exchange the data places. Independent of
    /// `rule`: Alaska's `+1 907` is [`ZoneRule::Ambiguous`] yet `US-AK`.
    pub subdivision: Option<&'static str>,
    /// Every zone the matched prefix lists: one for a decided zone, several for
    /// [`ZoneRule::Ambiguous`], none for [`ZoneRule::Unknown`]. Same as [`candidate_zones`].
    pub candidates: &'static [&'static str],
}

/// The lead's zone from its E.164 number (`+` optional, digits only: `+13055550123`).
///
/// Never panics; input that is not E.164 (empty, letters, spaces, a leading 0, more than 15
/// digits) is [`ZoneRule::Unknown`].
pub fn lead_zone(e164: &str) -> LeadZone {
    let Some(digits) = e164_digits(e164) else {
        return unknown(None);
    };
    let subdivision = nanp_subdivision(digits);
    let Some(&(_, set, is_calling_code)) =
        longest_match(digits, data::LONGEST_PREFIX, data::PREFIXES, |row| row.0)
    else {
        return unknown(subdivision);
    };
    let candidates = zone_set(set);
    match *candidates {
        [] => unknown(subdivision),
        [name] => match resolve(name) {
            Some(zone) => LeadZone {
                zone: Some(zone),
                zone_name: Some(name),
                rule: if is_calling_code {
                    ZoneRule::Country
                } else {
                    ZoneRule::AreaCode
                },
                subdivision,
                candidates,
            },
            // The table test proves every name resolves; should a tz database without it
            // ever be used, saying "unknown" keeps the caller on its fallback.
            None => unknown(subdivision),
        },
        _ => LeadZone {
            zone: None,
            zone_name: None,
            rule: ZoneRule::Ambiguous,
            subdivision,
            candidates,
        },
    }
}

/// The zone names the number's longest matching prefix lists; empty when none matches.
pub fn candidate_zones(e164: &str) -> &'static [&'static str] {
    e164_digits(e164)
        .and_then(|digits| longest_match(digits, data::LONGEST_PREFIX, data::PREFIXES, |row| row.0))
        .map_or(&[], |&(_, set, _)| zone_set(set))
}

/// [`candidate_zones`] resolved: for the conservative policy, call only when the local time
/// is within hours in every one of these. Empty when the zone is unknown.
pub fn all_candidates(e164: &str) -> Vec<TimeZone> {
    candidate_zones(e164)
        .iter()
        .filter_map(|name| resolve(name))
        .collect()
}

/// ISO 3166-2 code (`US-FL`, `CA-ON`) of a +1 number's US state or territory, or Canadian
/// province; `None` elsewhere, and where the data does not place the number (toll-free,
/// `+1 902` which serves both Nova Scotia and Prince Edward Island, other NANP countries).
pub fn subdivision(e164: &str) -> Option<&'static str> {
    e164_digits(e164).and_then(nanp_subdivision)
}

fn unknown(subdivision: Option<&'static str>) -> LeadZone {
    LeadZone {
        zone: None,
        zone_name: None,
        rule: ZoneRule::Unknown,
        subdivision,
        candidates: &[],
    }
}

fn resolve(name: &str) -> Option<TimeZone> {
    jiff::tz::db().get(name).ok()
}

fn zone_set(index: u16) -> &'static [&'static str] {
    data::ZONE_SETS
        .get(usize::from(index))
        .copied()
        .unwrap_or(&[])
}

fn nanp_subdivision(digits: &[u8]) -> Option<&'static str> {
    if digits.first() != Some(&b'1') {
        return None;
    }
    longest_match(
        digits,
        data::NANP_LONGEST_PREFIX,
        data::NANP_SUBDIVISIONS,
        |row| row.0,
    )
    .map(|&(_, code)| code)
}

/// The digits of an E.164 number, or `None` when it is not one. A leading 0 is refused
/// because the tables key prefixes by their numeric value, which only identifies the digits
/// when the first one is not 0 (no calling code starts with 0).
fn e164_digits(e164: &str) -> Option<&[u8]> {
    let digits = e164.strip_prefix('+').unwrap_or(e164).as_bytes();
    let valid = matches!(digits.first(), Some(b'1'..=b'9'))
        && digits.len() <= MAX_E164_DIGITS
        && digits.iter().all(u8::is_ascii_digit);
    valid.then_some(digits)
}

/// The row of `table` (sorted by `key`) whose prefix is the longest one of `digits`, which
/// must be ASCII digits as [`e164_digits`] returns them.
fn longest_match<T>(
    digits: &[u8],
    longest: usize,
    table: &'static [T],
    key: impl Fn(&T) -> u32,
) -> Option<&'static T> {
    let mut prefixes = [0u32; 9];
    let len = digits.len().min(longest).min(prefixes.len());
    let mut value = 0u32;
    for (slot, digit) in prefixes.iter_mut().zip(&digits[..len]) {
        value = value * 10 + u32::from(digit - b'0');
        *slot = value;
    }
    prefixes[..len].iter().rev().find_map(|prefix| {
        table
            .binary_search_by_key(prefix, &key)
            .ok()
            .and_then(|i| table.get(i))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;
    use jiff::tz::TimeZoneDatabase;

    fn assert_zone(e164: &str, zone: &str, rule: ZoneRule, subdivision: Option<&str>) {
        let found = lead_zone(e164);
        assert_eq!(found.zone_name, Some(zone), "{e164}");
        assert_eq!(found.rule, rule, "{e164}");
        assert_eq!(found.subdivision, subdivision, "{e164}");
        assert_eq!(
            found
                .zone
                .and_then(|z| z.iana_name().map(str::to_owned))
                .as_deref(),
            Some(zone)
        );
        assert_eq!(found.candidates, [zone]);
    }

    #[test]
    fn us_area_codes() {
        assert_zone(
            "+12125550123",
            "America/New_York",
            ZoneRule::AreaCode,
            Some("US-NY"),
        );
        assert_zone(
            "+12135550123",
            "America/Los_Angeles",
            ZoneRule::AreaCode,
            Some("US-CA"),
        );
        assert_zone(
            "+13055550123",
            "America/New_York",
            ZoneRule::AreaCode,
            Some("US-FL"),
        );
        assert_zone(
            "+16025550123",
            "America/Phoenix",
            ZoneRule::AreaCode,
            Some("US-AZ"),
        );
        assert_zone(
            "+12035550123",
            "America/New_York",
            ZoneRule::AreaCode,
            Some("US-CT"),
        );
        assert_zone(
            "+13125550123",
            "America/Chicago",
            ZoneRule::AreaCode,
            Some("US-IL"),
        );
        assert_zone(
            "+12025550123",
            "America/New_York",
            ZoneRule::AreaCode,
            Some("US-DC"),
        );
        assert_zone(
            "+18085550123",
            "Pacific/Honolulu",
            ZoneRule::AreaCode,
            Some("US-HI"),
        );
    }

    #[test]
    fn the_plus_is_optional() {
        assert_eq!(lead_zone("13055550123"), lead_zone("+13055550123"));
    }

    #[test]
    fn canada_and_us_territories() {
        assert_zone(
            "+14165550123",
            "America/Toronto",
            ZoneRule::AreaCode,
            Some("CA-ON"),
        );
        assert_zone(
            "+16045550123",
            "America/Vancouver",
            ZoneRule::AreaCode,
            Some("CA-BC"),
        );
        assert_zone(
            "+15145550123",
            "America/Toronto",
            ZoneRule::AreaCode,
            Some("CA-QC"),
        );
        assert_zone(
            "+17875550123",
            "America/Puerto_Rico",
            ZoneRule::AreaCode,
            Some("US-PR"),
        );
        assert_zone(
            "+16715550123",
            "Pacific/Guam",
            ZoneRule::AreaCode,
            Some("US-GU"),
        );
    }

    #[test]
    fn other_nanp_countries_have_a_zone_but_no_subdivision() {
        assert_zone("+12425550123", "America/Nassau", ZoneRule::AreaCode, None);
        assert_zone("+18765550123", "America/Jamaica", ZoneRule::AreaCode, None);
    }

    #[test]
    fn europe() {
        for london in ["+442079460000", "+447700900123"] {
            let found = lead_zone(london);
            assert_eq!(found.zone_name, Some("Europe/London"), "{london}");
            assert!(matches!(found.rule, ZoneRule::Country | ZoneRule::AreaCode));
            assert_eq!(found.subdivision, None);
        }
        let berlin = lead_zone("+493012345678");
        assert_eq!(berlin.zone_name, Some("Europe/Berlin"));
        assert!(matches!(
            berlin.rule,
            ZoneRule::Country | ZoneRule::AreaCode
        ));
        assert_zone("+4930", "Europe/Berlin", ZoneRule::Country, None);
        assert_zone("+33142685300", "Europe/Paris", ZoneRule::Country, None);
    }

    #[test]
    fn russia_is_ambiguous() {
        for e164 in ["+7", "+78001234567"] {
            let found = lead_zone(e164);
            assert_eq!(found.rule, ZoneRule::Ambiguous, "{e164}");
            assert_eq!((found.zone, found.zone_name), (None, None));
            assert!(found.candidates.len() > 1, "{e164}");
            assert!(found.candidates.contains(&"Europe/Moscow"), "{e164}");
            assert_eq!(candidate_zones(e164), found.candidates);
            assert_eq!(all_candidates(e164).len(), found.candidates.len());
        }
        assert!(candidate_zones("+7").len() > 10);
    }

    #[test]
    fn nanp_ambiguity_keeps_subdivision() {
        let toll_free = lead_zone("+18005550123");
        assert_eq!(toll_free.rule, ZoneRule::Ambiguous);
        assert_eq!(toll_free.subdivision, None);
        assert!(toll_free.candidates.contains(&"America/Los_Angeles"));
        assert!(toll_free.candidates.contains(&"America/New_York"));

        let alaska = lead_zone("+19075550123");
        assert_eq!(alaska.rule, ZoneRule::Ambiguous);
        assert_eq!(alaska.candidates, ["America/Adak", "America/Anchorage"]);
        assert_eq!(alaska.subdivision, Some("US-AK"));
        let zones: Vec<_> = all_candidates("+19075550123")
            .iter()
            .map(|zone| zone.iana_name().map(str::to_owned))
            .collect();
        assert_eq!(
            zones,
            [
                Some("America/Adak".to_owned()),
                Some("America/Anchorage".to_owned())
            ]
        );
    }

    #[test]
    fn nonsense_is_unknown() {
        for e164 in [
            "+999123456",
            "+0123456789",
            "",
            "+",
            "++1212",
            "abc",
            "+1 212 555 0123",
            "+1212x",
        ] {
            let found = lead_zone(e164);
            assert_eq!(found.rule, ZoneRule::Unknown, "{e164:?}");
            assert_eq!((found.zone, found.zone_name), (None, None), "{e164:?}");
            assert!(found.candidates.is_empty(), "{e164:?}");
            assert!(all_candidates(e164).is_empty(), "{e164:?}");
        }
        assert_eq!(lead_zone(&"1".repeat(30)).rule, ZoneRule::Unknown);
        assert_eq!(lead_zone(&"1".repeat(15)).rule, ZoneRule::Ambiguous);
    }

    #[test]
    fn odd_input_never_panics() {
        let alphabet = ["", "+", "0", "1", "4", "9", "a", " ", "é", "٣", "\0"];
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    for d in alphabet {
                        let input = format!("{a}{b}{c}{d}");
                        let _ = lead_zone(&input);
                        let _ = subdivision(&input);
                        let _ = all_candidates(&input);
                    }
                }
            }
        }
        for input in [
            "9".repeat(30),
            format!("+{}", "9".repeat(30)),
            "+".repeat(30),
            "4294967296".into(),
        ] {
            let _ = lead_zone(&input);
        }
        for &(prefix, _, _) in data::PREFIXES {
            let _ = lead_zone(&format!("+{prefix}"));
            let _ = lead_zone(&format!("+{prefix}{}", "9".repeat(15)));
        }
    }

    #[test]
    fn rule_serializes_in_snake_case() {
        for rule in [
            ZoneRule::AreaCode,
            ZoneRule::Country,
            ZoneRule::Ambiguous,
            ZoneRule::Unknown,
        ] {
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("\"{rule}\""));
        }
        assert_eq!(ZoneRule::AreaCode.as_str(), "area_code");
    }

    /// jiff's default database is the system's when there is one (as on this machine), the
    /// bundled copy otherwise; the table must work with either.
    fn databases() -> [(&'static str, TimeZoneDatabase); 2] {
        [
            ("default", jiff::tz::db().clone()),
            ("bundled", TimeZoneDatabase::bundled()),
        ]
    }

    #[test]
    fn every_zone_in_the_table_resolves() {
        for (which, db) in databases() {
            let mut unresolved: Vec<&str> = data::ZONE_SETS
                .iter()
                .flat_map(|set| set.iter().copied())
                .filter(|name| db.get(name).is_err())
                .collect();
            unresolved.dedup();
            assert!(
                unresolved.is_empty(),
                "{which} tz database lacks {unresolved:?}"
            );
        }
    }

    /// The generator merged these as tzdb links to one zone; check jiff's databases agree,
    /// transition by transition, wherever they still know the upstream name.
    #[test]
    fn merged_zones_are_the_same_zone_in_jiff() {
        let start: Timestamp = "1970-01-01T00:00:00Z".parse().unwrap();
        let end: Timestamp = "2100-01-01T00:00:00Z".parse().unwrap();
        let history = |zone: &TimeZone| -> Vec<(Timestamp, i32)> {
            zone.following(start)
                .take_while(|t| t.timestamp() < end)
                .map(|t| (t.timestamp(), t.offset().seconds()))
                .collect()
        };
        for (which, db) in databases() {
            for &(upstream, kept) in data::MERGED {
                let Ok(upstream_zone) = db.get(upstream) else {
                    continue;
                };
                let kept_zone = db.get(kept).unwrap();
                let context = format!("{which}: {upstream} vs {kept}");
                assert_eq!(
                    upstream_zone.to_offset(start),
                    kept_zone.to_offset(start),
                    "{context}"
                );
                assert_eq!(history(&upstream_zone), history(&kept_zone), "{context}");
            }
        }
    }

    #[test]
    fn tables_are_sorted_and_consistent() {
        assert!(data::PREFIXES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(data::NANP_SUBDIVISIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            data::PREFIXES
                .iter()
                .all(|row| usize::from(row.1) < data::ZONE_SETS.len())
        );
        assert!(
            data::PREFIXES
                .iter()
                .all(|row| row.0 < 10u32.pow(data::LONGEST_PREFIX as u32))
        );
        assert!(
            data::NANP_SUBDIVISIONS
                .iter()
                .all(|row| row.0.to_string().starts_with('1'))
        );
        for &(_, code) in data::NANP_SUBDIVISIONS {
            let (country, state) = code.split_once('-').unwrap();
            assert!(matches!(country, "US" | "CA"), "{code}");
            assert!(
                state.len() == 2 && state.bytes().all(|b| b.is_ascii_uppercase()),
                "{code}"
            );
        }
        for set in data::ZONE_SETS {
            assert!(set.windows(2).all(|w| w[0] < w[1]), "{set:?}");
        }
    }
}
