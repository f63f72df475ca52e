//! The `leadflow` command line: `serve` (the default), `worker`, `migrate`, `hooks` and
//! `block`. Every command reaches the same database as the service: `DATABASE_URL`, or the
//! private server of the data folder (started if needed, and stopped again only by the
//! command that started it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::blocklist;
use crate::config::{DbSettings, HttpSettings, MetricsSettings, TelephonySettings, WorkerSettings};
use crate::db::Database;
use crate::hooks;
use crate::metrics::Exposure;
use crate::operator::cli::{self as ops, JobsArgs, LeadsArgs, LogArgs, QueuesArgs};
use crate::service::{self, Service};
use crate::steps::Engine;
use crate::validate::BlockKind;
use crate::worker::Workers;
use crate::workflow::Workflows;

#[derive(Debug, Parser)]
#[command(
    name = "leadflow",
    version,
    about = "Durable workflow worker for inbound leads: webhook intake, qualify, route, callback.",
    long_about = "Durable workflow worker for inbound leads.\n\n\
        With no command, runs `serve`: the intake API, the workers and the operator API in one \
        process. With DATABASE_URL unset, a private PostgreSQL is started from the machine's \
        server binaries, with its files under the data folder.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the intake API, the workers and the operator API in one process (the default).
    Serve(ServeArgs),
    /// Run workers only (several may run against one database).
    Worker(WorkerArgs),
    /// Apply database migrations, then exit.
    Migrate(DbArgs),
    /// Create and manage webhook hooks (each with its own bearer token).
    Hooks(HooksArgs),
    /// Manage the block list of phones and emails that are never called.
    Block(BlockArgs),
    /// Queues: jobs per state and the oldest waiting age; pause and resume.
    Queues(QueuesArgs),
    /// Jobs: list, show, retry, cancel.
    Jobs(JobsArgs),
    /// Leads: list, show a timeline, replay.
    Leads(LeadsArgs),
    /// The webhook log: every intake request, its outcome and reason.
    Log(LogArgs),
}

#[derive(Debug, Clone, Args)]
struct ServeArgs {
    #[command(flatten)]
    db: DbSettings,
    #[command(flatten)]
    http: HttpSettings,
    #[command(flatten)]
    worker: WorkerSettings,
    #[command(flatten)]
    telephony: TelephonySettings,
    /// Serve HTTP only: run the workers in separate `leadflow worker` processes.
    #[arg(long, env = "LEADFLOW_NO_WORKERS")]
    no_workers: bool,
    #[command(flatten)]
    metrics: MetricsSettings,
}

#[derive(Debug, Args)]
struct WorkerArgs {
    #[command(flatten)]
    db: DbSettings,
    #[command(flatten)]
    worker: WorkerSettings,
    #[command(flatten)]
    telephony: TelephonySettings,
    #[command(flatten)]
    metrics: MetricsSettings,
    /// The service's listen address, for the default public URL in callback URLs.
    #[arg(
        long,
        env = "LEADFLOW_LISTEN",
        default_value = "127.0.0.1:8080",
        hide = true
    )]
    listen: std::net::SocketAddr,
}

#[derive(Debug, Args)]
struct DbArgs {
    #[command(flatten)]
    db: DbSettings,
}

#[derive(Debug, Args)]
struct HooksArgs {
    #[command(flatten)]
    db: DbSettings,
    #[command(subcommand)]
    command: HooksCommand,
}

#[derive(Debug, Subcommand)]
enum HooksCommand {
    /// Create a hook and print its URL and token. The token is shown only this once.
    Create {
        /// The hook's name; senders put it in the body's `hookName`.
        #[arg(long)]
        name: String,
        /// The workflow its leads run through (a file in the workflows directory).
        #[arg(long, default_value = "default")]
        workflow: String,
        /// Call leads back when the body has no `is_auto`.
        #[arg(long, value_enum, default_value_t = OnOff::On)]
        auto_callback: OnOff,
        /// Requests per minute this hook may send (default: LEADFLOW_RATE_LIMIT_PER_MIN).
        #[arg(long)]
        rate_limit: Option<u32>,
        /// Directory of workflow definitions, to check that the workflow exists.
        #[arg(long, env = "LEADFLOW_WORKFLOWS_DIR", default_value = "workflows")]
        workflows_dir: PathBuf,
        #[command(flatten)]
        url: PublicUrl,
        /// Print JSON: {"name","url","token",…}.
        #[arg(long)]
        json: bool,
    },
    /// List hooks (never their tokens).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Disable a hook: its requests get 404 until it is enabled again.
    Disable {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Enable a disabled hook.
    Enable {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Give a hook a new token (shown once); the old one keeps working for the grace period.
    Rotate {
        name: String,
        /// How long the old token keeps working (e.g. 24h, 30m; 0 revokes it at once).
        #[arg(long, default_value = "24h")]
        grace: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    Phone,
    Email,
}

impl From<Kind> for BlockKind {
    fn from(k: Kind) -> BlockKind {
        match k {
            Kind::Phone => BlockKind::Phone,
            Kind::Email => BlockKind::Email,
        }
    }
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Phone => "phone",
            Kind::Email => "email",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Debug, Args)]
struct PublicUrl {
    /// The URL senders reach this service at; defaults to http://<LEADFLOW_LISTEN>.
    #[arg(long, env = "LEADFLOW_PUBLIC_URL")]
    public_url: Option<String>,
    #[arg(
        long,
        env = "LEADFLOW_LISTEN",
        default_value = "127.0.0.1:8080",
        hide = true
    )]
    listen: String,
}

