//! What both engines do the same way, written once: admission of a new connection under the
//! connection caps, what an accept error means, the worker's tick and drain, and the guard that
//! keeps a bug in connection code from taking the worker down.
//!
//! The engines differ in how they wait (completions or readiness) and in what they do off the
//! thread; every decision that is not about waiting lives here, so a change of policy (a new
//! accept error, a drain rule) is made once and holds for both.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::access_log::{Outcome, Pending};
use crate::conn::Conn;
use crate::engine::contract::Next;
use crate::socket;
use crate::worker::WorkerCtx;

/// Admits a new connection (from the TLS listener when `tls`) under the connection caps before
/// anything is made for it; refused, it is answered 503 (plain HTTP only) and dropped.
pub fn accept_admitted(sock: OwnedFd, ctx: &mut WorkerCtx, tls: bool) -> Option<Conn> {
    let peer = socket2::SockRef::from(&sock)
        .peer_addr()
        .ok()
        .and_then(|a| a.as_socket());
    let ticket = match ctx.shared.process.admission.admit(peer.map(|p| p.ip())) {
        Ok(t) => t,
        Err(_) => {
            if !tls {
                // No HTTP before a TLS handshake; a plain client is told why.
                refuse_unavailable(&sock, peer, ctx);
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
fn refuse_unavailable(sock: &OwnedFd, peer: Option<SocketAddr>, ctx: &mut WorkerCtx) {
    let (mut out, mut segs) = (Vec::with_capacity(256), Vec::new());
    crate::http::serve::standalone(503, ctx.date_cache(), &mut out, &mut segs);
    let sent = socket::send(sock.as_fd(), &out, false).unwrap_or(0);
    ctx.stats().sent(sent as u64);
    ctx.stats().response(503, Duration::ZERO);
    let outcome = Outcome::closing(503, &out, sent, None);
    ctx.log_closing(peer, Pending::unread, &outcome);
}

/// Lets a closed connection go: logs a response it cut short, releases its gauge (its place
/// under the caps goes with the `Conn`).
pub fn release(conn: Conn, ctx: &WorkerCtx) {
    conn.closed(ctx);
    ctx.stats().closed();
}

/// What a failed accept means for the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptError {
    /// Nothing (more) to accept now (EAGAIN, EINTR).
    Empty,
    /// A connection went away before it was accepted (ECONNABORTED): the next may be there.
    Aborted,
    /// Out of descriptors or memory (EMFILE and the like), logged here: the engine tries again
    /// at its next event or tick, never at once, so a full table does not spin the worker.
    Exhausted,
}

impl AcceptError {
    /// Classifies accept's `errno`.
    pub fn of(errno: i32) -> AcceptError {
        match errno {
            libc::EAGAIN | libc::EINTR => AcceptError::Empty,
            libc::ECONNABORTED => AcceptError::Aborted,
            e => {
                tracing::warn!(error = %std::io::Error::from_raw_os_error(e), "accept failed");
                AcceptError::Exhausted
            }
        }
    }
}

/// The worker's tick, as both engines keep it: the heartbeat, open files let go, and the
/// drain once the server asks for it.
#[derive(Debug, Default)]
pub struct Ticker {
    /// Set at the first tick that finds the server draining.
    drain_deadline: Option<Instant>,
}

impl Ticker {
    /// Runs the tick's shared part; true when this tick begins the drain (the engine then stops
    /// accepting: its listeners go).
    pub fn tick(&mut self, ctx: &mut WorkerCtx) -> bool {
        ctx.stats().beat(ctx.shared.metrics().uptime());
        let now = ctx.now;
        ctx.files_mut().expire(now);
        if ctx.draining() && self.drain_deadline.is_none() {
            self.drain_deadline = Some(now + ctx.shared.limits.drain_timeout);
            return true;
        }
        false
    }

    /// Whether the worker is done: draining, and its connections all gone or out of time.
    pub fn finished(&self, now: Instant, connections: usize) -> bool {
        self.drain_deadline
            .is_some_and(|deadline| connections == 0 || now >= deadline)
    }
}

/// Gives `conn` its tick; true when it must close now (its deadline passed, or the server is
/// draining and it is idle).
pub fn expired(conn: &mut Conn, ctx: &mut WorkerCtx) -> bool {
    guarded(ctx, Some(Next::Close), |ctx| conn.on_tick(ctx)) == Some(Next::Close)
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
