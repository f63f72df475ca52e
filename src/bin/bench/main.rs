//! `bench`: leadflow against its baselines, on one PostgreSQL, in one invocation.
//!
//! Four sections, each printed with the figure it is compared to (these machines are noisy;
//! only ratios measured side by side hold):
//! 1. intake: concurrent HTTP clients for a fixed time, against `pgbench` writing the same
//!    rows as one intake, one `INSERT` per table, at the same client count;
//! 2. pipeline: L leads pre-loaded, then the time workers take to carry every one through
//!    qualify → route → callback (sim provider answering at once), against the Graphile
//!    Worker chain in `../shared/bench/graphile-chain`;
//! 3. speed-to-lead: lead accepted → call placed at a steady offered load, against the
//!    Graphile chain's latency;
//! 4. cost: peak RSS of the leadflow processes and PostgreSQL transactions per lead.
//!
//! It resets its own databases (`leadflow_bench`, `leadflow_bench_graphile`) on the server of
//! `DATABASE_URL`, or on the private server under `target/bench-pg` when that is unset.

mod baseline;
mod load;
mod report;
mod target;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;

use report::{Cost, Mark, Report};
use target::{Bench, Role};

#[derive(Debug, Parser)]
#[command(
    name = "bench",
    about = "Benchmark leadflow's intake, pipeline and speed-to-lead against pgbench and Graphile \
             Worker on the same PostgreSQL, in one run",
    after_help = "Prints a summary table, then machine-readable `bench …` lines. \
                  `just bench` builds in release mode and runs this with the defaults."
)]
struct Args {
    /// Server to use (the databases --db-name and <db-name>_graphile on it are dropped
    /// and recreated). Unset: a private server under target/bench-pg.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Concurrent HTTP clients in the intake phase (and pgbench clients).
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Length of the intake phase, and of the pgbench baseline, in seconds.
    #[arg(long, default_value_t = 15)]
    intake_seconds: u64,
    /// Seconds of the same closed-loop load before the intake phase, not measured: the
    /// freshly started process opens its pool's connections then, as pgbench, whose
    /// figure excludes its connection time, opens its own before measuring.
    #[arg(long, default_value_t = 2)]
    intake_warmup_seconds: u64,
    /// Leads pre-loaded for the pipeline phase (and in the Graphile chain).
    #[arg(long, default_value_t = 20_000)]
    leads: usize,
    /// Offered load in the speed-to-lead phase, leads per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Length of the speed-to-lead phase, in seconds.
    #[arg(long, default_value_t = 30)]
    rate_seconds: u64,
    /// Seconds of the same offered load before the speed-to-lead phase, not measured: a
    /// freshly started process opens its connections, and each new PostgreSQL backend
    /// loads its caches and prepares its statements, under the first seconds of load.
    #[arg(long, default_value_t = 5)]
    rate_warmup_seconds: u64,
    /// Worker concurrency per queue (LEADFLOW_CONCURRENCY for the measured processes).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Jobs claimed per fetch (LEADFLOW_BATCH_SIZE for the measured processes).
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Database connections per measured process (LEADFLOW_DB_POOL_MAX).
    #[arg(long, default_value_t = 40)]
    pool: u32,
    /// The Graphile chain benchmark's folder (copied to target/bench/ and run with node).
    #[arg(long, default_value = "../shared/bench/graphile-chain")]
    graphile_dir: PathBuf,
    /// Skip the Graphile baseline (its ratios print as n/a).
    #[arg(long)]
    no_graphile: bool,
    /// Skip the pgbench baseline (its ratio prints as n/a).
    #[arg(long)]
    no_pgbench: bool,
    /// Replace the results section of this README with the table (between the
    /// `<!-- bench:begin -->` and `<!-- bench:end -->` markers).
    #[arg(long)]
    readme: Option<PathBuf>,
    /// The leadflow binary to measure (default: `leadflow` next to this binary).
    #[arg(long)]
    leadflow: Option<PathBuf>,
    /// The bench's database, dropped and recreated (the Graphile chain's is
    /// `<name>_graphile`).
    #[arg(long, default_value = "leadflow_bench")]
    db_name: String,
    /// Workflows folder (must hold always-open.toml).
    #[arg(long, default_value = "workflows")]
    workflows_dir: PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("bench: {e:#}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<()> {
    let leadflow = match &args.leadflow {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("locating this binary")?
            .with_file_name("leadflow"),
    };
    let settings = target::Settings {
        leadflow,
        workflows_dir: args.workflows_dir.clone(),
        database: args.db_name.clone(),
        concurrency: args.concurrency,
        batch_size: args.batch_size,
        pool: args.pool,
    };
    let bench = Bench::prepare(args.database_url.as_deref(), settings).await?;
    let mut report = Report::new(&args, bench.server_version().await?);
    let mut phones = load::Phones::default();

    // 1. Intake: HTTP only (no workers), so the figure is the intake transaction's.
    eprintln!(
        "[1/4] intake: {} clients for {} s (after {} s unmeasured)",
        args.clients, args.intake_seconds, args.intake_warmup_seconds
    );
    let intake = bench.start(Role::IntakeOnly).await?;
    let hook = bench.create_hook().await?;
    let url = intake.base_url();
    if args.intake_warmup_seconds > 0 {
        let warm = Duration::from_secs(args.intake_warmup_seconds);
        closed_for(&url, &hook.token, args.clients, warm, &mut phones).await?;
    }
    let mark = Mark::of(&bench, &intake).await?;
    let length = Duration::from_secs(args.intake_seconds);
    let run = closed_for(&url, &hook.token, args.clients, length, &mut phones).await?;
    let cost = Cost::after(&bench, intake, mark, run.accepted).await?;
    report.intake(&run, cost);
    if !args.no_pgbench {
        eprintln!(
            "      pgbench: the same rows, one INSERT per table, {} clients",
            args.clients
        );
        let shape = baseline::IntakeShape::from_database(&bench).await?;
        let tps =
            baseline::pgbench(&bench, &shape, hook.id, args.clients, args.intake_seconds).await?;
        report.pgbench(tps);
    }

    // 2. Pipeline: pre-load with no worker running, then time the workers alone. First a
    // warm-up batch goes all the way through and the tables are analyzed, as a live system's
    // have history and statistics: on emptied tables the workers' first (cached, generic)
    // plans scan `runs` and `callback_attempts` sequentially, and keep doing so while the
    // tables grow, until autovacuum's next ANALYZE (a minute or more away).
    bench.reset_leads().await?;
    let warm = (args.leads / 20).clamp(100, 1000);
    eprintln!("[2/4] pipeline: warming up with {warm} leads");
    let since = bench.clock().await?;
    let warmed = preload(&bench, &hook.token, args.clients, warm, &mut phones).await?;
    let workers = bench.start(Role::WorkersOnly).await?;
    bench
        .wait_for_runs(warmed.accepted, &since, Duration::from_secs(300))
        .await?;
    workers.stop().await;
    bench.analyze().await?;
    eprintln!("      pre-loading {} leads", args.leads);
    let since = bench.clock().await?;
    let preload = preload(&bench, &hook.token, args.clients, args.leads, &mut phones).await?;
    eprintln!("      running the workers");
    let mark = Mark::now(&bench).await?;
    let workers = bench.start(Role::WorkersOnly).await?;
    let done = bench
        .wait_for_runs(preload.accepted, &since, Duration::from_secs(900))
        .await?;
    let cost = Cost::after(&bench, workers, mark, preload.accepted).await?;
    report.pipeline(&done, cost);

    // 3. Speed-to-lead: everything in one process, a steady offered load.
    eprintln!(
        "[3/4] speed-to-lead: {} leads/s for {} s",
        args.rate, args.rate_seconds
    );
    // On top of the pipeline's runs, as a live system has its history; emptied tables would
    // leave the process's first (cached, generic) plans scanning tables that then grow.
    bench.analyze().await?;
    let service = bench.start(Role::Serve).await?;
    let url = service.base_url();
    if args.rate_warmup_seconds > 0 {
        eprintln!(
            "      warming up: {} leads/s for {} s, not measured",
            args.rate, args.rate_warmup_seconds
        );
        let since = bench.clock().await?;
        let warm = offer(
            &url,
            &hook.token,
            &args,
            args.rate_warmup_seconds,
            &mut phones,
        )
        .await?;
        bench
            .wait_for_runs(warm.accepted, &since, Duration::from_secs(120))
            .await?;
    }
    let since = bench.clock().await?;
    let mark = Mark::of(&bench, &service).await?;
    let offered = offer(&url, &hook.token, &args, args.rate_seconds, &mut phones).await?;
    bench
        .wait_for_runs(offered.accepted, &since, Duration::from_secs(120))
        .await?;
    let cost = Cost::after(&bench, service, mark, offered.accepted).await?;
    let latencies = bench.speed_to_lead(&since).await?;
    report.speed_to_lead(&offered, &latencies, cost);

    // 4. The peer, last, so that its node processes do not share the machine with ours.
    if args.no_graphile {
        eprintln!("[4/4] graphile chain: skipped (--no-graphile)");
    } else {
        eprintln!("[4/4] graphile chain: {} leads", args.leads);
        let graphile = baseline::graphile(&bench, &args.graphile_dir, args.leads).await?;
        report.graphile(graphile);
    }

    let text = report.render();
    println!("{text}");
    if let Some(readme) = &args.readme {
        report::write_readme(readme, &report.markdown())?;
        eprintln!("results written to {}", readme.display());
    }
    bench.finish().await;
    Ok(())
}

/// Posts `leads` leads to an intake-only process, which is stopped after; all must be
/// accepted.
async fn preload(
    bench: &Bench,
    token: &str,
    clients: usize,
    leads: usize,
    phones: &mut load::Phones,
) -> Result<load::Outcome> {
    let intake = bench.start(Role::IntakeOnly).await?;
    let plan = load::Plan::ClosedCount(leads);
    let outcome = load::run(&intake.base_url(), token, clients, plan, phones).await?;
    intake.stop().await;
    outcome.require_all_accepted()?;
    Ok(outcome)
}

/// Posts leads from `clients` clients, each sending its next as soon as it has an answer,
/// for `length`.
async fn closed_for(
    url: &str,
    token: &str,
    clients: usize,
    length: Duration,
    phones: &mut load::Phones,
) -> Result<load::Outcome> {
    load::run(url, token, clients, load::Plan::ClosedFor(length), phones).await
}

/// Offers `--rate` leads a second for `seconds` to the process at `url`.
async fn offer(
    url: &str,
    token: &str,
    args: &Args,
    seconds: u64,
    phones: &mut load::Phones,
) -> Result<load::Outcome> {
    let plan = load::Plan::Rate {
        per_second: args.rate,
        for_: Duration::from_secs(seconds),
    };
    load::run(url, token, args.clients, plan, phones).await
}
