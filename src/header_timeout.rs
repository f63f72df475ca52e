//! A bound on how long a client may take to send a request's headers (slowloris defence).
//!
//! poem's server sets no header-read timeout, and its idle timeout is reset by every byte, so
//! a client dribbling one byte every few seconds would hold a connection forever. This
//! acceptor wraps each connection: from the connection's start, and from the first byte of
//! every later request, the client has `limit` to deliver a complete header block
//! (`\r\n\r\n`); if not, reads fail and the connection closes. A keep-alive connection idle
//! between requests is left to the server's idle timeout: closing it here would race clients
//! that reuse pooled connections. Bodies are not timed here (intake bounds their size, and the
//! request timeout their handling).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use poem::http::uri::Scheme;
use poem::listener::Acceptor;
use poem::web::{LocalAddr, RemoteAddr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

pub struct HeaderTimeout<A> {
    inner: A,
    limit: Duration,
}

impl<A> HeaderTimeout<A> {
    pub fn new(inner: A, limit: Duration) -> Self {
        HeaderTimeout { inner, limit }
    }
}

impl<A: Acceptor> Acceptor for HeaderTimeout<A> {
    type Io = Guarded<A::Io>;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> io::Result<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.inner.accept().await?;
        Ok((Guarded::new(io, self.limit), local, remote, scheme))
    }
}

pub struct Guarded<T> {
    inner: T,
    limit: Duration,
    phase: Phase,
    /// Running while the client owes us a header block.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last bytes read, to find `\r\n\r\n` across reads.
    tail: [u8; 3],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request's headers, against the deadline.
    Headers,
    /// Headers done: the body and the response are not timed here.
    Body,
    /// A response went out; the next request has not started.
    Idle,
}

impl<T> Guarded<T> {
    fn new(inner: T, limit: Duration) -> Self {
        Guarded {
            inner,
            limit,
            phase: Phase::Headers,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
            tail: [0; 3],
        }
    }

    /// True once the bytes seen so far end a header block.
    fn scan(&mut self, bytes: &[u8]) -> bool {
        let mut window: Vec<u8> = self.tail.to_vec();
        window.extend_from_slice(bytes);
        let found = window.windows(4).any(|w| w == b"\r\n\r\n");
        let keep = window.len().saturating_sub(3);
        self.tail.copy_from_slice(&window[keep..keep + 3]);
        found
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "request headers not received in time",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(deadline) = this.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(timed_out()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = buf.filled()[before..].to_vec();
            if this.phase == Phase::Idle && !fresh.is_empty() {
                // The next request starts: its headers are on the clock from now.
                this.phase = Phase::Headers;
                this.tail = [0; 3];
                this.deadline = Some(Box::pin(tokio::time::sleep_until(
                    Instant::now() + this.limit,
                )));
            }
            if this.phase == Phase::Headers && this.scan(&fresh) {
                this.phase = Phase::Body;
                this.deadline = None;
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        // A response is going out: the next bytes read belong to the next request.
        if this.phase == Phase::Body {
            this.phase = Phase::Idle;
        }
        Pin::new(&mut this.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_header_end_is_found_across_reads() {
        let (a, _b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, Duration::from_secs(1));
        assert!(!g.scan(b"GET / HTTP/1.1\r\nHost: x\r"));
        assert!(!g.scan(b"\n\r"));
        assert!(g.scan(b"\n"));
    }
}
