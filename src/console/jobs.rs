//! Jobs by state (failed ones by default) with Retry and Cancel buttons, a bulk retry, and
//! the queue pause and resume actions.

use maud::html;
use poem::web::{Data, Form, Path, Query};
use poem::{Response, handler};
use serde::Deserialize;
use sqlx::PgPool;

use super::layout::{self, at, button, csrf, opt};
use super::session::Session;
use super::{back, done};
use crate::operator::jobs::{self, JobFilter};
use crate::operator::page::PageRequest;
use crate::operator::state::JobState;
use crate::operator::{self as op, BULK_MAX, queues};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    queue: Option<String>,
    state: Option<String>,
    cursor: Option<String>,
}

#[handler]
pub async fn list(
    Query(q): Query<ListQuery>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    let queue = q
        .queue
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| queues::parse(s).ok());
    let state = q
        .state
        .as_deref()
        .and_then(|s| s.parse::<JobState>().ok())
        .unwrap_or(JobState::Failed);
    let filter = JobFilter {
        queue,
        state: Some(state),
    };
    let page = PageRequest {
        limit: Some(50),
        cursor: q.cursor.clone(),
    };
    let page = match jobs::list(&pool, &filter, &page).await {
        Ok(p) => p,
        Err(op::OperatorError::Db(e)) => return layout::db_error(&e),
        Err(e) => {
            return layout::error_page(
                poem::http::StatusCode::BAD_REQUEST,
                "Bad request",
                &e.to_string(),
            );
        }
    };
    let queue_param = queue.map(|s| s.as_str()).unwrap_or("");
    let here = format!("/console/jobs?queue={queue_param}&state={state}");
    let actionable = matches!(state, JobState::Failed | JobState::Retrying);
    let body = html! {
        p {
            "State: "
            @for s in JobState::ALL {
                @if s == state { strong { (s.as_str()) } } @else {
                    a href=(format!("/console/jobs?queue={queue_param}&state={}", s.as_str())) { (s.as_str()) }
                }
                " "
            }
        }
        @if state == JobState::Failed && !page.items.is_empty() {
            form method="post" action="/console/jobs/retry-failed" {
                (csrf(&session))
                input type="hidden" name="queue" value=(queue_param);
                input type="hidden" name="back" value=(here);
                button type="submit" { "Retry all failed" @if let Some(q) = queue { " " (q.as_str()) } " jobs (up to " (BULK_MAX) ")" }
            }
        }
        table #jobs {
            thead { tr { th { "Job" } th { "Queue" } th { "State" } th { "Attempts" } th { "Run at" } th { "Lead" } th { "Last error" } th { "" } } }
            tbody { @for j in &page.items { tr {
                td.mono { (j.id) }
                td { (j.step) }
                td { (layout::status(&j.state)) }
                td { (j.attempts) "/" (j.max_attempts) }
                td { (at(&j.run_at)) }
                td.mono { @if let Some(l) = j.lead_id { a href=(format!("/console/leads/{l}")) { (l) } } @else { "–" } }
                td { (opt(&j.last_error)) }
                td { @if actionable {
                    (button(&session, &format!("/console/jobs/{}/retry?back={}", j.id, layout::enc(&here)), "Retry"))
                    " "
                    (button(&session, &format!("/console/jobs/{}/cancel?back={}", j.id, layout::enc(&here)), "Cancel"))
                } }
            } } }
        }
        @if page.items.is_empty() { p.muted { "No " (state.as_str()) " jobs." } }
        @if let Some(c) = &page.next_cursor { p { a href=(format!("{here}&cursor={c}")) { "Older →" } } }
    };
    layout::page("Jobs", &session, Some(10), body)
}

#[derive(Debug, Deserialize)]
pub struct Back {
    back: Option<String>,
}

#[handler]
pub async fn retry(
    Path(id): Path<String>,
    Query(b): Query<Back>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    let to = back(b.back.as_deref(), "/console/jobs?state=failed");
    done(
        &session,
        &pool,
        op::retry(&pool, &id, &session.actor).await,
        |r| r.message.clone(),
        &to,
    )
    .await
}

#[handler]
pub async fn cancel(
    Path(id): Path<String>,
    Query(b): Query<Back>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    let to = back(b.back.as_deref(), "/console/jobs?state=failed");
    done(
        &session,
        &pool,
        op::cancel(&pool, &id, &session.actor).await,
        |r| r.message.clone(),
        &to,
    )
    .await
}

#[derive(Debug, Deserialize)]
pub struct RetryFailedForm {
    queue: Option<String>,
    back: Option<String>,
}

#[handler]
pub async fn retry_failed(
    Form(f): Form<RetryFailedForm>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    let to = back(f.back.as_deref(), "/console/jobs?state=failed");
    let queue = match f
        .queue
        .as_deref()
        .filter(|q| !q.is_empty())
        .map(queues::parse)
        .transpose()
    {
        Ok(q) => q,
        Err(e) => return done(&session, &pool, Err::<(), _>(e), |_| String::new(), &to).await,
    };
    let result = op::retry_failed(&pool, queue, BULK_MAX, &session.actor, |_, _| {}).await;
    let message = |s: &op::BulkSummary| {
        format!(
            "Retried {} failed jobs ({} unchanged, {} refused){}",
            s.retried,
            s.unchanged,
            s.errors.len(),
            if s.more { "; more remain" } else { "" }
        )
    };
    done(&session, &pool, result, message, &to).await
}

#[handler]
pub async fn pause(
    Path(queue): Path<String>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    set_paused(&queue, &session, &pool, true).await
}

#[handler]
pub async fn resume(
    Path(queue): Path<String>,
    session: Data<&Session>,
    pool: Data<&PgPool>,
) -> Response {
    set_paused(&queue, &session, &pool, false).await
}

async fn set_paused(queue: &str, session: &Session, pool: &PgPool, paused: bool) -> Response {
    let result = match queues::parse(queue) {
        Ok(step) if paused => queues::pause(pool, step, &session.actor).await,
        Ok(step) => queues::resume(pool, step, &session.actor).await,
        Err(e) => Err(e),
    };
    let what = if paused { "paused" } else { "resumed" };
    done(
        session,
        pool,
        result,
        |c| format!("{} {what}", c.queue),
        "/console",
    )
    .await
}
