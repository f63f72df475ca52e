//! The browser console over HTTP: log-in with the admin token, the session cookie's
//! attributes, CSRF on every form POST, every page, escaping of stored input, masking and
//! reveals, and actions recorded under the operator's name. (The end-to-end test in a real
//! browser is console_browser.rs.)

mod common;
mod operator_support;

use std::collections::HashMap;
use std::time::Duration;

use common::{ADMIN_TOKEN, TestApp};
use operator_support::{app, events, failed_lead, get, lead, submit};
use serde_json::json;

/// A cookie-keeping client that does not follow redirects, so that they can be checked.
struct Browser {
    client: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
    set_cookies: Vec<String>,
}

struct Page {
    code: u16,
    location: Option<String>,
    html: String,
}

impl Page {
    fn csrf(&self) -> String {
        let at = self
            .html
            .find("name=\"csrf\" value=\"")
            .expect("a form with a CSRF token");
        let rest = &self.html[at + 19..];
        rest[..rest.find('"').expect("end of value")].to_owned()
    }
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: app.base.clone(),
            cookies: HashMap::new(),
            set_cookies: Vec::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let cookie: Vec<String> = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let req = if cookie.is_empty() {
            req
        } else {
            req.header("Cookie", cookie.join("; "))
        };
        let resp = req.send().await.expect("sent");
        for c in resp.headers().get_all("set-cookie") {
            let c = c.to_str().expect("ascii").to_owned();
            if let Some((name, rest)) = c.split_once('=') {
                let value = rest.split(';').next().unwrap_or_default();
                if value.is_empty() {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
            self.set_cookies.push(c);
        }
        let code = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_owned);
        Page {
            code,
            location,
            html: resp.text().await.expect("body"),
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self.client.get(format!("{}{path}", self.base));
        self.send(req).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self.client.post(format!("{}{path}", self.base)).form(form);
        self.send(req).await
    }

    async fn login(&mut self, name: &str) {
        let form = self.get("/console/login").await;
        let csrf = form.csrf();
        let done = self
            .post(
                "/console/login",
                &[("csrf", &csrf), ("token", ADMIN_TOKEN), ("name", name)],
            )
            .await;
        assert_eq!(
            (done.code, done.location.as_deref()),
            (303, Some("/console")),
            "{}",
            done.html
        );
    }
}

#[tokio::test]
async fn logging_in_needs_the_admin_token_and_sets_a_strict_http_only_cookie() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    let mut b = Browser::new(&app);
    let page = b.get("/console").await;
    assert_eq!(
        (page.code, page.location.as_deref()),
        (303, Some("/console/login"))
    );

    let mut form = b.get("/console/login").await;
    assert_eq!(form.code, 200);
    for wrong in [hook.token.as_str(), "guess"] {
        let csrf = form.csrf();
        form = b
            .post("/console/login", &[("csrf", &csrf), ("token", wrong)])
            .await;
        assert_eq!(form.code, 401, "an intake token is not the admin token");
        assert!(form.html.contains("not the admin token"));
    }
    let form = b.get("/console/login").await;
    let csrf = form.csrf();
    let done = b
        .post(
            "/console/login",
            &[("csrf", &csrf), ("token", ADMIN_TOKEN), ("name", "alice")],
        )
        .await;
    assert_eq!(done.code, 303);
    let session = b
        .set_cookies
        .iter()
        .find(|c| c.starts_with("lf_session=") && !c.starts_with("lf_session=;"))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(session.contains(attr), "{session}");
    }
    let overview = b.get("/console").await;
    assert_eq!(overview.code, 200);
    assert!(overview.html.contains("leadflow.qualify"));
    assert!(overview.html.contains("console:alice"));
    assert!(
        overview.html.contains("http-equiv=\"refresh\""),
        "the overview refreshes itself"
    );

    // A session belongs to the admin token it logged in with: a new admin token ends it.
    sqlx::query("UPDATE console_sessions SET admin_fingerprint = sha256(admin_fingerprint)")
        .execute(&app.db.pool)
        .await
        .expect("token changed");
    assert_eq!(
        b.get("/console").await.code,
        303,
        "ended by the token change"
    );
    sqlx::query("UPDATE console_sessions SET admin_fingerprint = $1")
        .bind(&leadflow::operator::api::AdminToken::new(ADMIN_TOKEN).fingerprint()[..])
        .execute(&app.db.pool)
        .await
        .expect("token restored");
    let overview = b.get("/console").await;
    assert_eq!(overview.code, 200);

    // Logging out ends the session server-side: the old cookie no longer works.
    let old = b.cookies.get("lf_session").cloned().expect("cookie");
    let csrf = overview.csrf();
    let out = b.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!(
        (out.code, out.location.as_deref()),
        (303, Some("/console/login"))
    );
    b.cookies.insert("lf_session".into(), old);
    let page = b.get("/console").await;
    assert_eq!(page.code, 303);
}

