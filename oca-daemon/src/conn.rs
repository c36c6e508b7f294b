//! One client connection as an explicit state machine, shared by both engines.
//!
//! The engine owns readiness: it tells the connection "these bytes arrived", "the socket is
//! writable", "the peer closed" or "time passed", and the connection answers with what it needs
//! next ([`Next`]). Writes are non-blocking syscalls made here (send for heads, sendfile for file
//! bytes), so the engines differ only in how they wait.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use oca_store::Store;

use crate::admission::Ticket;
use crate::cold::{self, ColdConfig};
use crate::config::Limits;
use crate::http::request::{parse_head, HeadLimits, Parsed};
use crate::http::response::{DateCache, Segment};
use crate::http::serve::{self, ServeCtx, ServedFile};
use crate::ktls::{self, Control};
use crate::metrics::TlsMode;
use crate::metrics::{Metrics, Timeout, WorkerStats};
use crate::open_files::OpenFiles;
use crate::socket;
use crate::tls::{Session, TlsSetup, ENCRYPT_CHUNK};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use std::os::unix::fs::FileExt;

/// How long a closing connection keeps reading (and discarding) so the client gets the last
/// response before any reset caused by bytes it sent after it (nginx's lingering close).
const LINGER: Duration = Duration::from_secs(2);

/// Largest count handed to one sendfile call; bounds the time one connection holds the worker.
const SENDFILE_CHUNK: usize = 1 << 20;

/// What is shared by every worker.
pub struct Shared {
    /// The content store.
    pub store: Store,
    /// Limits and timeouts.
    pub limits: Limits,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Whether to log each request.
    pub access_log: bool,
    /// Who may fetch content.
    pub auth: Arc<crate::signed_urls::UrlAuth>,
    /// HTTPS, when a TLS listener is configured.
    pub tls: Option<Arc<TlsSetup>>,
    /// The cold-read path's settings (used by the io_uring engine).
    pub cold: ColdConfig,
    /// Recent requests per file, for the cold path's `auto` policy.
    pub sketch: cold::Sketch,
}

/// Per-worker state the connections use.
pub struct WorkerCtx {
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// This worker's index.
    pub index: usize,
    /// The loop's clock, refreshed once per batch of events.
    pub now: Instant,
    /// File parts at least this long are handed to the engine ([`Next::Splice`]); shorter ones
    /// go out with sendfile here. `u64::MAX`: always sendfile.
    pub splice_min: u64,
    date: DateCache,
    boundary_state: u64,
    files: OpenFiles,
    /// File bytes on their way through rustls (userspace TLS only); allocated on first use.
    scratch: Vec<u8>,
    /// The cold path's settings, when this worker's engine has it (io_uring with its buffers).
    pub cold: Option<ColdConfig>,
    /// The engine opens files off this thread ([`Next::Open`]).
    pub defer_opens: bool,
}

impl WorkerCtx {
    /// A context for worker `index`.
    pub fn new(shared: Arc<Shared>, index: usize) -> WorkerCtx {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        WorkerCtx {
            shared,
            index,
            now: Instant::now(),
            splice_min: u64::MAX,
            date: DateCache::default(),
            files: OpenFiles::default(),
            scratch: Vec::new(),
            cold: None,
            defer_opens: false,
            boundary_state: seed ^ ((index as u64 + 1) << 32) | 1,
        }
    }

    /// This worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        self.shared.metrics.worker(self.index)
    }

    /// The worker's cached `Date` header value.
    pub fn date_cache(&mut self) -> &mut DateCache {
        &mut self.date
    }

    /// The worker's open files (the engine adds the files it opened off the thread).
    pub fn files_mut(&mut self) -> &mut OpenFiles {
        &mut self.files
    }

    /// Whether the server is draining.
    pub fn draining(&self) -> bool {
        self.shared
            .metrics
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// File bytes for the engine to move to the socket itself (io_uring splice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyChunk {
    /// The open file.
    pub file: RawFd,
    /// Offset of the next byte to send.
    pub offset: u64,
    /// Bytes left in this part of the response.
    pub len: u64,
    /// The disk the file is on (its reads are timed against disk_timeout).
    pub disk: usize,
}

/// File bytes for the cold path: read with O_DIRECT from `fd` (aligned reads, trimmed to the
/// part) into one of the engine's buffers, then sent from there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdChunk {
    /// The O_DIRECT descriptor.
    pub fd: RawFd,
    /// Offset of the next byte to send.
    pub offset: u64,
    /// Bytes left in this part of the response.
    pub len: u64,
    /// The disk the file is on (its queue and health).
    pub disk: usize,
    /// Offsets, lengths and buffer addresses must be multiples of this.
    pub align: u32,
    /// Plain TCP: the buffer may go out with zero-copy send (kTLS copies anyway).
    pub zero_copy: bool,
}

/// File bytes a userspace-TLS connection needs that the page cache did not have: the engine
/// reads them off the worker's thread and hands them to [`Conn::on_file_read`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileRead {
    /// The open file.
    pub fd: RawFd,
    /// Where to read.
    pub offset: u64,
    /// How much (at most one encryption step).
    pub len: u32,
    /// The disk the file is on.
    pub disk: usize,
}

