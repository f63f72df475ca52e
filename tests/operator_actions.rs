//! Operator actions against running workers: retry, cancel and replay are race-free and safe
//! to repeat, every one lands in the lead's timeline, a cancelled callback never calls, and
//! a paused queue holds its jobs until resumed (across a restart too).

mod common;
mod operator_support;

use std::sync::Arc;
use std::time::Duration;

use common::fake_twilio::{FakeTwilio, Reply};
use common::{Options, TestApp, repo_path};
use leadflow::clock::Clock;
use leadflow::engine::{CallbackSettings, ProviderConfig};
use leadflow::graph::Step;
use leadflow::telephony::twilio::TwilioConfig;
use leadflow::workflow::Workflows;
use operator_support::{app, events, eventually, failed_lead, get, lead, pause, post, submit};
use serde_json::{Value, json};

async fn lead_view(app: &TestApp, id: &str) -> Value {
    let (code, view) = get(app, &format!("/v1/leads/{id}")).await;
    assert_eq!(code, 200, "{view}");
    view
}

/// Polls the lead's view until `done` holds, and returns that view.
async fn wait_view(app: &TestApp, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let view = lead_view(app, id).await;
        if done(&view) {
            return view;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {view:#}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn step_status(view: &Value, step: &str, status: &str) -> bool {
    view["steps"]
        .as_array()
        .is_some_and(|s| s.iter().any(|s| s["name"] == step && s["status"] == status))
}

fn step_job(view: &Value, step: &str) -> String {
    view["steps"]
        .as_array()
        .and_then(|s| s.iter().rev().find(|s| s["name"] == step))
        .and_then(|s| s["job_id"].as_str())
        .unwrap_or_else(|| panic!("no {step} job in {view:#}"))
        .to_owned()
}

#[tokio::test]
async fn retrying_a_dead_job_resumes_its_run_and_a_repeat_changes_nothing() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let (id, job) = failed_lead(&app, &hook.token, "website-form", 1).await;

    // Hold the queue so that the repeat finds the job still queued.
    pause(&app, "route").await;
    let (code, first) = post(&app, &format!("/v1/jobs/{job}/retry"), None).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["status"], "success");
    assert_eq!(first["result"], "retried");
    assert_eq!(first["lead_id"], id.as_str());
    let (code, again) = post(&app, &format!("/v1/jobs/{job}/retry"), None).await;
    assert_eq!(
        (code, again["result"].clone()),
        (200, json!("unchanged")),
        "{again}"
    );
    let view = lead_view(&app, &id).await;
    assert_eq!(view["run"]["status"], "running");
    post(&app, "/v1/queues/route/resume", None).await;

    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
    let route: Vec<&Value> = view["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["name"] == "route")
        .collect();
    assert_eq!(route.len(), 1, "the same step execution resumed: {view:#}");
    assert_eq!(route[0]["status"], "ok");
    assert_eq!(route[0]["job_id"], job.as_str());
    let retries = events(&view, "operator.retry");
    let results: Vec<&Value> = retries.iter().map(|e| &e["detail"]["result"]).collect();
    assert_eq!(results, [&json!("retried"), &json!("unchanged")]);
    assert!(retries.iter().all(|e| e["actor"] == "api:tester"));
    assert_eq!(events(&view, "routed").len(), 1);
    eventually(
        "the job is acknowledged",
        Duration::from_secs(10),
        || async { get(&app, &format!("/v1/jobs/{job}")).await.1["state"] == "completed" },
    )
    .await;

    // A completed job has nothing to retry: the lead is replayed instead.
    let (code, body) = post(&app, &format!("/v1/jobs/{job}/retry"), None).await;
    assert_eq!(code, 409, "{body}");
    let (code, _) = post(&app, "/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV/retry", None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_job_waiting_for_its_backoff_is_brought_forward() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    pause(&app, "route").await;
    app.service().engine.faults.fail_next(Step::Route, 1);
    let id = submit(&app, &hook.token, &lead("website-form", 2, |_| {})).await;
    let view = wait_view(&app, &id, "qualified", |v| {
        step_status(v, "route", "pending")
    })
    .await;
    let job = step_job(&view, "route");
    // Stand in for a long backoff: the failed attempt's retry is due in an hour.
    post(&app, "/v1/queues/route/resume", None).await;
    eventually(
        "the route step retries",
        Duration::from_secs(10),
        || async { step_status(&lead_view(&app, &id).await, "route", "retrying") },
    )
    .await;
    pause(&app, "route").await;
    sqlx::query("UPDATE apalis.jobs SET run_at = now() + interval '1 hour' WHERE id = $1")
        .bind(&job)
        .execute(&app.db.pool)
        .await
        .expect("backoff lengthened");
    eventually(
        "the job is acknowledged as retrying",
        Duration::from_secs(10),
        || async { get(&app, &format!("/v1/jobs/{job}")).await.1["state"] == "retrying" },
    )
    .await;
    post(&app, "/v1/queues/route/resume", None).await;
    let (code, body) = post(&app, &format!("/v1/jobs/{job}/retry"), None).await;
    assert_eq!(
        (code, body["result"].clone()),
        (200, json!("brought_forward")),
        "{body}"
    );
    app.wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
}

#[tokio::test]
async fn retry_failed_retries_every_dead_job_of_a_queue() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            failed_lead(&app, &hook.token, "website-form", 10 + i)
                .await
                .0,
        );
    }
    let (code, none) = post(
        &app,
        "/v1/jobs/retry-failed",
        Some(json!({ "queue": "qualify" })),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(none["retried"], 0);
    let (code, all) = post(
        &app,
        "/v1/jobs/retry-failed",
        Some(json!({ "queue": "route", "limit": 10 })),
    )
    .await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(
        (all["retried"].clone(), all["more"].clone()),
        (json!(3), json!(false))
    );
    for id in &ids {
        app.wait_for_run(id, "routed", Duration::from_secs(20))
            .await;
    }
    let (code, _) = post(&app, "/v1/jobs/retry-failed", Some(json!({ "limit": 0 }))).await;
    assert_eq!(code, 400);
    let (code, _) = post(
        &app,
        "/v1/jobs/retry-failed",
        Some(json!({ "queue": "nope" })),
    )
    .await;
    assert_eq!(code, 400);
}