#[tokio::test]
async fn a_form_post_without_its_csrf_token_gets_403() {
    let app = app(false).await;
    let mut b = Browser::new(&app);
    // Even the log-in form needs its token.
    let refused = b.post("/console/login", &[("token", ADMIN_TOKEN)]).await;
    assert_eq!(refused.code, 403);
    // Without a session, a POST is refused outright.
    let refused = b.post("/console/queues/qualify/pause", &[]).await;
    assert_eq!(refused.code, 403);

    b.login("bob").await;
    let csrf = b.get("/console").await.csrf();
    for form in [vec![], vec![("csrf", "forged")], vec![("csrf", "")]] {
        let refused = b.post("/console/queues/qualify/pause", &form).await;
        assert_eq!(refused.code, 403, "{form:?}");
        assert!(refused.html.contains("CSRF"));
    }
    let (_, queues) = get(&app, "/v1/queues").await;
    assert_eq!(
        queues["queues"][0]["paused"], false,
        "no refused POST had an effect"
    );

    let ok = b
        .post("/console/queues/qualify/pause", &[("csrf", &csrf)])
        .await;
    assert_eq!((ok.code, ok.location.as_deref()), (303, Some("/console")));
    let (_, queues) = get(&app, "/v1/queues").await;
    assert_eq!(queues["queues"][0]["paused"], true);
    assert_eq!(queues["queues"][0]["paused_by"], "console:bob");
    let notice = b.get("/console").await;
    assert!(
        notice.html.contains("leadflow.qualify paused"),
        "the action's notice shows once"
    );
    assert!(
        !b.get("/console")
            .await
            .html
            .contains("leadflow.qualify paused</p>")
    );
}

