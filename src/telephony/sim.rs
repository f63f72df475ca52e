//! The simulator, the default provider: no network. `place` answers at once with a fake
//! `SIM…` sid; after a delay it reports the statuses a real call with the chosen outcome
//! would, as a [`SimReport`] on a channel. The receiving end feeds them to the same status
//! handling as Twilio's webhook, so the simulator never calls up into steps.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;

use super::{
    CallRequest, CallStatus, ListFuture, ListedCall, PlaceError, PlaceFuture, Placed, Provider,
    StatusEvent, StatusFuture, mask_phone,
};

pub const DEFAULT_DELAY: Duration = Duration::from_millis(1000);
/// What a simulated call that completes reports as its length.
pub const SIM_CALL_SECONDS: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// `LEADFLOW_SIM_DELAY_MS`: how long after `place` the statuses arrive.
    pub delay: Duration,
    /// `LEADFLOW_SIM_OUTCOMES`: attempt N of a lead ends as entry N; past the end, the last.
    pub outcomes: Vec<CallStatus>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            delay: DEFAULT_DELAY,
            outcomes: vec![CallStatus::Completed],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimConfigError {
    #[error("LEADFLOW_SIM_DELAY_MS must be a whole number of milliseconds, got {0:?}")]
    Delay(String),
    #[error(
        "LEADFLOW_SIM_OUTCOMES entry {0:?} is not a final call status; use completed, busy, \
         no-answer, failed or canceled"
    )]
    Outcome(String),
}

impl SimConfig {
    pub fn from_env() -> Result<Self, SimConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, SimConfigError> {
        let mut config = SimConfig::default();
        if let Some(ms) = get("LEADFLOW_SIM_DELAY_MS").filter(|v| !v.trim().is_empty()) {
            let ms: u64 = ms
                .trim()
                .parse()
                .map_err(|_| SimConfigError::Delay(ms.clone()))?;
            config.delay = Duration::from_millis(ms);
        }
        if let Some(list) = get("LEADFLOW_SIM_OUTCOMES").filter(|v| !v.trim().is_empty()) {
            config.outcomes = parse_outcomes(&list)?;
        }
        Ok(config)
    }

    /// The outcome of the lead's attempt `attempt_number` (1-based; 0 reads as 1).
    pub fn outcome_for(&self, attempt_number: u32) -> CallStatus {
        let index = usize::try_from(attempt_number.max(1) - 1).unwrap_or(usize::MAX);
        self.outcomes
            .get(index)
            .or(self.outcomes.last())
            .copied()
            .unwrap_or(CallStatus::Completed)
    }
}

/// `busy,no-answer,completed` → the statuses, each a final one: a call cannot end ringing.
pub fn parse_outcomes(list: &str) -> Result<Vec<CallStatus>, SimConfigError> {
    list.split(',')
        .map(|word| match word.parse::<CallStatus>() {
            Ok(status) if status.is_terminal() => Ok(status),
            _ => Err(SimConfigError::Outcome(word.trim().to_owned())),
        })
        .collect()
}

/// Everything one simulated call reports, in the order Twilio would send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReport {
    pub attempt_id: uuid::Uuid,
    pub call_sid: String,
    pub events: Vec<StatusEvent>,
}

/// The callbacks a real call ending in `outcome` sends with leadflow's subscription
/// (initiated, ringing, answered, completed), numbered from 0 like `SequenceNumber`.
pub fn events_for(call_sid: &str, outcome: CallStatus) -> Vec<StatusEvent> {
    use CallStatus::*;
    let path: &[CallStatus] = match outcome {
        Completed => &[Initiated, Ringing, InProgress, Completed],
        NoAnswer | Canceled => &[Initiated, Ringing, outcome],
        Busy | Failed => &[Initiated, outcome],
        other => &[other],
    };
    path.iter()
        .zip(0u32..)
        .map(|(&status, seq)| StatusEvent {
            call_sid: call_sid.to_owned(),
            call_status: status,
            sequence_number: Some(seq),
            answered_by: matches!(status, InProgress | Completed).then(|| "human".to_owned()),
            call_duration: status.is_terminal().then_some(if status == Completed {
                SIM_CALL_SECONDS
            } else {
                0
            }),
            // What a carrier answers for a number that does not exist, so a simulated
            // failure reads as "unreachable lead" rather than congestion.
            sip_response_code: (status == Failed).then_some(404),
            error_code: None,
        })
        .collect()
}

