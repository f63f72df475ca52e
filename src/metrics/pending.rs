//! Observations made inside a database transaction, recorded once it commits. A step whose
//! transaction rolls back is delivered again; counting on the spot would count it twice.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, histogram};

use super::{CALL_LOOKUPS, CALLBACK_ATTEMPTS, RUNS_FINISHED, SPEED_TO_LEAD};
use crate::graph::Step;
use crate::lead::RunStatus;

#[derive(Debug, Clone, PartialEq)]
pub enum Observation {
    /// A step execution succeeded inside another's transaction (qualify's route).
    StepRan { step: Step, elapsed: Duration },
    /// A live run reached a terminal status.
    RunFinished { workflow: String, status: RunStatus },
    /// A call attempt got its final outcome.
    CallbackAttempt { team: String, outcome: &'static str },
    /// The provider was asked whether a call whose answer was lost went out.
    CallLookup { result: &'static str },
    /// A run's first call went out, `seconds` after the lead was accepted.
    SpeedToLead {
        team: String,
        waited: bool,
        seconds: f64,
    },
}

impl Observation {
    pub fn record(self) {
        match self {
            Observation::StepRan { step, elapsed } => {
                super::step_run(step, super::StepOutcome::Ok, elapsed);
            }
            Observation::RunFinished { workflow, status } => {
                counter!(RUNS_FINISHED, "workflow" => workflow, "status" => status.as_str())
                    .increment(1);
            }
            Observation::CallbackAttempt { team, outcome } => {
                counter!(CALLBACK_ATTEMPTS, "team" => team, "outcome" => outcome).increment(1);
            }
            Observation::CallLookup { result } => {
                counter!(CALL_LOOKUPS, "result" => result).increment(1);
            }
            Observation::SpeedToLead {
                team,
                waited,
                seconds,
            } => {
                let waited = if waited { "true" } else { "false" };
                histogram!(SPEED_TO_LEAD, "team" => team, "waited" => waited)
                    .record(seconds.max(0.0));
            }
        }
    }
}

/// A transaction's observations. Shared by reference across the awaits of one step
/// execution, hence the mutex (never held across an await).
#[derive(Debug, Default)]
pub struct Pending(Mutex<Vec<Observation>>);

impl Pending {
    pub fn push(&self, observation: Observation) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(observation);
    }

    /// Records everything pushed so far; call right after the commit.
    pub fn committed(&self) {
        let drained: Vec<Observation> =
            std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner));
        for observation in drained {
            observation.record();
        }
    }

    /// Forgets everything pushed so far (the transaction rolled back).
    pub fn discard(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
