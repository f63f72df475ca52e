//! Masking and revealing a lead's phone and email. Masked everywhere by default; shown in
//! full only when an operator asks, and every such reveal is written to the lead's timeline,
//! so that who saw which contact details, and when, can be answered later.

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use super::actor::Actor;
use crate::phone;
use crate::timeline;
use crate::validate::mask_email;

pub fn phone(value: String, reveal: bool) -> String {
    if reveal { value } else { phone::mask(&value) }
}

pub fn email(value: String, reveal: bool) -> String {
    if reveal { value } else { mask_email(&value) }
}

/// Records that `actor` saw the full contact details of each lead, in one transaction.
pub async fn record(pool: &PgPool, leads: &[Uuid], actor: &Actor) -> Result<(), sqlx::Error> {
    if leads.is_empty() {
        return Ok(());
    }
    let mut tx = pool.begin().await?;
    for lead_id in leads {
        let detail = json!({ "fields": ["phone", "email"] });
        timeline::record(
            &mut tx,
            *lead_id,
            None,
            "lead.revealed",
            actor.as_str(),
            detail,
        )
        .await?;
    }
    tx.commit().await?;
    tracing::info!(%actor, leads = leads.len(), "contact details revealed");
    Ok(())
}
