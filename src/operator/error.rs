//! What an operator query or action can answer besides its result. Each view maps these to
//! its own form: an HTTP status, a CLI error line, a console notice.

use crate::engine::StepError;
use crate::hooks::HookError;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// No such lead, job, queue or hook.
    #[error("{0}")]
    NotFound(String),
    /// The thing exists but is in a state where the action makes no sense (retrying a
    /// completed job, replaying a lead whose run is still going).
    #[error("{0}")]
    Conflict(String),
    /// A malformed argument: a bad cursor, state name, duration or phone number.
    #[error("{0}")]
    Invalid(String),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("enqueueing a step: {0}")]
    Step(#[from] StepError),
}

impl From<HookError> for OperatorError {
    fn from(e: HookError) -> OperatorError {
        match e {
            HookError::NotFound(_) => OperatorError::NotFound(e.to_string()),
            HookError::NameTaken(_) => OperatorError::Conflict(e.to_string()),
            HookError::BadName(_) => OperatorError::Invalid(e.to_string()),
            HookError::Db(db) => OperatorError::Db(db),
        }
    }
}

impl From<crate::engine::queue::QueueError> for OperatorError {
    fn from(e: crate::engine::queue::QueueError) -> OperatorError {
        OperatorError::Step(StepError::Queue(e))
    }
}

pub type Result<T> = std::result::Result<T, OperatorError>;
