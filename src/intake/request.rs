//! What intake keeps from a request's headers. The bearer token is held only to check it: it
//! never reaches the log, whose header copy is an allow-list.

use poem::Request;
use poem::http::header;
use serde_json::{Map, Value};

/// Headers copied into the webhook log. Anything else (cookies, credentials) is left out.
const LOGGED_HEADERS: [&str; 8] = [
    "content-type",
    "content-length",
    "user-agent",
    "idempotency-key",
    "webhook-id",
    "webhook-timestamp",
    "x-forwarded-for",
    "accept",
];

/// Longest idempotency key accepted; longer ones are cut (they are compared whole anyway,
/// by hash of the request, so a cut key never merges different requests silently).
const MAX_KEY_LEN: usize = 200;

#[derive(Debug, Clone, Default)]
pub struct RequestMeta {
    pub bearer: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// `Idempotency-Key`, or else the Standard Webhooks `webhook-id`.
    pub idempotency_key: Option<String>,
    pub headers: Value,
}

impl RequestMeta {
    pub fn from_request(req: &Request) -> RequestMeta {
        let text = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let bearer = text(header::AUTHORIZATION.as_str()).and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            let token = token.trim();
            (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_owned())
        });
        let idempotency_key = text("idempotency-key")
            .or_else(|| text("webhook-id"))
            .map(|k| k.chars().take(MAX_KEY_LEN).collect());
        let mut headers = Map::new();
        for name in LOGGED_HEADERS {
            if let Some(v) = text(name) {
                headers.insert(
                    name.to_owned(),
                    Value::String(v.chars().take(512).collect()),
                );
            }
        }
        RequestMeta {
            bearer,
            content_type: text(header::CONTENT_TYPE.as_str()),
            content_length: text(header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok()),
            idempotency_key,
            headers: Value::Object(headers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_token_out_of_the_logged_headers() {
        let req = Request::builder()
            .header("Authorization", "Bearer lf_secret")
            .header("Content-Type", "application/json")
            .header("Cookie", "session=abc")
            .header("webhook-id", "msg_1")
            .finish();
        let meta = RequestMeta::from_request(&req);
        assert_eq!(meta.bearer.as_deref(), Some("lf_secret"));
        assert_eq!(meta.idempotency_key.as_deref(), Some("msg_1"));
        let logged = meta.headers.to_string();
        assert!(!logged.contains("lf_secret"));
        assert!(!logged.contains("session"));
        assert!(logged.contains("application/json"));
    }

    #[test]
    fn idempotency_key_wins_over_webhook_id() {
        let req = Request::builder()
            .header("Idempotency-Key", "k1")
            .header("webhook-id", "msg_1")
            .finish();
        assert_eq!(
            RequestMeta::from_request(&req).idempotency_key.as_deref(),
            Some("k1")
        );
    }

    #[test]
    fn other_schemes_are_not_bearer_tokens() {
        let req = Request::builder()
            .header("Authorization", "Basic abc")
            .finish();
        assert_eq!(RequestMeta::from_request(&req).bearer, None);
        let req = Request::builder()
            .header("Authorization", "bearer   t1 ")
            .finish();
        assert_eq!(
            RequestMeta::from_request(&req).bearer.as_deref(),
            Some("t1")
        );
    }
}
