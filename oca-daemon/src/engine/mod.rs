//! The I/O engines: one worker thread per core, each with its own listener and event loop.

pub mod cold_io;
pub mod epoll;
pub mod mapping;
pub mod uring;

use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::{BodyPath, EngineChoice};
use crate::conn::{Conn, Shared, WorkerCtx};
use crate::socket;

/// How often workers check timeouts, draining and liveness.
pub const TICK: Duration = Duration::from_millis(250);

/// The engine that runs.
#[derive(Clone, Debug)]
pub enum Engine {
    /// io_uring, with what the kernel offers.
    Uring(uring::Support),
    /// epoll + sendfile.
    Epoll,
}

impl Engine {
    /// Name used in logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Engine::Uring(_) => "uring",
            Engine::Epoll => "epoll",
        }
    }

    /// How file bytes reach sockets under this engine.
    pub fn body_path(&self) -> BodyPath {
        match self {
            Engine::Uring(s) => s.body_path,
            Engine::Epoll => BodyPath::Sendfile,
        }
    }
}

/// Picks the engine: probes io_uring and logs why it is or is not used.
pub fn choose(choice: EngineChoice, body_path: BodyPath) -> Result<Engine> {
    if choice == EngineChoice::Epoll {
        tracing::info!(
            engine = "epoll",
            reason = "forced by configuration",
            "engine selected"
        );
        return Ok(Engine::Epoll);
    }
    match uring::probe(body_path) {
        Ok(support) => {
            tracing::info!(engine = "uring", opcodes = %support.describe(), "engine selected");
            Ok(Engine::Uring(support))
        }
        Err(reason) if choice == EngineChoice::Auto => {
            tracing::warn!(engine = "epoll", reason = %reason, "io_uring unavailable, falling back");
            Ok(Engine::Epoll)
        }
        Err(reason) => bail!("--engine uring: {reason}"),
    }
}

/// What a worker thread starts with.
pub struct Worker {
    /// The worker's own SO_REUSEPORT listener.
    pub listener: OwnedFd,
    /// Its HTTPS listener, when one is configured.
    pub tls_listener: Option<OwnedFd>,
    /// Its context.
    pub ctx: WorkerCtx,
}

/// Starts one worker per listener; `on_fail` runs if a worker's loop fails.
pub fn spawn(
    engine: &Engine,
    listeners: Vec<(OwnedFd, Option<OwnedFd>)>,
    shared: Arc<Shared>,
    on_fail: Arc<dyn Fn() + Send + Sync>,
) -> Result<Vec<JoinHandle<()>>> {
    let mut handles = Vec::with_capacity(listeners.len());
    for (index, (listener, tls_listener)) in listeners.into_iter().enumerate() {
        let shared = shared.clone();
        let engine = engine.clone();
        let on_fail = on_fail.clone();
        let handle = std::thread::Builder::new()
            .name(format!("oca-worker-{index}"))
            .spawn(move || {
                // Built on its own thread: the context holds per-worker, non-Send state.
                let worker = Worker {
                    listener,
                    tls_listener,
                    ctx: WorkerCtx::new(shared, index),
                };
                let result = match engine {
                    Engine::Uring(support) => uring::run(worker, &support),
                    Engine::Epoll => epoll::run(worker),
                };
                if let Err(e) = result {
                    tracing::error!(worker = index, error = %e, "worker failed");
                    on_fail();
                }
            })?;
        handles.push(handle);
    }
    Ok(handles)
}

/// Admits a new connection (from the TLS listener when `tls`) under the connection caps before
/// anything is made for it; refused, it is answered 503 (plain HTTP only) and dropped.
pub fn accept_admitted(sock: OwnedFd, ctx: &mut WorkerCtx, tls: bool) -> Option<Conn> {
    let peer = socket2::SockRef::from(&sock)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket());
    let ticket = match ctx.shared.metrics.admission.admit(peer.map(|p| p.ip())) {
        Ok(t) => t,
        Err(_) => {
            if !tls {
                // No HTTP before a TLS handshake; a plain client is told why.
                refuse_unavailable(&sock, ctx);
            }
            return None;
        }
    };
    let conn = match (&ctx.shared.tls, tls) {
        (Some(setup), true) => Conn::new_tls(sock, ctx, peer, ticket, setup),
        _ => Conn::new(sock, ctx, peer, ticket),
    };
    ctx.stats().opened();
    Some(conn)
}

/// A best-effort 503 on a socket that gets no connection state.
fn refuse_unavailable(sock: &OwnedFd, ctx: &mut WorkerCtx) {
    let (mut out, mut segs) = (Vec::with_capacity(256), Vec::new());
    crate::http::serve::standalone(503, ctx.date_cache(), &mut out, &mut segs);
    if let Ok(n) = socket::send(sock.as_fd(), &out, false) {
        ctx.stats().sent(n as u64);
    }
    ctx.stats().response(503, Duration::ZERO);
}

/// Releases the gauge of a closed connection (its place under the caps goes with the `Conn`).
pub fn release(ctx: &WorkerCtx) {
    ctx.stats().closed();
}

/// Runs connection code so that a bug in it drops that connection only, never the worker:
/// a panic is logged and counted, and `on_panic` (closing the connection) is the answer.
pub fn guarded<T>(ctx: &mut WorkerCtx, on_panic: T, f: impl FnOnce(&mut WorkerCtx) -> T) -> T {
    match catch_unwind(AssertUnwindSafe(|| f(ctx))) {
        Ok(next) => next,
        Err(_) => {
            tracing::error!("internal error handling a connection; dropping it");
            ctx.stats().dropped();
            on_panic
        }
    }
}
