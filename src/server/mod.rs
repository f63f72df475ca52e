//! Assembles the poem application: intake, operator routes, health, readiness and the
//! OpenAPI document. Every answer, poem's own rejections included, is in the spec's shape.

use std::sync::Arc;
use std::time::Duration;

use poem::http::StatusCode;
use poem::middleware::Tracing;
use poem::web::Data;
use poem::{Endpoint, EndpointExt, IntoResponse, Response, Route, get, handler, post};
use serde_json::json;
use sqlx::PgPool;

use crate::engine::Engine;
use crate::engine::callback::webhook;
use crate::intake::{self, Intake};
use crate::operator::api::{self as operator_api, AdminToken};
use crate::reply::{self, ApiError};

mod document;
mod settings;

pub use document::openapi_document;
pub use settings::HttpSettings;

pub struct AppState {
    pub pool: PgPool,
    pub intake: Arc<Intake>,
    pub admin: Arc<AdminToken>,
    pub engine: Arc<Engine>,
}

pub fn app(state: AppState) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/v1/webhooks/inbound", post(intake::inbound))
        .at("/v1/telephony/twilio/status", post(webhook::status))
        .at(
            "/v1/telephony/twilio/twiml/:attempt_id",
            get(webhook::twiml).post(webhook::twiml),
        )
        .nest("/v1", operator_api::routes(state.admin.clone()))
        .nest("/console", crate::console::routes(state.admin.clone()))
        .at("/healthz", get(healthz))
        .at("/readyz", get(readyz))
        .at("/openapi.json", get(openapi))
        .at("/metrics", get(crate::metrics::endpoint))
        .data(state.pool)
        .data(state.intake)
        .data(state.engine)
        .around(|ep, req| async move {
            if has_nul(&req) {
                let err = ApiError::bad_request("NUL characters are not accepted in URLs");
                return Ok(err.into_response());
            }
            Ok(ep.call(req).await?.into_response())
        })
        .with(Tracing)
        .catch_all_error(|err: poem::Error| async move {
            let code = err.status();
            let message = code.canonical_reason().unwrap_or("Error");
            let details = match code {
                StatusCode::NOT_FOUND => "No such route".to_owned(),
                StatusCode::METHOD_NOT_ALLOWED => "Method not allowed on this route".to_owned(),
                _ => err.to_string(),
            };
            ApiError::new(code, message, details).into_response()
        })
}

/// A NUL in a path or query parameter could never match anything PostgreSQL stores (it
/// refuses NUL in text); answer 400 here rather than a database error deeper in.
fn has_nul(req: &poem::Request) -> bool {
    let uri = req.uri();
    let raw = [Some(uri.path()), uri.query()];
    raw.into_iter()
        .flatten()
        .any(|part| part.to_ascii_lowercase().contains("%00") || part.contains('\0'))
}

#[handler]
async fn healthz() -> Response {
    reply::json(StatusCode::OK, &json!({ "status": "ok" }))
}

/// Ready when the database answers within two seconds.
#[handler]
async fn readyz(pool: Data<&PgPool>) -> Response {
    let probe = sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(*pool);
    match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Ok(_)) => reply::json(StatusCode::OK, &json!({ "status": "ok", "database": "up" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness probe failed");
            ApiError::unavailable().into_response()
        }
        Err(_) => ApiError::unavailable().into_response(),
    }
}

#[handler]
async fn openapi() -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .content_type("application/json")
        .body(openapi_document())
}
