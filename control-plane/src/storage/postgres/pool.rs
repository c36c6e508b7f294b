//! The engine's connections: a few OS threads, each owning one blocking `postgres::Client`,
//! fed closures over a bounded channel.
//!
//! # Why threads of our own
//! The storage traits are synchronous, and many admin handlers call them directly on tokio
//! workers. The blocking `postgres` client drives tokio-postgres on a runtime of its own and
//! panics when called on a tokio worker ("Cannot start a runtime from within a runtime",
//! rust-postgres #639, #1058). On a thread of ours, which is no runtime's, it is legal; the
//! caller only blocks on a std channel, which is legal anywhere (a SQLite call blocks the same
//! way). The area code keeps the shape of the rusqlite code: transactions, prepared statements,
//! `COPY`, one closure per storage call.
//!
//! # Deadlines and broken connections
//! Every call has a deadline: the server cancels a statement after `statement_timeout`, and the
//! caller stops waiting a little after that ([`Pool::call`] fails with a clear error; the
//! thread finishes or fails the statement on its own). A connection found closed is dropped
//! after the call that saw it, and the next call on that thread connects again, within
//! `connect_timeout`; a connection idle for a few seconds is checked with a round trip before
//! use, so a server restarted meanwhile costs no failed call. A server that is down costs each
//! call one bounded connection attempt, never a hang.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use postgres::{Client, NoTls};

use crate::storage::{Result, StorageError};

/// How long one statement may run on the server before it is cancelled.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long connecting (TCP, TLS, authentication) may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Calls waiting for a thread at most; a caller finding the queue full waits for room within its
/// deadline.
const QUEUE: usize = 1024;

/// A storage call as a thread runs it.
type Job = Box<dyn FnOnce(&mut Conn) + Send>;

/// How the threads connect.
#[derive(Clone)]
pub(super) struct Connector {
    /// The server, database and credentials.
    pub config: postgres::Config,
    /// TLS to the server when `sslmode` asks for it.
    pub tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    /// This replica's id (hex), set on each session as `oca.replica`: the change feed's
    /// triggers tag rows with it.
    pub replica: String,
}

impl Connector {
    /// A new session, with this engine's settings.
    pub fn connect(&self) -> Result<Client> {
        let mut client = match &self.tls {
            Some(tls) => self.config.connect(tls.clone()),
            None => self.config.connect(NoTls),
        }?;
        debug_assert!(self.replica.bytes().all(|b| b.is_ascii_hexdigit()));
        client.batch_execute(&format!(
            "SET statement_timeout = {}; SET idle_in_transaction_session_timeout = {};
             SET oca.replica = '{}'",
            STATEMENT_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis() * 2,
            self.replica
        ))?;
        Ok(client)
    }
}

/// A connection idle longer than this is checked with a round trip before it is used: the
/// blocking client only learns that the server closed it (a restart, a failover,
/// `pg_terminate_backend`) when it next talks, and the call that learned it would fail.
pub(super) const CHECK_AFTER_IDLE: Duration = Duration::from_secs(5);

/// How long that check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One thread's connection, opened on first use and again after it broke.
pub(super) struct Conn {
    connector: Arc<Connector>,
    client: Option<Client>,
    /// When the connection last answered.
    used: Instant,
}

