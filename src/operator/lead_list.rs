//! Leads by status, time or phone, newest first, one page at a time.

use jiff::Timestamp;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::actor::Actor;
use super::error::{OperatorError, Result};
use super::page::{Page, PageRequest};
use super::reveal;
use crate::db::At;
use crate::lead::RunStatus;
use crate::phone;

#[derive(Debug, Clone, Default)]
pub struct LeadFilter {
    /// The latest run's status.
    pub status: Option<RunStatus>,
    /// Received at or after.
    pub since: Option<Timestamp>,
    /// E.164, as [`parse_phone`] makes it.
    pub phone: Option<String>,
    pub id: Option<Uuid>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct LeadRow {
    pub id: Uuid,
    pub received_at: At,
    pub hook: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub company: Option<String>,
    pub run_id: Option<Uuid>,
    pub status: Option<String>,
    pub reason: Option<String>,
    pub updated_at: Option<At>,
}

/// `--since` as a duration back from `now` (`90s`, `15m`, `1h`, `2d`) or an RFC 3339 instant.
pub fn parse_since(text: &str, now: Timestamp) -> Result<Timestamp> {
    if let Ok(at) = text.trim().parse::<Timestamp>() {
        return Ok(at);
    }
    let back = crate::workflow::duration::parse(text)
        .map_err(|e| OperatorError::Invalid(format!("since: {e}, or an RFC 3339 time")))?;
    let back = jiff::SignedDuration::try_from(back)
        .map_err(|_| OperatorError::Invalid(format!("since: {text:?} is too long ago")))?;
    now.checked_sub(back)
        .map_err(|_| OperatorError::Invalid(format!("since: {text:?} is too long ago")))
}

/// A phone search term in international form, as leads store it (E.164).
pub fn parse_phone(text: &str) -> Result<String> {
    let bad = || {
        OperatorError::Invalid(format!(
            "phone: {text:?} is not a phone number in international form (e.g. +16502530000)"
        ))
    };
    if !text.trim_start().starts_with('+') {
        return Err(bad());
    }
    phone::normalize("", text)
        .map(|p| p.e164)
        .map_err(|_| bad())
}

/// One page of leads. With `reveal`, phones and emails are shown in full and each lead on the
/// page gets a reveal event in its timeline.
pub async fn list(
    pool: &PgPool,
    filter: &LeadFilter,
    page: &PageRequest,
    reveal: Option<&Actor>,
) -> Result<Page<LeadRow>> {
    let limit = page.limit();
    let (before_at, before_id) = match page.position()? {
        Some(pos) => {
            let (at, id) = pos
                .split_once('|')
                .and_then(|(at, id)| {
                    Some((at.parse::<Timestamp>().ok()?, id.parse::<Uuid>().ok()?))
                })
                .ok_or_else(|| {
                    OperatorError::Invalid("cursor: not a cursor of this list".into())
                })?;
            (Some(At(at)), Some(id))
        }
        None => (None, None),
    };
    let mut tx = crate::db::custom_plans(pool).await?;
    let rows: Vec<LeadRow> = sqlx::query_as(
        "SELECT l.id, l.received_at, h.name AS hook, l.name, \
                COALESCE(l.phone_e164, NULLIF(concat(l.submission ->> 'country_code', \
                                                      l.submission ->> 'phone'), '')) AS phone, \
                COALESCE(l.email, l.submission ->> 'email') AS email, l.company, \
                r.id AS run_id, r.status, r.reason, r.updated_at \
         FROM leads l JOIN hooks h ON h.id = l.hook_id \
         LEFT JOIN LATERAL (SELECT id, status, reason, updated_at FROM runs \
                            WHERE lead_id = l.id ORDER BY created_at DESC, id DESC LIMIT 1) r ON true \
         WHERE ($1::text IS NULL OR r.status = $1) \
           AND ($2::timestamptz IS NULL OR l.received_at >= $2) \
           AND ($3::text IS NULL OR l.phone_e164 = $3) \
           AND ($4::uuid IS NULL OR l.id = $4) \
           AND ($5::timestamptz IS NULL OR (l.received_at, l.id) < ($5, $6)) \
         ORDER BY l.received_at DESC, l.id DESC LIMIT $7",
    )
    .bind(filter.status.map(RunStatus::as_str))
    .bind(filter.since.map(At))
    .bind(filter.phone.as_deref())
    .bind(filter.id)
    .bind(before_at)
    .bind(before_id)
    .bind(i64::from(limit) + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut page = Page::from_rows(rows, limit, |l| format!("{}|{}", l.received_at.0, l.id));
    let shown: Vec<Uuid> = page.items.iter().map(|l| l.id).collect();
    if let Some(actor) = reveal {
        reveal::record(pool, &shown, actor).await?;
    }
    for lead in &mut page.items {
        lead.phone = lead
            .phone
            .take()
            .map(|p| reveal::phone(p, reveal.is_some()));
        lead.email = lead
            .email
            .take()
            .map(|e| reveal::email(e, reveal.is_some()));
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_an_instant() {
        let now: Timestamp = "2026-11-26T12:00:00Z".parse().expect("literal");
        let back = |t| parse_since(t, now).ok().map(|t| t.to_string());
        assert_eq!(back("1h").as_deref(), Some("2026-11-26T11:00:00Z"));
        assert_eq!(back("2d").as_deref(), Some("2026-11-24T12:00:00Z"));
        assert_eq!(
            back("2026-11-01T00:00:00Z").as_deref(),
            Some("2026-11-01T00:00:00Z")
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn phone_searches_need_the_international_form() {
        assert_eq!(
            parse_phone("+1 650-253-0000").ok().as_deref(),
            Some("+16502530000")
        );
        assert!(parse_phone("650-253-0000").is_err());
    }
}
