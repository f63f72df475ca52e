//! Intake body parsing: turns the bytes of `POST /v1/webhooks/inbound` into a [`Submission`].
//!
//! Pure: no I/O, no validation. The caller enforces the byte limit first; this module only
//! ever fails with [`ParseError::UnsupportedContentType`] (415, from [`body_kind`]) or
//! [`ParseError::Malformed`] (400, from [`parse`]). Everything that is well-formed but wrong
//! (missing fields, bad values, a list where a string belongs) is left to validation (422).
//!
//! Value rules for the 17 documented fields (wire names in [`FIELD_NAMES`]):
//! - JSON string → as is (a `\u0000` escape stays a NUL character);
//! - JSON number → its text exactly as written (`1`, `1.0`, `1e400` and 30-digit integers are
//!   kept verbatim, never rounded; validation rejects what it does not like);
//! - JSON `true`/`false` → `"true"`/`"false"`; JSON `null` → absent;
//! - JSON array/object, or a multipart file part → absent, and the wire name is listed in
//!   [`Parsed::type_errors`] (spec order) so validation can answer 422 naming the field;
//! - form and multipart text values → the decoded text as is (raw NUL bytes kept).
//!
//! Custom (unknown) fields are never dropped. JSON values are kept as [`Value`]s, except
//! numbers no `Value` can hold exactly (integers beyond 64 bits, floats out of `f64` range),
//! which are kept as strings of their source text. Form and multipart text values become JSON
//! strings; a multipart file part becomes `{"filename": …, "size": n}` (its bytes are not kept).
//!
//! Duplicate keys: the last occurrence wins, in every body kind, including over an earlier type
//! error (`{"phone_field": [], "phone_field": "1"}` is clean) and an earlier value (a trailing
//! `null` makes a field absent).
//!
//! Limits: JSON nesting beyond [`MAX_DEPTH`], more than [`MAX_PARTS`] multipart parts or a part
//! over [`MAX_PART_BYTES`] are 400s. Text must be UTF-8: invalid UTF-8 anywhere in a JSON body,
//! in a decoded form key or value, or in a multipart text part is a 400.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use futures::FutureExt;
// multer's re-export is the `bytes` crate's type, without another direct dependency.
use multer::bytes::Bytes;
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::lead::{FIELD_NAMES, Submission};

/// Deeper JSON than this is refused: no lead needs it, and it keeps serde_json (recursion limit
/// 128) well inside its stack budget.
pub const MAX_DEPTH: usize = 64;
/// Most multipart parts accepted; a form with the 17 fields plus custom ones is far below.
pub const MAX_PARTS: usize = 200;
/// Largest multipart part, text or file; 64 KiB is far above any lead field.
pub const MAX_PART_BYTES: u64 = 64 * 1024;
/// Longest piece of client input quoted back in an error.
const ECHO_MAX: usize = 80;

/// How a body is encoded, from its `Content-Type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    /// The boundary is not checked here, so that a bad one is a 400 from [`parse`] after the
    /// caller's 413 check rather than a status out of the documented order.
    Multipart {
        boundary: String,
    },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    /// → 415. Holds the media type as sent (clipped), empty when the header was missing.
    #[error(
        "unsupported content type {0:?}: use application/json, \
         application/x-www-form-urlencoded or multipart/form-data"
    )]
    UnsupportedContentType(String),
    /// → 400. The message never quotes more than a few bytes of the body.
    #[error("malformed body: {0}")]
    Malformed(String),
}

/// A parsed body: the submission, plus what validation must turn into 422s.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub submission: Submission,
    /// Wire names of documented fields that came with a non-scalar value, in spec order.
    pub type_errors: Vec<&'static str>,
}

