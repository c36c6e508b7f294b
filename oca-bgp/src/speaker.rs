//! The speaker: every neighbour's session driven over real sockets, in the caller's tokio
//! runtime, behind one handle.
//!
//! # Use
//!
//! ```no_run
//! # async fn f(text: &str) -> Result<(), Box<dyn std::error::Error>> {
//! let config = oca_bgp::Config::from_toml(text)?;
//! let bgp = oca_bgp::Speaker::start(config).await?;   // listens, dials
//! let now = bgp.snapshot();                           // sessions and accepted routes
//! bgp.route_refresh("10.250.0.1".parse()?)?;          // "soft reset in"
//! bgp.shutdown().await;                               // Cease/2 to every neighbour
//! # Ok(()) }
//! ```
//!
//! # Tasks
//!
//! One task per listening address accepts connections and hands each to its neighbour's task by
//! source address; a connection from anyone else is closed at once, before a byte is read. One
//! task per neighbour owns its [`Session`] (behind a mutex, so that [`SpeakerHandle::snapshot`]
//! reads it without waiting on the task), its dial in progress and its connections, and loops:
//! carry out the session's actions, then wait for whichever comes first of the session's next
//! deadline, a handed-over connection, the dial, bytes on a connection, or a nudge from the
//! handle. Each connection has a writer task fed through a bounded queue, so a router that
//! stops reading cannot stall the session; a full queue or a failed write closes that
//! connection.
//!
//! # Bounds
//!
//! Reads are at most [`READ_CHUNK`] bytes and the session keeps less than one message beyond
//! them; a session has at most two connections and one dial; each write and each final flush
//! has a deadline; a neighbour task waits at most [`SHUTDOWN_GRACE`] for its writers on the
//! way out.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError, Neighbor};
use crate::rib::AcceptedRoute;
use crate::session::{Action, ConnId, Counters, Negotiated, RefreshError, Session, SessionState};
use crate::transport::{self, Auth, KernelSupport};

/// Largest single read from a connection.
pub const READ_CHUNK: usize = 16 * 1024;
/// Messages queued for one connection's writer before it counts as stuck.
const WRITE_QUEUE: usize = 64;
/// Longest one write may block before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a closing connection may take to flush its last messages.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a stopping neighbour task waits for its writers.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);

/// Why the speaker could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listening address could not be bound.
    #[error("BGP listener on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
}

/// Why a command to a neighbour failed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum CommandError {
    /// No such neighbour is configured.
    #[error("no BGP neighbour {0}")]
    UnknownNeighbor(IpAddr),
    /// The session cannot do it now.
    #[error("BGP neighbour {0}: {1}")]
    Refresh(IpAddr, RefreshError),
}

/// Everything the speaker knows, at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct BgpSnapshot {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// One per configured neighbour, in configuration order.
    pub sessions: Vec<SessionSnapshot>,
}

/// One session, at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct SessionSnapshot {
    /// The neighbour's address.
    pub neighbor: IpAddr,
    /// Its AS.
    pub peer_as: u32,
    /// RFC 4271 state.
    pub state: SessionState,
    /// Unix time (seconds) the state last changed.
    pub state_since_unix: u64,
    /// Routes received and held, accepted or not.
    pub prefixes_received: usize,
    /// Routes the import filter accepted.
    pub prefixes_accepted: usize,
    /// Routes kept stale through the neighbour's graceful restart.
    pub stale: usize,
    /// Times the session went down from Established.
    pub flaps: u64,
    /// Why it last went down or failed to come up; kept once it is back up, as routers show it.
    pub last_error: Option<String>,
    /// What the Established session negotiated.
    pub negotiated: Option<Negotiated>,
    /// While stale routes wait for the neighbour: seconds until they are dropped.
    pub graceful_restart_remaining_secs: Option<u64>,
    /// Counts over the session's life.
    pub counters: Counters,
    /// The accepted routes, in prefix order.
    pub routes: Vec<AcceptedRoute>,
}

