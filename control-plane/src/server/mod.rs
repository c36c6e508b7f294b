//! The listener: accepts connections under caps, speaks TLS when configured, serves each
//! connection with hyper under deadlines ([`watch`]) and sheds the slowest when near the cap.
//!
//! Admission comes before any per-connection state: a connection over `max_connections`, or
//! over `max_connections_per_client` for its address (an IPv4 address or an IPv6 /64; trusted
//! proxies are not capped per client), is closed at once. Above seven eighths of
//! `max_connections` every accepted connection sheds one that has waited on its client for
//! more than a second (an idle keep-alive or a head trickling in), so a slowloris crowd cannot
//! keep the cap full: the players and appliances that send whole requests still get in.
//!
//! Stopping: when the `shutdown` future given to [`serve`] completes (after the drain period
//! that follows SIGTERM, during which [`readiness`] says 503 and everything is still served), the
//! listener closes, idle keep-alive connections are closed, requests in progress finish and
//! their connections close after them, for up to `drain_timeout`.

pub mod deadline;
pub mod readiness;
pub mod watch;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use oca_service::admission::{Admission, Refusal};
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use watch::{ConnState, Expiry, InFlight, Timeouts, Watched};

/// A connection waiting on its client at least this long may be shed under pressure.
const SHED_AFTER: Duration = Duration::from_secs(1);

/// Connections looked at per shedding attempt (a sample, not a scan of every connection).
const SHED_SAMPLE: usize = 64;

/// Largest request head (and read buffer) hyper keeps for a connection.
const MAX_HEAD: usize = 64 * 1024;

/// The listener's limits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections at once.
    pub max_connections: usize,
    /// Connections at once from one client (0: no cap).
    pub max_connections_per_client: u32,
    /// Header and idle timeouts.
    pub timeouts: Timeouts,
    /// How long a graceful shutdown waits for requests in progress once the listener closed.
    pub drain_timeout: Duration,
}

/// Connection figures, registered with the control plane's metrics.
#[derive(Clone, Default)]
pub struct ConnMetrics {
    /// Connections open.
    pub open: Gauge,
    /// Connections refused at accept, by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Connections the server closed, by reason.
    pub closed: Family<ReasonLabel, Counter>,
    /// TLS handshakes that failed or timed out.
    pub tls_failures: Counter,
}

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

