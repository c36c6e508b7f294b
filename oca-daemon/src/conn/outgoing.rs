//! A response on its way out: the state of the lifecycle's writing phase, and the writer that
//! moves its parts to the socket.
//!
//! The sans-IO handler (`http::serve`) leaves a head and memory parts in [`Buffers`] and says
//! which file the file parts come from; [`Outgoing::write`] then sends part after part, as far
//! as the socket takes them, and stops at the first part the engine must move itself
//! ([`WriteResult::Body`], [`WriteResult::Cold`], [`WriteResult::ReadFile`]) or when the socket
//! is full. The cursor (`seg`, `seg_off`) only moves forward, by bytes the kernel took.
//!
//! Invariant: an `Outgoing` exists only inside `Phase::Writing`, so no file is held, and no
//! response state survives, while the connection reads the next request.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Instant;

use crate::access_log::{BodySources, Outcome, Pending};
use crate::conn::body_path::PartPaths;
use crate::conn::transport::{FileStep, Transport};
use crate::engine::contract::{BodyChunk, ColdChunk, FileRead};
use crate::http::response::Segment;
use crate::http::serve::ServedFile;
use crate::socket;
use crate::worker::WorkerCtx;

/// Largest count handed to one sendfile call; bounds the time one connection holds the worker.
const SENDFILE_CHUNK: usize = 1 << 20;

/// A response's head and memory parts, and the list of its parts: kept by the connection
/// between responses so each response reuses the last one's allocations.
#[derive(Default)]
pub(crate) struct Buffers {
    /// Head and memory-part bytes.
    pub out: Vec<u8>,
    /// The response's parts, in order.
    pub segs: Vec<Segment>,
}

impl Buffers {
    /// Empty, capacity kept.
    pub(crate) fn clear(&mut self) {
        self.out.clear();
        self.segs.clear();
    }
}

/// What the handler decided for a request, as the writing phase needs it.
pub(crate) struct Answer {
    /// Status sent.
    pub status: u16,
    /// Whether the connection stays open after the response.
    pub keep_alive: bool,
    /// The file the file parts come from.
    pub file: Option<ServedFile>,
    /// The request was `fill`-signed (a peer appliance filling).
    pub fill: bool,
    /// What the access log keeps of the request, when it is logged.
    pub access: Option<Pending>,
}

/// A response being written.
pub(crate) struct Outgoing {
    bufs: Buffers,
    answer: Answer,
    /// The part being sent, and how far into it.
    seg: usize,
    seg_off: u64,
    paths: PartPaths,
    /// Bytes sent so far, head included.
    sent: u64,
    /// Where the file parts' bytes came from so far.
    sources: BodySources,
    /// When the request was first answered (latency).
    started: Instant,
    /// A `Next::ReadFile` is with the engine: nothing more is written until its bytes come.
    pub reading_file: bool,
}

/// What a write step came to.
pub(crate) enum WriteResult {
    /// The engine splices these file bytes.
    Body(BodyChunk),
    /// The engine reads these with O_DIRECT and sends them.
    Cold(ColdChunk),
    /// The engine reads these for userspace TLS.
    ReadFile(FileRead),
    /// Every byte is out.
    Done,
    /// The socket is full.
    Blocked,
    /// The connection cannot go on.
    Failed,
}

impl Outgoing {
    /// The response to a request answered at `started`, its bytes in `bufs`.
    pub(crate) fn new(bufs: Buffers, answer: Answer, started: Instant) -> Outgoing {
        Outgoing {
            bufs,
            answer,
            seg: 0,
            seg_off: 0,
            paths: PartPaths::default(),
            sent: 0,
            sources: BodySources::default(),
            started,
            reading_file: false,
        }
    }

    /// The file being sent, if any.
    pub(crate) fn file(&self) -> Option<&ServedFile> {
        self.answer.file.as_ref()
    }

    /// Whether the connection stays open after it.
    pub(crate) fn keep_alive(&self) -> bool {
        self.answer.keep_alive
    }

    /// The connection is to end after this response.
    pub(crate) fn close_after(&mut self) {
        self.answer.keep_alive = false;
    }

    /// Counts `n` bytes of this response sent.
    pub(crate) fn count_sent(&mut self, n: u64, tx: &Transport, ctx: &WorkerCtx) {
        self.sent += n;
        count_sent(n, self.answer.fill, tx, ctx);
    }

    /// The response is done: counts and logs it, and hands its buffers back for the next one.
    pub(crate) fn finish(
        mut self,
        peer: Option<SocketAddr>,
        tx: &Transport,
        ctx: &WorkerCtx,
    ) -> Buffers {
        let latency = self.started.elapsed();
        ctx.stats().response(self.answer.status, latency);
        self.log(peer, tx, ctx, true);
        let mut bufs = self.bufs;
        if bufs.out.capacity() > 16 * 1024 {
            bufs.out = Vec::new();
        }
        bufs
    }

    /// Writes the access-log line (when the request is logged); `complete`: every byte went
    /// out, rather than the connection ending first.
    pub(crate) fn log(
        &mut self,
        peer: Option<SocketAddr>,
        tx: &Transport,
        ctx: &WorkerCtx,
        complete: bool,
    ) {
        let (Some(pending), Some(log)) = (self.answer.access.take(), &ctx.shared.access_log) else {
            return;
        };
        let outcome = Outcome {
            status: self.answer.status,
            sent: self.sent,
            head_len: self.bufs.segs.first().map_or(0, Segment::len),
            elapsed: self.started.elapsed(),
            body: self.sources,
            tls: tx.mode(),
            complete,
        };
        log.record(ctx.index, peer, &pending, &outcome);
    }

