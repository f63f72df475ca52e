//! The lead's timeline: an append-only list of what happened to it, by whom, and when. Intake,
//! steps and operator actions all write here; `GET /v1/leads/{id}` reads it back.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// Who caused an event. The system, or an operator named by their credential's label.
pub const SYSTEM: &str = "system";

pub async fn record(
    conn: &mut PgConnection,
    lead_id: Uuid,
    run_id: Option<Uuid>,
    event: &str,
    actor: &str,
    detail: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO timeline (lead_id, run_id, event, actor, detail) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(lead_id)
    .bind(run_id)
    .bind(event)
    .bind(actor)
    .bind(detail)
    .execute(conn)
    .await?;
    Ok(())
}

/// Several events of one lead in one statement, in the order given.
pub async fn record_all(
    conn: &mut PgConnection,
    lead_id: Uuid,
    run_id: Option<Uuid>,
    actor: &str,
    events: Vec<(String, Value)>,
) -> Result<(), sqlx::Error> {
    let entries = events
        .into_iter()
        .map(|(event, detail)| Entry {
            lead_id,
            run_id,
            event,
            detail,
        })
        .collect();
    record_many(conn, actor, entries).await
}

/// One event to record with [`record_many`].
#[derive(Debug, Clone)]
pub struct Entry {
    pub lead_id: Uuid,
    pub run_id: Option<Uuid>,
    pub event: String,
    pub detail: Value,
}

/// Events of any leads in one statement, in the order given.
pub async fn record_many(
    conn: &mut PgConnection,
    actor: &str,
    entries: Vec<Entry>,
) -> Result<(), sqlx::Error> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut leads = Vec::with_capacity(entries.len());
    let mut runs = Vec::with_capacity(entries.len());
    let mut names = Vec::with_capacity(entries.len());
    let mut details = Vec::with_capacity(entries.len());
    for e in entries {
        leads.push(e.lead_id);
        runs.push(e.run_id);
        names.push(e.event);
        details.push(e.detail);
    }
    sqlx::query(
        "INSERT INTO timeline (lead_id, run_id, event, actor, detail) \
         SELECT e.lead_id, e.run_id, e.event, $1, e.detail \
         FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::jsonb[]) WITH ORDINALITY \
              AS e(lead_id, run_id, event, detail, i) ORDER BY e.i",
    )
    .bind(actor)
    .bind(leads)
    .bind(runs)
    .bind(names)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}
