//! The Twilio provider: creates calls through the Calls API, and the pieces of Twilio's
//! protocol the rest of leadflow needs ([`signature`], [`twiml`], [`parse_status`]).
//!
//! Failures are classified by whether the call may exist: a request that never reached
//! Twilio, or that Twilio answered 5xx/429, is [`PlaceError::Transient`]; a 4xx is
//! [`PlaceError::Permanent`]; a request that went out and got no usable answer is
//! [`PlaceError::Unknown`], because Twilio takes no idempotency key and a blind retry could
//! ring the lead twice.

mod signature;
mod status;
mod twiml;

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;

pub use signature::{signature, verify};
pub use status::{StatusFormError, parse_status};
pub use twiml::{MAX_SIMULTANEOUS, dial_connected, twiml, twiml_hangup, twiml_sequence_leg};

use super::{
    CallRequest, ListFuture, ListedCall, PlaceError, PlaceFuture, Placed, Provider, StatusEvent,
    StatusFuture, mask_phone, redact_phones,
};

pub const DEFAULT_API_BASE: &str = "https://api.twilio.com";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The progress events leadflow subscribes to; Twilio sends only `completed` by default.
pub const STATUS_CALLBACK_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

#[derive(Clone)]
pub struct TwilioConfig {
    pub account_sid: String,
    pub auth_token: String,
    /// Scheme and host, no trailing path: tests point it at a local fake.
    pub api_base: String,
    /// TCP + TLS setup. Must be shorter than `request_timeout`, so that a stalled connect is
    /// reported as one (nothing sent) rather than as a request timeout (maybe sent).
    pub connect_timeout: Duration,
    /// The whole exchange, connect included.
    pub request_timeout: Duration,
}

impl fmt::Debug for TwilioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioConfig")
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("api_base", &self.api_base)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is not set; it is required with LEADFLOW_TELEPHONY=twilio")]
    Missing(&'static str),
    #[error("TWILIO_ACCOUNT_SID must be letters and digits (AC…), got {0:?}")]
    AccountSid(String),
    #[error("TWILIO_API_BASE {value:?} is not an http(s) base URL: {reason}")]
    ApiBase { value: String, reason: String },
    #[error(
        "Twilio timeouts: connect ({connect:?}) must be non-zero and below the request timeout ({request:?})"
    )]
    Timeouts {
        connect: Duration,
        request: Duration,
    },
    #[error("could not build the HTTP client for Twilio: {0}")]
    Client(#[source] reqwest::Error),
}

impl TwilioConfig {
    /// Credentials with the default host and timeouts.
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        TwilioConfig {
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            api_base: DEFAULT_API_BASE.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// `TWILIO_ACCOUNT_SID`, `TWILIO_AUTH_TOKEN` and optionally `TWILIO_API_BASE`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |name: &'static str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(ConfigError::Missing(name))
        };
        let mut config = TwilioConfig::new(
            required("TWILIO_ACCOUNT_SID")?,
            required("TWILIO_AUTH_TOKEN")?,
        );
        if let Some(base) = get("TWILIO_API_BASE").filter(|v| !v.trim().is_empty()) {
            config.api_base = base;
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let sid = &self.account_sid;
        if sid.is_empty() || !sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::AccountSid(sid.clone()));
        }
        if self.auth_token.is_empty() {
            return Err(ConfigError::Missing("TWILIO_AUTH_TOKEN"));
        }
        let bad_base = |reason: &str| ConfigError::ApiBase {
            value: self.api_base.clone(),
            reason: reason.to_owned(),
        };
        let base = url::Url::parse(&self.api_base).map_err(|e| bad_base(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host().is_none() {
            return Err(bad_base("want http:// or https:// and a host"));
        }
        if base.query().is_some() || !base.path().trim_end_matches('/').is_empty() {
            return Err(bad_base(
                "want no path or query; leadflow adds /2010-04-01/…",
            ));
        }
        if self.connect_timeout.is_zero() || self.connect_timeout >= self.request_timeout {
            return Err(ConfigError::Timeouts {
                connect: self.connect_timeout,
                request: self.request_timeout,
            });
        }
        Ok(())
    }

    fn calls_url(&self) -> String {
        format!(
            "{}/2010-04-01/Accounts/{}/Calls.json",
            self.api_base.trim_end_matches('/'),
            self.account_sid
        )
    }
}

