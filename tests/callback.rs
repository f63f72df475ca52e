//! The callback step end to end: business hours and quiet hours on an injected clock, the
//! Twilio client against a fake Twilio over real sockets, the simulator, the attempt policy,
//! and the guarantees that a redelivered job or a lost answer never phones a lead twice.

mod common;

use std::time::Duration;

use common::fake_twilio::{FakeTwilio, Reply, Sign};
use common::{Options, TestApp, repo_path, sample};
use jiff::civil::{Time, Weekday};
use jiff::{Timestamp, Zoned};
use leadflow::clock::Clock;
use leadflow::engine::{CallbackSettings, ProviderConfig};
use leadflow::telephony::sim::SimConfig;
use leadflow::telephony::twilio::TwilioConfig;
use serde_json::{Value, json};

/// Settings with windows short enough to watch in a test.
fn callbacks() -> CallbackSettings {
    CallbackSettings {
        unknown_window: Duration::from_secs(3),
        outcome_timeout: Duration::from_secs(60),
        provider_retry: leadflow::retry::RetryPolicy {
            max_attempts: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(2),
        },
        ..CallbackSettings::default()
    }
}

fn twilio(fake: &FakeTwilio) -> ProviderConfig {
    let mut cfg = TwilioConfig::new(fake.account_sid(), fake.auth_token());
    cfg.api_base = fake.base_url();
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.request_timeout = Duration::from_secs(1);
    ProviderConfig::Twilio(cfg)
}

fn sim(outcomes: &str) -> ProviderConfig {
    ProviderConfig::Sim(SimConfig {
        delay: Duration::from_millis(50),
        outcomes: leadflow::telephony::sim::parse_outcomes(outcomes).expect("outcomes"),
    })
}

async fn app(provider: ProviderConfig, clock: Clock, callbacks: CallbackSettings) -> TestApp {
    TestApp::start_with(Options {
        workflows_dir: repo_path("tests/fixtures/workflows"),
        provider,
        clock,
        callbacks,
        ..Options::default()
    })
    .await
}

