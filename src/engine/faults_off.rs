//! The fault switches of `faults.rs` as a build without the `testing` feature has them: none.
//! The hooks the steps call stay, and compile to nothing.

use super::StepError;
use crate::graph::Step;

#[derive(Debug, Default)]
pub struct Faults {
    _none: (),
}

impl Faults {
    pub(crate) async fn after_place(&self) {}

    pub(crate) fn armed(&self, _step: Step) -> bool {
        false
    }

    pub(crate) async fn check(&self, _step: Step) -> Result<(), StepError> {
        Ok(())
    }
}
