//! The browser console at `/console`: server-rendered HTML (maud), usable without
//! JavaScript, with a light meta-refresh on pages that change by themselves. Like the API and
//! the CLI, it is a thin view over [`crate::operator`]: every query and action comes from
//! there. Log-in, sessions and CSRF are [`session`]'s.

mod hooks;
mod jobs;
mod layout;
mod leads;
mod log;
mod markup;
mod overview;
mod session;

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Response, Route, get, post};
use sqlx::PgPool;

use crate::operator::OperatorError;
use crate::operator::api::AdminToken;
use session::Session;

pub fn routes(admin: Arc<AdminToken>) -> impl Endpoint<Output = Response> {
    let pages = Route::new()
        .at("/", get(overview::page))
        .at("/logout", post(session::logout))
        .at("/leads", get(leads::list))
        .at("/leads/:id", get(leads::show))
        .at("/leads/:id/reveal", post(leads::reveal))
        .at("/leads/:id/replay", post(leads::replay))
        .at("/jobs", get(jobs::list))
        .at("/jobs/retry-failed", post(jobs::retry_failed))
        .at("/jobs/:id/retry", post(jobs::retry))
        .at("/jobs/:id/cancel", post(jobs::cancel))
        .at("/queues/:queue/pause", post(jobs::pause))
        .at("/queues/:queue/resume", post(jobs::resume))
        .at("/log", get(log::list))
        .at("/hooks", get(hooks::list).post(hooks::create))
        .at("/hooks/:name/rotate", post(hooks::rotate))
        .at("/hooks/:name/disable", post(hooks::disable))
        .at("/hooks/:name/enable", post(hooks::enable))
        .around(session::guard);
    Route::new()
        .at("/login", get(session::login_form).post(session::login))
        .nest("/", pages)
        .data(admin)
}

/// Where an action sends the browser back to: a console path given by the form, or `default`.
fn back(requested: Option<&str>, default: &str) -> String {
    match requested {
        Some(p) if p.starts_with("/console") && !p.contains("//") && !p.contains('\\') => {
            p.to_owned()
        }
        _ => default.to_owned(),
    }
}

/// After an action: its message (or why it was refused) as the next page's notice, and a
/// redirect there, so that a reload never repeats the POST.
async fn done<T>(
    session: &Session,
    pool: &PgPool,
    result: Result<T, OperatorError>,
    message: impl FnOnce(&T) -> String,
    to: &str,
) -> Response {
    let note = match &result {
        Ok(value) => message(value),
        Err(OperatorError::Db(e)) => return layout::db_error(e),
        Err(e) => format!("Not done: {e}"),
    };
    session.flash(pool, &note).await;
    layout::redirect(to)
}

#[cfg(test)]
mod tests {
    use super::back;

    #[test]
    fn actions_only_send_the_browser_back_into_the_console() {
        assert_eq!(
            back(Some("/console/jobs?state=failed"), "/console"),
            "/console/jobs?state=failed"
        );
        for evil in [
            "https://evil.example",
            "//evil.example",
            "/console//evil",
            "/other",
            "/console\\x",
        ] {
            assert_eq!(back(Some(evil), "/console"), "/console", "{evil}");
        }
        assert_eq!(back(None, "/console/leads"), "/console/leads");
    }
}
