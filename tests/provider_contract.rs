//! One contract for every telephony provider: the Twilio client (against the fake Twilio,
//! over real sockets) and the simulator must behave alike. Then the Twilio-only part: how
//! each kind of transport failure is classified, and what the fake checks.

#[path = "common/fake_twilio.rs"]
mod fake_twilio;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fake_twilio::{FakeTwilio, Reply, Sign};
use leadflow::telephony::sim::{Sim, SimConfig};
use leadflow::telephony::twilio::{self, Twilio, TwilioConfig};
use leadflow::telephony::{CallRequest, CallStatus, PlaceError, Provider, StatusEvent};
use poem::listener::{Acceptor, Listener, TcpListener};
use tokio::sync::mpsc;

const STATUS_PATH: &str = "/v1/telephony/twilio/status";
const LEAD: &str = "+14155550123";
const CALLER_ID: &str = "+14155550100";

#[derive(Clone, Copy, Debug)]
enum Backend {
    Twilio,
    Sim,
}

/// A provider wired to something that collects its status events the way leadflow will:
/// Twilio's through a signed webhook, the simulator's through its channel.
struct Harness {
    provider: Arc<dyn Provider>,
    events: mpsc::UnboundedReceiver<StatusEvent>,
    public_url: String,
    fake: Option<FakeTwilio>,
    sim_reports: Arc<AtomicUsize>,
    _servers: Vec<tokio::task::JoinHandle<()>>,
}

impl Harness {
    /// `outcomes`: how the lead's attempts 1, 2, … end (the last repeats; none: completed,
    /// and the Twilio tests script the fake themselves).
    async fn new(backend: Backend, outcomes: &[&str]) -> Harness {
        let (tx, events) = mpsc::unbounded_channel();
        let (public_url, receiver) = status_receiver(tx.clone()).await;
        let mut servers = vec![receiver];
        let sim_reports = Arc::new(AtomicUsize::new(0));
        let (provider, fake): (Arc<dyn Provider>, _) = match backend {
            Backend::Twilio => {
                let fake = FakeTwilio::start().await;
                fake.require_public_url(&public_url);
                fake.script(outcomes.iter().map(|o| Reply::created_then(o)));
                fake.set_default(Reply::created_then(
                    outcomes.last().copied().unwrap_or("completed"),
                ));
                (
                    Arc::new(twilio_client(&fake, fake.auth_token())),
                    Some(fake),
                )
            }
            Backend::Sim => {
                let config = SimConfig {
                    delay: Duration::from_millis(20),
                    outcomes: outcomes.iter().map(|o| o.parse().unwrap()).collect(),
                };
                let (report_tx, mut reports) = mpsc::unbounded_channel();
                let counter = sim_reports.clone();
                servers.push(tokio::spawn(async move {
                    while let Some(report) = reports.recv().await {
                        let report: leadflow::telephony::sim::SimReport = report;
                        counter.fetch_add(1, Ordering::SeqCst);
                        for event in report.events {
                            let _ = tx.send(event);
                        }
                    }
                }));
                (Arc::new(Sim::new(config, report_tx)), None)
            }
        };
        Harness {
            provider,
            events,
            public_url,
            fake,
            sim_reports,
            _servers: servers,
        }
    }

    fn request(&self, attempt_number: u32) -> CallRequest {
        let attempt_id = uuid::Uuid::now_v7();
        CallRequest {
            attempt_id,
            to: LEAD.into(),
            from: CALLER_ID.into(),
            twiml_url: format!(
                "{}/v1/telephony/twilio/twiml/{attempt_id}?sig=abc",
                self.public_url
            ),
            status_callback: format!("{}{STATUS_PATH}?attempt={attempt_id}", self.public_url),
            timeout: Duration::from_secs(25),
            lead_id: uuid::Uuid::nil(),
            attempt_number,
        }
    }

    fn provider_side_calls(&self) -> usize {
        match &self.fake {
            Some(fake) => fake.created_calls().len(),
            None => self.sim_reports.load(Ordering::SeqCst),
        }
    }

