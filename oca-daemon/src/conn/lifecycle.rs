//! The HTTP lifecycle of a connection as an explicit state machine.
//!
//! ```text
//!            head complete, file open            last byte out, keep-alive
//!  Reading ─────────────────────────► Writing ─────────────────────────► Reading
//!     │ ▲                               │  ▲                   (pipelined: answered at once)
//!     │ └──── file opened ◄─ Opening ◄──┘  │
//!     │       (answered afresh)    ▲  file not open yet (engine opens off the thread)
//!     └────────────────────────────┘
//!  Writing ── last byte out, close or draining ──► Lingering ── peer closes / LINGER ──► closed
//! ```
//!
//! The response's state (its buffers, file, cursor, per-part path decisions) lives inside
//! [`Phase::Writing`] and nowhere else: no file can be attached to a connection that is reading,
//! and nothing of one response leaks into the next. The buffers themselves go back to the
//! connection when a response finishes, so answering a request allocates nothing new.
//!
//! Requests are answered one at a time, in order; input that arrives while a response is going
//! out waits in the input buffer (up to one head's worth, then the engine pauses receiving) and
//! is answered when it is done. The request head is parsed and answered by the sans-IO layer
//! (`http::request`, `http::serve`); this module only moves bytes and states.

use std::time::{Duration, Instant};

use crate::access_log::Pending;
use crate::conn::outgoing::{Answer, Outgoing, WriteResult};
use crate::conn::Conn;
use crate::engine::contract::Next;
use crate::http::request::{parse_head, HeadLimits, Parsed};
use crate::http::serve;
use crate::signed_urls::Admitted;
use crate::worker::WorkerCtx;
use oca_protocol::signing::Scope;

/// How long a closing connection keeps reading (and discarding) so the client gets the last
/// response before any reset caused by bytes it sent after it (nginx's lingering close).
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// Where a connection is in its HTTP lifecycle.
pub(crate) enum Phase {
    /// Waiting for (the rest of) a request head.
    Reading,
    /// The request's file is being opened off the worker's thread (`Next::Open`); the request
    /// stays at the front of the input, answered afresh once it is.
    Opening {
        /// The content id being opened.
        id: String,
        /// When the request was first answered: its latency counts the open.
        started: Instant,
    },
    /// Sending a response.
    Writing(Outgoing),
    /// Response sent, write side shut: discarding input until the peer closes or [`LINGER`].
    Lingering,
}

impl Phase {
    /// Whether a request is being answered (writing, or waiting for its file's open).
    pub(crate) fn answering(&self) -> bool {
        matches!(self, Phase::Writing(_) | Phase::Opening { .. })
    }
}

impl Conn {
    /// Plaintext arrived.
    pub(crate) fn on_plain(&mut self, data: &[u8], ctx: &mut WorkerCtx) -> Next {
        match self.phase {
            Phase::Lingering => Next::Read,
            Phase::Writing(_) | Phase::Opening { .. } => {
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
                self.process(ctx, None)
            }
        }
    }