/// Classifies the `Content-Type` header. Media types and parameter names are case-insensitive;
/// a charset other than UTF-8 (or its ASCII subset) is unsupported, since we only decode UTF-8.
/// `application/*+json` counts as JSON (RFC 6839).
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind, ParseError> {
    let header = content_type.unwrap_or("").trim();
    let mut params = header.split(';');
    let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
    let charset_ok = params
        .filter_map(|p| p.split_once('='))
        .all(|(name, value)| {
            let value = value.trim().trim_matches('"').to_ascii_lowercase();
            !name.trim().eq_ignore_ascii_case("charset")
                || ["utf-8", "utf8", "us-ascii"].contains(&&*value)
        });
    let is_json = media == "application/json"
        || (media.starts_with("application/") && media.ends_with("+json"));
    match media.as_str() {
        _ if !charset_ok => Err(ParseError::UnsupportedContentType(clip(header))),
        _ if is_json => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        // multer's reading handles quoted boundaries; a missing one is left for `parse`.
        "multipart/form-data" => Ok(BodyKind::Multipart {
            boundary: multer::parse_boundary(header).unwrap_or_default(),
        }),
        _ => Err(ParseError::UnsupportedContentType(clip(header))),
    }
}

/// Parses a body of the given kind. Synchronous: the whole body is already in memory, so the
/// multipart reader never has to wait.
pub fn parse(kind: &BodyKind, body: Bytes) -> Result<Parsed, ParseError> {
    let mut out = Builder::default();
    match kind {
        BodyKind::Json => parse_json(&body, &mut out)?,
        BodyKind::Form => parse_form(&body, &mut out)?,
        BodyKind::Multipart { boundary } => {
            // An always-ready stream means multer never returns Pending; if it ever did,
            // failing cleanly beats blocking a runtime thread.
            read_multipart(body, boundary, &mut out)
                .now_or_never()
                .unwrap_or_else(|| Err(malformed("multipart body could not be read")))?
        }
    }
    Ok(out.finish())
}

/// Canonical JSON of a submission for idempotency hashing: `{"custom":{…},"fields":{…}}`,
/// keys sorted at every depth, absent fields left out. Documented and custom fields sit in
/// separate objects so a custom key can never collide with a documented one.
pub fn canonical(sub: &Submission) -> Vec<u8> {
    let mut all = sub.clone();
    let mut fields = Map::new();
    for name in FIELD_NAMES {
        if let Some(value) = all.slot_mut(name).and_then(Option::take) {
            fields.insert(name.to_owned(), Value::String(value));
        }
    }
    let custom = std::mem::take(&mut all.custom).into_iter().collect();
    let mut doc = Value::Object(Map::from_iter([
        ("custom".to_owned(), Value::Object(custom)),
        ("fields".to_owned(), Value::Object(fields)),
    ]));
    // A no-op unless some crate turns on serde_json's `preserve_order`.
    doc.sort_all_objects();
    doc.to_string().into_bytes()
}

/// Collects fields so that the last occurrence of a key wins, whatever came before it.
#[derive(Default)]
struct Builder {
    sub: Submission,
    type_errors: BTreeSet<usize>,
}

enum Field {
    Text(String),
    Absent,
    NotScalar,
}

impl Builder {
    /// Records a documented field, clearing any type error an earlier duplicate left.
    fn set(&mut self, index: usize, field: Field) {
        self.type_errors.remove(&index);
        let value = match field {
            Field::Text(text) => Some(text),
            Field::Absent => None,
            Field::NotScalar => {
                self.type_errors.insert(index);
                None
            }
        };
        if let Some(slot) = self.sub.slot_mut(FIELD_NAMES[index]) {
            *slot = value;
        }
    }

    fn text(&mut self, name: String, value: String) {
        match field_index(&name) {
            Some(index) => self.set(index, Field::Text(value)),
            None => {
                self.sub.custom.insert(name, Value::String(value));
            }
        }
    }

    fn finish(self) -> Parsed {
        Parsed {
            submission: self.sub,
            type_errors: self
                .type_errors
                .into_iter()
                .map(|i| FIELD_NAMES[i])
                .collect(),
        }
    }
}

