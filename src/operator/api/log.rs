//! `/v1/webhook-log`: every intake request, its outcome and reason.

use poem::web::{Data, Query};
use poem::{Response, handler};
use serde::Deserialize;
use sqlx::PgPool;

use super::{error, given, ok, page};
use crate::operator::webhook_log::{self, LogFilter};

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    hook: Option<String>,
    outcome: Option<String>,
    after: Option<i64>,
    limit: Option<u32>,
    cursor: Option<String>,
}

#[handler]
pub async fn list(Query(q): Query<ListQuery>, pool: Data<&PgPool>) -> Response {
    let filter = LogFilter {
        hook: given(&q.hook).map(str::to_owned),
        outcome: given(&q.outcome).map(str::to_owned),
        after: q.after,
    };
    match webhook_log::list(&pool, &filter, &page(q.limit, q.cursor)).await {
        Ok(page) => ok(&page),
        Err(e) => error(e),
    }
}
