//! The splice body path: file bytes go file → pipe → socket as a linked pair of splices, so they
//! never enter userspace and a read that waits for the disk waits off the worker's thread.
//! Each connection takes a pipe from the worker's pool for as long as bytes or splices are in
//! it; the completions are handled with the connection's other operations (`conn_ops`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, squeue, types};

use crate::engine::contract::BodyChunk;
use crate::engine::uring::tag::Op;
use crate::engine::uring::{ud, Loop};

/// Pipe capacity asked for on the splice body path (the default per-user limit allows 1 MiB).
pub(super) const PIPE_BYTES: i32 = 1 << 20;

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
        // SAFETY: as above.
        let cap = if cap > 0 {
            cap
        } else {
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
}
