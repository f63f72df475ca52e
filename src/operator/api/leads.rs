//! `/v1/leads…`: list (by status, time, phone), show (with an optional reveal), replay.

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Body, Request, Response, handler};
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::{actor, error, given, ok, optional_json, page, success};
use crate::engine::Engine;
use crate::operator::error::OperatorError;
use crate::operator::lead_list::{self, LeadFilter};
use crate::operator::{self as op, leads as lead_view};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    status: Option<String>,
    since: Option<String>,
    phone: Option<String>,
    id: Option<String>,
    reveal: Option<bool>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn filter(q: &ListQuery) -> Result<LeadFilter, OperatorError> {
    let bad = |e: crate::lead::UnknownName| OperatorError::Invalid(e.to_string());
    Ok(LeadFilter {
        status: given(&q.status).map(str::parse).transpose().map_err(bad)?,
        since: given(&q.since)
            .map(|s| lead_list::parse_since(s, jiff::Timestamp::now()))
            .transpose()?,
        phone: given(&q.phone).map(lead_list::parse_phone).transpose()?,
        id: given(&q.id)
            .map(|s| {
                s.parse::<Uuid>()
                    .map_err(|_| OperatorError::Invalid(format!("id: {s:?} is not a lead id")))
            })
            .transpose()?,
    })
}

#[handler]
pub async fn list(req: &Request, Query(q): Query<ListQuery>, pool: Data<&PgPool>) -> Response {
    let filter = match filter(&q) {
        Ok(f) => f,
        Err(e) => return error(e),
    };
    let who = q.reveal.unwrap_or(false).then(|| actor(req));
    match lead_list::list(
        &pool,
        &filter,
        &page(q.limit, q.cursor.clone()),
        who.as_ref(),
    )
    .await
    {
        Ok(page) => ok(&page),
        Err(e) => error(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ShowQuery {
    reveal: Option<bool>,
}

#[handler]
pub async fn show(
    req: &Request,
    Path(id): Path<String>,
    Query(q): Query<ShowQuery>,
    pool: Data<&PgPool>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return error(OperatorError::NotFound(format!("No lead {id:?}")));
    };
    let who = q.reveal.unwrap_or(false).then(|| actor(req));
    match lead_view::show(&pool, id, who.as_ref()).await {
        Ok(Some(view)) => ok(&view),
        Ok(None) => error(OperatorError::NotFound(format!("No lead {id}"))),
        Err(e) => error(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayArgs {
    from: Option<String>,
}

#[handler]
pub async fn replay(
    req: &Request,
    Path(id): Path<String>,
    body: Body,
    pool: Data<&PgPool>,
    engine: Data<&std::sync::Arc<Engine>>,
) -> Response {
    let Ok(id) = id.parse::<Uuid>() else {
        return error(OperatorError::NotFound(format!("No lead {id:?}")));
    };
    let args: ReplayArgs = match optional_json(body).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let from = match given(&args.from).map(str::parse).transpose() {
        Ok(f) => f,
        Err(e) => return error(OperatorError::Invalid(format!("from: {e}"))),
    };
    match op::replay(&pool, &engine.workflows, id, from, &actor(req)).await {
        Ok(replayed) => success(StatusCode::ACCEPTED, &replayed),
        Err(e) => error(e),
    }
}