    /// The engine gave up the cold path for the current part.
    pub(crate) fn abandon_cold(&mut self, reason: crate::cold::Reason) {
        self.paths.abandon_cold(self.seg, reason);
        self.sources.cache = true;
    }

    /// `n` file bytes of the current part went out; false when that is more than the part has.
    pub(crate) fn advance_file(&mut self, n: u64) -> bool {
        match self.bufs.segs.get(self.seg) {
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

    /// Writes parts until the response is out, the socket is full, or the engine must move the
    /// next bytes itself.
    pub(crate) fn write(
        &mut self,
        tx: &mut Transport,
        ctx: &mut WorkerCtx,
        loopback: bool,
    ) -> WriteResult {
        while let Some(&seg) = self.bufs.segs.get(self.seg) {
            let more = self.seg + 1 < self.bufs.segs.len();
            let (result, remaining) = match seg {
                Segment::Mem { start, end } => {
                    let buf = &self.bufs.out[start + self.seg_off as usize..end];
                    (tx.send(buf, more), buf.len() as u64)
                }
                Segment::File { offset, len } => {
                    match self.write_file(tx, ctx, loopback, offset, len) {
                        Ok(r) => (r, len - self.seg_off),
                        Err(handoff) => return handoff,
                    }
                }
            };
            match result {
                Ok(0) if remaining > 0 => {
                    // Userspace TLS read nothing: the file shrank under us (see write_file).
                    tracing::warn!("file shorter than when opened; closing connection");
                    ctx.stats().truncated();
                    return WriteResult::Failed;
                }
                Ok(n) => {
                    self.count_sent(n as u64, tx, ctx);
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
                    self.on_write_error(seg, &e, ctx);
                    return WriteResult::Failed;
                }
            }
        }
        // Userspace TLS: the last records may still wait for the socket.
        match tx.flush() {
            Ok(true) => WriteResult::Done,
            Ok(false) => WriteResult::Blocked,
            Err(_) => WriteResult::Failed,
        }
    }

    /// One step of the current file part (`len` bytes at `offset`): its bytes written here
    /// (`Ok`), or what the engine must do for them (`Err`).
    fn write_file(
        &mut self,
        tx: &mut Transport,
        ctx: &mut WorkerCtx,
        loopback: bool,
        offset: u64,
        len: u64,
    ) -> Result<io::Result<usize>, WriteResult> {
        let remaining = len - self.seg_off;
        let at = offset + self.seg_off;
        let Some(file) = self.answer.file.as_ref() else {
            return Err(WriteResult::Failed);
        };
        if tx.encrypts_here() {
            self.sources.cache = true;
            return match tx.send_file(&file.file, file.disk, at, remaining, ctx) {
                FileStep::Wrote(r) => Ok(r),
                FileStep::Read(read) => Err(WriteResult::ReadFile(read)),
            };
        }
        let zero_copy = tx.is_plain() && !loopback;
        if let Some(chunk) = self
            .paths
            .cold_chunk(self.seg, ctx, file, at, remaining, zero_copy)
        {
            self.sources.cold = true;
            return Err(WriteResult::Cold(chunk));
        }
        self.sources.cache = true;
        let fd = file.file.as_raw_fd();
        if self.paths.engine_splices(self.seg, ctx, fd, offset, len) {
            return Err(WriteResult::Body(BodyChunk {
                file: fd,
                offset: at,
                len: remaining,
                disk: file.disk,
            }));
        }
        let count = remaining.min(SENDFILE_CHUNK as u64) as usize;
        let r = {
            let _blocked = ctx.shared.process.disks.enter(ctx.index, file.disk);
            socket::sendfile(tx.sock().as_fd(), fd, at, count)
        };
        if let Ok(0) = r {
            // The file shrank under us: what is left cannot be sent, and a shorter body on this
            // connection must not pass for a whole one, so close it.
            tracing::warn!(
                offset = at,
                "file shorter than when opened; closing connection"
            );
            ctx.stats().truncated();
            return Err(WriteResult::Failed);
        }
        Ok(r)
    }

    /// A write failed for good: a media error reading a file part marks its disk failed.
    fn on_write_error(&self, seg: Segment, e: &io::Error, ctx: &WorkerCtx) {
        if let (Segment::File { .. }, Some(f)) = (seg, &self.answer.file) {
            if e.raw_os_error().is_some_and(oca_store::is_media_error) {
                tracing::warn!(error = %e, disk = f.disk, "reading content failed; closing connection");
                ctx.stats().truncated();
                ctx.shared.process.disks.error(f.disk);
            }
        }
    }
}

/// Counts bytes sent to the client, and on TLS connections by where they were encrypted.
pub(crate) fn count_sent(n: u64, fill: bool, tx: &Transport, ctx: &WorkerCtx) {
    ctx.stats().sent(n);
    if fill {
        ctx.stats().fill_sent(n);
    }
    if let Some(mode) = tx.mode() {
        ctx.stats().tls_sent(mode, n);
    }
}