/// Calls the simulator remembers for [`Provider::calls_to`]; older ones are forgotten, as a
/// lookup only ever asks about the last minutes.
const REMEMBERED_CALLS: usize = 10_000;

/// The simulated provider.
pub struct Sim {
    config: SimConfig,
    sink: UnboundedSender<SimReport>,
    outstanding: Arc<AtomicUsize>,
    /// The calls placed, newest last. They live in this process, like the calls themselves:
    /// after a crash the simulator has placed none.
    placed: Mutex<VecDeque<ListedCall>>,
}

impl Sim {
    pub fn new(config: SimConfig, sink: UnboundedSender<SimReport>) -> Self {
        Sim {
            config,
            sink,
            outstanding: Arc::new(AtomicUsize::new(0)),
            placed: Mutex::new(VecDeque::new()),
        }
    }

    fn remember(&self, call: ListedCall) {
        let mut placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        if placed.len() >= REMEMBERED_CALLS {
            placed.pop_front();
        }
        placed.push_back(call);
    }

    /// Calls placed whose report is not yet consumed. Incremented here when a call is placed;
    /// whoever consumes the reports decrements it after applying one, so a shutdown can wait
    /// until every simulated call has reported (a real provider would report over HTTP to
    /// any instance; the simulator's reports live only in this process).
    pub fn outstanding(&self) -> Arc<AtomicUsize> {
        self.outstanding.clone()
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    async fn simulate(&self, req: &CallRequest) -> Result<Placed, PlaceError> {
        // Twilio refuses these with a 4xx (21211, 21212); the simulator keeps the contract.
        for (field, number) in [("To", &req.to), ("From", &req.from)] {
            if !looks_like_e164(number) {
                return Err(PlaceError::Permanent(format!(
                    "simulator: the '{field}' number {} is not a valid E.164 phone number",
                    mask_phone(number)
                )));
            }
        }
        let call_sid = sim_sid(req.attempt_number);
        let outcome = self.config.outcome_for(req.attempt_number);
        tracing::info!(
            provider = "sim", attempt_id = %req.attempt_id, lead_id = %req.lead_id,
            attempt_number = req.attempt_number, to = mask_phone(&req.to), call_sid, %outcome,
            "simulated call placed"
        );
        let report = SimReport {
            attempt_id: req.attempt_id,
            call_sid: call_sid.clone(),
            events: events_for(&call_sid, outcome),
        };
        let last = report.events.last();
        self.remember(ListedCall {
            call_sid: call_sid.clone(),
            to: req.to.clone(),
            from: req.from.clone(),
            created: jiff::Timestamp::now(),
            attempt_id: Some(req.attempt_id),
            status: last.map(|e| e.call_status),
            answered_by: last.and_then(|e| e.answered_by.clone()),
            duration: last.and_then(|e| e.call_duration),
        });
        let sink = self.sink.clone();
        let delay = self.config.delay;
        let outstanding = self.outstanding.clone();
        outstanding.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let attempt_id = report.attempt_id;
            if sink.send(report).is_err() {
                outstanding.fetch_sub(1, Ordering::SeqCst);
                // Only at shutdown; the attempt stays open, as a lost Twilio webhook leaves it.
                tracing::warn!(provider = "sim", %attempt_id, "status receiver gone; report dropped");
            }
        });
        Ok(Placed {
            call_sid,
            status: CallStatus::Queued.as_str().to_owned(),
        })
    }
}

impl Provider for Sim {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn place<'a>(&'a self, req: &'a CallRequest) -> PlaceFuture<'a> {
        Box::pin(self.simulate(req))
    }

    fn status<'a>(&'a self, call_sid: &'a str) -> StatusFuture<'a> {
        let outcome = sim_attempt(call_sid).map(|n| self.config.outcome_for(n));
        let event = outcome.and_then(|o| events_for(call_sid, o).pop());
        Box::pin(std::future::ready(Ok(event)))
    }

