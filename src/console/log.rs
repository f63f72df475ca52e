//! The webhook log: every intake request, its outcome and reason, filterable by hook and
//! outcome.

use maud::html;
use poem::http::StatusCode;
use poem::web::{Data, Query};
use poem::{Response, handler};
use serde::Deserialize;
use sqlx::PgPool;

use super::layout::{self, at, opt};
use super::session::Session;
use crate::operator::OperatorError;
use crate::operator::page::PageRequest;
use crate::operator::webhook_log::{self, LogFilter, OUTCOMES};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    hook: Option<String>,
    outcome: Option<String>,
    cursor: Option<String>,
}

#[handler]
pub async fn list(
    Query(q): Query<ListQuery>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    let hook = q.hook.clone().filter(|h| !h.is_empty());
    let outcome = q.outcome.clone().filter(|o| !o.is_empty());
    let filter = LogFilter {
        hook: hook.clone(),
        outcome: outcome.clone(),
        after: None,
    };
    let page = PageRequest {
        limit: Some(50),
        cursor: q.cursor.clone(),
    };
    let page = match webhook_log::list(&pool, &filter, &page).await {
        Ok(p) => p,
        Err(OperatorError::Db(e)) => return layout::db_error(&e),
        Err(e) => {
            return layout::error_page(StatusCode::BAD_REQUEST, "Bad request", &e.to_string());
        }
    };
    let hook_text = hook.unwrap_or_default();
    let chosen = outcome.unwrap_or_default();
    let body = html! {
        form method="get" action="/console/log" {
            input name="hook" value=(hook_text) placeholder="hook name";
            " "
            select name="outcome" {
                option value="" { "any outcome" }
                @for o in OUTCOMES { option value=(o) selected[chosen == o] { (o) } }
            }
            " " button type="submit" { "Filter" }
        }
        table #log {
            thead { tr { th { "#" } th { "Received" } th { "Hook" } th { "Status" } th { "Outcome" } th { "Lead" } th { "Reason" } } }
            tbody { @for e in &page.items { tr {
                td { (e.id) }
                td { (at(&e.received_at)) }
                td { (opt(&e.hook)) }
                td { (e.status_code) }
                td { (layout::status(&e.outcome)) }
                td.mono { @if let Some(l) = e.lead_id { a href=(format!("/console/leads/{l}")) { (l) } } }
                td { (opt(&e.reason)) }
            } } }
        }
        @if let Some(c) = &page.next_cursor {
            p { a href=(format!("/console/log?hook={}&outcome={}&cursor={c}", layout::enc(&hook_text), layout::enc(&chosen))) { "Older →" } }
        }
    };
    layout::page("Webhook log", &session, Some(10), body)
}