impl PublicUrl {
    fn base(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

#[derive(Debug, Args)]
struct BlockArgs {
    #[command(flatten)]
    db: DbSettings,
    #[command(subcommand)]
    command: BlockCommand,
}

#[derive(Debug, Subcommand)]
enum BlockCommand {
    /// Block a phone number (E.164, e.g. +14155550123) or an email address.
    Add {
        #[arg(value_enum)]
        kind: Kind,
        value: String,
        /// Why it is blocked, for the next operator.
        #[arg(long)]
        note: Option<String>,
    },
    /// Remove an entry from the block list.
    Remove {
        #[arg(value_enum)]
        kind: Kind,
        value: String,
    },
    /// List the block list (values masked unless --reveal).
    List {
        #[arg(long)]
        json: bool,
        /// Show full phone numbers and email addresses.
        #[arg(long)]
        reveal: bool,
    },
}

pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(args).await,
        Some(Command::Worker(args)) => worker(args).await,
        Some(Command::Migrate(args)) => {
            let db = open(&args.db).await?;
            db.migrate().await?;
            println!("migrations applied");
            db.close().await?;
            Ok(())
        }
        Some(Command::Hooks(args)) => with_db(&args.db, |pool| hooks_cmd(pool, args.command)).await,
        Some(Command::Block(args)) => with_db(&args.db, |pool| block_cmd(pool, args.command)).await,
        Some(Command::Queues(a)) => {
            with_db(&a.db, |pool| ops::queues(pool, a.command, a.json)).await
        }
        Some(Command::Jobs(a)) => with_db(&a.db, |pool| ops::jobs(pool, a.command, a.json)).await,
        Some(Command::Leads(a)) => with_db(&a.db, |pool| ops::leads(pool, a.command, a.json)).await,
        Some(Command::Log(a)) => with_db(&a.db.clone(), |pool| ops::log(pool, a)).await,
    }
}

async fn open(settings: &DbSettings) -> Result<Database> {
    Database::open(settings)
        .await
        .context("opening the database")
}

/// Runs a short command against a migrated database, then closes it (stopping the private
/// server only if this command started it).
async fn with_db<F, Fut>(settings: &DbSettings, f: F) -> Result<()>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let db = open(settings).await?;
    db.migrate().await?;
    let result = f(db.pool.clone()).await;
    db.close().await?;
    result
}

fn load_workflows(dir: &Path) -> Result<Arc<Workflows>> {
    Ok(Arc::new(Workflows::load_dir(dir)?))
}

async fn serve(args: ServeArgs) -> Result<()> {
    let workflows = load_workflows(&args.worker.workflows_dir)?;
    crate::retention::schedule(&args.worker.retention_cron)?;
    let engine_config = args.telephony.engine_config(args.http.listen)?;
    let db = open(&args.db).await?;
    db.migrate().await?;
    let (token, file) = service::admin_token(args.http.admin_token.as_deref(), &args.db.data_dir)
        .context("preparing the admin token")?;
    if let Some(file) = file {
        tracing::info!(file = %file.display(), "admin token (for operator routes) is kept in this file");
    }
    let exposure = Exposure::start(&db.pool, &workflows, &args.metrics).await?;
    let engine = Engine::build(db.pool.clone(), workflows, engine_config)?;
    let workers = (!args.no_workers).then_some(&args.worker);
    let svc = Service::start(engine, &args.http, &token, workers)
        .await
        .with_context(|| format!("listening on {}", args.http.listen))?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests and steps");
    let clean = svc.shutdown().await;
    exposure.stop().await;
    db.close().await?;
    if clean {
        Ok(())
    } else {
        anyhow::bail!("shutdown deadline passed with work in flight")
    }
}