    fn calls_to<'a>(&'a self, to: &'a str, since: jiff::Timestamp) -> ListFuture<'a> {
        // As Twilio filters: from the start of `since`'s UTC day.
        let day = since
            .to_zoned(jiff::tz::TimeZone::UTC)
            .start_of_day()
            .map_or(since, |d| d.timestamp());
        let placed = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        let calls = placed
            .iter()
            .rev()
            .filter(|c| c.to == to && c.created >= day)
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(calls)))
    }
}

/// `SIM` + the attempt number (4 hex digits) + 28 random hex digits: the sid itself says how
/// the call ends, so its status can be told after a restart lost the in-memory report.
fn sim_sid(attempt_number: u32) -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("SIM{:04x}{}", attempt_number.min(0xffff), &random[..28])
}

fn sim_attempt(call_sid: &str) -> Option<u32> {
    let hex = call_sid.strip_prefix("SIM")?.get(..4)?;
    u32::from_str_radix(hex, 16).ok()
}

/// `+` and 8 to 15 digits. Validation proper happened at intake; this only mirrors the
/// shape check a provider makes.
fn looks_like_e164(number: &str) -> bool {
    number
        .strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn defaults_to_completed_after_a_second() {
        let config = SimConfig::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config, SimConfig::default());
        assert_eq!(config.outcome_for(1), CallStatus::Completed);
        assert_eq!(config.outcome_for(7), CallStatus::Completed);
    }

    #[test]
    fn attempt_n_gets_entry_n_then_the_last_repeats() {
        let config = SimConfig::from_lookup(lookup(&[
            ("LEADFLOW_SIM_OUTCOMES", "busy, No-Answer ,completed"),
            ("LEADFLOW_SIM_DELAY_MS", "25"),
        ]))
        .unwrap();
        assert_eq!(config.delay, Duration::from_millis(25));
        let seen: Vec<_> = (0..=5).map(|n| config.outcome_for(n)).collect();
        use CallStatus::*;
        assert_eq!(
            seen,
            [Busy, Busy, NoAnswer, Completed, Completed, Completed]
        );
    }

    #[test]
    fn refuses_non_final_or_unknown_outcomes_and_bad_delays() {
        for bad in ["ringing", "busy,,completed", "answered", "in-progress"] {
            assert!(
                matches!(parse_outcomes(bad), Err(SimConfigError::Outcome(_))),
                "{bad}"
            );
        }
        let err = SimConfig::from_lookup(lookup(&[("LEADFLOW_SIM_DELAY_MS", "1s")])).unwrap_err();
        assert_eq!(err, SimConfigError::Delay("1s".into()));
    }

    #[test]
    fn events_follow_a_real_calls_path() {
        let words = |o| {
            events_for("SIM1", o)
                .iter()
                .map(|e| e.call_status.as_str())
                .collect::<Vec<_>>()
        };
        use CallStatus::*;
        assert_eq!(
            words(Completed),
            ["initiated", "ringing", "in-progress", "completed"]
        );
        assert_eq!(words(Busy), ["initiated", "busy"]);
        assert_eq!(words(NoAnswer), ["initiated", "ringing", "no-answer"]);
        assert_eq!(words(Failed), ["initiated", "failed"]);
        let done = events_for("SIM1", Completed);
        assert_eq!(done[3].answered_by.as_deref(), Some("human"));
        assert_eq!(done[3].call_duration, Some(SIM_CALL_SECONDS));
        assert_eq!(
            done.iter().map(|e| e.sequence_number).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(2), Some(3)]
        );
        assert_eq!(events_for("SIM1", Failed)[1].sip_response_code, Some(404));
    }

    #[test]
    fn e164_shape() {
        assert!(looks_like_e164("+14155550123"));
        for bad in [
            "14155550123",
            "+1415",
            "+1415555012x",
            "+1234567890123456",
            "",
        ] {
            assert!(!looks_like_e164(bad), "{bad}");
        }
    }
}