fn field_index(name: &str) -> Option<usize> {
    FIELD_NAMES.iter().position(|n| *n == name)
}

fn parse_json(body: &[u8], out: &mut Builder) -> Result<(), ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        malformed(format!(
            "body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    // RFC 8259 lets a parser ignore a byte order mark, and some senders add one.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !text.trim_start().starts_with('{') {
        return Err(malformed("the JSON body must be an object"));
    }
    // serde_json skips raw values without a depth limit, so a deep documented field would be a
    // mere type error; checking up front makes every deep body the same 400.
    if nesting_depth(text) > MAX_DEPTH {
        return Err(malformed(format!(
            "JSON nested deeper than {MAX_DEPTH} levels"
        )));
    }
    // Raw values keep each number's source text; a BTreeMap keeps the last duplicate.
    let fields: BTreeMap<String, &RawValue> = serde_json::from_str(text).map_err(json_error)?;
    for (name, raw) in fields {
        // Values are re-read on their own, so a parser position would mislead: name the field.
        let bad_value = |_| malformed(format!("invalid JSON value for field {:?}", clip(&name)));
        let Some(index) = field_index(&name) else {
            let value = custom_value(raw).map_err(bad_value)?;
            out.sub.custom.insert(name, value);
            continue;
        };
        let json = raw.get();
        let field = match json.as_bytes().first() {
            Some(b'"') => Field::Text(serde_json::from_str(json).map_err(bad_value)?),
            Some(b'[' | b'{') => Field::NotScalar,
            Some(b'n') => Field::Absent,
            Some(b't') => Field::Text("true".to_owned()),
            Some(b'f') => Field::Text("false".to_owned()),
            // A number: the parser has checked its syntax; its text is the value.
            _ => Field::Text(json.to_owned()),
        };
        out.set(index, field);
    }
    Ok(())
}

/// The greatest bracket depth outside strings. Assumes nothing about validity: the real
/// parse afterwards rejects what is malformed.
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A custom field's value: one ordinary parse, after numbers a `Value` would round or refuse
/// have been turned into strings of their source text.
fn custom_value(raw: &RawValue) -> Result<Value, serde_json::Error> {
    serde_json::from_str(&quote_inexact_numbers(raw.get()))
}

/// Rewrites each number literal outside strings that [`exact_number`] refuses as a JSON string
/// of its text. Expects JSON the parser has already accepted.
fn quote_inexact_numbers(json: &str) -> Cow<'_, str> {
    let bytes = json.as_bytes();
    let (mut out, mut copied) = (String::new(), 0);
    let (mut i, mut in_string, mut escaped) = (0, false, false);
    while i < bytes.len() {
        let byte = bytes[i];
        i += 1;
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else if byte == b'"' {
            in_string = true;
        } else if byte == b'-' || byte.is_ascii_digit() {
            let start = i - 1;
            let is_number_byte =
                |b: &u8| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E');
            i = bytes[start..]
                .iter()
                .position(|b| !is_number_byte(b))
                .map_or(bytes.len(), |n| start + n);
            let token = &json[start..i];
            if exact_number(token).is_none() {
                out.push_str(&json[copied..start]);
                out.push('"');
                out.push_str(token);
                out.push('"');
                copied = i;
            }
        }
    }
    if copied == 0 {
        return Cow::Borrowed(json);
    }
    out.push_str(&json[copied..]);
    Cow::Owned(out)
}

/// Integers within 64 bits and finite floats (what JSON numbers mean to most parsers); `None`
/// for what a `Number` would round (longer integers) or refuse (out of `f64` range).
fn exact_number(token: &str) -> Option<Number> {
    if token.contains(['.', 'e', 'E']) {
        token.parse::<f64>().ok().and_then(Number::from_f64)
    } else {
        token
            .parse::<i64>()
            .map(Number::from)
            .or_else(|_| token.parse::<u64>().map(Number::from))
            .ok()
    }
}

