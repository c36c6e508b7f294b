//! The splice body path: file bytes go file → pipe → socket as a linked pair of splices, so they
//! never enter userspace and a read that waits for the disk waits off the worker's thread.
//! Each connection takes a pipe from the worker's pool for as long as bytes or splices are in
//! it. A completion is first counted against its slot with the slot's other operations
//! (`conn_ops`), then handled here: [`filled`] for the file → pipe half, `Loop::on_drained` for
//! the pipe → socket half, whose completion decides what the connection does next. The states
//! (`slot::Splice`, `slot::SpliceStage`) and their transitions are in `slot`.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};

use crate::engine::contract::{BodyChunk, Next};
use crate::engine::policy;
use crate::engine::uring::slot::{Fill, Pipe, Slot, Splice, SpliceStage, Write};
use crate::engine::uring::tag::Op;
use crate::engine::uring::{ud, Loop};

/// Pipe capacity asked for on the splice body path (the default per-user limit allows 1 MiB).
pub(super) const PIPE_BYTES: i32 = 1 << 20;

impl Pipe {
    /// A new pipe, as large as the system lets it be (up to [`PIPE_BYTES`]).
    fn new() -> io::Result<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 just created both descriptors; nothing else owns them.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: fcntl on a descriptor we own; failure leaves the default size.
        let cap = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        let cap = if cap > 0 {
            cap
        } else {
            // SAFETY: as above.
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        Ok(Pipe {
            r,
            w,
            cap: cap.max(4096) as u32,
        })
    }
}

impl Loop {
    /// Moves file bytes to the socket through the connection's pipe: a linked pair of splices
    /// (file → pipe, pipe → socket), or just the drain when the pipe still holds bytes.
    pub(super) fn splice(&mut self, key: usize, chunk: BodyChunk) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        match &slot.write {
            Write::Splice(s) if matches!(s.stage, SpliceStage::Idle) => {}
            // A poll still armed wakes nobody when it completes (the splice's completion calls
            // the connection).
            Write::Idle | Write::Poll => {
                self.pipes_used = self.ctx.now;
                match self.pipes.pop().map_or_else(Pipe::new, Ok) {
                    Ok(pipe) => {
                        slot.write = Write::Splice(Splice {
                            pipe,
                            in_pipe: 0,
                            stage: SpliceStage::Idle,
                        })
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create a pipe; closing connection");
                        return self.close(key);
                    }
                }
            }
            _ => return self.asked_while_busy(key, "splice"),
        }
        let Write::Splice(s) = &mut slot.write else {
            return;
        };
        if s.in_pipe > 0 {
            return self.drain_pipe(key);
        }
        let n = chunk.len.min(u64::from(s.pipe.cap)) as u32;
        let fill = opcode::Splice::new(
            types::Fd(chunk.file),
            chunk.offset as i64,
            types::Fd(s.pipe.w.as_raw_fd()),
            -1,
            n,
        )
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(ud(Op::SpliceIn, key, slot.gen));
        let drain = opcode::Splice::new(
            types::Fd(s.pipe.r.as_raw_fd()),
            -1,
            types::Fd(slot.conn.sock().as_raw_fd()),
            -1,
            n,
        )
        .build()
        .user_data(ud(Op::SpliceOut, key, slot.gen));
        s.stage = SpliceStage::Pair {
            since: self.ctx.now,
            disk: chunk.disk,
        };
        slot.inflight += 2;
        self.push_linked(fill, drain);
    }

    /// Sends what the pipe holds (the splice state is idle, with bytes in the pipe).
    pub(super) fn drain_pipe(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Write::Splice(s) = &mut slot.write else {
            return self.close(key);
        };
        let drain = opcode::Splice::new(
            types::Fd(s.pipe.r.as_raw_fd()),
            -1,
            types::Fd(slot.conn.sock().as_raw_fd()),
            -1,
            s.in_pipe,
        )
        .build()
        .user_data(ud(Op::SpliceOut, key, slot.gen));
        s.stage = SpliceStage::Drain { fill: Fill::Whole };
        slot.inflight += 1;
        self.push(drain);
    }

    /// The pipe → socket half completed: the connection goes on past the bytes sent; a fill
    /// that failed ends the response; a short one has what did arrive drained.
    pub(super) fn on_drained(&mut self, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Write::Splice(s) = &mut slot.write else {
            debug_assert!(false, "a drain completed with no splice state");
            return;
        };
        let fill = match std::mem::replace(&mut s.stage, SpliceStage::Idle) {
            SpliceStage::Drain { fill } => fill,
            _ => Fill::Whole,
        };
        let next = match res {
            n if n > 0 => {
                s.in_pipe = s.in_pipe.saturating_sub(n as u32);
                policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_body_sent(n as u64, ctx)
                })
            }
            e if -e == libc::EAGAIN => Next::Write,
            // A short or failed fill breaks the link: drain what did arrive, or give up.
            e if -e == libc::ECANCELED => match fill {
                Fill::Eof => policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_body_failed(ctx, false)
                }),
                Fill::Failed { media } => policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_body_failed(ctx, media)
                }),
                Fill::NoRoom if s.in_pipe == 0 => Next::Write,
                Fill::NoRoom | Fill::Whole => return self.drain_pipe(key),
            },
            _ => Next::Close,
        };
        self.act(key, next);
    }
}

/// The file → pipe half completed: counts what is in the pipe, or notes why the fill came up
/// short (the file shrank, could not be read, or the pipe had no room) for the drain to act on.
pub(super) fn filled(slot: &mut Slot, res: i32) {
    let Write::Splice(s) = &mut slot.write else {
        debug_assert!(false, "a fill completed with no splice state");
        return;
    };
    let fill = match res {
        n if n > 0 => {
            s.in_pipe += n as u32;
            Fill::Whole
        }
        0 => Fill::Eof,
        // No pipe buffer to be had just now (memory pressure): try again shortly.
        e if -e == libc::EAGAIN => Fill::NoRoom,
        e if -e != libc::ECANCELED => {
            tracing::warn!(error = %io::Error::from_raw_os_error(-e), "splice from the file failed; closing connection");
            Fill::Failed {
                media: oca_store::is_media_error(-e),
            }
        }
        _ => Fill::Whole,
    };
    s.stage = SpliceStage::Drain { fill };
}
