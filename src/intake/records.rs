//! The rows a stored request writes, and the one statement that writes them: on its own for
//! a valid lead (it checks the blocklist and the remembered hook first, and writes nothing if
//! either fails), or as the last statement of the transaction that decided the request.

use poem::Response;
use poem::http::StatusCode;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;

use super::submitted::{LogEntry, StoreError, Submitted};
use super::tokens::{self, Stamp};
use crate::db::Query;
use crate::engine::announce::{self, Announcements};
use crate::engine::queue::{self, NewJob, Started, StepJob};
use crate::engine::{self, Executions, Handoff, NewRow, StepError};
use crate::graph::Step;
use crate::lead::RunStatus;
use crate::metrics::{self, LeadOutcome, Observation};
use crate::reply::{self, ApiError};
use crate::timeline;
use crate::validate::{Rejection, ValidLead};

/// What a lead statement's `gate` checks before it writes anything: that the lead is not
/// blocked and, with a `stamp`, that the remembered hook is unchanged.
#[derive(Clone, Copy)]
pub(super) struct Gate<'a> {
    pub lead: &'a ValidLead,
    pub stamp: Option<&'a Stamp>,
}

/// A claimed qualify job to hand to this process's worker once the lead is stored.
pub(super) struct Handover {
    pub handoff: Handoff,
    pub job: StepJob,
    pub job_id: String,
    pub worker: String,
}

/// A request's answer, and what becomes of its qualify job once its rows are stored.
pub(super) struct Rows {
    code: StatusCode,
    body: Value,
    /// The rejection's reason, for a rejected lead.
    rejected: Option<&'static str>,
    first: FirstJob,
}

/// An accepted lead's qualify job: handed to this process's worker, or queued (and then
/// announced).
enum FirstJob {
    None,
    HandedOver(Handover),
    Queued(String),
}

impl Rows {
    /// The rows for `verdict` and the statement that writes them (see [`records_query`]).
    pub(super) fn new(
        input: &Submitted<'_>,
        handoff: Option<&Handoff>,
        verdict: &Result<ValidLead, Rejection>,
        gate: Option<Gate<'_>>,
    ) -> Result<(Rows, Query<'static>), StoreError> {
        let lead_id = Uuid::now_v7();
        let run_id = Uuid::now_v7();
        let (code, body, outcome, log_reason) = match verdict {
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
            Ok(_) => engine::new_executions(Step::first_on_workers(), &[first], started.as_ref()),
            Err(_) => Vec::new(),
        };
        let ids = (lead_id, run_id);
        let query = records_query(input, ids, verdict, &log, &body, &next, gate)?;
        let first = match (handoff, worker, next.first()) {
            (Some(handoff), Some(worker), Some(row)) => FirstJob::HandedOver(Handover {
                handoff: handoff.clone(),
                job,
                job_id: row.job_id.clone(),
                worker,
            }),
            (_, _, Some(row)) => FirstJob::Queued(row.job_id.clone()),
            (_, _, None) => FirstJob::None,
        };
        let rejected = verdict.as_ref().err().map(|r| r.reason);
        let rows = Rows {
            code,
            body,
            rejected,
            first,
        };
        Ok((rows, query))
    }

    /// The job to hand over once the rows are stored, if there is one (taken: the answer
    /// has nothing left to do for it).
    pub(super) fn take_handover(&mut self) -> Option<Handover> {
        match std::mem::replace(&mut self.first, FirstJob::None) {
            FirstJob::HandedOver(handover) => Some(handover),
            other => {
                self.first = other;
                None
            }
        }
    }

    /// Announces the stored request's queued job, counts the request and answers it.
    pub(super) fn answer(self, input: &Submitted<'_>, announcements: &Announcements) -> Response {
        if let FirstJob::Queued(job_id) = &self.first {
            announcements.announce(queue::queue_name(Step::first_on_workers()), job_id);
        }
        match self.rejected {
            None => metrics::lead(&input.hook.name, LeadOutcome::Accepted),
            Some(reason) => {
                metrics::lead(&input.hook.name, LeadOutcome::Rejected(reason));
                let workflow = input.hook.workflow.clone();
                let status = RunStatus::Rejected;
                Observation::RunFinished { workflow, status }.record();
            }
        }
        reply::json(self.code, &self.body)
    }
}

