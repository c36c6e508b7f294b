//! The access log's writer thread: every [`FLUSH_EVERY`](super::FLUSH_EVERY) it takes each
//! worker's buffered lines (swapping in an empty buffer) and writes them to the target.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::{lock, AccessLog, Dropped, Target, FLUSH_EVERY};

/// journald's socket for its native protocol.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// How long one write to journald may block the writer thread (never a worker).
const JOURNAL_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A failed write is logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// An open target.
pub(super) enum Output {
    File { path: PathBuf, file: File },
    Journal(UnixDatagram),
    Stderr,
}

impl Output {
    /// Opens `target`: creates the file (0640) or connects to journald.
    pub(super) fn open(target: &Target) -> io::Result<Output> {
        match target {
            Target::File(path) => Ok(Output::File {
                path: path.clone(),
                file: open_file(path)?,
            }),
            Target::Journal => journal().map(Output::Journal),
            Target::Stderr => Ok(Output::Stderr),
        }
    }

    /// Reopens the file at its path (after a rotation), or reconnects to journald.
    fn reopen(&mut self) -> io::Result<()> {
        match self {
            Output::File { path, file } => *file = open_file(path)?,
            Output::Journal(sock) => *sock = journal()?,
            Output::Stderr => {}
        }
        Ok(())
    }

    /// Writes a batch of whole lines.
    fn write(&mut self, batch: &[u8]) -> io::Result<()> {
        match self {
            Output::File { file, .. } => file.write_all(batch),
            Output::Stderr => io::stderr().lock().write_all(batch),
            Output::Journal(sock) => {
                let mut msg = Vec::with_capacity(512);
                for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                    // Native protocol: one datagram per entry, one `FIELD=value` per line (the
                    // line is escaped printable ASCII, so it holds no newline).
                    msg.clear();
                    msg.extend_from_slice(b"SYSLOG_IDENTIFIER=oca-access\nPRIORITY=6\nMESSAGE=");
                    msg.extend_from_slice(line);
                    msg.push(b'\n');
                    sock.send(&msg)?;
                }
                Ok(())
            }
        }
    }
}

fn open_file(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

fn journal() -> io::Result<UnixDatagram> {
    let sock = UnixDatagram::unbound()?;
    sock.connect(JOURNAL_SOCKET)?;
    sock.set_write_timeout(Some(JOURNAL_SEND_TIMEOUT))?;
    Ok(sock)
}

/// The writer thread's loop, until [`AccessLog::close`]; what is buffered when it is asked to
/// stop is written first.
pub(super) fn run(log: &AccessLog, mut out: Output) {
    let mut batch = Vec::new();
    let mut warned: Option<Instant> = None;
    loop {
        let stopping = log.stop.load(Relaxed);
        if log.reopen.swap(false, Relaxed) {
            match out.reopen() {
                Ok(()) => tracing::info!(target = %log.target.shown(), "access log reopened"),
                Err(e) => {
                    tracing::warn!(target = %log.target.shown(), error = %e, "reopening the access log failed; writing on to the one open")
                }
            }
        }
        for slot in log.slots.iter() {
            std::mem::swap(&mut lock(&slot.0).buf, &mut batch);
            if batch.is_empty() {
                continue;
            }
            let lines = batch.iter().filter(|&&b| b == b'\n').count() as u64;
            match out.write(&batch) {
                Ok(()) => {
                    log.written.fetch_add(lines, Relaxed);
                }
                Err(e) => {
                    log.dropped[Dropped::WriteError as usize].fetch_add(lines, Relaxed);
                    if warned.is_none_or(|w| w.elapsed() >= WARN_EVERY) {
                        warned = Some(Instant::now());
                        tracing::warn!(target = %log.target.shown(), error = %e, lines, "writing the access log failed; lines dropped");
                    }
                }
            }
            batch.clear();
            // A burst's buffer is not kept for ever.
            if batch.capacity() > 2 * log.cap {
                batch = Vec::new();
            }
        }
        if stopping {
            break;
        }
        std::thread::park_timeout(FLUSH_EVERY);
    }
}
