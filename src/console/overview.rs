//! The overview: queues × states with counts, the oldest waiting age and pause buttons;
//! leads per hour over the last day; runs that failed in the last hour.

use maud::html;
use poem::web::Data;
use poem::{Response, handler};
use sqlx::PgPool;

use super::layout::{self, at, button};
use super::session::Session;
use crate::operator::state::JobState;
use crate::operator::{OperatorError, activity, queues};

#[handler]
pub async fn page(session: Data<&Session>, pool: Data<&PgPool>) -> Response {
    let data = async {
        let queues = queues::overview(&pool).await?;
        let hours = activity::leads_per_hour(&pool, 24).await?;
        let failed = activity::failed_last_hour(&pool, 20).await?;
        Ok::<_, OperatorError>((queues, hours, failed))
    };
    let (queues, hours, (failed_count, failed)) = match data.await {
        Ok(d) => d,
        Err(OperatorError::Db(e)) => return layout::db_error(&e),
        Err(e) => {
            return layout::error_page(
                poem::http::StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error",
                &e.to_string(),
            );
        }
    };
    let max = hours.iter().map(|h| h.leads).max().unwrap_or(0);
    let peak = max.max(1);
    let total: i64 = hours.iter().map(|h| h.leads).sum();
    let body = html! {
        h2 { "Queues" }
        table #queues {
            thead { tr {
                th { "Queue" }
                @for s in JobState::ALL { th { (s.as_str()) } }
                th { "Oldest waiting" }
                th { "" }
            } }
            tbody { @for q in &queues { tr {
                td { (q.queue) @if q.paused { " " strong { "(paused)" } } }
                @for s in JobState::ALL {
                    td { a href=(format!("/console/jobs?queue={}&state={}", q.step, s.as_str())) {
                        (q.counts.get(s.as_str()).copied().unwrap_or(0))
                    } }
                }
                td { (q.oldest_wait_s.map(|s| format!("{s:.0} s")).unwrap_or_else(|| "–".into())) }
                td {
                    @if q.paused {
                        (button(&session, &format!("/console/queues/{}/resume", q.step), "Resume"))
                    } @else {
                        (button(&session, &format!("/console/queues/{}/pause", q.step), "Pause"))
                    }
                }
            } } }
        }
        h2 { "Failed runs in the last hour: " span #failed-last-hour { (failed_count) } }
        @if !failed.is_empty() {
            table { thead { tr { th { "Failed at" } th { "Lead" } th { "Reason" } } }
                tbody { @for f in &failed { tr {
                    td { (at(&f.failed_at)) }
                    td.mono { a href=(format!("/console/leads/{}", f.lead_id)) { (f.lead_id) } }
                    td { (f.reason.as_deref().unwrap_or("–")) }
                } } }
            }
        }
        h2 { "Leads per hour (UTC, last 24 h): " span #leads-24h { (total) } }
        div.chart #leads-per-hour role="img" aria-label=(format!("{total} leads in the last 24 hours, at most {max} in an hour")) {
            @for h in &hours {
                div title=(format!("{} UTC: {} leads", h.hour.0.strftime("%m-%d %H:00"), h.leads))
                    style=(format!("height:{}%", (h.leads * 100 / peak).max(1))) {}
            }
        }
        p.muted { (hours.first().map(|h| h.hour.0.strftime("%m-%d %H:00").to_string()).unwrap_or_default())
            " … now; the tallest bar is " (max) " leads" }
    };
    layout::page("Overview", &session, Some(10), body)
}
