use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::lead::{FIELD_NAMES, Submission};

const SAMPLE_JSON: &str = r#"{
  "hookName": "captureLeadWebhook",
  "name_field": "John Doe",
  "country_code_field": "+1",
  "phone_field": "1234567890",
  "email_field": "john.doe@example.com",
  "company_name_field": "Acme Corp",
  "ip_address_field": "192.168.1.1",
  "industry_field": "Software",
  "message_field": "Looking for a demo.",
  "size_field": "Medium",
  "page_url_field": "https://example.com/demo",
  "page_name_field": "Demo Page",
  "date_submitted_field": "2025-01-30",
  "time_submitted_field": "14:30:00",
  "is_auto": 1,
  "status": 1,
  "team_id_field": "team_001",
  "utm_source": "google"
}"#;

/// The spec's sample as (wire name, text) pairs, plus one custom field.
fn sample_pairs() -> Vec<(&'static str, &'static str)> {
    vec![
        ("hookName", "captureLeadWebhook"),
        ("name_field", "John Doe"),
        ("country_code_field", "+1"),
        ("phone_field", "1234567890"),
        ("email_field", "john.doe@example.com"),
        ("company_name_field", "Acme Corp"),
        ("ip_address_field", "192.168.1.1"),
        ("industry_field", "Software"),
        ("message_field", "Looking for a demo."),
        ("size_field", "Medium"),
        ("page_url_field", "https://example.com/demo"),
        ("page_name_field", "Demo Page"),
        ("date_submitted_field", "2025-01-30"),
        ("time_submitted_field", "14:30:00"),
        ("is_auto", "1"),
        ("status", "1"),
        ("team_id_field", "team_001"),
        ("utm_source", "google"),
    ]
}

/// Written out field by field, so a slot mix-up cannot hide behind `slot_mut`.
fn sample_submission() -> Submission {
    let s = |v: &str| Some(v.to_owned());
    Submission {
        hook_name: s("captureLeadWebhook"),
        name: s("John Doe"),
        country_code: s("+1"),
        phone: s("1234567890"),
        email: s("john.doe@example.com"),
        company_name: s("Acme Corp"),
        ip_address: s("192.168.1.1"),
        industry: s("Software"),
        message: s("Looking for a demo."),
        size: s("Medium"),
        page_url: s("https://example.com/demo"),
        page_name: s("Demo Page"),
        date_submitted: s("2025-01-30"),
        time_submitted: s("14:30:00"),
        is_auto: s("1"),
        status: s("1"),
        team_id: s("team_001"),
        custom: BTreeMap::from([("utm_source".to_owned(), json!("google"))]),
    }
}

fn json_body(body: impl Into<Vec<u8>>) -> Result<Parsed, ParseError> {
    parse(&BodyKind::Json, Bytes::from(body.into()))
}

fn form_body(body: impl Into<Vec<u8>>) -> Result<Parsed, ParseError> {
    parse(&BodyKind::Form, Bytes::from(body.into()))
}

fn multipart_body(boundary: &str, body: impl Into<Vec<u8>>) -> Result<Parsed, ParseError> {
    let kind = BodyKind::Multipart {
        boundary: boundary.to_owned(),
    };
    parse(&kind, Bytes::from(body.into()))
}

fn form_encode<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut ser = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// Parts are (name, filename, content).
fn multipart_encode(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, content) in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let disposition = match filename {
            Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
            None => format!("form-data; name=\"{name}\""),
        };
        out.extend_from_slice(format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes());
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

fn text_parts<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, Option<&'a str>, &'a [u8])> {
    pairs
        .iter()
        .map(|(k, v)| (*k, None, v.as_bytes()))
        .collect()
}

fn is_malformed(r: &Result<Parsed, ParseError>) -> bool {
    matches!(r, Err(ParseError::Malformed(_)))
}

// ---- body_kind ----

