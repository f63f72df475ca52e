//! The durable graph on real workers: qualification and routing decisions, duplicates,
//! persisted retries and their spacing, exhausted retries, and a worker that dies mid-run.

mod common;

use std::time::Duration;

use common::{Options, TestApp, repo_path, sample, us_phone};
use leadflow::graph::{GRAPH, Kind, Step};
use serde_json::{Value, json};

async fn rules_app() -> TestApp {
    TestApp::start_with(Options {
        workflows_dir: repo_path("tests/fixtures/workflows"),
        ..Options::default()
    })
    .await
}

async fn submit(app: &TestApp, token: &str, body: &Value) -> String {
    let (code, resp) = app.post_json(token, body).await;
    assert_eq!(code, 200, "{resp}");
    resp["lead_id"].as_str().expect("lead_id").to_owned()
}

/// The sample, routed by rules rather than by its team id, and without a callback, so its run
/// ends `routed` (tests/callback.rs covers the callback).
fn lead(hook: &str, i: u32, edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = sample(hook, &us_phone(i));
    body.as_object_mut()
        .expect("object")
        .remove("team_id_field");
    body["is_auto"] = json!(0);
    edit(&mut body);
    body
}

#[tokio::test]
async fn qualification_rules_decide_and_record_their_reasons() {
    let app = rules_app().await;
    let hook = app.hook("rules-form", "rules", true).await;

    let ok = submit(&app, &hook.token, &lead("rules-form", 1, |_| {})).await;
    app.wait_for_run(&ok, "routed", Duration::from_secs(10))
        .await;

    // No company, a competitor's email and too small: all three reasons, in file order.
    let bad = lead("rules-form", 2, |b| {
        b.as_object_mut()
            .expect("object")
            .remove("company_name_field");
        b["email_field"] = json!("spy@RIVAL.example");
        b["size_field"] = json!("Small");
        b["employees"] = json!("3");
    });
    let bad = submit(&app, &hook.token, &bad).await;
    let view = app
        .wait_for_run(&bad, "disqualified", Duration::from_secs(10))
        .await;
    assert_eq!(
        view["steps"][1]["output"]["reasons"],
        json!(["has a company", "not a competitor", "big enough"])
    );
    assert_eq!(
        view["run"]["reason"],
        "has a company; not a competitor; big enough"
    );
    assert_eq!(
        view["steps"].as_array().map(Vec::len),
        Some(2),
        "no route step after disqualification"
    );

    // A numeric custom field can qualify a small company.
    let numeric = lead("rules-form", 3, |b| {
        b["size_field"] = json!("Small");
        b["employees"] = json!(250);
    });
    let numeric = submit(&app, &hook.token, &numeric).await;
    app.wait_for_run(&numeric, "routed", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn routing_uses_team_id_then_rules_then_the_default() {
    let app = rules_app().await;
    let hook = app.hook("rules-form", "rules", true).await;
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            lead("rules-form", 10, |b| b["team_id_field"] = json!("software")),
            "software",
            "team_id_field",
        ),
        (
            lead("rules-form", 11, |b| b["size_field"] = json!("Large")),
            "enterprise",
            "enterprise",
        ),
        (lead("rules-form", 12, |_| {}), "software", "software"),
        (
            lead("rules-form", 13, |b| {
                b["industry_field"] = json!("Retail");
                b["team_id_field"] = json!("no-such-team");
            }),
            "general",
            "default",
        ),
    ];
    for (body, team, rule) in cases {
        let id = submit(&app, &hook.token, &body).await;
        let view = app
            .wait_for_run(&id, "routed", Duration::from_secs(10))
            .await;
        let out = &view["steps"][2]["output"];
        assert_eq!(out["team"], team, "{view:#}");
        assert_eq!(view["run"]["team"], team, "the run records its team");
        assert!(
            out["rule"].to_string().contains(rule),
            "rule {} should mention {rule}",
            out["rule"]
        );
    }
}