/// `serde_json` syntax messages are fixed texts plus a position; data errors may quote the
/// input, so those get a generic message.
fn json_error(e: serde_json::Error) -> ParseError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof => malformed(format!("invalid JSON: {e}")),
        Category::Data | Category::Io => malformed(format!(
            "invalid JSON at line {} column {}",
            e.line(),
            e.column()
        )),
    }
}

fn parse_form(body: &[u8], out: &mut Builder) -> Result<(), ParseError> {
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (name, value) = match pair.iter().position(|b| *b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &[][..]),
        };
        let name = form_decode(name)?;
        let value = form_decode(value)?;
        out.text(name, value);
    }
    Ok(())
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space, `%XY` a byte, a stray `%`
/// stays literal), but strict about UTF-8 where `form_urlencoded` would substitute U+FFFD.
fn form_decode(input: &[u8]) -> Result<String, ParseError> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut bytes = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let byte = match input[i] {
            b'+' => b' ',
            b'%' => match (
                input.get(i + 1).and_then(|b| hex(*b)),
                input.get(i + 2).and_then(|b| hex(*b)),
            ) {
                (Some(hi), Some(lo)) => {
                    i += 2;
                    (hi * 16 + lo) as u8
                }
                _ => b'%',
            },
            other => other,
        };
        bytes.push(byte);
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| malformed("form field is not valid UTF-8"))
}

async fn read_multipart(body: Bytes, boundary: &str, out: &mut Builder) -> Result<(), ParseError> {
    // RFC 2046: 1 to 70 characters; anything else is a broken client, not a lead.
    if boundary.is_empty() || boundary.len() > 70 || boundary.contains(['\r', '\n']) {
        return Err(malformed(
            "multipart/form-data needs a boundary of 1 to 70 characters",
        ));
    }
    let limits = multer::SizeLimit::new().per_field(MAX_PART_BYTES);
    let stream = futures::stream::iter([Ok::<_, Infallible>(body)]);
    let mut parts = multer::Multipart::with_constraints(
        stream,
        boundary,
        multer::Constraints::new().size_limit(limits),
    );
    let mut count = 0;
    while let Some(mut part) = parts.next_field().await.map_err(multipart_error)? {
        count += 1;
        if count > MAX_PARTS {
            return Err(malformed(format!("more than {MAX_PARTS} multipart parts")));
        }
        let name = part
            .name()
            .map(str::to_owned)
            .ok_or_else(|| malformed("a multipart part has no name"))?;
        let Some(filename) = part.file_name().map(str::to_owned) else {
            let bytes = part.bytes().await.map_err(multipart_error)?;
            let value = String::from_utf8(bytes.into()).map_err(|_| {
                malformed(format!(
                    "multipart part {:?} is not valid UTF-8",
                    clip(&name)
                ))
            })?;
            out.text(name, value);
            continue;
        };
        // Files are not part of the contract: note that one came, but keep none of its bytes.
        let mut size = 0u64;
        while let Some(chunk) = part.chunk().await.map_err(multipart_error)? {
            size += chunk.len() as u64;
        }
        if let Some(index) = field_index(&name) {
            out.set(index, Field::NotScalar);
        } else {
            let file = Map::from_iter([
                ("filename".to_owned(), Value::String(filename)),
                ("size".to_owned(), Value::Number(size.into())),
            ]);
            out.sub.custom.insert(name, Value::Object(file));
        }
    }
    Ok(())
}

fn multipart_error(e: multer::Error) -> ParseError {
    match e {
        multer::Error::FieldSizeExceeded { .. } => {
            malformed(format!("a multipart part is over {MAX_PART_BYTES} bytes"))
        }
        other => malformed(clip(&format!("invalid multipart body: {other}"))),
    }
}

fn malformed(message: impl Into<String>) -> ParseError {
    ParseError::Malformed(message.into())
}

/// At most [`ECHO_MAX`] characters of client input, so errors stay small.
fn clip(text: &str) -> String {
    match text.char_indices().nth(ECHO_MAX) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
