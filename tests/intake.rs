//! The intake contract over a real socket: the spec's sample in three content types, every
//! error of the contract's table with its status and body, idempotency, and what is stored.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp, read, sample, us_phone};
use serde_json::{Value, json};

const SUCCESS_INITIATED: &str = "Webhook data captured successfully";

fn assert_success(body: &Value, auto: &str) -> String {
    assert_eq!(body["status"], "success", "{body}");
    assert_eq!(body["message"], SUCCESS_INITIATED);
    assert_eq!(body["auto_callback"], auto);
    let obj = body.as_object().expect("object body");
    assert_eq!(obj.len(), 4, "exactly the spec's keys plus lead_id: {body}");
    body["lead_id"].as_str().expect("lead_id").to_owned()
}

fn form_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| {
            let s = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), s)
        })
        .collect()
}

#[tokio::test]
async fn sample_as_json_form_and_multipart_is_captured_and_routed() {
    let app = TestApp::start().await;
    // The always-open team takes calls at any hour of the wall clock.
    let hook = app.hook("website-form", "always-open", true).await;

    // JSON
    let (code, body) = app
        .post_json(&hook.token, &sample("website-form", &us_phone(1)))
        .await;
    assert_eq!(code, 200, "{body}");
    let json_lead = assert_success(&body, "initiated");

    // form-urlencoded, with is_auto and status as numeric strings
    let resp = app
        .client
        .post(app.url("/v1/webhooks/inbound"))
        .bearer_auth(&hook.token)
        .form(&form_pairs(&sample("website-form", &us_phone(2))))
        .send()
        .await
        .expect("sent");
    let (code, body) = read(resp).await;
    assert_eq!(code, 200, "{body}");
    let form_lead = assert_success(&body, "initiated");

    // multipart
    let mut form = reqwest::multipart::Form::new();
    for (k, v) in form_pairs(&sample("website-form", &us_phone(3))) {
        form = form.text(k, v);
    }
    let resp = app
        .client
        .post(app.url("/v1/webhooks/inbound"))
        .bearer_auth(&hook.token)
        .multipart(form)
        .send()
        .await
        .expect("sent");
    let (code, body) = read(resp).await;
    assert_eq!(code, 200, "{body}");
    let multipart_lead = assert_success(&body, "initiated");

    for lead in [json_lead, form_lead, multipart_lead] {
        // is_auto=1: the lead is called (by the simulator, which answers at once).
        let view = app
            .wait_for_run(&lead, "called", Duration::from_secs(10))
            .await;
        let steps: Vec<(&str, &str)> = view["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .map(|s| {
                (
                    s["name"].as_str().unwrap_or(""),
                    s["status"].as_str().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(
            steps,
            vec![
                ("validate", "ok"),
                ("qualify", "ok"),
                ("route", "ok"),
                ("callback", "ok")
            ]
        );
        let route = &view["steps"][2]["output"];
        assert_eq!(route["team"], "team_001", "{view:#}");
        assert_eq!(view["lead"]["hook"], "website-form");
        assert_eq!(view["lead"]["company"], "Acme Corp");
        let phone = view["lead"]["phone"].as_str().expect("masked phone");
        assert!(
            phone.starts_with("+*") && phone.len() == 12,
            "masked: {phone}"
        );
        assert!(!phone.contains("650253"), "masked: {phone}");
        assert!(
            view["lead"]["email"]
                .as_str()
                .expect("email")
                .starts_with("j***@")
        );
        let events: Vec<&str> = view["timeline"]
            .as_array()
            .expect("timeline")
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect();
        // The provider's reports may arrive before or after leadflow records the call as
        // placed; the graph's own events are in order.
        let graph: Vec<&str> = events
            .iter()
            .copied()
            .filter(|e| !e.starts_with("call."))
            .collect();
        assert_eq!(
            graph,
            vec![
                "received",
                "validated",
                "qualified",
                "routed",
                "callback.finished"
            ]
        );
        let mut calls: Vec<&str> = events
            .iter()
            .copied()
            .filter(|e| e.starts_with("call."))
            .collect();
        calls.sort_unstable();
        assert_eq!(
            calls,
            vec![
                "call.completed",
                "call.in-progress",
                "call.initiated",
                "call.placed",
                "call.ringing"
            ]
        );
        assert_eq!(view["callback"]["attempts"][0]["outcome"], "called");
    }
}

#[tokio::test]
async fn the_spec_sample_verbatim_gets_the_invalid_phone_error_and_is_logged() {
    let app = TestApp::start().await;
    let hook = app.hook("captureLeadWebhook", "default", true).await;
    let mut body = sample("captureLeadWebhook", "1234567890");
    body["email_field"] = json!("john.doe@example.com");
    let (code, resp) = app.post_json(&hook.token, &body).await;
    assert_eq!(code, 422);
    assert_eq!(
        resp,
        json!({
            "status": "error",
            "message": "Failed to initiate auto callback",
            "details": "Invalid phone number format"
        })
    );
    let (outcome, status, reason, lead_id, stored_body): (
        String,
        i16,
        Option<String>,
        Option<uuid::Uuid>,
        Option<Vec<u8>>,
    ) = sqlx::query_as("SELECT outcome, status_code, reason, lead_id, body FROM webhook_log")
        .fetch_one(&app.db.pool)
        .await
        .expect("one webhook log row");
    assert_eq!((outcome.as_str(), status), ("rejected", 422));
    assert!(reason.unwrap_or_default().contains("invalid_phone"));
    let stored: Value = serde_json::from_slice(&stored_body.expect("raw body kept")).expect("json");
    assert_eq!(stored["phone_field"], "1234567890");
    // The rejected submission is a lead, so an operator can fix and replay it.
    let lead_id = lead_id.expect("a rejected lead is stored");
    let (code, view) = app.get_lead(&lead_id.to_string()).await;
    assert_eq!(code, 200);
    assert_eq!(view["run"]["status"], "rejected");
    assert_eq!(view["run"]["reason"], "Invalid phone number format");
    assert_eq!(view["steps"][0]["status"], "failed");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0, "a rejected lead starts no job");
}

async fn raw_post(
    app: &TestApp,
    token: Option<&str>,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = app.client.post(app.url("/v1/webhooks/inbound")).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    read(req.send().await.expect("sent")).await
}

fn assert_error(code: u16, body: &Value, want: u16, details_contains: &str) {
    assert_eq!(code, want, "{body}");
    assert_eq!(body["status"], "error", "{body}");
    assert!(body["message"].is_string(), "{body}");
    let details = body["details"].as_str().unwrap_or_default();
    assert!(
        details.contains(details_contains),
        "details {details:?} should mention {details_contains:?}"
    );
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(3),
        "exactly status/message/details: {body}"
    );
}