#[tokio::test]
async fn a_second_lead_with_the_same_phone_or_email_is_a_duplicate() {
    let app = rules_app().await;
    let hook = app.hook("rules-form", "rules", true).await;
    let first = submit(&app, &hook.token, &lead("rules-form", 20, |_| {})).await;
    app.wait_for_run(&first, "routed", Duration::from_secs(10))
        .await;
    let same_phone = submit(
        &app,
        &hook.token,
        &lead("rules-form", 20, |b| {
            b["email_field"] = json!("other@example.com")
        }),
    )
    .await;
    let view = app
        .wait_for_run(&same_phone, "duplicate", Duration::from_secs(10))
        .await;
    assert_eq!(view["steps"][1]["output"]["duplicate_of"], json!(first));
    assert_eq!(view["steps"][1]["output"]["matched"], "phone");
    let same_email = lead("rules-form", 21, |b| {
        b["email_field"] = json!(sample("x", &us_phone(20))["email_field"])
    });
    let same_email = submit(&app, &hook.token, &same_email).await;
    let view = app
        .wait_for_run(&same_email, "duplicate", Duration::from_secs(10))
        .await;
    assert_eq!(view["steps"][1]["output"]["matched"], "email");
    // Both at once, and three earlier leads match: the earliest, by its phone.
    let both = submit(&app, &hook.token, &lead("rules-form", 20, |_| {})).await;
    let view = app
        .wait_for_run(&both, "duplicate", Duration::from_secs(10))
        .await;
    assert_eq!(view["steps"][1]["output"]["duplicate_of"], json!(first));
    assert_eq!(view["steps"][1]["output"]["matched"], "phone");
}

/// Reads the retry events of a lead's timeline: (attempt, at, next_run_at).
async fn retries(app: &TestApp, lead: &str) -> Vec<(i64, jiff::Timestamp, jiff::Timestamp)> {
    let (_, view) = app.get_lead(lead).await;
    view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["event"] == "step.retry")
        .map(|e| {
            let at: jiff::Timestamp = e["at"].as_str().expect("at").parse().expect("timestamp");
            let next: jiff::Timestamp = e["detail"]["next_run_at"]
                .as_str()
                .expect("next")
                .parse()
                .expect("timestamp");
            (e["detail"]["attempt"].as_i64().expect("attempt"), at, next)
        })
        .collect()
}

#[tokio::test]
async fn a_step_that_fails_twice_is_retried_on_the_persisted_schedule() {
    let app = rules_app().await;
    let hook = app.hook("rules-form", "rules", true).await;
    app.service().engine.faults.fail_next(Step::Qualify, 2);
    let id = submit(&app, &hook.token, &lead("rules-form", 30, |_| {})).await;
    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(30))
        .await;
    let qualify = &view["steps"][1];
    assert_eq!(qualify["name"], "qualify");
    assert_eq!(qualify["attempts"], 3);
    assert_eq!(qualify["status"], "ok");

    // Policy: base 1s, doubling, jitter adds up to as much again: waits in [1,2)s then [2,4)s.
    let r = retries(&app, &id).await;
    assert_eq!(r.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2]);
    let wait = |i: usize| {
        (r[i].2 - r[i].1)
            .total(jiff::Unit::Millisecond)
            .expect("span") as i64
    };
    assert!((1000..2050).contains(&wait(0)), "first wait {}ms", wait(0));
    assert!((2000..4050).contains(&wait(1)), "second wait {}ms", wait(1));
    // The retry ran when it was due, not before, and promptly after (a delayed job's pickup).
    let second_failure = r[1].1;
    assert!(second_failure >= r[0].2, "attempt 2 ran before its run_at");
    let pickup = (second_failure - r[0].2)
        .total(jiff::Unit::Millisecond)
        .expect("span");
    assert!(
        pickup < 1500.0,
        "delayed job picked up {pickup}ms after it was due"
    );
    let started: jiff::Timestamp = view["steps"][2]["started_at"]
        .as_str()
        .expect("route started")
        .parse()
        .expect("ts");
    assert!(started >= r[1].2);
}