#[test]
fn content_types_are_classified_case_insensitively_with_parameters() {
    let ok = |ct: &str| body_kind(Some(ct));
    assert_eq!(ok("application/json"), Ok(BodyKind::Json));
    assert_eq!(ok("Application/JSON; charset=UTF-8"), Ok(BodyKind::Json));
    assert_eq!(ok("application/vnd.api+json"), Ok(BodyKind::Json));
    assert_eq!(
        ok("application/x-www-form-urlencoded;charset=utf-8"),
        Ok(BodyKind::Form)
    );
    assert_eq!(
        ok("multipart/form-data; boundary=----abc123"),
        Ok(BodyKind::Multipart {
            boundary: "----abc123".into()
        })
    );
    assert_eq!(
        ok("MULTIPART/FORM-DATA; Boundary=\"a;b c\"; charset=utf-8"),
        Ok(BodyKind::Multipart {
            boundary: "a;b c".into()
        })
    );
}

#[test]
fn missing_and_unsupported_content_types_are_415() {
    let unsupported =
        |ct: Option<&str>| matches!(body_kind(ct), Err(ParseError::UnsupportedContentType(_)));
    assert!(unsupported(None));
    for ct in [
        "",
        "text/plain",
        "application/xml",
        "application/jsonx",
        "multipart/mixed; boundary=x",
        "application/json; charset=iso-8859-1",
        "*/*",
    ] {
        assert!(unsupported(Some(ct)), "{ct}");
    }
    let huge = format!("text/{}", "x".repeat(100_000));
    let Err(err) = body_kind(Some(&huge)) else {
        panic!("accepted")
    };
    assert!(err.to_string().len() < 300);
}

#[test]
fn a_missing_or_bad_boundary_is_a_400_from_parse() {
    let kind = body_kind(Some("multipart/form-data")).unwrap();
    assert_eq!(
        kind,
        BodyKind::Multipart {
            boundary: "".into()
        }
    );
    assert!(is_malformed(&parse(&kind, Bytes::from_static(b"--\r\n"))));
    assert!(is_malformed(&multipart_body(&"b".repeat(71), "x")));
}

// ---- the sample payload in each body kind ----

#[test]
fn json_sample_fills_every_slot_and_keeps_extras() {
    let p = json_body(SAMPLE_JSON).unwrap();
    assert_eq!(p.submission, sample_submission());
    assert!(p.type_errors.is_empty());
}

#[test]
fn form_sample_fills_every_slot_and_keeps_extras() {
    let p = form_body(form_encode(sample_pairs())).unwrap();
    assert_eq!(p.submission, sample_submission());
    assert!(p.type_errors.is_empty());
}

#[test]
fn multipart_sample_fills_every_slot_and_keeps_extras() {
    let pairs = sample_pairs();
    let body = multipart_encode("X-BOUNDARY-42", &text_parts(&pairs));
    let p = multipart_body("X-BOUNDARY-42", body).unwrap();
    assert_eq!(p.submission, sample_submission());
    assert!(p.type_errors.is_empty());
}

#[test]
fn every_documented_field_is_recognised_in_every_kind() {
    let pairs: Vec<(&str, &str)> = FIELD_NAMES.iter().map(|n| (*n, *n)).collect();
    let json = serde_json::to_string(&BTreeMap::from_iter(pairs.iter().copied())).unwrap();
    let multipart = multipart_encode("b", &text_parts(&pairs));
    for p in [
        json_body(json).unwrap(),
        form_body(form_encode(pairs.iter().copied())).unwrap(),
        multipart_body("b", multipart).unwrap(),
    ] {
        assert!(p.submission.custom.is_empty());
        let mut sub = p.submission;
        for name in FIELD_NAMES {
            assert_eq!(sub.slot_mut(name).unwrap().as_deref(), Some(name));
        }
    }
}

// ---- values ----