#[tokio::test]
async fn every_error_of_the_contract_has_its_status_and_shape() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", true).await;
    let other = app.hook("other-form", "default", true).await;
    let off = app.hook("retired-form", "default", true).await;
    leadflow::hooks::set_active(&app.db.pool, "retired-form", false)
        .await
        .expect("disable");
    let good = serde_json::to_vec(&sample("website-form", &us_phone(10))).expect("json");
    let json_ct = Some("application/json");

    let (c, b) = raw_post(&app, None, json_ct, good.clone()).await;
    assert_error(c, &b, 401, "Missing bearer token");
    let (c, b) = raw_post(&app, Some("lf_not_a_token"), json_ct, good.clone()).await;
    assert_error(c, &b, 401, "Invalid token");
    // 401 comes before everything else, even a bad content type.
    let (c, _) = raw_post(
        &app,
        Some("lf_not_a_token"),
        Some("text/plain"),
        b"x".to_vec(),
    )
    .await;
    assert_eq!(c, 401);

    let (c, b) = raw_post(&app, Some(&hook.token), Some("text/plain"), good.clone()).await;
    assert_error(c, &b, 415, "text/plain");
    let (c, b) = raw_post(&app, Some(&hook.token), None, good.clone()).await;
    assert_error(c, &b, 415, "none");

    let big = vec![b' '; 256 * 1024 + 1];
    let (c, b) = raw_post(&app, Some(&hook.token), json_ct, big).await;
    assert_error(c, &b, 413, "262144");

    let (c, b) = raw_post(
        &app,
        Some(&hook.token),
        json_ct,
        b"{\"hookName\": ".to_vec(),
    )
    .await;
    assert_eq!(c, 400, "{b}");
    assert_eq!(b["status"], "error");

    let mut unknown = sample("no-such-hook", &us_phone(11));
    let (c, b) = app.post_json(&hook.token, &unknown).await;
    assert_error(c, &b, 404, "no-such-hook");
    unknown["hookName"] = json!("retired-form");
    let (c, b) = app.post_json(&off.token, &unknown).await;
    assert_error(c, &b, 404, "retired-form");

    let (c, b) = app
        .post_json(&other.token, &sample("website-form", &us_phone(12)))
        .await;
    assert_error(c, &b, 403, "website-form");

    let mut missing = sample("website-form", &us_phone(13));
    missing
        .as_object_mut()
        .expect("object")
        .remove("name_field");
    let (c, b) = app.post_json(&hook.token, &missing).await;
    assert_error(c, &b, 422, "name_field");
    let mut bad_status = sample("website-form", &us_phone(14));
    bad_status["status"] = json!(0);
    let (c, b) = app.post_json(&hook.token, &bad_status).await;
    assert_error(c, &b, 422, "status");
    let mut array = sample("website-form", &us_phone(15));
    array["name_field"] = json!(["a", "b"]);
    let (c, b) = app.post_json(&hook.token, &array).await;
    assert_error(c, &b, 422, "name_field");

    // Only 422s store a lead; every other 4xx leaves just its webhook-log row.
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(leads, 3);
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_log")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(logged, 13);
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_log WHERE headers::text LIKE '%lf\\_%'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(leaked, 0, "tokens never reach the log");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    let app = TestApp::start().await;
    let resp = app
        .client
        .get(app.url("/v1/webhooks/inbound"))
        .send()
        .await
        .expect("sent");
    let (c, b) = read(resp).await;
    assert_eq!(c, 405);
    assert_eq!(b["status"], "error");
    let resp = app.client.get(app.url("/nope")).send().await.expect("sent");
    let (c, b) = read(resp).await;
    assert_eq!(c, 404);
    assert_eq!(b["status"], "error");
}