#[tokio::test]
async fn retries_exhausted_fail_the_run_with_the_error_visible() {
    let app = rules_app().await;
    let hook = app.hook("rules-form", "rules", true).await;
    app.service().engine.faults.fail_next(Step::Route, 3);
    let id = submit(&app, &hook.token, &lead("rules-form", 40, |_| {})).await;
    let view = app
        .wait_for_run(&id, "failed", Duration::from_secs(30))
        .await;
    let route = &view["steps"][2];
    assert_eq!(route["status"], "failed");
    assert_eq!(route["attempts"], 3);
    assert!(
        route["error"]
            .as_str()
            .unwrap_or_default()
            .contains("injected fault in route")
    );
    assert!(
        view["run"]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("route failed after 3 attempts")
    );
    // apalis acknowledges asynchronously, just after the step's own commit.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, attempts, max): (String, i32, i32) = sqlx::query_as(
            "SELECT status, attempts, max_attempts FROM apalis.jobs WHERE job_type = 'leadflow.route'",
        )
        .fetch_one(&app.db.pool)
        .await
        .expect("the route job");
        if status != "Running" && status != "Queued" {
            assert_eq!(
                (status.as_str(), attempts, max),
                ("Failed", 3, 3),
                "the job row is the dead letter"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the failed job was never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_job_of_a_dead_worker_is_rescued_and_the_run_completes() {
    let mut app = rules_app().await;
    let hook = app.hook("rules-form", "rules", true).await;
    app.service().engine.faults.hang_next(Step::Route, 1);
    let id = submit(&app, &hook.token, &lead("rules-form", 50, |_| {})).await;
    // Wait until the route job is claimed by the doomed worker, then kill it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let claimed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM apalis.jobs WHERE job_type = 'leadflow.route' AND lock_by IS NOT NULL",
        )
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
        if claimed == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "route job never claimed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new process: new worker names; the old one's job is rescued after the rescue timeout.
    app.crash_and_restart().await;
    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(30))
        .await;
    assert_eq!(view["steps"][2]["status"], "ok");
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM timeline WHERE event = 'routed'")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(runs, 1, "the step's effect was applied once");
}

/// Claims lead `lead`'s qualify job for worker `worker`, whose heartbeat is fresh.
async fn claim_qualify_job(app: &TestApp, lead: &str, worker: &str) {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen) \
         VALUES ($1, 'leadflow.qualify', 'PostgresStorage', '', now())",
    )
    .bind(worker)
    .execute(&app.db.pool)
    .await
    .expect("worker row");
    let lead: uuid::Uuid = lead.parse().expect("uuid");
    let claimed = sqlx::query(
        "UPDATE apalis.jobs SET status = 'Queued', lock_by = $2, lock_at = now() \
         WHERE id = (SELECT s.job_id FROM steps s JOIN runs r ON r.id = s.run_id \
                     WHERE r.lead_id = $1 AND s.name = 'qualify')",
    )
    .bind(lead)
    .bind(worker)
    .execute(&app.db.pool)
    .await
    .expect("claim");
    assert_eq!(claimed.rows_affected(), 1);
}

#[tokio::test]
async fn a_claim_left_by_an_earlier_incarnation_of_this_process_runs_without_the_rescue() {
    // A process that shared this one's host and pid (a container restarted in place) claimed
    // a lead's qualify job and died; another host's worker claimed another's. Both heartbeats
    // are fresh, so apalis's rescue (5 minutes here) would not touch either for a long while.
    let mut app = rules_app_without_workers().await;
    let hook = app.hook("rules-form", "rules", true).await;
    let ours = submit(&app, &hook.token, &lead("rules-form", 52, |_| {})).await;
    let theirs = submit(&app, &hook.token, &lead("rules-form", 53, |_| {})).await;
    let earlier = leadflow::engine::claims::Claims::of_this_process().worker_name(Step::Qualify);
    let elsewhere = "elsewhere-1-0badcafe-qualify";
    claim_qualify_job(&app, &ours, &earlier).await;
    claim_qualify_job(&app, &theirs, elsewhere).await;
    let mut settings = common::worker_settings(app.workflows_dir.clone());
    settings.rescue_after_s = 300;
    app.workers = Some(settings);
    app.crash_and_restart().await;
    let view = app
        .wait_for_run(&ours, "routed", Duration::from_secs(10))
        .await;
    assert_eq!(view["steps"][1]["status"], "ok", "{view:#}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = count(
        &app,
        "SELECT count(*) FROM apalis.jobs WHERE status = 'Queued' \
         AND lock_by = 'elsewhere-1-0badcafe-qualify'",
    )
    .await;
    assert_eq!(held, 1, "another process's claim waits for the rescue");
    let (_, view) = app.get_lead(&theirs).await;
    assert_eq!(view["run"]["status"], "running", "{view:#}");
}

