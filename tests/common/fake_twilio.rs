//! A fake of Twilio's Calls API on a real socket (127.0.0.1, a free port), for tests.
//!
//! It checks what Twilio checks (the path's account, Basic auth, the form fields and their
//! shape), records every request, and answers as scripted: 201 with a `CA…` sid, a Twilio
//! error body, or nothing for a while. Like Twilio it then calls back: after a created call
//! it can play the call's status callbacks to the request's `StatusCallback`, signed with
//! `X-Twilio-Signature`. The signature is computed here independently of leadflow's own,
//! so the two keep each other honest. It answers `GET …/Calls/{sid}.json` and the Calls list
//! (`GET …/Calls.json?To=…&StartTime>=…`) from the calls it created, as Twilio's resources
//! read (no `url` field).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Request, Response};
use serde_json::json;

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "fake-twilio-auth-token";

/// What the fake answers to one create-call request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 201 with a fresh `CA…` sid; then, with `Some(outcome)`, the call's status callbacks
    /// (see [`FakeTwilio::play`]).
    Created { outcome: Option<String> },
    /// `status` with Twilio's error body `{"code","message","more_info","status"}`.
    Error {
        status: u16,
        code: u32,
        message: String,
    },
    /// A raw answer, for malformed ones.
    Raw { status: u16, body: String },
    /// Wait, then answer; longer than the client's timeout provokes it.
    Delay(Duration, Box<Reply>),
    /// Do what the reply says (create the call, say) at once, then wait before answering:
    /// the call exists while its answer is still on its way.
    AnswerAfter(Duration, Box<Reply>),
    /// The request never reaches Twilio: it is not recorded and creates nothing; after the
    /// wait the client gets a 503 (if it is still there).
    Unseen(Duration),
}

impl Reply {
    pub fn created() -> Reply {
        Reply::Created { outcome: None }
    }
    /// `outcome`: a final `CallStatus` word, or `machine` (answered by a machine, completed).
    pub fn created_then(outcome: &str) -> Reply {
        Reply::Created {
            outcome: Some(outcome.to_owned()),
        }
    }
    pub fn server_error(status: u16) -> Reply {
        Reply::Error {
            status,
            code: 20000 + u32::from(status),
            message: "Service Unavailable".into(),
        }
    }
    pub fn too_many_requests() -> Reply {
        Reply::Error {
            status: 429,
            code: 20429,
            message: "Too Many Requests".into(),
        }
    }
    pub fn error(status: u16, code: u32, message: &str) -> Reply {
        Reply::Error {
            status,
            code,
            message: message.to_owned(),
        }
    }
    pub fn delayed(self, by: Duration) -> Reply {
        Reply::Delay(by, Box::new(self))
    }
    pub fn answered_after(self, by: Duration) -> Reply {
        Reply::AnswerAfter(by, Box::new(self))
    }
}

/// How [`FakeTwilio::send_status`] signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sign {
    Valid,
    /// A well-formed signature made with another token.
    Wrong,
    Missing,
}

/// One request the fake received, and what it answered (0: no answer yet, or the client
/// gave up first).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Basic auth (user, password) as sent.
    pub basic_auth: Option<(String, String)>,
    pub form: Vec<(String, String)>,
    pub answered: u16,
    pub call_sid: Option<String>,
    /// When the call was created, for a created one.
    pub created: Option<jiff::Timestamp>,
    /// For a created call: the outcome the fake was scripted to play, if any.
    pub outcome: Option<String>,
}

impl Recorded {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields(name).into_iter().next()
    }
    pub fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A status callback the fake sent, and the HTTP status it got (0: no connection).
#[derive(Debug, Clone)]
pub struct SentCallback {
    pub url: String,
    pub form: Vec<(String, String)>,
    pub answered: u16,
}

struct State {
    account_sid: String,
    auth_token: String,
    script: Mutex<VecDeque<Reply>>,
    default_reply: Mutex<Reply>,
    requests: Mutex<Vec<Recorded>>,
    callbacks: Mutex<Vec<SentCallback>>,
    callback_delay: Mutex<Duration>,
    /// Status callbacks are never sent, as when leadflow's public URL is unreachable.
    withhold_callbacks: std::sync::atomic::AtomicBool,
    /// Calls-list requests still to be answered 503, and how many came.
    failing_lookups: std::sync::atomic::AtomicUsize,
    lookups: std::sync::atomic::AtomicUsize,
    /// Requests that arrived as [`Reply::Unseen`]: held, never recorded.
    unseen: std::sync::atomic::AtomicUsize,
    public_url: Mutex<Option<String>>,
    http: reqwest::Client,
    /// Create-call requests being answered now, and the most there ever were at once.
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
}

