//! leadflow: a durable workflow worker for inbound leads.
//!
//! A lead enters through the intake webhook ([`intake`]), is validated inline
//! ([`validate`]), stored with its run and first job in one transaction, then taken through
//! the steps the graph declares ([`graph`]) by the engine ([`engine`]: the queues, the group
//! commit, fusion, hand-off, the callback step) on apalis workers ([`worker`]), according to
//! the TOML workflows ([`workflow`]). Operators read it back through [`operator`].

pub mod blocklist;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod db;
pub mod engine;
pub mod graph;
pub mod header_timeout;
pub mod hooks;
pub mod intake;
pub mod lead;
pub mod listener;
pub mod metrics;
pub mod operator;
pub mod phone;
pub mod reply;
pub mod retry;
pub mod schedule;
pub mod server;
pub mod service;
pub mod telemetry;
pub mod telephony;
pub mod timeline;
pub mod tz;
pub mod validate;
pub mod worker;
pub mod workflow;
