//! The reads steps declare ([`Read`]), done for all the runs of a group in one statement each.

use std::collections::HashMap;

use sqlx::PgConnection;
use uuid::Uuid;

use super::{Engine, RunContext, StepError};
use crate::graph::{EarlierMatch, Read, Reads};

/// Reads `wanted` for `runs`; a run with nothing found has empty [`Reads`].
pub(super) async fn load(
    tx: &mut PgConnection,
    engine: &Engine,
    wanted: &[Read],
    runs: &[&RunContext],
) -> Result<HashMap<Uuid, Reads>, StepError> {
    let mut reads: HashMap<Uuid, Reads> = HashMap::new();
    for read in wanted {
        match read {
            Read::EarlierMatch => {
                for (run_id, found) in earlier_matches(tx, engine, runs).await? {
                    reads.entry(run_id).or_default().earlier_match = Some(found);
                }
            }
        }
    }
    Ok(reads)
}

/// For each run whose workflow dedupes, the earliest accepted lead received before its own
/// and within the window, with the same E.164 phone or the same email (a lead matching both
/// is a phone match). Ordering by (received_at, id) makes two simultaneous submissions agree
/// on which one is first.
///
/// One indexed lookup per kind and lead, merged: written as one `phone = … OR email = …`
/// with `ORDER BY … LIMIT 1`, a plan made for the parameters walked the received_at index
/// back through the whole window (23 ms against 0.3 ms with 12,500 leads in a day).
async fn earlier_matches(
    tx: &mut PgConnection,
    engine: &Engine,
    runs: &[&RunContext],
) -> Result<Vec<(Uuid, EarlierMatch)>, StepError> {
    let mut ids = Vec::with_capacity(runs.len());
    let mut leads = Vec::with_capacity(runs.len());
    let mut phones = Vec::with_capacity(runs.len());
    let mut emails = Vec::with_capacity(runs.len());
    let mut received = Vec::with_capacity(runs.len());
    let mut windows = Vec::with_capacity(runs.len());
    for ctx in runs {
        let Some(window) = engine.workflow(&ctx.workflow)?.dedupe_window else {
            continue;
        };
        ids.push(ctx.run_id);
        leads.push(ctx.lead_id);
        phones.push(ctx.phone_e164.as_deref());
        emails.push(ctx.email.as_deref());
        received.push(jiff_sqlx::Timestamp::from(ctx.received_at));
        windows.push(window.as_secs_f64());
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid, Uuid, String)> = sqlx::query_as(
        "SELECT u.run_id, m.id, m.kind \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[], \
                     $6::float8[]) AS u(run_id, lead_id, phone, email, received_at, window_s) \
         CROSS JOIN LATERAL ( \
           SELECT id, kind FROM ( \
             (SELECT id, received_at, 'phone' AS kind FROM leads \
               WHERE accepted AND phone_e164 = u.phone AND id <> u.lead_id \
                 AND (received_at, id) < (u.received_at, u.lead_id) \
                 AND received_at >= u.received_at - make_interval(secs => u.window_s) \
               ORDER BY received_at, id LIMIT 1) \
             UNION ALL \
             (SELECT id, received_at, 'email' FROM leads \
               WHERE accepted AND u.email IS NOT NULL AND lower(email) = lower(u.email) \
                 AND id <> u.lead_id AND (received_at, id) < (u.received_at, u.lead_id) \
                 AND received_at >= u.received_at - make_interval(secs => u.window_s) \
               ORDER BY received_at, id LIMIT 1) \
           ) c ORDER BY received_at, id, kind DESC LIMIT 1 \
         ) m",
    )
    .bind(&ids)
    .bind(&leads)
    .bind(&phones)
    .bind(&emails)
    .bind(&received)
    .bind(&windows)
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(run_id, lead_id, matched)| (run_id, EarlierMatch { lead_id, matched }))
        .collect())
}
