//! Private PostgreSQL for when `DATABASE_URL` is unset: a cluster started from the machine's
//! own server binaries, listening only on a Unix socket, so it never clashes with a system
//! server on port 5432.
//!
//! Layout: not root → the cluster lives in `<data_dir>/pg`. Root → PostgreSQL refuses to run as
//! root, so the server runs as `postgres`, which usually cannot reach a checkout under `/root`;
//! the cluster then lives in `/var/lib/leadflow/<hash of data_dir>` and that path is recorded
//! in `<data_dir>/cluster-location`. The socket sits in the cluster folder (mode 0700, so
//! `trust` auth only admits the server user and root) unless that path would exceed the
//! 107-byte socket limit; then a private `/tmp/leadflow-<hash>` folder is used. The socket a
//! running server really uses is read back from its `postmaster.pid`.
//!
//! Sharing: `pg-start.lock` (exclusive flock) serialises check/init/start/stop across processes;
//! every process using the server holds a shared flock on `pg-users.lock` until it exits, so the
//! process that started the server stops it only when no other process is attached, and never
//! stops a server it found running. Within a process, start is cached per data folder.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::kill;
use nix::unistd::{Pid, Uid, User, chown};
use sha2::{Digest, Sha256};

/// The application database, created on first start.
pub const APP_DATABASE: &str = "leadflow";
/// Overrides binary discovery with a folder that holds `initdb`, `pg_ctl` and `psql`.
pub const BINDIR_ENV: &str = "LEADFLOW_PG_BINDIR";
const PORT: u16 = 5432;
const SUPERUSER: &str = "postgres";
const ROOT_CLUSTER_BASE: &str = "/var/lib/leadflow";
/// sun_path is 108 bytes including the trailing NUL.
const MAX_SOCKET_PATH: usize = 107;
/// How long to wait for a server another process is starting or stopping.
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
         (PostgreSQL refuses root): create it (Debian: apt-get install postgresql) or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error(
        "cluster {cluster} is PostgreSQL {cluster_version} but {bindir} is PostgreSQL \
         {bin_version}: install version {cluster_version}, set {BINDIR_ENV}, or move the cluster away"
    )]
    VersionMismatch {
        cluster: PathBuf,
        cluster_version: String,
        bindir: PathBuf,
        bin_version: String,
    },
    #[error("{context} ({path}): {source}")]
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
    /// fsync off etc.: for throwaway test clusters only; a crash can corrupt the data.
    pub fast_unsafe: bool,
}

impl EmbeddedOptions {
    /// `LEADFLOW_DATA_DIR`, else `./.leadflow`.
    pub fn from_env() -> Self {
        let data_dir =
            std::env::var_os("LEADFLOW_DATA_DIR").map_or_else(|| ".leadflow".into(), PathBuf::from);
        Self {
            data_dir,
            fast_unsafe: false,
        }
    }
}

/// What one process knows about a running server; shared by all its handles.
struct Server {
    data_dir: PathBuf,
    bindir: PathBuf,
    cluster: PathBuf,
    socket_dir: PathBuf,
    port: u16,
    run_as: Option<User>,
    started_here: bool,
    /// Shared flock held while this process may use the server.
    attached: Flock<File>,
}

type Slot = Arc<tokio::sync::Mutex<Option<Arc<Server>>>>;
static SERVERS: LazyLock<Mutex<HashMap<PathBuf, Slot>>> = LazyLock::new(Default::default);

/// Handle to the private server. Dropping it never stops the server; only [`Self::stop`] may.
pub struct EmbeddedPostgres {
    server: Arc<Server>,
    slot: Slot,
}

