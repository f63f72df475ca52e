//! Private PostgreSQL for when `DATABASE_URL` is unset: a cluster run from the machine's own
//! server binaries, listening only on a Unix socket, so it never clashes with a system server
//! on port 5432.
//!
//! Where the files live: not root → `<data_dir>/pg`. Root → PostgreSQL refuses to run as root,
//! so the server runs as `postgres`, which usually cannot reach a checkout under `/root`; the
//! cluster then lives in `/var/lib/leadflow/<hash of data_dir>`, recorded in
//! `<data_dir>/cluster-location`. The socket sits in the cluster folder (0700, so `trust` auth
//! admits only the server user and root), or in a private `/tmp/leadflow-<hash>` when that
//! path would pass the 107-byte socket limit. The socket a running server really uses is read
//! back from its `postmaster.pid`.
//!
//! Sharing: `pg-start.lock` (exclusive flock) serialises check/init/start/stop across
//! processes. A process that used the server holds a shared flock on `pg-users.lock` until it
//! exits (its pools may outlive any handle), so the process that started the server stops it
//! only when no other process is attached, and a process never stops a server it found
//! running. Within a process, start is done once per data folder and then cached.

mod cluster;

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use cluster::Cluster;

/// The application database, created when missing.
pub const APP_DATABASE: &str = "leadflow";
/// Overrides binary discovery with a folder holding `initdb`, `pg_ctl` and `psql`.
pub const BINDIR_ENV: &str = "LEADFLOW_PG_BINDIR";
const PORT: u16 = 5432;
/// How long to wait out a server that another process is starting or stopping.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries not found (initdb; looked at {searched}): install them \
         (Debian: apt-get install postgresql) or set DATABASE_URL to an existing server"
    )]
    BinariesMissing { searched: String },
    #[error(
        "running as root, but there is no `postgres` user to run the private PostgreSQL as \
         (PostgreSQL refuses root): install PostgreSQL's packages or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error(
        "cluster {cluster} is PostgreSQL {cluster_version} but {bindir} is PostgreSQL \
         {bin_version}: install version {cluster_version}, point {BINDIR_ENV} at it, or move \
         the cluster away"
    )]
    VersionMismatch {
        cluster: PathBuf,
        cluster_version: String,
        bindir: PathBuf,
        bin_version: String,
    },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Unusable(String),
    #[error("embedded PostgreSQL task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

fn io_err(context: &'static str, path: &Path) -> impl FnOnce(io::Error) -> EmbeddedError {
    let path = path.to_path_buf();
    move |source| EmbeddedError::Io {
        context,
        path,
        source,
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    pub data_dir: PathBuf,
    /// fsync off: for throwaway test clusters; applies only if this call starts the server.
    pub fast_unsafe: bool,
}

/// What one process knows about a running server; shared by all its handles.
struct Server {
    data_dir: PathBuf,
    cluster: Cluster,
    socket_dir: PathBuf,
    port: u16,
    started_here: bool,
    /// The shared flock on `pg-users.lock`; dropped if the server dies under us.
    attached: Mutex<Option<Flock<File>>>,
}

impl Server {
    fn attached(&self) -> MutexGuard<'_, Option<Flock<File>>> {
        self.attached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Server>>>>;
static SERVERS: LazyLock<Mutex<HashMap<PathBuf, Slot>>> = LazyLock::new(Default::default);

/// Handle to the private server. Dropping it never stops the server; only [`Self::stop`] may.
pub struct EmbeddedPostgres {
    server: Arc<Server>,
    slot: Slot,
}

impl EmbeddedPostgres {
    /// Starts the private server on `opts.data_dir`, or attaches to the one running there.
    pub async fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let dir = opts.data_dir;
        let data_dir = tokio::task::spawn_blocking(move || {
            fs::create_dir_all(&dir).map_err(io_err("creating data folder", &dir))?;
            fs::canonicalize(&dir).map_err(io_err("resolving data folder", &dir))
        })
        .await??;
        let slot = {
            let mut servers = SERVERS.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(servers.entry(data_dir.clone()).or_default())
        };
        let mut current = slot.lock().await;
        if let Some(server) = current.as_ref() {
            if UnixStream::connect(socket_path(&server.socket_dir, server.port)).is_ok() {
                let server = Arc::clone(server);
                drop(current);
                return Ok(EmbeddedPostgres { server, slot });
            }
            let cluster = server.cluster.dir.display();
            tracing::warn!(%cluster, "private PostgreSQL went away; starting it again");
            // Our old lock would make the new server look shared with another process.
            server.attached().take();
            *current = None;
        }
        let fast_unsafe = opts.fast_unsafe;
        let server = tokio::task::spawn_blocking(move || boot(data_dir, fast_unsafe)).await??;
        let server = Arc::new(server);
        *current = Some(Arc::clone(&server));
        drop(current);
        Ok(EmbeddedPostgres { server, slot })
    }

    /// A sqlx URL for `database` on this server, through its Unix socket.
    pub fn url(&self, database: &str) -> String {
        let server = &self.server;
        let database = url_encode(database.as_bytes());
        let socket_dir = url_encode(server.socket_dir.as_os_str().as_bytes());
        // The explicit port and sslmode override PGPORT/PGSSLMODE, which sqlx also reads.
        format!(
            "postgres://postgres@localhost:{}/{database}?host={socket_dir}&sslmode=disable",
            server.port
        )
    }

    /// Where the cluster's files really are.
    pub fn cluster_dir(&self) -> &Path {
        &self.server.cluster.dir
    }

    /// True if this process started the server (and so may stop it).
    pub fn started_here(&self) -> bool {
        self.server.started_here
    }

    /// Stops the server if this process started it and nothing else uses it: no other handle
    /// in this process, no other process attached. Otherwise leaves it running.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        let cluster = self.server.cluster.dir.display().to_string();
        if !self.server.started_here {
            tracing::debug!(%cluster, "private PostgreSQL not started here; leaving it running");
            return Ok(());
        }
        let mut current = self.slot.lock().await;
        let registered = current
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &self.server));
        // One reference is the slot's and one is ours; any more are other handles.
        if !registered || Arc::strong_count(&self.server) > 2 {
            tracing::info!(%cluster, "private PostgreSQL still used here; leaving it running");
            return Ok(());
        }
        *current = None;
        let server = self.server;
        *current = tokio::task::spawn_blocking(move || shutdown(server)).await??;
        Ok(())
    }
}

