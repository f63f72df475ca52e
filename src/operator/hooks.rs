//! Hooks as operators list them: settings, state and whether a rotated-out token still works.
//! Creating, rotating and disabling are [`crate::hooks`]'s.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use super::error::{OperatorError, Result};
use super::page::{Page, PageRequest};
use crate::db::At;

/// How long a rotated-out token keeps working by default: a day to update every sender.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

/// A rotation's grace period, checked against [`MAX_GRACE`].
pub fn grace(requested: Option<Duration>) -> Result<Duration> {
    let grace = requested.unwrap_or(DEFAULT_GRACE);
    if grace > MAX_GRACE {
        return Err(OperatorError::Invalid(format!(
            "grace: at most {} days",
            MAX_GRACE.as_secs() / 86_400
        )));
    }
    Ok(grace)
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct HookView {
    pub name: String,
    pub workflow: String,
    pub auto_callback: bool,
    pub active: bool,
    pub created_at: At,
    pub updated_at: At,
    /// Until when the token replaced by the last rotation still works; `null` when it no
    /// longer does.
    pub previous_token_expires_at: Option<At>,
}

pub async fn list(pool: &PgPool, page: &PageRequest) -> Result<Page<HookView>> {
    let limit = page.limit();
    let rows: Vec<HookView> = sqlx::query_as(
        "SELECT name, workflow, auto_callback, active, created_at, updated_at, \
                CASE WHEN prev_token_expires_at > now() THEN prev_token_expires_at END \
                    AS previous_token_expires_at \
         FROM hooks WHERE ($1::text IS NULL OR name > $1) ORDER BY name LIMIT $2",
    )
    .bind(page.position()?)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    Ok(Page::from_rows(rows, limit, |h| h.name.clone()))
}
