//! The cluster on disk and the PostgreSQL programs that run it: finding the binaries, where the
//! files live, initdb, settings, and pg_ctl/psql run as the server user.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::unistd::{Uid, User, chown};
use sha2::{Digest, Sha256};

use super::{BINDIR_ENV, EmbeddedError, PORT, io_err, socket_path};

const SUPERUSER: &str = "postgres";
const ROOT_CLUSTER_BASE: &str = "/var/lib/leadflow";
/// sun_path is 108 bytes including the trailing NUL.
const MAX_SOCKET_PATH: usize = 107;

pub(super) struct Cluster {
    pub bindir: PathBuf,
    /// The PGDATA folder.
    pub dir: PathBuf,
    /// Who runs the programs: `None` (the current user) unless we are root.
    run_as: Option<User>,
}

impl Cluster {
    pub fn locate(data_dir: &Path) -> Result<Cluster, EmbeddedError> {
        let mut bindir = find_bindir()?;
        let dir = cluster_dir(data_dir)?;
        let run_as = server_user(&dir)?;
        if let Ok(version) = fs::read_to_string(dir.join("PG_VERSION")) {
            bindir = matching_bindir(bindir, &dir, version.trim())?;
        }
        Ok(Cluster {
            bindir,
            dir,
            run_as,
        })
    }

    /// initdb into a scratch folder and rename, so a crash mid-init never leaves half a cluster.
    pub fn init(&self, fast_unsafe: bool) -> Result<(), EmbeddedError> {
        if self.dir.join("PG_VERSION").exists() {
            return Ok(());
        }
        if self.dir.exists() {
            // Only an empty leftover is safe to replace; anything else may be someone's data.
            let context = "exists but is not a PostgreSQL cluster; move it away";
            fs::remove_dir(&self.dir).map_err(io_err(context, &self.dir))?;
        }
        let scratch = self.dir.with_extension("initializing");
        if scratch.exists() {
            fs::remove_dir_all(&scratch)
                .map_err(io_err("removing unfinished cluster", &scratch))?;
        }
        private_dir(&scratch, self.run_as.as_ref())?;
        let mut initdb = self.command("initdb", self.dir.parent().unwrap_or(Path::new("/")));
        // Trust is safe because the socket folder is private (0700) and TCP is off.
        initdb.args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=reject"]);
        initdb
            .args(["--encoding=UTF8", "--locale=C", "-D"])
            .arg(&scratch);
        if fast_unsafe {
            initdb.arg("--no-sync");
        }
        run(initdb, "initdb")?;
        let conf = scratch.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(io_err("opening", &conf))?;
        file.write_all(b"\ninclude_if_exists = 'leadflow.conf'\n")
            .map_err(io_err("writing", &conf))?;
        fs::rename(&scratch, &self.dir)
            .map_err(io_err("moving new cluster into place", &self.dir))?;
        tracing::info!(cluster = %self.dir.display(), "initialized private PostgreSQL cluster");
        Ok(())
    }

    /// Starts the server and returns its socket folder.
    pub fn start(&self, fast_unsafe: bool) -> Result<PathBuf, EmbeddedError> {
        let socket_dir = if socket_path(&self.dir, PORT).as_os_str().len() <= MAX_SOCKET_PATH {
            self.dir.clone()
        } else {
            let name = format!("leadflow-{}", short_hash(self.dir.as_os_str().as_bytes()));
            let dir = Path::new("/tmp").join(name);
            private_dir(&dir, self.run_as.as_ref())?;
            dir
        };
        self.write_settings(&socket_dir, fast_unsafe)?;
        let log = self.dir.join("server.log");
        let mut pg_ctl = self.command("pg_ctl", &self.dir);
        pg_ctl
            .args(["start", "-w", "-t", "60", "-s", "-D"])
            .arg(&self.dir)
            .arg("-l")
            .arg(&log);
        run(pg_ctl, "pg_ctl start").map_err(|e| with_log_tail(e, &log))?;
        Ok(socket_dir)
    }

