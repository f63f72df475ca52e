//! The operator HTTP API against a database holding leads in every state: every route, its
//! filters and cursors, masking and reveals, the admin-only guard, and hook token rotation.

mod common;
mod operator_support;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{ADMIN_TOKEN, read};
use operator_support::{app, get, lead, post, submit, zoo};
use serde_json::{Value, json};

/// Every operator route with a method and a concrete path.
fn operator_routes(lead: &str, job: &str) -> Vec<(&'static str, String)> {
    vec![
        ("GET", "/v1/leads".into()),
        ("GET", format!("/v1/leads/{lead}")),
        ("POST", format!("/v1/leads/{lead}/replay")),
        ("GET", "/v1/jobs".into()),
        ("POST", "/v1/jobs/retry-failed".into()),
        ("GET", format!("/v1/jobs/{job}")),
        ("POST", format!("/v1/jobs/{job}/retry")),
        ("POST", format!("/v1/jobs/{job}/cancel")),
        ("GET", "/v1/queues".into()),
        ("POST", "/v1/queues/qualify/pause".into()),
        ("POST", "/v1/queues/qualify/resume".into()),
        ("GET", "/v1/webhook-log".into()),
        ("GET", "/v1/hooks".into()),
        ("POST", "/v1/hooks".into()),
        ("POST", "/v1/hooks/website-form/rotate".into()),
        ("POST", "/v1/hooks/website-form/disable".into()),
        ("POST", "/v1/hooks/website-form/enable".into()),
    ]
}

