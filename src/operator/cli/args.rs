//! The operator commands' arguments: what `leadflow queues|jobs|leads|log --help` shows.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::config::DbSettings;
use crate::operator::page::PageRequest;

#[derive(Debug, Args)]
pub struct QueuesArgs {
    #[command(flatten)]
    pub db: DbSettings,
    #[command(subcommand)]
    pub command: Option<QueuesCommand>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum QueuesCommand {
    /// Stop every worker claiming the queue's jobs (within one poll interval; survives restarts).
    Pause { queue: String },
    /// Let workers claim the queue's jobs again.
    Resume { queue: String },
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub db: DbSettings,
    #[command(subcommand)]
    pub command: JobsCommand,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        /// qualify, route or callback (or leadflow.qualify, …).
        #[arg(long)]
        queue: Option<String>,
        /// available, scheduled, running, retrying, failed, completed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One job: its arguments, attempts, last error, next run time and worker.
    Show { id: String },
    /// Retry dead jobs (their runs resume), or bring forward jobs waiting for a backoff.
    Retry {
        /// Job ids.
        #[arg(required_unless_present = "failed", conflicts_with = "failed")]
        ids: Vec<String>,
        /// Retry every failed (dead) job instead, oldest first.
        #[arg(long)]
        failed: bool,
        /// With --failed: only this queue's.
        #[arg(long, requires = "failed")]
        queue: Option<String>,
        /// With --failed: at most this many.
        #[arg(long, requires = "failed", default_value_t = crate::operator::BULK_MAX)]
        limit: u32,
    },
    /// Cancel the runs of these jobs: a running step finishes, nothing more runs or calls.
    Cancel {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct PageArgs {
    /// Items per page (1-200).
    #[arg(long)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its next_cursor).
    #[arg(long)]
    pub cursor: Option<String>,
}

impl PageArgs {
    pub(super) fn request(&self) -> PageRequest {
        PageRequest {
            limit: self.limit,
            cursor: self.cursor.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct LeadsArgs {
    #[command(flatten)]
    pub db: DbSettings,
    #[command(subcommand)]
    pub command: LeadsCommand,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LeadsCommand {
    /// List leads, newest first (phones and emails masked unless --reveal).
    List {
        /// The latest run's status (rejected, failed, called, …).
        #[arg(long)]
        status: Option<String>,
        /// Received since: a duration back from now (30m, 1h, 2d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// A phone number in international form (+16502530000).
        #[arg(long)]
        phone: Option<String>,
        /// Show phones and emails in full (recorded in each lead's timeline).
        #[arg(long)]
        reveal: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// A lead's full timeline: request, each step, each call attempt, outcome.
    Show {
        id: Uuid,
        /// Show the phone and email in full (recorded in the lead's timeline).
        #[arg(long)]
        reveal: bool,
    },
    /// Start a new run of a rejected, failed, exhausted … lead (the old run stays in history).
    Replay {
        id: Uuid,
        /// The step to start from: validate (the default), qualify, route or callback.
        #[arg(long)]
        from: Option<String>,
        /// Directory of workflow definitions (validation and retry settings come from it).
        #[arg(long, env = "LEADFLOW_WORKFLOWS_DIR", default_value = "workflows")]
        workflows_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct LogArgs {
    #[command(flatten)]
    pub db: DbSettings,
    /// Only this hook's requests.
    #[arg(long)]
    pub hook: Option<String>,
    /// accepted, rejected, duplicate or error.
    #[arg(long)]
    pub outcome: Option<String>,
    /// Keep printing new requests as they arrive (Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
    #[command(flatten)]
    pub page: PageArgs,
    /// Print JSON instead of a table (one object per line with --follow).
    #[arg(long)]
    pub json: bool,
}