impl Conn {
    /// The open session, connecting first when there is none (or the idle one is gone).
    fn client(&mut self) -> Result<&mut Client> {
        let idle = self.used.elapsed() > CHECK_AFTER_IDLE;
        if let Some(c) = self.client.as_mut() {
            if c.is_closed() || (idle && c.is_valid(CHECK_TIMEOUT).is_err()) {
                self.client = None;
            }
        }
        if self.client.is_none() {
            self.client = Some(self.connector.connect()?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Forgets a session the server or the network closed; notes when it last answered.
    fn check(&mut self) {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        self.used = Instant::now();
    }
}

/// The threads and the queue feeding them.
pub(super) struct Pool {
    jobs: SyncSender<Job>,
    /// How long a caller waits for its answer.
    deadline: Duration,
}

impl Pool {
    /// Starts `size` threads connecting with `connector` (each when first used).
    pub fn start(connector: Connector, size: usize) -> std::io::Result<Pool> {
        let (jobs, queue) = sync_channel::<Job>(QUEUE);
        let queue = Arc::new(Mutex::new(queue));
        let connector = Arc::new(connector);
        for i in 0..size.max(1) {
            let queue = queue.clone();
            let mut conn = Conn {
                connector: connector.clone(),
                client: None,
                used: Instant::now(),
            };
            std::thread::Builder::new()
                .name(format!("pg-{i}"))
                .spawn(move || worker(&queue, &mut conn))?;
        }
        Ok(Pool {
            jobs,
            deadline: CONNECT_TIMEOUT + STATEMENT_TIMEOUT + Duration::from_secs(5),
        })
    }

    /// Runs `f` on a thread's connection and returns its result, or an error once the deadline
    /// passed: `statements` (the statement timeout `f` runs under) plus connecting and a margin.
    pub fn call<T, F>(&self, statements: Duration, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Client) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = sync_channel(1);
        let job: Job = Box::new(move |conn: &mut Conn| {
            let out = conn.client().and_then(f);
            // The caller may have given up waiting; nothing to do then.
            let _ = tx.send(out);
        });
        let until = Instant::now() + self.deadline + statements.saturating_sub(STATEMENT_TIMEOUT);
        self.submit(job, until)?;
        answer(&rx, until)?
    }

    /// Runs `f`, which sends what it reads in batches, handing each batch to `each` as it comes;
    /// the channel holds two batches at most, so a large result is never all in memory.
    pub fn stream<R, F>(&self, f: F, each: &mut dyn FnMut(Vec<R>)) -> Result<()>
    where
        R: Send + 'static,
        F: FnOnce(&mut Client, &SyncSender<Batch<R>>) -> Result<()> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<Batch<R>>(2);
        let job: Job = Box::new(move |conn: &mut Conn| {
            let out = conn.client().and_then(|c| f(c, &tx));
            let _ = tx.send(Batch::Done(out));
        });
        let mut until = Instant::now() + self.deadline;
        self.submit(job, until)?;
        loop {
            match answer(&rx, until)? {
                Batch::Rows(rows) => {
                    each(rows);
                    // Each batch renews the deadline: a long stream is fine while it moves.
                    until = Instant::now() + self.deadline;
                }
                Batch::Done(out) => return out,
            }
        }
    }

    fn submit(&self, mut job: Job, until: Instant) -> Result<()> {
        loop {
            match self.jobs.try_send(job) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) if Instant::now() < until => {
                    job = back;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TrySendError::Full(_)) => {
                    return Err(engine(
                        "PostgreSQL: every connection busy past the deadline",
                    ))
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(engine("PostgreSQL: the engine's threads are gone"))
                }
            }
        }
    }
}

/// What a streaming call sends: rows, then its outcome.
pub(super) enum Batch<R> {
    /// Some rows.
    Rows(Vec<R>),
    /// The end, or the failure that ended it.
    Done(Result<()>),
}

fn answer<M>(rx: &Receiver<M>, until: Instant) -> Result<M> {
    let left = until.saturating_duration_since(Instant::now());
    rx.recv_timeout(left).map_err(|e| match e {
        RecvTimeoutError::Timeout => engine(&format!(
            "PostgreSQL did not answer within {} s",
            (left.as_secs_f64()).ceil()
        )),
        RecvTimeoutError::Disconnected => engine("PostgreSQL: the call was dropped"),
    })
}

fn worker(queue: &Mutex<Receiver<Job>>, conn: &mut Conn) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = queue.lock().recv();
        let Ok(job) = job else { return };
        // A panic in a call reaches its caller as a dropped call; the thread and its pool
        // slot live on, with a fresh connection (the old one may be mid-transaction).
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(conn))).is_err() {
            conn.client = None;
        }
        conn.check();
    }
}

/// An engine error with a message of ours.
pub(super) fn engine(msg: &str) -> StorageError {
    StorageError::Engine(msg.to_string().into())
}