impl EmbeddedPostgres {
    /// Start the private server for `opts.data_dir`, or attach to the one already running there.
    pub async fn start(opts: EmbeddedOptions) -> Result<EmbeddedPostgres, EmbeddedError> {
        let dir = opts.data_dir.clone();
        let data_dir = tokio::task::spawn_blocking(move || prepare_data_dir(&dir)).await??;
        let slot = {
            let mut servers = SERVERS
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(servers.entry(data_dir.clone()).or_default())
        };
        let mut current = slot.lock().await;
        if let Some(server) = current.as_ref() {
            // A server killed behind our back must be started again, not handed out.
            if UnixStream::connect(socket_path(&server.socket_dir, server.port)).is_ok() {
                return Ok(EmbeddedPostgres {
                    server: Arc::clone(server),
                    slot: Arc::clone(&slot),
                });
            }
            tracing::warn!(cluster = %server.cluster.display(), "private PostgreSQL went away; starting it again");
            *current = None;
        }
        let server =
            Arc::new(tokio::task::spawn_blocking(move || boot(data_dir, opts.fast_unsafe)).await??);
        *current = Some(Arc::clone(&server));
        drop(current);
        Ok(EmbeddedPostgres { server, slot })
    }

    /// sqlx URL for `database` on this server, via its Unix socket.
    pub fn url(&self, database: &str) -> String {
        let s = &self.server;
        let (db, host) = (
            url_encode(database.as_bytes()),
            url_encode(s.socket_dir.as_os_str().as_bytes()),
        );
        format!(
            "postgres://{SUPERUSER}@localhost:{}/{db}?host={host}&sslmode=disable",
            s.port
        )
    }

    /// Where the cluster's files really are.
    pub fn cluster_dir(&self) -> &Path {
        &self.server.cluster
    }

    /// True if this process started the server (and so may stop it).
    pub fn started_here(&self) -> bool {
        self.server.started_here
    }

    /// Stop the server if this process started it, no other handle in this process is alive, and
    /// no other process is attached; otherwise leave it running.
    pub async fn stop(self) -> Result<(), EmbeddedError> {
        if !self.server.started_here {
            tracing::debug!(cluster = %self.server.cluster.display(), "private PostgreSQL not started here; leaving it running");
            return Ok(());
        }
        let mut current = self.slot.lock().await;
        let registered = current
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &self.server));
        // One count for the slot, one for this handle; more means another handle still uses it.
        if !registered || Arc::strong_count(&self.server) > 2 {
            tracing::info!(cluster = %self.server.cluster.display(), "private PostgreSQL still in use in this process; leaving it running");
            return Ok(());
        }
        *current = None;
        let server = self.server;
        *current = tokio::task::spawn_blocking(move || shutdown(server)).await??;
        Ok(())
    }
}

/// Returns the server back if it must stay up because another process is attached.
fn shutdown(server: Arc<Server>) -> Result<Option<Arc<Server>>, EmbeddedError> {
    let _start = lock_file(
        &server.data_dir.join("pg-start.lock"),
        FlockArg::LockExclusive,
    )?;
    // Converting a flock is not atomic: a failed upgrade drops ours, so re-take it below.
    if let Err(errno) = server.attached.relock(FlockArg::LockExclusiveNonblock) {
        let again = server.attached.relock(FlockArg::LockShared);
        if errno != Errno::EWOULDBLOCK {
            return Err(io_err("locking", &server.data_dir.join("pg-users.lock"))(
                errno.into(),
            ));
        }
        again.map_err(|e| io_err("locking", &server.data_dir.join("pg-users.lock"))(e.into()))?;
        tracing::info!(cluster = %server.cluster.display(), "private PostgreSQL in use by another process; leaving it running");
        return Ok(Some(server));
    }
    let pg_ctl = server.bindir.join("pg_ctl");
    let mut cmd = command(&pg_ctl, server.run_as.as_ref(), &server.cluster);
    cmd.args(["stop", "-m", "fast", "-w", "-t", "60", "-s", "-D"])
        .arg(&server.cluster);
    run(cmd, "pg_ctl stop")?;
    tracing::info!(cluster = %server.cluster.display(), "stopped private PostgreSQL");
    Ok(None)
}

