//! One client connection, shared by both engines: what it does with each event an engine
//! delivers, and what it asks of the engine in return.
//!
//! The engine owns readiness and the operations that could block: it tells the connection
//! "these bytes arrived", "the socket is writable", "the peer closed", "time passed", or that an
//! operation the connection asked for (a splice, a cold read, an open, a file read) ended, and
//! the connection answers with what it needs next (`engine::contract::Next`). Writes that
//! cannot wait for a disk are made here, non-blocking, on the worker's thread; the engines differ
//! in how they wait and in what they can do off the thread, which they declare up front
//! (`engine::contract::Capabilities`), so one connection type serves both.
//!
//! The parts:
//! - `transport`: the socket and who encrypts (plain, userspace TLS, kernel TLS);
//! - `lifecycle`: the HTTP state machine (reading, opening, writing, lingering);
//! - `outgoing`: the writing phase's response and its writer;
//! - `body_path`: which way each file part goes (cold path, splice, sendfile).
//!
//! Every method here runs inside the engine's panic guard: a bug drops the connection, never
//! the worker.

mod body_path;
mod lifecycle;
mod outgoing;
mod transport;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::access_log::{Outcome, Pending};
use crate::admission::Ticket;
use crate::cold;
use crate::conn::lifecycle::Phase;
use crate::conn::outgoing::{count_sent, Buffers};
use crate::conn::transport::{ControlRecord, Decrypted, Transport};
use crate::engine::contract::Next;
use crate::http::serve;
use crate::metrics::{Timeout, TlsFailure};
use crate::open_files::Direct;
use crate::socket;
use crate::tls::TlsSetup;
use crate::worker::WorkerCtx;

/// One client connection.
pub struct Conn {
    tx: Transport,
    phase: Phase,
    inbuf: Vec<u8>,
    /// The buffers of the next response (the one being written holds them meanwhile).
    spare: Buffers,
    /// Whether the peer is on this machine (the kernel copies zero-copy sends to it anyway).
    loopback: bool,
    /// The peer's address.
    peer: Option<SocketAddr>,
    /// Its place under the connection caps, given back when the connection is dropped.
    _ticket: Ticket,
    /// The peer half-closed while a response was going out.
    peer_closed: bool,
    deadline: Instant,
}

impl Conn {
    /// A freshly accepted connection from `peer`, admitted under `ticket`; the first request
    /// head must arrive within the header timeout.
    pub fn new(sock: OwnedFd, ctx: &WorkerCtx, peer: Option<SocketAddr>, ticket: Ticket) -> Conn {
        socket::set_nodelay(sock.as_fd());
        Conn::with_transport(Transport::plain(sock), ctx, peer, ticket)
    }

    /// A freshly accepted connection on the TLS listener: the handshake comes first, within the
    /// header timeout.
    pub fn new_tls(
        sock: OwnedFd,
        ctx: &WorkerCtx,
        peer: Option<SocketAddr>,
        ticket: Ticket,
        setup: &TlsSetup,
    ) -> Conn {
        socket::set_nodelay(sock.as_fd());
        let tx = Transport::tls(sock, setup);
        Conn::with_transport(tx, ctx, peer, ticket)
    }