/// Starts the speaker.
pub struct Speaker;

impl Speaker {
    /// Validates `config`, probes the kernel for TCP-MD5 and TCP-AO, binds the listeners and
    /// starts every session. Call it inside a tokio runtime with the time and net drivers.
    pub async fn start(config: Config) -> Result<SpeakerHandle, StartError> {
        config.validate()?;
        let kernel = transport::probe();
        tracing::info!(md5 = ?kernel.md5, tcp_ao = ?kernel.tcp_ao, "TCP authentication support");
        let now = Instant::now();
        let mut peers = Vec::new();
        let mut routes = HashMap::new();
        for (i, n) in config.neighbors.iter().enumerate() {
            let (peer, inbox) = Peer::new(&config, n, &kernel, seed(i), now);
            routes.insert(n.address, inbox);
            peers.push(peer);
        }
        let listeners = start_listeners(&config, &kernel, Arc::new(routes))?;
        let peers = peers.into_iter().map(Peer::spawn).collect();
        Ok(SpeakerHandle {
            local_as: config.local_as,
            router_id: config.router_id,
            peers,
            listeners,
        })
    }
}

/// The running speaker. Dropping it aborts every task at once (no Cease); call
/// [`SpeakerHandle::shutdown`] to say goodbye properly.
pub struct SpeakerHandle {
    local_as: u32,
    router_id: Ipv4Addr,
    peers: Vec<PeerHandle>,
    listeners: Vec<JoinHandle<()>>,
}