#[tokio::test]
async fn is_auto_absent_takes_the_hooks_setting_and_zero_disables() {
    let app = TestApp::start().await;
    let hook = app.hook("quiet-form", "default", false).await;
    let mut body = sample("quiet-form", &us_phone(20));
    body.as_object_mut().expect("object").remove("is_auto");
    let (c, b) = app.post_json(&hook.token, &body).await;
    assert_eq!(c, 200, "{b}");
    assert_success(&b, "disabled");
    let mut body = sample("quiet-form", &us_phone(21));
    body["is_auto"] = json!("1");
    body["status"] = json!("1");
    let (c, b) = app.post_json(&hook.token, &body).await;
    assert_success(&b, "initiated");
    assert_eq!(c, 200);
    let mut body = sample("quiet-form", &us_phone(22));
    body["is_auto"] = json!(0);
    let (_, b) = app.post_json(&hook.token, &body).await;
    assert_success(&b, "disabled");
}

#[tokio::test]
async fn custom_fields_are_kept() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", true).await;
    let mut body = sample("website-form", &us_phone(30));
    body["utm_source"] = json!("google");
    body["employees"] = json!(250);
    let (c, b) = app.post_json(&hook.token, &body).await;
    assert_eq!(c, 200, "{b}");
    let (_, view) = app.get_lead(b["lead_id"].as_str().expect("id")).await;
    assert_eq!(
        view["lead"]["fields"],
        json!({ "utm_source": "google", "employees": 250 })
    );
}

