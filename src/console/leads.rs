//! Leads: a search by phone or id, and a lead's page — its timeline, steps with Retry and
//! Cancel buttons, call attempts, past runs, Reveal and Replay.

use maud::{Markup, html};
use poem::http::StatusCode;
use poem::web::{Data, Form, Path, Query};
use poem::{Response, handler};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::done;
use super::layout::{self, at, button, csrf, opt, status};
use super::session::Session;
use crate::engine::Engine;
use crate::graph::Step;
use crate::lead::RunStatus;
use crate::operator::lead_list::{self, LeadFilter};
use crate::operator::leads::{self as lead_view, LeadView};
use crate::operator::page::PageRequest;
use crate::operator::{self as op, OperatorError, REPLAYABLE};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    status: Option<String>,
    cursor: Option<String>,
}

/// The search box takes a lead id or a phone number in international form.
fn search(q: &ListQuery) -> Result<LeadFilter, OperatorError> {
    let mut filter = LeadFilter {
        status: q
            .status
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| s.parse().ok()),
        ..LeadFilter::default()
    };
    match q.q.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => {}
        Some(text) => match text.parse::<Uuid>() {
            Ok(id) => filter.id = Some(id),
            Err(_) => filter.phone = Some(lead_list::parse_phone(text)?),
        },
    }
    Ok(filter)
}

#[handler]
pub async fn list(
    Query(q): Query<ListQuery>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    let (filter, problem) = match search(&q) {
        Ok(f) => (f, None),
        Err(e) => (
            LeadFilter {
                id: Some(Uuid::nil()),
                ..LeadFilter::default()
            },
            Some(e.to_string()),
        ),
    };
    let page = PageRequest {
        limit: Some(50),
        cursor: q.cursor.clone(),
    };
    let page = match lead_list::list(&pool, &filter, &page, None).await {
        Ok(p) => p,
        Err(OperatorError::Db(e)) => return layout::db_error(&e),
        Err(e) => {
            return layout::error_page(StatusCode::BAD_REQUEST, "Bad request", &e.to_string());
        }
    };
    let text = q.q.clone().unwrap_or_default();
    let chosen = q.status.clone().unwrap_or_default();
    let body = html! {
        form method="get" action="/console/leads" {
            input name="q" type="search" value=(text) placeholder="+16502530000 or a lead id" size="40";
            " "
            select name="status" {
                option value="" { "any status" }
                @for s in RunStatus::ALL {
                    option value=(s.as_str()) selected[chosen == s.as_str()] { (s.as_str()) }
                }
            }
            " " button type="submit" { "Search" }
        }
        @if let Some(p) = problem { p.problem { (p) } }
        table #leads {
            thead { tr { th { "Received" } th { "Lead" } th { "Hook" } th { "Phone" } th { "Email" } th { "Status" } th { "Reason" } } }
            tbody { @for l in &page.items { tr {
                td { (at(&l.received_at)) }
                td.mono { a href=(format!("/console/leads/{}", l.id)) { (l.id) } }
                td { (l.hook) }
                td { (opt(&l.phone)) }
                td { (opt(&l.email)) }
                td { @if let Some(s) = &l.status { (status(s)) } }
                td { (opt(&l.reason)) }
            } } }
        }
        @if let Some(c) = &page.next_cursor {
            p { a href=(format!("/console/leads?q={}&status={}&cursor={c}", layout::enc(&text), layout::enc(&chosen))) { "Older →" } }
        }
    };
    layout::page("Leads", &session, None, body)
}

#[handler]
pub async fn show(
    Path(id): Path<String>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    render(&id, &session, &pool, false).await
}

#[handler]
pub async fn reveal(
    Path(id): Path<String>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    render(&id, &session, &pool, true).await
}

async fn render(id: &str, session: &Session, pool: &PgPool, revealed: bool) -> Response {
    let not_found = || layout::error_page(StatusCode::NOT_FOUND, "Not found", "No such lead.");
    let Ok(lead_id) = id.parse::<Uuid>() else {
        return not_found();
    };
    let view = match lead_view::show(pool, lead_id, revealed.then_some(&session.actor)).await {
        Ok(Some(v)) => v,
        Ok(None) => return not_found(),
        Err(e) => return layout::db_error(&e),
    };
    let active = view
        .run
        .as_ref()
        .and_then(|r| r.status.parse::<RunStatus>().ok())
        .is_some_and(|s| !s.is_terminal());
    // A revealed page is a POST's answer: it must not reload itself.
    let refresh = (active && !revealed).then_some(3);
    layout::page("Lead", session, refresh, lead_page(&view, session, active))
}

