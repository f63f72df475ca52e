//! `POST /v1/webhooks/inbound`: the HTTP edge where a lead enters.
//!
//! The checks run in the contract's order and the first failure answers: 401 token, 415
//! content type, 413 size, 400 parse, 404 hook, 403 token of another hook, 422 fields. A
//! request that gets past authentication is written to the webhook log whatever happens;
//! one that gets to validation is stored as a lead (a 422 stores it `rejected`, so an
//! operator can replay it), in one transaction ([`store`]).

pub mod limit;
pub mod parse;
pub(crate) mod records;
mod request;
#[cfg(feature = "testing")]
pub mod sample;
pub(crate) mod store;
mod submitted;
pub mod tokens;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use multer::bytes::Bytes;
use poem::http::StatusCode;
use poem::web::Data;
use poem::{Body, IntoResponse, Request, Response, handler};
use sqlx::PgPool;

use crate::engine::Handoff;
use crate::engine::announce::Announcements;
use crate::hooks::{self, Hook};
use crate::metrics;
use crate::reply::ApiError;
use crate::validate::{self, Policy};
use crate::workflow::Workflows;
pub use request::RequestMeta;
use store::LogEntry;

/// What the intake route needs, shared across requests.
pub struct Intake {
    pub pool: PgPool,
    pub workflows: Arc<Workflows>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub limits: limit::RateLimits,
    /// This process's workers' way to run new leads' qualify jobs at once, when it has them.
    pub handoff: Option<Handoff>,
    /// Hooks found by token lately.
    pub tokens: tokens::Tokens,
    /// Where stored leads' queued jobs are announced to the workers.
    pub announcements: Announcements,
}

#[handler]
pub async fn inbound(req: &Request, body: Body, intake: Data<&Arc<Intake>>) -> Response {
    let started = Instant::now();
    let meta = RequestMeta::from_request(req);
    // Set once the token names a hook; a timeout still knows it.
    let hook = OnceLock::new();
    // A bounded answer even when the database hangs: the sender retries a 503.
    let handling = authenticate_and_handle(&intake, &meta, body, &hook);
    let resp = match tokio::time::timeout(intake.request_timeout, handling).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(err)) => err.into_response(),
        Err(_) => ApiError::unavailable().into_response(),
    };
    let hook = hook.get().map(String::as_str);
    metrics::intake_request(hook, resp.status().as_u16(), started.elapsed());
    resp
}

/// The request's body: not read yet, read, or found over the size limit while read.
enum Payload {
    Unread(Body),
    Read(Bytes),
    Oversized,
}

/// How far a request got with the hook it was given.
enum Pass {
    Answered(Result<Response, ApiError>),
    /// The hook was remembered, and the answer it led to was not a confirmed acceptance: the
    /// request must be decided again with the hook read from the database.
    Recheck {
        payload: Payload,
        counted: Option<Counted>,
    },
}

/// A request the rate limiter has counted, under the hook's limit then: it is not counted
/// again under the same limit (a new limit is a new budget, which counts it).
#[derive(Clone, Copy)]
struct Counted {
    per_minute: Option<i32>,
}

async fn authenticate_and_handle(
    intake: &Intake,
    meta: &RequestMeta,
    body: Body,
    hook_label: &OnceLock<String>,
) -> Result<Response, ApiError> {
    let pool = &intake.pool;
    // 1. 401: the token names the hook.
    let Some(token) = meta.bearer.as_deref() else {
        return reject(
            pool,
            meta,
            None,
            None,
            ApiError::unauthorized("Missing bearer token"),
        )
        .await;
    };
    let found = intake.tokens.find(pool, token).await;
    let first = handle(intake, meta, Payload::Unread(body), None, found, hook_label).await;
    let (payload, counted) = match first {
        Pass::Answered(answer) => return answer,
        Pass::Recheck { payload, counted } => (payload, counted),
    };
    let found = intake.tokens.look_up(pool, token).await;
    match handle(intake, meta, payload, counted, found, hook_label).await {
        Pass::Answered(answer) => answer,
        // Only a remembered hook asks for a recheck, and this one was just read.
        Pass::Recheck { .. } => Err(ApiError::unavailable()),
    }
}