struct PeerHandle {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// What a neighbour's task shares with the handle.
struct Shared {
    addr: IpAddr,
    session: Mutex<Session>,
    nudge: Notify,
    stopping: AtomicBool,
}

impl Shared {
    fn session(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock leaves a session that is still consistent enough to
        // report; refusing to report would help nobody.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SpeakerHandle {
    /// Every session and its accepted routes, now.
    pub fn snapshot(&self) -> BgpSnapshot {
        BgpSnapshot {
            local_as: self.local_as,
            router_id: self.router_id,
            sessions: self
                .peers
                .iter()
                .map(|p| session_snapshot(&p.shared.session()))
                .collect(),
        }
    }

    /// Asks `neighbor` to send its routes again (ROUTE-REFRESH, RFC 2918).
    pub fn route_refresh(&self, neighbor: IpAddr) -> Result<(), CommandError> {
        let p = self
            .peers
            .iter()
            .find(|p| p.shared.addr == neighbor)
            .ok_or(CommandError::UnknownNeighbor(neighbor))?;
        p.shared
            .session()
            .route_refresh()
            .map_err(|e| CommandError::Refresh(neighbor, e))?;
        p.shared.nudge.notify_one();
        Ok(())
    }

    /// Sends Cease/2 (Administrative Shutdown) to every neighbour, closes everything and waits
    /// (at most [`SHUTDOWN_GRACE`] or so) for it to be sent.
    pub async fn shutdown(mut self) {
        for l in &self.listeners {
            l.abort();
        }
        for p in &self.peers {
            p.shared.stopping.store(true, Ordering::SeqCst);
            p.shared.session().stop(Instant::now());
            p.shared.nudge.notify_one();
        }
        let tasks: Vec<JoinHandle<()>> = self
            .peers
            .iter_mut()
            .filter_map(|p| p.task.take())
            .collect();
        let all = async {
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), all)
            .await
            .is_err()
        {
            tracing::warn!("BGP shutdown: some sessions did not finish in time");
        }
    }
}

impl Drop for SpeakerHandle {
    fn drop(&mut self) {
        for l in &self.listeners {
            l.abort();
        }
        for p in &self.peers {
            if let Some(t) = &p.task {
                t.abort();
            }
        }
    }
}

fn session_snapshot(s: &Session) -> SessionSnapshot {
    let now = Instant::now();
    let unix_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let since = unix_now.saturating_sub(now.saturating_duration_since(s.state_since()));
    let cfg = s.config();
    SessionSnapshot {
        neighbor: cfg.peer_addr,
        peer_as: cfg.peer_as,
        state: s.state(),
        state_since_unix: since.as_secs(),
        prefixes_received: s.rib().received(),
        prefixes_accepted: s.rib().accepted(),
        stale: s.rib().stale(),
        flaps: s.flaps(),
        last_error: s.last_error().map(str::to_string),
        negotiated: s.negotiated().cloned(),
        graceful_restart_remaining_secs: s
            .restart_deadline()
            .map(|d| d.saturating_duration_since(now).as_secs()),
        counters: s.counters(),
        routes: s.rib().accepted_routes().collect(),
    }
}

/// Spreads the neighbours' retry jitter apart.
fn seed(i: usize) -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    t ^ ((i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

// ---- listening ----

type Inbox = mpsc::Sender<TcpStream>;

fn start_listeners(
    config: &Config,
    kernel: &KernelSupport,
    routes: Arc<HashMap<IpAddr, Inbox>>,
) -> Result<Vec<JoinHandle<()>>, StartError> {
    let keys: Vec<(IpAddr, Auth<'_>)> = config
        .neighbors
        .iter()
        .filter_map(|n| usable_auth(n, kernel).ok().map(|a| (n.address, a)))
        .collect();
    let mut tasks = Vec::new();
    for ip in &config.listen_addresses {
        let addr = SocketAddr::new(*ip, config.listen_port);
        let l =
            transport::listen(addr, &keys).map_err(|source| StartError::Listen { addr, source })?;
        tracing::info!(%addr, "BGP listening");
        tasks.push(tokio::spawn(accept_loop(l, routes.clone())));
    }
    Ok(tasks)
}

async fn accept_loop(l: tokio::net::TcpListener, routes: Arc<HashMap<IpAddr, Inbox>>) {
    loop {
        let (stream, from) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "BGP accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let from = from.ip().to_canonical();
        match routes.get(&from) {
            Some(inbox) => {
                if inbox.try_send(stream).is_err() {
                    tracing::debug!(%from, "BGP connection dropped: neighbour busy");
                }
            }
            None => tracing::info!(%from, "BGP connection from a non-neighbour closed"),
        }
    }
}

/// The neighbour's signing, unless it needs what the kernel lacks.
fn usable_auth<'a>(n: &'a Neighbor, kernel: &KernelSupport) -> Result<Auth<'a>, String> {
    if let Some(p) = &n.md5_password {
        kernel
            .md5
            .clone()
            .map_err(|e| format!("TCP-MD5 unsupported by the kernel: {e}"))?;
        return Ok(Auth::Md5(p.as_bytes()));
    }
    if let Some(ao) = &n.tcp_ao {
        kernel
            .tcp_ao
            .clone()
            .map_err(|e| format!("TCP-AO unsupported by the kernel: {e}"))?;
        return Ok(Auth::Ao(ao));
    }
    Ok(Auth::None)
}

// ---- one neighbour ----

/// A neighbour's task state before it is spawned.
struct Peer {
    shared: Arc<Shared>,
    neighbor: Neighbor,
    inbox: mpsc::Receiver<TcpStream>,
}

impl Peer {
    fn new(
        config: &Config,
        n: &Neighbor,
        kernel: &KernelSupport,
        seed: u64,
        now: Instant,
    ) -> (Peer, Inbox) {
        let mut session = Session::new(config.session_config(n), seed, now);
        match usable_auth(n, kernel) {
            Ok(_) => session.start(now),
            Err(reason) => session.disable(reason, now),
        }
        let (tx, inbox) = mpsc::channel(2);
        let shared = Arc::new(Shared {
            addr: n.address,
            session: Mutex::new(session),
            nudge: Notify::new(),
            stopping: AtomicBool::new(false),
        });
        let peer = Peer {
            shared,
            neighbor: n.clone(),
            inbox,
        };
        (peer, tx)
    }

    fn spawn(self) -> PeerHandle {
        let shared = self.shared.clone();
        let task = tokio::spawn(
            Driver {
                shared: self.shared,
                neighbor: self.neighbor,
                inbox: self.inbox,
                inbox_open: true,
                slots: [None, None, None],
                dial: None,
                writers: Vec::new(),
                dead: mpsc::channel(8),
            }
            .run(),
        );
        PeerHandle {
            shared,
            task: Some(task),
        }
    }
}

type Dial = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// One live connection as the driver holds it.
struct Link {
    id: ConnId,
    read: OwnedReadHalf,
    buf: Box<[u8]>,
    out: mpsc::Sender<Vec<u8>>,
}

/// The neighbour's task.
struct Driver {
    shared: Arc<Shared>,
    neighbor: Neighbor,
    inbox: mpsc::Receiver<TcpStream>,
    inbox_open: bool,
    /// A session's two connections, and one it is replacing whose close is still queued (the
    /// session opens the new one before the driver carries out the old one's close).
    slots: [Option<Link>; 3],
    dial: Option<(ConnId, Dial)>,
    writers: Vec<JoinHandle<()>>,
    /// Writers report here when their connection broke.
    dead: (mpsc::Sender<ConnId>, mpsc::Receiver<ConnId>),
}

/// What woke the driver.
enum Wake {
    Timer,
    Nudge,
    Accepted(Option<TcpStream>),
    Dialled(io::Result<TcpStream>),
    Read(usize, io::Result<usize>),
    Dead(Option<ConnId>),
}

impl Driver {
    async fn run(mut self) {
        loop {
            self.carry_out();
            if self.shared.stopping.load(Ordering::SeqCst)
                && self.slots.iter().all(Option::is_none)
                && self.dial.is_none()
            {
                break;
            }
            let wake = self.wait().await;
            self.react(wake);
        }
        self.inbox.close();
        let writers = std::mem::take(&mut self.writers);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            for w in writers {
                let _ = w.await;
            }
        })
        .await;
    }