fn prepare_data_dir(dir: &Path) -> Result<PathBuf, EmbeddedError> {
    fs::create_dir_all(dir).map_err(io_err("creating data folder", dir))?;
    fs::canonicalize(dir).map_err(io_err("resolving data folder", dir))
}

/// The check → init → start sequence, under the cross-process start lock.
fn boot(data_dir: PathBuf, fast_unsafe: bool) -> Result<Server, EmbeddedError> {
    let began = Instant::now();
    let mut bindir = find_bindir()?;
    let _start = lock_file(&data_dir.join("pg-start.lock"), FlockArg::LockExclusive)?;
    let attached = lock_file(&data_dir.join("pg-users.lock"), FlockArg::LockShared)?;
    let cluster = resolve_cluster(&data_dir)?;
    let run_as = server_user(&cluster)?;
    if let Ok(version) = fs::read_to_string(cluster.join("PG_VERSION")) {
        bindir = matching_bindir(bindir, &cluster, version.trim())?;
    }
    let (socket_dir, port, started_here) = match find_running(&cluster)? {
        Some(pid_file) => (pid_file.socket_dir, pid_file.port, false),
        None => {
            init_cluster(&bindir, &cluster, run_as.as_ref(), fast_unsafe)?;
            let socket_dir = socket_dir_for(&cluster, run_as.as_ref())?;
            write_settings(&cluster, &socket_dir, run_as.as_ref(), fast_unsafe)?;
            let mut cmd = command(&bindir.join("pg_ctl"), run_as.as_ref(), &cluster);
            cmd.args(["start", "-w", "-t", "60", "-s", "-D"])
                .arg(&cluster);
            cmd.arg("-l").arg(cluster.join("server.log"));
            run(cmd, "pg_ctl start").map_err(|e| with_log_tail(e, &cluster))?;
            (socket_dir, PORT, true)
        }
    };
    ensure_database(&bindir, &socket_dir, port)?;
    let (cluster_s, socket_s) = (
        cluster.display().to_string(),
        socket_dir.display().to_string(),
    );
    let ms = u64::try_from(began.elapsed().as_millis()).unwrap_or(u64::MAX);
    if started_here {
        tracing::info!(cluster = %cluster_s, socket = %socket_s, ms, "started private PostgreSQL");
    } else {
        tracing::info!(cluster = %cluster_s, socket = %socket_s, ms, "using private PostgreSQL already running");
    }
    Ok(Server {
        data_dir,
        bindir,
        cluster,
        socket_dir,
        port,
        run_as,
        started_here,
        attached,
    })
}

fn lock_file(path: &Path, arg: FlockArg) -> Result<Flock<File>, EmbeddedError> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path);
    let file = file.map_err(io_err("opening lock file", path))?;
    Flock::lock(file, arg).map_err(|(_, errno)| io_err("locking", path)(errno.into()))
}