#[tokio::test]
async fn an_immediate_job_is_picked_up_by_notification_not_by_polling() {
    // A long poll interval: only LISTEN/NOTIFY can explain a fast pickup.
    let mut app = rules_app_without_workers().await;
    let mut workers = common::worker_settings(app.workflows_dir.clone());
    workers.poll_interval_ms = 10_000;
    app.workers = Some(workers);
    app.crash_and_restart().await;
    // Let the listeners connect before the first insert.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hook = app.hook("rules-form", "rules", false).await;
    let id = submit(&app, &hook.token, &lead("rules-form", 60, |_| {})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let done: Option<(f64,)> = sqlx::query_as(
            "SELECT EXTRACT(EPOCH FROM (r.finished_at - v.finished_at))::float8 FROM steps v \
             JOIN steps r ON r.run_id = v.run_id AND r.name = 'route' AND r.status = 'ok' WHERE v.name = 'validate'",
        )
        .fetch_optional(&app.db.pool)
        .await
        .expect("query");
        if let Some((secs,)) = done {
            assert!(
                secs < 2.0,
                "intake to routed took {secs}s with a 10s poll interval"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "two immediate jobs were not picked up within 5s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.wait_for_run(&id, "routed", Duration::from_secs(1))
        .await;
}

#[tokio::test]
async fn an_intake_only_process_announces_each_lead_once_to_workers_elsewhere() {
    // Intake in one service, workers (polling only every 10 s) in another on the same
    // database: only the intake's announcement can explain a fast pickup.
    let app = rules_app_without_workers().await;
    let mut settings = common::worker_settings(app.workflows_dir.clone());
    settings.poll_interval_ms = 10_000;
    let mut http = common::http_settings();
    http.listen = common::free_addr();
    let engine = leadflow::engine::Engine::build(
        app.db.pool.clone(),
        app.workflows.clone(),
        app.config.clone(),
    )
    .expect("engine");
    let workers = leadflow::service::Service::start(engine, &http, "workers", Some(&settings))
        .await
        .expect("workers start");
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.db.pool)
        .await
        .expect("listener");
    listener
        .listen("apalis::job::insert")
        .await
        .expect("listen");
    // Let the workers' listener connect before the first insert.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let hook = app.hook("rules-form", "rules", false).await;
    let id = submit(&app, &hook.token, &lead("rules-form", 61, |_| {})).await;
    let qualify = leadflow::engine::queue::queue_name(Step::Qualify);
    let mut announced = 0;
    while let Ok(received) = tokio::time::timeout(Duration::from_millis(700), listener.recv()).await
    {
        let payload: Value =
            serde_json::from_str(received.expect("notification").payload()).expect("json");
        if payload["job_type"] == qualify {
            announced += 1;
        }
    }
    assert_eq!(announced, 1, "the lead's qualify job is announced once");
    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(5))
        .await;
    assert_eq!(view["steps"][1]["status"], "ok", "{view:#}");
    let (secs,): (f64,) = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM (q.finished_at - v.finished_at))::float8 FROM steps v \
         JOIN steps q ON q.run_id = v.run_id AND q.name = 'qualify' WHERE v.name = 'validate'",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("query");
    assert!(
        secs < 2.0,
        "intake to qualified took {secs}s with a 10s poll interval"
    );
    assert!(workers.shutdown().await, "workers stop cleanly");
}

