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
    if events.is_empty() {
        return Ok(());
    }
    let (names, details): (Vec<String>, Vec<Value>) = events.into_iter().unzip();
    sqlx::query(
        "INSERT INTO timeline (lead_id, run_id, event, actor, detail) \
         SELECT $1, $2, e.event, $3, e.detail \
         FROM UNNEST($4::text[], $5::jsonb[]) WITH ORDINALITY AS e(event, detail, i) ORDER BY e.i",
    )
    .bind(lead_id)
    .bind(run_id)
    .bind(actor)
    .bind(names)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}
