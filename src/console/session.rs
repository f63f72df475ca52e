//! Console log-in, sessions and CSRF.
//!
//! An operator logs in with the admin token (and a name for the timeline). The session
//! cookie holds 32 random bytes; the table keeps only their SHA-256, with the actor, a
//! per-session CSRF token and an expiry. The cookie is `HttpOnly` (no script reads it),
//! `SameSite=Strict` (no other site's request carries it) and, behind HTTPS, `Secure`.
//! Every form POST must also carry the session's CSRF token, compared in constant time; the
//! log-in form itself is protected by a double-submit token in a short-lived cookie.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use poem::http::{Method, StatusCode, header};
use poem::web::{Data, Form};
use poem::{Endpoint, IntoResponse, Request, Response, handler};
use serde::Deserialize;
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use super::markup;
use crate::engine::Engine;
use crate::hooks::token_hash;
use crate::operator::Actor;
use crate::operator::api::AdminToken;

const SESSION_COOKIE: &str = "lf_session";
const LOGIN_COOKIE: &str = "lf_login";
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Largest form the console reads (the CSRF check reads the body before the handler).
const MAX_FORM: usize = 64 * 1024;

/// The logged-in operator, put in the request by [`guard`] for handlers to read.
#[derive(Debug, Clone)]
pub struct Session {
    pub actor: Actor,
    pub csrf: String,
    token_hash: Vec<u8>,
    /// What the previous action did, shown once.
    pub flash: Option<String>,
}

impl Session {
    /// Leaves a message for the next page this session sees.
    pub async fn flash(&self, pool: &PgPool, message: &str) {
        let saved = sqlx::query("UPDATE console_sessions SET flash = $2 WHERE token_hash = $1")
            .bind(&self.token_hash)
            .bind(message)
            .execute(pool)
            .await;
        if let Err(e) = saved {
            tracing::warn!(error = %e, "console notice not saved");
        }
    }
}

fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn cookie(req: &Request, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: u64, secure: bool) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Cookies are `Secure` when operators reach leadflow over HTTPS.
fn secure(engine: &Engine) -> bool {
    engine.callbacks.public_url.starts_with("https://")
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn forbidden(why: &str) -> Response {
    markup::error_page(StatusCode::FORBIDDEN, "Forbidden", why)
}

/// Wraps the console's pages: no session, no page (GETs are sent to the log-in form, POSTs
/// refused); a POST without the session's CSRF token gets 403.
pub async fn guard<E: Endpoint>(ep: E, mut req: Request) -> poem::Result<Response> {
    let Some(pool) = req.data::<PgPool>().cloned() else {
        return Ok(markup::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "no database",
        )
        .into_response());
    };
    let Some(admin) = req.data::<Arc<AdminToken>>().map(|a| a.fingerprint()) else {
        return Ok(markup::error_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error",
            "no admin token",
        )
        .into_response());
    };
    let is_post = req.method() == Method::POST;
    let session = match cookie(&req, SESSION_COOKIE) {
        Some(token) => load(&pool, &token, &admin, !is_post).await,
        None => Ok(None),
    };
    let session = match session {
        Ok(Some(s)) => s,
        Ok(None) if is_post => return Ok(forbidden("Your session has ended; log in again.")),
        Ok(None) => return Ok(markup::redirect("/console/login")),
        Err(e) => return Ok(markup::db_error(&e)),
    };
    if is_post {
        let body = req.take_body().into_bytes_limit(MAX_FORM).await;
        let Ok(body) = body else {
            return Ok(forbidden("The form could not be read."));
        };
        let sent = url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        if !sent.is_some_and(|t| same(&t, &session.csrf)) {
            return Ok(forbidden(
                "The form is missing its CSRF token, or it is stale. Reload the page and try again.",
            ));
        }
        req.set_body(body);
    }
    req.extensions_mut().insert(session);
    Ok(ep.call(req).await?.into_response())
}