/// Submits `count` leads with distinct phones and emails, numbered from `from`, and returns
/// their ids. `edit` may change each body.
async fn submit_many(app: &TestApp, token: &str, from: u32, count: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for i in from..from + count {
        let body = lead("rules-form", i, |b| {
            b["email_field"] = json!(format!("lead{i}@example.com"))
        });
        ids.push(submit(app, token, &body).await);
    }
    ids
}

/// The rules app with no worker running: jobs wait until [`start_workers`].
async fn rules_app_without_workers() -> TestApp {
    TestApp::start_with(Options {
        workflows_dir: repo_path("tests/fixtures/workflows"),
        workers: false,
        ..Options::default()
    })
    .await
}

/// Starts the workers of an app that was started without them.
async fn start_workers(app: &mut TestApp) {
    app.workers = Some(common::worker_settings(app.workflows_dir.clone()));
    app.crash_and_restart().await;
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn steps_ready_together_share_a_commit_and_each_applies_once() {
    let mut app = rules_app_without_workers().await;
    let hook = app.hook("rules-form", "rules", false).await;
    let firsts = submit_many(&app, &hook.token, 100, 30).await;
    // Five later leads with earlier leads' phones: duplicates, decided among the others.
    let mut again = Vec::new();
    for i in 0..5 {
        let body = lead("rules-form", 100 + i, |b| {
            b["email_field"] = json!(format!("again{i}@example.com"))
        });
        again.push(submit(&app, &hook.token, &body).await);
    }
    start_workers(&mut app).await;

    for id in &firsts {
        app.wait_for_run(id, "routed", Duration::from_secs(20))
            .await;
    }
    for (i, id) in again.iter().enumerate() {
        let view = app
            .wait_for_run(id, "duplicate", Duration::from_secs(20))
            .await;
        assert_eq!(view["steps"][1]["output"]["duplicate_of"], json!(firsts[i]));
    }
    // Each decision applied once: one route step and one job per qualified run, one event
    // per decision.
    assert_eq!(
        count(&app, "SELECT count(*) FROM steps WHERE name = 'route'").await,
        30
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(DISTINCT run_id) FROM steps WHERE name = 'route'"
        )
        .await,
        30
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM apalis.jobs WHERE job_type = 'leadflow.route' AND status = 'Done'"
        )
        .await,
        30
    );
    for (event, expected) in [("qualified", 30), ("duplicate", 5), ("routed", 30)] {
        let sql = format!("SELECT count(*) FROM timeline WHERE event = '{event}'");
        assert_eq!(count(&app, &sql).await, expected, "{event} events");
    }
    // Steps settled in one transaction carry its one start time: fewer distinct times than
    // steps means executions shared commits.
    let commits = count(
        &app,
        "SELECT count(DISTINCT finished_at) FROM steps WHERE name = 'qualify'",
    )
    .await;
    assert!(commits < 35, "35 qualify steps in {commits} commits");
}

#[tokio::test]
async fn a_lead_that_breaks_its_group_fails_alone_and_the_others_go_on() {
    let mut app = rules_app_without_workers().await;
    let hook = app.hook("rules-form", "rules", false).await;
    let ids = submit_many(&app, &hook.token, 200, 8).await;
    // A stored submission no step can read: locking the group's rows fails on it.
    sqlx::query("UPDATE leads SET submission = '\"garbage\"'::jsonb WHERE id = $1::uuid")
        .bind(&ids[3])
        .execute(&app.db.pool)
        .await
        .expect("corrupt one lead");
    start_workers(&mut app).await;

    for (i, id) in ids.iter().enumerate() {
        if i != 3 {
            app.wait_for_run(id, "routed", Duration::from_secs(20))
                .await;
        }
    }
    // The rules workflow retries 3 times, 1 s then 2 s apart.
    let view = app
        .wait_for_run(&ids[3], "failed", Duration::from_secs(30))
        .await;
    let reason = view["run"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("unreadable"), "{reason}");
    assert_eq!(view["steps"][1]["attempts"], 3);
    assert_eq!(
        count(&app, "SELECT count(*) FROM timeline WHERE event = 'routed'").await,
        7
    );
}

