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

use std::collections::HashSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::attempt::{self, AttemptRow};
use super::machine::{self, Event, Timing, Write};
use super::{Exec, outcome, speed};
use crate::metrics::Observation;
use crate::retry::RetryPolicy;
use crate::steps::StepError;
use crate::telephony::ListedCall;
use crate::timeline;

/// How far the provider's clock may run behind leadflow's: a call created this long before
/// the attempt's row still counts as the attempt's.
pub(super) const CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// The call an attempt is looking for.
pub(super) struct Wanted<'a> {
    pub attempt_id: Uuid,
    pub to: &'a str,
    pub from: &'a str,
    /// When the attempt's row was written, in real time (the provider's clock).
    pub written: Timestamp,
}

/// What a lookup found.
#[derive(Debug, PartialEq)]
pub(super) enum Found {
    /// The attempt's call; `others`: the ids of further calls that matched too, which should
    /// not happen and are left to an operator.
    Adopt {
        call: ListedCall,
        others: Vec<String>,
    },
    /// The provider has no call that can be the attempt's.
    None,
}

/// A lookup's result as the timeline and `leadflow_call_lookups_total` name it (the labels of
/// [`crate::metrics::LOOKUP_RESULTS`]): the call was found and adopted, the provider listed
/// none that can be the attempt's, or the provider could not be asked.
const ADOPTED: &str = "adopted";
const NOT_FOUND: &str = "none";
const UNANSWERED: &str = "error";

/// Picks the attempt's call among those the provider `listed`; `held`: call ids that other
/// attempts already hold. Several matches: the earliest is adopted.
pub(super) fn choose(listed: Vec<ListedCall>, wanted: &Wanted, held: &HashSet<String>) -> Found {
    let earliest = wanted
        .written
        .checked_sub(CLOCK_SKEW)
        .unwrap_or(wanted.written);
    let mut matches: Vec<ListedCall> = listed
        .into_iter()
        .filter(|c| {
            c.to == wanted.to
                && c.from == wanted.from
                && c.created >= earliest
                && !held.contains(&c.call_sid)
                && c.attempt_id.is_none_or(|id| id == wanted.attempt_id)
        })
        .collect();
    matches.sort_by(|a, b| (a.created, &a.call_sid).cmp(&(b.created, &b.call_sid)));
    let mut matches = matches.into_iter();
    match matches.next() {
        Some(call) => Found::Adopt {
            call,
            others: matches.map(|c| c.call_sid).collect(),
        },
        None => Found::None,
    }
}

