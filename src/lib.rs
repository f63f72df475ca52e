//! leadflow: a durable workflow worker for inbound leads.
//!
//! A lead enters through the intake webhook ([`intake`]), is validated inline
//! ([`validate`]), stored with its run and first job in one transaction, then qualified and
//! routed by apalis workers ([`steps`], [`worker`]) according to the TOML workflows
//! ([`workflow`]). Operators read it back through [`operator`].

pub mod announce;
pub mod blocklist;
pub mod claims;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod graph;
pub mod header_timeout;
pub mod hooks;
pub mod intake;
pub mod lead;
pub mod listener;
pub mod metrics;
pub mod operator;
pub mod pause;
pub mod phone;
pub mod queue;
pub mod reply;
pub mod retention;
pub mod retry;
pub mod schedule;
pub mod server;
pub mod service;
pub mod steps;
pub mod telemetry;
pub mod telephony;
pub mod timeline;
pub mod tz;
pub mod validate;
pub mod wakeup;
pub mod worker;
pub mod workflow;
