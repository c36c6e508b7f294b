//! Per-connection operations: receives into provided buffers, writability polls, what the
//! connection asks next (`act`), closing (cancel what is in flight, free the slot when the last
//! completion comes), userspace-TLS file reads off the thread, and the disk deadlines of every
//! operation a slot waits on.
//!
//! Invariant: a slot outlives every operation it has in flight (`Slot::inflight`); a completion
//! whose generation does not match its slot's is stale and only gives back what it holds. The
//! write side's states and transitions are in `slot`.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use io_uring::{cqueue, opcode, squeue, types};

use crate::engine::contract::{FileRead, Next};
use crate::engine::mapping::Mapping;
use crate::engine::policy;
use crate::engine::uring::slot::{ColdStage, FileReadOp, SpliceStage, Wake, Write};
use crate::engine::uring::splice;
use crate::engine::uring::tag::{Op, Tag};
use crate::engine::uring::{ud, Loop, BUF_GROUP, BUF_SIZE};
use crate::socket;

impl Loop {
    pub(super) fn on_conn_op(&mut self, kind: Op, gen: u32, key: usize, res: i32, flags: u32) {
        let buf = cqueue::buffer_select(flags);
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            if let Some(bid) = buf {
                self.free_bufs.push(bid);
            }
            return;
        };
        // A multishot receive stays in flight until a completion without IORING_CQE_F_MORE.
        if kind != Op::Recv || !cqueue::more(flags) {
            slot.completed();
            if kind == Op::Recv {
                slot.recv_armed = false;
            }
        }
        if slot.closing {
            if let Some(bid) = buf {
                self.free_bufs.push(bid);
            }
            if slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        let next = if kind == Op::SpliceIn {
            // The linked drain's completion decides what comes next.
            return splice::filled(slot, res);
        } else if kind == Op::SpliceOut {
            return self.on_drained(key, res);
        } else if kind == Op::Poll {
            match slot.write.writable() {
                Wake::Conn => {
                    policy::guarded(&mut self.ctx, Next::Close, |ctx| slot.conn.on_writable(ctx))
                }
                Wake::ColdSend => return self.cold_send(key),
                Wake::Nobody => return,
            }
        } else {
            match (res, buf) {
                (n, Some(bid)) if n > 0 => {
                    // SAFETY: the kernel filled this buffer and handed it back with this
                    // completion; it gets it again only when the buffer is provided anew, after
                    // `data` is gone (give_back_buffers).
                    let data = unsafe { self.recv_bufs.slice(bid as usize * BUF_SIZE, n as usize) };
                    let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                        slot.conn.on_data(data, ctx)
                    });
                    self.free_bufs.push(bid);
                    next
                }
                (0, _) => policy::guarded(&mut self.ctx, Next::Close, |ctx| slot.conn.on_eof(ctx)),
                (e, _) if -e == libc::ENOBUFS => {
                    self.starved.push(key);
                    return;
                }
                // Paused (see Next::Pause). The response that paused it may have finished
                // before this arrived, and the connection asked to read while this receive was
                // still armed: a connection that wants input is never left without a receive.
                (e, _) if -e == libc::ECANCELED => {
                    if !slot.conn.wants_input(&self.ctx) {
                        return;
                    }
                    Next::Read
                }
                (e, _) if -e == libc::EINTR || -e == libc::EAGAIN => Next::Read,
                (e, _) => policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                    slot.conn.on_recv_error(-e, ctx)
                }),
            }
        };
        self.act(key, next);
    }

    pub(super) fn act(&mut self, key: usize, next: Next) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if !matches!(next, Next::Splice(_)) {
            // The connection is done with its pipe once it holds no bytes and no splice.
            if let Write::Splice(s) = &slot.write {
                if matches!(s.stage, SpliceStage::Idle) && s.in_pipe == 0 {
                    if let Write::Splice(s) = std::mem::take(&mut slot.write) {
                        self.pipes.push(s.pipe);
                    }
                }
            }
        }
        let fd = types::Fd(slot.conn.sock().as_raw_fd());
        let entry = match next {
            Next::Read if slot.recv_armed => return,
            Next::Read if self.multishot_recv && slot.conn.multishot_ok() => {
                slot.recv_armed = true;
                opcode::RecvMulti::new(fd, BUF_GROUP)
                    .build()
                    .user_data(ud(Op::Recv, key, slot.gen))
            }
            Next::Read => {
                slot.recv_armed = true;
                opcode::Recv::new(fd, std::ptr::null_mut(), BUF_SIZE as u32)
                    .buf_group(BUF_GROUP)
                    .build()
                    .flags(squeue::Flags::BUFFER_SELECT)
                    .user_data(ud(Op::Recv, key, slot.gen))
            }
            Next::Write if !slot.write.arm_poll() => return,
            Next::Write => opcode::PollAdd::new(fd, libc::POLLOUT as u32)
                .build()
                .user_data(ud(Op::Poll, key, slot.gen)),
            Next::Wait => return,
            Next::Pause if slot.recv_armed => {
                tracing::debug!("receive paused: requests piled up behind a blocked response");
                opcode::AsyncCancel::new(ud(Op::Recv, key, slot.gen))
                    .build()
                    .user_data(Tag::worker(Op::Cancel).encode())
            }
            Next::Pause => return,
            Next::Close => return self.close(key),
            Next::Open => return self.open_start(key),
            Next::ReadFile(read) => return self.file_read(key, read),
            Next::Splice(chunk) => return self.splice(key, chunk),
            Next::Cold(chunk) => return self.cold_start(key, chunk, None),
        };
        if !matches!(next, Next::Pause) {
            slot.inflight += 1;
        }
        self.push(entry);
    }

    /// The connection asked for `what` while an engine operation of its response is in flight
    /// (the write side is `busy`): a bug, not the client's. The connection is closed.
    pub(super) fn asked_while_busy(&mut self, key: usize, what: &'static str) {
        tracing::error!(
            asked = what,
            "a body operation asked for while another is in flight; closing connection"
        );
        self.close(key);
    }

    /// Closes at once when nothing is in flight; otherwise wakes the pending operation
    /// (shutdown + cancel) and closes when its completion arrives, so no CQE outlives its slot.
    pub(super) fn close(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        match slot.inflight {
            0 => self.finish_close(key),
            _ if slot.closing => {}
            _ => {
                slot.closing = true;
                if slot.write.cold_bytes_queued() {
                    // Zero-copy bytes still queued keep the buffer the kernel's until the peer
                    // acknowledges them, which a client that stopped reading never does: reset,
                    // so the queue (and with it the buffer) is let go now.
                    socket::abort(slot.conn.sock().as_fd());
                }
                socket::shutdown(slot.conn.sock().as_fd(), libc::SHUT_RDWR);
                let [waited, poll] = slot.write.cancel_targets();
                let recv = slot.recv_armed.then_some(Op::Recv);
                let targets = [recv, waited, poll].map(|op| op.map(|op| ud(op, key, slot.gen)));
                for target in targets.into_iter().flatten() {
                    self.push(
                        opcode::AsyncCancel::new(target)
                            .build()
                            .user_data(Tag::worker(Op::Cancel).encode()),
                    );
                }
            }
        }
    }

    pub(super) fn finish_close(&mut self, key: usize) {
        if let Some(slot) = self.slots.try_remove(key) {
            if let (Some(cold), Write::Cold(c)) = (&mut self.cold, slot.write) {
                // Nothing is in flight any more: its buffers are ours to give back.
                match c.stage {
                    ColdStage::Queued { .. } => {}
                    ColdStage::Reading { buf, .. } => cold.pool.give(buf),
                    ColdStage::Sending(s) => {
                        cold.pool.give(s.buf);
                        if let Some(a) = s.ahead {
                            self.ctx.stats().cold_ahead(false);
                            cold.pool.give(a.buf);
                        }
                    }
                }
            }
            policy::release(slot.conn, &self.ctx);
            self.cold_pump();
        }
    }

    /// Reads file bytes a userspace-TLS connection needs into a buffer of its own, on the
    /// kernel's workers (whatever the filesystem, the worker's thread never waits for a disk).
    pub(super) fn file_read(&mut self, key: usize, read: FileRead) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.write.busy() {
            return self.asked_while_busy(key, "file read");
        }
        let buf = match Mapping::new(crate::tls::ENCRYPT_CHUNK) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "no memory for a file read; closing connection");
                return self.close(key);
            }
        };
        let len = read.len.min(crate::tls::ENCRYPT_CHUNK as u32);
        let entry = opcode::Read::new(types::Fd(read.fd), buf.at(0), len)
            .offset(read.offset)
            .build()
            .flags(squeue::Flags::ASYNC)
            .user_data(ud(Op::FileRead, key, slot.gen));
        let read = FileReadOp {
            buf,
            since: self.ctx.now,
            disk: read.disk,
        };
        let poll = matches!(slot.write, Write::Poll);
        slot.write = Write::FileRead { read, poll };
        slot.inflight += 1;
        self.push(entry);
    }

    pub(super) fn on_file_read(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        if slot.closing {
            if slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        let Write::FileRead { read, poll } = std::mem::take(&mut slot.write) else {
            debug_assert!(false, "a file read completed that was not in flight");
            return;
        };
        slot.write = Write::after_engine_op(poll);
        let disk = read.disk;
        let next = if res < 0 {
            let media = oca_store::is_media_error(-res);
            tracing::warn!(disk, error = %io::Error::from_raw_os_error(-res), "reading content failed; closing connection");
            policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, media)
            })
        } else {
            // SAFETY: the read completed: the kernel wrote these bytes and holds the buffer no
            // longer; it is dropped after this use.
            let data = unsafe { read.buf.slice(0, res as usize) };
            policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_file_read(data, ctx)
            })
        };
        self.act(key, next);
    }

    /// Marks hung any disk with an operation in flight for longer than disk_timeout (an open, a
    /// splice from a file, a direct read), and ends the connections waiting on such operations:
    /// the kernel may never give them back, and their clients are better off elsewhere. Each
    /// slot lingers, closing, until its operation does complete.
    pub(super) fn disk_deadlines(&mut self) {
        let now = self.ctx.now;
        let timeout = self.ctx.shared.limits.disk_timeout;
        let mut stuck = Vec::new();
        let mut reopen = Vec::new();
        for (key, slot) in self.slots.iter() {
            if slot.closing {
                continue;
            }
            if let Write::Open { op: o, .. } = &slot.write {
                let waited = now.saturating_duration_since(o.started);
                if let (Some(&disk), true) = (o.candidates.get(o.at), waited > timeout) {
                    // The file may well be on another disk: mark this one and go on there,
                    // once; an open that hangs twice ends the connection.
                    if o.abandoned {
                        stuck.push((key, disk, waited));
                    } else {
                        reopen.push((key, disk, waited));
                    }
                    continue;
                }
            }
            let orphan = slot.orphan.as_ref().map(|o| (o.since, o.disk));
            for (since, disk) in [slot.write.disk_wait(), orphan].into_iter().flatten() {
                let waited = now.saturating_duration_since(since);
                if waited > timeout {
                    stuck.push((key, disk, waited));
                    break;
                }
            }
        }
        for (key, disk, waited) in stuck {
            self.ctx.shared.process.disks.hung(disk, waited);
            self.close(key);
        }
        for (key, disk, waited) in reopen {
            self.ctx.shared.process.disks.hung(disk, waited);
            if let Some(slot) = self.slots.get_mut(key) {
                slot.stale_opens += 1;
                if let Write::Open { op, .. } = &mut slot.write {
                    op.abandoned = true;
                    op.at += 1;
                }
            }
            self.open_next(key);
        }
    }
}
