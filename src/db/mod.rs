//! The database: which server (DATABASE_URL or the private embedded one), the pool, the
//! migrations, and how to tell "the database is unavailable" from other errors.

mod at;
pub mod embedded;
mod settings;

pub use at::At;
pub use settings::DbSettings;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::postgres::Postgres;
use sqlx::{Connection, Executor};
use sqlx::{PgPool, Transaction};

use embedded::{EmbeddedError, EmbeddedOptions, EmbeddedPostgres};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("running apalis migrations: {0}")]
    ApalisMigrate(#[source] apalis_postgres::Error),
    #[error("running leadflow migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// Tries of [`outlast_restart`]: about a minute, longer than a database restart.
const RESTART_TRIES: u32 = 16;

/// Runs `attempt` until it succeeds, fails with an error `retry_if` refuses, or has failed
/// for about a minute (the pause doubles from 200 ms to 5 s): for writes whose loss would cost
/// more than the wait, such as a provider's answer or a job's acknowledgement, while the
/// database restarts. Each failure is logged as `what`.
pub async fn outlast_restart<T, E, Fut>(
    what: &str,
    retry_if: impl Fn(&E) -> bool,
    mut attempt: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: std::fmt::Display,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(200);
    let mut tries = 1;
    loop {
        match attempt().await {
            Err(e) if tries < RESTART_TRIES && retry_if(&e) => {
                tracing::warn!(error = %e, ?pause, "could not {what}; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
                tries += 1;
            }
            result => return result,
        }
    }
}

/// An open database: the pool, and the private server if this process uses one.
pub struct Database {
    pub pool: PgPool,
    /// The URL the pool connects to (for sibling tools such as a LISTEN connection).
    pub url: String,
    embedded: Option<EmbeddedPostgres>,
}

impl Database {
    /// Connects to `DATABASE_URL`, or starts (or reuses) the private server.
    pub async fn open(settings: &DbSettings) -> Result<Database, DbError> {
        let (url, embedded) = match &settings.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let pg = EmbeddedPostgres::start(EmbeddedOptions {
                    data_dir: settings.data_dir.clone(),
                    fast_unsafe: false,
                })
                .await?;
                tracing::info!(
                    cluster = %pg.cluster_dir().display(),
                    started_here = pg.started_here(),
                    "using the private PostgreSQL"
                );
                (pg.url(embedded::APP_DATABASE), Some(pg))
            }
        };
        let pool = connect(&url, settings.pool_max, settings.acquire_timeout()).await?;
        Ok(Database {
            pool,
            url,
            embedded,
        })
    }

    /// Applies apalis's schema, then leadflow's. Both take an advisory lock, so concurrent
    /// starters are safe.
    pub async fn migrate(&self) -> Result<(), DbError> {
        migrate(&self.pool).await
    }

    /// Closes the pool, and stops the private server if this process started it.
    pub async fn close(self) -> Result<(), DbError> {
        self.pool.close().await;
        if let Some(pg) = self.embedded {
            pg.stop().await?;
        }
        Ok(())
    }
}

/// A statement with its parameters bound so far, for helpers that bind a share of them.
pub type Query<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// A connection idle this long is pinged before it is handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

pub async fn connect(url: &str, max: u32, acquire_timeout: Duration) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(max.max(2))
        .acquire_timeout(acquire_timeout)
        // sqlx pings every connection it hands out (a round trip) and again every one handed
        // back. Under load a connection was handed back microseconds ago, after that second
        // ping, so only one that sat idle long enough for the server or the network to have
        // dropped it is pinged first. An intake request saves a round trip per acquire.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= PING_IF_IDLE_FOR {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _| {
            Box::pin(async move {
                // The planner's default assumes spinning disks. With it, apalis's
                // acknowledgement (a join of a JSON array of ids with apalis.jobs) hash-joins
                // a sequential scan of the whole jobs table on every batch while the table
                // holds up to ~25k rows: 4 ms per acknowledgement at 20k rows instead of
                // 0.5 ms by primary key. A SET rather than a startup option, which
                // connection poolers such as PgBouncer refuse.
                //
                // Generic plans only: the steps' statements take arrays (UNNEST, = ANY), and
                // against a generic plan's guess of ten elements a custom plan for one or
                // two always looks cheaper, so PostgreSQL planned them again at every
                // execution: 6 ms of planning per lead at 100 leads/s (pg_stat_statements
                // with track_planning), a third of the lead's cost. The few operator queries
                // whose plan depends on which filters are set ask for custom plans
                // ([`custom_plans`]).
                conn.execute(
                    "SET random_page_cost = 1.1; SET plan_cache_mode = force_generic_plan",
                )
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(DbError::Connect)
}

/// A read-only transaction whose statements are planned for their parameters, for queries
/// with optional filters (`$1 IS NULL OR column = $1`): a generic plan cannot know which
/// filters are set, so it cannot use their indexes. One round trip, as a plain `BEGIN`.
pub async fn custom_plans(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with("BEGIN READ ONLY; SET LOCAL plan_cache_mode = force_custom_plan")
        .await
}

pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    apalis_postgres::PostgresStorage::setup(pool)
        .await
        .map_err(DbError::ApalisMigrate)?;
    sqlx::migrate!("./migrations")
        .run(pool)
        .await
        .map_err(DbError::Migrate)
}

/// True when an error means "the database cannot be reached right now" (callers answer 503
/// and retry later), as opposed to a fault in the query or the data.
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P0x: admin shutdown, crash shutdown, cannot connect
            // now; 53300: too many connections.
            code.starts_with("08") || code.starts_with("57P") || code == "53300"
        }),
        _ => false,
    }
}

/// True when an error is a unique-constraint violation (SQLSTATE 23505).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