#[tokio::test]
async fn an_intake_token_gets_401_on_every_operator_route() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    let lead_id = submit(&app, &hook.token, &lead("website-form", 1, |_| {})).await;
    let (_, jobs) = get(&app, "/v1/jobs").await;
    let job = jobs["items"][0]["id"].as_str().expect("a job").to_owned();
    for (method, path) in operator_routes(&lead_id, &job) {
        for token in [Some(hook.token.as_str()), None, Some("not-a-token")] {
            let mut req = app
                .client
                .request(method.parse().expect("method"), app.url(&path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let (code, body) = read(req.send().await.expect("sent")).await;
            assert_eq!(code, 401, "{method} {path} with {token:?}: {body}");
            assert_eq!(body["status"], "error");
            assert_eq!(body["message"], "Unauthorized");
        }
    }
    // Nothing was changed by the refused calls.
    let (_, queues) = get(&app, "/v1/queues").await;
    assert!(
        queues["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .all(|q| q["paused"] == false)
    );
}

#[tokio::test]
async fn leads_list_by_status_time_phone_and_id_with_a_cursor() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    let zoo = zoo(&app, &hook.token, "website-form").await;

    // Every status filters to exactly its lead.
    for (status, id) in &zoo {
        let (code, page) = get(&app, &format!("/v1/leads?status={status}")).await;
        assert_eq!(code, 200, "{page}");
        let ids: Vec<&str> = page["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter_map(|l| l["id"].as_str())
            .collect();
        assert_eq!(ids, vec![id.as_str()], "status {status}");
        assert_eq!(page["items"][0]["status"], status.as_str());
    }

    // Pages of 5 walk the whole list, newest first, without overlap.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/leads?limit=5&cursor={c}"),
            None => "/v1/leads?limit=5".to_owned(),
        };
        let (code, page) = get(&app, &path).await;
        assert_eq!(code, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= 5);
        seen.extend(
            items
                .iter()
                .map(|l| l["id"].as_str().expect("id").to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = zoo.iter().map(|(_, id)| id.clone()).collect();
    expected.reverse();
    assert_eq!(seen, expected, "newest first, every lead once");

    // Phone and id searches; masking by default.
    let (_, page) = get(&app, "/v1/leads?phone=%2B16502539003").await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["phone"], "+*******9003");
    assert!(items[0]["email"].as_str().expect("email").contains("***@"));
    let (_, page) = get(&app, &format!("/v1/leads?id={}", zoo[4].1)).await;
    assert_eq!(page["items"][0]["id"], zoo[4].1.as_str());

    // Since: everything is recent; nothing is from the future.
    let (_, page) = get(&app, "/v1/leads?since=1h&limit=200").await;
    assert_eq!(page["items"].as_array().expect("items").len(), zoo.len());
    let (_, page) = get(&app, "/v1/leads?since=2999-01-01T00:00:00Z").await;
    assert_eq!(page["items"], json!([]));

    // Bad filters are 400s in the error shape.
    for bad in [
        "status=lost",
        "since=yesterday",
        "phone=12345",
        "cursor=!!",
        "id=nope",
    ] {
        let (code, body) = get(&app, &format!("/v1/leads?{bad}")).await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_eq!(body["status"], "error");
        assert!(body["details"].is_string());
    }
}

#[tokio::test]
async fn a_reveal_shows_the_contact_details_and_is_recorded_in_the_timeline() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    let id = submit(&app, &hook.token, &lead("website-form", 7, |_| {})).await;

    let (_, masked) = get(&app, &format!("/v1/leads/{id}")).await;
    assert_eq!(masked["lead"]["phone"], "+*******0007");
    assert!(!masked["timeline"].to_string().contains("lead.revealed"));

    let (code, shown) = get(&app, &format!("/v1/leads/{id}?reveal=true")).await;
    assert_eq!(code, 200);
    assert_eq!(shown["lead"]["phone"], "+16502530007");
    assert_eq!(shown["lead"]["email"], "john.doe+6502530007@example.com");
    let reveals: Vec<&Value> = shown["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["event"] == "lead.revealed")
        .collect();
    assert_eq!(reveals.len(), 1);
    assert_eq!(reveals[0]["actor"], "api");

    // A list reveal records one event per lead shown, with the caller's label.
    let resp = app
        .client
        .get(app.url("/v1/leads?reveal=true"))
        .bearer_auth(ADMIN_TOKEN)
        .header("X-Leadflow-Actor", "alice")
        .send()
        .await
        .expect("sent");
    let (_, page) = read(resp).await;
    assert_eq!(page["items"][0]["phone"], "+16502530007");
    let (_, after) = get(&app, &format!("/v1/leads/{id}")).await;
    let actors: Vec<&str> = after["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|e| e["event"] == "lead.revealed")
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert_eq!(actors, vec!["api", "api:alice"]);
}

#[tokio::test]
async fn queues_count_jobs_per_state_and_jobs_list_and_show() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    zoo(&app, &hook.token, "website-form").await;

    let (code, body) = get(&app, "/v1/queues").await;
    assert_eq!(code, 200);
    let queues = body["queues"].as_array().expect("queues");
    let names: Vec<&str> = queues.iter().filter_map(|q| q["queue"].as_str()).collect();
    assert_eq!(
        names,
        ["leadflow.qualify", "leadflow.route", "leadflow.callback"]
    );
    let qualify = &queues[0];
    // 11 accepted leads each have a qualify job: 1 available, 1 failed, 1 cancelled, 8 done.
    assert_eq!(qualify["counts"]["available"], 1, "{qualify}");
    assert_eq!(qualify["counts"]["failed"], 1);
    assert_eq!(qualify["counts"]["cancelled"], 1);
    assert_eq!(qualify["counts"]["completed"], 8);
    assert_eq!(qualify["counts"]["running"], 0);
    assert!(qualify["oldest_wait_s"].as_f64().is_some_and(|s| s >= 0.0));
    assert!(queues[1]["oldest_wait_s"].is_null());

    let (_, all) = get(&app, "/v1/jobs?limit=200").await;
    assert_eq!(all["items"].as_array().expect("items").len(), 11);
    for (state, n) in [
        ("available", 1),
        ("failed", 1),
        ("cancelled", 1),
        ("completed", 8),
        ("retrying", 0),
    ] {
        let (code, page) = get(&app, &format!("/v1/jobs?queue=qualify&state={state}")).await;
        assert_eq!(code, 200, "{page}");
        let items = page["items"].as_array().expect("items");
        assert_eq!(items.len(), n, "{state}");
        assert!(
            items
                .iter()
                .all(|j| j["state"] == state && j["queue"] == "leadflow.qualify")
        );
    }
    let (_, other) = get(&app, "/v1/jobs?queue=route").await;
    assert_eq!(other["items"], json!([]));

    // Cursor pages over jobs.
    let (_, first) = get(&app, "/v1/jobs?limit=6").await;
    let cursor = first["next_cursor"].as_str().expect("more jobs");
    let (_, second) = get(&app, &format!("/v1/jobs?limit=6&cursor={cursor}")).await;
    let ids: BTreeSet<&str> = first["items"]
        .as_array()
        .into_iter()
        .chain(second["items"].as_array())
        .flatten()
        .filter_map(|j| j["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 11);
    assert!(second["next_cursor"].is_null());

    // One job in full.
    let (_, failed) = get(&app, "/v1/jobs?state=failed").await;
    let job = &failed["items"][0];
    let (code, detail) = get(
        &app,
        &format!("/v1/jobs/{}", job["id"].as_str().expect("id")),
    )
    .await;
    assert_eq!(code, 200, "{detail}");
    assert_eq!(detail["status"], "Failed");
    assert_eq!(detail["args"]["n"], 1);
    assert_eq!(detail["args"]["run_id"], detail["run_id"]);
    assert!(detail["lead_id"].is_string());
    assert!(
        detail["idempotency_key"]
            .as_str()
            .expect("key")
            .ends_with(":qualify:1")
    );
    assert_eq!(detail["step_execution"]["status"], "pending");

    for (path, code) in [
        ("/v1/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV", 404),
        ("/v1/jobs?state=dead", 400),
        ("/v1/jobs?queue=nope", 400),
        ("/v1/jobs?limit=x", 400),
    ] {
        let (got, body) = get(&app, path).await;
        assert_eq!(got, code, "{path}: {body}");
        assert_eq!(body["status"], "error");
    }
    let (code, _) = post(&app, "/v1/queues/nope/pause", None).await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn the_webhook_log_lists_every_request_with_its_outcome() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    let other = app.hook("other-form", "rules", true).await;
    submit(&app, &hook.token, &lead("website-form", 1, |_| {})).await;
    submit(
        &app,
        &hook.token,
        &lead("website-form", 2, |b| b["phone_field"] = json!("1")),
    )
    .await;
    submit(&app, &other.token, &lead("other-form", 3, |_| {})).await;
    // A request with a bad token is logged without a hook.
    let (code, _) = app
        .post_json("nope", &lead("website-form", 4, |_| {}))
        .await;
    assert_eq!(code, 401);

    let (_, all) = get(&app, "/v1/webhook-log").await;
    let items = all["items"].as_array().expect("items");
    assert_eq!(items.len(), 4);
    assert_eq!(items[0]["status_code"], 401, "newest first");
    assert!(items[0]["hook"].is_null());
    assert!(
        !all.to_string().contains("6502530001"),
        "no bodies, no phones"
    );

    let (_, rejected) = get(&app, "/v1/webhook-log?outcome=rejected&hook=website-form").await;
    let items = rejected["items"].as_array().expect("items");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status_code"], 422);
    assert!(
        items[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("phone")
    );
    assert!(items[0]["lead_id"].is_string());

    let (_, other_log) = get(&app, "/v1/webhook-log?hook=other-form").await;
    assert_eq!(other_log["items"].as_array().expect("items").len(), 1);

    let first_id = all["items"][3]["id"].as_i64().expect("id");
    let (_, newer) = get(&app, &format!("/v1/webhook-log?after={first_id}")).await;
    let ids: Vec<i64> = newer["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "following reads oldest first"
    );

    let (_, page) = get(&app, "/v1/webhook-log?limit=3").await;
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, rest) = get(&app, &format!("/v1/webhook-log?limit=3&cursor={cursor}")).await;
    assert_eq!(rest["items"].as_array().expect("items").len(), 1);

    let (code, _) = get(&app, "/v1/webhook-log?outcome=weird").await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn hooks_are_created_listed_rotated_with_a_grace_period_and_disabled() {
    let app = app(false).await;
    let (code, created) = post(
        &app,
        "/v1/hooks",
        Some(json!({ "name": "landing", "workflow": "rules", "auto_callback": false })),
    )
    .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"], "success");
    let old = created["token"].as_str().expect("token").to_owned();
    assert_eq!(created["url"], app.url("/v1/webhooks/inbound"));

    let (code, dup) = post(
        &app,
        "/v1/hooks",
        Some(json!({ "name": "landing", "workflow": "rules" })),
    )
    .await;
    assert_eq!(code, 409, "{dup}");
    let (code, _) = post(
        &app,
        "/v1/hooks",
        Some(json!({ "name": "x", "workflow": "nope" })),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = post(&app, "/v1/hooks", Some(json!({ "nom": "x" }))).await;
    assert_eq!(code, 400);

    // Rotation with a grace period: both tokens work.
    let (code, rotated) = post(
        &app,
        "/v1/hooks/landing/rotate",
        Some(json!({ "grace_seconds": 3600 })),
    )
    .await;
    assert_eq!(code, 200, "{rotated}");
    let new = rotated["token"].as_str().expect("token").to_owned();
    assert_ne!(new, old);
    assert!(rotated["previous_token_expires_at"].is_string());
    for token in [&old, &new] {
        let (code, body) = app.post_json(token, &lead("landing", 11, |_| {})).await;
        assert_eq!(code, 200, "{body}");
    }
    let (_, list) = get(&app, "/v1/hooks").await;
    assert_eq!(list["items"][0]["name"], "landing");
    assert!(list["items"][0]["previous_token_expires_at"].is_string());
    assert!(!list.to_string().contains(&new), "tokens are never listed");

    // Rotation without grace: the old token stops at once.
    let (_, again) = post(
        &app,
        "/v1/hooks/landing/rotate",
        Some(json!({ "grace_seconds": 0 })),
    )
    .await;
    let newest = again["token"].as_str().expect("token").to_owned();
    assert!(again["previous_token_expires_at"].is_null());
    let (code, _) = app.post_json(&new, &lead("landing", 12, |_| {})).await;
    assert_eq!(code, 401);
    let (code, _) = app.post_json(&newest, &lead("landing", 13, |_| {})).await;
    assert_eq!(code, 200);

    let (code, _) = post(&app, "/v1/hooks/landing/disable", None).await;
    assert_eq!(code, 200);
    let (code, _) = app.post_json(&newest, &lead("landing", 14, |_| {})).await;
    assert_eq!(code, 404, "a disabled hook is unknown to senders");
    let (code, body) = post(&app, "/v1/hooks/landing/enable", None).await;
    assert_eq!((code, body["active"].clone()), (200, json!(true)));
    let (code, _) = post(&app, "/v1/hooks/ghost/rotate", None).await;
    assert_eq!(code, 404);
    let (code, _) = post(
        &app,
        "/v1/hooks/landing/rotate",
        Some(json!({ "grace_seconds": 99999999 })),
    )
    .await;
    assert_eq!(code, 400);

    for i in 0..3 {
        post(
            &app,
            "/v1/hooks",
            Some(json!({ "name": format!("h{i}"), "workflow": "rules" })),
        )
        .await;
    }
    let (_, page) = get(&app, "/v1/hooks?limit=2").await;
    let cursor = page["next_cursor"].as_str().expect("more hooks");
    let (_, rest) = get(&app, &format!("/v1/hooks?limit=2&cursor={cursor}")).await;
    let names: Vec<&str> = page["items"]
        .as_array()
        .into_iter()
        .chain(rest["items"].as_array())
        .flatten()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert_eq!(names, ["h0", "h1", "h2", "landing"]);
}

#[tokio::test]
async fn the_lead_view_lists_runs_and_the_jobs_behind_its_steps() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let id = submit(&app, &hook.token, &lead("website-form", 21, |_| {})).await;
    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
    let steps = view["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["name"], "validate");
    assert!(steps[0]["job_id"].is_null());
    for s in &steps[1..] {
        let job = s["job_id"].as_str().expect("worker steps have jobs");
        let (code, detail) = get(&app, &format!("/v1/jobs/{job}")).await;
        assert_eq!(code, 200);
        assert_eq!(detail["step"], s["name"]);
    }
    assert_eq!(view["runs"].as_array().expect("runs").len(), 1);
    assert_eq!(view["runs"][0]["id"], view["run"]["id"]);
    assert!(view["run"]["replay_of"].is_null());
}