pub struct FakeTwilio {
    base_url: String,
    state: Arc<State>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTwilio {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeTwilio {
    pub async fn start() -> FakeTwilio {
        Self::start_with(ACCOUNT_SID, AUTH_TOKEN).await
    }

    pub async fn start_with(account_sid: &str, auth_token: &str) -> FakeTwilio {
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .expect("bind the fake Twilio");
        let addr = *acceptor.local_addr()[0]
            .as_socket_addr()
            .expect("a TCP address");
        let state = Arc::new(State {
            account_sid: account_sid.to_owned(),
            auth_token: auth_token.to_owned(),
            script: Mutex::new(VecDeque::new()),
            default_reply: Mutex::new(Reply::created()),
            requests: Mutex::new(Vec::new()),
            callbacks: Mutex::new(Vec::new()),
            callback_delay: Mutex::new(Duration::from_millis(20)),
            withhold_callbacks: std::sync::atomic::AtomicBool::new(false),
            failing_lookups: std::sync::atomic::AtomicUsize::new(0),
            lookups: std::sync::atomic::AtomicUsize::new(0),
            unseen: std::sync::atomic::AtomicUsize::new(0),
            public_url: Mutex::new(None),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight: std::sync::atomic::AtomicUsize::new(0),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        });
        let app_state = state.clone();
        let app = poem::endpoint::make(move |req: Request| {
            let state = app_state.clone();
            async move { handle(state, req).await }
        });
        let server = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        FakeTwilio {
            base_url: format!("http://{addr}"),
            state,
            server,
        }
    }

    /// What `TWILIO_API_BASE` should be.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }
    pub fn account_sid(&self) -> &str {
        &self.state.account_sid
    }
    pub fn auth_token(&self) -> &str {
        &self.state.auth_token
    }

    /// Queues replies for the next create-call requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.script).extend(replies);
    }
    pub fn push(&self, reply: Reply) {
        lock(&self.state.script).push_back(reply);
    }
    /// The reply once the script is used up (at first: [`Reply::created`]).
    pub fn set_default(&self, reply: Reply) {
        *lock(&self.state.default_reply) = reply;
    }
    pub fn set_callback_delay(&self, delay: Duration) {
        *lock(&self.state.callback_delay) = delay;
    }
    /// Never send status callbacks (calls still end as scripted, as the Calls API reads).
    pub fn withhold_callbacks(&self) {
        self.state
            .withhold_callbacks
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
    /// Answer the next `n` Calls-list requests 503, as an outage would.
    pub fn fail_lookups(&self, n: usize) {
        self.state
            .failing_lookups
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }
    /// Create-call requests held as [`Reply::Unseen`] so far.
    pub fn unseen(&self) -> usize {
        self.state.unseen.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Calls-list requests received so far, failed ones included.
    pub fn lookups(&self) -> usize {
        self.state.lookups.load(std::sync::atomic::Ordering::SeqCst)
    }
    /// Refuse (21205 / 21609) a `Url` or `StatusCallback` outside this prefix, e.g.
    /// `LEADFLOW_PUBLIC_URL`: the URLs Twilio will sign must be the ones leadflow checks.
    pub fn require_public_url(&self, prefix: &str) {
        *lock(&self.state.public_url) = Some(prefix.to_owned());
    }

    /// Every request, in arrival order.
    /// The most create-call requests that were ever being answered at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.state
            .max_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }
    /// The calls the fake created, answered or not: the calls Twilio would have placed.
    pub fn created_calls(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.call_sid.is_some())
            .collect()
    }
    pub fn callbacks(&self) -> Vec<SentCallback> {
        lock(&self.state.callbacks).clone()
    }

    /// Twilio's `X-Twilio-Signature` for a POST to `url` with `params`.
    pub fn signature(&self, url: &str, params: &[(String, String)]) -> String {
        sign(&self.state.auth_token, url, params)
    }

    /// POSTs a status callback as Twilio does and returns the HTTP status leadflow answered.
    pub async fn send_status(&self, url: &str, params: &[(&str, &str)], sign: Sign) -> u16 {
        let form: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        post_signed(&self.state, url, &form, sign).await.0
    }

    /// Plays the status callbacks of created call `call_sid` ending in `outcome` to its
    /// `StatusCallback`, honouring its `StatusCallbackEvent` list as Twilio does (the final
    /// one always goes). Returns the HTTP status of each.
    pub async fn play(&self, call_sid: &str, outcome: &str) -> Vec<u16> {
        play(&self.state, call_sid, outcome).await
    }

    /// Fetches the call's TwiML from its `Url` as Twilio does once the lead answers: a
    /// signed POST with the call's parameters. Returns the status and body.
    pub async fn fetch_twiml(&self, call_sid: &str, answered_by: Option<&str>) -> (u16, String) {
        let call = self.call(call_sid);
        let url = call.field("Url").expect("a call with a Url");
        let mut form = call_params(&self.state, &call, call_sid, "in-progress");
        if let Some(who) = answered_by {
            form.push(("AnsweredBy".into(), who.into()));
        }
        post_signed(&self.state, url, &form, Sign::Valid).await
    }

    fn call(&self, call_sid: &str) -> Recorded {
        self.requests()
            .into_iter()
            .find(|r| r.call_sid.as_deref() == Some(call_sid))
            .unwrap_or_else(|| panic!("the fake created no call {call_sid}"))
    }
}

/// The fake's own implementation of Twilio's signing rule.
pub fn sign(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut pairs: Vec<_> = params.iter().collect();
    pairs.sort();
    let data: String = std::iter::once(url.to_owned())
        .chain(pairs.iter().map(|(k, v)| format!("{k}{v}")))
        .collect();
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

async fn post_signed(
    state: &State,
    url: &str,
    form: &[(String, String)],
    how: Sign,
) -> (u16, String) {
    let mut request = state.http.post(url).form(form);
    match how {
        Sign::Valid => {
            request = request.header("X-Twilio-Signature", sign(&state.auth_token, url, form))
        }
        Sign::Wrong => {
            request = request.header("X-Twilio-Signature", sign("not-the-token", url, form))
        }
        Sign::Missing => {}
    }
    match request.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// The callbacks of a call ending in `outcome`: (CallStatus, the event that subscribes to it).
fn flow(outcome: &str) -> &'static [(&'static str, &'static str)] {
    match outcome {
        "completed" | "machine" => &[
            ("initiated", "initiated"),
            ("ringing", "ringing"),
            ("in-progress", "answered"),
            ("completed", "completed"),
        ],
        "busy" => &[("initiated", "initiated"), ("busy", "completed")],
        "failed" => &[("initiated", "initiated"), ("failed", "completed")],
        "no-answer" => &[
            ("initiated", "initiated"),
            ("ringing", "ringing"),
            ("no-answer", "completed"),
        ],
        "canceled" => &[
            ("initiated", "initiated"),
            ("ringing", "ringing"),
            ("canceled", "completed"),
        ],
        other => panic!("the fake cannot play outcome {other:?}"),
    }
}

fn call_params(
    state: &State,
    call: &Recorded,
    call_sid: &str,
    status: &str,
) -> Vec<(String, String)> {
    let to = call.field("To").unwrap_or_default();
    let from = call.field("From").unwrap_or_default();
    [
        ("CallSid", call_sid),
        ("AccountSid", state.account_sid.as_str()),
        ("From", from),
        ("Caller", from),
        ("To", to),
        ("Called", to),
        ("Direction", "outbound-api"),
        ("ApiVersion", "2010-04-01"),
        ("CallStatus", status),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

async fn play(state: &State, call_sid: &str, outcome: &str) -> Vec<u16> {
    let call = lock(&state.requests)
        .iter()
        .find(|r| r.call_sid.as_deref() == Some(call_sid))
        .cloned();
    let Some(call) = call else {
        panic!("the fake created no call {call_sid}")
    };
    let Some(url) = call.field("StatusCallback").map(str::to_owned) else {
        return Vec::new();
    };
    let subscribed: Vec<&str> = call
        .fields("StatusCallbackEvent")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    let amd = call.field("MachineDetection").is_some();
    let mut answers = Vec::new();
    let mut sequence = 0u32;
    for &(status, event) in flow(outcome) {
        if event != "completed" && !subscribed.contains(&event) {
            continue;
        }
        let mut form = call_params(state, &call, call_sid, status);
        form.push(("SequenceNumber".into(), sequence.to_string()));
        form.push(("CallbackSource".into(), "call-progress-events".into()));
        sequence += 1;
        let answered = matches!(status, "in-progress" | "completed");
        if answered && amd {
            let who = if outcome == "machine" {
                "machine_start"
            } else {
                "human"
            };
            form.push(("AnsweredBy".into(), who.into()));
        }
        if event == "completed" {
            let (secs, sip) = match status {
                "completed" => ("30", "200"),
                "busy" => ("0", "486"),
                "failed" => ("0", "404"),
                _ => ("0", "487"),
            };
            form.push(("CallDuration".into(), secs.into()));
            form.push(("SipResponseCode".into(), sip.into()));
        }
        let (code, _) = post_signed(state, &url, &form, Sign::Valid).await;
        lock(&state.callbacks).push(SentCallback {
            url: url.clone(),
            form,
            answered: code,
        });
        answers.push(code);
    }
    answers
}

fn twilio_error(status: u16, code: u32, message: &str) -> Response {
    let body = json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    });
    json_response(status, body.to_string())
}

fn json_response(status: u16, body: String) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .content_type("application/json")
        .body(body)
}

fn is_e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

fn is_http_url(value: &str, public_prefix: Option<&str>) -> bool {
    let parsed = url::Url::parse(value)
        .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
    parsed && public_prefix.is_none_or(|p| value.starts_with(p))
}

fn basic_auth(req: &Request) -> Option<(String, String)> {
    let value = req.headers().get("authorization")?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

async fn handle(state: Arc<State>, mut req: Request) -> Response {
    let body = req.take_body().into_vec().await.unwrap_or_default();
    let is_form = req
        .content_type()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = if is_form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    let record = Recorded {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        basic_auth: basic_auth(&req),
        form,
        answered: 0,
        call_sid: None,
        created: None,
        outcome: None,
    };
    if record.method == "GET" {
        return match req.uri().query() {
            Some(query) if record.path.ends_with("/Calls.json") => {
                list_calls(&state, &record, query)
            }
            _ => fetch_call(&state, &record),
        };
    }
    let unseen = {
        let mut script = lock(&state.script);
        match script.front() {
            Some(Reply::Unseen(wait)) => {
                let wait = *wait;
                script.pop_front();
                Some(wait)
            }
            _ => None,
        }
    };
    if let Some(wait) = unseen {
        state
            .unseen
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(wait).await;
        return twilio_error(503, 20503, "Service Unavailable");
    }
    let index = {
        let mut requests = lock(&state.requests);
        requests.push(record.clone());
        requests.len() - 1
    };
    let now = state
        .in_flight
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        + 1;
    state
        .max_in_flight
        .fetch_max(now, std::sync::atomic::Ordering::SeqCst);
    let (response, status, created, answer_after) = answer(&state, &record).await;
    {
        let mut requests = lock(&state.requests);
        requests[index].call_sid = created.as_ref().map(|(sid, _)| sid.clone());
        requests[index].created = created.as_ref().map(|_| jiff::Timestamp::now());
        requests[index].outcome = created.as_ref().and_then(|(_, o)| o.clone());
    }
    if let Some(wait) = answer_after {
        tokio::time::sleep(wait).await;
    }
    state
        .in_flight
        .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    lock(&state.requests)[index].answered = status;
    let withheld = state
        .withhold_callbacks
        .load(std::sync::atomic::Ordering::SeqCst);
    if let Some((sid, Some(outcome))) = created.filter(|_| !withheld) {
        let state = state.clone();
        let delay = *lock(&state.callback_delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            play(&state, &sid, &outcome).await;
        });
    }
    response
}

/// `GET …/Calls/{sid}.json`: the call as Twilio would describe it — its scripted outcome, or
/// `queued` when none was scripted. Not recorded as a request (it places no call).
fn fetch_call(state: &State, r: &Recorded) -> Response {
    if !authed(state, r) {
        return twilio_error(401, 20003, "Authenticate");
    }
    let prefix = format!("/2010-04-01/Accounts/{}/Calls/", state.account_sid);
    let sid = r
        .path
        .strip_prefix(&prefix)
        .and_then(|p| p.strip_suffix(".json"))
        .unwrap_or("");
    let call = lock(&state.requests)
        .iter()
        .find(|c| c.call_sid.as_deref() == Some(sid))
        .cloned();
    let Some(call) = call else {
        return twilio_error(404, 20404, "The requested resource was not found");
    };
    json_response(200, call_resource(state, &call).to_string())
}

/// A created call as Twilio's Call resource reads: its scripted outcome as its status
/// (`queued` when none was scripted), and no `url`, which Twilio does not list.
fn call_resource(state: &State, call: &Recorded) -> serde_json::Value {
    let (status, answered_by) = match call.outcome.as_deref() {
        Some("machine") => ("completed", Some("machine_start")),
        Some("completed") => ("completed", Some("human")),
        Some(other) => (other, None),
        None => ("queued", None),
    };
    let sid = call.call_sid.as_deref().unwrap_or_default();
    let created = call
        .created
        .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S +0000").to_string());
    json!({
        "sid": sid,
        "account_sid": state.account_sid,
        "to": call.field("To"),
        "from": call.field("From"),
        "status": status,
        "answered_by": answered_by,
        "duration": "30",
        "date_created": created,
        "direction": "outbound-api",
        "uri": format!("/2010-04-01/Accounts/{}/Calls/{sid}.json", state.account_sid),
    })
}

/// `GET …/Calls.json?To=…&StartTime>=YYYY-MM-DD`: the created calls to that number from
/// that UTC day on, newest first, in one page. Not recorded as a request (it places no call).
fn list_calls(state: &State, r: &Recorded, query: &str) -> Response {
    use std::sync::atomic::Ordering::SeqCst;
    if !authed(state, r) {
        return twilio_error(401, 20003, "Authenticate");
    }
    if r.path != format!("/2010-04-01/Accounts/{}/Calls.json", state.account_sid) {
        return twilio_error(404, 20404, "The requested resource was not found");
    }
    state.lookups.fetch_add(1, SeqCst);
    let failing = state
        .failing_lookups
        .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1));
    if failing.is_ok() {
        return twilio_error(503, 20503, "Service Unavailable");
    }
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let from_day = match param("StartTime>").map(|d| d.parse::<jiff::civil::Date>()) {
        Some(Ok(day)) => Some(day),
        Some(Err(_)) => return twilio_error(400, 20001, "StartTime> must be YYYY-MM-DD"),
        None => None,
    };
    let to = param("To");
    let mut calls: Vec<Recorded> = lock(&state.requests)
        .iter()
        .filter(|c| c.call_sid.is_some())
        .filter(|c| to.as_deref().is_none_or(|to| c.field("To") == Some(to)))
        .filter(|c| {
            let day = c
                .created
                .map(|t| t.to_zoned(jiff::tz::TimeZone::UTC).date());
            from_day.is_none_or(|from| day.is_some_and(|d| d >= from))
        })
        .cloned()
        .collect();
    calls.reverse();
    let list: Vec<serde_json::Value> = calls.iter().map(|c| call_resource(state, c)).collect();
    let uri = format!(
        "/2010-04-01/Accounts/{}/Calls.json?{query}",
        state.account_sid
    );
    let body = json!({
        "calls": list, "page": 0, "page_size": 50, "start": 0, "end": list.len(),
        "first_page_uri": uri, "uri": uri, "next_page_uri": null, "previous_page_uri": null,
    });
    json_response(200, body.to_string())
}