    pub fn stop(&self) -> Result<(), EmbeddedError> {
        let mut pg_ctl = self.command("pg_ctl", &self.dir);
        pg_ctl
            .args(["stop", "-m", "fast", "-w", "-t", "60", "-s", "-D"])
            .arg(&self.dir);
        run(pg_ctl, "pg_ctl stop").map(drop)
    }

    /// Rewritten at every start, so a new socket folder or `fast_unsafe` takes effect.
    fn write_settings(&self, socket_dir: &Path, fast_unsafe: bool) -> Result<(), EmbeddedError> {
        let quoted = socket_dir.to_string_lossy().replace('\'', "''");
        let mut text = format!(
            "# Written by leadflow at every start; put your own settings in postgresql.auto.conf.\n\
             listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{quoted}'\n\
             unix_socket_permissions = 0700\nmax_connections = 200\nshared_buffers = 128MB\n"
        );
        if fast_unsafe {
            // Loses data only if the OS crashes: commits still reach the page cache.
            text.push_str("fsync = off\nfull_page_writes = off\n");
        }
        let path = self.dir.join("leadflow.conf");
        fs::write(&path, text).map_err(io_err("writing settings", &path))?;
        if let Some(user) = &self.run_as {
            chown(&path, Some(user.uid), Some(user.gid))
                .map_err(|e| io_err("chown", &path)(e.into()))?;
        }
        Ok(())
    }

    /// Creates `name` unless it exists, in one round trip.
    pub fn ensure_database(
        &self,
        socket_dir: &Path,
        port: u16,
        name: &str,
    ) -> Result<(), EmbeddedError> {
        let mut psql = self.command("psql", &self.dir);
        psql.args([
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
        psql.arg(socket_dir).args(["-p", &port.to_string()]);
        psql.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let sql = format!(
            "SELECT format('CREATE DATABASE %I', '{name}') WHERE NOT EXISTS \
             (SELECT FROM pg_database WHERE datname = '{name}')\\gexec\n"
        );
        let program = self.bindir.join("psql");
        let mut child = psql.spawn().map_err(io_err("running", &program))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(sql.as_bytes())
                .map_err(io_err("writing to", &program))?;
        }
        let out = child
            .wait_with_output()
            .map_err(io_err("running", &program))?;
        check(out, "psql (create database)").map(drop)
    }

    /// A hermetic environment: inherited PG* variables (PGPORT, PGDATA, …) would silently
    /// change what runs.
    fn command(&self, program: &str, cwd: &Path) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
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
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
            cmd.env("HOME", &user.dir)
                .env("USER", &user.name)
                .env("LOGNAME", &user.name);
        } else if let Some(home) = std::env::var_os("HOME") {
            cmd.env("HOME", home);
        }
        cmd
    }
}

fn find_bindir() -> Result<PathBuf, EmbeddedError> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "psql"]
            .iter()
            .all(|b| is_executable(&dir.join(b)))
    };
    if let Some(dir) = std::env::var_os(BINDIR_ENV).map(PathBuf::from) {
        if complete(&dir) {
            return Ok(dir);
        }
        let searched = format!("{BINDIR_ENV}={}", dir.display());
        return Err(EmbeddedError::BinariesMissing { searched });
    }
    // pg_config may come from a client-only package (Debian libpq-dev), hence the check.
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(OsString::from_vec(out.stdout.trim_ascii().to_vec()));
        if complete(&dir) {
            return Ok(dir);
        }
    }
    // Debian keeps the server programs here, off PATH.
    let mut versioned: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.into_iter().rev().find(|(_, dir)| complete(dir)) {
        return Ok(dir);
    }
    // Resolve symlinks (/usr/local/bin, Homebrew) to the real bindir, which also has psql.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path)
        .filter_map(|dir| fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| complete(dir));
    on_path.ok_or_else(|| EmbeddedError::BinariesMissing {
        searched: "pg_config --bindir, /usr/lib/postgresql/*/bin, PATH".to_string(),
    })
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A cluster runs only under its own major version, which may not be the newest installed.
fn matching_bindir(bindir: PathBuf, cluster: &Path, want: &str) -> Result<PathBuf, EmbeddedError> {
    let mut cmd = Command::new(bindir.join("pg_ctl"));
    cmd.arg("--version").env_clear();
    let out = run(cmd, "pg_ctl --version")?;
    // "pg_ctl (PostgreSQL) 15.14 (Debian …)"; majors before 10 had two parts.
    let text = String::from_utf8_lossy(&out.stdout);
    let full = text.split_whitespace().nth(2).unwrap_or_default();
    let parts = if full.starts_with("9.") { 2 } else { 1 };
    let have = full.split('.').take(parts).collect::<Vec<_>>().join(".");
    if have == want {
        return Ok(bindir);
    }
    let same_major = Path::new("/usr/lib/postgresql").join(want).join("bin");
    if std::env::var_os(BINDIR_ENV).is_none() && is_executable(&same_major.join("pg_ctl")) {
        return Ok(same_major);
    }
    Err(EmbeddedError::VersionMismatch {
        cluster: cluster.to_path_buf(),
        cluster_version: want.to_string(),
        bindir,
        bin_version: have,
    })
}

