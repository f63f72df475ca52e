//! Hooks: the list, with Disable/Enable and Rotate buttons, and a form to create one. A new
//! token is shown once, on the page that answers the POST (it is never stored in clear, not
//! even as a notice).

use std::sync::Arc;
use std::time::Duration;

use maud::html;
use poem::http::StatusCode;
use poem::web::{Data, Form, Path, Query};
use poem::{Response, handler};
use serde::Deserialize;
use sqlx::PgPool;

use super::done;
use super::layout::{self, at, button, csrf};
use super::session::Session;
use crate::engine::Engine;
use crate::hooks;
use crate::operator::OperatorError;
use crate::operator::hooks::{self as hook_view, grace};
use crate::operator::page::PageRequest;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
}

#[handler]
pub async fn list(
    Query(q): Query<ListQuery>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
    engine: Data<&Arc<Engine>>,
) -> Response {
    let page = PageRequest {
        limit: Some(100),
        cursor: q.cursor,
    };
    let page = match hook_view::list(&pool, &page).await {
        Ok(p) => p,
        Err(OperatorError::Db(e)) => return layout::db_error(&e),
        Err(e) => {
            return layout::error_page(StatusCode::BAD_REQUEST, "Bad request", &e.to_string());
        }
    };
    let body = html! {
        table #hooks {
            thead { tr { th { "Hook" } th { "Workflow" } th { "Auto-callback" } th { "Active" } th { "Old token valid until" } th { "" } } }
            tbody { @for h in &page.items { tr {
                td { (h.name) }
                td { (h.workflow) }
                td { @if h.auto_callback { "on" } @else { "off" } }
                td { @if h.active { "yes" } @else { "no" } }
                td { (h.previous_token_expires_at.as_ref().map(at).unwrap_or_else(|| "–".into())) }
                td {
                    @if h.active { (button(&session, &format!("/console/hooks/{}/disable", h.name), "Disable")) }
                    @else { (button(&session, &format!("/console/hooks/{}/enable", h.name), "Enable")) }
                    " "
                    form.inline method="post" action=(format!("/console/hooks/{}/rotate", h.name)) {
                        (csrf(&session))
                        select name="grace" aria-label="grace period" {
                            option value="86400" { "old token works 24 h" }
                            option value="3600" { "old token works 1 h" }
                            option value="604800" { "old token works 7 d" }
                            option value="0" { "revoke old token now" }
                        }
                        " " button type="submit" { "Rotate token" }
                    }
                }
            } } }
        }
        @if let Some(c) = &page.next_cursor { p { a href=(format!("/console/hooks?cursor={}", layout::enc(c))) { "More →" } } }
        h2 { "New hook" }
        form method="post" action="/console/hooks" {
            (csrf(&session))
            input name="name" placeholder="website-form" required pattern="[A-Za-z0-9._-]{1,64}";
            " "
            select name="workflow" { @for w in engine.workflows.names() { option value=(w) { (w) } } }
            " "
            label { input type="checkbox" name="auto_callback" value="on" checked; " auto-callback" }
            " " button type="submit" { "Create" }
        }
    };
    layout::page("Hooks", &session, None, body)
}

/// The page that shows a new token, once.
fn token_page(session: &Session, title: &str, hook: &str, token: &str, note: &str) -> Response {
    let body = html! {
        p { "Hook " strong { (hook) } ": " (note) }
        p { "Token (shown only now; store it in the sender's settings):" }
        pre #token { (token) }
        p { a href="/console/hooks" { "Back to hooks" } }
    };
    layout::page(title, session, None, body)
}

#[derive(Debug, Deserialize)]
pub struct CreateForm {
    name: String,
    workflow: String,
    auto_callback: Option<String>,
}

#[handler]
pub async fn create(
    Form(f): Form<CreateForm>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
    engine: Data<&Arc<Engine>>,
) -> Response {
    if engine.workflows.get(&f.workflow).is_none() {
        let e = OperatorError::Invalid(format!("no workflow {:?}", f.workflow));
        return done(
            &session,
            &pool,
            Err::<(), _>(e),
            |_| String::new(),
            "/console/hooks",
        )
        .await;
    }
    let auto = f.auto_callback.is_some();
    match hooks::create(
        &pool,
        f.name.trim(),
        &f.workflow,
        auto,
        &engine.callbacks.public_url,
    )
    .await
    {
        Ok(h) => {
            tracing::info!(hook = %h.name, actor = %session.actor, "hook created from the console");
            token_page(
                &session,
                "Hook created",
                &h.name,
                &h.token,
                &format!("send leads to {}", h.url),
            )
        }
        Err(e) => {
            done(
                &session,
                &pool,
                Err::<(), _>(e.into()),
                |_| String::new(),
                "/console/hooks",
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RotateForm {
    grace: Option<u64>,
}

#[handler]
pub async fn rotate(
    Path(name): Path<String>,
    Form(f): Form<RotateForm>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    let rotated = match grace(f.grace.map(Duration::from_secs)) {
        Ok(g) => hooks::rotate(&pool, &name, g)
            .await
            .map_err(OperatorError::from),
        Err(e) => Err(e),
    };
    match rotated {
        Ok(r) => {
            tracing::info!(hook = %r.name, actor = %session.actor, "hook token rotated from the console");
            let note = match &r.previous_token_expires_at {
                Some(until) => format!("the previous token keeps working until {}", at(until)),
                None => "the previous token no longer works".to_owned(),
            };
            token_page(&session, "Token rotated", &r.name, &r.token, &note)
        }
        Err(e) => {
            done(
                &session,
                &pool,
                Err::<(), _>(e),
                |_| String::new(),
                "/console/hooks",
            )
            .await
        }
    }
}

#[handler]
pub async fn disable(
    Path(name): Path<String>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    set_active(&name, &session, &pool, false).await
}

#[handler]
pub async fn enable(
    Path(name): Path<String>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    set_active(&name, &session, &pool, true).await
}

async fn set_active(name: &str, session: &Session, pool: &PgPool, active: bool) -> Response {
    let result = hooks::set_active(pool, name, active)
        .await
        .map_err(OperatorError::from);
    let what = if active { "enabled" } else { "disabled" };
    done(
        session,
        pool,
        result,
        |()| format!("Hook {name} {what}"),
        "/console/hooks",
    )
    .await
}