#[tokio::test]
async fn every_page_renders_masks_contacts_and_escapes_stored_input() {
    let app = app(false).await;
    let hook = app.hook("website-form", "rules", true).await;
    let nasty = "<script>alert('x')</script>";
    let id = submit(
        &app,
        &hook.token,
        &lead("website-form", 5, |b| {
            b["name_field"] = json!(nasty);
            b["company_name_field"] = json!("'; DROP TABLE leads; --");
        }),
    )
    .await;
    submit(
        &app,
        &hook.token,
        &lead("website-form", 6, |b| b["phone_field"] = json!("1")),
    )
    .await;
    let mut b = Browser::new(&app);
    b.login("carol").await;

    for path in [
        "/console",
        "/console/leads",
        "/console/leads?status=rejected",
        "/console/leads?q=%2B16502530005",
        &format!("/console/leads?q={id}"),
        &format!("/console/leads/{id}"),
        "/console/jobs?state=failed",
        "/console/jobs?state=available&queue=qualify",
        "/console/log",
        "/console/log?outcome=rejected",
        "/console/hooks",
    ] {
        let page = b.get(path).await;
        assert_eq!(page.code, 200, "{path}: {}", page.html);
        assert!(
            !page.html.contains("<script>"),
            "{path} renders stored input as text"
        );
        if !path.contains("%2B") {
            assert!(!page.html.contains("6502530005"), "{path} masks the phone");
        }
    }
    let found = b.get("/console/leads?q=%2B16502530005").await;
    assert!(found.html.contains(&id));
    let lead_page = b.get(&format!("/console/leads/{id}")).await;
    assert!(lead_page.html.contains("&lt;script&gt;"));
    assert!(lead_page.html.contains("+*******0005"));
    let bad = b.get("/console/leads?q=12345").await;
    assert!(bad.html.contains("international form"));

    // Reveal: the full details, once, recorded under the operator's name.
    let csrf = lead_page.csrf();
    let shown = b
        .post(&format!("/console/leads/{id}/reveal"), &[("csrf", &csrf)])
        .await;
    assert_eq!(shown.code, 200);
    assert!(shown.html.contains("+16502530005"));
    assert!(shown.html.contains("john.doe+6502530005@example.com"));
    assert!(!shown.html.contains("http-equiv=\"refresh\""));
    let (_, view) = get(&app, &format!("/v1/leads/{id}")).await;
    let reveal = view["timeline"]
        .as_array()
        .expect("timeline")
        .iter()
        .find(|e| e["event"] == "lead.revealed")
        .expect("recorded");
    assert_eq!(reveal["actor"], "console:carol");

    let missing = b
        .get(&format!("/console/leads/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!(missing.code, 404);
}

#[tokio::test]
async fn console_actions_retry_replay_and_manage_hooks() {
    let app = app(true).await;
    let hook = app.hook("website-form", "rules", true).await;
    let (id, job) = failed_lead(&app, &hook.token, "website-form", 8).await;
    let mut b = Browser::new(&app);
    b.login("dave").await;

    let failed = b.get("/console/jobs?state=failed").await;
    assert!(failed.html.contains(&job));
    let csrf = failed.csrf();
    let done = b
        .post(
            &format!("/console/jobs/{job}/retry?back=/console/leads/{id}"),
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(done.location, Some(format!("/console/leads/{id}")));
    let view = app
        .wait_for_run(&id, "routed", Duration::from_secs(20))
        .await;
    let retry = events(&view, "operator.retry")[0];
    assert_eq!(retry["actor"], "console:dave");
    let page = b.get(&format!("/console/leads/{id}")).await;
    assert!(page.html.contains("is queued again"), "the retry's notice");

    // Replay from route.
    let done = b
        .post(
            &format!("/console/leads/{id}/replay"),
            &[("csrf", &csrf), ("from", "route")],
        )
        .await;
    assert_eq!(done.code, 303);
    let page = b.get(&format!("/console/leads/{id}")).await;
    assert!(page.html.contains("Replaying from route"), "{}", page.html);
    let (_, view) = get(&app, &format!("/v1/leads/{id}")).await;
    assert_eq!(view["runs"].as_array().expect("runs").len(), 2);

    // A refused action says why.
    b.post(&format!("/console/jobs/{job}/retry"), &[("csrf", &csrf)])
        .await;
    let page = b.get("/console/jobs?state=failed").await;
    assert!(page.html.contains("Not done:"), "{}", page.html);

    // Hooks: create (token shown once), rotate, disable.
    let created = b
        .post(
            "/console/hooks",
            &[
                ("csrf", &csrf),
                ("name", "landing"),
                ("workflow", "rules"),
                ("auto_callback", "on"),
            ],
        )
        .await;
    assert_eq!(created.code, 200);
    let token = created
        .html
        .split("<pre id=\"token\">")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("token shown")
        .to_owned();
    let (code, _) = app.post_json(&token, &lead("landing", 9, |_| {})).await;
    assert_eq!(code, 200);
    let rotated = b
        .post(
            "/console/hooks/landing/rotate",
            &[("csrf", &csrf), ("grace", "0")],
        )
        .await;
    assert!(rotated.html.contains("no longer works"));
    let (code, _) = app.post_json(&token, &lead("landing", 10, |_| {})).await;
    assert_eq!(code, 401);
    let off = b
        .post("/console/hooks/landing/disable", &[("csrf", &csrf)])
        .await;
    assert_eq!(off.code, 303);
    let list = b.get("/console/hooks").await;
    assert!(list.html.contains("Hook landing disabled"));
    assert!(!list.html.contains(&token));
}
