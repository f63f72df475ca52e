//! The operator HTTP routes, behind the admin token. An intake token gets 401 here: the two
//! kinds of credentials never overlap. Each handler is a thin view over one operator query or
//! action; lists answer `{"items": […], "next_cursor": …}`, actions
//! `{"status": "success", …}`, and errors keep the spec's `{"status": "error", …}` shape.

mod hooks;
mod jobs;
mod leads;
mod log;
mod queues;

use std::sync::Arc;

use poem::http::StatusCode;
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, post};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::actor::Actor;
use super::error::OperatorError;
use super::page::PageRequest;
use crate::hooks::token_matches;
use crate::reply::{self, ApiError};

/// The admin credential, kept only as its hash.
pub struct AdminToken {
    hash: [u8; 32],
}

impl AdminToken {
    pub fn new(token: &str) -> AdminToken {
        AdminToken {
            hash: crate::hooks::token_hash(token),
        }
    }

    /// Names this admin token without revealing it, for what must end when it changes
    /// (console sessions).
    pub fn fingerprint(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"leadflow console session:");
        h.update(self.hash);
        h.finalize().into()
    }

    /// Whether `token` is the admin token (constant time).
    pub fn matches(&self, token: &str) -> bool {
        token_matches(token, &self.hash)
    }

    fn admits(&self, req: &Request) -> bool {
        req.headers()
            .get(poem::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .is_some_and(|(_, token)| self.matches(token.trim()))
    }
}

/// The operator routes, each requiring the admin token.
pub fn routes(admin: Arc<AdminToken>) -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/leads", get(leads::list))
        .at("/leads/:id", get(leads::show))
        .at("/leads/:id/replay", post(leads::replay))
        .at("/jobs", get(jobs::list))
        .at("/jobs/retry-failed", post(jobs::retry_failed))
        .at("/jobs/:id", get(jobs::show))
        .at("/jobs/:id/retry", post(jobs::retry))
        .at("/jobs/:id/cancel", post(jobs::cancel))
        .at("/queues", get(queues::overview))
        .at("/queues/:queue/pause", post(queues::pause))
        .at("/queues/:queue/resume", post(queues::resume))
        .at("/webhook-log", get(log::list))
        .at("/hooks", get(hooks::list).post(hooks::create))
        .at("/hooks/:name/rotate", post(hooks::rotate))
        .at("/hooks/:name/disable", post(hooks::disable))
        .at("/hooks/:name/enable", post(hooks::enable))
        .around(move |ep, req| {
            let admin = admin.clone();
            async move {
                if admin.admits(&req) {
                    Ok(ep.call(req).await?.into_response())
                } else {
                    Ok(ApiError::unauthorized("This route needs the admin token").into_response())
                }
            }
        })
}

/// Who is calling: `api`, or `api:<label>` with an `X-Leadflow-Actor: <label>` header.
fn actor(req: &Request) -> Actor {
    let label = req
        .headers()
        .get("x-leadflow-actor")
        .and_then(|v| v.to_str().ok());
    Actor::new("api", label)
}

/// A query parameter that was given a value (`?queue=` counts as not given).
fn given(param: &Option<String>) -> Option<&str> {
    param.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A filter naming something that does not exist is a bad request, not a missing resource.
fn invalid(e: OperatorError) -> OperatorError {
    match e {
        OperatorError::NotFound(m) => OperatorError::Invalid(m),
        other => other,
    }
}

fn page(limit: Option<u32>, cursor: Option<String>) -> PageRequest {
    PageRequest { limit, cursor }
}

fn error(e: OperatorError) -> Response {
    let err = match &e {
        OperatorError::NotFound(m) => ApiError::not_found(m.clone()),
        OperatorError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "Conflict", m.clone()),
        OperatorError::Invalid(m) => ApiError::bad_request(m.clone()),
        OperatorError::Db(db) => ApiError::from_db(db),
        OperatorError::Step(step) => match step.db_error() {
            Some(db) => ApiError::from_db(db),
            None => {
                tracing::error!(error = %e, "operator action failed");
                ApiError::internal("The action failed; it has been logged")
            }
        },
    };
    err.into_response()
}

/// A JSON answer as is (queries).
fn ok<T: Serialize>(body: &T) -> Response {
    reply::json(StatusCode::OK, body)
}

/// `{"status": "success", …}`: the body's fields under the spec's success marker (actions).
fn success<T: Serialize>(code: StatusCode, body: &T) -> Response {
    let mut value = serde_json::to_value(body).unwrap_or(Value::Null);
    let mut out = serde_json::Map::new();
    out.insert("status".into(), Value::from("success"));
    if let Value::Object(fields) = value.take() {
        out.extend(fields);
    }
    reply::json(code, &Value::Object(out))
}

fn answer<T: Serialize>(result: Result<T, OperatorError>) -> Response {
    match result {
        Ok(body) => success(StatusCode::OK, &body),
        Err(e) => error(e),
    }
}

/// Largest body an operator action reads.
const MAX_ACTION_BODY: usize = 64 * 1024;

/// An action's optional JSON body: empty means all defaults.
async fn optional_json<T: DeserializeOwned + Default>(body: Body) -> Result<T, Response> {
    let bytes = body.into_bytes_limit(MAX_ACTION_BODY).await.map_err(|e| {
        ApiError::bad_request(format!("Could not read the body: {e}")).into_response()
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!("The body is not valid JSON here: {e}")).into_response()
    })
}