    fn with_transport(
        tx: Transport,
        ctx: &WorkerCtx,
        peer: Option<SocketAddr>,
        ticket: Ticket,
    ) -> Conn {
        // The kernel copies zero-copy sends to a local peer anyway; to one, plain sends are
        // cheaper.
        let loopback = peer.is_some_and(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        });
        Conn {
            tx,
            phase: Phase::Reading,
            inbuf: Vec::new(),
            spare: Buffers::default(),
            loopback,
            peer,
            _ticket: ticket,
            peer_closed: false,
            deadline: ctx.now + ctx.shared.limits.header_timeout,
        }
    }

    /// Whether a receive may stay armed across events (io_uring multishot); see
    /// `Transport::multishot_ok`.
    pub fn multishot_ok(&self) -> bool {
        self.tx.multishot_ok()
    }

    /// The socket.
    pub fn sock(&self) -> &OwnedFd {
        self.tx.sock()
    }

    /// Whether the connection sits between requests with nothing buffered.
    pub fn is_idle(&self) -> bool {
        matches!(self.phase, Phase::Reading) && self.inbuf.is_empty()
    }

    /// Whether the connection takes input now: not while a response is going out with a head's
    /// worth of pipelined requests already waiting (see `Next::Pause`).
    pub fn wants_input(&self, ctx: &WorkerCtx) -> bool {
        !self.phase.answering() || self.inbuf.len() <= ctx.shared.limits.max_header_bytes
    }

    /// Bytes arrived from the peer.
    pub fn on_data(&mut self, data: &[u8], ctx: &mut WorkerCtx) -> Next {
        let (plain, peer_closed) = match self.tx.decrypt(data, ctx) {
            Decrypted::Passthrough => return self.on_plain(data, ctx),
            Decrypted::PlainHttp => {
                // nginx answers plain HTTP on its TLS port with a plain 400; so do we.
                self.reply_and_close(400, data, ctx);
                return Next::Close;
            }
            Decrypted::Failed => return Next::Close,
            Decrypted::Records {
                plain,
                peer_closed,
                handshake_done,
                kernel_failed,
            } => {
                if handshake_done {
                    self.deadline = ctx.now + ctx.shared.limits.header_timeout;
                }
                if kernel_failed {
                    self.close_after_response();
                }
                (plain, peer_closed)
            }
        };
        let next = if plain.is_empty() {
            Next::Read
        } else {
            self.on_plain(&plain, ctx)
        };
        if peer_closed && next == Next::Read {
            return self.on_eof(ctx);
        }
        if self.tx.output_pending() && matches!(next, Next::Read | Next::Wait) {
            return Next::Write;
        }
        next
    }

    /// The transport cannot go on past the response being written (if any).
    fn close_after_response(&mut self) {
        if let Phase::Writing(resp) = &mut self.phase {
            resp.close_after();
        }
    }

    /// recv failed with `errno`. On a kernel-TLS socket, EIO means a record that is not
    /// application data is next: an alert or a TLS 1.3 KeyUpdate.
    pub fn on_recv_error(&mut self, errno: i32, ctx: &mut WorkerCtx) -> Next {
        match self.tx.read_control(errno, ctx) {
            ControlRecord::Eof => self.on_eof(ctx),
            ControlRecord::Data(d) => self.on_plain(&d, ctx),
            // Our own KeyUpdate goes before the next write; with none under way, now.
            ControlRecord::KeyUpdated { reply: true }
                if !matches!(self.phase, Phase::Writing(_)) =>
            {
                match self.tx.rekey_tx() {
                    Ok(()) => Next::Read,
                    Err(_) => Next::Close,
                }
            }
            ControlRecord::KeyUpdated { .. } | ControlRecord::Again => Next::Read,
            ControlRecord::Close => Next::Close,
        }
    }

    /// The peer closed its side. A client may half-close right after its request, so a response
    /// being sent is finished first.
    pub fn on_eof(&mut self, ctx: &mut WorkerCtx) -> Next {
        if self.tx.handshaking() {
            ctx.stats().tls_failure(TlsFailure::Eof);
            return Next::Close;
        }
        if self.phase.answering() {
            self.peer_closed = true;
            return Next::Wait;
        }
        Next::Close
    }

    /// The socket became writable.
    pub fn on_writable(&mut self, ctx: &mut WorkerCtx) -> Next {
        let engine_busy = match &self.phase {
            Phase::Opening { .. } => true,
            Phase::Writing(resp) => resp.reading_file,
            _ => false,
        };
        if engine_busy {
            // TLS output (a handshake's last flight) may be what waited; the engine's operation
            // answers next.
            return match self.tx.flush() {
                Ok(true) => Next::Wait,
                Ok(false) => Next::Write,
                Err(_) => Next::Close,
            };
        }
        if !matches!(self.phase, Phase::Writing(_)) {
            return match self.tx.flush() {
                Ok(true) => {
                    if !self.tx.settle(ctx) {
                        self.close_after_response();
                    }
                    if self.inbuf.is_empty() || matches!(self.phase, Phase::Lingering) {
                        Next::Read
                    } else {
                        self.process(ctx, None)
                    }
                }
                Ok(false) => Next::Write,
                Err(_) => Next::Close,
            };
        }
        self.flush_and_continue(ctx)
    }

    /// Called on every timer tick; closes the connection when its deadline passed.
    pub fn on_tick(&mut self, ctx: &mut WorkerCtx) -> Option<Next> {
        if ctx.draining() && self.is_idle() {
            return Some(Next::Close);
        }
        if ctx.now < self.deadline {
            return None;
        }
        if self.tx.handshaking() {
            ctx.stats().timeout(Timeout::Header);
            ctx.stats().tls_failure(TlsFailure::Timeout);
            return Some(Next::Close);
        }
        match self.phase {
            Phase::Reading if !self.inbuf.is_empty() => {
                ctx.stats().timeout(Timeout::Header);
                let partial = std::mem::take(&mut self.inbuf);
                self.reply_and_close(408, &partial, ctx);
            }
            Phase::Reading => ctx.stats().timeout(Timeout::Idle),
            Phase::Writing(_) => ctx.stats().timeout(Timeout::Send),
            Phase::Lingering => {}
            // The disk's time, not the client's: the engine's disk_timeout watches it.
            Phase::Opening { .. } => return None,
        }
        Some(Next::Close)
    }

    /// The content id whose open the connection waits for (`Next::Open`).
    pub fn opening(&self) -> Option<&str> {
        match &self.phase {
            Phase::Opening { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The engine opened the file [`Conn::opening`] named (or found it missing, and told the
    /// worker's open files so): the request is answered.
    pub fn on_opened(&mut self, ctx: &mut WorkerCtx) -> Next {
        let Phase::Opening { started, .. } = self.phase else {
            return Next::Close;
        };
        self.phase = Phase::Reading;
        self.process(ctx, Some(started))
    }

    /// Best-effort one-shot reply on a connection about to close (400, 408), logged with
    /// `input`, what the peer had sent, as its request.
    pub fn reply_and_close(&mut self, status: u16, input: &[u8], ctx: &mut WorkerCtx) {
        if self.tx.handshaking() {
            // No HTTP before the handshake: the connection just closes.
            return;
        }
        let mut bufs = std::mem::take(&mut self.spare);
        bufs.clear();
        serve::standalone(status, ctx.date_cache(), &mut bufs.out, &mut bufs.segs);
        let sent = self.tx.send(&bufs.out, false).unwrap_or(0);
        count_sent(sent as u64, false, &self.tx, ctx);
        ctx.stats().response(status, Duration::ZERO);
        let outcome = Outcome::closing(status, &bufs.out, sent, self.tx.mode());
        ctx.log_closing(self.peer, || Pending::refused(input), &outcome);
        self.spare = bufs;
    }

    /// The engine moved `n` file bytes of the current part to the socket.
    pub fn on_body_sent(&mut self, n: u64, ctx: &mut WorkerCtx) -> Next {
        if !self.advance(n, ctx) {
            return Next::Close;
        }
        self.flush_and_continue(ctx)
    }

    /// The engine gave up the cold path for the current part (`reason`: a reader too slow to
    /// keep a shared buffer, or a wait past its deadline) after `sent` more of its bytes went
    /// out from a cold buffer: the rest of the part goes through the page cache. The engine
    /// goes on with [`Conn::on_writable`] (at once, or when the socket is).
    pub fn cold_abandoned(&mut self, sent: u64, reason: cold::Reason, ctx: &mut WorkerCtx) -> bool {
        ctx.stats().cold_fallback(reason);
        if let Phase::Writing(resp) = &mut self.phase {
            resp.abandon_cold(reason);
        }
        self.advance(sent, ctx)
    }

    /// Gives a response being written a whole send timeout from now (progress was made, or its
    /// bytes just came off the disk: time spent waiting for the disk is not the client's).
    pub fn extend_send(&mut self, ctx: &WorkerCtx) {
        if matches!(self.phase, Phase::Writing(_)) {
            self.deadline = ctx.now + ctx.shared.limits.send_timeout;
        }
    }

    /// The engine found the file shorter than when it was opened (`read_error`: or unreadable,
    /// which marks its disk failed).
    pub fn on_body_failed(&mut self, ctx: &mut WorkerCtx, read_error: bool) -> Next {
        ctx.stats().truncated();
        if let (true, Phase::Writing(resp)) = (read_error, &self.phase) {
            if let Some(f) = resp.file() {
                ctx.shared.process.disks.error(f.disk);
            }
        }
        Next::Close
    }

    /// The engine read `data` for a `Next::ReadFile`: encrypted and sent like bytes read here
    /// (after whatever ciphertext is still waiting for the socket).
    pub fn on_file_read(&mut self, data: &[u8], ctx: &mut WorkerCtx) -> Next {
        if let Phase::Writing(resp) = &mut self.phase {
            resp.reading_file = false;
        }
        if data.is_empty() {
            tracing::warn!("file shorter than when opened; closing connection");
            ctx.stats().truncated();
            return Next::Close;
        }
        if !self.tx.send_read(data) || !self.advance(data.len() as u64, ctx) {
            return Next::Close;
        }
        self.flush_and_continue(ctx)
    }

    /// The engine is done with the connection: a response cut short is logged as such.
    pub fn closed(mut self, ctx: &WorkerCtx) {
        if let Phase::Writing(resp) = &mut self.phase {
            resp.log(self.peer, &self.tx, ctx, false);
        }
    }

    /// The O_DIRECT twin of the file the response is sending, when it has one open.
    pub fn direct_file(&self) -> Option<Rc<Direct>> {
        match &self.phase {
            Phase::Writing(resp) => resp.file().map(|f| f.direct.clone()),
            _ => None,
        }
    }
}
