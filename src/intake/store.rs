//! The one intake transaction: idempotency key, webhook log, lead, run, the validate step and
//! the first worker job commit together, and only then does the sender get its answer. A
//! crash before the commit leaves nothing (the sender got no 2xx and retries); after it,
//! nothing can be lost.

use poem::Response;
use poem::http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::RequestMeta;
use super::parse;
use super::tokens::{self, Stamp};
use crate::hooks::Hook;
use crate::lead::{RunStatus, Step, Submission};
use crate::metrics::{self, LeadOutcome, Observation};
use crate::queue::{self, NewJob, Started, StepJob};
use crate::reply::{self, ApiError};
use crate::steps::{self, Executions, Handoff, NewRow, StepError};
use crate::timeline;
use crate::validate::{self, BlockKind, Rejection, ValidLead};

/// A webhook-log row for a request that ends before the lead transaction.
pub struct LogEntry<'a> {
    hook: Option<&'a Hook>,
    meta: &'a RequestMeta,
    body: Option<&'a [u8]>,
    status: u16,
    outcome: &'static str,
    reason: String,
}

impl<'a> LogEntry<'a> {
    pub fn rejected(
        hook: Option<&'a Hook>,
        meta: &'a RequestMeta,
        body: Option<&'a [u8]>,
        err: &ApiError,
    ) -> Self {
        LogEntry {
            hook,
            meta,
            // Bodies of unauthenticated requests are not kept: anyone can send them.
            body: hook.and(body),
            status: err.code.as_u16(),
            outcome: if err.code.is_server_error() {
                "error"
            } else {
                "rejected"
            },
            reason: err.details.clone(),
        }
    }
}

impl LogEntry<'_> {
    /// The size the sender declared, else the size read.
    fn body_size(&self) -> i64 {
        let size = self
            .meta
            .content_length
            .or(self.body.map(|b| b.len() as u64))
            .unwrap_or(0);
        i64::try_from(size).unwrap_or(i64::MAX)
    }
}

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

/// A parsed, authenticated submission with its validation verdict.
pub struct Submitted<'a> {
    pub hook: &'a Hook,
    pub meta: &'a RequestMeta,
    pub body: &'a [u8],
    pub submission: &'a Submission,
    pub verdict: Result<ValidLead, Rejection>,
    pub max_attempts: u32,
    /// Set when the hook was remembered rather than read for this request: the transaction
    /// confirms it before storing anything ([`tokens`]).
    pub remembered: Option<&'a Stamp>,
}

