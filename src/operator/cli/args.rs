//! The operator commands' arguments: what `leadflow queues|jobs|leads|log --help` shows.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser};
use clap::{Args, Subcommand};
use uuid::Uuid;

use crate::db::DbSettings;
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
    Pause {
        #[arg(value_parser = queue_names())]
        queue: String,
    },
    /// Let workers claim the queue's jobs again.
    Resume {
        #[arg(value_parser = queue_names())]
        queue: String,
    },
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
        /// Only this queue's jobs (a step's name, or the queue's full name).
        #[arg(long, value_parser = queue_names())]
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
        #[arg(long, requires = "failed", value_parser = queue_names())]
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
        /// The step to start from (default: the graph's first).
        #[arg(long, value_parser = step_names())]
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

/// The worker queues, as the graph names them: each by its step's name, and (accepted, not
/// listed) by its full queue name.
fn queue_names() -> PossibleValuesParser {
    PossibleValuesParser::new(crate::graph::WORKER_STEPS.iter().flat_map(|step| {
        [
            PossibleValue::new(step.as_str()),
            PossibleValue::new(step.queue()).hide(true),
        ]
    }))
}

/// The graph's steps, by name.
fn step_names() -> PossibleValuesParser {
    PossibleValuesParser::new(crate::graph::Step::ALL.map(|step| step.as_str()))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::graph::{Step, WORKER_STEPS};

    #[derive(Parser)]
    struct Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    }

    #[derive(Parser)]
    struct Leads {
        #[command(subcommand)]
        command: LeadsCommand,
    }

    fn possible(cmd: &clap::Command, path: &[&str], arg: &str) -> Vec<String> {
        let mut cmd = cmd.clone();
        for name in path {
            cmd = cmd.find_subcommand(name).expect(name).clone();
        }
        let arg = cmd.get_arguments().find(|a| a.get_id() == arg).expect(arg);
        arg.get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect()
    }

    #[test]
    fn the_cli_names_the_graphs_steps_and_queues() {
        let steps: Vec<String> = Step::ALL.iter().map(|s| s.to_string()).collect();
        let queues: Vec<String> = WORKER_STEPS.iter().map(|s| s.to_string()).collect();
        let leads = Leads::command();
        assert_eq!(possible(&leads, &["replay"], "from"), steps);
        let jobs = Jobs::command();
        assert_eq!(possible(&jobs, &["list"], "queue"), queues);
        assert_eq!(possible(&jobs, &["retry"], "queue"), queues);
        // Full queue names are accepted too.
        let parsed = Jobs::try_parse_from(["jobs", "list", "--queue", "leadflow.route"]);
        assert!(parsed.is_ok());
        assert!(Jobs::try_parse_from(["jobs", "list", "--queue", "validate"]).is_err());
    }
}