/// Retries and cancels fired at once at dead jobs, while workers pick them up: each lead ends
/// called or cancelled, no step ran twice, no lead was phoned twice, and every request shows
/// in its timeline.
#[tokio::test]
async fn concurrent_retries_and_cancels_never_run_a_step_twice() {
    const LEADS: u32 = 5;
    const EACH: usize = 4;
    let app = Arc::new(app(true).await);
    let hook = app.hook("website-form", "rules", true).await;
    app.service()
        .engine
        .faults
        .fail_next(Step::Route, 3 * LEADS);
    let mut leads = Vec::new();
    for i in 0..LEADS {
        leads.push(
            submit(
                &app,
                &hook.token,
                &lead("website-form", 30 + i, |b| b["is_auto"] = json!(1)),
            )
            .await,
        );
    }
    let mut jobs = Vec::new();
    for id in &leads {
        let view = app
            .wait_for_run(id, "failed", Duration::from_secs(30))
            .await;
        jobs.push(step_job(&view, "route"));
    }
    eventually(
        "every dead letter is acknowledged",
        Duration::from_secs(10),
        || async {
            get(&app, "/v1/jobs?state=failed").await.1["items"]
                .as_array()
                .is_some_and(|a| a.len() == LEADS as usize)
        },
    )
    .await;

    let mut calls = Vec::new();
    for job in &jobs {
        for k in 0..EACH * 2 {
            let app = app.clone();
            let action = if k % 2 == 0 { "retry" } else { "cancel" };
            let path = format!("/v1/jobs/{job}/{action}");
            calls.push(tokio::spawn(async move {
                let (code, body) = post(&app, &path, None).await;
                (
                    body["lead_id"].as_str().map(str::to_owned),
                    action,
                    code,
                    body,
                )
            }));
        }
    }
    let mut answered: std::collections::HashMap<(String, &str), usize> = Default::default();
    for call in calls {
        let (lead, action, code, body) = call.await.expect("task");
        assert!(code == 200 || code == 409, "{action}: {code} {body}");
        if code == 200 {
            *answered
                .entry((lead.expect("lead id"), action))
                .or_default() += 1;
        }
    }

    for id in &leads {
        wait_view(&app, id, "the run settles", |v| {
            v["run"]["status"] == "called" || v["run"]["status"] == "cancelled"
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let view = lead_view(&app, id).await;
        let status = view["run"]["status"].as_str().expect("status").to_owned();
        assert!(status == "called" || status == "cancelled", "{view:#}");
        assert!(
            events(&view, "routed").len() <= 1,
            "route ran twice: {view:#}"
        );
        assert!(
            view["callback"]["attempts"]
                .as_array()
                .expect("attempts")
                .len()
                <= 1,
            "{view:#}"
        );
        let routes = view["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .filter(|s| s["name"] == "route")
            .count();
        assert_eq!(routes, 1);
        for action in ["retry", "cancel"] {
            let recorded = events(&view, &format!("operator.{action}"));
            let ok = answered.get(&(id.clone(), action)).copied().unwrap_or(0);
            assert_eq!(recorded.len(), ok, "{action} on {id}: {view:#}");
            assert!(
                recorded
                    .iter()
                    .all(|e| e["actor"] == "api:tester" && e["at"].is_string())
            );
        }
    }
}

/// A callback waiting for the lead's calling hours is cancelled: its job is killed, and even
/// a worker that had fetched it before the kill does nothing with it.
#[tokio::test]
async fn a_cancelled_waiting_callback_never_places_its_call() {
    // 03:00 in California: the lead's quiet hours hold the call until 08:00.
    let night: jiff::Timestamp = "2030-01-08T11:00:00Z".parse().expect("instant");
    let app = TestApp::start_with(Options {
        workflows_dir: repo_path("tests/fixtures/workflows"),
        clock: Clock::starting_at(night),
        ..Options::default()
    })
    .await;
    let hook = app.hook("night-form", "quiet", true).await;
    let id = submit(
        &app,
        &hook.token,
        &lead("night-form", 40, |b| b["is_auto"] = json!(1)),
    )
    .await;
    let view = app
        .wait_for_run(&id, "scheduled", Duration::from_secs(20))
        .await;
    // Make the callback run now, so that it finds the quiet hours itself and waits.
    let first = step_job(&view, "callback");
    sqlx::query("UPDATE apalis.jobs SET run_at = now() WHERE id = $1")
        .bind(&first)
        .execute(&app.db.pool)
        .await
        .expect("due now");
    let view = wait_view(&app, &id, "the callback waits", |v| {
        step_status(v, "callback", "waiting")
    })
    .await;
    let waiting = step_job(&view, "callback");
    assert_ne!(waiting, first);

    let (code, body) = post(&app, &format!("/v1/jobs/{waiting}/cancel"), None).await;
    assert_eq!(
        (code, body["result"].clone()),
        (200, json!("cancelled")),
        "{body}"
    );
    let (_, job) = get(&app, &format!("/v1/jobs/{waiting}")).await;
    assert_eq!(job["state"], "cancelled");
    let (code, again) = post(&app, &format!("/v1/jobs/{first}/cancel"), None).await;
    assert_eq!((code, again["result"].clone()), (200, json!("unchanged")));

    // As if a worker had fetched the job just before the kill.
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Pending', run_at = now(), lock_by = NULL WHERE id = $1",
    )
    .bind(&waiting)
    .execute(&app.db.pool)
    .await
    .expect("revived");
    eventually(
        "the revived job is done",
        Duration::from_secs(10),
        || async { get(&app, &format!("/v1/jobs/{waiting}")).await.1["state"] == "completed" },
    )
    .await;
    let view = lead_view(&app, &id).await;
    assert_eq!(view["run"]["status"], "cancelled");
    assert_eq!(
        view["callback"]["attempts"],
        json!([]),
        "no call was placed"
    );
    assert!(events(&view, "call.placed").is_empty());
    let cancels = events(&view, "operator.cancel");
    assert_eq!(cancels.len(), 2);
    assert_eq!(cancels[0]["detail"]["killed_jobs"], json!([waiting]));
}

/// A cancel that lands while the callback's provider request is out lets that step finish
/// (the call it already asked for is recorded), then nothing more runs.
#[tokio::test]
async fn cancelling_a_running_step_lets_it_finish_then_stops_the_graph() {
    let fake = FakeTwilio::start().await;
    fake.script([Reply::created_then("completed").delayed(Duration::from_millis(1500))]);
    let mut cfg = TwilioConfig::new(fake.account_sid(), fake.auth_token());
    cfg.api_base = fake.base_url();
    cfg.request_timeout = Duration::from_secs(5);
    let app = TestApp::start_with(Options {
        workflows_dir: repo_path("tests/fixtures/workflows"),
        provider: ProviderConfig::Twilio(cfg),
        callbacks: CallbackSettings::default(),
        ..Options::default()
    })
    .await;
    let hook = app.hook("fast", "fast-callback", true).await;
    let id = submit(
        &app,
        &hook.token,
        &lead("fast", 50, |b| b["is_auto"] = json!(1)),
    )
    .await;
    eventually(
        "the call request is out",
        Duration::from_secs(20),
        || async { !fake.requests().is_empty() },
    )
    .await;
    let view = lead_view(&app, &id).await;
    assert_eq!(view["run"]["status"], "calling");
    let job = step_job(&view, "callback");
    let (code, body) = post(&app, &format!("/v1/jobs/{job}/cancel"), None).await;
    assert_eq!(
        (code, body["result"].clone()),
        (200, json!("cancelled")),
        "{body}"
    );

    wait_view(
        &app,
        &id,
        "the in-flight call is recorded and the step settles",
        |v| {
            v["callback"]["attempts"][0]["state"] == "done"
                && step_status(v, "callback", "cancelled")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let view = lead_view(&app, &id).await;
    assert_eq!(view["run"]["status"], "cancelled", "{view:#}");
    assert_eq!(fake.created_calls().len(), 1, "one call, never a second");
    assert_eq!(
        view["callback"]["attempts"]
            .as_array()
            .expect("attempts")
            .len(),
        1
    );
    assert_eq!(events(&view, "call.placed").len(), 1);
    assert!(events(&view, "callback.finished").is_empty(), "{view:#}");
    assert_eq!(events(&view, "operator.cancel").len(), 1);
}

#[tokio::test]
async fn a_paused_queue_holds_its_jobs_across_a_restart_until_resumed() {
    let mut app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let (code, paused) = pause(&app, "qualify").await;
    assert_eq!(
        (code, paused["changed"].clone()),
        (200, json!(true)),
        "{paused}"
    );
    let (_, again) = post(&app, "/v1/queues/leadflow.qualify/pause", None).await;
    assert_eq!(again["changed"], false);

    let id = submit(&app, &hook.token, &lead("website-form", 60, |_| {})).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // 20 poll intervals
    let view = lead_view(&app, &id).await;
    assert_eq!(view["run"]["status"], "running");
    assert_eq!(view["steps"][1]["status"], "pending");
    let (_, queues) = get(&app, "/v1/queues").await;
    assert_eq!(queues["queues"][0]["paused"], true);
    assert_eq!(queues["queues"][0]["paused_by"], "api:tester");
    assert_eq!(queues["queues"][0]["counts"]["available"], 1, "{queues}");

    app.crash_and_restart().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        lead_view(&app, &id).await["run"]["status"],
        "running",
        "still paused after a restart"
    );

    let (code, resumed) = post(&app, "/v1/queues/qualify/resume", None).await;
    assert_eq!((code, resumed["changed"].clone()), (200, json!(true)));
    app.wait_for_run(&id, "routed", Duration::from_secs(10))
        .await;
}

#[tokio::test]
async fn a_rejected_lead_is_replayed_after_its_workflow_is_fixed() {
    let dir = std::env::temp_dir().join(format!("lf-replay-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let rules =
        std::fs::read_to_string(repo_path("tests/fixtures/workflows/rules.toml")).expect("read");
    let strict = rules.replace(
        "dedupe_window = \"24h\"",
        "dedupe_window = \"24h\"\nallowed_countries = [\"GB\"]",
    );
    std::fs::write(dir.join("rules.toml"), &strict).expect("write");
    let mut app = TestApp::start_with(Options {
        workflows_dir: dir.clone(),
        ..Options::default()
    })
    .await;
    let hook = app.hook("website-form", "rules", true).await;
    let (code, _) = app
        .post_json(&hook.token, &lead("website-form", 70, |_| {}))
        .await;
    assert_eq!(code, 422, "US numbers are not allowed yet");
    let id = submit(&app, &hook.token, &lead("website-form", 70, |_| {})).await;
    let view = lead_view(&app, &id).await;
    assert_eq!(view["run"]["status"], "rejected");
    let (code, body) = post(
        &app,
        &format!("/v1/leads/{id}/replay"),
        Some(json!({ "from": "qualify" })),
    )
    .await;
    assert_eq!(code, 409, "never validated: {body}");

    // Replaying before the fix rejects again, in a new run.
    let (code, again) = post(&app, &format!("/v1/leads/{id}/replay"), None).await;
    assert_eq!(code, 202, "{again}");
    assert_eq!(again["status"], "rejected");

    // The fix: US numbers allowed. The service restarts with it, and the lead is replayed.
    std::fs::write(dir.join("rules.toml"), &rules).expect("write");
    app.workflows = Arc::new(Workflows::load_dir(&dir).expect("workflows"));
    app.crash_and_restart().await;
    // Kept-alive connections still reach the old server's connection tasks.
    app.client = reqwest::Client::new();
    let (code, replayed) = post(&app, &format!("/v1/leads/{id}/replay"), None).await;
    assert_eq!(code, 202, "{replayed}");
    assert_eq!(replayed["status"], "running", "{replayed}");
    assert_eq!(replayed["from"], "validate");
    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
    assert_eq!(view["run"]["id"], replayed["run_id"]);
    assert_eq!(view["run"]["replay_of"], again["run_id"]);
    let runs: Vec<&str> = view["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .filter_map(|r| r["status"].as_str())
        .collect();
    assert_eq!(
        runs,
        ["routed", "rejected", "rejected"],
        "old runs stay in the history"
    );
    assert_eq!(view["lead"]["phone"], "+*******0070");
    let replays = events(&view, "operator.replay");
    assert_eq!(replays.len(), 2);
    assert!(replays.iter().all(|e| e["actor"] == "api:tester"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn replays_start_from_a_step_and_are_refused_while_a_run_is_going() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;

    // A failed lead, replayed from route: the new run skips validate and qualify.
    let (id, _) = failed_lead(&app, &hook.token, "website-form", 80).await;
    let (code, replayed) = post(
        &app,
        &format!("/v1/leads/{id}/replay"),
        Some(json!({ "from": "route" })),
    )
    .await;
    assert_eq!(code, 202, "{replayed}");
    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
    let names: Vec<&str> = view["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["route"]);
    assert_eq!(view["runs"][1]["status"], "failed");

    // A routed lead (no callback wanted), replayed from callback: now it is called.
    let (code, body) = post(
        &app,
        &format!("/v1/leads/{id}/replay"),
        Some(json!({ "from": "callback" })),
    )
    .await;
    assert_eq!(code, 202, "{body}");
    app.wait_for_run(&id, "called", Duration::from_secs(20))
        .await;
    let (code, body) = post(&app, &format!("/v1/leads/{id}/replay"), None).await;
    assert_eq!(code, 409, "a called lead is not phoned again: {body}");

    // Two replays at once: one starts a run, the other finds it going.
    let disq = submit(
        &app,
        &hook.token,
        &lead("website-form", 81, |b| {
            b.as_object_mut()
                .expect("object")
                .remove("company_name_field");
        }),
    )
    .await;
    app.wait_for_run(&disq, "disqualified", Duration::from_secs(20))
        .await;
    pause(&app, "qualify").await;
    let path = format!("/v1/leads/{disq}/replay");
    let (a, b) = tokio::join!(post(&app, &path, None), post(&app, &path, None));
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [202, 409], "{a:?} {b:?}");
    let view = lead_view(&app, &disq).await;
    assert_eq!(view["runs"].as_array().expect("runs").len(), 2);

    for (body, code) in [
        (json!({ "from": "nowhere" }), 400),
        (json!({ "step": "route" }), 400),
    ] {
        let (got, _) = post(&app, &path, Some(body)).await;
        assert_eq!(got, code);
    }
    let (code, _) = post(
        &app,
        &format!("/v1/leads/{}/replay", uuid::Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(code, 404);
}

/// A worker holds a run of the lead and then writes the lead's timeline while a replay of the
/// same lead is waiting for that run: the two must queue up, not deadlock (PostgreSQL would
/// fail one of them, a 500 for the operator or a failed step for the worker).
#[tokio::test]
async fn a_replay_waits_for_a_worker_holding_the_run_without_a_deadlock() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let id = submit(&app, &hook.token, &lead("website-form", 90, |_| {})).await;
    app.wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
    let lead_id: uuid::Uuid = id.parse().expect("lead id");

    // The "worker": the run's lock first, then (while the replay waits) a timeline event.
    let mut worker = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT id FROM runs WHERE lead_id = $1 FOR UPDATE")
        .bind(lead_id)
        .execute(&mut *worker)
        .await
        .expect("lock the run");
    let path = format!("/v1/leads/{id}/replay");
    let worker_side = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        sqlx::query("INSERT INTO timeline (lead_id, event) VALUES ($1, 'test.worker')")
            .bind(lead_id)
            .execute(&mut *worker)
            .await?;
        // Past PostgreSQL's deadlock_timeout (1 s), so a deadlock would have been broken.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        worker.commit().await
    };
    let (worker_done, (code, body)) = tokio::join!(worker_side, post(&app, &path, None));
    assert!(
        worker_done.is_ok(),
        "the worker's write failed: {worker_done:?}"
    );
    assert_eq!(
        code, 202,
        "the replay went through after the worker: {body}"
    );
    app.wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
}