fn find_bindir() -> Result<PathBuf, EmbeddedError> {
    let has_server = |dir: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|b| is_executable(&dir.join(b)))
    };
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        let searched = format!("{BINDIR_ENV}={}", dir.display());
        return if has_server(&dir) {
            Ok(dir)
        } else {
            Err(EmbeddedError::BinariesMissing { searched })
        };
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(OsString::from_vec(out.stdout.trim_ascii().to_vec()));
        if has_server(&dir) {
            return Ok(dir);
        }
    }
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e
                .file_name()
                .to_str()?
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.into_iter().rev().find(|(_, dir)| has_server(dir)) {
        return Ok(dir);
    }
    // Symlinks such as /usr/local/bin/initdb or Homebrew's point into the real bindir.
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>());
    if let Some(dir) = on_path
        .filter_map(|d| fs::canonicalize(d.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| has_server(dir))
    {
        return Ok(dir);
    }
    let searched = "pg_config --bindir, /usr/lib/postgresql/*/bin, PATH".to_string();
    Err(EmbeddedError::BinariesMissing { searched })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A cluster can only be run by its own major version, which may not be the newest installed.
fn matching_bindir(
    bindir: PathBuf,
    cluster: &Path,
    cluster_version: &str,
) -> Result<PathBuf, EmbeddedError> {
    let mut cmd = Command::new(bindir.join("pg_ctl"));
    cmd.arg("--version").env_clear();
    let out = run(cmd, "pg_ctl --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let full = text.split_whitespace().nth(2).unwrap_or_default();
    let bin_version = if full.starts_with("9.") {
        full.splitn(3, '.').take(2).collect::<Vec<_>>().join(".")
    } else {
        full.split('.').next().unwrap_or_default().to_string()
    };
    if bin_version == cluster_version {
        return Ok(bindir);
    }
    let same_major = Path::new("/usr/lib/postgresql")
        .join(cluster_version)
        .join("bin");
    if std::env::var_os(BINDIR_ENV).is_none() && is_executable(&same_major.join("pg_ctl")) {
        return Ok(same_major);
    }
    let cluster_version = cluster_version.to_string();
    Err(EmbeddedError::VersionMismatch {
        cluster: cluster.to_path_buf(),
        cluster_version,
        bindir,
        bin_version,
    })
}

fn resolve_cluster(data_dir: &Path) -> Result<PathBuf, EmbeddedError> {
    let local = data_dir.join("pg");
    if !Uid::effective().is_root() || local.join("PG_VERSION").exists() {
        return Ok(local);
    }
    let record = data_dir.join("cluster-location");
    match fs::read(&record) {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => {
            return Ok(OsString::from_vec(bytes.trim_ascii().to_vec()).into());
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("reading cluster location", &record)(e)),
    }
    let base = Path::new(ROOT_CLUSTER_BASE);
    fs::create_dir_all(base).map_err(io_err("creating cluster base folder", base))?;
    let cluster = base.join(short_hash(data_dir.as_os_str().as_bytes()));
    let mut line = cluster.as_os_str().as_bytes().to_vec();
    line.push(b'\n');
    fs::write(&record, line).map_err(io_err("recording cluster location", &record))?;
    Ok(cluster)
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

/// `None` when not root: everything then runs as the current user.
fn server_user(cluster: &Path) -> Result<Option<User>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let lookup = |r: nix::Result<Option<User>>| {
        r.map_err(|e| EmbeddedError::Unusable(format!("looking up the server user: {e}")))
    };
    // A cluster made earlier by a non-root user keeps being run by that user.
    if let Ok(meta) = fs::metadata(cluster)
        && meta.uid() != 0
        && let Some(owner) = lookup(User::from_uid(Uid::from_raw(meta.uid())))?
    {
        return Ok(Some(owner));
    }
    lookup(User::from_name(SUPERUSER))?
        .ok_or(EmbeddedError::NoPostgresUser)
        .map(Some)
}

/// A private folder owned by the server user; refuses one someone else planted (e.g. in /tmp).
fn private_dir(path: &Path, owner: Option<&User>) -> Result<(), EmbeddedError> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {
            if let Some(user) = owner {
                chown(path, Some(user.uid), Some(user.gid))
                    .map_err(|e| io_err("chown", path)(e.into()))?;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
            let uid = owner.map_or_else(Uid::effective, |u| u.uid).as_raw();
            if meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0 {
                Ok(())
            } else {
                Err(EmbeddedError::Unusable(format!(
                    "{} is not a private folder of uid {uid}; remove it",
                    path.display()
                )))
            }
        }
        Err(e) => Err(io_err("creating folder", path)(e)),
    }
}

/// initdb into a scratch folder and rename, so a crash mid-init never leaves a half cluster.
fn init_cluster(
    bindir: &Path,
    cluster: &Path,
    run_as: Option<&User>,
    fast_unsafe: bool,
) -> Result<(), EmbeddedError> {
    if cluster.join("PG_VERSION").exists() {
        return Ok(());
    }
    if cluster.exists() {
        // Only an empty leftover is safe to replace; anything else may be someone's data.
        fs::remove_dir(cluster).map_err(io_err(
            "exists but is not a PostgreSQL cluster; move it away",
            cluster,
        ))?;
    }
    let scratch = cluster.with_extension("initializing");
    if scratch.exists() {
        fs::remove_dir_all(&scratch).map_err(io_err("removing unfinished cluster", &scratch))?;
    }
    private_dir(&scratch, run_as)?;
    let parent = cluster.parent().unwrap_or(Path::new("/"));
    let mut cmd = command(&bindir.join("initdb"), run_as, parent);
    cmd.args([
        "-U",
        SUPERUSER,
        "--auth-local=trust",
        "--auth-host=reject",
        "--encoding=UTF8",
        "--locale=C",
        "-D",
    ]);
    cmd.arg(&scratch);
    if fast_unsafe {
        cmd.arg("--no-sync");
    }
    run(cmd, "initdb")?;
    let conf = scratch.join("postgresql.conf");
    let mut file = OpenOptions::new()
        .append(true)
        .open(&conf)
        .map_err(io_err("opening", &conf))?;
    file.write_all(b"\ninclude_if_exists = 'leadflow.conf'\n")
        .map_err(io_err("writing", &conf))?;
    fs::rename(&scratch, cluster).map_err(io_err("renaming new cluster into place", cluster))?;
    tracing::info!(cluster = %cluster.display(), "initialized private PostgreSQL cluster");
    Ok(())
}

fn socket_dir_for(cluster: &Path, run_as: Option<&User>) -> Result<PathBuf, EmbeddedError> {
    if socket_path(cluster, PORT).as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(cluster.to_path_buf());
    }
    let dir = Path::new("/tmp").join(format!(
        "leadflow-{}",
        short_hash(cluster.as_os_str().as_bytes())
    ));
    private_dir(&dir, run_as)?;
    Ok(dir)
}