/// How a run's route step was carried out: whether it was settled in the same transaction
/// as qualify (same `finished_at`, the transaction's time), and its job's state and claim.
async fn route_record(app: &TestApp, lead: &str) -> (bool, String, i32, bool) {
    sqlx::query_as(
        "SELECT q.finished_at IS NOT DISTINCT FROM r.finished_at, j.status, j.attempts, j.lock_by IS NOT NULL \
         FROM runs ru JOIN steps q ON q.run_id = ru.id AND q.name = 'qualify' \
         JOIN steps r ON r.run_id = ru.id AND r.name = 'route' \
         JOIN apalis.jobs j ON j.id = r.job_id WHERE ru.lead_id = $1::uuid",
    )
    .bind(lead)
    .fetch_one(&app.db.pool)
    .await
    .expect("route record")
}

#[tokio::test]
async fn qualify_routes_its_leads_in_its_own_commit_unless_route_is_paused() {
    let app = rules_app().await;
    let hook = app.hook("rules-form", "rules", false).await;
    let first = submit(&app, &hook.token, &lead("rules-form", 300, |_| {})).await;
    app.wait_for_run(&first, "routed", Duration::from_secs(20))
        .await;
    // Routed inside qualify's transaction: its job done at the first attempt, never claimed
    // by a route worker.
    assert_eq!(
        route_record(&app, &first).await,
        (true, "Done".to_owned(), 1, false)
    );

    // With the route queue paused, qualify leaves the route job waiting in the queue.
    app.queue_action("route", "pause").await;
    let second = submit(&app, &hook.token, &lead("rules-form", 301, |_| {})).await;
    let qualified = "SELECT count(*) FROM steps s JOIN runs r ON r.id = s.run_id \
                     WHERE r.lead_id = $1::uuid AND s.name = 'qualify' AND s.status = 'ok'";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = sqlx::query_scalar(qualified)
            .bind(&second)
            .fetch_one(&app.db.pool)
            .await
            .expect("qualify status");
        if n == 1 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never qualified");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, view) = app.get_lead(&second).await;
    assert_eq!(view["run"]["status"], "running", "{view}");
    let (_, status, attempts, _) = route_record(&app, &second).await;
    assert_eq!((status.as_str(), attempts), ("Pending", 0));

    // Resumed, a route worker claims and runs it, in a transaction of its own.
    app.queue_action("route", "resume").await;
    app.wait_for_run(&second, "routed", Duration::from_secs(20))
        .await;
    assert_eq!(
        route_record(&app, &second).await,
        (false, "Done".to_owned(), 1, true)
    );
}

/// The qualify job of `lead`: apalis's status, attempts, the worker it was claimed by,
/// whether it was claimed in the transaction that inserted it (`lock_at = run_at`: both are
/// that transaction's `now()`; a fetch claims later), and whether its last write (the
/// acknowledgement) was the transaction that settled its step (the rows' `xmin`).
async fn qualify_job(
    app: &TestApp,
    lead: &str,
) -> (String, i32, Option<String>, Option<bool>, bool) {
    let lead: uuid::Uuid = lead.parse().expect("lead id");
    sqlx::query_as(
        "SELECT j.status, j.attempts, j.lock_by, j.lock_at = j.run_at, j.xmin = s.xmin \
         FROM apalis.jobs j JOIN steps s ON s.job_id = j.id JOIN runs r ON r.id = s.run_id \
         WHERE r.lead_id = $1 AND s.name = 'qualify'",
    )
    .bind(lead)
    .fetch_one(&app.db.pool)
    .await
    .expect("qualify job")
}