/// Not root: `<data_dir>/pg`. Root: the server runs as `postgres`, which cannot reach a checkout
/// under /root, so the files go to /var/lib/leadflow/<hash>, recorded in the data folder.
fn cluster_dir(data_dir: &Path) -> Result<PathBuf, EmbeddedError> {
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
    if !base.exists() {
        fs::create_dir_all(base).map_err(io_err("creating", base))?;
        // Whatever root's umask, `postgres` must be able to pass through.
        let mode = fs::Permissions::from_mode(0o755);
        fs::set_permissions(base, mode).map_err(io_err("chmod", base))?;
    }
    let dir = base.join(short_hash(data_dir.as_os_str().as_bytes()));
    let line = [dir.as_os_str().as_bytes(), b"\n"].concat();
    fs::write(&record, line).map_err(io_err("recording cluster location", &record))?;
    Ok(dir)
}

fn short_hash(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..8])
}

fn server_user(cluster: &Path) -> Result<Option<User>, EmbeddedError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let lookup = |found: nix::Result<Option<User>>| {
        found.map_err(|e| EmbeddedError::Unusable(format!("looking up the server user: {e}")))
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

/// A 0700 folder of the server user; refuses one someone else planted (e.g. in /tmp).
fn private_dir(path: &Path, owner: Option<&User>) -> Result<(), EmbeddedError> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => match owner {
            Some(user) => chown(path, Some(user.uid), Some(user.gid))
                .map_err(|e| io_err("chown", path)(e.into())),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path).map_err(io_err("inspecting", path))?;
            let uid = owner.map_or_else(Uid::effective, |u| u.uid).as_raw();
            if meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0 {
                return Ok(());
            }
            let path = path.display();
            Err(EmbeddedError::Unusable(format!(
                "{path} is not a private folder of uid {uid}; remove it"
            )))
        }
        Err(e) => Err(io_err("creating", path)(e)),
    }
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
    Err(EmbeddedError::Command {
        command: what.to_string(),
        status: out.status.to_string(),
        stderr: one_line(&String::from_utf8_lossy(&out.stderr)),
    })
}

/// pg_ctl only says "could not start server"; the reason is in the server log.
fn with_log_tail(err: EmbeddedError, log: &Path) -> EmbeddedError {
    let EmbeddedError::Command {
        command,
        status,
        stderr,
    } = err
    else {
        return err;
    };
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = one_line(&lines[lines.len().saturating_sub(5)..].join("\n"));
    let stderr = format!("{stderr} | {}: {tail}", log.display());
    EmbeddedError::Command {
        command,
        status,
        stderr,
    }
}

/// The last 600 characters, newlines as " | ", so errors stay one log line.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines.join(" | ");
    let start = joined.char_indices().rev().nth(599).map_or(0, |(i, _)| i);
    joined[start..].to_string()
}