/// Places calls with Twilio's Calls API.
pub struct Twilio {
    config: TwilioConfig,
    http: reqwest::Client,
    calls_url: String,
}

impl Twilio {
    pub fn new(config: TwilioConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            // A 307/308 would re-POST the call to another host: never follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leadflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ConfigError::Client)?;
        let calls_url = config.calls_url();
        Ok(Twilio {
            config,
            http,
            calls_url,
        })
    }

    pub fn config(&self) -> &TwilioConfig {
        &self.config
    }

    async fn create_call(&self, req: &CallRequest) -> Result<Placed, PlaceError> {
        let result = self.post(req).await;
        let to = mask_phone(&req.to);
        match &result {
            Ok(placed) => tracing::info!(
                provider = "twilio", attempt_id = %req.attempt_id, to, call_sid = placed.call_sid,
                status = placed.status, "call placed"
            ),
            Err(error) => tracing::warn!(
                provider = "twilio", attempt_id = %req.attempt_id, to, %error, "call not placed"
            ),
        }
        result
    }

    async fn post(&self, req: &CallRequest) -> Result<Placed, PlaceError> {
        let response = self
            .http
            .post(&self.calls_url)
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .form(&call_form(req))
            .send()
            .await
            .map_err(|e| classify_send_error(&e, self.config.request_timeout))?;
        let status = response.status();
        match response.bytes().await {
            Ok(body) => interpret(status, &body),
            // Twilio has already decided; only a success leaves us not knowing the sid.
            Err(e) if status.is_success() => Err(PlaceError::Unknown(format!(
                "Twilio answered {status} but its body was lost: {}",
                error_chain(&e)
            ))),
            Err(_) => interpret(status, b""),
        }
    }
}

impl Provider for Twilio {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn place<'a>(&'a self, req: &'a CallRequest) -> PlaceFuture<'a> {
        Box::pin(self.create_call(req))
    }

    fn status<'a>(&'a self, call_sid: &'a str) -> StatusFuture<'a> {
        Box::pin(self.fetch_call(call_sid))
    }

    fn calls_to<'a>(&'a self, to: &'a str, since: jiff::Timestamp) -> ListFuture<'a> {
        // The whole lookup, every page included, within one request's timeout.
        let limit = self.config.request_timeout;
        Box::pin(async move {
            tokio::time::timeout(limit, self.list_calls(to, since))
                .await
                .unwrap_or_else(|_| {
                    Err(PlaceError::Transient(format!(
                        "Twilio's call list did not arrive within {limit:?}"
                    )))
                })
        })
    }
}

/// Pages of a call list read at most: a lead's number gets a handful of calls a day, so more
/// means a filter was ignored, and the lookup must stay bounded in time.
const MAX_LIST_PAGES: usize = 5;

/// One page of `GET …/Calls.json`.
#[derive(Deserialize)]
struct CallPage {
    #[serde(default)]
    calls: Vec<ListedResource>,
    next_page_uri: Option<String>,
}

/// A call in a list (the fields leadflow reads). Twilio's resource has no `url`: the TwiML
/// URL a call was created with is not listed.
#[derive(Deserialize)]
struct ListedResource {
    sid: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    from: String,
    /// RFC 2822, e.g. `Mon, 07 Dec 2026 20:40:24 +0000`.
    date_created: Option<String>,
    status: Option<String>,
    answered_by: Option<String>,
    duration: Option<String>,
}

impl ListedResource {
    /// `None` for an entry without a creation date leadflow can read: it cannot be matched to
    /// an attempt's time, so it is not taken as one.
    fn into_listed(self) -> Option<ListedCall> {
        let created = jiff::fmt::rfc2822::parse(self.date_created.as_deref()?)
            .ok()?
            .timestamp();
        Some(ListedCall {
            call_sid: self.sid,
            to: self.to,
            from: self.from,
            created,
            attempt_id: None,
            status: self.status.as_deref().and_then(|s| s.parse().ok()),
            answered_by: self.answered_by,
            duration: self.duration.and_then(|d| d.parse().ok()),
        })
    }
}

