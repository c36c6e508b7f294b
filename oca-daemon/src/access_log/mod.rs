//! The access log: one line per response (`line` says its format), written off the workers'
//! threads.
//!
//! # Where lines go
//! `--access-log PATH` appends to a file (created 0640), `--access-log journal` sends each line
//! to journald (`SYSLOG_IDENTIFIER=oca-access`, so `journalctl -t oca-access`), `-` writes to
//! standard error; off by default (docs/operations.md, "Access log", says why).
//!
//! # The hot path never waits for it
//! A worker formats a line into its own buffer, under a lock only the writer thread ever
//! contends for (once per flush, to swap the buffer for an empty one). The writer thread wakes
//! every [`FLUSH_EVERY`] and writes what the workers buffered. A worker whose buffer is full
//! (the disk or journald is slower than the traffic) drops the line and counts it
//! (`oca_access_log_dropped_total{reason="buffer_full"}`) rather than stall every connection it
//! serves; a write that fails drops the batch (`reason="write_error"`) and is logged once a
//! minute.
//!
//! # Rotation
//! `SIGUSR1` reopens the file at the same path (logrotate renames it, then signals: see
//! `packaging/logrotate`), as nginx does. Lines buffered before the signal may land in either
//! file, none is lost.
//!
//! # Sampling
//! `--access-log-sample N` logs one in N of the responses below 400 on each worker; every
//! response of 400 and above is logged, so errors are never sampled away.

mod line;
mod writer;

pub use line::{BodySources, Outcome, Pending};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use line::LogClock;

/// How often the writer thread writes what the workers buffered.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Bytes of lines all workers together may hold between two flushes; past a worker's share,
/// lines are dropped and counted. 16 MiB is about 60,000 lines: 600,000 lines/s at
/// [`FLUSH_EVERY`].
const BUFFER_BUDGET: usize = 16 << 20;

/// A worker's share of [`BUFFER_BUDGET`] is never below this.
const MIN_WORKER_BUFFER: usize = 256 << 10;

/// Where the lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Appended to this file.
    File(PathBuf),
    /// To journald's native socket.
    Journal,
    /// To standard error.
    Stderr,
}

impl Target {
    /// The target named by a flag or the file: a path, `journal`, `-` (standard error).
    pub fn parse(s: &str) -> Option<Target> {
        match s {
            "" | "off" => None,
            "journal" => Some(Target::Journal),
            "-" | "stderr" => Some(Target::Stderr),
            path => Some(Target::File(PathBuf::from(path))),
        }
    }

    /// How the configuration names it.
    pub fn shown(&self) -> String {
        match self {
            Target::File(p) => p.display().to_string(),
            Target::Journal => "journal".into(),
            Target::Stderr => "-".into(),
        }
    }
}

/// Why a line was not written.
#[derive(Clone, Copy, Debug)]
pub enum Dropped {
    /// The worker's buffer was full.
    BufferFull = 0,
    /// Writing it failed.
    WriteError = 1,
}

impl Dropped {
    /// Label values, indexed by the enum.
    pub const NAMES: [&'static str; 2] = ["buffer_full", "write_error"];
}

/// One worker's lines, waiting for the writer thread.
#[derive(Debug, Default)]
struct Lines {
    buf: Vec<u8>,
    clock: LogClock,
}

/// One worker's buffer, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(Mutex<Lines>);

/// The access log shared by the workers, the writer thread and the metrics.
#[derive(Debug)]
pub struct AccessLog {
    target: Target,
    sample: u32,
    slots: Box<[Slot]>,
    cap: usize,
    written: AtomicU64,
    dropped: [AtomicU64; 2],
    reopen: AtomicBool,
    stop: AtomicBool,
    writer: Mutex<Option<(std::thread::Thread, mpsc::Receiver<()>)>>,
}

impl AccessLog {
    /// Opens `target` (an error here is the configuration's) and starts the writer thread, for
    /// `workers` workers logging one in `sample` successful responses.
    pub fn start(target: Target, sample: u32, workers: usize) -> std::io::Result<Arc<AccessLog>> {
        let out = writer::Output::open(&target)?;
        let log = Arc::new(AccessLog {
            target,
            sample: sample.max(1),
            slots: (0..workers.max(1)).map(|_| Slot::default()).collect(),
            cap: (BUFFER_BUDGET / workers.max(1)).max(MIN_WORKER_BUFFER),
            written: AtomicU64::new(0),
            dropped: Default::default(),
            reopen: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: Mutex::new(None),
        });
        let (done_tx, done_rx) = mpsc::channel();
        let thread = {
            let log = log.clone();
            std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || {
                    writer::run(&log, out);
                    let _ = done_tx.send(());
                })?
        };
        *lock(&log.writer) = Some((thread.thread().clone(), done_rx));
        Ok(log)
    }

    /// Where the lines go.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Whether a worker's `seq`-th response below 400 is logged.
    pub fn sampled(&self, seq: u32) -> bool {
        seq.is_multiple_of(self.sample)
    }

    /// Logs a response that ended on worker `worker` (or drops the line if its buffer is full).
    pub fn record(&self, worker: usize, peer: Option<SocketAddr>, p: &Pending, o: &Outcome) {
        let Some(slot) = self.slots.get(worker) else {
            return;
        };
        let mut lines = lock(&slot.0);
        if lines.buf.len() >= self.cap {
            self.dropped[Dropped::BufferFull as usize].fetch_add(1, Relaxed);
            return;
        }
        let Lines { buf, clock } = &mut *lines;
        line::write_line(buf, clock, SystemTime::now(), peer, p, o);
    }

    /// `SIGUSR1`: the file is reopened at its path before the next write.
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
        self.wake();
    }

    /// Writes what is buffered and stops the writer thread, waiting at most `within`.
    pub fn close(&self, within: Duration) {
        self.stop.store(true, Relaxed);
        self.wake();
        if let Some((_, done)) = lock(&self.writer).as_ref() {
            if done.recv_timeout(within).is_err() {
                tracing::warn!("the access log's last lines were not written in time");
            }
        }
    }

    /// Lines written.
    pub fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }

    /// Lines dropped, by [`Dropped`].
    pub fn dropped(&self) -> [u64; 2] {
        self.dropped.each_ref().map(|d| d.load(Relaxed))
    }

    fn wake(&self) {
        if let Some((t, _)) = lock(&self.writer).as_ref() {
            t.unpark();
        }
    }
}

/// A poisoned lock here means a panic while formatting a line: the buffer is still bytes.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