#[tokio::test]
async fn twenty_concurrent_duplicates_make_one_lead() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", true).await;
    let body = sample("website-form", &us_phone(40));
    let sends = (0..20).map(|_| {
        app.client
            .post(app.url("/v1/webhooks/inbound"))
            .bearer_auth(&hook.token)
            .header("Idempotency-Key", "retry-123")
            .json(&body)
            .send()
    });
    let responses = futures::future::join_all(sends).await;
    let mut ids = std::collections::HashSet::new();
    for r in responses {
        let (code, b) = read(r.expect("sent")).await;
        assert_eq!(code, 200, "{b}");
        ids.insert(b["lead_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids.len(), 1, "every duplicate gets the original answer");
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(leads, 1);
    let dupes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_log WHERE outcome = 'duplicate'")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(dupes, 19);

    // The same key with another body is refused.
    let other = sample("website-form", &us_phone(41));
    let resp = app
        .client
        .post(app.url("/v1/webhooks/inbound"))
        .bearer_auth(&hook.token)
        .header("Idempotency-Key", "retry-123")
        .json(&other)
        .send()
        .await
        .expect("sent");
    let (code, b) = read(resp).await;
    assert_error(code, &b, 422, "Idempotency-Key");

    // webhook-id stands in for Idempotency-Key (Standard Webhooks senders).
    for _ in 0..2 {
        let resp = app
            .client
            .post(app.url("/v1/webhooks/inbound"))
            .bearer_auth(&hook.token)
            .header("webhook-id", "msg_2")
            .json(&other)
            .send()
            .await
            .expect("sent");
        assert_eq!(resp.status(), 200);
    }
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(leads, 2);
}

#[tokio::test]
async fn a_database_outage_answers_503_with_retry_after() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", true).await;
    app.db.pool.close().await;
    let started = std::time::Instant::now();
    let resp = app
        .client
        .post(app.url("/v1/webhooks/inbound"))
        .bearer_auth(&hook.token)
        .json(&sample("website-form", &us_phone(50)))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let (_, b) = read(resp).await;
    assert_eq!(b["status"], "error");
    assert!(started.elapsed() < Duration::from_secs(5));
    let resp = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 503);
    let resp = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn operator_routes_need_the_admin_token() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", true).await;
    let (_, b) = app
        .post_json(&hook.token, &sample("website-form", &us_phone(60)))
        .await;
    let lead = b["lead_id"].as_str().expect("id");
    for token in [Some(hook.token.as_str()), Some("wrong"), None] {
        let mut req = app.client.get(app.url(&format!("/v1/leads/{lead}")));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let (code, body) = read(req.send().await.expect("sent")).await;
        assert_error(code, &body, 401, "admin token");
    }
    let resp = app
        .client
        .get(app.url(&format!("/v1/leads/{}", uuid::Uuid::new_v4())))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn blocked_phones_and_emails_are_rejected_and_kept() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", true).await;
    leadflow::blocklist::add(
        &app.db.pool,
        leadflow::validate::BlockKind::Phone,
        "+1 650 253 0070",
        None,
    )
    .await
    .expect("block phone");
    let (code, body) = app
        .post_json(&hook.token, &sample("website-form", "(650) 253-0070"))
        .await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"], "This phone number is blocked");
    leadflow::blocklist::add(
        &app.db.pool,
        leadflow::validate::BlockKind::Email,
        "Spam@Example.com",
        Some("complaint"),
    )
    .await
    .expect("block email");
    let mut b = sample("website-form", &us_phone(71));
    b["email_field"] = json!("spam@example.COM");
    let (code, body) = app.post_json(&hook.token, &b).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["details"], "This email address is blocked");
    let rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'rejected'")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(rejected, 2);
    // Each request stored once: the statement that turned the lead away wrote nothing.
    let rows: (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM leads), (SELECT count(*) FROM webhook_log), \
                (SELECT count(*) FROM apalis.jobs)",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(rows, (2, 2, 0));
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let app = TestApp::start().await;
    let resp = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.expect("json");
    let paths: std::collections::BTreeSet<String> = doc["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .cloned()
        .collect();
    let served: std::collections::BTreeSet<String> = [
        "/v1/webhooks/inbound",
        "/v1/leads/{id}",
        "/v1/leads",
        "/v1/leads/{id}/replay",
        "/v1/jobs",
        "/v1/jobs/retry-failed",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/retry",
        "/v1/jobs/{id}/cancel",
        "/v1/queues",
        "/v1/queues/{queue}/pause",
        "/v1/queues/{queue}/resume",
        "/v1/webhook-log",
        "/v1/hooks",
        "/v1/hooks/{name}/rotate",
        "/v1/hooks/{name}/disable",
        "/v1/hooks/{name}/enable",
        "/v1/telephony/twilio/status",
        "/v1/telephony/twilio/twiml/{attempt_id}",
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/metrics",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(paths, served);
    // Every documented operation is routed (a missing route would answer 404 "No such route").
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for method in ops.as_object().expect("ops").keys() {
            let url = app.url(
                &path
                    .replace("{id}", &uuid::Uuid::new_v4().to_string())
                    .replace("{attempt_id}", &uuid::Uuid::new_v4().to_string())
                    .replace("{queue}", "qualify")
                    .replace("{name}", "no-such-hook"),
            );
            let req = app
                .client
                .request(method.to_uppercase().parse().expect("method"), url);
            let (_, body) = read(req.bearer_auth(ADMIN_TOKEN).send().await.expect("sent")).await;
            assert_ne!(body["details"], "No such route", "{method} {path}");
        }
    }
    // Every error response of the document uses the spec's error shape.
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], json!(["status", "message", "details"]));
}

