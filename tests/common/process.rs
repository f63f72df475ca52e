//! Child processes for tests: the `leadflow` binary (and any other program) with its output in
//! a log file, killed when the test ends however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `leadflow` on database `db_url` with the workflows of `workflows`, quick to poll, quiet.
pub fn leadflow(db_url: &str, workflows: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadflow"));
    cmd.env("DATABASE_URL", db_url)
        .env("LEADFLOW_WORKFLOWS_DIR", workflows)
        .env("LEADFLOW_POLL_INTERVAL_MS", "50")
        .env("LEADFLOW_SIM_DELAY_MS", "50")
        .env("RUST_LOG", "warn")
        .env_remove("LEADFLOW_LOG_FORMAT")
        .env_remove("LEADFLOW_METRICS_LISTEN");
    cmd
}

pub struct Process {
    pub child: Child,
    pub log: PathBuf,
    /// Builds the command again, for [`Process::restart`].
    remake: Option<Box<dyn Fn() -> Command + Send>>,
    starts: u32,
}

fn open_log(log: &Path) -> (std::fs::File, std::fs::File) {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    let err = out.try_clone().expect("log file");
    (out, err)
}

fn start(name: &str, cmd: &mut Command, log: &Path) -> Child {
    let (out, err) = open_log(log);
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("{name} starts: {e}"))
}

impl Process {
    /// Starts `cmd` with stdout and stderr in a log file named after `name`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Process {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lf-{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let child = start(name, cmd, &log);
        Process {
            child,
            log,
            remake: None,
            starts: 1,
        }
    }

    /// Starts the command `make` builds, and can start it again after a kill
    /// ([`Process::restart`]), appending to the same log.
    pub fn restartable(name: &str, make: impl Fn() -> Command + Send + 'static) -> Process {
        let mut p = Process::spawn(name, &mut make());
        p.remake = Some(Box::new(make));
        p
    }

    /// SIGKILL, then the same command again.
    pub fn restart(&mut self) {
        self.kill();
        let make = self.remake.as_ref().expect("a restartable process");
        self.child = start("restart", &mut make(), &self.log);
        self.starts += 1;
    }

    pub fn starts(&self) -> u32 {
        self.starts
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` of the log, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// CPU seconds the process used so far (user + system), from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start after the last ')';
        // utime and stime are stat's fields 14 and 15, i.e. 11 and 12 from there.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as f64;
        (ticks(11) + ticks(12)) / hz
    }

    /// SIGTERM, then waits up to `within` for the exit; the exit status, if it came.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("log kept: {}", self.log.display());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

/// A size from the environment (CI sets smaller ones), or the default for a local run.
pub fn size(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls `url` until it answers 200; panics after `within`.
pub async fn wait_ok(url: &str, within: Duration) -> reqwest::Response {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(resp) = reqwest::get(url).await
            && resp.status() == 200
        {
            return resp;
        }
        assert!(Instant::now() < deadline, "{url} never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