/// Gives the server back when it must stay up because another process is attached.
fn shutdown(server: Arc<Server>) -> Result<Option<Arc<Server>>, EmbeddedError> {
    let cluster = server.cluster.dir.display().to_string();
    let _start = lock_file(
        &server.data_dir.join("pg-start.lock"),
        FlockArg::LockExclusive,
    )?;
    let users = server.data_dir.join("pg-users.lock");
    {
        let attached = server.attached();
        let Some(lock) = attached.as_ref() else {
            return Ok(None);
        };
        // Converting a flock is not atomic: a failed upgrade loses ours, so take it again.
        if let Err(errno) = lock.relock(FlockArg::LockExclusiveNonblock) {
            let again = lock.relock(FlockArg::LockShared);
            if errno != Errno::EWOULDBLOCK {
                return Err(io_err("locking", &users)(errno.into()));
            }
            again.map_err(|e| io_err("locking", &users)(e.into()))?;
            drop(attached);
            tracing::info!(%cluster, "private PostgreSQL used by others; leaving it running");
            return Ok(Some(server));
        }
    }
    // A server killed behind our back leaves nothing to stop (pg_ctl would call that an error).
    let running = read_pid_file(&server.cluster.dir)?.is_some_and(|found| alive(found.pid));
    if running {
        server.cluster.stop()?;
    }
    tracing::info!(%cluster, "stopped private PostgreSQL");
    Ok(None)
}

/// Check → init → start, under the cross-process start lock.
fn boot(data_dir: PathBuf, fast_unsafe: bool) -> Result<Server, EmbeddedError> {
    let began = Instant::now();
    let _start = lock_file(&data_dir.join("pg-start.lock"), FlockArg::LockExclusive)?;
    let attached = lock_file(&data_dir.join("pg-users.lock"), FlockArg::LockShared)?;
    let cluster = Cluster::locate(&data_dir)?;
    let (socket_dir, port, started_here) = match find_running(&cluster.dir)? {
        Some(running) => (running.socket_dir, running.port, false),
        None => {
            cluster.init(fast_unsafe)?;
            (cluster.start(fast_unsafe)?, PORT, true)
        }
    };
    cluster.ensure_database(&socket_dir, port, APP_DATABASE)?;
    let ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (dir, socket) = (cluster.dir.display(), socket_dir.display());
    if started_here {
        tracing::info!(cluster = %dir, %socket, ms, "started private PostgreSQL");
    } else {
        tracing::info!(cluster = %dir, %socket, ms, "using private PostgreSQL already running");
    }
    Ok(Server {
        data_dir,
        cluster,
        socket_dir,
        port,
        started_here,
        attached: Mutex::new(Some(attached)),
    })
}

fn lock_file(path: &Path, arg: FlockArg) -> Result<Flock<File>, EmbeddedError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io_err("opening lock file", path))?;
    Flock::lock(file, arg).map_err(|(_, errno)| io_err("locking", path)(errno.into()))
}

fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

struct Running {
    pid: i32,
    port: u16,
    socket_dir: PathBuf,
    ready: bool,
}

/// postmaster.pid lines: pid, data dir, start time, port, first socket folder, listen
/// address, shared memory key, status.
fn read_pid_file(cluster: &Path) -> Result<Option<Running>, EmbeddedError> {
    let path = cluster.join("postmaster.pid");
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let lines: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .map(<[u8]>::trim_ascii)
        .collect();
    let line = |i: usize| lines.get(i).copied().unwrap_or_default();
    let text = |i: usize| std::str::from_utf8(line(i)).unwrap_or_default();
    Ok(Some(Running {
        pid: text(0).parse().unwrap_or(0),
        port: text(3).parse().unwrap_or(PORT),
        socket_dir: std::ffi::OsString::from_vec(line(4).to_vec()).into(),
        ready: line(7) == b"ready",
    }))
}

/// A server up and accepting connections, after waiting out one that is starting or
/// stopping. A dead pid is a stale file from a crash, which `pg_ctl start` replaces.
fn find_running(cluster: &Path) -> Result<Option<Running>, EmbeddedError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let Some(found) = read_pid_file(cluster)? else {
            return Ok(None);
        };
        let alive = alive(found.pid);
        if found.pid > 0 && !alive {
            return Ok(None);
        }
        let accepting = UnixStream::connect(socket_path(&found.socket_dir, found.port)).is_ok();
        if alive && found.ready && accepting {
            return Ok(Some(found));
        }
        if Instant::now() >= deadline {
            // Perhaps a reused pid: let pg_ctl start decide, and report why if it cannot.
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// EPERM means alive but not ours to signal.
fn alive(pid: i32) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), None) != Err(Errno::ESRCH)
}

fn url_encode(bytes: &[u8]) -> String {
    let keep = |b: u8| b.is_ascii_alphanumeric() || b"-._~/".contains(&b);
    bytes
        .iter()
        .map(|&b| {
            if keep(b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