    fn sid_prefix(&self) -> &'static str {
        if self.fake.is_some() { "CA" } else { "SIM" }
    }

    /// The events of one call, up to and including its final status.
    async fn call_events(&mut self) -> Vec<StatusEvent> {
        let mut seen = Vec::new();
        loop {
            let event = tokio::time::timeout(Duration::from_secs(5), self.events.recv())
                .await
                .unwrap_or_else(|_| panic!("no final status; so far {seen:#?}"))
                .expect("event channel open");
            let done = event.call_status.is_terminal();
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

fn twilio_client(fake: &FakeTwilio, token: &str) -> Twilio {
    Twilio::new(TwilioConfig {
        api_base: fake.base_url(),
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_millis(700),
        ..TwilioConfig::new(fake.account_sid(), token)
    })
    .unwrap()
}

/// leadflow's status webhook in miniature: rebuilds the public URL, verifies the
/// signature (401 missing, 403 wrong), parses the form.
async fn status_receiver(
    events: mpsc::UnboundedSender<StatusEvent>,
) -> (String, tokio::task::JoinHandle<()>) {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let public_url = format!(
        "http://{}",
        acceptor.local_addr()[0].as_socket_addr().unwrap()
    );
    let base = public_url.clone();
    let app = poem::endpoint::make(move |mut req: poem::Request| {
        let (events, base) = (events.clone(), base.clone());
        async move {
            let body = req.take_body().into_vec().await.unwrap_or_default();
            let form: Vec<(String, String)> =
                url::form_urlencoded::parse(&body).into_owned().collect();
            let url = format!(
                "{base}{}",
                req.uri().path_and_query().map_or("", |p| p.as_str())
            );
            let status = match req
                .headers()
                .get("X-Twilio-Signature")
                .and_then(|v| v.to_str().ok())
            {
                None => 401,
                Some(sig) if !twilio::verify(twilio_token(), &url, &form, sig) => 403,
                Some(_) if req.uri().path() != STATUS_PATH => 404,
                Some(_) => match twilio::parse_status(&form) {
                    Ok(event) => {
                        let _ = events.send(event);
                        204
                    }
                    Err(_) => 400,
                },
            };
            poem::http::StatusCode::from_u16(status).unwrap()
        }
    });
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    (public_url, server)
}

/// Polls `check` for up to 5 s: for effects that land just after the event a test awaits.
async fn eventually<T>(check: impl Fn() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(value) = check() {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not met within 5 s");
}

fn twilio_token() -> &'static str {
    fake_twilio::AUTH_TOKEN
}

// ---- the shared contract -------------------------------------------------------------------

async fn place_returns_the_providers_sid(backend: Backend) {
    let h = Harness::new(backend, &["completed"]).await;
    let placed = h.provider.place(&h.request(1)).await.unwrap();
    assert!(placed.call_sid.starts_with(h.sid_prefix()), "{placed:?}");
    assert_eq!(
        placed.call_sid.len(),
        h.sid_prefix().len() + 32,
        "{placed:?}"
    );
    assert_eq!(placed.status, "queued");
    assert!(matches!(h.provider.name(), "twilio" | "sim"));
}

async fn each_place_is_exactly_one_provider_call(backend: Backend) {
    let mut h = Harness::new(backend, &["completed"]).await;
    let mut sids = Vec::new();
    for n in 1..=3 {
        sids.push(h.provider.place(&h.request(n)).await.unwrap().call_sid);
    }
    for _ in 0..3 {
        h.call_events().await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.provider_side_calls(), 3);
    sids.sort();
    sids.dedup();
    assert_eq!(sids.len(), 3, "distinct sids");
}

async fn a_completed_call_reports_its_progress(backend: Backend) {
    let mut h = Harness::new(backend, &["completed"]).await;
    let placed = h.provider.place(&h.request(1)).await.unwrap();
    let events = h.call_events().await;
    let words: Vec<_> = events.iter().map(|e| e.call_status).collect();
    use CallStatus::*;
    assert_eq!(words, [Initiated, Ringing, InProgress, Completed]);
    assert!(events.iter().all(|e| e.call_sid == placed.call_sid));
    let sequence: Vec<_> = events.iter().map(|e| e.sequence_number).collect();
    assert_eq!(sequence, [Some(0), Some(1), Some(2), Some(3)]);
    let last = events.last().unwrap();
    assert!(last.answered_by_human());
    assert_eq!(last.answered_by.as_deref(), Some("human"));
    assert!(last.call_duration.is_some_and(|d| d > 0));
}

async fn outcomes_follow_the_leads_attempts(backend: Backend) {
    let mut h = Harness::new(backend, &["busy", "no-answer", "completed"]).await;
    let mut finals = Vec::new();
    for n in 1..=4 {
        h.provider.place(&h.request(n)).await.unwrap();
        let events = h.call_events().await;
        assert_eq!(events[0].call_status, CallStatus::Initiated);
        finals.push(events.last().unwrap().call_status);
    }
    use CallStatus::*;
    assert_eq!(finals, [Busy, NoAnswer, Completed, Completed]);
}

async fn an_invalid_number_is_refused_for_good(backend: Backend) {
    let h = Harness::new(backend, &["completed"]).await;
    let mut req = h.request(1);
    req.to = "4155550123".into();
    let err = h.provider.place(&req).await.unwrap_err();
    let PlaceError::Permanent(message) = err else {
        panic!("{err:?}")
    };
    assert!(
        !message.contains("4155550123"),
        "phone numbers are masked: {message}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(h.provider_side_calls(), 0);
}

async fn the_call_list_finds_a_placed_call_by_its_number_and_day(backend: Backend) {
    let mut h = Harness::new(backend, &["completed"]).await;
    let before = jiff::Timestamp::now();
    let req = h.request(1);
    let placed = h.provider.place(&req).await.unwrap();
    let mut elsewhere = h.request(2);
    elsewhere.to = "+14155550999".into();
    h.provider.place(&elsewhere).await.unwrap();
    h.call_events().await;
    h.call_events().await;

    let listed = h.provider.calls_to(LEAD, before).await.unwrap();
    assert_eq!(
        listed.len(),
        1,
        "only the calls to that number: {listed:#?}"
    );
    let call = &listed[0];
    assert_eq!(call.call_sid, placed.call_sid);
    assert_eq!((call.to.as_str(), call.from.as_str()), (LEAD, CALLER_ID));
    // Twilio lists creation times to the second.
    let skew = call.created.duration_since(before).as_secs_f64();
    assert!(
        (-1.0..5.0).contains(&skew),
        "created {skew}s after the request"
    );
    assert_eq!(call.status, Some(CallStatus::Completed));
    assert!(
        call.attempt_id.is_none_or(|id| id == req.attempt_id),
        "a listed attempt is the call's own: {:?}",
        call.attempt_id
    );
    let event = call.status_event().expect("a status leadflow knows");
    assert_eq!(event.call_sid, placed.call_sid);
    assert!(event.answered_by_human());

    let tomorrow = before
        .checked_add(jiff::SignedDuration::from_hours(24))
        .unwrap();
    assert!(
        h.provider
            .calls_to(LEAD, tomorrow)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        h.provider
            .calls_to("+14155550777", before)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(h.provider_side_calls(), 2, "listing places no call");
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod twilio_contract {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Twilio).await })*
        }
        mod sim_contract {
            $(#[tokio::test] async fn $case() { super::$case(super::Backend::Sim).await })*
        }
    };
}

contract!(
    place_returns_the_providers_sid,
    each_place_is_exactly_one_provider_call,
    a_completed_call_reports_its_progress,
    outcomes_follow_the_leads_attempts,
    an_invalid_number_is_refused_for_good,
    the_call_list_finds_a_placed_call_by_its_number_and_day,
);

// ---- Twilio only ---------------------------------------------------------------------------

#[tokio::test]
async fn the_request_carries_auth_and_the_documented_form() {
    let h = Harness::new(Backend::Twilio, &["completed"]).await;
    let req = h.request(1);
    h.provider.place(&req).await.unwrap();
    let fake = h.fake.as_ref().unwrap();
    let [call] = &fake.requests()[..] else {
        panic!("one request: {:?}", fake.requests())
    };
    assert_eq!(call.method, "POST");
    assert_eq!(
        call.path,
        format!("/2010-04-01/Accounts/{}/Calls.json", fake.account_sid())
    );
    assert_eq!(
        call.basic_auth,
        Some((fake.account_sid().to_owned(), fake.auth_token().to_owned()))
    );
    assert!(
        call.header("content-type")
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
    assert_eq!(call.field("To"), Some(LEAD));
    assert_eq!(call.field("From"), Some(CALLER_ID));
    assert_eq!(call.field("Url"), Some(req.twiml_url.as_str()));
    // The exact string Twilio will sign its callbacks over, query included.
    let callback = call.field("StatusCallback").unwrap();
    assert_eq!(
        callback,
        format!("{}{STATUS_PATH}?attempt={}", h.public_url, req.attempt_id)
    );
    assert_eq!(
        call.fields("StatusCallbackEvent"),
        ["initiated", "ringing", "answered", "completed"]
    );
    assert_eq!(call.field("Timeout"), Some("25"));
    assert_eq!(call.field("MachineDetection"), Some("Enable"));
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_transient_and_sent_once() {
    let h = Harness::new(Backend::Twilio, &[]).await;
    let fake = h.fake.as_ref().unwrap();
    for reply in [
        Reply::server_error(503),
        Reply::server_error(500),
        Reply::too_many_requests(),
    ] {
        let before = fake.requests().len();
        fake.push(reply.clone());
        let err = h.provider.place(&h.request(1)).await.unwrap_err();
        assert!(
            matches!(err, PlaceError::Transient(_)),
            "{reply:?} gave {err:?}"
        );
        assert_eq!(
            fake.requests().len(),
            before + 1,
            "no retry inside the client"
        );
    }
    assert_eq!(h.provider_side_calls(), 0);
}

#[tokio::test]
async fn client_errors_are_permanent_with_twilios_message() {
    let h = Harness::new(Backend::Twilio, &[]).await;
    let fake = h.fake.as_ref().unwrap();
    fake.push(Reply::error(
        400,
        21215,
        "Account not authorized to call +14155550123.",
    ));
    let err = h.provider.place(&h.request(1)).await.unwrap_err();
    assert_eq!(
        err,
        PlaceError::Permanent(
            "Twilio 400 Bad Request, error 21215: Account not authorized to call +*******0123."
                .into()
        )
    );
}

#[tokio::test]
async fn wrong_credentials_are_permanent() {
    let fake = FakeTwilio::start().await;
    let client = twilio_client(&fake, "not-the-token");
    let h = Harness::new(Backend::Twilio, &["completed"]).await;
    let err = client.place(&h.request(1)).await.unwrap_err();
    let PlaceError::Permanent(message) = &err else {
        panic!("{err:?}")
    };
    assert!(
        message.contains("401") && message.contains("20003"),
        "{message}"
    );
    assert_eq!(fake.requests()[0].answered, 401);
}

#[tokio::test]
async fn a_timeout_after_sending_is_unknown_and_never_resent() {
    let h = Harness::new(Backend::Twilio, &[]).await;
    let fake = h.fake.as_ref().unwrap();
    fake.push(Reply::created_then("completed").delayed(Duration::from_millis(1500)));
    let err = h.provider.place(&h.request(1)).await.unwrap_err();
    let PlaceError::Unknown(message) = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("700ms"), "{message}");
    // Twilio went on to create the call after we stopped listening: exactly what Unknown
    // must allow for. One request, no second POST.
    eventually(|| (fake.created_calls().len() == 1).then_some(())).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Twilio::new(TwilioConfig {
        api_base: format!("http://127.0.0.1:{port}"),
        ..TwilioConfig::new("AC1", "token")
    })
    .unwrap();
    let h = Harness::new(Backend::Sim, &["completed"]).await;
    let err = client.place(&h.request(1)).await.unwrap_err();
    assert!(
        matches!(&err, PlaceError::Transient(m) if m.contains("connect")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_connect_timeout_is_transient() {
    // A listener that never accepts, its backlog filled: the kernel drops further SYNs,
    // so the client's connect hangs until its connect timeout.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        let connecting = tokio::net::TcpStream::connect(addr);
        match tokio::time::timeout(Duration::from_millis(200), connecting).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    let client = Twilio::new(TwilioConfig {
        api_base: format!("http://{addr}"),
        connect_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(5),
        ..TwilioConfig::new("AC1", "token")
    })
    .unwrap();
    let h = Harness::new(Backend::Sim, &["completed"]).await;
    let started = std::time::Instant::now();
    let err = client.place(&h.request(1)).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the connect timeout, not the request timeout"
    );
    assert!(
        matches!(&err, PlaceError::Transient(m) if m.contains("connect")),
        "{err:?}"
    );
    eprintln!("connect timeout error: {err}");
}

#[tokio::test]
async fn a_connection_dropped_after_the_request_is_unknown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = Vec::new();
        // Read until the form body has arrived, then hang up without a word.
        while !String::from_utf8_lossy(&got).contains("MachineDetection") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let client = Twilio::new(TwilioConfig {
        api_base: format!("http://{addr}"),
        ..TwilioConfig::new("AC1", "token")
    })
    .unwrap();
    let h = Harness::new(Backend::Sim, &["completed"]).await;
    let err = client.place(&h.request(1)).await.unwrap_err();
    assert!(matches!(err, PlaceError::Unknown(_)), "{err:?}");
    let request = String::from_utf8(server.await.unwrap()).unwrap();
    assert!(
        request.starts_with("POST /2010-04-01/Accounts/AC1/Calls.json"),
        "{request}"
    );
}

#[tokio::test]
async fn a_success_without_a_sid_is_unknown() {
    let h = Harness::new(Backend::Twilio, &[]).await;
    let fake = h.fake.as_ref().unwrap();
    fake.push(Reply::Raw {
        status: 201,
        body: "<html>proxy says hi</html>".into(),
    });
    let err = h.provider.place(&h.request(1)).await.unwrap_err();
    assert!(matches!(err, PlaceError::Unknown(_)), "{err:?}");
}

#[tokio::test]
async fn callbacks_are_checked_for_their_signature() {
    let mut h = Harness::new(Backend::Twilio, &["completed"]).await;
    let placed = h.provider.place(&h.request(1)).await.unwrap();
    h.call_events().await;
    let fake = h.fake.as_ref().unwrap();
    // The fake logs a callback once it has leadflow's answer, just after the event.
    let callbacks = eventually(|| Some(fake.callbacks()).filter(|c| c.len() == 4)).await;
    assert_eq!(
        callbacks.iter().map(|c| c.answered).collect::<Vec<_>>(),
        [204; 4]
    );
    let url = callbacks[0].url.clone();
    let params = [
        ("CallSid", placed.call_sid.as_str()),
        ("CallStatus", "completed"),
    ];
    assert_eq!(fake.send_status(&url, &params, Sign::Missing).await, 401);
    assert_eq!(fake.send_status(&url, &params, Sign::Wrong).await, 403);
    // Signed over another query string: the attempt id is covered by the signature.
    let elsewhere = format!(
        "{}{STATUS_PATH}?attempt={}",
        h.public_url,
        uuid::Uuid::nil()
    );
    let form: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(!twilio::verify(
        fake.auth_token(),
        &elsewhere,
        &form,
        &fake.signature(&url, &form)
    ));
    assert_eq!(fake.send_status(&url, &params, Sign::Valid).await, 204);
    let replay = h.call_events().await;
    assert_eq!(replay[0].call_status, CallStatus::Completed);
}

#[tokio::test]
async fn a_machine_answer_is_reported() {
    let mut h = Harness::new(Backend::Twilio, &["machine"]).await;
    h.provider.place(&h.request(1)).await.unwrap();
    let events = h.call_events().await;
    let last = events.last().unwrap();
    assert_eq!(last.call_status, CallStatus::Completed);
    assert_eq!(last.answered_by.as_deref(), Some("machine_start"));
    assert!(!last.answered_by_human());
}

#[tokio::test]
async fn the_fake_signs_like_twilios_documented_example() {
    let params: Vec<(String, String)> = [
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+12349013030"),
        ("Digits", "1234"),
        ("From", "+12349013030"),
        ("To", "+18005551212"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        fake_twilio::sign("12345", url, &params),
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    );
    assert_eq!(
        twilio::signature("12345", url, &params),
        "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    );
}

#[tokio::test]
async fn the_fake_refuses_what_twilio_refuses() {
    let h = Harness::new(Backend::Twilio, &["completed"]).await;
    let fake = h.fake.as_ref().unwrap();
    let mut outside = h.request(1);
    outside.status_callback = "https://elsewhere.test/status".into();
    let err = h.provider.place(&outside).await.unwrap_err();
    assert!(
        matches!(&err, PlaceError::Permanent(m) if m.contains("21609")),
        "{err:?}"
    );
    let mut bad_from = h.request(1);
    bad_from.from = "Leadflow".into();
    let err = h.provider.place(&bad_from).await.unwrap_err();
    assert!(
        matches!(&err, PlaceError::Permanent(m) if m.contains("21212")),
        "{err:?}"
    );
    let answered: Vec<u16> = fake.requests().iter().map(|r| r.answered).collect();
    assert_eq!(answered, [400, 400]);
}

// ---- simulator only ------------------------------------------------------------------------

#[tokio::test]
async fn the_simulator_reports_after_its_delay() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sim = Sim::new(
        SimConfig {
            delay: Duration::from_millis(500),
            ..SimConfig::default()
        },
        tx,
    );
    let h = Harness::new(Backend::Sim, &["completed"]).await;
    let req = h.request(1);
    let started = std::time::Instant::now();
    let placed = sim.place(&req).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "place does not wait for the call"
    );
    let report = rx.recv().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        (report.attempt_id, report.call_sid),
        (req.attempt_id, placed.call_sid)
    );
}

#[tokio::test]
async fn the_call_list_is_asked_with_twilios_filters_and_fails_as_an_error() {
    let h = Harness::new(Backend::Twilio, &["busy"]).await;
    let fake = h.fake.as_ref().unwrap();
    let placed = h.provider.place(&h.request(1)).await.unwrap();
    // A call whose answer never came back is listed all the same.
    fake.push(Reply::created().answered_after(Duration::from_secs(2)));
    let lost = h.provider.place(&h.request(2)).await.unwrap_err();
    assert!(matches!(lost, PlaceError::Unknown(_)), "{lost:?}");
    let since = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_mins(1))
        .unwrap();
    let listed = h.provider.calls_to(LEAD, since).await.unwrap();
    let sids: Vec<_> = listed.iter().map(|c| c.call_sid.as_str()).collect();
    assert_eq!(sids.len(), 2, "{sids:?}");
    assert!(sids.contains(&placed.call_sid.as_str()));
    let answerless = listed
        .iter()
        .find(|c| c.call_sid != placed.call_sid)
        .unwrap();
    assert_eq!(answerless.status, Some(CallStatus::Queued));
    assert!(
        listed.iter().all(|c| c.attempt_id.is_none()),
        "Twilio lists no Url"
    );
    assert_eq!(fake.lookups(), 1);

    fake.fail_lookups(1);
    let err = h.provider.calls_to(LEAD, since).await.unwrap_err();
    assert!(
        matches!(&err, PlaceError::Transient(m) if m.contains("503")),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("4155550123"),
        "numbers are masked: {err}"
    );
    assert_eq!(h.provider.calls_to(LEAD, since).await.unwrap().len(), 2);
    assert_eq!(fake.created_calls().len(), 2, "listing places no call");
}

/// A Calls list whose next page points elsewhere: a lookup that cannot read the whole list
/// must fail rather than say "none".
#[tokio::test]
async fn a_call_list_that_cannot_be_read_whole_is_an_error() {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let base = format!(
        "http://{}",
        acceptor.local_addr()[0].as_socket_addr().unwrap()
    );
    let app = poem::endpoint::make(move |req: poem::Request| async move {
        let query = req.uri().query().unwrap_or_default().to_owned();
        assert!(query.contains("To=%2B14155550123"), "{query}");
        assert!(query.contains("StartTime%3E=20"), "{query}");
        let body = serde_json::json!({
            "calls": [],
            "next_page_uri": "https://elsewhere.example/steal?Page=1",
        });
        poem::Response::builder()
            .content_type("application/json")
            .body(body.to_string())
    });
    let server = tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    let client = Twilio::new(TwilioConfig {
        api_base: base,
        ..TwilioConfig::new("AC1", "token")
    })
    .unwrap();
    let err = client
        .calls_to(LEAD, jiff::Timestamp::now())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PlaceError::Transient(m) if m.contains("next page")),
        "{err:?}"
    );
    server.abort();
}