/// The wait before asking again after the `lookups`-th lookup failed: the provider backoff,
/// held at its longest step once the policy's tries are spent (a lookup never gives up on
/// its own, since giving up would mean guessing).
pub(super) fn retry_delay(policy: &RetryPolicy, lookups: u32, seed: u64) -> Duration {
    let step = lookups.clamp(1, policy.max_attempts.saturating_sub(1).max(1));
    policy.delay_after(step, seed).unwrap_or(policy.max)
}

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
    use crate::telephony::CallStatus;

    const TO: &str = "+14155550123";
    const FROM: &str = "+14155550100";

    fn at(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn call(sid: &str, created: &str) -> ListedCall {
        ListedCall {
            call_sid: sid.to_owned(),
            to: TO.to_owned(),
            from: FROM.to_owned(),
            created: at(created),
            attempt_id: None,
            status: Some(CallStatus::Completed),
            answered_by: Some("human".to_owned()),
            duration: Some(30),
        }
    }

    fn wanted(id: Uuid) -> Wanted<'static> {
        Wanted {
            attempt_id: id,
            to: TO,
            from: FROM,
            written: at("2026-12-07T10:00:00Z"),
        }
    }

    fn adopted(found: Found) -> (String, Vec<String>) {
        match found {
            Found::Adopt { call, others } => (call.call_sid, others),
            Found::None => panic!("nothing adopted"),
        }
    }

    #[test]
    fn the_call_made_after_the_attempt_was_written_is_adopted() {
        let id = Uuid::now_v7();
        let listed = vec![call("CA2", "2026-12-07T10:00:01Z")];
        let (sid, others) = adopted(choose(listed, &wanted(id), &HashSet::new()));
        assert_eq!(sid, "CA2");
        assert!(others.is_empty());
    }

    #[test]
    fn a_little_clock_skew_is_allowed_an_earlier_call_is_not_this_attempts() {
        let id = Uuid::now_v7();
        let skewed = vec![call("CA1", "2026-12-07T09:59:30Z")];
        assert_eq!(
            adopted(choose(skewed, &wanted(id), &HashSet::new())).0,
            "CA1"
        );
        let earlier = vec![call("CA0", "2026-12-07T09:58:00Z")];
        assert_eq!(choose(earlier, &wanted(id), &HashSet::new()), Found::None);
    }

    #[test]
    fn another_number_another_caller_id_or_a_held_call_is_not_adopted() {
        let id = Uuid::now_v7();
        let mut other_to = call("CA1", "2026-12-07T10:00:01Z");
        other_to.to = "+14155550999".to_owned();
        let mut other_from = call("CA2", "2026-12-07T10:00:01Z");
        other_from.from = "+14155550999".to_owned();
        let held_call = call("CA3", "2026-12-07T10:00:01Z");
        let held: HashSet<String> = ["CA3".to_owned()].into();
        let found = choose(vec![other_to, other_from, held_call], &wanted(id), &held);
        assert_eq!(found, Found::None);
    }

    #[test]
    fn a_call_known_to_run_another_attempts_twiml_is_not_adopted() {
        let id = Uuid::now_v7();
        let mut mine = call("CA1", "2026-12-07T10:00:02Z");
        mine.attempt_id = Some(id);
        let mut theirs = call("CA0", "2026-12-07T10:00:01Z");
        theirs.attempt_id = Some(Uuid::now_v7());
        let (sid, others) = adopted(choose(vec![theirs, mine], &wanted(id), &HashSet::new()));
        assert_eq!(sid, "CA1");
        assert!(others.is_empty());
    }

    #[test]
    fn several_matches_adopt_the_earliest_and_name_the_others() {
        let id = Uuid::now_v7();
        let listed = vec![
            call("CA9", "2026-12-07T10:00:09Z"),
            call("CA3", "2026-12-07T10:00:03Z"),
            call("CA5", "2026-12-07T10:00:05Z"),
        ];
        let (sid, others) = adopted(choose(listed, &wanted(id), &HashSet::new()));
        assert_eq!(sid, "CA3");
        assert_eq!(others, ["CA5", "CA9"]);
    }

    #[test]
    fn the_results_are_the_metrics_labels() {
        let results = [ADOPTED, NOT_FOUND, UNANSWERED];
        assert_eq!(results, crate::metrics::LOOKUP_RESULTS);
    }

    #[test]
    fn nothing_listed_is_none() {
        assert_eq!(
            choose(Vec::new(), &wanted(Uuid::now_v7()), &HashSet::new()),
            Found::None
        );
    }

    #[test]
    fn failed_lookups_back_off_and_never_stop() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base: Duration::from_secs(2),
            max: Duration::from_secs(30),
        };
        let first = retry_delay(&policy, 1, 7);
        assert!(first >= Duration::from_secs(2) && first < Duration::from_secs(4));
        let third = retry_delay(&policy, 3, 7);
        assert!(third >= Duration::from_secs(8) && third < Duration::from_secs(16));
        // Past the policy's tries, the longest step repeats.
        assert_eq!(retry_delay(&policy, 50, 7), retry_delay(&policy, 3, 7));
        let single = RetryPolicy {
            max_attempts: 1,
            ..policy
        };
        assert!(retry_delay(&single, 9, 7) >= Duration::from_secs(2));
    }
}
