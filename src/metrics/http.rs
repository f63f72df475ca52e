//! `GET /metrics` in Prometheus's text format, and the small server that `leadflow worker`
//! (which has no HTTP API) answers it on.
//!
//! No authentication, as Prometheus scrapes usually are: by construction the output holds no
//! lead data and no secret (see the label rule in [`super`]), and a token shared with the
//! scraper would have to be the admin token, which also opens every lead. Keep the port
//! internal, or keep `/metrics` off the public side of the proxy in front of `serve`.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use poem::web::Data;
use poem::{EndpointExt, Response, Route, get, handler};
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The exposition format's content type (version 0.0.4 is the text format).
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[handler]
pub async fn endpoint(pool: Data<&PgPool>) -> Response {
    Response::builder()
        .content_type(CONTENT_TYPE)
        .body(super::render(&pool))
}

/// Up, and how many workers this process runs.
#[handler]
async fn healthz() -> Response {
    let alive: i64 = super::WORKERS
        .iter()
        .map(|w| w.load(Ordering::Relaxed))
        .sum();
    let body = serde_json::json!({ "status": "ok", "workers_alive": alive });
    crate::reply::json(poem::http::StatusCode::OK, &body)
}

/// The metrics-only listener.
pub(super) struct MetricsServer {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<io::Result<()>>,
}

impl MetricsServer {
    pub(super) async fn start(listen: SocketAddr, pool: PgPool) -> io::Result<MetricsServer> {
        let app = Route::new()
            .at("/metrics", get(endpoint))
            .at("/healthz", get(healthz))
            .data(pool);
        let header_timeout = std::time::Duration::from_secs(10);
        let (addr, stop, task) = crate::listener::spawn(listen, app, None, header_timeout).await?;
        Ok(MetricsServer { addr, stop, task })
    }

    pub(super) async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "metrics listener ended with an error"),
            Err(e) => tracing::warn!(error = %e, "metrics listener ended abnormally"),
        }
    }
}
