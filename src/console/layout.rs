//! The console's page shell for a logged-in operator: navigation, the one-time notice, and
//! forms that carry the session's CSRF token. The pieces that need no session (times,
//! redirects, error pages, the log-in form) are in `markup.rs`, re-exported here for the pages.

use maud::{DOCTYPE, Markup, html};

use poem::web::Html;
use poem::{IntoResponse, Response};

use super::markup::STYLE;
pub use super::markup::{at, db_error, enc, error_page, opt, redirect, status};
use super::session::Session;

/// A full page. `refresh` reloads it every so many seconds (a light, script-free refresh).
pub fn page(title: &str, session: &Session, refresh: Option<u32>, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(s) = refresh { meta http-equiv="refresh" content=(s); }
                title { (title) " · leadflow" }
                style { (STYLE) }
            }
            body {
                header {
                    b { "leadflow" }
                    a href="/console" { "Overview" }
                    a href="/console/leads" { "Leads" }
                    a href="/console/jobs?state=failed" { "Failed jobs" }
                    a href="/console/log" { "Webhook log" }
                    a href="/console/hooks" { "Hooks" }
                    form.inline method="post" action="/console/logout" {
                        (csrf(session))
                        span.muted { (session.actor.as_str()) " " }
                        button type="submit" { "Log out" }
                    }
                }
                main {
                    @if let Some(flash) = &session.flash { p.notice role="status" { (flash) } }
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

pub fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// A one-button form that POSTs to `action`.
pub fn button(session: &Session, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            (csrf(session))
            button type="submit" { (label) }
        }
    }
}
