//! `/v1/queues…`: counts per state with the oldest waiting age; pause and resume.

use poem::web::{Data, Path};
use poem::{Request, Response, handler};
use serde_json::json;
use sqlx::PgPool;

use super::{actor, answer, error, ok};
use crate::operator::queues;

#[handler]
pub async fn overview(pool: Data<&PgPool>) -> Response {
    match queues::overview(&pool).await {
        Ok(all) => ok(&json!({ "queues": all })),
        Err(e) => error(e),
    }
}

#[handler]
pub async fn pause(req: &Request, Path(queue): Path<String>, pool: Data<&PgPool>) -> Response {
    match queues::parse(&queue) {
        Ok(step) => answer(queues::pause(&pool, step, &actor(req)).await),
        Err(e) => error(e),
    }
}

#[handler]
pub async fn resume(req: &Request, Path(queue): Path<String>, pool: Data<&PgPool>) -> Response {
    match queues::parse(&queue) {
        Ok(step) => answer(queues::resume(&pool, step, &actor(req)).await),
        Err(e) => error(e),
    }
}