#[tokio::test]
async fn intake_hands_new_leads_to_its_own_qualify_worker_unless_the_queue_is_paused() {
    let app = rules_app().await;
    let hook = app.hook("rules-form", "rules", true).await;

    // A lead that comes before the qualify worker has started is queued: let one through
    // first, so the worker is surely taking jobs.
    let first = submit(&app, &hook.token, &lead("rules-form", 39, |_| {})).await;
    app.wait_for_run(&first, "routed", Duration::from_secs(10))
        .await;

    // Claimed by this process's qualify worker in intake's own transaction, then run and
    // acknowledged here: no notification, no fetch.
    let handed = submit(&app, &hook.token, &lead("rules-form", 40, |_| {})).await;
    app.wait_for_run(&handed, "routed", Duration::from_secs(10))
        .await;
    let (status, attempts, by, at_insert, acked_with_step) = qualify_job(&app, &handed).await;
    assert_eq!((status.as_str(), attempts), ("Done", 1));
    assert!(
        by.as_deref().is_some_and(|w| w.ends_with("-qualify")),
        "{by:?}"
    );
    assert_eq!(at_insert, Some(true));
    // Acknowledged in the transaction that applied it, not by a statement of its own.
    assert!(acked_with_step);

    // Paused: queued for whichever worker takes it after the resume, not claimed.
    app.queue_action("qualify", "pause").await;
    let queued = submit(&app, &hook.token, &lead("rules-form", 41, |_| {})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, by, _, _) = qualify_job(&app, &queued).await;
    assert_eq!((status.as_str(), by), ("Pending", None));
    app.queue_action("qualify", "resume").await;
    app.wait_for_run(&queued, "routed", Duration::from_secs(10))
        .await;
    let (status, _, _, at_insert, acked_with_step) = qualify_job(&app, &queued).await;
    assert_eq!((status.as_str(), at_insert), ("Done", Some(false)));
    // Fetched by apalis, which acknowledges it after the step's commit.
    assert!(!acked_with_step);
}

/// Whatever the graph declares, a lead goes through every step of it; the database-only
/// steps after the first worker step run in that step's commit (their jobs done at the first
/// attempt, never claimed by a worker), and leads ready together share commits. Derived from
/// [`GRAPH`], so a step added to the graph is held to the same (see docs/architecture.md).
#[tokio::test]
async fn every_step_of_the_graph_runs_and_later_database_steps_share_the_first_ones_commit() {
    let mut app = rules_app_without_workers().await;
    let hook = app.hook("fast-form", "fast-callback", true).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(submit(&app, &hook.token, &sample("fast-form", &us_phone(500 + i))).await);
    }
    start_workers(&mut app).await;
    for id in &ids {
        app.wait_for_run(id, "called", Duration::from_secs(30))
            .await;
    }
    let first = Step::first_on_workers();
    // Read by tests/adding_a_step.rs, which checks that a step it adds is among these.
    let names: Vec<&str> = GRAPH.iter().map(|n| n.name).collect();
    println!("graph steps checked: {}", names.join(" → "));
    for id in &ids {
        for node in &GRAPH {
            let settled: Vec<String> = sqlx::query_scalar(
                "SELECT s.status FROM steps s JOIN runs r ON r.id = s.run_id \
                 WHERE r.lead_id = $1::uuid AND s.name = $2",
            )
            .bind(id)
            .bind(node.name)
            .fetch_all(&app.db.pool)
            .await
            .expect("steps");
            assert_eq!(settled, ["ok"], "lead {id}, step {}", node.name);
        }
    }
    for node in GRAPH
        .iter()
        .filter(|n| n.kind == Kind::Database && n.step != first)
    {
        let fused = count(
            &app,
            &format!(
                "SELECT count(*) FROM steps f JOIN steps s ON s.run_id = f.run_id \
                 JOIN apalis.jobs j ON j.id = s.job_id \
                 WHERE f.name = '{}' AND s.name = '{}' AND s.finished_at = f.finished_at \
                   AND j.status = 'Done' AND j.attempts = 1 AND j.lock_by IS NULL",
                first.as_str(),
                node.name
            ),
        )
        .await;
        assert_eq!(fused, 12, "{} in {first}'s commit", node.name);
    }
    let commits = count(
        &app,
        &format!(
            "SELECT count(DISTINCT finished_at) FROM steps WHERE name = '{}'",
            first.as_str()
        ),
    )
    .await;
    assert!(commits < 12, "12 {first} steps in {commits} commits");
}
