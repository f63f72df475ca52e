//! The system under test: the bench's database on one PostgreSQL server, the leadflow
//! processes it starts (each watched for RSS), and the queries that read results back.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use leadflow::db::embedded::{EmbeddedOptions, EmbeddedPostgres};
use sqlx::PgPool;
use tokio::process::{Child, Command};

const ADMIN_TOKEN: &str = "bench-admin-token-not-secret";

/// How the measured processes are started.
#[derive(Debug, Clone)]
pub struct Settings {
    pub leadflow: PathBuf,
    pub workflows_dir: PathBuf,
    /// The bench's database; the Graphile chain's is `{database}_graphile`.
    pub database: String,
    pub concurrency: usize,
    pub batch_size: usize,
    pub pool: u32,
}

/// Which leadflow process a phase measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `serve --no-workers`: intake only.
    IntakeOnly,
    /// `worker`: the three queues, no HTTP.
    WorkersOnly,
    /// `serve`: everything in one process.
    Serve,
}

pub struct Bench {
    server: Server,
    pub pool: PgPool,
    pub url: String,
    settings: Settings,
    log_dir: PathBuf,
}

/// The hook the load posts to.
pub struct BenchHook {
    pub id: i64,
    pub token: String,
}

enum Server {
    Private(EmbeddedPostgres),
    Given(String),
}

impl Server {
    fn url(&self, database: &str) -> Result<String> {
        match self {
            Server::Private(pg) => Ok(pg.url(database)),
            Server::Given(url) => {
                let mut url = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
                url.set_path(&format!("/{database}"));
                Ok(url.to_string())
            }
        }
    }
}

