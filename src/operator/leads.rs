//! One lead, as an operator sees it: the lead (phone and email masked unless revealed), its
//! latest run with its steps and callback, every run it had (replays start new ones) and the
//! lead's timeline.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use super::actor::Actor;
use super::reveal;
use crate::db::At;
use crate::lead::Submission;

/// How many past runs a lead view lists (newest first); replays are rare, so this only
/// bounds a pathological lead.
const RUN_HISTORY: i64 = 100;

#[derive(Debug, Serialize)]
pub struct LeadView {
    pub lead: LeadSummary,
    pub run: Option<RunView>,
    pub steps: Vec<StepView>,
    pub callback: CallbackView,
    pub timeline: Vec<TimelineEntry>,
    /// Every run of the lead, newest first (the first is `run`).
    pub runs: Vec<RunView>,
}

/// The latest run's callback: when the next call is due, what set that time, and every
/// attempt with its outcome and the provider's call id.
#[derive(Debug, Default, Serialize)]
pub struct CallbackView {
    pub scheduled_for: Option<At>,
    pub rule: Option<String>,
    pub attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AttemptView {
    pub n: i32,
    pub state: String,
    pub outcome: Option<String>,
    pub provider: String,
    pub provider_call_id: Option<String>,
    pub scheduled_for: At,
    pub placed_at: Option<At>,
    pub answered_by: Option<String>,
    pub call_status: Option<String>,
    pub lead_zone: Option<String>,
    pub zone_rule: String,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LeadSummary {
    pub id: Uuid,
    pub hook: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub country_code: Option<String>,
    pub company: Option<String>,
    pub fields: Value,
    pub received_at: At,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RunView {
    pub id: Uuid,
    pub status: String,
    pub created_at: At,
    pub updated_at: At,
    pub reason: Option<String>,
    pub team: Option<String>,
    /// The run this one replays.
    pub replay_of: Option<Uuid>,
    #[serde(skip)]
    pub scheduled_for: Option<At>,
    #[serde(skip)]
    pub schedule_rule: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StepView {
    pub name: String,
    /// Which execution of the step in the run (a callback has one per attempt).
    pub n: i32,
    pub status: String,
    /// The job this step runs as, for `jobs show` / retry / cancel; none for validate.
    pub job_id: Option<String>,
    pub attempts: i32,
    pub started_at: Option<At>,
    pub finished_at: Option<At>,
    pub next_run_at: Option<At>,
    pub output: Option<Value>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct TimelineEntry {
    pub at: At,
    pub event: String,
    pub actor: String,
    pub detail: Value,
}

#[derive(sqlx::FromRow)]
struct LeadRow {
    hook: String,
    submission: Value,
    name: Option<String>,
    phone_e164: Option<String>,
    company: Option<String>,
    received_at: At,
}

/// The lead; with `reveal`, its phone and email in full, the reveal recorded in its
/// timeline as done by that actor.
pub async fn show(
    pool: &PgPool,
    lead_id: Uuid,
    reveal: Option<&Actor>,
) -> Result<Option<LeadView>, sqlx::Error> {
    let row: Option<LeadRow> = sqlx::query_as(
        "SELECT h.name AS hook, l.submission, l.name, l.phone_e164, l.company, l.received_at \
         FROM leads l JOIN hooks h ON h.id = l.hook_id WHERE l.id = $1",
    )
    .bind(lead_id)
    .fetch_optional(pool)
    .await?;
    let Some(LeadRow {
        hook,
        submission,
        name,
        phone_e164: e164,
        company,
        received_at,
    }) = row
    else {
        return Ok(None);
    };
    let sub: Submission = serde_json::from_value(submission).unwrap_or_default();
    let phone = e164.or_else(|| raw_phone(&sub));
    let email = sub.field("email").map(|e| e.trim().to_owned());
    if let Some(actor) = reveal {
        reveal::record(pool, &[lead_id], actor).await?;
    }
    let lead = LeadSummary {
        id: lead_id,
        hook,
        name,
        phone: phone.map(|p| reveal::phone(p, reveal.is_some())),
        email: email.map(|e| reveal::email(e, reveal.is_some())),
        country_code: sub.country_code.clone(),
        company,
        fields: serde_json::to_value(&sub.custom).unwrap_or(Value::Null),
        received_at,
    };
    let mut runs: Vec<RunView> = sqlx::query_as(
        "SELECT id, status, created_at, updated_at, reason, team, replay_of, scheduled_for, \
                schedule_rule FROM runs \
         WHERE lead_id = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(lead_id)
    .bind(RUN_HISTORY)
    .fetch_all(pool)
    .await?;
    let run = (!runs.is_empty()).then(|| runs.remove(0));
    let steps =
        match &run {
            Some(run) => sqlx::query_as(
                "SELECT name, n, status, job_id, attempts, started_at, finished_at, next_run_at, \
                    output, error \
                 FROM steps WHERE run_id = $1 ORDER BY created_at, n",
            )
            .bind(run.id)
            .fetch_all(pool)
            .await?,
            None => Vec::new(),
        };
    let callback = match &run {
        Some(run) => CallbackView {
            scheduled_for: run.scheduled_for,
            rule: run.schedule_rule.clone(),
            attempts: sqlx::query_as(
                "SELECT n, state, outcome, provider, provider_call_id, scheduled_for, placed_at, \
                        answered_by, call_status, lead_zone, zone_rule, error \
                 FROM callback_attempts WHERE run_id = $1 ORDER BY n",
            )
            .bind(run.id)
            .fetch_all(pool)
            .await?,
        },
        None => CallbackView::default(),
    };
    let timeline = sqlx::query_as(
        "SELECT at, event, actor, detail FROM timeline WHERE lead_id = $1 ORDER BY id",
    )
    .bind(lead_id)
    .fetch_all(pool)
    .await?;
    let history = run.iter().cloned().chain(runs).collect();
    Ok(Some(LeadView {
        lead,
        run,
        steps,
        callback,
        timeline,
        runs: history,
    }))
}

/// A rejected lead has no E.164 number; mask what was sent instead.
fn raw_phone(sub: &Submission) -> Option<String> {
    let raw = format!(
        "{}{}",
        sub.country_code.as_deref().unwrap_or("").trim(),
        sub.phone.as_deref().unwrap_or("").trim()
    );
    (!raw.is_empty()).then_some(raw)
}
