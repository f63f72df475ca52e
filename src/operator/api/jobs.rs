//! `/v1/jobs…`: list, show, retry, cancel, retry every failed job.

use poem::web::{Data, Path, Query};
use poem::{Body, Request, Response, handler};
use serde::Deserialize;
use sqlx::PgPool;

use super::{actor, answer, error, given, invalid, ok, optional_json, page};
use crate::operator::error::OperatorError;
use crate::operator::jobs::{self, JobFilter};
use crate::operator::{self as op, queues};
use crate::reply::ApiError;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    queue: Option<String>,
    state: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[handler]
pub async fn list(Query(q): Query<ListQuery>, pool: Data<&PgPool>) -> Response {
    let filter = || -> Result<JobFilter, OperatorError> {
        Ok(JobFilter {
            queue: given(&q.queue)
                .map(queues::parse)
                .transpose()
                .map_err(invalid)?,
            state: given(&q.state).map(str::parse).transpose()?,
        })
    };
    let filter = match filter() {
        Ok(f) => f,
        Err(e) => return error(e),
    };
    match jobs::list(&pool, &filter, &page(q.limit, q.cursor)).await {
        Ok(page) => ok(&page),
        Err(e) => error(e),
    }
}

#[handler]
pub async fn show(Path(id): Path<String>, pool: Data<&PgPool>) -> Response {
    match jobs::show(&pool, &id).await {
        Ok(Some(job)) => ok(&job),
        Ok(None) => error(OperatorError::NotFound(format!("No job {id:?}"))),
        Err(e) => error(e),
    }
}

#[handler]
pub async fn retry(req: &Request, Path(id): Path<String>, pool: Data<&PgPool>) -> Response {
    answer(op::retry(&pool, &id, &actor(req)).await)
}

#[handler]
pub async fn cancel(req: &Request, Path(id): Path<String>, pool: Data<&PgPool>) -> Response {
    answer(op::cancel(&pool, &id, &actor(req)).await)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFailed {
    queue: Option<String>,
    limit: Option<u32>,
}

#[handler]
pub async fn retry_failed(req: &Request, body: Body, pool: Data<&PgPool>) -> Response {
    let args: RetryFailed = match optional_json(body).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let queue = match given(&args.queue)
        .map(queues::parse)
        .transpose()
        .map_err(invalid)
    {
        Ok(q) => q,
        Err(e) => return error(e),
    };
    let limit = args.limit.unwrap_or(op::BULK_MAX);
    if limit == 0 || limit > op::BULK_MAX {
        let msg = format!("limit must be 1 to {}", op::BULK_MAX);
        return poem::IntoResponse::into_response(ApiError::bad_request(msg));
    }
    answer(op::retry_failed(&pool, queue, limit, &actor(req), |_, _| {}).await)
}