/// The default workflow (team_001: New York, 09:00–17:30 weekdays) plus the test workflows.
async fn default_app(provider: ProviderConfig, clock: Clock) -> TestApp {
    let dir = std::env::temp_dir().join(format!("lf-flows-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    for file in [
        "workflows/default.toml",
        "tests/fixtures/workflows/fast-callback.toml",
    ] {
        let src = repo_path(file);
        let name = src.file_name().expect("file name").to_owned();
        std::fs::copy(&src, dir.join(name)).expect("copy");
    }
    TestApp::start_with(Options {
        workflows_dir: dir,
        provider,
        clock,
        callbacks: callbacks(),
        ..Options::default()
    })
    .await
}

/// The next `weekday` at `h:m` in `zone`, at least two days from now (a clock set there
/// stays in the future, whatever the real date).
fn next(weekday: Weekday, h: i8, m: i8, zone: &str) -> Zoned {
    let mut day = Zoned::now()
        .in_tz(zone)
        .expect("zone")
        .date()
        .checked_add(jiff::Span::new().days(2))
        .expect("date");
    while day.weekday() != weekday {
        day = day.tomorrow().expect("date");
    }
    day.to_datetime(Time::constant(h, m, 0, 0))
        .in_tz(zone)
        .expect("zoned")
}

async fn submit(app: &TestApp, token: &str, body: &Value) -> String {
    let (code, resp) = app.post_json(token, body).await;
    assert_eq!(code, 200, "{resp}");
    resp["lead_id"].as_str().expect("lead_id").to_owned()
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits (10 s at most) until the lead's first attempt is `unknown`: sent, no answer.
async fn attempt_becomes_unknown(app: &TestApp, id: &str) {
    eventually(
        "the attempt to be unknown",
        Duration::from_secs(10),
        || async {
            let (_, v) = app.get_lead(id).await;
            v["callback"]["attempts"][0]["state"] == "unknown"
        },
    )
    .await;
}

/// Whether the count `sql` returns is `n`.
async fn count_is(app: &TestApp, sql: &str, n: i64) -> bool {
    let got: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    got == n
}

fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .expect("timestamp text")
        .parse()
        .expect("timestamp")
}

fn timeline_events(view: &Value, name: &str) -> Vec<Value> {
    view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["event"] == name)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_tuesday_morning_lead_is_called_at_once_through_twilio() {
    let fake = FakeTwilio::start().await;
    fake.set_default(Reply::created_then("completed"));
    let tuesday = next(Weekday::Tuesday, 10, 0, "America/New_York");
    let app = default_app(twilio(&fake), Clock::starting_at(tuesday.timestamp())).await;
    let hook = app.hook("website-form", "default", true).await;
    let id = submit(&app, &hook.token, &sample("website-form", "212-736-5000")).await;
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(15))
        .await;

    let calls = fake.created_calls();
    assert_eq!(calls.len(), 1, "exactly one call");
    let call = &calls[0];
    let attempt = &view["callback"]["attempts"][0];
    assert_eq!(
        attempt["provider_call_id"].as_str(),
        call.call_sid.as_deref()
    );
    assert_eq!(attempt["outcome"], "called");
    assert_eq!(attempt["lead_zone"], "America/New_York");
    assert_eq!(
        call.path,
        format!("/2010-04-01/Accounts/{}/Calls.json", fake.account_sid())
    );
    assert_eq!(
        call.basic_auth,
        Some((fake.account_sid().to_owned(), fake.auth_token().to_owned()))
    );
    assert_eq!(call.field("To"), Some("+12127365000"));
    assert_eq!(
        call.field("From"),
        Some("+12125550100"),
        "the team's caller ID"
    );
    assert_eq!(call.field("MachineDetection"), Some("Enable"));
    assert!(call.field("Timeout").is_some());
    let attempt_id: String = sqlx::query_scalar("SELECT id::text FROM callback_attempts")
        .fetch_one(&app.db.pool)
        .await
        .expect("attempt");
    assert_eq!(
        call.field("StatusCallback"),
        Some(
            format!(
                "{}/v1/telephony/twilio/status?attempt={attempt_id}",
                app.base
            )
            .as_str()
        )
    );
    assert_eq!(
        call.fields("StatusCallbackEvent"),
        vec!["initiated", "ringing", "answered", "completed"]
    );
    let twiml_url = call.field("Url").expect("Url");
    assert!(twiml_url.starts_with(&format!(
        "{}/v1/telephony/twilio/twiml/{attempt_id}?sig=",
        app.base
    )));

    // Called within one poll interval of acceptance (the decision used the injected clock).
    let received = ts(&view["lead"]["received_at"]);
    let placed = ts(&timeline_events(&view, "call.placed")[0]["at"]);
    let took = (placed - received)
        .total(jiff::Unit::Millisecond)
        .expect("ms");
    assert!(took < 1000.0, "placed {took}ms after acceptance");

    // What the answered call does: whisper nothing (no whisper set), ring both agents.
    let (code, xml) = fake
        .fetch_twiml(call.call_sid.as_deref().expect("sid"), Some("human"))
        .await;
    assert_eq!(code, 200, "{xml}");
    assert!(xml.contains(r#"callerId="+12125550100""#), "{xml}");
    assert!(
        xml.contains("<Number>+12125550101</Number>")
            && xml.contains("<Number>+12125550102</Number>"),
        "{xml}"
    );
    let (_, xml) = fake
        .fetch_twiml(
            call.call_sid.as_deref().expect("sid"),
            Some("machine_start"),
        )
        .await;
    assert!(
        xml.contains("<Hangup"),
        "agents are not put through to a machine: {xml}"
    );
    // A TwiML URL whose signature does not match is refused.
    let forged = twiml_url.replace("sig=", "sig=x");
    let resp = app.client.post(&forged).send().await.expect("sent");
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn friday_evening_leads_wait_for_mondays_opening_staggered() {
    let fake = FakeTwilio::start().await;
    let friday = next(Weekday::Friday, 17, 10, "America/New_York");
    let clock = Clock::starting_at(friday.timestamp());
    let app = default_app(twilio(&fake), clock).await;
    let hook = app.hook("website-form", "default", true).await;
    let monday = friday
        .date()
        .checked_add(jiff::Span::new().days(3))
        .expect("monday")
        .to_datetime(Time::constant(9, 0, 0, 0))
        .in_tz("America/New_York")
        .expect("zoned")
        .timestamp();
    let phones = ["212-736-5001", "212-736-5002", "212-736-5003"];
    let mut ids = Vec::new();
    for p in phones {
        let id = submit(&app, &hook.token, &sample("website-form", p)).await;
        // Slots go in the order routes commit; concurrent workers could reorder leads sent
        // back to back, so each is routed before the next is sent.
        app.wait_for_run(&id, "scheduled", Duration::from_secs(10))
            .await;
        ids.push(id);
    }
    for (k, id) in ids.iter().enumerate() {
        let view = app
            .wait_for_run(id, "scheduled", Duration::from_secs(10))
            .await;
        let expected = monday
            .checked_add(jiff::SignedDuration::from_secs(15 * k as i64))
            .expect("ts");
        assert_eq!(ts(&view["callback"]["scheduled_for"]), expected, "lead {k}");
        assert_eq!(
            view["callback"]["rule"],
            if k == 0 { "team_hours" } else { "stagger" }
        );
        // The wait is the job's persisted run_at, not a sleep.
        let run_at: jiff_sqlx::Timestamp = sqlx::query_scalar(
            "SELECT j.run_at FROM apalis.jobs j JOIN steps s ON s.job_id = j.id \
             WHERE s.run_id = $1::uuid AND s.name = 'callback'",
        )
        .bind(view["run"]["id"].as_str().expect("run id"))
        .fetch_one(&app.db.pool)
        .await
        .expect("callback job");
        let want = clock.to_real(expected);
        let off = (run_at.to_jiff() - want).abs().get_seconds();
        assert!(
            off <= 1,
            "run_at {} is not Monday's opening ({want})",
            run_at.to_jiff()
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        fake.requests().is_empty(),
        "nobody is called on a Friday evening"
    );
}

#[tokio::test]
async fn a_uk_lead_at_half_past_seven_waits_for_eight_in_london() {
    let seven_thirty = next(Weekday::Wednesday, 7, 30, "Europe/London");
    let app = app(
        sim("completed"),
        Clock::starting_at(seven_thirty.timestamp()),
        callbacks(),
    )
    .await;
    let hook = app.hook("uk-form", "quiet", true).await;
    let mut body = sample("uk-form", "020 7946 0018");
    body["country_code_field"] = json!("+44");
    let id = submit(&app, &hook.token, &body).await;
    let view = app
        .wait_for_run(&id, "scheduled", Duration::from_secs(10))
        .await;
    let eight = seven_thirty
        .with()
        .time(Time::constant(8, 0, 0, 0))
        .build()
        .expect("zoned");
    assert_eq!(ts(&view["callback"]["scheduled_for"]), eight.timestamp());
    assert_eq!(view["callback"]["rule"], "lead_quiet_hours");
    let scheduled = &timeline_events(&view, "callback.scheduled")[0]["detail"];
    assert_eq!(scheduled["lead_zone"], "Europe/London");
}

#[tokio::test]
async fn busy_then_no_answer_then_completed_are_three_spaced_attempts() {
    let app = app(sim("busy,no-answer,completed"), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0101")).await;
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(30))
        .await;
    let attempts = view["callback"]["attempts"].as_array().expect("attempts");
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, vec!["busy", "no-answer", "called"]);
    let placed: Vec<Timestamp> = attempts.iter().map(|a| ts(&a["placed_at"])).collect();
    let gap = |i: usize| {
        (placed[i + 1] - placed[i])
            .total(jiff::Unit::Millisecond)
            .expect("ms")
    };
    // busy → 1s, no-answer → 2s (fast-callback.toml), measured from the outcome, which the
    // simulator reports 50 ms after placing.
    assert!((1000.0..2500.0).contains(&gap(0)), "busy gap {}ms", gap(0));
    assert!(
        (2000.0..3500.0).contains(&gap(1)),
        "no-answer gap {}ms",
        gap(1)
    );
    let scheduled = timeline_events(&view, "callback.scheduled");
    assert_eq!(scheduled.len(), 2);
    assert!(
        scheduled
            .iter()
            .all(|e| e["detail"]["rule"] == "retry_delay")
    );
    assert_eq!(view["run"]["status"], "called");
}

#[tokio::test]
async fn no_answer_on_every_attempt_exhausts_the_run() {
    let app = app(sim("no-answer"), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0102")).await;
    let view = app
        .wait_for_run(&id, "exhausted", Duration::from_secs(30))
        .await;
    assert_eq!(
        view["callback"]["attempts"].as_array().map(Vec::len),
        Some(3)
    );
    assert!(
        view["run"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("3 attempts")
    );
}

#[tokio::test]
async fn a_provider_503_then_201_places_one_call_after_a_spaced_retry() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::server_error(503), Reply::created_then("completed")]);
    let app = app(twilio(&fake), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0103")).await;
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(20))
        .await;
    assert_eq!(fake.requests().len(), 2, "one refused request, one call");
    assert_eq!(fake.created_calls().len(), 1);
    let attempts = view["callback"]["attempts"].as_array().expect("attempts");
    assert_eq!(
        attempts.len(),
        1,
        "a provider outage is not a new call attempt"
    );
    let error = &timeline_events(&view, "call.provider_error")[0];
    let retried = ts(&timeline_events(&view, "call.placed")[0]["at"]);
    let waited = (retried - ts(&error["at"]))
        .total(jiff::Unit::Millisecond)
        .expect("ms");
    assert!(
        waited >= 1000.0,
        "retried after {waited}ms; the policy says at least 1s"
    );
}

#[tokio::test]
async fn a_timeout_after_sending_waits_for_a_status_and_never_calls_twice() {
    let fake = FakeTwilio::start().await;
    // Twilio takes the call but answers after the client gave up (1 s).
    fake.script([Reply::created().delayed(Duration::from_secs(2))]);
    let mut settings = callbacks();
    settings.unknown_window = Duration::from_secs(30);
    let app = app(twilio(&fake), Clock::System, settings).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0104")).await;
    attempt_becomes_unknown(&app, &id).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fake.requests().len(),
        1,
        "no second POST while the call may be out"
    );
    // The status callback for the call settles the attempt.
    let sid = fake.created_calls()[0]
        .call_sid
        .clone()
        .expect("the fake created the call");
    fake.play(&sid, "completed").await;
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(10))
        .await;
    assert_eq!(
        view["callback"]["attempts"][0]["provider_call_id"],
        json!(sid)
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn when_the_provider_never_saw_the_call_the_lookup_lets_the_next_attempt_call() {
    let fake = FakeTwilio::start().await;
    // The request goes out but never reaches Twilio, and no answer comes back (1 s timeout).
    fake.script([
        Reply::Unseen(Duration::from_secs(2)),
        Reply::created_then("completed"),
    ]);
    let app = app(twilio(&fake), Clock::System, callbacks()).await; // unknown window: 3 s
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0105")).await;
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(30))
        .await;
    let attempts = view["callback"]["attempts"].as_array().expect("attempts");
    let outcomes: Vec<&str> = attempts
        .iter()
        .map(|a| a["outcome"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(outcomes, vec!["lost", "called"]);
    let lookups = timeline_events(&view, "call.lookup");
    assert_eq!(lookups.len(), 1, "{lookups:#?}");
    assert_eq!(lookups[0]["detail"]["result"], "none");
    assert_eq!(lookups[0]["detail"]["attempt"], 1);
    assert_eq!(fake.created_calls().len(), 1, "one call reached Twilio");
    assert_eq!(fake.lookups(), 1);
}

/// `leadflow_call_lookups_total{result}` as this process's recorder has it now.
fn lookups_counted(result: &str) -> f64 {
    let text = leadflow::metrics::handle().render();
    let series = format!("leadflow_call_lookups_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_call_whose_answer_was_lost_is_found_by_the_lookup_and_never_placed_again() {
    let fake = FakeTwilio::start().await;
    // Twilio creates the call, then answers after the client gave up (1 s), and its status
    // callbacks never come: only the Calls list can tell the call went out.
    fake.withhold_callbacks();
    fake.script([Reply::created_then("completed").answered_after(Duration::from_secs(2))]);
    // And it cannot be asked at first: two lookups fail before one gets through.
    fake.fail_lookups(2);
    let (errors, adopted) = (lookups_counted("error"), lookups_counted("adopted"));
    let app = app(twilio(&fake), Clock::System, callbacks()).await; // unknown window: 3 s
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0111")).await;
    attempt_becomes_unknown(&app, &id).await;
    eventually("a failed lookup", Duration::from_secs(15), || async {
        fake.lookups() >= 1
    })
    .await;
    let (_, view) = app.get_lead(&id).await;
    assert_eq!(view["run"]["status"], "calling", "still waiting: {view:#}");
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(30))
        .await;
    assert_eq!(fake.created_calls().len(), 1, "no second call, ever");
    assert_eq!(fake.requests().len(), 1);
    let sid = fake.created_calls()[0].call_sid.clone().expect("sid");
    let attempts = view["callback"]["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["provider_call_id"], json!(sid));
    assert_eq!(attempts[0]["outcome"], "called");
    let lookups = timeline_events(&view, "call.lookup");
    let results: Vec<&str> = lookups
        .iter()
        .map(|e| e["detail"]["result"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(results, ["error", "error", "adopted"], "{lookups:#?}");
    assert_eq!(lookups[2]["detail"]["provider_call_id"], json!(sid));
    assert_eq!(lookups[2]["detail"]["status"], "completed");
    // Each failed lookup waited its backoff step (1 s, then 2 s, before jitter) first.
    let at = |i: usize| ts(&lookups[i]["at"]);
    let gap = |a: usize, b: usize| (at(b) - at(a)).total(jiff::Unit::Millisecond).expect("ms");
    assert!(gap(0, 1) >= 1000.0, "asked again after {}ms", gap(0, 1));
    assert!(gap(1, 2) >= 1000.0, "asked again after {}ms", gap(1, 2));
    assert_eq!(fake.lookups(), 3);
    assert!(lookups_counted("error") - errors >= 2.0);
    assert!(lookups_counted("adopted") - adopted >= 1.0);
}

#[tokio::test]
async fn a_crash_after_the_provider_answered_places_no_second_call() {
    let fake = FakeTwilio::start().await;
    let mut settings = callbacks();
    settings.unknown_window = Duration::from_secs(60);
    let mut app = app(twilio(&fake), Clock::System, settings).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    app.service().engine.faults.hang_after_place(1);
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0106")).await;
    eventually("the call to be placed", Duration::from_secs(10), || async {
        fake.created_calls().len() == 1
    })
    .await;
    // The process dies after Twilio answered 201 and before the attempt recorded it.
    app.crash_and_restart().await;
    // Let the rescue (3 s) redeliver the job: it must find the attempt `placing` and wait.
    eventually(
        "the redelivered job to wait",
        Duration::from_secs(15),
        || async {
            let waits: i32 = sqlx::query_scalar("SELECT waits FROM steps WHERE name = 'callback'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap_or(0);
            waits >= 1
        },
    )
    .await;
    assert_eq!(
        fake.requests().len(),
        1,
        "the redelivery placed no second call"
    );
    let sid = fake.created_calls()[0].call_sid.clone().expect("sid");
    fake.play(&sid, "completed").await;
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(10))
        .await;
    assert_eq!(
        view["callback"]["attempts"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(fake.requests().len(), 1);
}

#[tokio::test]
async fn duplicated_and_out_of_order_status_callbacks_change_nothing() {
    let fake = FakeTwilio::start().await;
    let app = app(twilio(&fake), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0107")).await;
    eventually("the call to be placed", Duration::from_secs(10), || async {
        fake.created_calls().len() == 1
    })
    .await;
    let call = fake.created_calls()[0].clone();
    let sid = call.call_sid.clone().expect("sid");
    let url = call
        .field("StatusCallback")
        .expect("callback url")
        .to_owned();
    let status = |s: &'static str, seq: &'static str| {
        let sid = sid.clone();
        async move {
            vec![
                ("CallSid", sid),
                ("CallStatus", s.to_owned()),
                ("SequenceNumber", seq.to_owned()),
                ("AnsweredBy", "human".to_owned()),
            ]
        }
    };
    for (s, seq) in [
        ("completed", "3"),
        ("ringing", "1"),
        ("completed", "3"),
        ("in-progress", "2"),
    ] {
        let params = status(s, seq).await;
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(fake.send_status(&url, &params, Sign::Valid).await, 204);
    }
    let view = app
        .wait_for_run(&id, "called", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, view2) = app.get_lead(&id).await;
    assert_eq!(timeline_events(&view2, "call.completed").len(), 1);
    assert!(
        timeline_events(&view2, "call.ringing").is_empty(),
        "a late ringing is ignored"
    );
    assert_eq!(
        view["callback"]["attempts"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(view2["run"]["status"], "called");
}

#[tokio::test]
async fn status_callbacks_need_twilios_signature() {
    let fake = FakeTwilio::start().await;
    let app = app(twilio(&fake), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0108")).await;
    eventually("the call to be placed", Duration::from_secs(10), || async {
        fake.created_calls().len() == 1
    })
    .await;
    let call = fake.created_calls()[0].clone();
    let url = call.field("StatusCallback").expect("url").to_owned();
    let sid = call.call_sid.clone().expect("sid");
    let params = [("CallSid", sid.as_str()), ("CallStatus", "completed")];
    assert_eq!(fake.send_status(&url, &params, Sign::Missing).await, 401);
    assert_eq!(fake.send_status(&url, &params, Sign::Wrong).await, 403);
    let tampered = url.replace("attempt=", "attempt=0");
    assert_eq!(fake.send_status(&tampered, &params, Sign::Valid).await, 400);
    let (_, view) = app.get_lead(&id).await;
    assert_eq!(view["run"]["status"], "calling", "nothing was applied");
    assert_eq!(fake.send_status(&url, &params, Sign::Valid).await, 204);
    app.wait_for_run(&id, "called", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn a_sequence_team_rings_its_agents_one_after_another() {
    let fake = FakeTwilio::start().await;
    let app = app(twilio(&fake), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let mut body = sample("fast", "650-253-0109");
    body["team_id_field"] = json!("sequence");
    submit(&app, &hook.token, &body).await;
    eventually("the call to be placed", Duration::from_secs(10), || async {
        fake.created_calls().len() == 1
    })
    .await;
    let call = fake.created_calls()[0].clone();
    let (_, first) = fake
        .fetch_twiml(call.call_sid.as_deref().expect("sid"), Some("human"))
        .await;
    assert!(
        first.contains("+12025550111") && !first.contains("+12025550112"),
        "{first}"
    );
    let action = first
        .split("action=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("an action URL")
        .replace("&amp;", "&");
    let post = |status: &'static str| {
        app.client
            .post(action.clone())
            .form(&[("DialCallStatus", status), ("AnsweredBy", "human")])
            .send()
    };
    let second = post("no-answer")
        .await
        .expect("sent")
        .text()
        .await
        .expect("xml");
    assert!(
        second.contains("+12025550112"),
        "the next agent rings: {second}"
    );
    let done = post("completed")
        .await
        .expect("sent")
        .text()
        .await
        .expect("xml");
    assert!(done.contains("<Hangup"), "an agent took the call: {done}");
}

#[tokio::test]
async fn a_lost_status_callback_is_settled_by_asking_the_provider() {
    let fake = FakeTwilio::start().await;
    fake.set_default(Reply::created_then("busy"));
    // Twilio's callbacks never arrive (a restart, a network blip): only asking can tell.
    fake.set_callback_delay(Duration::from_secs(3600));
    let mut settings = callbacks();
    settings.reconcile_after = Duration::from_secs(2);
    let app = app(twilio(&fake), Clock::System, settings).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0110")).await;
    eventually(
        "attempt 2 to be placed",
        Duration::from_secs(20),
        || async { fake.created_calls().len() >= 2 },
    )
    .await;
    let (_, view) = app.get_lead(&id).await;
    assert_eq!(
        view["callback"]["attempts"][0]["outcome"], "busy",
        "{view:#}"
    );
    assert_eq!(
        timeline_events(&view, "call.reconciled")[0]["detail"]["source"],
        "provider"
    );
}

#[tokio::test]
async fn callbacks_ready_together_place_exactly_one_call_per_attempt() {
    // Busy every time: three attempts per lead, the later ones due together, so callback
    // executions of many leads share their transactions at every attempt.
    let fake = FakeTwilio::start().await;
    fake.set_default(Reply::created_then("busy"));
    let mut app = TestApp::start_with(Options {
        workflows_dir: repo_path("tests/fixtures/workflows"),
        workers: false,
        provider: twilio(&fake),
        callbacks: callbacks(),
        ..Options::default()
    })
    .await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let leads = 20;
    let mut ids = Vec::new();
    for i in 0..leads {
        let phone = format!("650-253-{:04}", 200 + i);
        ids.push(submit(&app, &hook.token, &sample("fast", &phone)).await);
    }
    app.workers = Some(common::worker_settings(app.workflows_dir.clone()));
    app.crash_and_restart().await;

    for id in &ids {
        let view = app
            .wait_for_run(id, "exhausted", Duration::from_secs(60))
            .await;
        assert_eq!(
            view["callback"]["attempts"].as_array().map(Vec::len),
            Some(3),
            "{view:#}"
        );
    }
    let calls = fake.created_calls();
    assert_eq!(calls.len(), 3 * leads, "one call per attempt");
    let mut per_phone = std::collections::BTreeMap::<String, usize>::new();
    for call in &calls {
        *per_phone
            .entry(call.field("To").unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_phone.len(), leads, "every lead was called");
    assert!(per_phone.values().all(|n| *n == 3), "{per_phone:?}");
}

#[tokio::test]
async fn a_status_for_a_run_this_process_cannot_decide_is_recorded_and_its_step_retried() {
    // The status arrives 2 s after the call, at a process restarted meanwhile without the
    // run's workflow: it must still be recorded, and the step's failure shown, not lost.
    let fake = FakeTwilio::start().await;
    fake.set_default(Reply::created_then("completed"));
    fake.set_callback_delay(Duration::from_secs(2));
    let mut app = app(twilio(&fake), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(&app, &hook.token, &sample("fast", "650-253-0300")).await;
    let placed = "SELECT count(*) FROM callback_attempts WHERE state = 'placed'";
    eventually(
        "the call recorded as placed",
        Duration::from_secs(10),
        || count_is(&app, placed, 1),
    )
    .await;
    let dir = std::env::temp_dir().join(format!("lf-flows-{}", uuid::Uuid::new_v4().simple()));
    let without = common::workflows_in(&dir, &["tests/fixtures/workflows/rules.toml"]);
    app.workflows = std::sync::Arc::new(
        leadflow::workflow::Workflows::load_dir(&without).expect("workflows load"),
    );
    app.crash_and_restart().await;

    let done = "SELECT count(*) FROM callback_attempts WHERE state = 'done' AND outcome = 'called'";
    eventually("the final status recorded", Duration::from_secs(15), || {
        count_is(&app, done, 1)
    })
    .await;
    let answered: Vec<u16> = fake.callbacks().iter().map(|c| c.answered).collect();
    assert!(
        answered.iter().all(|code| *code == 204),
        "every status callback accepted: {answered:?}"
    );
    // The woken step cannot decide without its workflow: its error and retries are visible.
    let step = "SELECT status, coalesce(error, '') FROM steps WHERE name = 'callback'";
    eventually(
        "the step's failure recorded",
        Duration::from_secs(15),
        || async {
            let (status, error): (String, String) = sqlx::query_as(step)
                .fetch_one(&app.db.pool)
                .await
                .expect("step");
            status == "retrying" && error.contains("not loaded")
        },
    )
    .await;
    let (_, view) = app.get_lead(&id).await;
    assert_eq!(view["run"]["status"], "calling", "{view:#}");
}

/// The first callback job of a lead's run: its state, attempts, whether it was claimed in
/// the transaction that qualified the lead (its claim time is that transaction's time), and
/// whether a worker name holds it.
async fn first_callback_job(app: &TestApp, lead: &str) -> Option<(String, i32, bool, bool)> {
    sqlx::query_as(
        "SELECT j.status, j.attempts, j.lock_at IS NOT DISTINCT FROM q.finished_at, \
                j.lock_by IS NOT NULL \
         FROM runs r JOIN steps q ON q.run_id = r.id AND q.name = 'qualify' \
         JOIN steps c ON c.run_id = r.id AND c.name = 'callback' AND c.n = 1 \
         JOIN apalis.jobs j ON j.idempotency_key = 'run:' || r.id || ':callback:1' \
         WHERE r.lead_id = $1::uuid",
    )
    .bind(lead)
    .fetch_optional(&app.db.pool)
    .await
    .expect("callback job")
}

/// Notes, for each route step row and call attempt inserted from now on, the transaction that
/// inserted it (test scaffolding: triggers on this test's own database).
async fn note_inserting_transactions(app: &TestApp) {
    for sql in [
        "CREATE TABLE inserted_by (what text, lead_id uuid, tx bigint)",
        "CREATE FUNCTION note_tx() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO inserted_by SELECT TG_ARGV[0], r.lead_id, txid_current() \
           FROM runs r WHERE r.id = NEW.run_id; RETURN NEW; END $$",
        "CREATE TRIGGER note_route AFTER INSERT ON steps FOR EACH ROW \
           WHEN (NEW.name = 'route') EXECUTE FUNCTION note_tx('route')",
        "CREATE TRIGGER note_attempt AFTER INSERT ON callback_attempts FOR EACH ROW \
           EXECUTE FUNCTION note_tx('attempt')",
    ] {
        sqlx::query(sql)
            .execute(&app.db.pool)
            .await
            .expect("test trigger");
    }
}

/// Whether `lead`'s route step and its first call attempt were inserted by one transaction.
async fn attempt_written_with_routing(app: &TestApp, lead: &str) -> bool {
    let txs: Vec<(String, i64)> =
        sqlx::query_as("SELECT what, tx FROM inserted_by WHERE lead_id = $1::uuid ORDER BY what")
            .bind(lead)
            .fetch_all(&app.db.pool)
            .await
            .expect("inserting transactions");
    assert_eq!(txs.len(), 2, "one route step, one attempt: {txs:?}");
    txs[0].1 == txs[1].1
}

#[tokio::test]
async fn a_callback_due_at_once_is_claimed_with_its_qualification_unless_paused() {
    let app = app(sim("completed"), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    note_inserting_transactions(&app).await;
    // Let the callback worker register with apalis: until then nothing is claimed for it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let first = submit(&app, &hook.token, &sample("fast", "650-253-0111")).await;
    app.wait_for_run(&first, "called", Duration::from_secs(20))
        .await;
    // Claimed in qualify's transaction for this process, run, and acknowledged once.
    eventually(
        "the claimed job is acknowledged",
        Duration::from_secs(5),
        || async {
            first_callback_job(&app, &first).await == Some(("Done".to_owned(), 1, true, true))
        },
    )
    .await;
    // Its call's attempt was written in that transaction too, before the call was placed.
    assert!(attempt_written_with_routing(&app, &first).await);
    // And its job acknowledged in the transaction that recorded the provider's answer.
    let acked_with_answer: bool = sqlx::query_scalar(
        "SELECT j.xmin = t.xmin FROM runs r \
         JOIN apalis.jobs j ON j.idempotency_key = 'run:' || r.id || ':callback:1' \
         JOIN timeline t ON t.run_id = r.id AND t.event = 'call.placed' WHERE r.lead_id = $1::uuid",
    )
    .bind(&first)
    .fetch_one(&app.db.pool)
    .await
    .expect("acknowledgement");
    assert!(acked_with_answer);

    // With the callback queue paused, the job waits in the queue, unclaimed.
    app.queue_action("callback", "pause").await;
    let second = submit(&app, &hook.token, &sample("fast", "650-253-0112")).await;
    eventually(
        "the callback job is queued",
        Duration::from_secs(10),
        || async { first_callback_job(&app, &second).await.is_some() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        first_callback_job(&app, &second).await,
        Some(("Pending".to_owned(), 0, false, false))
    );
    let (_, view) = app.get_lead(&second).await;
    assert_eq!(view["run"]["status"], "running", "{view}");

    // Resumed, the callback worker fetches it; the lead is called once.
    app.queue_action("callback", "resume").await;
    app.wait_for_run(&second, "called", Duration::from_secs(20))
        .await;
    eventually(
        "the fetched job is acknowledged",
        Duration::from_secs(5),
        || async {
            first_callback_job(&app, &second).await == Some(("Done".to_owned(), 1, false, true))
        },
    )
    .await;
    assert!(!attempt_written_with_routing(&app, &second).await);
    for lead in [&first, &second] {
        let (_, view) = app.get_lead(lead).await;
        let attempts = view["callback"]["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "one call for {lead}");
    }
}

/// The attempt of `lead`'s first call and its provider's call id, once the call is placed
/// and its step waits for the call's statuses.
async fn placed_call(app: &TestApp, lead: &str) -> Option<(uuid::Uuid, String)> {
    sqlx::query_as(
        "SELECT a.id, a.provider_call_id FROM callback_attempts a \
         JOIN runs r ON r.id = a.run_id \
         JOIN steps s ON s.run_id = a.run_id AND s.name = 'callback' AND s.n = a.step_n \
         WHERE r.lead_id = $1::uuid AND a.provider_call_id IS NOT NULL AND s.status = 'waiting'",
    )
    .bind(lead)
    .fetch_optional(&app.db.pool)
    .await
    .expect("attempt")
}

/// The run's status, its callback step's status and when that step finished.
async fn callback_end(app: &TestApp, lead: &str) -> (String, String, Option<Timestamp>) {
    let (run, step, at): (String, String, Option<jiff_sqlx::Timestamp>) = sqlx::query_as(
        "SELECT r.status, s.status, s.finished_at FROM runs r \
         JOIN steps s ON s.run_id = r.id AND s.name = 'callback' WHERE r.lead_id = $1::uuid",
    )
    .bind(lead)
    .fetch_one(&app.db.pool)
    .await
    .expect("run");
    (run, step, at.map(|t| t.to_jiff()))
}

#[tokio::test]
async fn statuses_reported_together_are_applied_in_one_transaction() {
    use leadflow::engine::Engine;
    use leadflow::engine::callback::outcome::{Applied, OutcomeError};
    use leadflow::engine::callback::reports;
    use leadflow::telephony::CallStatus;
    use leadflow::telephony::sim::{SimReport, events_for};

    // The simulator's own reports come an hour later: the test hands them over itself.
    let slow = ProviderConfig::Sim(SimConfig {
        delay: Duration::from_secs(3600),
        ..SimConfig::default()
    });
    let app = app(slow, Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let mut leads = Vec::new();
    for i in 0..5 {
        let phone = format!("650-253-01{:02}", 20 + i);
        leads.push(submit(&app, &hook.token, &sample("fast", &phone)).await);
    }
    let mut calls = Vec::new();
    for lead in &leads {
        eventually("the call is placed", Duration::from_secs(20), || async {
            placed_call(&app, lead).await.is_some()
        })
        .await;
        let (attempt_id, sid) = placed_call(&app, lead).await.expect("placed");
        calls.push(SimReport {
            attempt_id,
            call_sid: sid.clone(),
            events: events_for(&sid, CallStatus::Completed),
        });
    }
    let engine = Engine::build(
        app.db.pool.clone(),
        app.workflows.clone(),
        app.config.clone(),
    )
    .expect("engine");

    // Three calls' statuses together: one commit ends the three runs.
    let results = reports::apply(&engine, &calls[..3]).await;
    assert!(
        results.iter().all(|r| matches!(r, Ok(Applied::Moved))),
        "{results:?}"
    );
    let mut ends = Vec::new();
    for lead in &leads[..3] {
        let (run, step, at) = callback_end(&app, lead).await;
        assert_eq!((run.as_str(), step.as_str()), ("called", "ok"), "{lead}");
        ends.push(at.expect("finished"));
    }
    assert!(
        ends.iter().all(|at| *at == ends[0]),
        "one transaction: {ends:?}"
    );

    // Delivered again, they change nothing; news in the same group still moves its call.
    let mixed = [calls[0].clone(), calls[1].clone(), calls[3].clone()];
    let again = reports::apply(&engine, &mixed).await;
    assert!(
        matches!(
            again[..],
            [
                Ok(Applied::Ignored),
                Ok(Applied::Ignored),
                Ok(Applied::Moved)
            ]
        ),
        "{again:?}"
    );

    // A report for an attempt that does not exist fails its group; the other is still
    // applied, on its own.
    let stray = SimReport {
        attempt_id: uuid::Uuid::now_v7(),
        ..calls[4].clone()
    };
    let results = reports::apply(&engine, &[stray.clone(), calls[4].clone()]).await;
    assert!(
        matches!(&results[0], Err(OutcomeError::NoAttempt(id)) if *id == stray.attempt_id),
        "{results:?}"
    );
    assert!(matches!(results[1], Ok(Applied::Moved)), "{results:?}");
    for lead in &leads[..] {
        let (run, step, _) = callback_end(&app, lead).await;
        assert_eq!((run.as_str(), step.as_str()), ("called", "ok"), "{lead}");
        let (_, view) = app.get_lead(lead).await;
        assert_eq!(timeline_events(&view, "call.completed").len(), 1, "{view}");
    }
}

#[tokio::test]
async fn leads_blocked_after_intake_are_never_called() {
    use leadflow::validate::BlockKind;

    let app = app(sim("completed"), Clock::System, callbacks()).await;
    let hook = app.hook("fast", "fast-callback", true).await;
    // Their callbacks wait in the paused queue, then run together once it resumes.
    app.queue_action("callback", "pause").await;
    let phones = ["650-253-0141", "650-253-0142", "650-253-0143"];
    let mut leads = Vec::new();
    for phone in phones {
        leads.push(submit(&app, &hook.token, &sample("fast", phone)).await);
    }
    eventually("three callbacks wait", Duration::from_secs(20), || {
        count_is(
            &app,
            "SELECT count(*) FROM steps WHERE name = 'callback' AND status = 'pending'",
            3,
        )
    })
    .await;
    let block = |kind, value: &'static str| {
        let pool = app.db.pool.clone();
        async move {
            leadflow::blocklist::add(&pool, kind, value, None)
                .await
                .expect("blocked")
        }
    };
    // The first lead's phone and email both, the second's email only.
    block(BlockKind::Phone, "+1 650 253 0141").await;
    block(BlockKind::Email, "john.doe+6502530141@example.com").await;
    block(BlockKind::Email, "John.Doe+6502530142@Example.com").await;
    app.queue_action("callback", "resume").await;

    let expected = [
        (
            "unreachable",
            Some("the lead's phone number is on the block list"),
        ),
        (
            "unreachable",
            Some("the lead's email address is on the block list"),
        ),
        ("called", None),
    ];
    for (lead, (status, reason)) in leads.iter().zip(expected) {
        let view = app
            .wait_for_run(lead, status, Duration::from_secs(20))
            .await;
        if let Some(reason) = reason {
            assert_eq!(view["run"]["reason"], reason, "{view:#}");
        }
    }
    for lead in &leads[..2] {
        let (_, view) = app.get_lead(lead).await;
        let attempts = view["callback"]["attempts"].as_array().expect("attempts");
        assert!(attempts.is_empty(), "no call for a blocked lead: {view:#}");
    }
}