impl Twilio {
    /// `GET …/Calls.json?To={to}&StartTime>={date}`, following `next_page_uri` within this
    /// account's Calls list only (never to another host or path).
    async fn list_calls(
        &self,
        to: &str,
        since: jiff::Timestamp,
    ) -> Result<Vec<ListedCall>, PlaceError> {
        let day = since.strftime("%Y-%m-%d").to_string();
        let failed = |what: String| {
            PlaceError::Transient(format!(
                "could not list Twilio's calls to {}: {what}",
                mask_phone(to)
            ))
        };
        let first = reqwest::Url::parse_with_params(
            &self.calls_url,
            [("To", to), ("StartTime>", day.as_str()), ("PageSize", "50")],
        )
        .map_err(|e| failed(e.to_string()))?;
        let list_path = format!(
            "/2010-04-01/Accounts/{}/Calls.json",
            self.config.account_sid
        );
        let mut next = Some(first);
        let mut calls = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let Some(url) = next.take() else {
                return Ok(calls);
            };
            let response = self
                .http
                .get(url)
                .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
                .send()
                .await
                .map_err(|e| failed(error_chain(&e)))?;
            let status = response.status();
            let body = response
                .bytes()
                .await
                .map_err(|e| failed(error_chain(&e)))?;
            if !status.is_success() {
                return Err(failed(format!(
                    "Twilio answered {status}: {}",
                    snippet(&body)
                )));
            }
            let page: CallPage = serde_json::from_slice(&body)
                .map_err(|e| failed(format!("unreadable page: {e}")))?;
            calls.extend(
                page.calls
                    .into_iter()
                    .filter_map(ListedResource::into_listed),
            );
            next = match page.next_page_uri {
                None => None,
                // A page left unread could hold the call: the list counts only when whole.
                Some(uri) if !uri.starts_with(&list_path) => {
                    return Err(failed(format!("a next page outside the Calls list: {uri}")));
                }
                Some(uri) => Some(
                    reqwest::Url::parse(&self.calls_url)
                        .and_then(|base| base.join(&uri))
                        .map_err(|e| failed(e.to_string()))?,
                ),
            };
        }
        match next {
            None => Ok(calls),
            Some(_) => Err(failed(format!("more than {MAX_LIST_PAGES} pages"))),
        }
    }
}

/// The Call resource as `GET …/Calls/{sid}.json` returns it (the fields leadflow reads).
#[derive(Deserialize)]
struct CallResource {
    status: Option<String>,
    answered_by: Option<String>,
    duration: Option<String>,
}

