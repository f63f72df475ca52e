//! The console's markup that needs no session: its style sheet, times, redirects, error pages
//! and the log-in form (shown before there is a session). maud escapes every value it
//! interpolates, so stored lead data (which senders control) renders as text.

use maud::{DOCTYPE, Markup, html};
use poem::http::{StatusCode, header};
use poem::web::Html;
use poem::{IntoResponse, Response};

use crate::db::At;

pub(super) const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6rem 1rem;display:flex;gap:1.2rem;align-items:center;flex-wrap:wrap}
header a{color:#cfd8ff;text-decoration:none}header b{color:#fff}
header form{margin-left:auto}
main{padding:1rem;max-width:1200px}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5rem 0 1.2rem}
th,td{border-bottom:1px solid #e3e6eb;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}
.notice{background:#e8f4ea;border:1px solid #9ccfa5;padding:.5rem .8rem;margin-bottom:1rem}
.problem{background:#fdecea;border:1px solid #f0a39b;padding:.5rem .8rem;margin-bottom:1rem}
.muted{color:#6b7280}.mono{font-family:ui-monospace,monospace;font-size:12px}
.status-failed,.status-rejected{color:#b42318;font-weight:600}
.status-called,.status-routed{color:#067647;font-weight:600}
form.inline{display:inline}button{cursor:pointer}
.chart{display:flex;align-items:flex-end;gap:2px;height:80px;max-width:720px;background:#fff;padding:4px;border:1px solid #e3e6eb}
.chart div{flex:1;background:#5b7cfa}
";

pub fn at(t: &At) -> String {
    t.0.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

pub fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("–")
}

pub fn status(s: &str) -> Markup {
    html! { span class=(format!("status-{s}")) { (s) } }
}

/// A value for a URL's query string.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub fn redirect(to: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, to)
        .finish()
}

/// A page for when there is no session to show the navigation of.
pub fn error_page(code: StatusCode, title: &str, why: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (title) " · leadflow" } style { (STYLE) } }
            body { main { h1 { (title) } p.problem { (why) } p { a href="/console" { "Back to the console" } } } }
        }
    };
    let mut resp = Html(markup.into_string()).into_response();
    resp.set_status(code);
    resp
}

pub fn db_error(e: &sqlx::Error) -> Response {
    if crate::db::is_unavailable(e) {
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Database unavailable",
            "Try again in a moment.",
        )
    } else {
        tracing::error!(error = %e, "console database error");
        error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "A database error occurred; it has been logged.",
        )
    }
}

pub fn login(csrf: &str, problem: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Log in · leadflow" }
                style { (STYLE) }
            }
            body {
                main {
                    h1 { "leadflow console" }
                    @if let Some(p) = problem { p.problem role="alert" { (p) } }
                    form method="post" action="/console/login" {
                        input type="hidden" name="csrf" value=(csrf);
                        p {
                            label for="token" { "Admin token" } br;
                            input id="token" name="token" type="password" autocomplete="current-password" required size="50";
                        }
                        p {
                            label for="name" { "Your name " span.muted { "(recorded with your actions)" } } br;
                            input id="name" name="name" type="text" maxlength="64";
                        }
                        button type="submit" id="login" { "Log in" }
                    }
                    p.muted { "The token is LEADFLOW_ADMIN_TOKEN, or the one in <data dir>/admin-token." }
                }
            }
        }
    }
}
