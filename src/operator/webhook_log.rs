//! The webhook log: every intake request with its outcome and reason, newest first. Bodies
//! and headers stay in the table; lists show what an operator needs to find a request (and
//! nothing a sender's lead could be read from).

use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::error::{OperatorError, Result};
use super::page::{Page, PageRequest};
use crate::db::At;

pub const OUTCOMES: [&str; 4] = ["accepted", "rejected", "duplicate", "error"];

#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub hook: Option<String>,
    pub outcome: Option<String>,
    /// Only entries newer than this id, oldest first (what `--follow` polls with).
    pub after: Option<i64>,
}

impl LogFilter {
    pub fn check(&self) -> Result<()> {
        match &self.outcome {
            Some(o) if !OUTCOMES.contains(&o.as_str()) => Err(OperatorError::Invalid(format!(
                "outcome: {o:?} is not one of {}",
                OUTCOMES.join(", ")
            ))),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct LogEntry {
    pub id: i64,
    pub received_at: At,
    pub hook: Option<String>,
    pub status_code: i16,
    pub outcome: String,
    pub reason: Option<String>,
    pub lead_id: Option<Uuid>,
    pub content_type: Option<String>,
    pub body_size: i64,
    pub idempotency_key: Option<String>,
}

pub async fn list(pool: &PgPool, filter: &LogFilter, page: &PageRequest) -> Result<Page<LogEntry>> {
    filter.check()?;
    let limit = page.limit();
    let before: Option<i64> = page
        .position()?
        .map(|p| {
            p.parse()
                .map_err(|_| OperatorError::Invalid("cursor: not a cursor of this list".into()))
        })
        .transpose()?;
    // Browsing reads backwards from the cursor; following reads forwards from `after` (and
    // continues from the last id it saw, so it needs no cursor).
    let order = if filter.after.is_some() {
        "id ASC"
    } else {
        "id DESC"
    };
    let mut tx = crate::db::custom_plans(pool).await?;
    let rows: Vec<LogEntry> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT id, received_at, hook_name AS hook, status_code, outcome, reason, lead_id, \
                content_type, body_size, idempotency_key \
         FROM webhook_log \
         WHERE ($1::text IS NULL OR hook_name = $1) \
           AND ($2::text IS NULL OR outcome = $2) \
           AND ($3::bigint IS NULL OR id < $3) \
           AND ($4::bigint IS NULL OR id > $4) \
         ORDER BY {order} LIMIT $5"
    )))
    .bind(filter.hook.as_deref())
    .bind(filter.outcome.as_deref())
    .bind(before)
    .bind(filter.after)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    if filter.after.is_some() {
        let mut page = Page::from_rows(rows, limit, |_| String::new());
        page.next_cursor = None;
        return Ok(page);
    }
    Ok(Page::from_rows(rows, limit, |e| e.id.to_string()))
}