impl Twilio {
    async fn fetch_call(&self, call_sid: &str) -> Result<Option<StatusEvent>, PlaceError> {
        // A sid is letters and digits; anything else must not reach the URL path.
        if call_sid.is_empty() || !call_sid.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let url = format!(
            "{}/{call_sid}.json",
            self.calls_url.trim_end_matches(".json")
        );
        let response = self
            .http
            .get(&url)
            .basic_auth(&self.config.account_sid, Some(&self.config.auth_token))
            .send()
            .await
            .map_err(|e| {
                PlaceError::Transient(format!(
                    "could not ask Twilio about {call_sid}: {}",
                    error_chain(&e)
                ))
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(PlaceError::Transient(format!(
                "Twilio answered {status} about call {call_sid}: {}",
                snippet(&body)
            )));
        }
        let call: CallResource = serde_json::from_slice(&body).map_err(|e| {
            PlaceError::Transient(format!("Twilio's call {call_sid} did not parse: {e}"))
        })?;
        let Some(call_status) = call.status.as_deref().and_then(|s| s.parse().ok()) else {
            return Ok(None);
        };
        Ok(Some(StatusEvent {
            call_sid: call_sid.to_owned(),
            call_status,
            sequence_number: None,
            answered_by: call.answered_by,
            call_duration: call.duration.and_then(|d| d.parse().ok()),
            sip_response_code: None,
            error_code: None,
        }))
    }
}

/// The Calls API form. `StatusCallbackEvent` repeats, as Twilio's own SDKs send a list.
fn call_form(req: &CallRequest) -> Vec<(&'static str, String)> {
    let mut form = vec![
        ("To", req.to.clone()),
        ("From", req.from.clone()),
        ("Url", req.twiml_url.clone()),
        ("Method", "POST".to_owned()),
        ("StatusCallback", req.status_callback.clone()),
        ("StatusCallbackMethod", "POST".to_owned()),
    ];
    form.extend(STATUS_CALLBACK_EVENTS.map(|e| ("StatusCallbackEvent", e.to_owned())));
    // Twilio's ceiling is 600 s; below 1 s would mean "use your default".
    let ring = req.timeout.as_secs().clamp(1, 600);
    form.push(("Timeout", ring.to_string()));
    form.push(("MachineDetection", "Enable".to_owned()));
    form
}

/// Maps a failed `send()`. Only a connect failure proves nothing was sent: reqwest raises
/// `is_connect` for refused connections, DNS and TLS failures and an expired connect timeout.
/// Every other transport error (request timeout, connection reset or closed mid-exchange)
/// may come after Twilio read the request.
fn classify_send_error(e: &reqwest::Error, request_timeout: Duration) -> PlaceError {
    let detail = error_chain(e);
    if e.is_builder() {
        PlaceError::Permanent(format!("could not build the Twilio request: {detail}"))
    } else if e.is_connect() {
        PlaceError::Transient(format!("could not connect to Twilio: {detail}"))
    } else if e.is_timeout() {
        PlaceError::Unknown(format!(
            "no answer from Twilio within {request_timeout:?} after sending the call: {detail}"
        ))
    } else {
        PlaceError::Unknown(format!(
            "the exchange with Twilio broke off after sending: {detail}"
        ))
    }
}

#[derive(Deserialize)]
struct CreatedCall {
    sid: Option<String>,
    status: Option<String>,
}

/// Twilio's error body: `{"code":21211,"message":"…","more_info":"…","status":400}`.
#[derive(Deserialize)]
struct TwilioError {
    code: Option<u32>,
    message: Option<String>,
}

fn interpret(status: reqwest::StatusCode, body: &[u8]) -> Result<Placed, PlaceError> {
    if status.is_success() {
        let created: Option<CreatedCall> = serde_json::from_slice(body).ok();
        return match created {
            Some(CreatedCall {
                sid: Some(sid),
                status: call_status,
            }) if !sid.is_empty() => Ok(Placed {
                call_sid: sid,
                status: call_status.unwrap_or_else(|| "queued".to_owned()),
            }),
            _ => Err(PlaceError::Unknown(format!(
                "Twilio answered {status} without a call sid: {}",
                snippet(body)
            ))),
        };
    }
    let message = match serde_json::from_slice::<TwilioError>(body) {
        Ok(TwilioError {
            code: Some(code),
            message: Some(m),
        }) => {
            format!("Twilio {status}, error {code}: {}", redact_phones(&m))
        }
        Ok(TwilioError {
            message: Some(m), ..
        }) => format!("Twilio {status}: {}", redact_phones(&m)),
        _ => format!("Twilio {status}: {}", snippet(body)),
    };
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Err(PlaceError::Transient(message))
    } else {
        // 4xx, and 1xx/3xx that a correctly configured base URL never produces: retrying
        // the same request cannot change the answer.
        Err(PlaceError::Permanent(message))
    }
}

/// The start of a body for an error message, with phone numbers masked.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let cut: String = text.chars().take(200).collect();
    if cut.is_empty() {
        "(empty body)".to_owned()
    } else {
        redact_phones(&cut)
    }
}