    async fn wait(&mut self) -> Wake {
        let deadline = self.shared.session().next_deadline();
        let Driver {
            shared,
            inbox,
            inbox_open,
            slots: [a, b, c],
            dial,
            dead,
            ..
        } = self;
        tokio::select! {
            () = sleep_until(deadline) => Wake::Timer,
            () = shared.nudge.notified() => Wake::Nudge,
            s = inbox.recv(), if *inbox_open => Wake::Accepted(s),
            r = dialling(dial) => Wake::Dialled(r),
            r = read(a) => Wake::Read(0, r),
            r = read(b) => Wake::Read(1, r),
            r = read(c) => Wake::Read(2, r),
            id = dead.1.recv() => Wake::Dead(id),
        }
    }

    fn react(&mut self, wake: Wake) {
        let now = Instant::now();
        match wake {
            Wake::Timer => self.shared.session().on_timer(now),
            Wake::Nudge | Wake::Dead(None) => {}
            // No listener (any more): stop asking.
            Wake::Accepted(None) => self.inbox_open = false,
            Wake::Accepted(Some(stream)) => self.accepted(stream, now),
            Wake::Dialled(r) => self.dialled(r, now),
            Wake::Read(slot, r) => self.read_done(slot, r, now),
            Wake::Dead(Some(id)) => self.shared.session().closed(id, now),
        }
    }

    fn accepted(&mut self, stream: TcpStream, now: Instant) {
        let id = self.shared.session().accept(now);
        match id {
            Some(id) => {
                self.attach(id, stream, now);
            }
            None => {
                tracing::debug!(neighbor = %self.shared.addr, "connection refused in this state")
            }
        }
    }

    fn dialled(&mut self, r: io::Result<TcpStream>, now: Instant) {
        let Some((id, _)) = self.dial.take() else {
            return;
        };
        match r {
            Ok(stream) => {
                // Attach first: the session's first action for it is our OPEN.
                if self.attach(id, stream, now) {
                    self.shared.session().connected(id, now);
                } else {
                    self.shared
                        .session()
                        .connect_failed(id, "no free slot", now);
                }
            }
            Err(e) => self
                .shared
                .session()
                .connect_failed(id, &e.to_string(), now),
        }
    }

