//! One neighbour's task: it owns the neighbour's [`Session`] (behind a mutex shared with the
//! handle, so that a snapshot reads it without waiting on the task), its dial in progress and
//! its connections, and carries out what the session asks over real sockets.
//!
//! The task loops: carry out the session's actions in order (dial, send, close), then wait for
//! whichever comes first of the session's next deadline, a connection handed over by a
//! listener, the dial, bytes on a connection, a writer reporting its connection broken, or a
//! nudge from the handle (a route refresh or a stop), and tell the session what happened.
//!
//! Each connection is a read half the task reads (at most [`READ_CHUNK`] bytes at a time) and a
//! writer task fed through a bounded queue of `WRITE_QUEUE` messages, so a router that stops
//! reading cannot stall the session: a full queue or a write taking longer than
//! `WRITE_TIMEOUT` closes that connection. Closing drops the queue's sender; the writer sends
//! what is queued, then shuts the socket down (within `FLUSH_TIMEOUT`). On a stop, the task ends
//! once the session has no connection and no dial left, then waits at most [`SHUTDOWN_GRACE`]
//! for its writers.
//!
//! A neighbour that asks for TCP-MD5 or TCP-AO the kernel lacks is never run unsigned: its
//! session is disabled with the reason as its error ([`usable_auth`]).

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;

use crate::config::{Config, Neighbor};
use crate::session::{Action, ConnId, Session};
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

/// Where a listener hands a neighbour's connections: the sending side of its task's inbox.
pub(super) type Inbox = mpsc::Sender<TcpStream>;

/// The handle's hold on a neighbour's task.
pub(super) struct PeerHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) task: Option<JoinHandle<()>>,
}

/// What a neighbour's task shares with the handle.
pub(super) struct Shared {
    pub(super) addr: IpAddr,
    session: Mutex<Session>,
    pub(super) nudge: Notify,
    pub(super) stopping: AtomicBool,
}

impl Shared {
    pub(super) fn session(&self) -> MutexGuard<'_, Session> {
        // A panic while holding the lock leaves a session that is still consistent enough to
        // report; refusing to report would help nobody.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The neighbour's signing, unless it needs what the kernel lacks.
pub(super) fn usable_auth<'a>(n: &'a Neighbor, kernel: &KernelSupport) -> Result<Auth<'a>, String> {
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

/// A neighbour's task state before it is spawned.
pub(super) struct Peer {
    shared: Arc<Shared>,
    neighbor: Neighbor,
    inbox: mpsc::Receiver<TcpStream>,
}

impl Peer {
    pub(super) fn new(
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

    pub(super) fn spawn(self) -> PeerHandle {
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