impl ConnMetrics {
    fn refused(&self, why: Refusal) {
        let reason = match why {
            Refusal::Total => Refusal::NAMES[0],
            Refusal::PerClient => Refusal::NAMES[1],
        };
        self.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    fn closed(&self, reason: &'static str) {
        self.closed.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// Connections open, for shedding.
#[derive(Default)]
struct Registry {
    conns: Mutex<(slab::Slab<Arc<ConnState>>, usize)>,
}

impl Registry {
    fn insert(self: &Arc<Self>, c: Arc<ConnState>) -> Registered {
        let key = self.lock().0.insert(c);
        Registered {
            registry: self.clone(),
            key,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, (slab::Slab<Arc<ConnState>>, usize)> {
        self.conns.lock()
    }

    /// Closes the connection that waited longest on its client among a sample, if one waited
    /// over [`SHED_AFTER`].
    fn shed_one(&self, now: Instant) -> bool {
        let mut g = self.lock();
        let (conns, cursor) = &mut *g;
        if conns.is_empty() {
            return false;
        }
        // A rotating window over the slab, so each attempt looks at other connections.
        let cap = conns.capacity();
        let mut best: Option<(Duration, usize)> = None;
        let (mut seen, mut i) = (0, 0);
        while seen < SHED_SAMPLE && i < cap {
            let key = (*cursor + i) % cap;
            i += 1;
            let Some(c) = conns.get(key) else { continue };
            seen += 1;
            if let Some(w) = c.waiting_for_client(now) {
                if w >= SHED_AFTER && best.is_none_or(|(b, _)| w > b) {
                    best = Some((w, key));
                }
            }
        }
        *cursor = (*cursor + i) % cap.max(1);
        match best {
            Some((_, key)) => {
                conns[key].kill();
                true
            }
            None => false,
        }
    }
}

struct Registered {
    registry: Arc<Registry>,
    key: usize,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().0.try_remove(self.key);
    }
}

/// What every connection shares.
struct Shared {
    router: axum::Router,
    tls: Option<Arc<oca_service::tls::Reloadable>>,
    limits: Limits,
    metrics: ConnMetrics,
    admission: Arc<Admission>,
    registry: Arc<Registry>,
    trusted_proxies: Vec<std::net::IpAddr>,
    drain: tokio::sync::watch::Receiver<bool>,
}

/// Serves `router` on `listener` until `shutdown` completes, then lets requests in progress
/// finish (for up to `limits.drain_timeout`).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<oca_service::tls::Reloadable>>,
    limits: Limits,
    metrics: ConnMetrics,
    trusted_proxies: Vec<std::net::IpAddr>,
    shutdown: impl Future<Output = ()>,
) {
    let (drain_tx, drain) = tokio::sync::watch::channel(false);
    let admission = Arc::new(Admission::new(
        limits.max_connections,
        limits.max_connections_per_client,
    ));
    let shared = Arc::new(Shared {
        router,
        tls,
        limits,
        metrics,
        admission: admission.clone(),
        registry: Arc::default(),
        trusted_proxies,
        drain,
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut shutdown => break,
        };
        match accepted {
            Ok((stream, peer)) => admit(&shared, stream, peer),
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let until = Instant::now() + limits.drain_timeout;
    while admission.open() > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    match admission.open() {
        0 => tracing::info!("every connection finished"),
        n => tracing::warn!(
            connections = n,
            "drain timeout: closing connections still in progress"
        ),
    }
}

/// Admits (or refuses) a connection and starts its task.
fn admit(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let per_client = (!shared.trusted_proxies.contains(&peer.ip())).then_some(peer.ip());
    let max = shared.limits.max_connections;
    if shared.admission.open() >= max - max / 8 && shared.admission.open() < max {
        shared.registry.shed_one(Instant::now());
    }
    let admitted = match shared.admission.admit(per_client) {
        // At the cap: a connection waiting on its client makes room for this one (it leaves
        // as soon as its task sees the kill, so the cap is exceeded by the sheds in flight).
        Err(Refusal::Total) if shared.registry.shed_one(Instant::now()) => {
            shared.admission.admit_replacing(per_client)
        }
        other => other,
    };
    let ticket = match admitted {
        Ok(t) => t,
        Err(why) => {
            shared.metrics.refused(why);
            drop(stream);
            return;
        }
    };
    let _ = stream.set_nodelay(true);
    let shared = shared.clone();
    tokio::spawn(async move {
        let state = ConnState::new();
        let _registered = shared.registry.insert(state.clone());
        shared.metrics.open.inc();
        connection(&shared, stream, peer, state).await;
        shared.metrics.open.dec();
        drop(ticket);
    });
}

/// Runs one connection to its end.
async fn connection(shared: &Shared, stream: TcpStream, peer: SocketAddr, state: Arc<ConnState>) {
    let io = Watched::new(stream, state.clone());
    let Some(tls) = &shared.tls else {
        return drive(shared, io, peer, state).await;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    match tokio::time::timeout(shared.limits.timeouts.header, acceptor.accept(io)).await {
        Ok(Ok(tls)) => drive(shared, tls, peer, state).await,
        Ok(Err(e)) => {
            shared.metrics.tls_failures.inc();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared.metrics.tls_failures.inc();
            shared.metrics.closed("header_timeout");
        }
    }
}

/// Serves HTTP/1.1 on `io` until the client leaves, a deadline passes, the connection is shed
/// or the server drains.
async fn drive<I>(shared: &Shared, io: I, peer: SocketAddr, state: Arc<ConnState>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let router = shared.router.clone();
    let requests = state.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = requests.begin();
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let reply = tower::ServiceExt::oneshot(router.clone(), req);
        async move {
            let resp = reply.await?;
            Ok::<_, std::convert::Infallible>(resp.map(|b| {
                Body::new(Tracked {
                    inner: b,
                    _guard: guard,
                })
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let mut drain = shared.drain.clone();
    let mut draining = *drain.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    let t = shared.limits.timeouts;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = state.killed() => {
                shared.metrics.closed("shed");
                return;
            }
            _ = drain.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tokio::time::sleep_until(state.deadline(&t)) => {
                match state.expired(&t, Instant::now()) {
                    Some(Expiry::Header) => { shared.metrics.closed("header_timeout"); return; }
                    Some(Expiry::Idle) => { shared.metrics.closed("idle_timeout"); return; }
                    None => {}
                }
            }
        }
    }
}

/// A response body that holds its request's [`InFlight`] until its last byte is taken.
struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
