//! Storing a request: idempotency key, webhook log, lead, run, the validate step and the first
//! worker job commit together, and only then does the sender get its answer. A crash before
//! the commit leaves nothing (the sender got no 2xx and retries); after it, nothing can be
//! lost. A valid lead without an idempotency key, the common case, is one statement and its
//! own transaction; other requests are decided step by step in a transaction.

use poem::Response;
use poem::http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::Intake;
use super::parse;
use super::records::{Gate, Handover, Rows, blocklist_match_sql};
pub use super::submitted::{LogEntry, StoreError, Submitted};
use super::tokens::{self, Stamp};
use crate::lead::Submission;
use crate::metrics::{self, LeadOutcome};
use crate::reply::{self, ApiError};
use crate::validate::{self, BlockKind, ValidLead};

/// Writes a webhook-log row on its own. A failure is logged, not returned: the caller is
/// already answering with an error of its own.
pub async fn log_only(pool: &PgPool, entry: LogEntry<'_>) {
    let result = async {
        let mut conn = pool.acquire().await?;
        insert_log(&mut conn, &entry, None).await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, status = entry.status, "could not write the webhook log");
    }
}

async fn insert_log(
    conn: &mut PgConnection,
    entry: &LogEntry<'_>,
    lead_id: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_log (hook_id, hook_name, content_type, body_size, body, headers, \
                                  status_code, outcome, reason, lead_id, idempotency_key) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(entry.hook.map(|h| h.id))
    .bind(entry.hook.map(|h| h.name.as_str()))
    .bind(entry.meta.content_type.as_deref())
    .bind(entry.body_size())
    .bind(entry.body)
    .bind(&entry.meta.headers)
    .bind(entry.status as i16)
    .bind(entry.outcome)
    .bind(&entry.reason)
    .bind(lead_id)
    .bind(entry.meta.idempotency_key.as_deref())
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the submission and answers it: 200 accepted, 422 rejected (lead kept), or the
/// stored answer of an earlier request with the same idempotency key.
///
/// A valid lead without an idempotency key is stored by one statement, with no transaction
/// around it, that checks the blocklist (and a remembered hook) itself and writes nothing
/// unless both pass. Any other request, and a lead that statement turned away, is decided
/// in a transaction, step by step.
///
/// With a `handoff` whose worker is taking jobs, the lead's qualify job is written claimed by
/// that worker and handed to it once stored ([`steps::Handoff`]), instead of queued.
pub async fn submit(intake: &Intake, input: Submitted<'_>) -> Result<Response, StoreError> {
    let (pool, handoff) = (&intake.pool, intake.handoff.as_ref());
    if input.meta.idempotency_key.is_none()
        && let Ok(valid) = &input.verdict
    {
        let gate = Gate {
            lead: valid,
            stamp: input.remembered,
        };
        let (mut rows, query) = Rows::new(&input, handoff, &input.verdict, Some(gate))?;
        let pool = pool.clone();
        let write = async move { query.fetch_one(&pool).await?.try_get::<bool, _>(0) };
        if settle(rows.take_handover(), write).await? {
            return Ok(rows.answer(&input, &intake.announcements));
        }
    }

    let mut tx = pool.begin().await?;
    // A valid lead's blocklist query confirms the hook too; other requests confirm it first.
    let mut unconfirmed = input.remembered;
    if let Some(stamp) = unconfirmed
        && (input.meta.idempotency_key.is_some() || input.verdict.is_err())
    {
        if !tokens::confirm(&mut tx, stamp).await? {
            return Err(StoreError::HookChanged);
        }
        unconfirmed = None;
    }
    if let Some(key) = input.meta.idempotency_key.as_deref()
        && let Some(earlier) = claim_key(&mut tx, input.hook.id, key, input.submission).await?
    {
        let (resp, entry) = earlier.answer(&input);
        insert_log(&mut tx, &entry, earlier.lead_id).await?;
        tx.commit().await?;
        if earlier.same_request {
            metrics::lead(&input.hook.name, LeadOutcome::Duplicate);
        }
        return Ok(resp);
    }

    let verdict = match &input.verdict {
        Ok(valid) => match blocked(&mut tx, valid, unconfirmed).await? {
            Blocked::HookChanged => return Err(StoreError::HookChanged),
            Blocked::By(kind) => Err(validate::blocked(kind)),
            Blocked::No => Ok(valid.clone()),
        },
        Err(rejection) => Err(rejection.clone()),
    };
    let (mut rows, query) = Rows::new(&input, handoff, &verdict, None)?;
    query.execute(&mut *tx).await?;
    settle(rows.take_handover(), async move {
        tx.commit().await.map(|()| true)
    })
    .await?;
    Ok(rows.answer(&input, &intake.announcements))
}

/// Runs `write` (the lead's statement, or its transaction's commit), which returns whether
/// it stored the lead, and then hands the claimed job over. On a task of its own: the
/// request's timeout may drop this future, and a job stored claimed but never handed over
/// would stay claimed by a live worker.
async fn settle(
    handover: Option<Handover>,
    write: impl Future<Output = Result<bool, sqlx::Error>> + Send + 'static,
) -> Result<bool, StoreError> {
    let Some(h) = handover else {
        return Ok(write.await?);
    };
    let stored = tokio::spawn(async move {
        let stored = write.await?;
        if stored {
            h.handoff.dispatch(h.job, h.job_id, h.worker).await;
        }
        Ok::<bool, sqlx::Error>(stored)
    })
    .await??;
    Ok(stored)
}

/// The answer stored under an idempotency key by an earlier request.
struct Earlier {
    same_request: bool,
    status: Option<i16>,
    response: Option<Value>,
    lead_id: Option<Uuid>,
}

impl Earlier {
    fn answer<'a>(&self, input: &Submitted<'a>) -> (Response, LogEntry<'a>) {
        let (code, body) = match (&self.status, &self.response, self.same_request) {
            (Some(code), Some(body), true) => (
                StatusCode::from_u16(*code as u16).unwrap_or(StatusCode::OK),
                body.clone(),
            ),
            _ => {
                let err = ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "Idempotency key reused",
                    "This Idempotency-Key was already used with a different request body",
                );
                (err.code, serde_json::to_value(&err).unwrap_or(Value::Null))
            }
        };
        let entry = LogEntry {
            hook: Some(input.hook),
            meta: input.meta,
            body: Some(input.body),
            status: code.as_u16(),
            outcome: if self.same_request {
                "duplicate"
            } else {
                "rejected"
            },
            reason: if self.same_request {
                "repeated idempotency key: original answer replayed".to_owned()
            } else {
                "idempotency key reused with a different body".to_owned()
            },
        };
        (reply::json(code, &body), entry)
    }
}

