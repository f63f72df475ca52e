//! Webhook identities: a named endpoint bound to a workflow, reached with a bearer token.
//!
//! A token is 32 random bytes (URL-safe base64), shown once at creation and stored only as
//! its SHA-256. A fast hash suffices because the secret has full entropy; argon2 would cap
//! intake at about a hundred requests per second for no gain.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

/// The prefix makes a leaked token recognisable to secret scanners.
const TOKEN_PREFIX: &str = "lf_";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Hook {
    pub id: i64,
    pub name: String,
    pub workflow: String,
    pub auto_callback: bool,
    pub active: bool,
    /// Requests per minute; `None` takes the service default.
    pub rate_limit_per_minute: Option<i32>,
}

/// What `hooks create` prints: the only time the token is shown.
#[derive(Debug, Clone, Serialize)]
pub struct CreatedHook {
    pub name: String,
    pub url: String,
    pub token: String,
    pub workflow: String,
    pub auto_callback: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("a hook named {0:?} already exists")]
    NameTaken(String),
    #[error("hook names are 1-64 characters of letters, digits, '-', '_' or '.'; got {0:?}")]
    BadName(String),
    #[error("no hook named {0:?}")]
    NotFound(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
}

pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time comparison of a presented token with a stored hash.
pub fn token_matches(token: &str, stored_hash: &[u8]) -> bool {
    token_hash(token).ct_eq(stored_hash).into()
}

fn check_name(name: &str) -> Result<(), HookError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(HookError::BadName(name.to_owned()))
    }
}

pub async fn create(
    pool: &PgPool,
    name: &str,
    workflow: &str,
    auto_callback: bool,
    public_url: &str,
) -> Result<CreatedHook, HookError> {
    check_name(name)?;
    let token = new_token();
    let inserted = sqlx::query(
        "INSERT INTO hooks (name, workflow, auto_callback, token_hash) VALUES ($1, $2, $3, $4)",
    )
    .bind(name)
    .bind(workflow)
    .bind(auto_callback)
    .bind(&token_hash(&token)[..])
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(CreatedHook {
            name: name.to_owned(),
            url: format!("{}/v1/webhooks/inbound", public_url.trim_end_matches('/')),
            token,
            workflow: workflow.to_owned(),
            auto_callback,
        }),
        Err(e) if crate::db::is_unique_violation(&e) => Err(HookError::NameTaken(name.to_owned())),
        Err(e) => Err(e.into()),
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    #[sqlx(flatten)]
    hook: Hook,
    version: String,
    token_hash: Vec<u8>,
    prev_token_hash: Option<Vec<u8>>,
}

/// The hook a token belongs to, with the version of its row when read (`xmin`): every
/// change to a hook (rotation, disabling, a new rate limit, an operator's own SQL) makes a
/// new version, so finding the same version later proves the hook unchanged since.
#[derive(Debug, Clone)]
pub struct TokenHook {
    pub hook: Hook,
    pub version: String,
}

/// The hook a token belongs to: its current token, or its previous one during a rotation's
/// grace period.
pub async fn find_by_token(pool: &PgPool, token: &str) -> Result<Option<TokenHook>, sqlx::Error> {
    let hash = token_hash(token);
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT id, name, workflow, auto_callback, active, rate_limit_per_minute, \
                xmin::text AS version, token_hash, \
                CASE WHEN prev_token_expires_at > now() THEN prev_token_hash END AS prev_token_hash \
         FROM hooks WHERE token_hash = $1 OR (prev_token_hash = $1 AND prev_token_expires_at > now())",
    )
    .bind(&hash[..])
    .fetch_optional(pool)
    .await?;
    // The index found the row; the constant-time check is what grants access.
    Ok(row.and_then(|row| {
        let matches = token_matches(token, &row.token_hash)
            || row
                .prev_token_hash
                .as_deref()
                .is_some_and(|p| token_matches(token, p));
        matches.then_some(TokenHook {
            hook: row.hook,
            version: row.version,
        })
    }))
}

pub async fn find_by_name(pool: &PgPool, name: &str) -> Result<Option<Hook>, sqlx::Error> {
    sqlx::query_as("SELECT id, name, workflow, auto_callback, active, rate_limit_per_minute FROM hooks WHERE name = $1")
        .bind(name)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool) -> Result<Vec<Hook>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, workflow, auto_callback, active, rate_limit_per_minute FROM hooks ORDER BY name",
    )
        .fetch_all(pool)
        .await
}

/// Sets a hook's requests-per-minute limit (`None`: the service default).
pub async fn set_rate_limit(
    pool: &PgPool,
    name: &str,
    per_minute: Option<u32>,
) -> Result<(), HookError> {
    let per_minute = per_minute.map(|n| i32::try_from(n.max(1)).unwrap_or(i32::MAX));
    let done = sqlx::query(
        "UPDATE hooks SET rate_limit_per_minute = $2, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(per_minute)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(HookError::NotFound(name.to_owned()));
    }
    Ok(())
}

/// What `hooks rotate` prints: the new token (shown only this once) and until when the
/// previous one keeps working.
#[derive(Debug, Clone, Serialize)]
pub struct RotatedHook {
    pub name: String,
    pub token: String,
    pub previous_token_expires_at: Option<crate::db::At>,
}

/// Gives a hook a new token. The old one keeps working for `grace` (so senders can be
/// switched over without losing a lead), or stops at once when `grace` is zero. A rotation
/// during another's grace period ends that one: only the token just replaced stays valid.
pub async fn rotate(
    pool: &PgPool,
    name: &str,
    grace: std::time::Duration,
) -> Result<RotatedHook, HookError> {
    let token = new_token();
    let row: Option<(Option<crate::db::At>,)> = sqlx::query_as(
        "UPDATE hooks SET \
             prev_token_hash = CASE WHEN $3 > 0 THEN token_hash END, \
             prev_token_expires_at = CASE WHEN $3 > 0 THEN now() + make_interval(secs => $3) END, \
             token_hash = $2, updated_at = now() \
         WHERE name = $1 RETURNING prev_token_expires_at",
    )
    .bind(name)
    .bind(&token_hash(&token)[..])
    .bind(grace.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    let (expires,) = row.ok_or_else(|| HookError::NotFound(name.to_owned()))?;
    tracing::info!(hook = name, grace_s = grace.as_secs(), "hook token rotated");
    Ok(RotatedHook {
        name: name.to_owned(),
        token,
        previous_token_expires_at: expires,
    })
}

pub async fn set_active(pool: &PgPool, name: &str, active: bool) -> Result<(), HookError> {
    let done = sqlx::query("UPDATE hooks SET active = $2, updated_at = now() WHERE name = $1")
        .bind(name)
        .bind(active)
        .execute(pool)
        .await?;
    if done.rows_affected() == 0 {
        return Err(HookError::NotFound(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with("lf_"));
        assert_eq!(a.len(), 3 + 43, "32 bytes in unpadded base64");
    }

    #[test]
    fn a_token_matches_only_its_own_hash() {
        let t = new_token();
        let h = token_hash(&t);
        assert!(token_matches(&t, &h));
        assert!(!token_matches(&new_token(), &h));
        assert!(
            !token_matches(&t, &h[..31]),
            "a truncated hash never matches"
        );
    }

    #[test]
    fn hook_names_are_checked() {
        assert!(check_name("website-form").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("has space").is_err());
        assert!(check_name(&"x".repeat(65)).is_err());
    }
}