fn lead_page(v: &LeadView, session: &Session, active: bool) -> Markup {
    let l = &v.lead;
    let path = format!("/console/leads/{}", l.id);
    let replayable = v
        .run
        .as_ref()
        .and_then(|r| r.status.parse::<RunStatus>().ok())
        .is_some_and(|s| REPLAYABLE.contains(&s));
    let current_job = v.steps.iter().rev().find_map(|s| s.job_id.clone());
    html! {
        table #lead { tbody {
            tr { th { "Lead" } td.mono { (l.id) } }
            tr { th { "Received" } td { (at(&l.received_at)) " via " (l.hook) } }
            tr { th { "Name" } td { (opt(&l.name)) } }
            tr { th { "Phone" } td #phone { (opt(&l.phone)) } }
            tr { th { "Email" } td #email { (opt(&l.email)) } }
            tr { th { "Company" } td { (opt(&l.company)) } }
            @if let Some(run) = &v.run {
                tr { th { "Run" } td { span #run-status { (status(&run.status)) } @if let Some(r) = &run.reason { " — " (r) } } }
            }
        } }
        p {
            (button(session, &format!("{path}/reveal"), "Reveal phone and email"))
            @if active { @if let Some(job) = &current_job {
                " " (button(session, &format!("/console/jobs/{job}/cancel?back={path}"), "Cancel run"))
            } }
        }
        @if replayable {
            form method="post" action=(format!("{path}/replay")) {
                (csrf(session))
                "Replay from "
                select name="from" { @for s in Step::ALL { option value=(s.as_str()) { (s.as_str()) } } }
                " " button type="submit" { "Replay" }
            }
        }
        h2 { "Steps" }
        table #steps {
            thead { tr { th { "Step" } th { "Status" } th { "Attempts" } th { "Finished" } th { "Error" } th { "" } } }
            tbody { @for s in &v.steps { tr {
                td { (s.name) @if s.n > 1 { " #" (s.n) } }
                td { (status(&s.status)) }
                td { (s.attempts) }
                td { (s.finished_at.as_ref().map(at).unwrap_or_default()) }
                td { (opt(&s.error)) }
                td { @if let Some(job) = &s.job_id { @if s.status == "failed" || s.status == "retrying" {
                    (button(session, &format!("/console/jobs/{job}/retry?back={path}"), "Retry"))
                } } }
            } } }
        }
        @if !v.callback.attempts.is_empty() {
            h2 { "Call attempts" }
            table { thead { tr { th { "#" } th { "State" } th { "Outcome" } th { "Scheduled" } th { "Placed" } th { "Provider" } } }
                tbody { @for a in &v.callback.attempts { tr {
                    td { (a.n) } td { (a.state) } td { (opt(&a.outcome)) } td { (at(&a.scheduled_for)) }
                    td { (a.placed_at.as_ref().map(at).unwrap_or_default()) } td { (a.provider) }
                } } }
            }
        }
        @if v.runs.len() > 1 {
            h2 { "Runs" }
            table { thead { tr { th { "Run" } th { "Status" } th { "Started" } th { "Replays" } } }
                tbody { @for r in &v.runs { tr {
                    td.mono { (r.id) } td { (status(&r.status)) } td { (at(&r.created_at)) }
                    td.mono { (r.replay_of.map(|p| p.to_string()).unwrap_or_default()) }
                } } }
            }
        }
        h2 { "Timeline" }
        table #timeline { thead { tr { th { "At" } th { "Event" } th { "By" } th { "Detail" } } }
            tbody { @for e in &v.timeline { tr {
                td { (at(&e.at)) } td { (e.event) } td { (e.actor) } td.mono { (e.detail.to_string()) }
            } } }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ReplayForm {
    from: Option<String>,
}

#[handler]
pub async fn replay(
    Path(id): Path<String>,
    Form(f): Form<ReplayForm>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
    engine: Data<&std::sync::Arc<Engine>>,
) -> Response {
    let to = format!("/console/leads/{id}");
    let result = async {
        let lead_id = id
            .parse::<Uuid>()
            .map_err(|_| OperatorError::NotFound(format!("No lead {id:?}")))?;
        let from = f
            .from
            .as_deref()
            .map(str::parse::<Step>)
            .transpose()
            .map_err(|e| OperatorError::Invalid(e.to_string()))?;
        op::replay(&pool, &engine.workflows, lead_id, from, &session.actor).await
    }
    .await;
    done(
        &session,
        &pool,
        result,
        |r| {
            format!(
                "Replaying from {} as run {} ({})",
                r.from, r.run_id, r.status
            )
        },
        &to,
    )
    .await
}