/// Stores the submission and answers it: 200 accepted, 422 rejected (lead kept), or the
/// stored answer of an earlier request with the same idempotency key.
///
/// With a `handoff` whose worker is taking jobs, the lead's qualify job is written claimed by
/// that worker and handed to it after the commit ([`Handoff`]), instead of queued.
pub async fn submit(
    pool: &PgPool,
    handoff: Option<&Handoff>,
    input: Submitted<'_>,
) -> Result<Response, StoreError> {
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
    let lead_id = Uuid::now_v7();
    let run_id = Uuid::now_v7();
    let (code, body, outcome, log_reason) = match &verdict {
        Ok(valid) => {
            let auto = valid.is_auto.unwrap_or(input.hook.auto_callback);
            let body = json!({
                "status": "success",
                "message": "Webhook data captured successfully",
                "auto_callback": if auto { "initiated" } else { "disabled" },
                "lead_id": lead_id,
            });
            (StatusCode::OK, body, "accepted", String::new())
        }
        Err(r) => {
            let err = ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                r.message.clone(),
                r.details.clone(),
            );
            let body = serde_json::to_value(&err).unwrap_or(Value::Null);
            (
                err.code,
                body,
                "rejected",
                format!("{}: {}", r.reason, r.details),
            )
        }
    };
    let log = LogEntry {
        hook: Some(input.hook),
        meta: input.meta,
        body: Some(input.body),
        status: code.as_u16(),
        outcome,
        reason: log_reason,
    };
    let ids = (lead_id, run_id);
    // An accepted lead's qualify job and step row go in with its rows.
    let job = StepJob { run_id, n: 1 };
    let first = NewJob {
        job,
        run_at: None,
        max_attempts: input.max_attempts,
    };
    let worker = handoff.and_then(Handoff::worker);
    let started = worker.clone().map(Started::ClaimedBy);
    let next = match verdict {
        Ok(_) => steps::new_executions(Step::Qualify, &[first], started.as_ref()),
        Err(_) => Vec::new(),
    };
    insert_records(&mut tx, &input, ids, &verdict, &log, &body, &next).await?;
    let claimed = match (handoff, worker, next.first()) {
        (Some(handoff), Some(worker), Some(row)) => {
            Some((handoff.clone(), job, row.job_id.clone(), worker))
        }
        _ => None,
    };
    match claimed {
        // On a task of its own: the request's timeout may drop this future, and a job
        // committed claimed but never handed over would stay claimed by a live worker.
        Some((handoff, job, job_id, worker)) => {
            tokio::spawn(async move {
                tx.commit().await?;
                handoff.dispatch(job, job_id, worker).await;
                Ok::<(), sqlx::Error>(())
            })
            .await??;
        }
        None => tx.commit().await?,
    }
    match &verdict {
        Ok(_) => metrics::lead(&input.hook.name, LeadOutcome::Accepted),
        Err(r) => {
            metrics::lead(&input.hook.name, LeadOutcome::Rejected(r.reason));
            let workflow = input.hook.workflow.clone();
            let status = RunStatus::Rejected;
            Observation::RunFinished { workflow, status }.record();
        }
    }
    Ok(reply::json(code, &body))
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
        "SELECT (SELECT kind FROM blocklist \
                 WHERE (kind = 'phone' AND value = $1) OR (kind = 'email' AND value = lower($2)) \
                 ORDER BY kind DESC LIMIT 1), \
                $3::bigint IS NULL OR ",
        tokens::unchanged_sql!("$3", "$4", "$5")
    ))
    .bind(&lead.phone.e164)
    .bind(lead.email.as_deref());
    let query = match stamp {
        Some(stamp) => stamp.bind(query),
        None => query
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(None::<Vec<u8>>),
    };
    let row = query.fetch_one(conn).await?;
    let (kind, hook_unchanged): (Option<String>, bool) = (row.try_get(0)?, row.try_get(1)?);
    Ok(match kind.as_deref() {
        _ if !hook_unchanged => Blocked::HookChanged,
        Some("phone") => Blocked::By(BlockKind::Phone),
        Some(_) => Blocked::By(BlockKind::Email),
        None => Blocked::No,
    })
}

