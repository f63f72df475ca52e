//! A request on its way to storage: the authenticated submission with its verdict
//! ([`Submitted`]), the webhook-log row of a request that ends early ([`LogEntry`]), and how
//! storing fails ([`StoreError`]). `records.rs` turns them into rows and `store.rs` commits them.

use super::RequestMeta;
use super::tokens::Stamp;
use crate::engine;
use crate::hooks::Hook;
use crate::lead::Submission;
use crate::reply::ApiError;
use crate::validate::{Rejection, ValidLead};

/// A parsed, authenticated submission with its validation verdict.
pub struct Submitted<'a> {
    pub hook: &'a Hook,
    pub meta: &'a RequestMeta,
    pub body: &'a [u8],
    pub submission: &'a Submission,
    pub verdict: Result<ValidLead, Rejection>,
    pub max_attempts: u32,
    /// Set when the hook was remembered rather than read for this request: the transaction
    /// confirms it before storing anything ([`tokens`]).
    pub remembered: Option<&'a Stamp>,
}

/// A webhook-log row for a request that ends before the lead transaction.
pub struct LogEntry<'a> {
    pub(super) hook: Option<&'a Hook>,
    pub(super) meta: &'a RequestMeta,
    pub(super) body: Option<&'a [u8]>,
    pub(super) status: u16,
    pub(super) outcome: &'static str,
    pub(super) reason: String,
}

impl<'a> LogEntry<'a> {
    pub fn rejected(
        hook: Option<&'a Hook>,
        meta: &'a RequestMeta,
        body: Option<&'a [u8]>,
        err: &ApiError,
    ) -> Self {
        LogEntry {
            hook,
            meta,
            // Bodies of unauthenticated requests are not kept: anyone can send them.
            body: hook.and(body),
            status: err.code.as_u16(),
            outcome: if err.code.is_server_error() {
                "error"
            } else {
                "rejected"
            },
            reason: err.details.clone(),
        }
    }
}

impl LogEntry<'_> {
    /// The size the sender declared, else the size read.
    pub(super) fn body_size(&self) -> i64 {
        let size = self
            .meta
            .content_length
            .or(self.body.map(|b| b.len() as u64))
            .unwrap_or(0);
        i64::try_from(size).unwrap_or(i64::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("enqueueing the first step: {0}")]
    Enqueue(#[from] engine::StepError),
    #[error("committing the lead: {0}")]
    Commit(#[from] tokio::task::JoinError),
    /// The remembered hook changed since; the request is decided again from the database.
    #[error("the hook changed since its token was remembered")]
    HookChanged,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        let db = match &e {
            StoreError::Db(db) => Some(db),
            StoreError::Enqueue(step) => step.db_error(),
            StoreError::Commit(_) | StoreError::HookChanged => None,
        };
        match db {
            Some(db) => ApiError::from_db(db),
            None => {
                tracing::error!(error = %e, "intake transaction failed");
                ApiError::internal("The lead could not be stored; it has been logged")
            }
        }
    }
}