/// The session of a cookie, if it is live and of the current admin token; on a page view its
/// flash message is taken.
async fn load(
    pool: &PgPool,
    token: &str,
    admin: &[u8; 32],
    take_flash: bool,
) -> Result<Option<Session>, sqlx::Error> {
    let hash = token_hash(token);
    let row: Option<(String, String, Option<String>)> = if take_flash {
        sqlx::query_as(
            "UPDATE console_sessions s SET flash = NULL \
             FROM (SELECT token_hash, flash FROM console_sessions \
                   WHERE token_hash = $1 AND admin_fingerprint = $2 AND expires_at > now() \
                   FOR UPDATE) old \
             WHERE s.token_hash = old.token_hash RETURNING s.actor, s.csrf_token, old.flash",
        )
        .bind(&hash[..])
        .bind(&admin[..])
        .fetch_optional(pool)
        .await?
    } else {
        sqlx::query_as(
            "SELECT actor, csrf_token, NULL::text FROM console_sessions \
             WHERE token_hash = $1 AND admin_fingerprint = $2 AND expires_at > now()",
        )
        .bind(&hash[..])
        .bind(&admin[..])
        .fetch_optional(pool)
        .await?
    };
    Ok(row.map(|(actor, csrf, flash)| Session {
        actor: Actor::from_stored(actor),
        csrf,
        token_hash: hash.to_vec(),
        flash,
    }))
}

#[handler]
pub async fn login_form(engine: Data<&Arc<Engine>>) -> Response {
    login_page(StatusCode::OK, None, secure(&engine))
}

fn login_page(code: StatusCode, problem: Option<&str>, secure: bool) -> Response {
    let csrf = random_token();
    let mut resp = poem::web::Html(markup::login(&csrf, problem).into_string()).into_response();
    resp.set_status(code);
    let cookie = set_cookie(LOGIN_COOKIE, &csrf, "/console/login", 600, secure);
    if let Ok(v) = cookie.parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    name: String,
}

#[handler]
pub async fn login(
    req: &Request,
    Form(form): Form<LoginForm>,
    pool: Data<&PgPool>,
    admin: Data<&Arc<AdminToken>>,
    engine: Data<&Arc<Engine>>,
) -> Response {
    let secure = secure(&engine);
    let expected = cookie(req, LOGIN_COOKIE);
    if !expected.is_some_and(|c| same(&c, &form.csrf)) {
        return forbidden(
            "The log-in form is missing its CSRF token, or it is stale. Reload the page and try again.",
        );
    }
    if !admin.matches(form.token.trim()) {
        tracing::warn!("console log-in refused: wrong admin token");
        return login_page(
            StatusCode::UNAUTHORIZED,
            Some("That is not the admin token."),
            secure,
        );
    }
    let actor = Actor::new("console", Some(&form.name));
    let token = random_token();
    let created = sqlx::query(
        "WITH gone AS (DELETE FROM console_sessions WHERE expires_at < now()) \
         INSERT INTO console_sessions (token_hash, actor, csrf_token, admin_fingerprint, expires_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
    )
    .bind(&token_hash(&token)[..])
    .bind(actor.as_str())
    .bind(random_token())
    .bind(&admin.fingerprint()[..])
    .bind(SESSION_TTL.as_secs_f64())
    .execute(*pool)
    .await;
    if let Err(e) = created {
        return markup::db_error(&e);
    }
    tracing::info!(%actor, "console log-in");
    let mut resp = markup::redirect("/console");
    for c in [
        set_cookie(
            SESSION_COOKIE,
            &token,
            "/console",
            SESSION_TTL.as_secs(),
            secure,
        ),
        set_cookie(LOGIN_COOKIE, "", "/console/login", 0, secure),
    ] {
        if let Ok(v) = c.parse() {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

#[handler]
pub async fn logout(
    session: Data<&Session>,
    pool: Data<&PgPool>,
    engine: Data<&Arc<Engine>>,
) -> Response {
    let ended = sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(&session.token_hash)
        .execute(*pool)
        .await;
    if let Err(e) = ended {
        return markup::db_error(&e);
    }
    let mut resp = markup::redirect("/console/login");
    let c = set_cookie(SESSION_COOKIE, "", "/console", 0, secure(&engine));
    if let Ok(v) = c.parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
}