/// The request's rows in one statement (one round trip): the lead, its run, the validate
/// step with its timeline events, the webhook log, the answer stored under the request's
/// idempotency key if it has one, and the `next` executions (an accepted lead's qualify
/// step row and job).
async fn insert_records(
    conn: &mut PgConnection,
    input: &Submitted<'_>,
    (lead_id, run_id): (Uuid, Uuid),
    verdict: &Result<ValidLead, Rejection>,
    log: &LogEntry<'_>,
    answer: &Value,
    next: &[NewRow<'_>],
) -> Result<(), StoreError> {
    let sub = input.submission;
    let valid = verdict.as_ref().ok();
    let auto = valid
        .and_then(|v| v.is_auto)
        .unwrap_or(input.hook.auto_callback);
    let submission = serde_json::to_value(sub).unwrap_or(Value::Null);
    let (run_status, reason) = match verdict {
        Ok(_) => (RunStatus::Running, None),
        Err(r) => (RunStatus::Rejected, Some(r.details.as_str())),
    };
    let step = ValidateRow::of(verdict);
    let received = json!({
        "hook": input.hook.name,
        "content_type": input.meta.content_type,
        "bytes": input.body.len(),
    });
    let query = sqlx::query(concat!(
        "WITH jobs AS (",
        queue::insert_jobs_sql!(),
        "), next AS (",
        steps::insert_step_rows_sql!(),
        "), lead AS ( \
           INSERT INTO leads (id, hook_id, workflow, accepted, submission, name, phone_e164, \
                              phone_region, email, company, auto_callback) \
           VALUES ($16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)), \
         run AS ( \
           INSERT INTO runs (id, lead_id, workflow, status, reason) \
           VALUES ($27, $16, $18, $28, $29)), \
         step AS ( \
           INSERT INTO steps (run_id, name, n, status, attempts, max_attempts, started_at, \
                              finished_at, output, error) \
           VALUES ($27, 'validate', 1, $30, 1, 1, now(), now(), $31, $32)), \
         events AS ( \
           INSERT INTO timeline (lead_id, run_id, event, actor, detail) \
           VALUES ($16, $27, 'received', $33, $34), ($16, $27, $35, $33, $36)), \
         answer AS ( \
           UPDATE idempotency_keys SET status_code = $37, response = $38, lead_id = $16 \
           WHERE hook_id = $17 AND key = $39) \
         INSERT INTO webhook_log (hook_id, hook_name, content_type, body_size, body, headers, \
                                  status_code, outcome, reason, lead_id, idempotency_key) \
         VALUES ($17, $40, $41, $42, $43, $44, $37, $45, $46, $16, $39)"
    ));
    Executions::new(next)
        .map_err(StepError::from)?
        .bind(query)
        .bind(lead_id)
        .bind(input.hook.id)
        .bind(&input.hook.workflow)
        .bind(valid.is_some())
        .bind(submission)
        .bind(sub.name.as_deref().map(str::trim))
        .bind(valid.map(|v| v.phone.e164.as_str()))
        .bind(valid.and_then(|v| v.phone.region.as_deref()))
        .bind(
            valid
                .and_then(|v| v.email.as_deref())
                .or(sub.email.as_deref()),
        )
        .bind(sub.company_name.as_deref().map(str::trim))
        .bind(auto)
        .bind(run_id)
        .bind(run_status.as_str())
        .bind(reason)
        .bind(step.status)
        .bind(step.output)
        .bind(step.error)
        .bind(timeline::SYSTEM)
        .bind(received)
        .bind(step.event)
        .bind(step.detail)
        .bind(log.status as i16)
        .bind(answer)
        .bind(input.meta.idempotency_key.as_deref())
        .bind(input.hook.name.as_str())
        .bind(input.meta.content_type.as_deref())
        .bind(log.body_size())
        .bind(log.body)
        .bind(&input.meta.headers)
        .bind(log.outcome)
        .bind(&log.reason)
        .execute(conn)
        .await?;
    Ok(())
}

/// The validate step's row, written settled since it runs inline (at intake, or when an
/// operator replays a lead), and its `validated` or `rejected` timeline event.
pub(crate) async fn record_validate_step(
    conn: &mut PgConnection,
    lead_id: Uuid,
    run_id: Uuid,
    verdict: &Result<ValidLead, Rejection>,
) -> Result<(), sqlx::Error> {
    let step = ValidateRow::of(verdict);
    sqlx::query(
        "INSERT INTO steps (run_id, name, n, status, attempts, max_attempts, started_at, \
                            finished_at, output, error) \
         VALUES ($1, 'validate', 1, $2, 1, 1, now(), now(), $3, $4)",
    )
    .bind(run_id)
    .bind(step.status)
    .bind(step.output)
    .bind(step.error)
    .execute(&mut *conn)
    .await?;
    let (event, detail) = (step.event, step.detail);
    timeline::record(conn, lead_id, Some(run_id), event, timeline::SYSTEM, detail).await
}

/// The validate step's row and its timeline event, by verdict.
struct ValidateRow {
    status: &'static str,
    output: Option<Value>,
    error: Option<String>,
    event: &'static str,
    detail: Value,
}

impl ValidateRow {
    fn of(verdict: &Result<ValidLead, Rejection>) -> ValidateRow {
        match verdict {
            Ok(v) => ValidateRow {
                status: "ok",
                output: Some(json!({
                    "phone_region": v.phone.region,
                    "phone_type": v.phone.number_type,
                    "is_auto": v.is_auto,
                })),
                error: None,
                event: "validated",
                detail: json!({ "phone_region": v.phone.region }),
            },
            Err(r) => ValidateRow {
                status: "failed",
                output: None,
                error: Some(format!("{}: {}", r.field, r.details)),
                event: "rejected",
                detail: json!({ "field": r.field, "reason": r.reason, "details": r.details }),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("enqueueing the first step: {0}")]
    Enqueue(#[from] steps::StepError),
    #[error("committing the lead: {0}")]
    Commit(#[from] tokio::task::JoinError),
    /// The remembered hook changed since; the request is decided again from the database.
    #[error("the hook changed since its token was remembered")]
    HookChanged,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let db = match &e {
            StoreError::Db(db) => Some(db),
            StoreError::Enqueue(step) => step.db_error(),
            StoreError::Commit(_) | StoreError::HookChanged => None,
        };
        match db {
            Some(db) => ApiError::from_db(db),
            None => {
                tracing::error!(error = %e, "intake transaction failed");
                ApiError::internal("The lead could not be stored; it has been logged")
            }
        }
    }
}
