//! Fault switches for tests that need a step to fail or hang on purpose ("fail the next two
//! runs of qualify", "hang the next route as a crashed process would"). Built only with the
//! `testing` feature, which the tests turn on; other builds get `faults_off.rs`, whose hooks
//! do nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use super::StepError;
use crate::graph::Step;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fault {
    Fail,
    Hang,
    /// Hang after the provider accepted a call, before leadflow records it: a crash between
    /// the HTTP answer and the commit.
    HangAfterPlace,
}

#[derive(Debug, Default)]
pub struct Faults {
    remaining: Mutex<HashMap<(Step, Fault), u32>>,
}

impl Faults {
    /// Makes the next `times` executions of `step` fail with a transient error.
    pub fn fail_next(&self, step: Step, times: u32) {
        self.set(step, Fault::Fail, times);
    }

    /// Makes the next `times` executions of `step` never finish, like a process that died
    /// mid-step: the job stays claimed until its worker is gone and it is rescued.
    pub fn hang_next(&self, step: Step, times: u32) {
        self.set(step, Fault::Hang, times);
    }

    /// Makes the next `times` callback executions hang right after the provider accepted the
    /// call and before the attempt row records it, as a process killed at that moment would.
    pub fn hang_after_place(&self, times: u32) {
        self.set(Step::Callback, Fault::HangAfterPlace, times);
    }

    pub(crate) async fn after_place(&self) {
        if self.take(Step::Callback, Fault::HangAfterPlace) {
            std::future::pending::<()>().await;
        }
    }

    /// Whether a fault is set for `step`: its executions then run one by one, not in a
    /// group, so that a fault hits one execution and not the others sharing its commit.
    pub(crate) fn armed(&self, step: Step) -> bool {
        self.remaining
            .lock()
            .map(|map| map.iter().any(|((s, _), n)| *s == step && *n > 0))
            .unwrap_or(false)
    }

    fn set(&self, step: Step, fault: Fault, times: u32) {
        if let Ok(mut map) = self.remaining.lock() {
            map.insert((step, fault), times);
        }
    }

    fn take(&self, step: Step, fault: Fault) -> bool {
        let Ok(mut map) = self.remaining.lock() else {
            return false;
        };
        match map.get_mut(&(step, fault)) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }

    pub(crate) async fn check(&self, step: Step) -> Result<(), StepError> {
        if self.take(step, Fault::Hang) {
            std::future::pending::<()>().await;
        }
        if self.take(step, Fault::Fail) {
            return Err(StepError::Injected(step));
        }
        Ok(())
    }
}