    fn read_done(&mut self, slot: usize, r: io::Result<usize>, now: Instant) {
        let Some(link) = &self.slots[slot] else {
            return;
        };
        let id = link.id;
        match r {
            Ok(0) | Err(_) => self.shared.session().closed(id, now),
            Ok(n) => self.shared.session().received(id, &link.buf[..n], now),
        }
    }

    /// Gives connection `id` a slot and a writer; whether it could.
    fn attach(&mut self, id: ConnId, stream: TcpStream, now: Instant) -> bool {
        if let Err(e) = transport::tune(&stream) {
            tracing::debug!(error = %e, "socket options");
        }
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            // The session never has more than the slots hold; this would be our bug, and the
            // session must not go on believing in a connection that has no socket.
            tracing::error!(neighbor = %self.shared.addr, "no free connection slot");
            self.shared.session().closed(id, now);
            return false;
        };
        let (read, write) = stream.into_split();
        let (out, rx) = mpsc::channel(WRITE_QUEUE);
        let dead = self.dead.0.clone();
        self.writers.retain(|w| !w.is_finished());
        self.writers.push(tokio::spawn(writer(id, write, rx, dead)));
        self.slots[slot] = Some(Link {
            id,
            read,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            out,
        });
        true
    }

    /// Carries out the session's actions, in order.
    fn carry_out(&mut self) {
        loop {
            let action = self.shared.session().poll_action();
            let Some(action) = action else {
                return;
            };
            match action {
                Action::Connect(id) => self.start_dial(id),
                Action::Send(id, bytes) => self.send(id, bytes),
                Action::Close(id) => self.close(id),
            }
        }
    }

    fn start_dial(&mut self, id: ConnId) {
        let n = &self.neighbor;
        let peer = SocketAddr::new(n.address, n.port);
        let local = n.local_address;
        let md5 = n.md5_password.clone();
        let ao = n.tcp_ao.clone();
        let fut = async move {
            let auth = match (&md5, &ao) {
                (Some(p), _) => Auth::Md5(p.as_bytes()),
                (None, Some(a)) => Auth::Ao(a),
                _ => Auth::None,
            };
            transport::connect(peer, local, auth).await
        };
        self.dial = Some((id, Box::pin(fut)));
    }

    fn send(&mut self, id: ConnId, bytes: Vec<u8>) {
        let Some(link) = self.slots.iter().flatten().find(|l| l.id == id) else {
            return;
        };
        if link.out.try_send(bytes).is_err() {
            tracing::warn!(neighbor = %self.shared.addr, conn = %id, "neighbour not reading: closing");
            self.shared.session().closed(id, Instant::now());
        }
    }

    fn close(&mut self, id: ConnId) {
        if self.dial.as_ref().is_some_and(|(d, _)| *d == id) {
            self.dial = None;
        }
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(|l| l.id == id) {
                // Dropping the queue's sender lets the writer flush what is queued, then close.
                *slot = None;
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}

async fn dialling(dial: &mut Option<(ConnId, Dial)>) -> io::Result<TcpStream> {
    match dial {
        Some((_, f)) => f.await,
        None => std::future::pending().await,
    }
}

async fn read(slot: &mut Option<Link>) -> io::Result<usize> {
    match slot {
        Some(link) => link.read.read(&mut link.buf).await,
        None => std::future::pending().await,
    }
}

/// Writes a connection's messages in order; when the queue closes, flushes and shuts down.
async fn writer(
    id: ConnId,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    dead: mpsc::Sender<ConnId>,
) {
    while let Some(bytes) = rx.recv().await {
        let ok = tokio::time::timeout(WRITE_TIMEOUT, w.write_all(&bytes)).await;
        if !matches!(ok, Ok(Ok(()))) {
            let _ = dead.try_send(id);
            return;
        }
    }
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, w.shutdown()).await;
}
