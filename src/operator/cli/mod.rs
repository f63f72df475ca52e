//! The operator commands of the `leadflow` CLI: `queues`, `jobs`, `leads`, `log`. Thin views:
//! each parses its arguments, calls one operator query or action, and prints a table, or JSON
//! with `--json`. `crate::cli` opens the database and dispatches here.

mod args;
mod render;
mod table;

pub use args::{
    JobsArgs, JobsCommand, LeadsArgs, LeadsCommand, LogArgs, PageArgs, QueuesArgs, QueuesCommand,
};

use std::time::Duration;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sqlx::PgPool;

use super::jobs::{self, JobFilter};
use super::lead_list::{self, LeadFilter};
use super::page::PageRequest;
use super::webhook_log::{self, LogFilter};
use super::{ActionResult, Actor, OperatorError, Outcome, queues};
use crate::graph::Step;
use crate::workflow::Workflows;

fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

fn queue_arg(name: Option<&str>) -> Result<Option<Step>, OperatorError> {
    name.map(queues::parse).transpose()
}

pub async fn queues(pool: PgPool, command: Option<QueuesCommand>, json: bool) -> Result<()> {
    let actor = Actor::cli();
    let change = match command {
        None => {
            let all = queues::overview(&pool).await?;
            return if json {
                print_json(&all)
            } else {
                render::queues(&all).print();
                Ok(())
            };
        }
        Some(QueuesCommand::Pause { queue }) => {
            queues::pause(&pool, queues::parse(&queue)?, &actor).await?
        }
        Some(QueuesCommand::Resume { queue }) => {
            queues::resume(&pool, queues::parse(&queue)?, &actor).await?
        }
    };
    if json {
        return print_json(&change);
    }
    let state = if change.paused { "paused" } else { "running" };
    if change.changed {
        println!("{} is now {state}", change.queue);
    } else {
        println!("{} was already {state}", change.queue);
    }
    Ok(())
}