#[test]
fn is_auto_and_status_accept_numbers_and_numeric_strings() {
    for (body, want) in [
        (r#"{"is_auto": 1, "status": 0}"#, ("1", "0")),
        (r#"{"is_auto": "1", "status": "0"}"#, ("1", "0")),
        (r#"{"is_auto": 1.0, "status": -0}"#, ("1.0", "-0")),
        (r#"{"is_auto": 1E2, "status": 0.5e-3}"#, ("1E2", "0.5e-3")),
        (r#"{"is_auto": true, "status": false}"#, ("true", "false")),
    ] {
        let p = json_body(body).unwrap();
        assert_eq!(p.submission.is_auto.as_deref(), Some(want.0), "{body}");
        assert_eq!(p.submission.status.as_deref(), Some(want.1), "{body}");
    }
    let p = form_body("is_auto=1&status=1").unwrap();
    assert_eq!(p.submission.is_auto.as_deref(), Some("1"));
    assert_eq!(p.submission.status.as_deref(), Some("1"));
}

#[test]
fn huge_numbers_keep_their_exact_text() {
    let big = "123456789012345678901234567890";
    let body = format!(r#"{{"is_auto": {big}, "status": 1e400, "team_id_field": -1e-400}}"#);
    let p = json_body(body).unwrap();
    assert_eq!(p.submission.is_auto.as_deref(), Some(big));
    assert_eq!(p.submission.status.as_deref(), Some("1e400"));
    assert_eq!(p.submission.team_id.as_deref(), Some("-1e-400"));
    assert!(p.type_errors.is_empty());
}

#[test]
fn custom_numbers_stay_numbers_unless_a_number_would_change_them() {
    let body = r#"{"a": 250, "b": -7, "c": 18446744073709551615, "d": 2.5,
        "e": 123456789012345678901234567890, "f": 1e400,
        "g": {"deep": [1, 99999999999999999999999, {"z": null, "y": true}]}}"#;
    let c = json_body(body).unwrap().submission.custom;
    assert_eq!(c["a"], json!(250));
    assert_eq!(c["b"], json!(-7));
    assert_eq!(c["c"], json!(u64::MAX));
    assert_eq!(c["d"], json!(2.5));
    assert_eq!(c["e"], json!("123456789012345678901234567890"));
    assert_eq!(c["f"], json!("1e400"));
    assert_eq!(
        c["g"],
        json!({"deep": [1, "99999999999999999999999", {"y": true, "z": null}]})
    );
    // serde_json's own float reading (`-0` is -0.0; a big exponent may be an ulp off).
    let c = json_body(r#"{"a": -0, "b": 7.66e223}"#)
        .unwrap()
        .submission
        .custom;
    assert_eq!(c["a"], json!(-0.0));
    assert!(c["b"].is_f64());
    // Digits inside strings, escaped quotes included, are text and left alone.
    let body = r#"{"s": ["12345678901234567890123 x", "\"99999999999999999999999\"", -1e999]}"#;
    let c = json_body(body).unwrap().submission.custom;
    assert_eq!(
        c["s"],
        json!([
            "12345678901234567890123 x",
            "\"99999999999999999999999\"",
            "-1e999"
        ])
    );
}

#[test]
fn null_is_absent_and_strings_are_not_trimmed() {
    let p = json_body(r#"{"email_field": null, "name_field": "  Jo  ", "x": null}"#).unwrap();
    assert_eq!(p.submission.email, None);
    assert_eq!(p.submission.name.as_deref(), Some("  Jo  "));
    assert_eq!(p.submission.custom["x"], Value::Null);
    assert!(p.type_errors.is_empty());
}

#[test]
fn non_scalar_documented_fields_become_type_errors_not_parse_errors() {
    let body = r#"{"phone_field": ["1"], "name_field": {"first": "Jo"}, "email_field": [],
        "hookName": "h", "tags": ["a", "b"]}"#;
    let p = json_body(body).unwrap();
    assert_eq!(
        p.type_errors,
        vec!["name_field", "phone_field", "email_field"]
    );
    assert_eq!(p.submission.phone, None);
    assert_eq!(p.submission.name, None);
    assert_eq!(p.submission.hook_name.as_deref(), Some("h"));
    assert!(!p.submission.custom.contains_key("phone_field"));
    assert_eq!(p.submission.custom["tags"], json!(["a", "b"]));
}

// ---- hostile input ----

#[test]
fn ten_thousand_levels_of_nesting_are_a_400_wherever_they_are() {
    let deep = |open: &str, close: &str| format!("{}{}", open.repeat(10_000), close.repeat(10_000));
    for body in [
        deep("[", "]"),
        format!(r#"{{"x": {}}}"#, deep("[", "]")),
        format!(r#"{{"name_field": {}}}"#, deep("[", "]")),
        format!(
            r#"{{"x": {}1{}}}"#,
            r#"{"a":"#.repeat(10_000),
            "}".repeat(10_000)
        ),
        // Unbalanced: still refused before anything recurses.
        format!(r#"{{"x": {}"#, "[".repeat(10_000)),
    ] {
        assert!(is_malformed(&json_body(body)));
    }
}

#[test]
fn nesting_up_to_the_limit_is_accepted() {
    let ok = format!(
        r#"{{"x": {}{}}}"#,
        "[".repeat(MAX_DEPTH - 1),
        "]".repeat(MAX_DEPTH - 1)
    );
    assert!(json_body(ok).is_ok());
    let too_deep = format!(
        r#"{{"x": {}{}}}"#,
        "[".repeat(MAX_DEPTH),
        "]".repeat(MAX_DEPTH)
    );
    assert!(is_malformed(&json_body(too_deep)));
    // Brackets inside strings are text, not nesting.
    let in_string = format!(r#"{{"x": "{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
    assert!(json_body(in_string).is_ok());
}

#[test]
fn invalid_utf8_is_a_400_in_every_kind() {
    assert!(is_malformed(&json_body(
        b"{\"name_field\": \"\xff\"}".to_vec()
    )));
    assert!(is_malformed(&form_body(b"name_field=\xc3".to_vec())));
    assert!(is_malformed(&form_body("name_field=%FF%FE")));
    assert!(is_malformed(&form_body("%C3=x")));
    let body = multipart_encode("b", &[("name_field", None, b"\xff\xfe")]);
    assert!(is_malformed(&multipart_body("b", body)));
    // A lone surrogate escape is not a string either.
    assert!(is_malformed(&json_body(r#"{"name_field": "\ud800"}"#)));
}

#[test]
fn nul_bytes_are_kept_where_they_are_legal() {
    let p = json_body(r#"{"name_field": "a\u0000b", "x": "\u0000"}"#).unwrap();
    assert_eq!(p.submission.name.as_deref(), Some("a\0b"));
    assert_eq!(p.submission.custom["x"], json!("\0"));
    // Raw control characters are not legal inside JSON strings.
    assert!(is_malformed(&json_body(
        b"{\"name_field\": \"a\0b\"}".to_vec()
    )));

    let p = form_body(b"name_field=a\0b&phone_field=%00".to_vec()).unwrap();
    assert_eq!(p.submission.name.as_deref(), Some("a\0b"));
    assert_eq!(p.submission.phone.as_deref(), Some("\0"));

    let body = multipart_encode("b", &[("name_field", None, b"a\0b")]);
    let p = multipart_body("b", body).unwrap();
    assert_eq!(p.submission.name.as_deref(), Some("a\0b"));
}

#[test]
fn duplicate_keys_last_one_wins() {
    let p = json_body(r#"{"name_field": "a", "name_field": "b", "x": 1, "x": 2}"#).unwrap();
    assert_eq!(p.submission.name.as_deref(), Some("b"));
    assert_eq!(p.submission.custom["x"], json!(2));

    let p = json_body(r#"{"phone_field": [], "phone_field": "1"}"#).unwrap();
    assert_eq!(p.submission.phone.as_deref(), Some("1"));
    assert!(p.type_errors.is_empty());

    let p = json_body(r#"{"phone_field": "1", "phone_field": {}}"#).unwrap();
    assert_eq!(p.submission.phone, None);
    assert_eq!(p.type_errors, vec!["phone_field"]);

    let p = json_body(r#"{"email_field": "a@b.c", "email_field": null}"#).unwrap();
    assert_eq!(p.submission.email, None);

    let p = form_body("name_field=a&name_field=b&x=1&x=2").unwrap();
    assert_eq!(p.submission.name.as_deref(), Some("b"));
    assert_eq!(p.submission.custom["x"], json!("2"));

    let body = multipart_encode(
        "b",
        &[
            ("name_field", Some("cv.pdf"), b"%PDF"),
            ("name_field", None, b"Jo"),
            ("x", None, b"1"),
            ("x", None, b"2"),
        ],
    );
    let p = multipart_body("b", body).unwrap();
    assert_eq!(p.submission.name.as_deref(), Some("Jo"));
    assert_eq!(p.submission.custom["x"], json!("2"));
    assert!(p.type_errors.is_empty());
}

#[test]
fn ten_thousand_multipart_parts_are_a_400() {
    let names: Vec<String> = (0..10_000).map(|i| format!("f{i}")).collect();
    let parts: Vec<_> = names
        .iter()
        .map(|n| (n.as_str(), None, &b"v"[..]))
        .collect();
    let r = multipart_body("b", multipart_encode("b", &parts));
    assert_eq!(
        r,
        Err(ParseError::Malformed(format!(
            "more than {MAX_PARTS} multipart parts"
        )))
    );
    let p = multipart_body("b", multipart_encode("b", &parts[..MAX_PARTS])).unwrap();
    assert_eq!(p.submission.custom.len(), MAX_PARTS);
}

#[test]
fn an_oversized_part_is_a_400() {
    let limit = usize::try_from(MAX_PART_BYTES).unwrap();
    let just_fits = vec![b'a'; limit];
    let body = multipart_encode("b", &[("message_field", None, &just_fits)]);
    assert!(multipart_body("b", body).is_ok());
    let too_big = vec![b'a'; limit + 1];
    for filename in [None, Some("big.bin")] {
        let body = multipart_encode("b", &[("message_field", filename, &too_big)]);
        assert!(is_malformed(&multipart_body("b", body)));
    }
}

#[test]
fn file_parts_are_recorded_without_their_bytes() {
    let body = multipart_encode(
        "b",
        &[
            ("resume", Some("cv.pdf"), b"\x00\xff binary"),
            ("phone_field", Some("phone.txt"), b"123"),
        ],
    );
    let p = multipart_body("b", body).unwrap();
    assert_eq!(
        p.submission.custom["resume"],
        json!({"filename": "cv.pdf", "size": 9})
    );
    assert_eq!(p.submission.phone, None);
    assert_eq!(p.type_errors, vec!["phone_field"]);
}

#[test]
fn broken_multipart_bodies_are_400s() {
    for body in [
        &b""[..],
        b"no boundary here",
        b"--b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nunterminated",
        b"--b\r\nContent-Disposition: form-data\r\n\r\nnameless\r\n--b--\r\n",
        b"--b\r\nno headers end",
    ] {
        assert!(is_malformed(&multipart_body("b", body)), "{body:?}");
    }
}

#[test]
fn a_top_level_that_is_not_an_object_is_a_400() {
    for body in [
        "",
        "   ",
        "[]",
        "\"x\"",
        "1",
        "null",
        "true",
        "{} trailing",
        "{",
        "{\"a\"}",
    ] {
        assert!(is_malformed(&json_body(body)), "{body:?}");
    }
    assert!(json_body("\u{feff} {}").is_ok());
    assert!(json_body(" \n{}\n").is_ok());
}

#[test]
fn errors_do_not_echo_huge_input() {
    let huge = "A".repeat(200_000);
    for r in [
        json_body(format!("{{\"x\": {huge}}}")),
        json_body(format!("{{\"{huge}\": ")),
        json_body(format!("\"{huge}\"")),
        multipart_body("b", multipart_encode("b", &[(&huge, None, b"\xff")])),
        multipart_body(
            "b",
            format!("--b\r\nContent-Disposition: form-data; name=\"{huge}\"\r\n\r\nx"),
        ),
    ] {
        let Err(e) = r else { panic!("accepted") };
        assert!(e.to_string().len() < 300, "{e}");
    }
}

#[test]
fn form_decoding_follows_the_url_standard() {
    let p =
        form_body("name_field=Jo+Doe%21&message_field=100%25+sure%zz%&flag&&=empty&x=a=b").unwrap();
    assert_eq!(p.submission.name.as_deref(), Some("Jo Doe!"));
    assert_eq!(p.submission.message.as_deref(), Some("100% sure%zz%"));
    assert_eq!(p.submission.custom["flag"], json!(""));
    assert_eq!(p.submission.custom[""], json!("empty"));
    assert_eq!(p.submission.custom["x"], json!("a=b"));
    assert_eq!(form_body("").unwrap(), Parsed::default());
}

// ---- canonical ----

#[test]
fn canonical_ignores_key_order_boundary_and_body_kind() {
    let reordered = r#"{"utm_source": "google", "team_id_field": "team_001", "status": "1",
        "is_auto": "1", "time_submitted_field": "14:30:00", "date_submitted_field": "2025-01-30",
        "page_name_field": "Demo Page", "page_url_field": "https://example.com/demo",
        "size_field": "Medium", "message_field": "Looking for a demo.", "industry_field": "Software",
        "ip_address_field": "192.168.1.1", "company_name_field": "Acme Corp",
        "email_field": "john.doe@example.com", "phone_field": "1234567890",
        "country_code_field": "+1", "name_field": "John Doe", "hookName": "captureLeadWebhook"}"#;
    let pairs = sample_pairs();
    let want = canonical(&json_body(SAMPLE_JSON).unwrap().submission);
    for p in [
        json_body(reordered).unwrap(),
        form_body(form_encode(pairs.iter().rev().copied())).unwrap(),
        multipart_body("one", multipart_encode("one", &text_parts(&pairs))).unwrap(),
        multipart_body("----two", multipart_encode("----two", &text_parts(&pairs))).unwrap(),
    ] {
        assert_eq!(canonical(&p.submission), want);
    }
    let other = json_body(SAMPLE_JSON.replace("John Doe", "Jane Doe")).unwrap();
    assert_ne!(canonical(&other.submission), want);
}

#[test]
fn canonical_is_sorted_and_keeps_documented_and_custom_apart() {
    let p = json_body(r#"{"z": {"b": 1, "a": 2}, "name_field": "Jo", "email_field": null}"#);
    let text = String::from_utf8(canonical(&p.unwrap().submission)).unwrap();
    assert_eq!(
        text,
        r#"{"custom":{"z":{"a":2,"b":1}},"fields":{"name_field":"Jo"}}"#
    );
    let documented = Submission {
        name: Some("Jo".into()),
        ..Default::default()
    };
    let mut custom = Submission::default();
    custom.custom.insert("name_field".into(), json!("Jo"));
    assert_ne!(canonical(&documented), canonical(&custom));
}

// ---- properties ----

fn documented_map() -> impl Strategy<Value = BTreeMap<&'static str, String>> {
    prop::collection::btree_map(
        prop::sample::select(&FIELD_NAMES[..]),
        any::<String>(),
        0..17,
    )
}

fn slots(sub: &Submission) -> BTreeMap<&'static str, String> {
    let mut sub = sub.clone();
    FIELD_NAMES
        .iter()
        .filter_map(|n| sub.slot_mut(n).and_then(Option::take).map(|v| (*n, v)))
        .collect()
}

fn json_in_order<'a>(pairs: impl Iterator<Item = (&'a str, &'a String)>) -> String {
    let entries: Vec<String> = pairs
        .map(|(k, v)| format!("{}:{}", json!(k), json!(v)))
        .collect();
    format!("{{{}}}", entries.join(","))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = json_body(body.clone());
        let _ = form_body(body.clone());
        let _ = multipart_body("b", body);
    }

    #[test]
    fn json_like_text_never_panics(inner in r#"[\[\]{}":,0-9a-z_\\ .eE+-]{0,300}"#) {
        let _ = json_body(format!("{{{inner}"));
        let _ = json_body(inner);
    }

    #[test]
    fn multipart_like_bodies_never_panic(pieces in prop::collection::vec(prop::sample::select(vec![
        "--b", "--b--", "\r\n", "\r\n\r\n", "Content-Disposition: form-data; name=\"x\"",
        "; filename=\"f\"", "Content-Type: text/plain", "value", "\u{0}", "\u{ff}", "-", "b",
    ]), 0..40)) {
        let _ = multipart_body("b", pieces.concat());
    }

    #[test]
    fn json_round_trips_documented_fields(map in documented_map()) {
        let p = json_body(serde_json::to_vec(&map).unwrap()).unwrap();
        prop_assert_eq!(slots(&p.submission), map);
        prop_assert!(p.submission.custom.is_empty());
        prop_assert!(p.type_errors.is_empty());
    }

    #[test]
    fn json_numbers_keep_their_text(
        int in "-?(0|[1-9][0-9]{0,40})",
        float in "-?(0|[1-9][0-9]{0,5})\\.[0-9]{1,20}([eE][+-]?[0-9]{1,4})?",
    ) {
        let p = json_body(format!(r#"{{"is_auto": {int}, "status": {float}}}"#)).unwrap();
        prop_assert_eq!(p.submission.is_auto, Some(int));
        prop_assert_eq!(p.submission.status, Some(float));
    }

    #[test]
    fn custom_numbers_are_exact_or_kept_as_text(
        int in "-?(0|[1-9][0-9]{0,40})",
        float in "-?[0-9]\\.[0-9]{1,3}[eE][+-]?[0-9]{1,3}",
    ) {
        let body = format!(r#"{{"x": [{int}, {{"y": {float}}}], "z": {int}}}"#);
        let c = json_body(body).unwrap().submission.custom;
        // serde_json reads `-0` as the float -0.0, which keeps its sign; fine.
        let fits = int.parse::<i64>().is_ok() || int.parse::<u64>().is_ok();
        let want_int: Value = if fits {
            serde_json::from_str(&int).unwrap()
        } else {
            json!(int)
        };
        // Floats are whatever serde_json makes of them (without its `float_roundtrip` feature
        // that may be off by an ulp for long mantissas or big exponents).
        let want_float = match float.parse::<f64>() {
            Ok(f) if f.is_finite() => serde_json::from_str(&float).unwrap(),
            _ => json!(float),
        };
        prop_assert_eq!(&c["x"], &json!([want_int.clone(), {"y": want_float}]));
        prop_assert_eq!(&c["z"], &want_int);
    }

    #[test]
    fn form_round_trips_documented_fields(map in documented_map()) {
        let body = form_encode(map.iter().map(|(k, v)| (*k, v.as_str())));
        let p = form_body(body).unwrap();
        prop_assert_eq!(slots(&p.submission), map);
    }

    #[test]
    fn multipart_round_trips_documented_fields(
        map in prop::collection::btree_map(
            prop::sample::select(&FIELD_NAMES[..]), "\\PC*", 0..17),
        boundary in "[A-Za-z0-9]{16}",
    ) {
        let pairs: Vec<(&str, &str)> = map.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let body = multipart_encode(&boundary, &text_parts(&pairs));
        let p = multipart_body(&boundary, body).unwrap();
        prop_assert_eq!(slots(&p.submission), map);
    }

    #[test]
    fn canonical_ignores_key_order(
        map in documented_map(),
        custom in prop::collection::btree_map("[a-z]{1,8}", any::<String>(), 0..5),
    ) {
        let all: Vec<(&str, &String)> =
            map.iter().map(|(k, v)| (*k, v)).chain(custom.iter().map(|(k, v)| (k.as_str(), v))).collect();
        let forward = json_body(json_in_order(all.iter().copied())).unwrap();
        let backward = json_body(json_in_order(all.iter().rev().copied())).unwrap();
        prop_assert_eq!(canonical(&forward.submission), canonical(&backward.submission));
    }
}
