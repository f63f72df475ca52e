//! Every HTTP answer leadflow gives in the spec's shapes: `{"status":"success",…}` and
//! `{"status":"error","message":…,"details":…}`. poem's own plain-text rejections never reach
//! a caller; `server` maps them through [`ApiError`] too.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{IntoResponse, Response};
use serde::Serialize;

/// Seconds a caller should wait before retrying after a 503.
pub const RETRY_AFTER_S: u32 = 5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub code: StatusCode,
    pub status: &'static str,
    pub message: String,
    pub details: String,
    /// Seconds for `Retry-After` on a 503 or 429 (default [`RETRY_AFTER_S`]).
    #[serde(skip)]
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: StatusCode, message: impl Into<String>, details: impl Into<String>) -> Self {
        ApiError {
            code,
            status: "error",
            message: message.into(),
            details: details.into(),
            retry_after_s: None,
        }
    }

    /// Tells the caller when to retry, rounded up to whole seconds.
    pub fn retry_after(mut self, wait: std::time::Duration) -> Self {
        self.retry_after_s = Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0));
        self
    }

    pub fn unauthorized(details: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", details)
    }

    pub fn not_found(details: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not found", details)
    }

    pub fn bad_request(details: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Malformed request", details)
    }

    /// The database cannot be reached: the caller should retry (with `Retry-After`).
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable",
            "The database is unavailable; retry later",
        )
    }

    pub fn internal(details: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", details)
    }

    /// For database errors: unavailability is a 503, anything else a 500 (logged).
    pub fn from_db(err: &sqlx::Error) -> Self {
        if crate::db::is_unavailable(err) {
            Self::unavailable()
        } else {
            tracing::error!(error = %err, "database error");
            Self::internal("A database error occurred; it has been logged")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = matches!(
            self.code,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS
        );
        let mut resp = json(self.code, &self);
        if retry {
            let secs = self
                .retry_after_s
                .unwrap_or(u64::from(RETRY_AFTER_S))
                .max(1);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

/// A JSON response with the given status.
pub fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::builder()
            .status(code)
            .content_type("application/json")
            .body(bytes),
        Err(e) => {
            tracing::error!(error = %e, "response did not serialise");
            Response::builder()
                .status(StatusCode::INTERNAL_SERVER_ERROR)
                .content_type("application/json")
                .body(r#"{"status":"error","message":"Internal error","details":"response encoding failed"}"#)
        }
    }
}
