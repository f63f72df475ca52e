//! An attempt whose fate is unknown (`placing` or `unknown`, no call id: a crash or a timeout
//! cut the provider's answer off) asks the provider before it may be counted lost: it lists
//! the calls to the lead's number made since the attempt was written, and adopts the one that
//! is its call. Only a provider that answered and listed none lets the attempt count as lost,
//! and so lets the next attempt call. A provider that cannot be asked is asked again on the
//! provider backoff, once per step of it (`callback_attempts.next_lookup_at`), never
//! concluding anything from the failure.
//!
//! Which listed call is the attempt's ([`choose`]): one to the lead's number, from the team's
//! caller ID, created no earlier than the attempt's row (less [`CLOCK_SKEW`]), not already
//! another attempt's, and, where the provider knows which TwiML the call runs (the simulator
//! does; Twilio's Call resource does not list it), running this attempt's.

use jiff::Timestamp;
use serde_json::json;
use sqlx::PgConnection;

use super::attempt;
use super::machine::{self, Event, Timing, Write};
use super::matching::{CLOCK_SKEW, Found, Wanted, choose};
use super::state::AttemptRow;
use super::{Exec, outcome, speed};
use crate::engine::StepError;
use crate::metrics::Observation;
use crate::telephony::ListedCall;
use crate::timeline;

/// A lookup's result as the timeline and `leadflow_call_lookups_total` name it (the labels of
/// [`crate::metrics::LOOKUP_RESULTS`]): the call was found and adopted, the provider listed
/// none that can be the attempt's, or the provider could not be asked.
const ADOPTED: &str = "adopted";
const NOT_FOUND: &str = "none";
const UNANSWERED: &str = "error";

impl Exec<'_> {
    /// Asks the provider whether attempt `a`'s call went out, its unknown window over and its
    /// lookup due, and acts on the answer as [`machine::next`] says, in the caller's
    /// transaction (which holds the step's lock, so one execution asks at a time).
    pub(super) async fn look_up(
        &self,
        tx: &mut PgConnection,
        a: AttemptRow,
        now: Timestamp,
    ) -> Result<(), StepError> {
        let engine = self.engine;
        let to = self.ctx.phone_e164.as_deref().unwrap_or_default();
        let wanted = Wanted {
            attempt_id: a.id,
            to,
            from: self.team.caller_id.as_str(),
            written: engine.clock.to_real(a.created_at.0),
        };
        let since = wanted
            .written
            .checked_sub(CLOCK_SKEW)
            .unwrap_or(wanted.written);
        let found = match engine.provider.calls_to(to, since).await {
            Ok(listed) => {
                let sids: Vec<&str> = listed.iter().map(|c| c.call_sid.as_str()).collect();
                let held = attempt::held_calls(tx, &sids).await?;
                Ok(choose(listed, &wanted, &held))
            }
            Err(e) => Err(e.to_string()),
        };
        let timing = Timing::of(&engine.callbacks);
        let event = Event::Listed(found.as_ref().map_err(String::as_str));
        let step = machine::next(&a, event, now, &timing, rand::random());
        let a = match (step.write, found) {
            (Write::Settle(outcome), _) => {
                tracing::info!(attempt_id = %a.id, "lookup: the provider has no call for the attempt");
                self.record_lookup(tx, &a, None, NOT_FOUND, json!({}))
                    .await?;
                self.settle(tx, a.id, outcome, now).await?
            }
            (Write::Adopt, Ok(Found::Adopt { call, others })) => {
                tracing::info!(attempt_id = %a.id, call_sid = call.call_sid, "lookup: adopted the attempt's call");
                if !others.is_empty() {
                    tracing::warn!(attempt_id = %a.id, others = others.len(), "lookup: several calls matched; the earliest is adopted");
                }
                let detail = json!({
                    "provider_call_id": call.call_sid,
                    "status": call.status.map(|s| s.as_str()), "others": others,
                });
                self.record_lookup(tx, &a, None, ADOPTED, detail).await?;
                self.adopt(tx, &a, call).await?
            }
            (Write::LookupFailed { again }, Err(error)) => {
                tracing::warn!(attempt_id = %a.id, error, "lookup: could not ask the provider");
                let detail = json!({ "error": error, "next_lookup_at": again });
                self.record_lookup(tx, &a, Some(again), UNANSWERED, detail)
                    .await?;
                a
            }
            _ => a,
        };
        self.then(tx, &a, step.then, now).await
    }

    /// Counts the lookup, in the attempt's row, the timeline (`call.lookup`, with `detail`
    /// and the `result`) and the metric once committed.
    async fn record_lookup(
        &self,
        tx: &mut PgConnection,
        a: &AttemptRow,
        again: Option<Timestamp>,
        result: &'static str,
        mut detail: serde_json::Value,
    ) -> Result<(), StepError> {
        attempt::record_lookup(tx, a.id, again).await?;
        detail["result"] = json!(result);
        detail["attempt"] = json!(a.n);
        detail["lookup"] = json!(a.lookups + 1);
        let (lead, run) = (self.ctx.lead_id, Some(self.ctx.run_id));
        timeline::record(tx, lead, run, "call.lookup", timeline::SYSTEM, detail).await?;
        self.pending.push(Observation::CallLookup { result });
        Ok(())
    }

    /// Takes the found call as the attempt's and applies its status as a status callback
    /// would; from there the call is reconciled by its id like any placed call. Returns the
    /// attempt as now written.
    async fn adopt(
        &self,
        tx: &mut PgConnection,
        a: &AttemptRow,
        call: ListedCall,
    ) -> Result<AttemptRow, StepError> {
        let engine = self.engine;
        attempt::adopt(
            tx,
            a.id,
            &call.call_sid,
            engine.clock.from_real(call.created),
        )
        .await?;
        if a.placed_at.is_none() && a.n == 1 {
            self.pending
                .push(speed::first_call(&self.ctx, &self.team_id, call.created));
        }
        if let Some(event) = call.status_event() {
            let events = std::slice::from_ref(&event);
            outcome::apply_on(tx, engine, &self.ctx, a.id, events, self.pending).await?;
        }
        let adopted = attempt::current(tx, self.job).await?;
        Ok(adopted.unwrap_or_else(|| a.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_results_are_the_metrics_labels() {
        let results = [ADOPTED, NOT_FOUND, UNANSWERED];
        assert_eq!(results, crate::metrics::LOOKUP_RESULTS);
    }
}