/// Rewritten at every start so a moved socket folder or changed mode takes effect.
fn write_settings(
    cluster: &Path,
    socket_dir: &Path,
    run_as: Option<&User>,
    fast_unsafe: bool,
) -> Result<(), EmbeddedError> {
    let quoted = socket_dir.to_string_lossy().replace('\'', "''");
    let mut text = format!(
        "# Written by leadflow at every start; edit postgresql.auto.conf instead.\n\
         listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{quoted}'\n\
         unix_socket_permissions = 0700\nmax_connections = 200\nshared_buffers = 128MB\n"
    );
    if fast_unsafe {
        text.push_str("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n");
    }
    let path = cluster.join("leadflow.conf");
    fs::write(&path, text).map_err(io_err("writing settings", &path))?;
    if let Some(user) = run_as {
        chown(&path, Some(user.uid), Some(user.gid))
            .map_err(|e| io_err("chown", &path)(e.into()))?;
    }
    Ok(())
}

struct PidFile {
    pid: i32,
    port: u16,
    socket_dir: PathBuf,
    ready: bool,
}

/// postmaster.pid lines: pid, data dir, start time, port, first socket dir, listen addr, shmem key, status.
fn read_pid_file(cluster: &Path) -> Result<Option<PidFile>, EmbeddedError> {
    let path = cluster.join("postmaster.pid");
    let text = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
    let field = |i: usize| lines.get(i).map(|l| l.trim_ascii()).unwrap_or_default();
    let text = |i: usize| std::str::from_utf8(field(i)).unwrap_or_default();
    Ok(Some(PidFile {
        pid: text(0).parse().unwrap_or(0),
        port: text(3).parse().unwrap_or(PORT),
        socket_dir: OsString::from_vec(field(4).to_vec()).into(),
        ready: field(7) == b"ready",
    }))
}

fn socket_path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!(".s.PGSQL.{port}"))
}

