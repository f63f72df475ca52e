//! Refreshes the database-wide gauges on a schedule, in one process only.
//!
//! Every process runs a monitor; they elect one refresher with a session-level advisory lock
//! (`pg_try_advisory_lock`) held on a dedicated connection, outside the pool. The holder
//! scans and exports the gauges every tick; the others only retry the lock each tick, which
//! costs one round trip. If the refresher dies or loses its connection, the lock goes with
//! its session, and another process takes over at its next tick.
//!
//! Why not a transaction-level lock on a pooled connection: it is released at each commit, so
//! two replicas ticking at different moments would both get it and both scan. Holding it for
//! the life of a connection is what makes the election stick.
//!
//! A former refresher stops setting the gauges, and the recorder's idle timeout then drops
//! them from its output ([`super::install`]), so no process exports stale values for long.

use std::collections::BTreeSet;
use std::time::Duration;

use metrics::gauge;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{QUEUE_STATS_REFRESHER, queue_stats};

/// The advisory lock key of the refresher election: "lfmetric" in ASCII. Other periodic
/// jobs must use keys of their own.
pub const LOCK_KEY: i64 = 0x6c66_6d65_7472_6963;

/// A scan that takes longer than this is abandoned (and retried next tick): it must never
/// pile up behind a slow database.
const STATEMENT_TIMEOUT_MS: u32 = 5_000;

pub(super) struct Monitor {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Monitor {
    /// Starts ticking every `every`. `teams` are reported even while none of their callbacks
    /// wait, so their gauge reads 0 rather than being absent.
    pub(super) fn spawn(pool: &PgPool, teams: BTreeSet<String>, every: Duration) -> Monitor {
        let (stop, stopped) = watch::channel(false);
        let refresher = Refresher {
            options: (*pool.connect_options()).clone(),
            conn: None,
            leader: false,
            teams,
        };
        let task = tokio::spawn(run(refresher, every, stopped));
        Monitor { stop, task }
    }

    /// Stops ticking and closes the connection, releasing the lock for another process.
    pub(super) async fn stop(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "metrics monitor ended abnormally");
        }
    }
}

async fn run(mut refresher: Refresher, every: Duration, mut stop: watch::Receiver<bool>) {
    let handle = super::handle();
    loop {
        // Histogram samples accumulate until drained: drain them even if nobody scrapes.
        handle.run_upkeep();
        refresher.tick().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => break,
        }
    }
    if let Some(conn) = refresher.conn.take()
        && let Err(e) = conn.close().await
    {
        tracing::debug!(error = %e, "closing the metrics connection");
    }
}

struct Refresher {
    options: PgConnectOptions,
    /// The dedicated connection: when `leader`, it holds the lock.
    conn: Option<PgConnection>,
    leader: bool,
    teams: BTreeSet<String>,
}

impl Refresher {
    async fn tick(&mut self) {
        let was_leader = self.leader;
        if let Err(e) = self.try_refresh().await {
            if self.conn.is_some() {
                tracing::warn!(error = %e, "queue gauges not refreshed; reconnecting next tick");
            }
            // Dropping the connection ends its session, and with it any lock held.
            self.conn = None;
            self.leader = false;
        }
        if self.leader != was_leader {
            let who = if self.leader {
                "this process"
            } else {
                "another process"
            };
            tracing::info!("queue gauges: {who} refreshes them");
        }
        gauge!(QUEUE_STATS_REFRESHER).set(if self.leader { 1.0 } else { 0.0 });
    }

    /// Takes the lock if free, and refreshes the gauges while holding it.
    async fn try_refresh(&mut self) -> Result<(), sqlx::Error> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => {
                let mut conn = PgConnection::connect_with(&self.options).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SET statement_timeout = {STATEMENT_TIMEOUT_MS}"
                )))
                .execute(&mut conn)
                .await?;
                self.conn.insert(conn)
            }
        };
        if !self.leader {
            let (won,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                .bind(LOCK_KEY)
                .fetch_one(&mut *conn)
                .await?;
            if !won {
                return Ok(());
            }
            // Held from here on: a failing scan drops the connection and so the lock.
            self.leader = true;
        }
        queue_stats::refresh(conn, &mut self.teams).await
    }
}