/// Whether `r` carries the account's Basic auth.
fn authed(state: &State, r: &Recorded) -> bool {
    r.basic_auth
        .as_ref()
        .is_some_and(|(u, p)| *u == state.account_sid && *p == state.auth_token)
}

/// The response, its status, for a created call its sid and the outcome to play, and how long
/// to hold the answer back after acting on it.
type Answer = (
    Response,
    u16,
    Option<(String, Option<String>)>,
    Option<Duration>,
);

async fn answer(state: &State, r: &Recorded) -> Answer {
    let error =
        |status, code, message: &str| (twilio_error(status, code, message), status, None, None);
    let calls_path = format!("/2010-04-01/Accounts/{}/Calls.json", state.account_sid);
    if r.method != "POST" || !r.path.starts_with("/2010-04-01/Accounts/") {
        return error(404, 20404, "The requested resource was not found");
    }
    if !authed(state, r) {
        return error(401, 20003, "Authenticate");
    }
    if r.path != calls_path {
        return error(404, 20404, "The requested resource was not found");
    }
    if let Some((status, code, message)) = invalid_field(state, r) {
        return error(status, code, &message);
    }
    let mut reply = lock(&state.script)
        .pop_front()
        .unwrap_or_else(|| lock(&state.default_reply).clone());
    let mut answer_after = None;
    loop {
        return match reply {
            Reply::Delay(by, next) => {
                tokio::time::sleep(by).await;
                reply = *next;
                continue;
            }
            Reply::AnswerAfter(by, next) => {
                answer_after = Some(by);
                reply = *next;
                continue;
            }
            Reply::Unseen(_) => error(503, 20503, "Service Unavailable"),
            Reply::Created { outcome } => {
                let sid = format!("CA{}", uuid::Uuid::new_v4().simple());
                let body = json!({
                    "sid": sid,
                    "account_sid": state.account_sid,
                    "to": r.field("To"),
                    "from": r.field("From"),
                    "status": "queued",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                    "answered_by": null,
                    "uri": format!("/2010-04-01/Accounts/{}/Calls/{sid}.json", state.account_sid),
                });
                (
                    json_response(201, body.to_string()),
                    201,
                    Some((sid, outcome)),
                    answer_after,
                )
            }
            Reply::Error {
                status,
                code,
                message,
            } => {
                let (response, status, _, _) = error(status, code, &message);
                (response, status, None, answer_after)
            }
            Reply::Raw { status, body } => {
                (json_response(status, body), status, None, answer_after)
            }
        };
    }
}