    /// Answers the requests buffered, in order, until one must wait (for input, the socket, the
    /// engine). `reopened`: the first one waited for its file's open since this instant.
    pub(crate) fn process(&mut self, ctx: &mut WorkerCtx, mut reopened: Option<Instant>) -> Next {
        loop {
            if self.inbuf.is_empty() {
                return Next::Read;
            }
            let limits = HeadLimits {
                max_header_bytes: ctx.shared.limits.max_header_bytes,
                max_uri_bytes: ctx.shared.limits.max_uri_bytes,
            };
            let mut bufs = std::mem::take(&mut self.spare);
            bufs.clear();
            let (answer, used) = match parse_head(&self.inbuf, limits) {
                Ok(Parsed::Partial) => {
                    self.spare = bufs;
                    return Next::Read;
                }
                Ok(Parsed::Complete(req, used)) => {
                    let served =
                        serve::serve(&req, &mut ctx.serve_ctx(), &mut bufs.out, &mut bufs.segs);
                    if let Some(id) = served.open {
                        self.spare = bufs;
                        self.phase = Phase::Opening {
                            id,
                            started: ctx.now,
                        };
                        return Next::Open;
                    }
                    if let Some(disk) = served.disk_error {
                        ctx.shared.process.disks.error(disk);
                    }
                    if let Some(admission) = served.admission {
                        ctx.stats().admission(admission);
                    }
                    let answer = Answer {
                        status: served.status,
                        keep_alive: served.keep_alive,
                        file: served.file,
                        fill: served.admission == Some(Ok(Admitted::Signed(Scope::Fill))),
                        access: ctx.access_pending(&req, served.status),
                    };
                    (answer, used)
                }
                Err(e) => {
                    let status = serve::refuse(e, ctx.date_cache(), &mut bufs.out, &mut bufs.segs);
                    let answer = Answer {
                        status,
                        keep_alive: false,
                        file: None,
                        fill: false,
                        access: ctx
                            .shared
                            .access_log
                            .is_some()
                            .then(|| Pending::refused(&self.inbuf)),
                    };
                    (answer, self.inbuf.len())
                }
            };
            self.inbuf.drain(..used);
            // A request that waited for its file's open is timed from its first answer attempt.
            let started = reopened.take().unwrap_or(ctx.now);
            self.phase = Phase::Writing(Outgoing::new(bufs, answer, started));
            self.deadline = ctx.now + ctx.shared.limits.send_timeout;
            match self.flush(ctx) {
                Next::Read if matches!(self.phase, Phase::Reading) => continue,
                other => return other,
            }
        }
    }

    /// Writes what the response has ready; finishes it when every byte is out.
    pub(crate) fn flush(&mut self, ctx: &mut WorkerCtx) -> Next {
        if self.tx.rekey_pending() && self.tx.rekey_tx().is_err() {
            return Next::Close;
        }
        let Phase::Writing(resp) = &mut self.phase else {
            return Next::Close;
        };
        match resp.write(&mut self.tx, ctx, self.loopback) {
            WriteResult::Blocked => {
                self.deadline = ctx.now + ctx.shared.limits.send_timeout;
                Next::Write
            }
            WriteResult::Failed => Next::Close,
            WriteResult::Body(chunk) => Next::Splice(chunk),
            WriteResult::Cold(chunk) => Next::Cold(chunk),
            WriteResult::ReadFile(read) => {
                resp.reading_file = true;
                Next::ReadFile(read)
            }
            WriteResult::Done => self.finish(ctx),
        }
    }

    /// Writes what the response has ready and, when it is done and a pipelined request is
    /// already buffered, goes on to answer it.
    pub(crate) fn flush_and_continue(&mut self, ctx: &mut WorkerCtx) -> Next {
        match self.flush(ctx) {
            Next::Read if matches!(self.phase, Phase::Reading) && !self.inbuf.is_empty() => {
                self.process(ctx, None)
            }
            other => other,
        }
    }

    /// `n` file bytes of the current part went out; false when that is more than the part has.
    pub(crate) fn advance(&mut self, n: u64, ctx: &mut WorkerCtx) -> bool {
        let Phase::Writing(resp) = &mut self.phase else {
            return false;
        };
        resp.count_sent(n, &self.tx, ctx);
        // The send timeout runs between two writes that make progress (as nginx's does), not
        // over the whole response: a long body that keeps moving is never cut.
        self.deadline = ctx.now + ctx.shared.limits.send_timeout;
        resp.advance_file(n)
    }

    /// The response's last byte is out: back to reading, or lingering towards the close.
    fn finish(&mut self, ctx: &mut WorkerCtx) -> Next {
        let Phase::Writing(resp) = std::mem::replace(&mut self.phase, Phase::Reading) else {
            return Next::Close;
        };
        let keep_alive = resp.keep_alive();
        self.spare = resp.finish(self.peer, &self.tx, ctx);
        if !keep_alive || ctx.draining() {
            // Half-close and keep reading so a client still sending is not answered with a reset
            // that could destroy the response it has not read yet.
            self.tx.close_notify();
            self.tx.shutdown_write();
            self.phase = Phase::Lingering;
            self.inbuf = Vec::new();
            self.deadline = ctx.now + LINGER;
            return Next::Read;
        }
        if self.peer_closed && self.inbuf.is_empty() {
            return Next::Close;
        }
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
}