/// Claims an idempotency key for this request, or returns what an earlier request stored.
/// A concurrent request with the same key waits on the row until the first one commits,
/// so twenty simultaneous duplicates make one lead.
async fn claim_key(
    conn: &mut PgConnection,
    hook_id: i64,
    key: &str,
    submission: &Submission,
) -> Result<Option<Earlier>, sqlx::Error> {
    let request_hash: [u8; 32] = Sha256::digest(parse::canonical(submission)).into();
    let claimed = sqlx::query(
        "INSERT INTO idempotency_keys (hook_id, key, request_hash) VALUES ($1, $2, $3) \
         ON CONFLICT DO NOTHING",
    )
    .bind(hook_id)
    .bind(key)
    .bind(&request_hash[..])
    .execute(&mut *conn)
    .await?;
    if claimed.rows_affected() == 1 {
        return Ok(None);
    }
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT request_hash, status_code, response, lead_id FROM idempotency_keys \
         WHERE hook_id = $1 AND key = $2",
    )
    .bind(hook_id)
    .bind(key)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| Earlier {
        same_request: row.request_hash == request_hash[..],
        status: row.status_code,
        response: row.response,
        lead_id: row.lead_id,
    }))
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    request_hash: Vec<u8>,
    status_code: Option<i16>,
    response: Option<Value>,
    lead_id: Option<Uuid>,
}

enum Blocked {
    No,
    By(BlockKind),
    /// The remembered hook to confirm has changed (or the token is no longer its own).
    HookChanged,
}

/// Whether the lead's phone or email is blocked; with a `stamp`, confirms the remembered
/// hook in the same round trip.
async fn blocked(
    conn: &mut PgConnection,
    lead: &ValidLead,
    stamp: Option<&Stamp>,
) -> Result<Blocked, sqlx::Error> {
    let query = sqlx::query(concat!(
        "SELECT (SELECT kind ",
        blocklist_match_sql!("$1", "$2"),
        " ORDER BY kind DESC LIMIT 1), $3::bigint IS NULL OR ",
        tokens::unchanged_sql!("$3", "$4", "$5")
    ))
    .bind(&lead.phone.e164)
    .bind(lead.email.as_deref());
    let row = Stamp::bind_or_null(stamp, query).fetch_one(conn).await?;
    let (kind, hook_unchanged): (Option<String>, bool) = (row.try_get(0)?, row.try_get(1)?);
    Ok(match kind.as_deref() {
        _ if !hook_unchanged => Blocked::HookChanged,
        Some("phone") => Blocked::By(BlockKind::Phone),
        Some(_) => Blocked::By(BlockKind::Email),
        None => Blocked::No,
    })
}
