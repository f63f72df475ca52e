//! Serving a poem app on a TCP address until told to stop: the service's main listener and
//! the metrics-only one share this.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Endpoint, IntoEndpoint, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::header_timeout::HeaderTimeout;

/// A running server: the address it took (port 0 becomes a real port), the sender that
/// stops it, and its task.
pub type Running = (SocketAddr, oneshot::Sender<()>, JoinHandle<io::Result<()>>);

/// How long a keep-alive connection may sit idle between requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Binds `listen` and serves `app` there. Clients must send each request's headers within
/// `header_timeout` (slowloris). Once stopped, requests in flight get `grace` to finish
/// (`None`: as long as they take).
pub async fn spawn<E>(
    listen: SocketAddr,
    app: E,
    grace: Option<Duration>,
    header_timeout: Duration,
) -> io::Result<Running>
where
    E: IntoEndpoint + Send + 'static,
    E::Endpoint: Endpoint + 'static,
{
    let acceptor = HeaderTimeout::new(
        TcpListener::bind(listen).into_acceptor().await?,
        header_timeout,
    );
    let addr = acceptor
        .local_addr()
        .first()
        .and_then(|a| a.as_socket_addr().copied())
        .unwrap_or(listen);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Server::new_with_acceptor(acceptor)
            .idle_timeout(IDLE_TIMEOUT)
            .run_with_graceful_shutdown(
                app,
                async {
                    let _ = stopped.await;
                },
                grace,
            )
            .await
    });
    Ok((addr, stop, task))
}