impl Bench {
    /// Starts (or reaches) the server and recreates the bench database, migrated.
    pub async fn prepare(database_url: Option<&str>, settings: Settings) -> Result<Bench> {
        if !settings.leadflow.exists() {
            bail!(
                "{} does not exist: build it first (`cargo build --release --bins --features testing`)",
                settings.leadflow.display()
            );
        }
        if !settings.workflows_dir.join("always-open.toml").exists() {
            bail!(
                "{} has no always-open.toml; run from the repository root or pass --workflows-dir",
                settings.workflows_dir.display()
            );
        }
        let server = match database_url {
            Some(url) => Server::Given(url.to_owned()),
            None => {
                let pg = EmbeddedPostgres::start(EmbeddedOptions {
                    data_dir: PathBuf::from("target/bench-pg"),
                    fast_unsafe: false,
                })
                .await
                .context("starting the private PostgreSQL under target/bench-pg")?;
                Server::Private(pg)
            }
        };
        let database = &settings.database;
        if database.is_empty()
            || database.len() > 40
            || !database
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!("--db-name must be 1-40 characters of a-z, 0-9 and _, got {database:?}");
        }
        let admin = connect(&server.url("postgres")?, 2).await?;
        for db in [database.clone(), format!("{database}_graphile")] {
            // Checked above: only [a-z0-9_] reaches this DDL.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {db} WITH (FORCE)"
            )))
            .execute(&admin)
            .await
            .with_context(|| format!("dropping {db}"))?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&admin)
                .await
                .with_context(|| format!("creating {db}"))?;
        }
        admin.close().await;
        let url = server.url(database)?;
        let pool = connect(&url, 4).await?;
        leadflow::db::migrate(&pool)
            .await
            .context("migrating the bench database")?;
        let log_dir = PathBuf::from("target/bench");
        std::fs::create_dir_all(&log_dir).context("creating target/bench")?;
        Ok(Bench {
            server,
            pool,
            url,
            settings,
            log_dir,
        })
    }

    /// The Graphile chain's database, next to the bench's own.
    pub fn graphile_url(&self) -> Result<String> {
        self.server
            .url(&format!("{}_graphile", self.settings.database))
    }

    pub async fn server_version(&self) -> Result<String> {
        let (v,): (String,) = sqlx::query_as("SHOW server_version")
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    /// Creates the bench hook (always-open workflow, no practical rate limit) with the
    /// service's own command.
    pub async fn create_hook(&self) -> Result<BenchHook> {
        let out = Command::new(&self.settings.leadflow)
            .args([
                "hooks",
                "create",
                "--name",
                "bench",
                "--workflow",
                "always-open",
            ])
            .args(["--rate-limit", "100000000", "--json"])
            .env("DATABASE_URL", &self.url)
            .env("LEADFLOW_WORKFLOWS_DIR", &self.settings.workflows_dir)
            .env("RUST_LOG", "warn")
            .output()
            .await
            .context("running leadflow hooks create")?;
        if !out.status.success() {
            bail!(
                "leadflow hooks create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("reading hooks create --json")?;
        let token = v["token"]
            .as_str()
            .ok_or_else(|| anyhow!("hooks create printed no token"))?
            .to_owned();
        let hook = leadflow::hooks::find_by_name(&self.pool, "bench")
            .await?
            .ok_or_else(|| anyhow!("hooks create did not store the bench hook"))?;
        Ok(BenchHook { id: hook.id, token })
    }

    /// Empties every lead table and the job queue, so that each phase starts alike.
    pub async fn reset_leads(&self) -> Result<()> {
        sqlx::query(
            "TRUNCATE webhook_log, idempotency_keys, timeline, callback_attempts, \
             callback_slots, steps, runs, leads, apalis.jobs CASCADE",
        )
        .execute(&self.pool)
        .await
        .context("emptying the lead tables")?;
        self.analyze().await
    }

    /// Vacuums and analyzes the bench database, as autovacuum does within a minute of a
    /// table's growth on a live system. The measured process starts after it, so its
    /// cached plans are made against the tables as they are.
    pub async fn analyze(&self) -> Result<()> {
        sqlx::query("VACUUM ANALYZE")
            .execute(&self.pool)
            .await
            .context("vacuuming")?;
        Ok(())
    }

    /// The database's clock, to tell a phase's runs from earlier ones.
    pub async fn clock(&self) -> Result<Since> {
        let (now,): (String,) = sqlx::query_as("/* bench */ SELECT now()::text")
            .fetch_one(&self.pool)
            .await?;
        Ok(Since(now))
    }

    /// Committed plus rolled-back transactions of the bench database so far. Backends
    /// report their counts when idle or on exit, so read this after the phase's process
    /// has stopped.
    pub async fn xacts(&self) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("/* bench */ SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await?;
        let (n,): (i64,) = sqlx::query_as(
            "/* bench */ SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database \
             WHERE datname = current_database()",
        )
        .fetch_one(&mut *conn)
        .await?;
        Ok(n)
    }

    /// Statements executed on the bench database so far, by every client but the bench's
    /// own queries (marked `/* bench */`), BEGIN and COMMIT included: `None` unless the
    /// server loads `pg_stat_statements` (`shared_preload_libraries`).
    pub async fn statements(&self) -> Option<i64> {
        let _ = sqlx::query("/* bench */ CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&self.pool)
            .await;
        let row: Result<(Option<i64>,), _> = sqlx::query_as(
            "/* bench */ SELECT sum(calls)::bigint FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid \
             WHERE d.datname = current_database() AND s.query NOT LIKE '%/* bench */%'",
        )
        .fetch_one(&self.pool)
        .await;
        row.ok().map(|(n,)| n.unwrap_or(0))
    }

    /// Starts a leadflow process in `role` and waits until it is ready.
    pub async fn start(&self, role: Role) -> Result<Proc> {
        let port = free_port()?;
        let log = self.log_dir.join(format!("{role:?}.log").to_lowercase());
        let out = std::fs::File::create(&log).context("creating the process log")?;
        let err = out.try_clone()?;
        let mut cmd = Command::new(&self.settings.leadflow);
        match role {
            Role::IntakeOnly => cmd.args(["serve", "--no-workers"]),
            Role::WorkersOnly => cmd.arg("worker"),
            Role::Serve => cmd.arg("serve"),
        };
        cmd.env("DATABASE_URL", &self.url)
            .env("LEADFLOW_LISTEN", format!("127.0.0.1:{port}"))
            .env("LEADFLOW_WORKFLOWS_DIR", &self.settings.workflows_dir)
            .env("LEADFLOW_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("LEADFLOW_TELEPHONY", "sim")
            .env("LEADFLOW_SIM_DELAY_MS", "0")
            .env("LEADFLOW_SIM_OUTCOMES", "completed")
            .env(
                "LEADFLOW_CONCURRENCY",
                self.settings.concurrency.to_string(),
            )
            .env("LEADFLOW_BATCH_SIZE", self.settings.batch_size.to_string())
            .env("LEADFLOW_PROVIDER_CONCURRENCY", "64")
            .env("LEADFLOW_DB_POOL_MAX", self.settings.pool.to_string())
            .env("LEADFLOW_RATE_LIMIT_PER_MIN", "100000000")
            .env("RUST_LOG", "warn")
            .env_remove("LEADFLOW_METRICS_LISTEN")
            .env_remove("LEADFLOW_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.settings.leadflow.display()))?;
        let pid = child
            .id()
            .ok_or_else(|| anyhow!("leadflow exited at once"))?;
        let proc = Proc::watch(child, pid, port, role, log);
        if role != Role::WorkersOnly {
            proc.wait_ready(Duration::from_secs(60)).await?;
        }
        Ok(proc)
    }

    /// Waits until `expected` runs have ended; returns how long that took from the call
    /// and how the runs ended.
    pub async fn wait_for_runs(
        &self,
        expected: usize,
        since: &Since,
        within: Duration,
    ) -> Result<Finished> {
        let started = Instant::now();
        let mut last_report = Instant::now();
        loop {
            let (ended, called): (i64, i64) = sqlx::query_as(
                "/* bench */ SELECT count(*) FILTER (WHERE status NOT IN ('running', 'scheduled', 'calling')), \
                        count(*) FILTER (WHERE status = 'called') FROM runs \
                 WHERE created_at >= $1::timestamptz",
            )
            .bind(&since.0)
            .fetch_one(&self.pool)
            .await?;
            if ended as usize >= expected {
                let (steps,): (i64,) = sqlx::query_as(
                    "/* bench */ SELECT count(*) FROM steps s JOIN runs r ON r.id = s.run_id \
                     WHERE s.name <> 'validate' AND s.status = 'ok' \
                       AND r.created_at >= $1::timestamptz",
                )
                .bind(&since.0)
                .fetch_one(&self.pool)
                .await?;
                return Ok(Finished {
                    elapsed: started.elapsed(),
                    runs: ended as usize,
                    called: called as usize,
                    step_jobs: steps as usize,
                });
            }
            if started.elapsed() > within {
                bail!("only {ended} of {expected} runs ended within {within:?}");
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!("      {ended}/{expected} runs ended");
                last_report = Instant::now();
            }
            // Each look counts every run on the measured database: not too often.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Lead accepted → first call placed, in milliseconds, for every lead called.
    pub async fn speed_to_lead(&self, since: &Since) -> Result<Vec<f64>> {
        let rows: Vec<(f64,)> = sqlx::query_as(
            "/* bench */ SELECT (extract(epoch FROM a.placed_at - l.received_at) * 1000)::float8 \
             FROM callback_attempts a JOIN leads l ON l.id = a.lead_id \
             WHERE a.n = 1 AND a.placed_at IS NOT NULL AND l.received_at >= $1::timestamptz",
        )
        .bind(&since.0)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(ms,)| ms).collect())
    }

    pub async fn finish(self) {
        self.pool.close().await;
        if let Server::Private(pg) = self.server
            && let Err(e) = pg.stop().await
        {
            eprintln!("bench: stopping the private PostgreSQL: {e}");
        }
    }
}

/// A point on the database's clock: what a phase created is at or after it.
pub struct Since(String);

/// The end of a pipeline phase.
#[derive(Debug)]
pub struct Finished {
    pub elapsed: Duration,
    pub runs: usize,
    pub called: usize,
    pub step_jobs: usize,
}

/// A running leadflow process, its resident memory sampled every 50 ms.
pub struct Proc {
    child: Child,
    pid: u32,
    port: u16,
    role: Role,
    log: PathBuf,
    peak_rss_kb: Arc<AtomicU64>,
}

impl Proc {
    fn watch(child: Child, pid: u32, port: u16, role: Role, log: PathBuf) -> Proc {
        let peak_rss_kb = Arc::new(AtomicU64::new(0));
        let peak = peak_rss_kb.clone();
        tokio::spawn(async move {
            while let Some(kb) = rss_kb(pid) {
                peak.fetch_max(kb, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Proc {
            child,
            pid,
            port,
            role,
            log,
            peak_rss_kb,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self, within: Duration) -> Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + within;
        let url = format!("{}/readyz", self.base_url());
        loop {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline || rss_kb(self.pid).is_none() {
                bail!(
                    "leadflow ({:?}) did not become ready; see {}",
                    self.role,
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// User and system CPU time so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        process_cpu_seconds(self.pid).unwrap_or(f64::NAN)
    }

    /// Stops the process (SIGTERM, then SIGKILL after 30 s); returns its peak RSS in MB and
    /// the CPU time it used.
    pub async fn stop(mut self) -> Stopped {
        let stopped = Stopped {
            rss_mb: self.peak_rss_mb(),
            cpu_s: process_cpu_seconds(self.pid).unwrap_or(f64::NAN),
        };
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        stopped
    }

    pub fn peak_rss_mb(&self) -> f64 {
        self.peak_rss_kb.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

/// What a measured process used, read as it was stopped.
pub struct Stopped {
    pub rss_mb: f64,
    /// User and system CPU time over its life, in seconds.
    pub cpu_s: f64,
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// Busy CPU time of the whole machine since boot (every core, every process), in seconds:
/// what a phase costs, whoever spent it (PostgreSQL, leadflow, the load generator).
pub fn machine_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq: all but idle and iowait are busy. Steal (the
    // eighth) is time the hypervisor gave to someone else, so it is left out.
    let busy: u64 = ticks
        .iter()
        .take(7)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    Some(busy as f64 / clock_ticks_per_second())
}

/// User and system CPU time of a live process, in seconds.
fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces; the fields after it are fixed: utime and stime are
    // the 12th and 13th after the closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks_per_second())
}

/// VmRSS of a live process, in kB; `None` once it has exited.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

async fn connect(url: &str, max: u32) -> Result<PgPool> {
    leadflow::db::connect(url, max, Duration::from_secs(10))
        .await
        .context("connecting to PostgreSQL")
}