/// The blocklist's rows that match a phone (E.164) and an email (compared lower case).
macro_rules! blocklist_match_sql {
    ($phone:literal, $email:literal) => {
        concat!(
            "FROM blocklist WHERE (kind = 'phone' AND value = ",
            $phone,
            ") OR (kind = 'email' AND value = lower(",
            $email,
            "))"
        )
    };
}
pub(super) use blocklist_match_sql;
/// The request's rows in one statement (one round trip): the lead, its run, the validate
/// step with its timeline events, the webhook log, the answer stored under the request's
/// idempotency key if it has one, and the `next` executions (an accepted lead's qualify
/// step row and job). The statement returns whether it wrote them: always, unless a `gate`
/// turned the lead away, in which case it wrote nothing. The insert trigger does not announce
/// the job: it would make the transaction commit under a database-wide lock ([`announce`]).
fn records_query(
    input: &Submitted<'_>,
    (lead_id, run_id): (Uuid, Uuid),
    verdict: &Result<ValidLead, Rejection>,
    log: &LogEntry<'_>,
    answer: &Value,
    next: &[NewRow<'_>],
    gate: Option<Gate<'_>>,
) -> Result<Query<'static>, StoreError> {
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
        "WITH gate AS ( \
           SELECT (NOT $47::bool OR (NOT EXISTS (SELECT 1 ",
        blocklist_match_sql!("$48", "$49"),
        ") AND ($50::bigint IS NULL OR ",
        tokens::unchanged_sql!("$50", "$51", "$52"),
        "))) AND set_config('leadflow.announce', $53, true) = $53 AS ok), \
         jobs AS (",
        queue::insert_jobs_sql!(),
        " WHERE (SELECT ok FROM gate)), next AS (",
        engine::insert_step_rows_sql!(),
        " WHERE (SELECT ok FROM gate)), \
         lead AS ( \
           INSERT INTO leads (id, hook_id, workflow, accepted, submission, name, phone_e164, \
                              phone_region, email, company, auto_callback) \
           SELECT $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26 FROM gate WHERE ok), \
         run AS ( \
           INSERT INTO runs (id, lead_id, workflow, status, reason) \
           SELECT $27, $16, $18, $28, $29 FROM gate WHERE ok), \
         step AS ( \
           INSERT INTO steps (run_id, name, n, status, attempts, max_attempts, started_at, \
                              finished_at, output, error) \
           SELECT $27, 'validate', 1, $30, 1, 1, now(), now(), $31, $32 FROM gate WHERE ok), \
         events AS ( \
           INSERT INTO timeline (lead_id, run_id, event, actor, detail) \
           SELECT $16, $27, e.event, $33, e.detail \
           FROM gate, (VALUES ('received', $34::jsonb), ($35::text, $36::jsonb)) \
                AS e(event, detail) \
           WHERE gate.ok), \
         answer AS ( \
           UPDATE idempotency_keys SET status_code = $37, response = $38, lead_id = $16 \
           WHERE hook_id = $17 AND key = $39 AND (SELECT ok FROM gate)), \
         logged AS ( \
           INSERT INTO webhook_log (hook_id, hook_name, content_type, body_size, body, \
                                    headers, status_code, outcome, reason, lead_id, \
                                    idempotency_key) \
           SELECT $17, $40, $41, $42, $43, $44, $37, $45, $46, $16, $39 FROM gate WHERE ok) \
         SELECT ok FROM gate"
    ));
    let query = Executions::new(next)
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
        .bind(gate.is_some())
        .bind(gate.map(|g| g.lead.phone.e164.as_str()))
        .bind(gate.and_then(|g| g.lead.email.as_deref()));
    let query = Stamp::bind_or_null(gate.and_then(|g| g.stamp), query);
    // The request announces its job itself once stored ([`announce`]).
    Ok(query.bind(announce::AFTER_COMMIT))
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