async fn worker(args: WorkerArgs) -> Result<()> {
    let workflows = load_workflows(&args.worker.workflows_dir)?;
    crate::retention::schedule(&args.worker.retention_cron)?;
    let engine_config = args.telephony.engine_config(args.listen)?;
    let db = open(&args.db).await?;
    db.migrate().await?;
    let exposure = Exposure::start(&db.pool, &workflows, &args.metrics).await?;
    if exposure.listen_addr().is_none() {
        tracing::info!("metrics are not served: set LEADFLOW_METRICS_LISTEN to serve /metrics");
    }
    let engine = Engine::build(db.pool.clone(), workflows, engine_config)?;
    let workers = Workers::spawn(engine.clone(), &args.worker);
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight steps");
    let clean =
        workers.shutdown().await && engine.drain_reports(args.worker.shutdown_timeout()).await;
    exposure.stop().await;
    db.close().await?;
    if clean {
        Ok(())
    } else {
        anyhow::bail!("shutdown deadline passed with steps in flight")
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "SIGTERM handler unavailable; waiting for Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn hooks_cmd(pool: sqlx::PgPool, cmd: HooksCommand) -> Result<()> {
    match cmd {
        HooksCommand::Create {
            name,
            workflow,
            auto_callback,
            rate_limit,
            workflows_dir,
            url,
            json,
        } => {
            let workflows = load_workflows(&workflows_dir)?;
            if workflows.get(&workflow).is_none() {
                let known: Vec<&str> = workflows.names().collect();
                anyhow::bail!(
                    "no workflow {workflow:?} in {} (known: {})",
                    workflows_dir.display(),
                    known.join(", ")
                );
            }
            let created = hooks::create(
                &pool,
                &name,
                &workflow,
                auto_callback == OnOff::On,
                &url.base(),
            )
            .await?;
            if rate_limit.is_some() {
                hooks::set_rate_limit(&pool, &name, rate_limit).await?;
            }
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!(
                    "Created hook {} (workflow {}, auto-callback {})",
                    created.name,
                    created.workflow,
                    if created.auto_callback { "on" } else { "off" }
                );
                println!("URL:   {}", created.url);
                println!("Token: {}", created.token);
                println!("The token is shown only now: store it in the sender's settings.");
            }
        }
        HooksCommand::List { json } => {
            let all = hooks::list(&pool).await?;
            if json {
                let rows: Vec<_> = all
                    .iter()
                    .map(|h| serde_json::json!({"name": h.name, "workflow": h.workflow, "auto_callback": h.auto_callback, "active": h.active}))
                    .collect();
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<24} {:<16} {:<13} ACTIVE",
                    "NAME", "WORKFLOW", "AUTO-CALLBACK"
                );
                for h in all {
                    println!(
                        "{:<24} {:<16} {:<13} {}",
                        h.name,
                        h.workflow,
                        if h.auto_callback { "on" } else { "off" },
                        if h.active { "yes" } else { "no" }
                    );
                }
            }
        }
        HooksCommand::Disable { name, json } => set_hook_active(&pool, &name, false, json).await?,
        HooksCommand::Enable { name, json } => set_hook_active(&pool, &name, true, json).await?,
        HooksCommand::Rotate { name, grace, json } => {
            let grace = crate::workflow::duration::parse(&grace).context("--grace")?;
            let grace = crate::operator::hooks::grace(Some(grace))?;
            let rotated = hooks::rotate(&pool, &name, grace).await?;
            if json {
                println!("{}", serde_json::to_string(&rotated)?);
            } else {
                println!("New token for hook {}: {}", rotated.name, rotated.token);
                match &rotated.previous_token_expires_at {
                    Some(until) => println!("The previous token keeps working until {}.", until.0),
                    None => println!("The previous token no longer works."),
                }
                println!("The token is shown only now: store it in the sender's settings.");
            }
        }
    }
    Ok(())
}

async fn set_hook_active(pool: &sqlx::PgPool, name: &str, active: bool, json: bool) -> Result<()> {
    hooks::set_active(pool, name, active).await?;
    if json {
        println!("{}", serde_json::json!({ "name": name, "active": active }));
    } else {
        println!(
            "hook {name} {}",
            if active { "enabled" } else { "disabled" }
        );
    }
    Ok(())
}

async fn block_cmd(pool: sqlx::PgPool, cmd: BlockCommand) -> Result<()> {
    match cmd {
        BlockCommand::Add { kind, value, note } => {
            let stored = blocklist::add(&pool, kind.into(), &value, note.as_deref()).await?;
            println!("blocked {} {}", kind.as_str(), stored);
        }
        BlockCommand::Remove { kind, value } => {
            let removed = blocklist::remove(&pool, kind.into(), &value).await?;
            println!(
                "{} {} {}",
                if removed {
                    "unblocked"
                } else {
                    "was not blocked:"
                },
                kind.as_str(),
                value
            );
        }
        BlockCommand::List { json, reveal } => {
            let mut entries = blocklist::list(&pool).await?;
            if !reveal {
                entries = entries.into_iter().map(blocklist::Entry::masked).collect();
            }
            if json {
                println!("{}", serde_json::to_string(&entries)?);
            } else {
                println!("{:<6} {:<32} NOTE", "KIND", "VALUE");
                for e in entries {
                    println!(
                        "{:<6} {:<32} {}",
                        e.kind,
                        e.value,
                        e.note.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}
