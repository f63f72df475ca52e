//! Helpers shared by the operator tests: admin-token requests, leads in every state, and
//! waiting for a condition.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN_TOKEN, Options, TestApp, read, repo_path, sample, us_phone};
use leadflow::graph::Step;
use leadflow::lead::RunStatus;

/// The fixture workflows (fast retries, every team open), with or without workers.
pub async fn app(workers: bool) -> TestApp {
    TestApp::start_with(Options {
        workflows_dir: repo_path("tests/fixtures/workflows"),
        workers,
        ..Options::default()
    })
    .await
}

pub async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("request sent");
    read(resp).await
}

pub async fn post(app: &TestApp, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = app
        .client
        .post(app.url(path))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Leadflow-Actor", "tester");
    if let Some(body) = body {
        req = req.json(&body);
    }
    read(req.send().await.expect("request sent")).await
}

/// Pauses a queue and waits until the workers have surely noticed: they do within one poll
/// interval (50 ms in tests); ten are left.
pub async fn pause(app: &TestApp, queue: &str) -> (u16, Value) {
    let answer = post(app, &format!("/v1/queues/{queue}/pause"), None).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    answer
}

/// A lead of the `rules` workflow that ends `routed` (no callback) unless `edit` changes it.
pub fn lead(hook: &str, i: u32, edit: impl FnOnce(&mut Value)) -> Value {
    let mut body = sample(hook, &us_phone(i));
    body["is_auto"] = json!(0);
    edit(&mut body);
    body
}

/// Sends a lead and returns its id; a rejected (422) lead is stored too, and its id is read
/// from the webhook log, since the spec's 422 body does not carry it.
pub async fn submit(app: &TestApp, token: &str, body: &Value) -> String {
    let (code, resp) = app.post_json(token, body).await;
    assert!(code == 200 || code == 422, "{code} {resp}");
    if let Some(id) = resp["lead_id"].as_str() {
        return id.to_owned();
    }
    let (id,): (uuid::Uuid,) = sqlx::query_as(
        "SELECT lead_id FROM webhook_log WHERE lead_id IS NOT NULL ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("the rejected lead");
    id.to_string()
}

/// A lead whose route step failed all its attempts: run `failed`, its job the dead letter.
/// Returns the lead id and the dead job's id.
pub async fn failed_lead(app: &TestApp, token: &str, hook: &str, i: u32) -> (String, String) {
    app.service().engine.faults.fail_next(Step::Route, 3);
    let id = submit(app, token, &lead(hook, i, |_| {})).await;
    let view = app
        .wait_for_run(&id, "failed", Duration::from_secs(30))
        .await;
    let job = view["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "route"))
        .and_then(|s| s["job_id"].as_str())
        .expect("the route step's job")
        .to_owned();
    // apalis acknowledges just after the step's own commit; wait for the dead letter.
    eventually("the job is dead", Duration::from_secs(10), || async {
        let (_, job) = get(app, &format!("/v1/jobs/{job}")).await;
        job["state"] == "failed"
    })
    .await;
    (id, job)
}

/// The lead view's timeline events named `name`, oldest first.
pub fn events<'a>(view: &'a Value, name: &str) -> Vec<&'a Value> {
    view["timeline"]
        .as_array()
        .map(|t| t.iter().filter(|e| e["event"] == name).collect())
        .unwrap_or_default()
}

pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// One lead per run status, on an app without workers: each is stored by the real intake
/// (valid, or rejected), then its run is set to the wanted status, its qualify job to a
/// matching state. Returns (status, lead id) pairs, in [`RunStatus::ALL`] order.
pub async fn zoo(app: &TestApp, token: &str, hook: &str) -> Vec<(RunStatus, String)> {
    let mut out = Vec::new();
    for (i, status) in RunStatus::ALL.into_iter().enumerate() {
        let i = 9000 + i as u32;
        let body = if status == RunStatus::Rejected {
            lead(hook, i, |b| b["phone_field"] = json!("12"))
        } else {
            lead(hook, i, |_| {})
        };
        let id = submit(app, token, &body).await;
        let lead_id: uuid::Uuid = id.parse().expect("uuid");
        sqlx::query("UPDATE runs SET status = $2 WHERE lead_id = $1")
            .bind(lead_id)
            .bind(status.as_str())
            .execute(&app.db.pool)
            .await
            .expect("run status set");
        let job_status = match status {
            RunStatus::Running => "Pending",
            RunStatus::Failed => "Failed",
            RunStatus::Cancelled => "Killed",
            _ => "Done",
        };
        sqlx::query(
            "UPDATE apalis.jobs j SET status = $2, \
                    attempts = CASE WHEN $2 = 'Failed' THEN j.max_attempts ELSE j.attempts END \
             FROM steps s JOIN runs r ON r.id = s.run_id \
             WHERE s.job_id = j.id AND r.lead_id = $1",
        )
        .bind(lead_id)
        .bind(job_status)
        .execute(&app.db.pool)
        .await
        .expect("job status set");
        out.push((status, id));
    }
    out
}