async fn handle(
    intake: &Intake,
    meta: &RequestMeta,
    payload: Payload,
    counted: Option<Counted>,
    found: Result<Option<tokens::Found>, sqlx::Error>,
    hook_label: &OnceLock<String>,
) -> Pass {
    let pool = &intake.pool;
    let (token_hook, remembered) = match found {
        Ok(Some(found)) => (found.hook, found.remembered),
        Ok(None) => {
            let err = ApiError::unauthorized("Invalid token");
            return Pass::Answered(reject(pool, meta, None, None, err).await);
        }
        Err(e) => return Pass::Answered(Err(ApiError::from_db(&e))),
    };
    let _ = hook_label.set(token_hook.name.clone());
    // Every answer but a stored lead is given only with the hook as the database has it now.
    // Past the rate limit, the request has been counted.
    let per_minute = token_hook.rate_limit_per_minute;
    let refuse = |hook: Option<&Hook>, payload: Payload, body: Option<&Bytes>, err: ApiError| {
        let hook = hook.cloned();
        let body = body.cloned();
        let fresh = remembered.is_none();
        let counted = (err.code != StatusCode::TOO_MANY_REQUESTS).then_some(Counted { per_minute });
        async move {
            if fresh {
                Pass::Answered(reject(pool, meta, hook.as_ref(), body.as_deref(), err).await)
            } else {
                Pass::Recheck { payload, counted }
            }
        }
    };

    // A token over its hook's rate gets 429 before its body is even read.
    if counted.is_none_or(|c| c.per_minute != per_minute)
        && let Err(wait) = intake.limits.check(token_hook.id, per_minute)
    {
        let err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            format!(
                "Hook {:?} is over its rate limit; retry later",
                token_hook.name
            ),
        )
        .retry_after(wait);
        return refuse(Some(&token_hook), payload, None, err).await;
    }

    // 2. 415, 3. 413, 4. 400.
    let kind = match parse::body_kind(meta.content_type.as_deref()) {
        Ok(kind) => kind,
        Err(e) => return refuse(Some(&token_hook), payload, None, parse_error(e)).await,
    };
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large",
            format!("The body exceeds {} bytes", intake.max_body_bytes),
        )
    };
    if meta
        .content_length
        .is_some_and(|n| n > intake.max_body_bytes as u64)
    {
        return refuse(Some(&token_hook), payload, None, too_large()).await;
    }
    let bytes = match payload {
        Payload::Read(bytes) => bytes,
        Payload::Oversized => {
            return refuse(Some(&token_hook), Payload::Oversized, None, too_large()).await;
        }
        Payload::Unread(body) => match body.into_bytes_limit(intake.max_body_bytes).await {
            Ok(bytes) => bytes,
            Err(poem::error::ReadBodyError::PayloadTooLarge) => {
                return refuse(Some(&token_hook), Payload::Oversized, None, too_large()).await;
            }
            Err(e) => {
                return Pass::Answered(Err(ApiError::bad_request(format!(
                    "Could not read the body: {e}"
                ))));
            }
        },
    };
    let read = |bytes: &Bytes| Payload::Read(bytes.clone());
    let mut parsed = match parse::parse(&kind, bytes.clone()) {
        Ok(parsed) => parsed,
        Err(e) => {
            let err = parse_error(e);
            return refuse(Some(&token_hook), read(&bytes), Some(&bytes), err).await;
        }
    };
    // PostgreSQL cannot store NUL in text: repair it before anything reaches the database.
    let nul_fields = parsed.submission.replace_nul();

    // 5. 404, 6. 403: the body's hookName must name the token's own, active hook.
    let claimed = parsed.submission.hook_name.as_deref().map(str::trim);
    let hook = match resolve_hook(pool, token_hook, claimed).await {
        Ok(hook) => hook,
        Err((hook, err)) => {
            return refuse(hook.as_ref(), read(&bytes), Some(&bytes), err).await;
        }
    };

    // 7. 422, or accept.
    let workflow = intake.workflows.get(&hook.workflow);
    if workflow.is_none() {
        // Accept anyway: the lead is kept and its qualify step retries until the workflow
        // is deployed, rather than the sender's data being lost.
        tracing::warn!(hook = %hook.name, workflow = %hook.workflow, "hook's workflow is not loaded");
    }
    let policy = Policy {
        allowed_countries: workflow.and_then(|w| w.allowed_countries.clone()),
    };
    let verdict = match (parsed.type_errors.first(), nul_fields.first()) {
        (Some(field), _) => Err(validate::wrong_type(field)),
        (None, Some(field)) => Err(validate::nul_character(field)),
        (None, None) => validate::validate(&parsed.submission, &policy),
    };
    let max_attempts = workflow.map(|w| w.retry.max_attempts).unwrap_or(5);
    let input = store::Submitted {
        hook: &hook,
        meta,
        body: &bytes,
        submission: &parsed.submission,
        verdict,
        max_attempts,
        remembered: remembered.as_ref(),
    };
    match store::submit(intake, input).await {
        Err(store::StoreError::HookChanged) => Pass::Recheck {
            payload: Payload::Read(bytes),
            counted: Some(Counted { per_minute }),
        },
        answer => Pass::Answered(answer.map_err(ApiError::from)),
    }
}

/// Answers with `err` after writing the request to the webhook log.
async fn reject(
    pool: &PgPool,
    meta: &RequestMeta,
    hook: Option<&Hook>,
    body: Option<&[u8]>,
    err: ApiError,
) -> Result<Response, ApiError> {
    store::log_only(pool, LogEntry::rejected(hook, meta, body, &err)).await;
    Err(err)
}

fn parse_error(e: parse::ParseError) -> ApiError {
    match e {
        parse::ParseError::UnsupportedContentType(ct) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported content type",
            format!(
                "Expected application/json, application/x-www-form-urlencoded or multipart/form-data; got {}",
                if ct.is_empty() { "none" } else { ct.as_str() }
            ),
        ),
        parse::ParseError::Malformed(why) => ApiError::bad_request(why),
    }
}

/// Applies the 404 and 403 rules. An absent hookName falls back to the token's hook (the
/// missing field is then a 422 from validation).
async fn resolve_hook(
    pool: &PgPool,
    token_hook: Hook,
    claimed: Option<&str>,
) -> Result<Hook, (Option<Hook>, ApiError)> {
    let inactive =
        |name: &str| ApiError::not_found(format!("Hook {name:?} is unknown or inactive"));
    match claimed {
        None | Some("") => {
            if token_hook.active {
                Ok(token_hook)
            } else {
                let err = inactive(&token_hook.name);
                Err((Some(token_hook), err))
            }
        }
        Some(name) if name == token_hook.name => {
            if token_hook.active {
                Ok(token_hook)
            } else {
                Err((Some(token_hook), inactive(name)))
            }
        }
        Some(name) => match hooks::find_by_name(pool, name).await {
            Ok(Some(other)) if other.active => Err((
                Some(token_hook),
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Forbidden",
                    format!("This token does not belong to hook {name:?}"),
                ),
            )),
            Ok(_) => Err((Some(token_hook), inactive(name))),
            Err(e) => Err((None, ApiError::from_db(&e))),
        },
    }
}