#[tokio::test]
async fn a_hook_over_its_rate_limit_gets_429_with_retry_after() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", false).await;
    let other = app.hook("other-form", "default", false).await;
    leadflow::hooks::set_rate_limit(&app.db.pool, "website-form", Some(3))
        .await
        .expect("limit");
    for i in 0..3 {
        let (code, _) = app
            .post_json(&hook.token, &sample("website-form", &us_phone(80 + i)))
            .await;
        assert_eq!(code, 200);
    }
    let resp = app
        .client
        .post(app.url("/v1/webhooks/inbound"))
        .bearer_auth(&hook.token)
        .json(&sample("website-form", &us_phone(90)))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    let (_, body) = read(resp).await;
    assert_error(429, &body, 429, "rate limit");
    let (code, _) = app
        .post_json(&other.token, &sample("other-form", &us_phone(91)))
        .await;
    assert_eq!(code, 200, "another hook has its own budget");
    let leads: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(leads, 4, "a 429 stores no lead");
}

/// A request decided again because its remembered hook changed (see below) is one request
/// to the hook's rate limit, not two.
#[tokio::test]
async fn a_rechecked_request_counts_once_against_the_rate_limit() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", false).await;
    leadflow::hooks::set_rate_limit(&app.db.pool, "website-form", Some(3))
        .await
        .expect("limit");
    let post = |i: u32| {
        let body = sample("website-form", &us_phone(120 + i));
        let (app, token) = (&app, &hook.token);
        async move { app.post_json(token, &body).await }
    };
    assert_eq!(post(0).await.0, 200, "remembers the hook");
    // Any change to the row gives it a new version: the next request is rechecked.
    sqlx::query("UPDATE hooks SET auto_callback = auto_callback WHERE name = 'website-form'")
        .execute(&app.db.pool)
        .await
        .expect("touch the hook");
    assert_eq!(post(1).await.0, 200, "rechecked");
    assert_eq!(post(2).await.0, 200, "the third request of three allowed");
    assert_eq!(post(3).await.0, 429, "the fourth");
}

/// Changes made elsewhere (another process, an operator's SQL) reach a hook the service has
/// remembered by its token at the very next request: the transaction that stores a lead
/// confirms the hook, and every other answer is decided from the database.
#[tokio::test]
async fn a_remembered_hook_changed_elsewhere_takes_effect_at_the_next_request() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "default", false).await;
    let pool = &app.db.pool;
    let set = |sql: &'static str| async move {
        sqlx::query(sql).execute(pool).await.expect("hook updated");
    };
    let post = |n: u32| {
        let body = sample("website-form", &us_phone(120 + n));
        let token = hook.token.clone();
        let app = &app;
        async move { app.post_json(&token, &body).await.0 }
    };
    let leads = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM leads")
            .fetch_one(pool)
            .await
            .expect("count");
        n
    };

    assert_eq!(post(0).await, 200);
    assert_eq!(post(1).await, 200, "the remembered hook is confirmed");
    set("UPDATE hooks SET active = false WHERE name = 'website-form'").await;
    assert_eq!(post(2).await, 404, "disabled elsewhere");
    set("UPDATE hooks SET active = true WHERE name = 'website-form'").await;
    assert_eq!(post(3).await, 200, "enabled again");

    set("UPDATE hooks SET rate_limit_per_minute = 2 WHERE name = 'website-form'").await;
    assert_eq!(post(4).await, 200);
    assert_eq!(post(5).await, 200);
    assert_eq!(post(6).await, 429, "the new limit holds");
    set("UPDATE hooks SET rate_limit_per_minute = 1000 WHERE name = 'website-form'").await;
    assert_eq!(post(7).await, 200, "and a raised one at once");

    set("UPDATE hooks SET auto_callback = true WHERE name = 'website-form'").await;
    let (code, body) = app
        .post_json(&hook.token, &sample("website-form", &us_phone(140)))
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        body["auto_callback"], "initiated",
        "the hook's new setting is used"
    );

    set("UPDATE hooks SET token_hash = sha256('another token'::bytea) WHERE name = 'website-form'")
        .await;
    let before = leads().await;
    assert_eq!(
        post(8).await,
        401,
        "a token revoked elsewhere stops at once"
    );
    assert_eq!(leads().await, before, "and stores nothing");
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_log WHERE status_code = 401 AND hook_id IS NULL \
         AND body IS NULL",
    )
    .fetch_one(pool)
    .await
    .expect("count");
    assert_eq!(
        logged, 1,
        "logged as an unknown token's request, without its body"
    );
    assert_eq!(before, 7);
}