/// A server that is up and accepting connections, waiting out one that is starting or stopping.
/// A dead pid means a stale file after a crash, which `pg_ctl start` replaces.
fn find_running(cluster: &Path) -> Result<Option<PidFile>, EmbeddedError> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let Some(pid_file) = read_pid_file(cluster)? else {
            return Ok(None);
        };
        let alive = pid_file.pid > 0
            && !matches!(kill(Pid::from_raw(pid_file.pid), None), Err(Errno::ESRCH));
        if pid_file.pid > 0 && !alive {
            return Ok(None);
        }
        let socket = socket_path(&pid_file.socket_dir, pid_file.port);
        if alive && pid_file.ready && UnixStream::connect(socket).is_ok() {
            return Ok(Some(pid_file));
        }
        if Instant::now() >= deadline {
            // Possibly a reused pid; let pg_ctl start decide and report.
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One round trip; safe against other leadflow processes because we hold the start lock.
fn ensure_database(bindir: &Path, socket_dir: &Path, port: u16) -> Result<(), EmbeddedError> {
    let mut cmd = command(&bindir.join("psql"), None, Path::new("/"));
    cmd.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-U",
        SUPERUSER,
        "-d",
        "postgres",
        "-h",
    ]);
    cmd.arg(socket_dir).arg("-p").arg(port.to_string());
    let sql = format!(
        "SELECT 'CREATE DATABASE {APP_DATABASE}' WHERE NOT EXISTS \
         (SELECT FROM pg_database WHERE datname = '{APP_DATABASE}')\\gexec\n"
    );
    cmd.stdin(Stdio::piped());
    let what = "psql (create database)";
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(io_err("running psql", &bindir.join("psql")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(sql.as_bytes())
            .map_err(io_err("writing to psql", socket_dir))?;
    }
    let out = child
        .wait_with_output()
        .map_err(io_err("running psql", &bindir.join("psql")))?;
    check(out, what).map(drop)
}

/// A hermetic environment: PG* variables (PGPORT, PGDATA, …) would silently change what runs.
fn command(program: &Path, run_as: Option<&User>, cwd: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear().current_dir(cwd).stdin(Stdio::null());
    cmd.env(
        "PATH",
        std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
    );
    if let Some(tz) = std::env::var_os("TZ") {
        cmd.env("TZ", tz);
    }
    // Keeps a Ctrl-C on our terminal from reaching initdb or the server.
    cmd.process_group(0);
    match run_as {
        Some(user) => {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("HOME", &user.dir)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        }
        None => {
            if let Some(home) = std::env::var_os("HOME") {
                cmd.env("HOME", home);
            }
        }
    }
    cmd
}

fn run(mut cmd: Command, what: &str) -> Result<Output, EmbeddedError> {
    let out = cmd
        .output()
        .map_err(io_err("running", Path::new(cmd.get_program())))?;
    check(out, what)
}

fn check(out: Output, what: &str) -> Result<Output, EmbeddedError> {
    if out.status.success() {
        return Ok(out);
    }
    let stderr = one_line(&String::from_utf8_lossy(&out.stderr));
    Err(EmbeddedError::Command {
        command: what.to_string(),
        status: out.status.to_string(),
        stderr,
    })
}

fn with_log_tail(err: EmbeddedError, cluster: &Path) -> EmbeddedError {
    let EmbeddedError::Command {
        command,
        status,
        stderr,
    } = err
    else {
        return err;
    };
    let log = fs::read_to_string(cluster.join("server.log")).unwrap_or_default();
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let log_path = cluster.join("server.log");
    let stderr = format!(
        "{stderr} | {}: {}",
        log_path.display(),
        one_line(&tail.join("\n"))
    );
    EmbeddedError::Command {
        command,
        status,
        stderr,
    }
}

fn one_line(text: &str) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let start = joined.char_indices().rev().nth(599).map_or(0, |(i, _)| i);
    joined[start..].to_string()
}

fn url_encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
