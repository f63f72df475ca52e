//! The block list, re-checked before every attempt.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::engine::RunContext;

/// Re-checked before every attempt: the block list may have grown since intake.
pub(super) async fn blocked(
    tx: &mut PgConnection,
    ctx: &RunContext,
) -> Result<Option<&'static str>, sqlx::Error> {
    Ok(blocked_many(tx, &[ctx]).await?.remove(&ctx.run_id))
}

/// [`blocked`] for the leads of several runs, in one statement: what of each run's lead is
/// on the block list (its phone number before its email address), by run.
pub(super) async fn blocked_many(
    tx: &mut PgConnection,
    ctxs: &[&RunContext],
) -> Result<HashMap<Uuid, &'static str>, sqlx::Error> {
    let runs: Vec<Uuid> = ctxs.iter().map(|c| c.run_id).collect();
    let phones: Vec<Option<&str>> = ctxs.iter().map(|c| c.phone_e164.as_deref()).collect();
    let emails: Vec<Option<&str>> = ctxs.iter().map(|c| c.email.as_deref()).collect();
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT u.run_id, b.kind FROM UNNEST($1::uuid[], $2::text[], $3::text[]) \
              AS u(run_id, phone, email) \
         JOIN blocklist b ON (b.kind = 'phone' AND b.value = u.phone) \
                          OR (b.kind = 'email' AND b.value = lower(u.email)) \
         ORDER BY b.kind",
    )
    .bind(&runs)
    .bind(&phones)
    .bind(&emails)
    .fetch_all(tx)
    .await?;
    // Ordered by kind: a run's phone row comes last and wins.
    Ok(rows
        .into_iter()
        .map(|(run, kind)| {
            let what = if kind == "phone" {
                "phone number"
            } else {
                "email address"
            };
            (run, what)
        })
        .collect())
}
