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
}

impl Process {
    /// Starts `cmd` with stdout and stderr in a log file named after `name`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Process {
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lf-{name}-{}.log", uuid::Uuid::new_v4().simple()));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Process { child, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then waits up to `within` for the exit.
    pub fn terminate(&mut self, within: Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
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