pub async fn jobs(pool: PgPool, command: JobsCommand, json: bool) -> Result<()> {
    let actor = Actor::cli();
    match command {
        JobsCommand::List { queue, state, page } => {
            let filter = JobFilter {
                queue: queue_arg(queue.as_deref())?,
                state: state.as_deref().map(str::parse).transpose()?,
            };
            let page = jobs::list(&pool, &filter, &page.request()).await?;
            if json {
                return print_json(&page);
            }
            render::jobs(&page.items).print();
            render::more(&page.next_cursor);
        }
        JobsCommand::Show { id } => {
            let job = jobs::show(&pool, &id)
                .await?
                .with_context(|| format!("no job {id:?}"))?;
            if json {
                return print_json(&job);
            }
            render::job(&job);
        }
        JobsCommand::Retry {
            failed: true,
            queue,
            limit,
            ..
        } => {
            let queue = queue_arg(queue.as_deref())?;
            let total = super::count_failed(&pool, queue)
                .await?
                .min(u64::from(limit));
            let bar = progress(total, "retrying");
            let summary =
                super::retry_failed(&pool, queue, limit, &actor, |_, _| bar.inc(1)).await?;
            bar.finish_and_clear();
            if json {
                return print_json(&summary);
            }
            println!(
                "retried {}, unchanged {}, failed {}{}",
                summary.retried,
                summary.unchanged,
                summary.errors.len(),
                if summary.more {
                    " (more remain: run it again)"
                } else {
                    ""
                }
            );
            for e in &summary.errors {
                eprintln!("{}: {}", e.job_id, e.message);
            }
            if !summary.errors.is_empty() {
                bail!("{} jobs could not be retried", summary.errors.len());
            }
        }
        JobsCommand::Retry { ids, .. } => {
            each(&pool, ids, json, "retrying", &actor, Action::Retry).await?
        }
        JobsCommand::Cancel { ids } => {
            each(&pool, ids, json, "cancelling", &actor, Action::Cancel).await?
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Action {
    Retry,
    Cancel,
}

/// Runs one action per job id, with a progress bar when there are several, then a summary;
/// fails (exit 1) if any id could not be acted on.
async fn each(
    pool: &PgPool,
    ids: Vec<String>,
    json: bool,
    verb: &str,
    actor: &Actor,
    action: Action,
) -> Result<()> {
    let bar = progress(ids.len() as u64, verb);
    let mut results: Vec<ActionResult> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    for id in ids {
        let outcome = match action {
            Action::Retry => super::retry(pool, &id, actor).await,
            Action::Cancel => super::cancel(pool, &id, actor).await,
        };
        bar.inc(1);
        match outcome {
            Ok(r) => results.push(r),
            Err(OperatorError::Db(e)) => return Err(e).context("database"),
            Err(e) => errors.push((id, e.to_string())),
        }
    }
    bar.finish_and_clear();
    if json {
        let errors: Vec<_> = errors
            .iter()
            .map(|(id, message)| serde_json::json!({ "job_id": id, "message": message }))
            .collect();
        print_json(&serde_json::json!({ "results": results, "errors": errors }))?;
    } else {
        for r in &results {
            println!("{}: {}", r.job_id, r.message);
        }
        for (id, message) in &errors {
            eprintln!("{id}: {message}");
        }
        let changed = results
            .iter()
            .filter(|r| r.result != Outcome::Unchanged)
            .count();
        println!(
            "{changed} changed, {} unchanged, {} failed",
            results.len() - changed,
            errors.len()
        );
    }
    if !errors.is_empty() {
        bail!("{} of the jobs could not be acted on", errors.len());
    }
    Ok(())
}

/// A progress bar on stderr; indicatif hides it when stderr is not a terminal (scripts, CI).
fn progress(total: u64, verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} jobs ({eta})") {
        bar.set_style(style);
    }
    bar.set_message(verb.to_owned());
    bar
}

pub async fn leads(pool: PgPool, command: LeadsCommand, json: bool) -> Result<()> {
    let actor = Actor::cli();
    match command {
        LeadsCommand::List {
            status,
            since,
            phone,
            reveal,
            page,
        } => {
            let filter = LeadFilter {
                status: status.as_deref().map(str::parse).transpose()?,
                since: since
                    .as_deref()
                    .map(|s| lead_list::parse_since(s, jiff::Timestamp::now()))
                    .transpose()?,
                phone: phone.as_deref().map(lead_list::parse_phone).transpose()?,
                id: None,
            };
            let who = reveal.then_some(&actor);
            let page = lead_list::list(&pool, &filter, &page.request(), who).await?;
            if json {
                return print_json(&page);
            }
            render::leads(&page.items).print();
            render::more(&page.next_cursor);
        }
        LeadsCommand::Show { id, reveal } => {
            let who = reveal.then_some(&actor);
            let view = super::leads::show(&pool, id, who)
                .await?
                .with_context(|| format!("no lead {id}"))?;
            if json {
                return print_json(&view);
            }
            render::lead(&view);
        }
        LeadsCommand::Replay {
            id,
            from,
            workflows_dir,
        } => {
            let from: Option<Step> = from.as_deref().map(str::parse).transpose()?;
            let workflows = Workflows::load_dir(&workflows_dir)?;
            let replayed = super::replay(&pool, &workflows, id, from, &actor).await?;
            if json {
                return print_json(&replayed);
            }
            println!(
                "lead {} replays from {} as run {} (status {}{}); run {} stays in its history",
                replayed.lead_id,
                replayed.from,
                replayed.run_id,
                replayed.status,
                replayed
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default(),
                replayed.replay_of
            );
        }
    }
    Ok(())
}

/// How often `log --follow` looks for new requests.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

pub async fn log(pool: PgPool, args: LogArgs) -> Result<()> {
    let mut filter = LogFilter {
        hook: args.hook,
        outcome: args.outcome,
        after: None,
    };
    let page = webhook_log::list(&pool, &filter, &args.page.request()).await?;
    if !args.follow {
        if args.json {
            return print_json(&page);
        }
        render::log(&page.items).print();
        render::more(&page.next_cursor);
        return Ok(());
    }
    // Following: the latest page oldest first, then whatever arrives after it.
    let mut entries = page.items;
    entries.reverse();
    let mut last = entries.last().map_or(0, |e| e.id);
    let mut header = !args.json;
    loop {
        if args.json {
            for e in &entries {
                print_json(e)?;
            }
        } else if !entries.is_empty() {
            let rendered = render::log(&entries).render();
            let body = if header {
                rendered.as_str()
            } else {
                rendered.split_once('\n').map_or("", |(_, rest)| rest)
            };
            println!("{body}");
            header = false;
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        filter.after = Some(last);
        entries = webhook_log::list(&pool, &filter, &PageRequest::default())
            .await?
            .items;
        last = entries.last().map_or(last, |e| e.id);
    }
}
