//! Faults production will bring, done to real processes: SIGKILL of workers and of the intake
//! under load, a PostgreSQL restart, a provider outage, a slow provider, SIGTERM under load.
//! Nothing accepted may be lost and nobody may be called twice.
//!
//! Sizes come from the environment so CI can run smaller ones: `LEADFLOW_CHAOS_LEADS`
//! (5000), `LEADFLOW_CHAOS_KILLS` (10), `LEADFLOW_CHAOS_INTAKE_LEADS` (1000),
//! `LEADFLOW_CHAOS_OUTAGE_S` (60), `LEADFLOW_CHAOS_SLOW_S` (10), `LEADFLOW_CHAOS_SHUTDOWN_LEADS`
//! (1000), `LEADFLOW_CHAOS_PG_LEADS` (600). Every test uses an always-open workflow and talks
//! only to loopback.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::fake_twilio::{FakeTwilio, Reply};
use common::process::{Process, size, wait_ok};
use common::{Options, TestApp, TestDb, free_addr, repo_path, sample, us_phone};
use futures::StreamExt;
use leadflow::engine::{CallbackSettings, ProviderConfig};
use leadflow::telephony::twilio::TwilioConfig;
use serde_json::{Value, json};

const ADMIN: &str = "chaos-admin-token";

/// `leadflow ARGS` with exactly `env` (nothing inherited but PATH), restartable after a kill.
fn leadflow(name: &str, args: &[&str], env: &BTreeMap<String, String>) -> Process {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env = env.clone();
    Process::restartable(name, move || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_leadflow"));
        cmd.args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&env);
        cmd
    })
}

