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

use crate::intake::{self, Intake};
use crate::operator::api::{self as operator_api, AdminToken};
use crate::reply::{self, ApiError};
use crate::steps::Engine;
use crate::steps::callback::webhook;

/// The OpenAPI 3.1 document, written by hand next to the routes it describes (a test checks
/// that the two agree), with the names of steps and queues filled in from the graph.
pub fn openapi_document() -> &'static str {
    static DOCUMENT: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| with_graph_names(include_str!("openapi.json")));
    &DOCUMENT
}

/// `document` with every step enum set to the graph's steps, and every `queue` parameter
/// limited to the worker queues' names (a step's, or its queue's full name).
fn with_graph_names(document: &str) -> String {
    use crate::graph::{Step, WORKER_STEPS};
    use serde_json::{Value, json};
    let Ok(mut doc) = serde_json::from_str::<Value>(document) else {
        return document.to_owned();
    };
    let steps = json!(Step::ALL.map(|s| s.as_str()));
    let queues: Vec<&str> = WORKER_STEPS
        .iter()
        .flat_map(|s| [s.as_str(), s.queue()])
        .collect();
    let schemas = &mut doc["components"]["schemas"];
    schemas["LeadView"]["properties"]["steps"]["items"]["properties"]["name"]["enum"] =
        steps.clone();
    schemas["ReplayRequest"]["properties"]["from"]["enum"] = steps;
    if let Some(paths) = doc["paths"].as_object_mut() {
        let operations = paths.values_mut().filter_map(Value::as_object_mut);
        for operation in operations.flat_map(|ops| ops.values_mut()) {
            let params = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut);
            for param in params.into_iter().flatten() {
                if param["name"] == "queue" {
                    param["schema"]["enum"] = json!(queues);
                }
            }
        }
    }
    doc.to_string()
}

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

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::graph::{Step, WORKER_STEPS};

    #[test]
    fn the_openapi_document_names_the_graphs_steps_and_queues() {
        let doc: Value = serde_json::from_str(openapi_document()).expect("JSON");
        let steps: Vec<&str> = Step::ALL.iter().map(|s| s.as_str()).collect();
        let schemas = &doc["components"]["schemas"];
        let name = &schemas["LeadView"]["properties"]["steps"]["items"]["properties"]["name"];
        assert_eq!(name["enum"], serde_json::json!(steps));
        assert_eq!(
            schemas["ReplayRequest"]["properties"]["from"]["enum"],
            serde_json::json!(steps)
        );
        let mut queue_params = 0;
        for item in doc["paths"].as_object().expect("paths").values() {
            for operation in item.as_object().expect("path item").values() {
                let Some(params) = operation.get("parameters").and_then(Value::as_array) else {
                    continue;
                };
                for param in params.iter().filter(|p| p["name"] == "queue") {
                    queue_params += 1;
                    let allowed = param["schema"]["enum"].as_array().expect("enum");
                    for step in WORKER_STEPS {
                        assert!(allowed.contains(&Value::from(step.as_str())));
                        assert!(allowed.contains(&Value::from(step.queue())));
                    }
                    assert_eq!(allowed.len(), 2 * WORKER_STEPS.len());
                }
                assert!(operation.get("parameters").is_none_or(Value::is_array));
            }
        }
        assert_eq!(queue_params, 3, "GET /v1/jobs, pause and resume");
    }
}
