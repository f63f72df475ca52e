//! What operators can see and do. Each query and action is implemented once here; the HTTP
//! API ([`api`]), the command line ([`cli`]) and the browser console (`crate::console`) are
//! thin views over it.
//!
//! Actions on jobs (retry, cancel) and leads (replay) write to `apalis.jobs` with our own SQL:
//! apalis-postgres has no such API. Each one is one transaction that takes row locks in the
//! order a worker's step transaction does, so it is race-free against running workers and
//! safe to repeat; each is recorded in the lead's timeline with who did it.

mod action;
pub mod activity;
pub mod actor;
pub mod api;
mod cancel;
pub mod cli;
mod error;
pub mod hooks;
pub mod jobs;
pub mod lead_list;
pub mod leads;
pub mod page;
pub mod queues;
mod replay;
mod retry;
pub mod reveal;
pub mod state;
pub mod webhook_log;

pub use action::{ActionResult, Outcome};
pub use actor::Actor;
pub use cancel::cancel;
pub use error::OperatorError;
pub use replay::{REPLAYABLE, Replayed, replay};
pub use retry::{BULK_MAX, BulkError, BulkSummary, count_failed, retry, retry_failed};