/// The checks Twilio makes on a create-call form, with its error codes.
fn invalid_field(state: &State, r: &Recorded) -> Option<(u16, u32, String)> {
    let public = lock(&state.public_url).clone();
    let Some(to) = r.field("To") else {
        return Some((400, 21201, "No 'To' number is specified".into()));
    };
    let Some(from) = r.field("From") else {
        return Some((400, 21603, "A 'From' phone number is required.".into()));
    };
    if !is_e164(to) {
        return Some((
            400,
            21211,
            format!("The 'To' number {to} is not a valid phone number."),
        ));
    }
    if !is_e164(from) {
        return Some((
            400,
            21212,
            format!("The 'From' number {from} is not a valid phone number."),
        ));
    }
    match (r.field("Url"), r.field("Twiml"), r.field("ApplicationSid")) {
        (None, None, None) => return Some((400, 21205, "Url parameter is required.".into())),
        (Some(url), _, _) if !is_http_url(url, public.as_deref()) => {
            return Some((400, 21205, format!("Url is not a valid URL: {url}")));
        }
        _ => {}
    }
    if let Some(cb) = r
        .field("StatusCallback")
        .filter(|cb| !is_http_url(cb, public.as_deref()))
    {
        return Some((400, 21609, format!("Invalid StatusCallback url: {cb}")));
    }
    let events = r.fields("StatusCallbackEvent");
    if events
        .iter()
        .flat_map(|v| v.split_whitespace())
        .any(|e| !["initiated", "ringing", "answered", "completed"].contains(&e))
    {
        return Some((400, 21626, "Invalid 'StatusCallbackEvent'".into()));
    }
    if r.field("Timeout")
        .is_some_and(|t| !t.parse::<u32>().is_ok_and(|t| (1..=600).contains(&t)))
    {
        return Some((400, 20001, "Timeout must be between 1 and 600".into()));
    }
    if r.field("MachineDetection")
        .is_some_and(|m| !["Enable", "DetectMessageEnd"].contains(&m))
    {
        return Some((
            400,
            20001,
            "MachineDetection must be Enable or DetectMessageEnd".into(),
        ));
    }
    None
}