/// reqwest's Display stops at "error sending request"; the cause is in the sources.
fn error_chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    fn request() -> CallRequest {
        CallRequest {
            attempt_id: uuid::Uuid::nil(),
            to: "+14155550123".into(),
            from: "+14155550100".into(),
            twiml_url: "https://lf.test/v1/telephony/twilio/twiml/a?sig=s".into(),
            status_callback: "https://lf.test/v1/telephony/twilio/status?attempt=a".into(),
            timeout: Duration::from_secs(25),
            lead_id: uuid::Uuid::nil(),
            attempt_number: 1,
        }
    }

    #[test]
    fn call_form_carries_every_documented_field() {
        let form = call_form(&request());
        let get = |k: &str| {
            form.iter()
                .filter(|(n, _)| *n == k)
                .map(|(_, v)| v.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("To"), ["+14155550123"]);
        assert_eq!(get("From"), ["+14155550100"]);
        assert_eq!(
            get("Url"),
            ["https://lf.test/v1/telephony/twilio/twiml/a?sig=s"]
        );
        assert_eq!(
            get("StatusCallback"),
            ["https://lf.test/v1/telephony/twilio/status?attempt=a"]
        );
        assert_eq!(get("StatusCallbackEvent"), STATUS_CALLBACK_EVENTS);
        assert_eq!(get("Timeout"), ["25"]);
        assert_eq!(get("MachineDetection"), ["Enable"]);
        let mut long = request();
        long.timeout = Duration::from_secs(3600);
        assert!(call_form(&long).contains(&("Timeout", "600".to_owned())));
    }

    #[test]
    fn interpret_success_needs_a_sid() {
        let ok = interpret(
            StatusCode::CREATED,
            br#"{"sid":"CA1","status":"queued","to":"+14155550123"}"#,
        );
        assert_eq!(
            ok,
            Ok(Placed {
                call_sid: "CA1".into(),
                status: "queued".into()
            })
        );
        for body in [&b"<html>"[..], b"{}", br#"{"sid":""}"#, b""] {
            assert!(matches!(
                interpret(StatusCode::CREATED, body),
                Err(PlaceError::Unknown(_))
            ));
        }
    }

    #[test]
    fn interpret_classifies_by_status() {
        let invalid = br#"{"code":21211,"message":"The 'To' number +15005550001 is not a valid phone number.","more_info":"https://www.twilio.com/docs/errors/21211","status":400}"#;
        assert_eq!(
            interpret(StatusCode::BAD_REQUEST, invalid),
            Err(PlaceError::Permanent(
                "Twilio 400 Bad Request, error 21211: The 'To' number +*******0001 is not a valid phone number.".into()
            ))
        );
        assert!(matches!(
            interpret(StatusCode::UNAUTHORIZED, b""),
            Err(PlaceError::Permanent(_))
        ));
        assert!(matches!(
            interpret(StatusCode::FOUND, b""),
            Err(PlaceError::Permanent(_))
        ));
        assert!(matches!(
            interpret(StatusCode::TOO_MANY_REQUESTS, b"{}"),
            Err(PlaceError::Transient(_))
        ));
        for code in [500, 502, 503, 504] {
            let status = StatusCode::from_u16(code).unwrap();
            assert!(matches!(
                interpret(status, b"<html>oops</html>"),
                Err(PlaceError::Transient(_))
            ));
        }
    }

    #[test]
    fn config_from_lookup_and_validation() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = TwilioConfig::from_lookup(env(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "s3cr3t"),
        ]))
        .unwrap();
        assert_eq!(c.api_base, DEFAULT_API_BASE);
        assert_eq!(
            c.calls_url(),
            "https://api.twilio.com/2010-04-01/Accounts/AC123/Calls.json"
        );
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "the token never reaches a log"
        );
        let local = TwilioConfig::from_lookup(env(&[
            ("TWILIO_ACCOUNT_SID", "AC123"),
            ("TWILIO_AUTH_TOKEN", "s3cr3t"),
            ("TWILIO_API_BASE", "http://127.0.0.1:9/"),
        ]))
        .unwrap();
        assert_eq!(
            local.calls_url(),
            "http://127.0.0.1:9/2010-04-01/Accounts/AC123/Calls.json"
        );
        assert!(matches!(
            TwilioConfig::from_lookup(env(&[("TWILIO_ACCOUNT_SID", "AC123")])),
            Err(ConfigError::Missing("TWILIO_AUTH_TOKEN"))
        ));
        let mut bad = TwilioConfig::new("AC/../x", "t");
        assert!(matches!(bad.validate(), Err(ConfigError::AccountSid(_))));
        bad.account_sid = "AC1".into();
        for base in ["ftp://x", "https://api.twilio.com/2010-04-01", "nonsense"] {
            bad.api_base = base.into();
            assert!(
                matches!(bad.validate(), Err(ConfigError::ApiBase { .. })),
                "{base}"
            );
        }
        bad.api_base = DEFAULT_API_BASE.into();
        bad.connect_timeout = bad.request_timeout;
        assert!(matches!(bad.validate(), Err(ConfigError::Timeouts { .. })));
    }
}
