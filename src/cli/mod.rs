//! The `leadflow` command line: `serve` (the default), `worker`, `migrate`, `hooks` and
//! `block`. Every command reaches the same database as the service: `DATABASE_URL`, or the
//! private server of the data folder (started if needed, and stopped again only by the
//! command that started it).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

mod block;
mod hooks;

use crate::config::{DbSettings, HttpSettings, MetricsSettings, TelephonySettings, WorkerSettings};
use crate::db::Database;
use crate::engine::Engine;
use crate::metrics::Exposure;
use crate::operator::cli::{self as ops, JobsArgs, LeadsArgs, LogArgs, QueuesArgs};
use crate::service::{self, Service};
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
    Hooks(hooks::HooksArgs),
    /// Manage the block list of phones and emails that are never called.
    Block(block::BlockArgs),
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
        Some(Command::Hooks(args)) => {
            with_db(&args.db, |pool| hooks::run(pool, args.command)).await
        }
        Some(Command::Block(args)) => {
            with_db(&args.db, |pool| block::run(pool, args.command)).await
        }
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
    crate::engine::retention::schedule(&args.worker.retention_cron)?;
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
    crate::engine::retention::schedule(&args.worker.retention_cron)?;
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
