//! Per-connection deadlines. Every connection is in one of three waits, each with its own bound:
//!
//! | wait | ends when | bound |
//! |---|---|---|
//! | a request head (from accept, or from its first byte on a kept-alive connection) | the head is parsed | `header_timeout` |
//! | idle between requests | a byte arrives | `idle_timeout` |
//! | a request in progress (body, handler, response) | the response's last byte is written | no byte moved for `idle_timeout` |
//!
//! A request body has its own total deadline (`body_timeout`, `api::body`). The connection's
//! task sleeps until the next deadline and closes the connection when it passed; the socket
//! wrapper [`Watched`] and the request guard [`InFlight`] move the deadlines.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

/// The timeouts a connection lives under.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// From a head's first byte (or the accept, TLS handshake included) to its end.
    pub header: Duration,
    /// Between requests on a kept-alive connection; also a request that moves no byte.
    pub idle: Duration,
}

/// Why a connection was closed by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Its request head did not arrive within `header_timeout`.
    Header,
    /// Idle (or a request moving no byte) past `idle_timeout`.
    Idle,
}

/// What a connection is doing, shared by its socket, its requests and the listener.
#[derive(Debug)]
pub struct ConnState {
    born: Instant,
    /// Milliseconds since `born` of the last byte read or written, or request finished.
    last_io: AtomicU64,
    /// Milliseconds since `born`, plus one, of the first byte of a head being read (0: none).
    head_since: AtomicU64,
    in_flight: AtomicU32,
    kill: tokio::sync::Notify,
}

impl ConnState {
    /// A connection accepted now: its first head is due within `header_timeout` of the accept.
    pub fn new() -> Arc<ConnState> {
        Arc::new(ConnState {
            born: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            in_flight: AtomicU32::new(0),
            kill: tokio::sync::Notify::new(),
        })
    }

    fn ms(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.born).as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.born + Duration::from_millis(ms)
    }

    fn moved(&self) {
        self.last_io.store(self.ms(Instant::now()), Relaxed);
    }

    fn read_some(&self) {
        let now = self.ms(Instant::now());
        self.last_io.store(now, Relaxed);
        if self.in_flight.load(Relaxed) == 0 {
            // The first byte of the next head starts its clock; later ones do not move it.
            let _ = self
                .head_since
                .compare_exchange(0, now + 1, Relaxed, Relaxed);
        }
    }

    /// A request was parsed: its head is complete.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since.store(0, Relaxed);
        InFlight(self.clone())
    }

    /// When the current wait runs out.
    pub fn deadline(&self, t: &Timeouts) -> Instant {
        if self.in_flight.load(Relaxed) > 0 {
            return self.at(self.last_io.load(Relaxed)) + t.idle;
        }
        match self.head_since.load(Relaxed) {
            0 => self.at(self.last_io.load(Relaxed)) + t.idle,
            h => self.at(h - 1) + t.header,
        }
    }

    /// Whether the current wait ran out by `now`, and which.
    pub fn expired(&self, t: &Timeouts, now: Instant) -> Option<Expiry> {
        if now < self.deadline(t) {
            return None;
        }
        let heading = self.in_flight.load(Relaxed) == 0 && self.head_since.load(Relaxed) != 0;
        Some(if heading {
            Expiry::Header
        } else {
            Expiry::Idle
        })
    }

    /// How long it has waited for its client without a request in progress (None: busy).
    pub fn waiting_for_client(&self, now: Instant) -> Option<Duration> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let since = match self.head_since.load(Relaxed) {
            0 => self.last_io.load(Relaxed),
            h => h - 1,
        };
        Some(now.saturating_duration_since(self.at(since)))
    }

    /// Asks the connection's task to close it (shedding under pressure).
    pub fn kill(&self) {
        self.kill.notify_one();
    }

    /// Completes when [`ConnState::kill`] was called.
    pub async fn killed(&self) {
        self.kill.notified().await
    }
}

/// A request in progress; its drop (with the response body's last byte) starts the idle wait.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.moved();
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// A socket that reports its reads and writes to its [`ConnState`].
pub struct Watched<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S> Watched<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, state: Arc<ConnState>) -> Watched<S> {
        Watched { inner, state }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.state.read_some();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.moved();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.state.moved();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn each_wait_has_its_own_bound() {
        let c = ConnState::new();
        let t0 = Instant::now();
        assert_eq!(
            c.deadline(&T),
            t0 + T.header,
            "the first head from the accept"
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        c.read_some();
        assert_eq!(c.deadline(&T), t0 + T.header, "bytes do not extend a head");
        let req = c.begin();
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(
            c.expired(&T, Instant::now()),
            None,
            "a request moving bytes"
        );
        drop(req);
        let done = Instant::now();
        assert_eq!(c.deadline(&T), done + T.idle, "idle after the response");
        assert_eq!(c.expired(&T, done + T.idle), Some(Expiry::Idle));
        tokio::time::advance(Duration::from_secs(5)).await;
        c.read_some();
        let head = Instant::now();
        assert_eq!(
            c.deadline(&T),
            head + T.header,
            "the next head from its first byte"
        );
        assert_eq!(c.expired(&T, head + T.header), Some(Expiry::Header));
        assert_eq!(c.waiting_for_client(head), Some(Duration::ZERO));
    }
}
