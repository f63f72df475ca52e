//! The block list: phones and emails that are never called. Phones are stored in E.164 and
//! emails in lower case, the forms intake compares against.

use serde::Serialize;
use sqlx::PgPool;

use crate::phone;
use crate::validate::mask_email;

pub use crate::validate::BlockKind;

fn kind_name(kind: BlockKind) -> &'static str {
    match kind {
        BlockKind::Phone => "phone",
        BlockKind::Email => "email",
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Entry {
    pub kind: String,
    pub value: String,
    pub note: Option<String>,
    pub created_at: crate::db::At,
}

impl Entry {
    /// The entry with its value masked, as lists show it unless asked to reveal.
    pub fn masked(mut self) -> Entry {
        self.value = match self.kind.as_str() {
            "phone" => phone::mask(&self.value),
            _ => mask_email(&self.value),
        };
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{0:?} is not a valid phone number in international form (e.g. +14155550123)")]
    BadPhone(String),
    #[error("{0:?} is not an email address")]
    BadEmail(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// The stored form of a value: E.164 for phones, lower case for emails.
pub fn canonical(kind: BlockKind, value: &str) -> Result<String, BlockError> {
    match kind {
        // Only the international form is unambiguous without a separate country code.
        BlockKind::Phone if !value.trim_start().starts_with('+') => {
            Err(BlockError::BadPhone(value.to_owned()))
        }
        BlockKind::Phone => phone::normalize("", value)
            .map(|p| p.e164)
            .map_err(|_| BlockError::BadPhone(value.to_owned())),
        // Lower case throughout: intake compares against lower(email).
        BlockKind::Email => crate::validate::normalize_email(value.trim())
            .map(|e| e.to_lowercase())
            .ok_or_else(|| BlockError::BadEmail(value.to_owned())),
    }
}

pub async fn add(
    pool: &PgPool,
    kind: BlockKind,
    value: &str,
    note: Option<&str>,
) -> Result<String, BlockError> {
    let value = canonical(kind, value)?;
    sqlx::query(
        "INSERT INTO blocklist (kind, value, note) VALUES ($1, $2, $3) \
         ON CONFLICT (kind, value) DO UPDATE SET note = COALESCE(EXCLUDED.note, blocklist.note)",
    )
    .bind(kind_name(kind))
    .bind(&value)
    .bind(note)
    .execute(pool)
    .await?;
    Ok(value)
}

pub async fn remove(pool: &PgPool, kind: BlockKind, value: &str) -> Result<bool, BlockError> {
    let value = canonical(kind, value)?;
    let done = sqlx::query("DELETE FROM blocklist WHERE kind = $1 AND value = $2")
        .bind(kind_name(kind))
        .bind(&value)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

pub async fn list(pool: &PgPool) -> Result<Vec<Entry>, BlockError> {
    Ok(
        sqlx::query_as("SELECT kind, value, note, created_at FROM blocklist ORDER BY kind, value")
            .fetch_all(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_stored_in_the_form_intake_compares() {
        assert_eq!(
            canonical(BlockKind::Phone, "+1 (650) 253-0000")
                .ok()
                .as_deref(),
            Some("+16502530000")
        );
        assert!(
            canonical(BlockKind::Phone, "650 253 0000").is_err(),
            "needs a country code"
        );
        assert_eq!(
            canonical(BlockKind::Email, " John@Example.COM ")
                .ok()
                .as_deref(),
            Some("john@example.com")
        );
        assert!(canonical(BlockKind::Email, "nobody").is_err());
    }
}