/// What the connection needs from the engine next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Move these file bytes to the socket, then call [`Conn::on_body_sent`].
    Splice(BodyChunk),
    /// Read these bytes with O_DIRECT and send them, then call [`Conn::on_body_sent`].
    Cold(ColdChunk),
    /// Wait until the socket is readable, then deliver the bytes.
    Read,
    /// Wait until the socket is writable, then call [`Conn::on_writable`].
    Write,
    /// Close the socket and forget the connection.
    Close,
    /// Nothing new: keep waiting for what is already pending.
    Wait,
    /// Stop receiving until the connection asks to read again (input piled up while writing).
    Pause,
    /// Open the file [`Conn::opening`] names off the worker's thread, then call
    /// [`Conn::on_opened`].
    Open,
    /// Read these file bytes off the worker's thread, then call [`Conn::on_file_read`].
    ReadFile(FileRead),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for (the rest of) a request head.
    Reading,
    /// Sending a response.
    Writing,
    /// Response sent, write side shut: discarding input until the peer closes or [`LINGER`].
    Lingering,
    /// The request's file is being opened off the worker's thread ([`Next::Open`]); the request
    /// stays at the front of the input, answered afresh once it is.
    Opening,
}

enum WriteResult {
    Body(BodyChunk),
    Cold(ColdChunk),
    ReadFile(FileRead),
    Done,
    Blocked,
    Failed,
}

/// What a userspace-TLS file step did: wrote (encrypted) bytes, or needs the engine to read.
enum TlsFile {
    Wrote(io::Result<usize>),
    Read(FileRead),
}

/// Who encrypts the connection's records.
enum Transport {
    /// Plain HTTP.
    Plain,
    /// rustls, in this process: the handshake, and afterwards whatever the kernel cannot take.
    User(Box<Session>),
    /// The kernel (kTLS); rustls keeps only what a key update needs.
    Kernel(Box<KernelConnection<ServerConnectionData>>),
}

/// One client connection.
pub struct Conn {
    sock: OwnedFd,
    transport: Transport,
    /// The TLS ULP is on the socket: hand the session to the kernel once the handshake is done.
    want_kernel: bool,
    /// The peer asked for our KeyUpdate; sent before the next write (kernel TLS with rekey).
    tx_rekey_pending: bool,
    /// The response going out answers a `fill`-signed request (a peer appliance filling).
    fill: bool,
    phase: Phase,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    segs: Vec<Segment>,
    seg: usize,
    seg_off: u64,
    /// The file being sent and the disk it is on.
    file: Option<ServedFile>,
    /// The cold path's decision for the part at this segment index.
    cold_seg: Option<(usize, cold::Reason)>,
    /// Whether the part at this segment index was in the page cache when it was first sent.
    sendfile_seg: Option<(usize, bool)>,
    /// Whether the peer is on this machine.
    loopback: bool,
    /// The peer's address.
    peer: Option<SocketAddr>,
    /// Its place under the connection caps, given back when the connection is dropped.
    _ticket: Ticket,
    keep_alive: bool,
    /// The peer half-closed while a response was going out.
    peer_closed: bool,
    /// The content id being opened off the worker's thread (phase `Opening`).
    opening: Option<String>,
    /// A [`Next::ReadFile`] is with the engine: nothing more is written until its bytes come.
    reading_file: bool,
    /// The request being answered waited for an open: `started` is already set.
    reopened: bool,
    status: u16,
    started: Instant,
    deadline: Instant,
    access: Option<String>,
}

