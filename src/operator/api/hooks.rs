//! `/v1/hooks…`: list, create, rotate the token (with a grace period), disable, enable.

use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem::web::{Data, Path, Query};
use poem::{Body, Response, handler};
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;

use super::{answer, error, ok, optional_json, page, success};
use crate::engine::Engine;
use crate::hooks;
use crate::operator::error::OperatorError;
use crate::operator::hooks as hook_view;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

#[handler]
pub async fn list(Query(q): Query<ListQuery>, pool: Data<&PgPool>) -> Response {
    match hook_view::list(&pool, &page(q.limit, q.cursor)).await {
        Ok(page) => ok(&page),
        Err(e) => error(e),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    name: String,
    workflow: Option<String>,
    auto_callback: Option<bool>,
}

#[handler]
pub async fn create(body: Body, pool: Data<&PgPool>, engine: Data<&Arc<Engine>>) -> Response {
    let args: CreateArgs = match optional_json(body).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let workflow = args.workflow.as_deref().unwrap_or("default");
    if engine.workflows.get(workflow).is_none() {
        let known: Vec<&str> = engine.workflows.names().collect();
        return error(OperatorError::Invalid(format!(
            "workflow: no workflow {workflow:?} (known: {})",
            known.join(", ")
        )));
    }
    let created = hooks::create(
        &pool,
        args.name.trim(),
        workflow,
        args.auto_callback.unwrap_or(true),
        &engine.callbacks.public_url,
    )
    .await;
    match created {
        Ok(hook) => success(StatusCode::CREATED, &hook),
        Err(e) => error(e.into()),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateArgs {
    grace_seconds: Option<u64>,
}

#[handler]
pub async fn rotate(Path(name): Path<String>, body: Body, pool: Data<&PgPool>) -> Response {
    let args: RotateArgs = match optional_json(body).await {
        Ok(a) => a,
        Err(resp) => return resp,
    };
    let grace = match hook_view::grace(args.grace_seconds.map(Duration::from_secs)) {
        Ok(g) => g,
        Err(e) => return error(e),
    };
    answer(
        hooks::rotate(&pool, &name, grace)
            .await
            .map_err(OperatorError::from),
    )
}

#[handler]
pub async fn disable(Path(name): Path<String>, pool: Data<&PgPool>) -> Response {
    set_active(&pool, &name, false).await
}

#[handler]
pub async fn enable(Path(name): Path<String>, pool: Data<&PgPool>) -> Response {
    set_active(&pool, &name, true).await
}

async fn set_active(pool: &PgPool, name: &str, active: bool) -> Response {
    answer(
        hooks::set_active(pool, name, active)
            .await
            .map(|()| json!({ "name": name, "active": active }))
            .map_err(OperatorError::from),
    )
}
