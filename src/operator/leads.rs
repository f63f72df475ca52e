//! One lead, as an operator sees it: the lead (phone and email masked), its latest run, the
//! run's steps and the lead's timeline.

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::At;
use crate::lead::Submission;
use crate::phone;
use crate::validate::mask_email;

#[derive(Debug, Serialize)]
pub struct LeadView {
    pub lead: LeadSummary,
    pub run: Option<RunView>,
    pub steps: Vec<StepView>,
    pub callback: CallbackView,
    pub timeline: Vec<TimelineEntry>,
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

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct RunView {
    pub id: Uuid,
    pub status: String,
    pub created_at: At,
    pub updated_at: At,
    pub reason: Option<String>,
    #[serde(skip)]
    pub scheduled_for: Option<At>,
    #[serde(skip)]
    pub schedule_rule: Option<String>,
}

#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct StepView {
    pub name: String,
    pub status: String,
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

pub async fn show(pool: &PgPool, lead_id: Uuid) -> Result<Option<LeadView>, sqlx::Error> {
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
    let lead = LeadSummary {
        id: lead_id,
        hook,
        name,
        phone: e164.or_else(|| raw_phone(&sub)).map(|p| phone::mask(&p)),
        email: sub.field("email").as_deref().map(str::trim).map(mask_email),
        country_code: sub.country_code.clone(),
        company,
        fields: serde_json::to_value(&sub.custom).unwrap_or(Value::Null),
        received_at,
    };
    let run: Option<RunView> = sqlx::query_as(
        "SELECT id, status, created_at, updated_at, reason, scheduled_for, schedule_rule FROM runs \
         WHERE lead_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(lead_id)
    .fetch_optional(pool)
    .await?;
    let steps = match &run {
        Some(run) => sqlx::query_as(
            "SELECT name, status, attempts, started_at, finished_at, next_run_at, output, error \
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
    Ok(Some(LeadView {
        lead,
        run,
        steps,
        callback,
        timeline,
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