/// A scratch folder under target/ for a test's data (the private PostgreSQL's, say).
fn scratch(test: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{test}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn env(
    db_url: &str,
    listen: std::net::SocketAddr,
    logs: &std::path::Path,
) -> BTreeMap<String, String> {
    [
        ("DATABASE_URL", db_url.to_owned()),
        ("LEADFLOW_LISTEN", listen.to_string()),
        ("LEADFLOW_PUBLIC_URL", format!("http://{listen}")),
        ("LEADFLOW_ADMIN_TOKEN", ADMIN.to_owned()),
        ("LEADFLOW_DATA_DIR", logs.join("data").display().to_string()),
        (
            "LEADFLOW_WORKFLOWS_DIR",
            repo_path("workflows").display().to_string(),
        ),
        ("LEADFLOW_RESCUE_AFTER_S", "3".to_owned()),
        ("LEADFLOW_POLL_INTERVAL_MS", "100".to_owned()),
        ("LEADFLOW_CALLBACK_UNKNOWN_WINDOW_S", "5".to_owned()),
        ("LEADFLOW_CALLBACK_RECONCILE_S", "3".to_owned()),
        ("LEADFLOW_SHUTDOWN_TIMEOUT_S", "20".to_owned()),
        ("LEADFLOW_SIM_DELAY_MS", "100".to_owned()),
        // Faults are on trial here, not the per-hook rate limit (600 a minute by default,
        // which held the 5,000-lead run to 10 leads a second).
        ("LEADFLOW_RATE_LIMIT_PER_MIN", "1000000".to_owned()),
        ("RUST_LOG", "info,sqlx=warn".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

fn with_twilio(mut env: BTreeMap<String, String>, fake: &FakeTwilio) -> BTreeMap<String, String> {
    env.insert("LEADFLOW_TELEPHONY".into(), "twilio".into());
    env.insert("TWILIO_ACCOUNT_SID".into(), fake.account_sid().to_owned());
    env.insert("TWILIO_AUTH_TOKEN".into(), fake.auth_token().to_owned());
    env.insert("TWILIO_API_BASE".into(), fake.base_url());
    env
}

/// Sends leads `from..to` with `concurrency` clients; each has its own Idempotency-Key and is
/// re-sent with it until it gets a 2xx (bounded by `give_up`). Returns key → lead id for the
/// accepted ones, and every status code seen.
async fn send(
    base: &str,
    token: &str,
    from: u32,
    to: u32,
    concurrency: usize,
    give_up: Duration,
    callback: bool,
) -> (HashMap<String, String>, Vec<u16>) {
    send_leads(
        base,
        token,
        from..to,
        concurrency,
        give_up,
        callback,
        Duration::ZERO,
    )
    .await
}

/// [`send`] with callbacks, each client pausing `pace` after each of its leads.
async fn send_paced(
    base: &str,
    token: &str,
    from: u32,
    to: u32,
    concurrency: usize,
    give_up: Duration,
    pace: Duration,
) -> (HashMap<String, String>, Vec<u16>) {
    send_leads(base, token, from..to, concurrency, give_up, true, pace).await
}

async fn send_leads(
    base: &str,
    token: &str,
    leads: std::ops::Range<u32>,
    concurrency: usize,
    give_up: Duration,
    callback: bool,
    pace: Duration,
) -> (HashMap<String, String>, Vec<u16>) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let results: Vec<(String, Option<String>, Vec<u16>)> = futures::stream::iter(leads)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/v1/webhooks/inbound");
            async move {
                let key = format!("chaos-{i}");
                let mut body = sample("chaos", &us_phone(i));
                body["is_auto"] = json!(i32::from(callback));
                let deadline = Instant::now() + give_up;
                let mut codes = Vec::new();
                loop {
                    let sent = client
                        .post(&url)
                        .bearer_auth(token)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(resp) = sent {
                        codes.push(resp.status().as_u16());
                        if resp.status().is_success() {
                            let v: Value = resp.json().await.unwrap_or(Value::Null);
                            tokio::time::sleep(pace).await;
                            return (key, v["lead_id"].as_str().map(str::to_owned), codes);
                        }
                    }
                    if Instant::now() > deadline {
                        return (key, None, codes);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut accepted = HashMap::new();
    let mut codes = Vec::new();
    for (key, lead, c) in results {
        codes.extend(c);
        if let Some(lead) = lead {
            accepted.insert(key, lead);
        }
    }
    (accepted, codes)
}

/// Waits until no run is still in flight; returns how many are left when `within` runs out.
async fn settle(db: &sqlx::PgPool, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM runs WHERE status IN ('running', 'scheduled', 'calling')",
        )
        .fetch_one(db)
        .await
        .unwrap_or(i64::MAX);
        if open == 0 || Instant::now() > deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The invariants every fault must keep: each accepted lead exists and its run ended as
/// `expected`; each step's effect was applied once.
async fn assert_nothing_lost_nothing_doubled(
    db: &sqlx::PgPool,
    accepted: &HashMap<String, String>,
    expected: &str,
) {
    let ids: Vec<uuid::Uuid> = accepted
        .values()
        .map(|id| id.parse().expect("uuid"))
        .collect();
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM leads WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(db)
        .await
        .expect("count");
    assert_eq!(found as usize, ids.len(), "every 2xx has its lead");
    let not_called: Vec<(uuid::Uuid, String, Option<String>)> = sqlx::query_as(
        "SELECT lead_id, status, reason FROM runs WHERE lead_id = ANY($1) AND status <> $2 LIMIT 5",
    )
    .bind(&ids)
    .bind(expected)
    .fetch_all(db)
    .await
    .expect("runs");
    assert!(not_called.is_empty(), "runs not {expected}: {not_called:?}");
    let doubled: Vec<(uuid::Uuid, String, i64)> = sqlx::query_as(
        "SELECT run_id, event, count(*) FROM timeline \
         WHERE event IN ('qualified', 'routed', 'callback.finished') GROUP BY run_id, event HAVING count(*) > 1 LIMIT 5",
    )
    .fetch_all(db)
    .await
    .expect("timeline");
    assert!(
        doubled.is_empty(),
        "a step's effect applied twice: {doubled:?}"
    );
}

/// At most one call per attempt, and exactly one for every attempt that was not lost.
/// Returns (calls, lost attempts).
async fn assert_one_call_per_attempt(db: &sqlx::PgPool, fake: &FakeTwilio) -> (usize, i64) {
    let mut per_attempt: HashMap<String, usize> = HashMap::new();
    for r in fake.requests() {
        let attempt = r
            .field("StatusCallback")
            .and_then(|u| u.split("attempt=").nth(1))
            .unwrap_or("?")
            .to_owned();
        *per_attempt.entry(attempt).or_default() += 1;
    }
    let twice: Vec<_> = per_attempt.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "attempts called more than once: {twice:?}"
    );
    let attempts: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id::text, outcome FROM callback_attempts")
            .fetch_all(db)
            .await
            .expect("attempts");
    let mut lost = 0;
    for (id, outcome) in &attempts {
        let calls = per_attempt.get(id).copied().unwrap_or(0);
        if outcome.as_deref() == Some("lost") {
            lost += 1;
            assert!(calls <= 1);
        } else {
            assert_eq!(calls, 1, "attempt {id} ({outcome:?}) got {calls} calls");
        }
    }
    (fake.requests().len(), lost)
}

/// `leads` leads (`LEADFLOW_CHAOS_LEADS`) through `serve --no-workers` and three workers,
/// one of which is killed with SIGKILL every 2 s (`LEADFLOW_CHAOS_KILLS` times) and started
/// again. Nothing may be lost, and each lead's phone must ring exactly once at the provider.
/// `withhold`: the provider never sends status callbacks, so every call is settled by asking
/// the provider, and every lost answer by its call list.
async fn kill9_of_workers_under_load(withhold: bool) {
    let leads = size("LEADFLOW_CHAOS_LEADS", 5000) as u32;
    let kills = size("LEADFLOW_CHAOS_KILLS", 10);
    let db = TestDb::new().await;
    let hook = leadflow::hooks::create(&db.pool, "chaos", "always-open", true, "http://x")
        .await
        .expect("hook");
    let fake = FakeTwilio::start().await;
    fake.set_default(Reply::created_then("completed"));
    fake.set_callback_delay(Duration::from_millis(10));
    if withhold {
        fake.withhold_callbacks();
    }
    let logs = scratch("chaos-kill9");
    let listen = free_addr();
    let base = format!("http://{listen}");
    let env = with_twilio(env(&db.url, listen, &logs), &fake);
    let _intake = leadflow("intake", &["serve", "--no-workers"], &env);
    wait_ok(&format!("{base}/readyz"), Duration::from_secs(60)).await;
    let mut workers: Vec<Process> = (0..3)
        .map(|i| leadflow(&format!("worker{i}"), &["worker"], &env))
        .collect();

    let started = Instant::now();
    let sender = tokio::spawn({
        let (base, token) = (base.clone(), hook.token.clone());
        async move { send(&base, &token, 0, leads, 32, Duration::from_secs(120), true).await }
    });
    for k in 0..kills {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let victim = (k as usize * 7 + 1) % workers.len();
        workers[victim].restart();
    }
    let (accepted, _) = sender.await.expect("sender");
    let open = settle(&db.pool, Duration::from_secs(240)).await;
    assert_eq!(
        open,
        0,
        "runs still open; worker0 log:\n{}",
        workers[0].tail(30)
    );
    assert_eq!(accepted.len(), leads as usize, "every lead was accepted");
    assert_nothing_lost_nothing_doubled(&db.pool, &accepted, "called").await;
    let (calls, lost) = assert_one_call_per_attempt(&db.pool, &fake).await;
    // At the provider: every lead's number rang exactly once.
    let mut per_number: HashMap<String, usize> = HashMap::new();
    for call in fake.created_calls() {
        *per_number
            .entry(call.field("To").unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_number.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "numbers called more than once: {twice:?}");
    assert_eq!(per_number.len(), leads as usize, "every lead was called");
    let adopted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM timeline WHERE event = 'call.lookup' AND detail->>'result' = 'adopted'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("lookups");
    println!(
        "chaos kill9: leads={leads} kills={kills} callbacks={} accepted={} lost=0 duplicates=0 \
         calls={calls} calls_per_number=1 lost_attempts={lost} adopted_by_lookup={adopted} seconds={:.1}",
        if withhold { "withheld" } else { "sent" },
        accepted.len(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_workers_under_load_loses_nothing_and_calls_once() {
    kill9_of_workers_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_workers_without_status_callbacks_calls_each_lead_once() {
    kill9_of_workers_under_load(true).await;
}

/// One lead through `serve --no-workers` and one `leadflow worker` against `fake`, whose
/// status callbacks never come; the worker is killed with SIGKILL once `cut` holds, and
/// started again. Returns the lead's run status once it ended (or after a minute), its
/// attempts (outcome, call id) and its lookups' results.
async fn kill9_mid_call(
    fake: &FakeTwilio,
    cut: impl Fn() -> bool,
) -> (String, Vec<(String, Option<String>)>, Vec<String>) {
    fake.withhold_callbacks();
    let db = TestDb::new().await;
    // Always open, and a lost attempt is retried after a second.
    let hook = leadflow::hooks::create(&db.pool, "chaos", "fast-callback", true, "http://x")
        .await
        .expect("hook");
    let logs = scratch("chaos-mid-call");
    let listen = free_addr();
    let base = format!("http://{listen}");
    let mut env = with_twilio(env(&db.url, listen, &logs), fake);
    let workflows = repo_path("tests/fixtures/workflows").display().to_string();
    env.insert("LEADFLOW_WORKFLOWS_DIR".into(), workflows);
    let _intake = leadflow("intake", &["serve", "--no-workers"], &env);
    wait_ok(&format!("{base}/readyz"), Duration::from_secs(60)).await;
    let mut worker = leadflow("worker", &["worker"], &env);
    let (accepted, _) = send(&base, &hook.token, 0, 1, 1, Duration::from_secs(30), true).await;
    let lead: uuid::Uuid = accepted["chaos-0"].parse().expect("lead id");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cut() {
        assert!(
            Instant::now() < deadline,
            "the call never reached the fake: {}",
            worker.tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.restart();
    let open = settle(&db.pool, Duration::from_secs(60)).await;
    assert_eq!(open, 0, "the run is still open: {}", worker.tail(30));
    let status: String = sqlx::query_scalar("SELECT status FROM runs WHERE lead_id = $1")
        .bind(lead)
        .fetch_one(&db.pool)
        .await
        .expect("run");
    let attempts: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT outcome, provider_call_id FROM callback_attempts WHERE lead_id = $1 ORDER BY n",
    )
    .bind(lead)
    .fetch_all(&db.pool)
    .await
    .expect("attempts");
    let lookups: Vec<String> = sqlx::query_scalar(
        "SELECT detail->>'result' FROM timeline WHERE lead_id = $1 AND event = 'call.lookup' ORDER BY at",
    )
    .bind(lead)
    .fetch_all(&db.pool)
    .await
    .expect("lookups");
    (status, attempts, lookups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_while_the_provider_answers_then_the_lookup_adopts_the_call() {
    let fake = FakeTwilio::start().await;
    // Twilio records the call, then takes 3 s to answer: the worker dies in between.
    fake.script([Reply::created_then("completed").answered_after(Duration::from_secs(3))]);
    let (status, attempts, lookups) =
        kill9_mid_call(&fake, || fake.created_calls().len() == 1).await;
    let created = fake.created_calls();
    assert_eq!(created.len(), 1, "exactly one call reached the provider");
    assert_eq!(status, "called");
    let sid = created[0].call_sid.clone();
    assert_eq!(attempts, [("called".to_owned(), sid)]);
    assert_eq!(lookups, ["adopted"]);
    println!("chaos mid-call kill9: calls=1 attempts=1 lookups={lookups:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_before_the_provider_saw_the_call_then_the_next_attempt_calls_once() {
    let fake = FakeTwilio::start().await;
    // The request is on its way but Twilio has not seen it when the worker dies.
    fake.script([Reply::Unseen(Duration::from_secs(10))]);
    fake.set_default(Reply::created_then("completed"));
    let (status, attempts, lookups) = kill9_mid_call(&fake, || fake.unseen() == 1).await;
    let created = fake.created_calls();
    assert_eq!(
        created.len(),
        1,
        "exactly one call reached the provider in all"
    );
    assert_eq!(status, "called");
    let outcomes: Vec<&str> = attempts.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(outcomes, ["lost", "called"]);
    assert_eq!(attempts[0].1, None);
    assert_eq!(attempts[1].1, created[0].call_sid);
    assert_eq!(lookups, ["none"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_of_the_intake_keeps_every_2xx_and_one_lead_per_key() {
    let leads = size("LEADFLOW_CHAOS_INTAKE_LEADS", 1000) as u32;
    let db = TestDb::new().await;
    let hook = leadflow::hooks::create(&db.pool, "chaos", "always-open", true, "http://x")
        .await
        .expect("hook");
    let logs = scratch("chaos-intake");
    let listen = free_addr();
    let base = format!("http://{listen}");
    let mut serve = leadflow("serve", &["serve"], &env(&db.url, listen, &logs));
    wait_ok(&format!("{base}/readyz"), Duration::from_secs(60)).await;
    let sender = tokio::spawn({
        let (base, token) = (base.clone(), hook.token.clone());
        // The intake is on trial here: leads without a callback end `routed`.
        async move { send(&base, &token, 0, leads, 16, Duration::from_secs(120), false).await }
    });
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        serve.restart();
    }
    let (accepted, _) = sender.await.expect("sender");
    assert_eq!(
        accepted.len(),
        leads as usize,
        "every client got its 2xx in the end"
    );
    assert_eq!(open_after(&db.pool).await, 0);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        stored, leads as i64,
        "one lead per idempotency key, none lost, none doubled"
    );
    assert_nothing_lost_nothing_doubled(&db.pool, &accepted, "routed").await;
    println!(
        "chaos intake kill9: leads={leads} kills=2 stored={stored} restarts={}",
        serve.starts() - 1
    );
}

async fn open_after(db: &sqlx::PgPool) -> i64 {
    settle(db, Duration::from_secs(120)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_answers_503_and_every_lead_is_called_soon_after() {
    use leadflow::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
    let leads = size("LEADFLOW_CHAOS_PG_LEADS", 600) as u32;
    let logs = scratch("chaos-pg");
    let opts = || EmbeddedOptions {
        data_dir: logs.join("pg"),
        fast_unsafe: true,
    };
    let pg = EmbeddedPostgres::start(opts())
        .await
        .expect("private PostgreSQL for this test");
    let url = pg.url("leadflow");
    let pool = leadflow::db::connect(&url, 5, Duration::from_secs(5))
        .await
        .expect("pool");
    leadflow::db::migrate(&pool).await.expect("migrate");
    let hook = leadflow::hooks::create(&pool, "chaos", "always-open", true, "http://x")
        .await
        .expect("hook");
    pool.close().await;
    let listen = free_addr();
    let base = format!("http://{listen}");
    let mut env = env(&url, listen, &logs);
    // The default rescue (5 minutes): a job a replaced worker claimed must not wait for it.
    env.remove("LEADFLOW_RESCUE_AFTER_S");
    env.insert("LEADFLOW_REQUEST_TIMEOUT_MS".into(), "3000".into());
    env.insert("LEADFLOW_DB_ACQUIRE_TIMEOUT_MS".into(), "1000".into());
    let intake = leadflow("intake", &["serve", "--no-workers"], &env);
    wait_ok(&format!("{base}/readyz"), Duration::from_secs(60)).await;
    let workers: Vec<Process> = (0..3)
        .map(|i| leadflow(&format!("worker{i}"), &["worker"], &env))
        .collect();

    // 8 clients, each lead with its own Idempotency-Key, re-sent on a 503 until accepted,
    // spread over the two restarts.
    let sender = tokio::spawn({
        let (base, token) = (base.clone(), hook.token.clone());
        let pace = Duration::from_millis(120);
        async move { send_paced(&base, &token, 0, leads, 8, Duration::from_secs(120), pace).await }
    });
    let mut back = Vec::new();
    let mut pg = pg;
    let mut outage_cpu = 0.0;
    let all_cpu = |ps: &[&Process]| ps.iter().map(|p| p.cpu_seconds()).sum::<f64>();
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let cpu_before = all_cpu(&[&intake, &workers[0], &workers[1], &workers[2]]);
        pg.stop().await.expect("stop PostgreSQL");
        let ready = reqwest::get(format!("{base}/readyz"))
            .await
            .expect("readyz answers");
        assert_eq!(ready.status(), 503, "/readyz turns red");
        tokio::time::sleep(Duration::from_secs(3)).await;
        outage_cpu += all_cpu(&[&intake, &workers[0], &workers[1], &workers[2]]) - cpu_before;
        pg = EmbeddedPostgres::start(opts())
            .await
            .expect("PostgreSQL back");
        back.push(jiff::Timestamp::now());
    }
    let (accepted, codes) = sender.await.expect("sender");
    let pool = leadflow::db::connect(&url, 5, Duration::from_secs(5))
        .await
        .expect("pool");

    assert_eq!(
        accepted.len(),
        leads as usize,
        "every lead got its 200 in the end"
    );
    let unavailable = codes.iter().filter(|c| **c == 503).count();
    assert!(unavailable > 0, "some requests met the outage");
    assert!(
        codes.iter().all(|c| matches!(c, 200 | 503)),
        "only 200 or 503: {codes:?}"
    );
    assert!(
        outage_cpu < 3.0,
        "four processes burned {outage_cpu:.2} CPU seconds in 6 s of outage: they spin"
    );
    let open = settle(&pool, Duration::from_secs(120)).await;
    assert_eq!(
        open,
        0,
        "runs still open; worker0 log:\n{}",
        workers[0].tail(30)
    );
    assert_nothing_lost_nothing_doubled(&pool, &accepted, "called").await;

    // Each lead's first call came within 30 s of the later of its acceptance and the
    // database's last return before that call.
    let ids: Vec<uuid::Uuid> = accepted
        .values()
        .map(|id| id.parse().expect("uuid"))
        .collect();
    let firsts: Vec<(uuid::Uuid, jiff_sqlx::Timestamp, jiff_sqlx::Timestamp)> = sqlx::query_as(
        "SELECT l.id, l.received_at, min(a.placed_at) FROM leads l \
         JOIN callback_attempts a ON a.lead_id = l.id \
         WHERE l.id = ANY($1) AND a.placed_at IS NOT NULL GROUP BY l.id",
    )
    .bind(&ids)
    .fetch_all(&pool)
    .await
    .expect("first calls");
    assert_eq!(firsts.len(), ids.len(), "every lead was called");
    let mut longest = (0.0f64, None);
    for (lead, received, placed) in &firsts {
        let (received, placed) = (received.to_jiff(), placed.to_jiff());
        let resumed = back.iter().filter(|b| **b <= placed).max().copied();
        let from = resumed.map_or(received, |b| b.max(received));
        let waited = (placed - from).total(jiff::Unit::Second).expect("seconds");
        if waited > longest.0 {
            longest = (waited, Some(*lead));
        }
    }
    assert!(
        longest.0 < 30.0,
        "lead {:?} waited {:.1} s for its call after the database was back",
        longest.1,
        longest.0
    );
    let outcomes: Vec<(Option<String>, i64)> = sqlx::query_as(
        "SELECT outcome, count(*) FROM callback_attempts GROUP BY outcome ORDER BY outcome",
    )
    .fetch_all(&pool)
    .await
    .expect("outcomes");
    println!(
        "chaos pg restart: leads={leads} workers=3 restarts=2 accepted={} unavailable={unavailable} \
         longest_wait_after_back={:.1}s cpu_during_outages={outage_cpu:.2}s attempts={outcomes:?}",
        accepted.len(),
        longest.0
    );
    pool.close().await;
    drop(workers);
    drop(intake);
    let _ = pg.stop().await;
}

fn twilio(fake: &FakeTwilio, timeout: Duration) -> ProviderConfig {
    let mut cfg = TwilioConfig::new(fake.account_sid(), fake.auth_token());
    cfg.api_base = fake.base_url();
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.request_timeout = timeout;
    ProviderConfig::Twilio(cfg)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_outage_is_waited_out_on_the_persisted_schedule() {
    let outage = Duration::from_secs(size("LEADFLOW_CHAOS_OUTAGE_S", 60));
    let fake = FakeTwilio::start().await;
    fake.set_default(Reply::server_error(503));
    let settings = CallbackSettings::default(); // provider retries from 2 s, doubling, up to 5 min
    let policy = settings.provider_retry;
    let app = TestApp::start_with(Options {
        provider: twilio(&fake, Duration::from_secs(2)),
        callbacks: settings,
        ..Options::default()
    })
    .await;
    let hook = app.hook("chaos", "always-open", true).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let (code, body) = app
            .post_json(&hook.token, &sample("chaos", &us_phone(i)))
            .await;
        assert_eq!(code, 200);
        ids.push(body["lead_id"].as_str().expect("id").to_owned());
    }
    tokio::time::sleep(outage).await;
    fake.set_default(Reply::created_then("completed"));
    for id in &ids {
        let view = app
            .wait_for_run(id, "called", Duration::from_secs(400))
            .await;
        let attempts = view["callback"]["attempts"].as_array().expect("attempts");
        assert_eq!(attempts.len(), 1, "an outage makes no new attempts");
        // Each retry waited at least what the policy says: [d, 2d) with d doubling from 2 s.
        let errors: Vec<jiff::Timestamp> = view["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter(|e| e["event"] == "call.provider_error")
            .map(|e| e["at"].as_str().expect("at").parse().expect("ts"))
            .collect();
        assert!(!errors.is_empty());
        for (k, pair) in errors.windows(2).enumerate() {
            let (lower, _) = policy.delay_bounds(k as u32 + 1);
            let waited = (pair[1] - pair[0])
                .total(jiff::Unit::Millisecond)
                .expect("ms");
            assert!(
                waited >= lower.as_millis() as f64 - 50.0,
                "retry {} after {waited}ms, policy says ≥ {lower:?}",
                k + 1
            );
        }
    }
    assert_eq!(
        fake.created_calls().len(),
        ids.len(),
        "one call per lead once Twilio is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_provider_times_out_and_does_not_block_the_other_steps() {
    let slow = Duration::from_secs(size("LEADFLOW_CHAOS_SLOW_S", 10));
    let fake = FakeTwilio::start().await;
    fake.set_default(Reply::created_then("completed").delayed(slow));
    let settings = CallbackSettings {
        provider_concurrency: 2,
        unknown_window: Duration::from_secs(120),
        ..CallbackSettings::default()
    };
    let timeout = slow / 2;
    let app = TestApp::start_with(Options {
        provider: twilio(&fake, timeout),
        callbacks: settings,
        ..Options::default()
    })
    .await;
    let hook = app.hook("chaos", "always-open", true).await;
    let mut calling = Vec::new();
    for i in 0..10 {
        let (_, body) = app
            .post_json(&hook.token, &sample("chaos", &us_phone(i)))
            .await;
        calling.push(body["lead_id"].as_str().expect("id").to_owned());
    }
    // Leads without a callback go through qualify and route while the provider hangs.
    let started = Instant::now();
    for i in 100..106 {
        let mut body = sample("chaos", &us_phone(i));
        body["is_auto"] = json!(0);
        let (_, resp) = app.post_json(&hook.token, &body).await;
        app.wait_for_run(
            resp["lead_id"].as_str().expect("id"),
            "routed",
            Duration::from_secs(5),
        )
        .await;
    }
    assert!(
        started.elapsed() < timeout,
        "routing waited for the provider"
    );
    for id in &calling {
        let (_, now) = app.get_lead(id).await;
        if now["run"]["status"] != "called" {
            // A status callback the service refused would leave the attempt waiting out its
            // unknown window: say so if it happens.
            let refused: Vec<_> = fake
                .callbacks()
                .into_iter()
                .filter(|c| c.answered != 204)
                .map(|c| c.answered)
                .collect();
            if !refused.is_empty() {
                eprintln!("status callbacks not accepted: {refused:?}");
            }
        }
        let view = app
            .wait_for_run(id, "called", Duration::from_secs(120))
            .await;
        let unknown = view["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .any(|e| e["event"] == "call.unknown");
        assert!(
            unknown,
            "the client timeout fired before the provider answered"
        );
    }
    // Two calls at a time from leadflow; each abandoned request lingers `slow` at the
    // provider, overlapping the next ones: at most 2 × (slow / timeout + 1) at the provider,
    // while without the bound all the calling leads would be there at once.
    let bound = 2 * ((slow.as_secs_f64() / timeout.as_secs_f64()).ceil() as usize + 1);
    assert!(bound < calling.len());
    assert!(
        fake.max_in_flight() <= bound,
        "{} requests in flight at once",
        fake.max_in_flight()
    );
    assert_eq!(
        fake.created_calls().len(),
        calling.len(),
        "no lead was called twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_finishes_in_flight_steps_and_exits_zero() {
    let leads = size("LEADFLOW_CHAOS_SHUTDOWN_LEADS", 1000) as u32;
    let db = TestDb::new().await;
    let hook = leadflow::hooks::create(&db.pool, "chaos", "always-open", true, "http://x")
        .await
        .expect("hook");
    let logs = scratch("chaos-sigterm");
    let listen = free_addr();
    let base = format!("http://{listen}");
    let mut env = env(&db.url, listen, &logs);
    // Simulated calls report after half a second: many are out when SIGTERM comes.
    env.insert("LEADFLOW_SIM_DELAY_MS".into(), "500".into());
    let mut serve = leadflow("serve", &["serve"], &env);
    wait_ok(&format!("{base}/readyz"), Duration::from_secs(60)).await;
    // Clients keep sending through the shutdown and the restart, retrying with their keys.
    let sender = tokio::spawn({
        let (base, token) = (base.clone(), hook.token.clone());
        async move { send(&base, &token, 0, leads, 32, Duration::from_secs(180), true).await }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
            .fetch_one(&db.pool)
            .await
            .expect("count");
        if stored >= i64::from(leads / 2) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE status IN ('running', 'scheduled', 'calling')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    let status = serve.terminate(Duration::from_secs(60)).expect("exited");
    assert_eq!(status.code(), Some(0), "{}", serve.tail(30));
    let claimed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs WHERE status IN ('Running', 'Queued')",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    let left: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT job_type, status, attempts, last_result::text FROM apalis.jobs WHERE status IN ('Running', 'Queued') LIMIT 5",
    )
    .fetch_all(&db.pool)
    .await
    .expect("jobs");
    assert_eq!(
        claimed, 0,
        "nothing is left claimed by the stopped process: {left:?}"
    );
    // The next start takes the rest, and the clients' retries.
    let _serve = leadflow("serve-again", &["serve"], &env);
    let (accepted, _) = sender.await.expect("sender");
    assert_eq!(
        accepted.len(),
        leads as usize,
        "every client got its 2xx in the end"
    );
    assert_eq!(settle(&db.pool, Duration::from_secs(180)).await, 0);
    assert_nothing_lost_nothing_doubled(&db.pool, &accepted, "called").await;
    println!(
        "chaos sigterm: leads={leads} in_flight_at_sigterm={in_flight} exit=0 claimed_after=0"
    );
}