impl Conn {
    /// A freshly accepted connection from `peer`, admitted under `ticket`; the first request
    /// head must arrive within the header timeout.
    pub fn new(sock: OwnedFd, ctx: &WorkerCtx, peer: Option<SocketAddr>, ticket: Ticket) -> Conn {
        socket::set_nodelay(sock.as_fd());
        // The kernel copies zero-copy sends to a local peer anyway; to one, plain sends are
        // cheaper.
        let loopback = peer.is_some_and(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
        });
        Conn {
            loopback,
            peer,
            _ticket: ticket,
            sock,
            transport: Transport::Plain,
            want_kernel: false,
            tx_rekey_pending: false,
            fill: false,
            phase: Phase::Reading,
            inbuf: Vec::new(),
            out: Vec::new(),
            segs: Vec::new(),
            seg: 0,
            seg_off: 0,
            file: None,
            cold_seg: None,
            sendfile_seg: None,
            keep_alive: true,
            peer_closed: false,
            opening: None,
            reading_file: false,
            reopened: false,
            status: 0,
            started: ctx.now,
            deadline: ctx.now + ctx.shared.limits.header_timeout,
            access: None,
        }
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
        let mut conn = Conn::new(sock, ctx, peer, ticket);
        conn.want_kernel = setup.ktls.available && ktls::set_ulp(conn.sock.as_fd()).is_ok();
        conn.transport = Transport::User(Box::new(setup.session()));
        conn
    }

    /// Whether a receive may stay armed across events (io_uring multishot). Not while a TLS
    /// session may still go to the kernel: bytes a standing receive pulled after the handshake
    /// would be ciphertext the kernel never sees, so each receive is single until it has.
    pub fn multishot_ok(&self) -> bool {
        !matches!(&self.transport, Transport::User(s) if self.want_kernel && !s.settled)
    }

    /// The socket.
    pub fn sock(&self) -> &OwnedFd {
        &self.sock
    }

    /// Whether the connection sits between requests with nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Reading && self.inbuf.is_empty()
    }

    /// Whether the connection takes input now: not while a response is going out with a head's
    /// worth of pipelined requests already waiting (see [`Next::Pause`]).
    pub fn wants_input(&self, ctx: &WorkerCtx) -> bool {
        !matches!(self.phase, Phase::Writing | Phase::Opening)
            || self.inbuf.len() <= ctx.shared.limits.max_header_bytes
    }

    /// Bytes arrived from the peer.
    pub fn on_data(&mut self, data: &[u8], ctx: &mut WorkerCtx) -> Next {
        let Transport::User(session) = &mut self.transport else {
            return self.on_plain(data, ctx);
        };
        let was_handshaking = session.handshaking();
        if was_handshaking && looks_like_http(data) {
            // nginx answers plain HTTP on its TLS port with a plain 400; so do we.
            ctx.stats().tls_failure("plain_http");
            self.transport = Transport::Plain;
            self.reply_and_close(400, ctx);
            return Next::Close;
        }
        if let Err(e) = session.receive(data) {
            if was_handshaking {
                ctx.stats().tls_failure(e.reason());
                // The alert rustls queued, if any, tells the client why.
                let _ = self.flush_tls();
            }
            tracing::debug!(error = %e, "TLS error; closing connection");
            return Next::Close;
        }
        let plain = session.take_plain();
        let peer_closed = session.peer_closed();
        if was_handshaking && !session.handshaking() {
            self.deadline = ctx.now + ctx.shared.limits.header_timeout;
        }
        match self.flush_tls() {
            Ok(true) => self.settle_transport(ctx),
            Ok(false) => {}
            Err(_) => return Next::Close,
        }
        let next = if plain.is_empty() {
            Next::Read
        } else {
            self.on_plain(&plain, ctx)
        };
        if peer_closed && next == Next::Read {
            return self.on_eof(ctx);
        }
        if self.tls_output_pending() && matches!(next, Next::Read | Next::Wait) {
            return Next::Write;
        }
        next
    }

    /// Once the handshake is done and nothing is in flight in userspace, hands the records to
    /// the kernel when it can take them; counts the handshake by where its records go.
    fn settle_transport(&mut self, ctx: &mut WorkerCtx) {
        let Transport::User(session) = &mut self.transport else {
            return;
        };
        if session.handshaking() || session.settled {
            return;
        }
        let kernel_takes_it = session
            .suite()
            .zip(ctx.shared.tls.as_ref())
            .is_some_and(|(suite, t)| t.ktls.supports(suite));
        if !kernel_takes_it {
            self.want_kernel = false;
        }
        if self.want_kernel && !session.ready_for_kernel() && session.version_is_tls13() {
            // A partial record read or output not yet sent: try again after the next event.
            return;
        }
        session.settled = true;
        if self.want_kernel && session.ready_for_kernel() {
            match session.hand_to_kernel(self.sock.as_fd()) {
                Ok(kernel) => {
                    self.transport = Transport::Kernel(Box::new(kernel));
                    ctx.stats().tls_handshake(TlsMode::Kernel);
                    return;
                }
                Err(e) => {
                    // The session is spent once its keys are out: this connection ends.
                    tracing::warn!(error = %e, "handing TLS to the kernel failed; closing connection");
                    ctx.stats().tls_failure("ktls_setup");
                    self.transport = Transport::Plain;
                    self.keep_alive = false;
                    socket::shutdown(self.sock.as_fd(), libc::SHUT_RDWR);
                    return;
                }
            }
        }
        ctx.stats().tls_handshake(TlsMode::User);
    }

    fn tls_output_pending(&self) -> bool {
        matches!(&self.transport, Transport::User(s) if s.has_output())
    }

    /// Sends the ciphertext rustls produced; `Ok(true)` when none is left.
    fn flush_tls(&mut self) -> io::Result<bool> {
        let Transport::User(session) = &mut self.transport else {
            return Ok(true);
        };
        while session.has_output() {
            match socket::send(self.sock.as_fd(), session.output(), false) {
                Ok(n) => session.sent(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Writes plaintext on a userspace-TLS connection: up to [`ENCRYPT_CHUNK`] bytes are
    /// encrypted once the previous ciphertext is out, then sent as far as the socket takes them.
    fn tls_write(&mut self, plain: &[u8]) -> io::Result<usize> {
        if !self.flush_tls()? {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let Transport::User(session) = &mut self.transport else {
            return socket::send(self.sock.as_fd(), plain, false);
        };
        let n = plain.len().min(ENCRYPT_CHUNK);
        session.encrypt(&plain[..n]).map_err(io::Error::other)?;
        self.flush_tls()?;
        Ok(n)
    }

    /// recv failed with `errno`. On a kernel-TLS socket, EIO means a record that is not
    /// application data is next: an alert or a TLS 1.3 KeyUpdate.
    pub fn on_recv_error(&mut self, errno: i32, ctx: &mut WorkerCtx) -> Next {
        let Transport::Kernel(kernel) = &mut self.transport else {
            return Next::Close;
        };
        if errno != libc::EIO {
            return Next::Close;
        }
        match ktls::read_control(self.sock.as_fd()) {
            Ok(Control::Alert(_, 0)) => self.on_eof(ctx),
            Ok(Control::Data(d)) => self.on_plain(&d, ctx),
            Ok(Control::KeyUpdate { update_requested }) => {
                let rekeyed = ctx.shared.tls.as_ref().is_some_and(|t| t.ktls.rekey)
                    && kernel
                        .update_rx_secret()
                        .ok()
                        .is_some_and(|(seq, s)| ktls::set_rx(self.sock.as_fd(), seq, &s).is_ok());
                ctx.stats().key_update(rekeyed);
                if !rekeyed {
                    tracing::debug!("peer sent a TLS KeyUpdate this kernel cannot apply; closing");
                    return Next::Close;
                }
                if update_requested {
                    self.tx_rekey_pending = true;
                    if self.phase != Phase::Writing {
                        return match self.rekey_tx() {
                            Ok(()) => Next::Read,
                            Err(_) => Next::Close,
                        };
                    }
                }
                Next::Read
            }
            Ok(other) => {
                tracing::debug!(?other, "unexpected TLS record; closing");
                Next::Close
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Next::Read,
            Err(_) => Next::Close,
        }
    }

    /// Sends our KeyUpdate and switches the kernel to the new transmit keys.
    fn rekey_tx(&mut self) -> io::Result<()> {
        let Transport::Kernel(kernel) = &mut self.transport else {
            return Ok(());
        };
        self.tx_rekey_pending = false;
        ktls::send_key_update(self.sock.as_fd())?;
        let (seq, secrets) = kernel.update_tx_secret().map_err(io::Error::other)?;
        ktls::set_tx(self.sock.as_fd(), seq, &secrets)
    }

    fn on_plain(&mut self, data: &[u8], ctx: &mut WorkerCtx) -> Next {
        match self.phase {
            Phase::Lingering => Next::Read,
            Phase::Writing | Phase::Opening => {
                // Pipelined requests that arrive while a response is going out (the io_uring
                // engine keeps receiving); past the head limit, receiving pauses.
                self.inbuf.extend_from_slice(data);
                if self.inbuf.len() > ctx.shared.limits.max_header_bytes {
                    Next::Pause
                } else {
                    Next::Wait
                }
            }
            Phase::Reading => {
                if self.inbuf.is_empty() {
                    // The header timeout runs from a request's first byte and is never extended,
                    // so a client trickling bytes (slowloris) is cut off.
                    self.deadline = ctx.now + ctx.shared.limits.header_timeout;
                }
                self.inbuf.extend_from_slice(data);
                self.process(ctx)
            }
        }
    }

    /// The peer closed its side. A client may half-close right after its request, so a response
    /// being sent is finished first.
    pub fn on_eof(&mut self, ctx: &mut WorkerCtx) -> Next {
        if matches!(&self.transport, Transport::User(s) if s.handshaking()) {
            ctx.stats().tls_failure("eof");
            return Next::Close;
        }
        if matches!(self.phase, Phase::Writing | Phase::Opening) {
            self.peer_closed = true;
            return Next::Wait;
        }
        Next::Close
    }

    /// The socket became writable.
    pub fn on_writable(&mut self, ctx: &mut WorkerCtx) -> Next {
        if self.phase == Phase::Opening || self.reading_file {
            // TLS output (a handshake's last flight) may be what waited; the open answers next.
            return match self.flush_tls() {
                Ok(true) => Next::Wait,
                Ok(false) => Next::Write,
                Err(_) => Next::Close,
            };
        }
        if self.phase != Phase::Writing {
            return match self.flush_tls() {
                Ok(true) => {
                    self.settle_transport(ctx);
                    if self.inbuf.is_empty() || self.phase == Phase::Lingering {
                        Next::Read
                    } else {
                        self.process(ctx)
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
        if matches!(&self.transport, Transport::User(s) if s.handshaking()) {
            ctx.stats().timeout(Timeout::Header);
            ctx.stats().tls_failure("timeout");
            return Some(Next::Close);
        }
        match self.phase {
            Phase::Reading if !self.inbuf.is_empty() => {
                ctx.stats().timeout(Timeout::Header);
                self.reply_and_close(408, ctx);
            }
            Phase::Reading => ctx.stats().timeout(Timeout::Idle),
            Phase::Writing => ctx.stats().timeout(Timeout::Send),
            Phase::Lingering => {}
            // The disk's time, not the client's: the engine's disk_timeout watches it.
            Phase::Opening => return None,
        }
        Some(Next::Close)
    }

    /// The content id whose open the connection waits for ([`Next::Open`]).
    pub fn opening(&self) -> Option<&str> {
        self.opening.as_deref()
    }

    /// The engine opened the file [`Conn::opening`] named (or found it missing, and told the
    /// worker's open files so): the request is answered.
    pub fn on_opened(&mut self, ctx: &mut WorkerCtx) -> Next {
        if self.phase != Phase::Opening {
            return Next::Close;
        }
        self.opening = None;
        self.phase = Phase::Reading;
        self.process(ctx)
    }

    /// Best-effort one-shot reply on a connection about to close (408, 503).
    pub fn reply_and_close(&mut self, status: u16, ctx: &mut WorkerCtx) {
        self.out.clear();
        self.segs.clear();
        if matches!(&self.transport, Transport::User(s) if s.handshaking()) {
            // No HTTP before the handshake: the connection just closes.
            return;
        }
        serve::standalone(status, &mut ctx.date, &mut self.out, &mut self.segs);
        let out = std::mem::take(&mut self.out);
        if let Ok(n) = self.write_plain(&out) {
            self.count_sent(n as u64, ctx);
        }
        self.out = out;
        ctx.stats().response(status, Duration::ZERO);
    }

    fn process(&mut self, ctx: &mut WorkerCtx) -> Next {
        loop {
            if self.inbuf.is_empty() {
                return Next::Read;
            }
            let limits = HeadLimits {
                max_header_bytes: ctx.shared.limits.max_header_bytes,
                max_uri_bytes: ctx.shared.limits.max_uri_bytes,
            };
            self.out.clear();
            self.segs.clear();
            let used = match parse_head(&self.inbuf, limits) {
                Ok(Parsed::Partial) => return Next::Read,
                Ok(Parsed::Complete(req, used)) => {
                    let mut sctx = ServeCtx {
                        store: &ctx.shared.store,
                        auth: &ctx.shared.auth,
                        files: &mut ctx.files,
                        now: ctx.now,
                        max_ranges: ctx.shared.limits.max_ranges,
                        date: &mut ctx.date,
                        boundary_state: &mut ctx.boundary_state,
                        draining: ctx
                            .shared
                            .metrics
                            .draining
                            .load(std::sync::atomic::Ordering::Relaxed),
                        metrics: &ctx.shared.metrics,
                        defer_opens: ctx.defer_opens,
                        worker: ctx.index,
                    };
                    let served = serve::serve(&req, &mut sctx, &mut self.out, &mut self.segs);
                    if let Some(id) = served.open {
                        self.opening = Some(id);
                        self.phase = Phase::Opening;
                        self.reopened = true;
                        self.started = ctx.now;
                        return Next::Open;
                    }
                    if let Some(disk) = served.disk_error {
                        ctx.shared.metrics.disk_error(disk);
                    }
                    self.fill = served.admission
                        == Some(Ok(crate::signed_urls::Admitted::Signed(
                            oca_protocol::signing::Scope::Fill,
                        )));
                    if let Some(admission) = served.admission {
                        ctx.stats().admission(admission);
                    }
                    self.status = served.status;
                    self.keep_alive = served.keep_alive;
                    self.file = served.file;
                    // Segment indexes start again with each response: so do the decisions.
                    self.cold_seg = None;
                    self.sendfile_seg = None;
                    if ctx.shared.access_log {
                        let m = match req.method {
                            crate::http::request::Method::Get => "GET",
                            crate::http::request::Method::Head => "HEAD",
                            crate::http::request::Method::Other => "OTHER",
                        };
                        self.access = Some(format!("{m} {}", String::from_utf8_lossy(req.target)));
                    }
                    used
                }
                Err(e) => {
                    self.status = serve::refuse(e, &mut ctx.date, &mut self.out, &mut self.segs);
                    self.keep_alive = false;
                    self.file = None;
                    self.inbuf.len()
                }
            };
            self.inbuf.drain(..used);
            self.phase = Phase::Writing;
            self.seg = 0;
            self.seg_off = 0;
            // A request that waited for its file's open is timed from its first answer attempt.
            if !std::mem::take(&mut self.reopened) {
                self.started = ctx.now;
            }
            self.deadline = ctx.now + ctx.shared.limits.send_timeout;
            match self.flush(ctx) {
                Next::Read if self.phase == Phase::Reading => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self, ctx: &mut WorkerCtx) -> Next {
        if self.tx_rekey_pending && self.rekey_tx().is_err() {
            return Next::Close;
        }
        match self.write_segments(ctx) {
            WriteResult::Blocked => {
                self.deadline = ctx.now + ctx.shared.limits.send_timeout;
                Next::Write
            }
            WriteResult::Failed => Next::Close,
            WriteResult::Body(chunk) => Next::Splice(chunk),
            WriteResult::Cold(chunk) => Next::Cold(chunk),
            WriteResult::ReadFile(read) => {
                self.reading_file = true;
                Next::ReadFile(read)
            }
            WriteResult::Done => self.finish(ctx),
        }
    }

    /// The cold-path chunk for the rest of the current file part (which starts at `offset`,
    /// `remaining` bytes left), when this part goes that way; decided once per part.
    fn cold_chunk(
        &mut self,
        ctx: &mut WorkerCtx,
        offset: u64,
        remaining: u64,
    ) -> Option<ColdChunk> {
        let cfg = ctx.cold?;
        let f = self.file.as_ref()?;
        let cold = match self.cold_seg {
            Some((seg, reason)) if seg == self.seg => reason.is_cold(),
            _ => {
                let start = offset + self.seg_off;
                let reason = cold::decide(
                    &cfg,
                    &ctx.shared.sketch,
                    f.ino,
                    f.file.as_raw_fd(),
                    start,
                    remaining,
                );
                // A filesystem without O_DIRECT keeps the part on the page cache.
                let reason = if reason.is_cold() && f.direct.get(&f.file).is_none() {
                    cold::Reason::Off
                } else {
                    reason
                };
                ctx.stats().body_part(reason);
                self.cold_seg = Some((self.seg, reason));
                reason.is_cold()
            }
        };
        if !cold {
            return None;
        }
        let d = f.direct.get(&f.file)?;
        Some(ColdChunk {
            fd: d.file.as_raw_fd(),
            offset: offset + self.seg_off,
            len: remaining,
            disk: f.disk,
            align: d.offset_align.max(d.mem_align),
            zero_copy: matches!(self.transport, Transport::Plain) && !self.loopback,
        })
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
        self.cold_seg = Some((self.seg, reason));
        self.advance(sent, ctx)
    }

    /// `n` file bytes of the current part went out; false when that is more than the part has.
    fn advance(&mut self, n: u64, ctx: &mut WorkerCtx) -> bool {
        self.count_sent(n, ctx);
        // The send timeout runs between two writes that make progress (as nginx's does), not
        // over the whole response: a long body that keeps moving is never cut.
        self.extend_send(ctx);
        match self.segs.get(self.seg) {
            Some(&Segment::File { len, .. }) if self.seg_off + n <= len => {
                self.seg_off += n;
                if self.seg_off == len {
                    self.seg += 1;
                    self.seg_off = 0;
                }
                true
            }
            _ => false,
        }
    }

    /// Gives a response being written a whole send timeout from now (progress was made, or its
    /// bytes just came off the disk: time spent waiting for the disk is not the client's).
    pub fn extend_send(&mut self, ctx: &WorkerCtx) {
        if self.phase == Phase::Writing {
            self.deadline = ctx.now + ctx.shared.limits.send_timeout;
        }
    }

    /// The engine found the file shorter than when it was opened (or unreadable).
    pub fn on_body_failed(&mut self, ctx: &mut WorkerCtx, read_error: bool) -> Next {
        ctx.stats().truncated();
        if let (true, Some(f)) = (read_error, &self.file) {
            ctx.shared.metrics.disk_error(f.disk);
        }
        Next::Close
    }

    fn finish(&mut self, ctx: &mut WorkerCtx) -> Next {
        let latency = self.started.elapsed();
        ctx.stats().response(self.status, latency);
        if let Some(line) = self.access.take() {
            let bytes: u64 = self.segs.iter().map(Segment::len).sum();
            let peer = self.peer.map_or_else(|| "-".to_string(), |a| a.to_string());
            tracing::info!(
                target: "access",
                %peer,
                status = self.status,
                bytes,
                ms = latency.as_secs_f64() * 1e3,
                "{line}"
            );
        }
        self.file = None;
        if self.out.capacity() > 16 * 1024 {
            self.out = Vec::new();
        }
        if !self.keep_alive || ctx.draining() {
            // Half-close and keep reading so a client still sending is not answered with a reset
            // that could destroy the response it has not read yet.
            self.close_notify();
            socket::shutdown(self.sock.as_fd(), libc::SHUT_WR);
            self.phase = Phase::Lingering;
            self.inbuf = Vec::new();
            self.deadline = ctx.now + LINGER;
            return Next::Read;
        }
        if self.peer_closed && self.inbuf.is_empty() {
            return Next::Close;
        }
        self.phase = Phase::Reading;
        self.deadline = ctx.now + ctx.shared.limits.keepalive_timeout;
        if self.inbuf.capacity() > 16 * 1024 {
            self.inbuf.shrink_to(self.inbuf.len().max(1024));
        }
        if !self.inbuf.is_empty() {
            // Pipelined: the next head is already here, so its timeout starts now. The caller
            // goes on to it (`process` loops; it is never called from here, so a flood of
            // pipelined requests answered at once cannot deepen the stack).
            self.deadline = ctx.now + ctx.shared.limits.header_timeout;
        }
        Next::Read
    }

    /// Writes what the response has ready and, when it is done and a pipelined request is
    /// already buffered, goes on to answer it.
    fn flush_and_continue(&mut self, ctx: &mut WorkerCtx) -> Next {
        match self.flush(ctx) {
            Next::Read if self.phase == Phase::Reading && !self.inbuf.is_empty() => {
                self.process(ctx)
            }
            other => other,
        }
    }

    fn write_segments(&mut self, ctx: &mut WorkerCtx) -> WriteResult {
        while let Some(&seg) = self.segs.get(self.seg) {
            let more = self.seg + 1 < self.segs.len();
            let (result, remaining) = match seg {
                Segment::Mem { start, end } => {
                    let out = std::mem::take(&mut self.out);
                    let buf = &out[start + self.seg_off as usize..end];
                    let r = self.write_plain_more(buf, more);
                    let len = buf.len() as u64;
                    self.out = out;
                    (r, len)
                }
                Segment::File { offset, len } if self.is_user_tls() => {
                    let remaining = len - self.seg_off;
                    match self.tls_write_file(offset + self.seg_off, remaining, ctx) {
                        TlsFile::Wrote(r) => (r, remaining),
                        TlsFile::Read(read) => return WriteResult::ReadFile(read),
                    }
                }
                Segment::File { offset, len } => {
                    let remaining = len - self.seg_off;
                    let Some(file) = self.file.as_ref().map(|f| f.file.clone()) else {
                        return WriteResult::Failed;
                    };
                    if let Some(chunk) = self.cold_chunk(ctx, offset, remaining) {
                        return WriteResult::Cold(chunk);
                    }
                    // Decided on the part's whole length, so one part never switches path
                    // midway (the engine's pipe may still hold some of it). Below `splice_min`
                    // sendfile is the cheaper (docs/oca-daemon.md), but it reads on the worker's
                    // thread: it is used only once every page of the part is known to be
                    // cached, by the cold policy's probe (`Cached`) or this part's own (a
                    // popular part, `Hot`, is probed here: its splice from the file would be
                    // punted to the kernel's workers, measured 15% fewer 64 KiB responses than
                    // a probe and sendfile). A part partly missing goes by splice, whose reads
                    // wait for the disk off the thread.
                    let probed = matches!(self.cold_seg, Some((_, cold::Reason::Cached)));
                    if len >= ctx.splice_min
                        || (ctx.splice_min != u64::MAX
                            && !probed
                            && !self.on_page_cache(file.as_raw_fd(), offset, len))
                    {
                        return WriteResult::Body(BodyChunk {
                            file: file.as_raw_fd(),
                            offset: offset + self.seg_off,
                            len: remaining,
                            disk: self.file.as_ref().map_or(0, |f| f.disk),
                        });
                    }
                    let count = remaining.min(SENDFILE_CHUNK as u64) as usize;
                    let disk = self.file.as_ref().map_or(0, |f| f.disk);
                    let r = {
                        let _blocked = ctx.shared.metrics.enter_disk(ctx.index, disk);
                        socket::sendfile(
                            self.sock.as_fd(),
                            file.as_raw_fd(),
                            offset + self.seg_off,
                            count,
                        )
                    };
                    if let Ok(0) = r {
                        // The file shrank under us: what is left cannot be sent, and a shorter
                        // body on this connection must not pass for a whole one, so close it.
                        tracing::warn!(
                            offset = offset + self.seg_off,
                            "file shorter than when opened; closing connection"
                        );
                        ctx.stats().truncated();
                        return WriteResult::Failed;
                    }
                    (r, remaining)
                }
            };
            match result {
                Ok(0) if remaining > 0 => {
                    // Userspace TLS read nothing: the file shrank under us (see sendfile above).
                    tracing::warn!("file shorter than when opened; closing connection");
                    ctx.stats().truncated();
                    return WriteResult::Failed;
                }
                Ok(n) => {
                    self.count_sent(n as u64, ctx);
                    if n as u64 == remaining {
                        self.seg += 1;
                        self.seg_off = 0;
                    } else {
                        self.seg_off += n as u64;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return WriteResult::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let (Segment::File { .. }, Some(f)) = (seg, &self.file) {
                        if e.raw_os_error().is_some_and(oca_store::is_media_error) {
                            tracing::warn!(error = %e, disk = f.disk, "reading content failed; closing connection");
                            ctx.stats().truncated();
                            ctx.shared.metrics.disk_error(f.disk);
                        }
                    }
                    return WriteResult::Failed;
                }
            }
        }
        // Userspace TLS: the last records may still wait for the socket.
        match self.flush_tls() {
            Ok(true) => WriteResult::Done,
            Ok(false) => WriteResult::Blocked,
            Err(_) => WriteResult::Failed,
        }
    }

    /// Whether the current part (`len` bytes at `offset`) may go by sendfile on the worker's
    /// thread where the engine can splice: only when the page cache holds it, decided once per
    /// part. sendfile of a page that must come from the disk blocks the worker, and a disk that
    /// hangs would stop every connection on it; the engine's splice waits off the thread.
    fn on_page_cache(&mut self, fd: RawFd, offset: u64, len: u64) -> bool {
        match self.sendfile_seg {
            Some((seg, ok)) if seg == self.seg => ok,
            _ => {
                let ok = cold::cached(fd, offset, len.min(cold::PROBE_BYTES));
                self.sendfile_seg = Some((self.seg, ok));
                ok
            }
        }
    }

    fn is_user_tls(&self) -> bool {
        matches!(self.transport, Transport::User(_))
    }

    /// Sends response bytes through the connection's transport.
    fn write_plain(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_plain_more(buf, false)
    }

    fn write_plain_more(&mut self, buf: &[u8], more: bool) -> io::Result<usize> {
        match self.transport {
            Transport::User(_) => self.tls_write(buf),
            _ => socket::send(self.sock.as_fd(), buf, more),
        }
    }

    /// File bytes on a userspace-TLS connection: read into the worker's scratch buffer, then
    /// encrypted (the one path where file bytes pass through this process). Where the engine
    /// reads off the thread ([`WorkerCtx::defer_opens`]), only bytes the page cache holds are
    /// read here (RWF_NOWAIT); the others are the engine's to read ([`TlsFile::Read`]).
    fn tls_write_file(&mut self, offset: u64, remaining: u64, ctx: &mut WorkerCtx) -> TlsFile {
        match self.flush_tls() {
            Ok(true) => {}
            Ok(false) => return TlsFile::Wrote(Err(io::ErrorKind::WouldBlock.into())),
            Err(e) => return TlsFile::Wrote(Err(e)),
        }
        let Some((file, disk)) = self.file.as_ref().map(|f| (f.file.clone(), f.disk)) else {
            return TlsFile::Wrote(Err(io::Error::other("no file")));
        };
        if ctx.scratch.len() < ENCRYPT_CHUNK {
            ctx.scratch = vec![0; ENCRYPT_CHUNK];
        }
        let count = remaining.min(ENCRYPT_CHUNK as u64) as usize;
        let read = if ctx.defer_opens {
            match socket::pread_nowait(file.as_raw_fd(), &mut ctx.scratch[..count], offset) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EOPNOTSUPP)) => {
                    return TlsFile::Read(FileRead {
                        fd: file.as_raw_fd(),
                        offset,
                        len: count as u32,
                        disk,
                    });
                }
                other => other,
            }
        } else {
            let _blocked = ctx.shared.metrics.enter_disk(ctx.index, disk);
            loop {
                match file.read_at(&mut ctx.scratch[..count], offset) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other,
                }
            }
        };
        let n = match read {
            Ok(0) => return TlsFile::Wrote(Ok(0)),
            Ok(n) => n,
            Err(e) => return TlsFile::Wrote(Err(e)),
        };
        let scratch = std::mem::take(&mut ctx.scratch);
        let r = self.tls_write(&scratch[..n]);
        ctx.scratch = scratch;
        TlsFile::Wrote(r)
    }

    /// The engine read `data` for a [`Next::ReadFile`]: encrypted and sent like bytes read here
    /// (after whatever ciphertext is still waiting for the socket).
    pub fn on_file_read(&mut self, data: &[u8], ctx: &mut WorkerCtx) -> Next {
        self.reading_file = false;
        if data.is_empty() {
            tracing::warn!("file shorter than when opened; closing connection");
            ctx.stats().truncated();
            return Next::Close;
        }
        let Transport::User(session) = &mut self.transport else {
            return Next::Close;
        };
        if session.encrypt(data).is_err() || self.flush_tls().is_err() {
            return Next::Close;
        }
        if !self.advance(data.len() as u64, ctx) {
            return Next::Close;
        }
        self.flush_and_continue(ctx)
    }

    /// The O_DIRECT twin of the file the response is sending, when it has one open.
    pub fn direct_file(&self) -> Option<Rc<crate::open_files::Direct>> {
        self.file.as_ref().map(|f| f.direct.clone())
    }

    /// Counts bytes sent to the client, and on TLS connections by where they were encrypted.
    fn count_sent(&self, n: u64, ctx: &WorkerCtx) {
        ctx.stats().sent(n);
        if self.fill {
            ctx.stats().fill_sent(n);
        }
        match self.transport {
            Transport::User(_) => ctx.stats().tls_sent(TlsMode::User, n),
            Transport::Kernel(_) => ctx.stats().tls_sent(TlsMode::Kernel, n),
            Transport::Plain => {}
        }
    }

    /// Tells a TLS peer the connection is ending (best effort).
    fn close_notify(&mut self) {
        let queued = match &mut self.transport {
            Transport::User(session) => !session.handshaking() && session.close_notify().is_ok(),
            Transport::Kernel(_) => {
                ktls::send_close_notify(self.sock.as_fd());
                false
            }
            Transport::Plain => false,
        };
        if queued {
            let _ = self.flush_tls();
        }
    }
}

/// Whether the first bytes on the TLS port are an HTTP request line rather than a ClientHello
/// (whose first byte is 0x16).
fn looks_like_http(data: &[u8]) -> bool {
    const METHODS: [&[u8]; 8] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
    ];
    METHODS
        .iter()
        .any(|m| data.len() >= 4 && m.starts_with(&data[..data.len().min(m.len())]))
}
