//! One running leadflow: the HTTP server and, optionally, the workers, over one pool. `serve`
//! runs it until a signal; tests run it in-process on a free port.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::engine::Engine;
use crate::engine::announce::{Announcements, Announcing};
use crate::intake::Intake;
use crate::intake::limit::RateLimits;
use crate::operator::api::AdminToken;
use crate::server::HttpSettings;
use crate::server::{self, AppState};
use crate::worker::WorkerSettings;
use crate::worker::Workers;

pub struct Service {
    pub addr: SocketAddr,
    pub engine: Arc<Engine>,
    workers: Option<Workers>,
    announcing: Announcing,
    http: JoinHandle<io::Result<()>>,
    stop_http: oneshot::Sender<()>,
}

impl Service {
    /// Serves HTTP on `http.listen` and, when `workers` is given, runs the workers, all over
    /// the engine's pool.
    pub async fn start(
        engine: Arc<Engine>,
        http: &HttpSettings,
        admin_token: &str,
        workers: Option<&WorkerSettings>,
    ) -> io::Result<Service> {
        let workers = workers.map(|settings| Workers::spawn(engine.clone(), settings));
        let (announcements, announcing) = Announcements::start(engine.pool.clone());
        let intake = Arc::new(Intake {
            pool: engine.pool.clone(),
            workflows: engine.workflows.clone(),
            max_body_bytes: http.max_body_bytes,
            request_timeout: http.request_timeout(),
            limits: RateLimits::new(http.rate_limit_per_min),
            handoff: workers.as_ref().map(Workers::handoff),
            tokens: Default::default(),
            announcements,
        });
        let app = server::app(AppState {
            pool: engine.pool.clone(),
            intake,
            admin: Arc::new(AdminToken::new(admin_token)),
            engine: engine.clone(),
        });
        let grace = Some(http.request_timeout());
        let listening =
            crate::listener::spawn(http.listen, app, grace, http.header_timeout()).await;
        let (addr, stop_http, handle) = match listening {
            Ok(listening) => listening,
            Err(e) => {
                // Started first so that intake can hand them its leads; stopped cleanly.
                if let Some(w) = workers {
                    w.shutdown().await;
                }
                announcing.stop().await;
                return Err(e);
            }
        };
        tracing::info!(%addr, workers = workers.is_some(), "leadflow is listening");
        Ok(Service {
            addr,
            engine,
            workers,
            announcing,
            http: handle,
            stop_http,
        })
    }

    /// Stops the workers claiming, lets in-flight steps finish and simulated calls report,
    /// then stops taking requests (the HTTP side stays up meanwhile, so status callbacks for
    /// calls still in flight are received). `true` when everything finished within its
    /// deadline.
    pub async fn shutdown(self) -> bool {
        let started = tokio::time::Instant::now();
        let workers_ok = match self.workers {
            Some(w) => {
                let timeout = w.shutdown_timeout();
                let ok = w.shutdown().await;
                let left = timeout.saturating_sub(started.elapsed());
                ok && self.engine.drain_reports(left).await
            }
            None => true,
        };
        let _ = self.stop_http.send(());
        let http_ok = matches!(self.http.await, Ok(Ok(())));
        // After the last request: its lead's job is announced too.
        self.announcing.stop().await;
        http_ok && workers_ok
    }

    /// Ends the workers as a crash would (see [`Workers::abort`]); the HTTP side stops too.
    pub fn abort(self) {
        if let Some(w) = self.workers {
            w.abort();
        }
        self.http.abort();
        self.announcing.abort();
    }
}

/// The admin token: `LEADFLOW_ADMIN_TOKEN` when set; otherwise the one kept in
/// `<data dir>/admin-token`, generated (mode 0600) at first start. Returns the file when one
/// is used, so start-up can say where it is.
pub fn admin_token(
    setting: Option<&str>,
    data_dir: &Path,
) -> io::Result<(String, Option<PathBuf>)> {
    if let Some(token) = setting.map(str::trim).filter(|t| !t.is_empty()) {
        return Ok((token.to_owned(), None));
    }
    let path = data_dir.join("admin-token");
    match std::fs::read_to_string(&path) {
        Ok(existing) if !existing.trim().is_empty() => {
            return Ok((existing.trim().to_owned(), Some(path)));
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let token = crate::hooks::new_token();
    write_private(&path, &token)?;
    Ok((token, Some(path)))
}

fn write_private(path: &Path, contents: &str) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")
}
