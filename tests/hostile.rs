//! Hostile input at the intake, each with its expected status and never a 5xx: a 422 on an
//! authenticated, parseable body stores a `rejected` lead; any other 4xx stores no lead.

mod common;

use std::time::Duration;

use common::{TestApp, read, sample, us_phone};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn post(app: &TestApp, token: &str, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let resp = app
        .client
        .post(app.url("/v1/webhooks/inbound"))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("the server answers");
    read(resp).await
}

async fn leads(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM leads")
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn hostile_bodies_get_their_status_and_never_a_5xx() {
    let app = TestApp::start().await;
    let hook = app.hook("website-form", "always-open", false).await;
    let t = hook.token.as_str();
    let json_ct = "application/json";

    // Deeply nested JSON (10k levels): malformed for us, no stack overflow.
    let nested = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (code, body) = post(&app, t, json_ct, nested.into_bytes()).await;
    assert_eq!(code, 400, "{body}");
    // The same depth inside a custom field of an otherwise good lead.
    let good = serde_json::to_string(&sample("website-form", &us_phone(1))).unwrap_or_default();
    let deep = good.replacen(
        '{',
        &format!("{{\"utm\":{}1{},", "[".repeat(5000), "]".repeat(5000)),
        1,
    );
    let (code, _) = post(&app, t, json_ct, deep.into_bytes()).await;
    assert_eq!(code, 400, "a custom field nested 5000 deep");

    // A 10 MB body.
    let (code, body) = post(&app, t, json_ct, vec![b'{'; 10 * 1024 * 1024]).await;
    assert_eq!(code, 413, "{body}");

    // Invalid UTF-8, in JSON and in a form.
    let (code, _) = post(
        &app,
        t,
        json_ct,
        b"{\"hookName\":\"website-form\",\"name_field\":\"\xff\xfe\"}".to_vec(),
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = post(
        &app,
        t,
        "application/x-www-form-urlencoded",
        b"hookName=website-form&name_field=%FF%FE".to_vec(),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(leads(&app).await, 0, "no lead from a 400 or a 413");

    // NUL bytes: a documented field is a 422 naming it; a custom one is kept (repaired).
    let mut nul = sample("website-form", &us_phone(2));
    nul["name_field"] = json!("Jo\u{0}hn");
    let (code, body) = post(
        &app,
        t,
        json_ct,
        serde_json::to_vec(&nul).unwrap_or_default(),
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["details"]
            .as_str()
            .unwrap_or_default()
            .contains("name_field")
    );
    let mut nul = sample("website-form", &us_phone(3));
    nul["note"] = json!("a\u{0}b");
    let (code, body) = post(
        &app,
        t,
        json_ct,
        serde_json::to_vec(&nul).unwrap_or_default(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let form_nul = format!(
        "hookName=website-form&name_field=A%00B&country_code_field=1&phone_field={}&date_submitted_field=2025-01-30&time_submitted_field=10:00&status=1",
        us_phone(4)
    );
    let (code, _) = post(
        &app,
        t,
        "application/x-www-form-urlencoded",
        form_nul.into_bytes(),
    )
    .await;
    assert_eq!(code, 422);

    // Huge numbers in is_auto.
    for huge in ["99999999999999999999999999999", "1e400", "-1"] {
        let mut b = sample("website-form", &us_phone(5));
        let text = serde_json::to_string(&b)
            .unwrap_or_default()
            .replace("\"is_auto\":1", &format!("\"is_auto\":{huge}"));
        b = serde_json::from_str(&text).unwrap_or(b);
        let raw = if text.contains(huge) {
            text
        } else {
            serde_json::to_string(&b).unwrap_or_default()
        };
        let (code, body) = post(&app, t, json_ct, raw.into_bytes()).await;
        assert_eq!(code, 422, "is_auto {huge}: {body}");
        assert!(
            body["details"]
                .as_str()
                .unwrap_or_default()
                .contains("is_auto")
        );
    }

    // Arrays where strings are expected.
    let mut arr = sample("website-form", &us_phone(6));
    arr["phone_field"] = json!(["650", "253"]);
    let (code, body) = post(
        &app,
        t,
        json_ct,
        serde_json::to_vec(&arr).unwrap_or_default(),
    )
    .await;
    assert_eq!(code, 422);
    assert!(
        body["details"]
            .as_str()
            .unwrap_or_default()
            .contains("phone_field")
    );

    // Duplicate keys: the last one wins.
    let dup = format!(
        r#"{{"hookName":"website-form","name_field":"A","country_code_field":"+1","phone_field":"123","phone_field":"{}","date_submitted_field":"2025-01-30","time_submitted_field":"10:00","status":1}}"#,
        us_phone(7)
    );
    let (code, body) = post(&app, t, json_ct, dup.into_bytes()).await;
    assert_eq!(code, 200, "{body}");

    // A multipart body with 10k parts.
    let boundary = "XyZ";
    let mut parts = String::new();
    for i in 0..10_000 {
        parts.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"
        ));
    }
    parts.push_str(&format!("--{boundary}--\r\n"));
    let (code, _) = post(
        &app,
        t,
        &format!("multipart/form-data; boundary={boundary}"),
        parts.into_bytes(),
    )
    .await;
    assert!(code == 400 || code == 413, "10k parts: {code}");

    // SQL-looking and HTML strings are stored verbatim and returned as data.
    let mut evil = sample("website-form", &us_phone(8));
    evil["name_field"] = json!("Robert'); DROP TABLE leads;--");
    evil["message_field"] = json!("<script>alert('x')</script>");
    evil["company_name_field"] = json!("\" OR 1=1 --");
    let (code, body) = post(
        &app,
        t,
        json_ct,
        serde_json::to_vec(&evil).unwrap_or_default(),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (_, view) = app.get_lead(body["lead_id"].as_str().expect("id")).await;
    assert_eq!(view["lead"]["name"], "Robert'); DROP TABLE leads;--");
    assert_eq!(view["lead"]["company"], "\" OR 1=1 --");
    let stored: Value = sqlx::query_scalar("SELECT submission FROM leads WHERE id = $1::uuid")
        .bind(body["lead_id"].as_str().expect("id"))
        .fetch_one(&app.db.pool)
        .await
        .expect("lead");
    assert_eq!(stored["message"], "<script>alert('x')</script>");

    // Rejected leads came only from the 422s (NUL ×2, is_auto ×3, array ×1).
    let rejected: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'rejected'")
        .fetch_one(&app.db.pool)
        .await
        .expect("count");
    assert_eq!(rejected, 6);
    let errors: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_log WHERE status_code >= 500")
            .fetch_one(&app.db.pool)
            .await
            .expect("count");
    assert_eq!(errors, 0, "never a 5xx");
}

#[tokio::test]
async fn a_slowloris_connection_is_closed_by_the_header_timeout() {
    let app = TestApp::start().await; // header timeout: 2 s in tests
    let addr = app.service().addr;
    let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
    sock.write_all(b"POST /v1/webhooks/inbound HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut closed = false;
    // One header byte every 300 ms: never a complete header block.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        if sock.write_all(b"X").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(10), sock.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    let took = started.elapsed();
    assert!(closed, "the connection stayed open for {took:?}");
    assert!(took < Duration::from_secs(5), "closed only after {took:?}");
    // The server still serves everyone else.
    let resp = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn nul_characters_in_urls_get_400_not_a_database_error() {
    let app = TestApp::start().await;
    for path in [
        "/v1/webhook-log?hook=a%00b",
        "/v1/leads?phone=%00",
        "/v1/hooks/x%00y/disable",
    ] {
        let req = if path.ends_with("disable") {
            app.client.post(app.url(path))
        } else {
            app.client.get(app.url(path))
        };
        let (code, body) = read(
            req.bearer_auth(common::ADMIN_TOKEN)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(code, 400, "{path}: {body}");
        assert_eq!(body["status"], "error");
    }
}
