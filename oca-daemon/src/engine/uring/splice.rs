//! The splice body path: file bytes go file → pipe → socket as a linked pair of splices, so they
//! never enter userspace and a read that waits for the disk waits off the worker's thread.
//! Each connection takes a pipe from the worker's pool for as long as bytes or splices are in
//! it. A completion is first counted against its slot with the slot's other operations
//! (`conn_ops`), then handled here: [`filled`] for the file → pipe half, `Loop::on_drained` for
//! the pipe → socket half, whose completion decides what the connection does next.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};

use crate::engine::contract::{BodyChunk, Next};
use crate::engine::policy;
use crate::engine::uring::tag::Op;
use crate::engine::uring::{ud, Loop, Slot};

/// Pipe capacity asked for on the splice body path (the default per-user limit allows 1 MiB).
pub(super) const PIPE_BYTES: i32 = 1 << 20;

/// How a fill of the pipe (file → pipe) came out; anything but `Whole` breaks the link, and
/// the drain's cancelled completion acts on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Fill {
    /// Bytes arrived (or none is in flight): nothing to act on.
    #[default]
    Whole,
    /// The file ended before the part did: it shrank since it was opened.
    Eof,
    /// Reading the file failed; `media`: a media error, which marks its disk failed.
    Failed {
        /// Whether the disk returned a media error.
        media: bool,
    },
    /// No pipe buffer to be had (EAGAIN, memory pressure): filled again once the socket is
    /// writable, when the pipe is empty.
    NoRoom,
}

/// A pipe that file pages pass through on their way to a socket (splice body path).
pub(super) struct Pipe {
    pub(super) r: OwnedFd,
    pub(super) w: OwnedFd,
    pub(super) cap: u32,
}

impl Pipe {
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
        if slot.pipe.is_none() {
            self.pipes_used = self.ctx.now;
            match self.pipes.pop().map_or_else(Pipe::new, Ok) {
                Ok(p) => slot.pipe = Some(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create a pipe; closing connection");
                    return self.close(key);
                }
            }
        }
        if slot.in_pipe > 0 {
            return self.drain_pipe(key);
        }
        let pipe = slot.pipe.as_ref().expect("pipe set above");
        let n = chunk.len.min(u64::from(pipe.cap)) as u32;
        let fill = opcode::Splice::new(
            types::Fd(chunk.file),
            chunk.offset as i64,
            types::Fd(pipe.w.as_raw_fd()),
            -1,
            n,
        )
        .build()
        .flags(squeue::Flags::IO_LINK)
        .user_data(ud(Op::SpliceIn, key, slot.gen));
        let drain = opcode::Splice::new(
            types::Fd(pipe.r.as_raw_fd()),
            -1,
            types::Fd(slot.conn.sock().as_raw_fd()),
            -1,
            n,
        )
        .build()
        .user_data(ud(Op::SpliceOut, key, slot.gen));
        slot.inflight += 2;
        slot.splicing += 2;
        slot.splice_at = Some((self.ctx.now, chunk.disk));
        slot.cancel_op = Op::SpliceOut;
        self.push_linked(fill, drain);
    }

    pub(super) fn drain_pipe(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(pipe) = slot.pipe.as_ref() else {
            return self.close(key);
        };
        let drain = opcode::Splice::new(
            types::Fd(pipe.r.as_raw_fd()),
            -1,
            types::Fd(slot.conn.sock().as_raw_fd()),
            -1,
            slot.in_pipe,
        )
        .build()
        .user_data(ud(Op::SpliceOut, key, slot.gen));
        slot.inflight += 1;
        slot.splicing += 1;
        slot.cancel_op = Op::SpliceOut;
        self.push(drain);
    }

    /// The pipe → socket half completed: the connection goes on past the bytes sent; a fill
    /// that failed ends the response; a short one has what did arrive drained.
    pub(super) fn on_drained(&mut self, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let next = match res {
            n if n > 0 => {
                slot.in_pipe = slot.in_pipe.saturating_sub(n as u32);
                policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_body_sent(n as u64, ctx)
                })
            }
            e if -e == libc::EAGAIN => Next::Write,
            // A short or failed fill breaks the link: drain what did arrive, or give up.
            e if -e == libc::ECANCELED => match std::mem::take(&mut slot.last_fill) {
                Fill::Eof => policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_body_failed(ctx, false)
                }),
                Fill::Failed { media } => policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_body_failed(ctx, media)
                }),
                Fill::NoRoom if slot.in_pipe == 0 => Next::Write,
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
    slot.splice_at = None;
    match res {
        n if n > 0 => slot.in_pipe += n as u32,
        0 => slot.last_fill = Fill::Eof,
        // No pipe buffer to be had just now (memory pressure): try again shortly.
        e if -e == libc::EAGAIN => slot.last_fill = Fill::NoRoom,
        e if -e != libc::ECANCELED => {
            tracing::warn!(error = %io::Error::from_raw_os_error(-e), "splice from the file failed; closing connection");
            slot.last_fill = Fill::Failed {
                media: oca_store::is_media_error(-e),
            };
        }
        _ => {}
    }
}
