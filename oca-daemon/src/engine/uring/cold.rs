//! The cold pipeline: file parts read with O_DIRECT into the worker's registered buffers and
//! sent from there (zero-copy where the socket allows), so the long tail does not evict the page
//! cache. Per disk, reads queue for a buffer and a place in the disk's queue; while one buffer
//! is sent, the part's next is read ahead; a reader too slow to keep a shared buffer, or a part
//! that waited too long, goes back to the page cache midway (`Conn::cold_abandoned`).
//!
//! A chunk's stages (queued → reading → sending, with the read ahead beside the send) are
//! `slot::ColdStage`, and their transitions are listed in `slot`; this module makes them. It is
//! the one over the ~600-line guideline: the pipeline's transitions read best in one place. The
//! policy deciding which parts go this way is `cold`, the buffers and queues are
//! `engine::cold_io`.
//!
//! Invariant: a buffer is the kernel's from the read's submission until the last zero-copy
//! notification of its sends; only then does it go back to the pool.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use io_uring::{cqueue, opcode, types};

use crate::cold::{ColdMode, Reason};
use crate::engine::cold_io::{aligned_read, DiskQueues, Pool};
use crate::engine::contract::{ColdChunk, Next};
use crate::engine::policy;
use crate::engine::uring::probe::Support;
use crate::engine::uring::slot::{Ahead, ColdIo, ColdStage, Orphan, SendState, Sending, Write};
use crate::engine::uring::tag::{Op, Tag};
use crate::engine::uring::{ud, Loop};
use crate::worker::WorkerCtx;

/// The shortest a reader may hold a cold buffer, however few its bytes: a tick and a round trip
/// or two of slack.
pub(super) const MIN_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// The worker's cold-path resources.
pub(super) struct Cold {
    pub(super) pool: Pool,
    pub(super) queues: DiskQueues,
    pub(super) send_zc: bool,
    /// Per disk: reads go to the kernel's workers outright (its filesystem may block a
    /// submission: FUSE, network filesystems).
    pub(super) punt: Vec<bool>,
}

/// The worker's cold-path resources when the cold path is on (its buffers are mapped at the
/// first cold read); tells the connections (through `ctx.cold`) whether they may use it.
pub(super) fn setup_cold(ctx: &mut WorkerCtx, support: &Support) -> Option<Cold> {
    let cfg = ctx.shared.cold;
    if cfg.mode == ColdMode::Off {
        return None;
    }
    if ctx.index == 0 {
        tracing::info!(
            mode = ?cfg.mode,
            buffers = cfg.buffers,
            buffer_kib = cfg.buffer_bytes >> 10,
            queue_depth = cfg.queue_depth,
            send_zc = support.send_zc,
            "cold path (O_DIRECT) ready"
        );
    }
    ctx.caps.cold = Some(cfg);
    Some(Cold {
        pool: Pool::new(&cfg),
        queues: DiskQueues::new(ctx.shared.store.disks().len(), cfg.queue_depth),
        send_zc: support.send_zc,
        punt: ctx
            .shared
            .store
            .disks()
            .iter()
            .map(|d| !d.submits_without_blocking())
            .collect(),
    })
}

impl Loop {
    /// Starts a cold chunk: from the bytes read ahead for it (`ahead`, what the previous chunk
    /// left) when they are its own, else queued behind its disk; refused at once when the disk
    /// has failed.
    pub(super) fn cold_start(&mut self, key: usize, chunk: ColdChunk, mut ahead: Option<Ahead>) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.write.busy() {
            if let Some(a) = ahead {
                self.drop_ahead(key, a);
            }
            return self.asked_while_busy(key, "cold chunk");
        }
        if self.ctx.shared.process.disks.failed(chunk.disk) {
            let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, false)
            });
            if let Some(a) = ahead {
                self.drop_ahead(key, a);
            }
            return self.act(key, next);
        }
        let Some(cold) = self.cold.as_mut() else {
            return self.close(key);
        };
        // A poll still armed (Write::Poll) wakes nobody when it completes: the chunk's sends
        // call the connection.
        if let Some(a) = ahead.take_if(|a| a.fits(&chunk)) {
            // The bytes were read (or are being read) ahead: no queue, no new read.
            self.ctx.stats().cold_ahead(true);
            slot.write = Write::Cold(ColdIo {
                chunk,
                // In flight, its completion (Op::ColdAhead) carries on as this chunk's read.
                stage: ColdStage::Reading {
                    buf: a.buf,
                    skip: a.skip,
                    since: a.since,
                    adopted: true,
                },
            });
            if let Some(res) = a.res {
                self.cold_read_done(key, res);
            }
            return;
        }
        let gen = slot.gen;
        if !(cold.queues.has_room(chunk.disk) && cold.pool.any_free())
            || cold.queues.has_waiters(chunk.disk)
        {
            self.ctx.shared.metrics().cold_queued(chunk.disk);
        }
        cold.queues.wait(chunk.disk, (key, gen));
        slot.write = Write::Cold(ColdIo {
            chunk,
            stage: ColdStage::Queued {
                since: self.ctx.now,
            },
        });
        // A read ahead for some other part is of no use now.
        if let Some(a) = ahead {
            self.drop_ahead(key, a);
        }
        self.cold_pump();
    }

    /// Starts queued reads while buffers are free and their disks have room.
    pub(super) fn cold_pump(&mut self) {
        loop {
            let Some(cold) = self.cold.as_mut() else {
                return;
            };
            // Waiters first: every closing connection pumps, and mapping (pinning) the pool for
            // a pump with nothing to read would hold it on workers that never read cold, and
            // remap it on each close once the idle release has given it back.
            if !cold.queues.any_waiting() || !cold.pool.any_free() || !cold.pool.ready(&self.ring) {
                return;
            }
            let Some((disk, (key, gen))) = cold.queues.next_ready() else {
                return;
            };
            let Some(slot) = self
                .slots
                .get_mut(key)
                .filter(|s| s.gen == gen && !s.closing)
            else {
                continue;
            };
            let Write::Cold(c) = &mut slot.write else {
                continue;
            };
            if !matches!(c.stage, ColdStage::Queued { .. }) {
                continue;
            }
            let buf = cold.pool.take().expect("checked free above");
            cold.queues.started(disk);
            let (start, len, skip) =
                aligned_read(c.chunk.offset, c.chunk.len, cold.pool.size, c.chunk.align);
            c.stage = ColdStage::Reading {
                buf,
                skip,
                since: Instant::now(),
                adopted: false,
            };
            let punt = cold.punt[c.chunk.disk];
            let entry = cold.pool.read_entry(buf, c.chunk.fd, start, len, punt);
            slot.inflight += 1;
            let ud = ud(Op::ColdRead, key, slot.gen);
            self.push(entry.user_data(ud));
        }
    }

    pub(super) fn on_cold_read(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        let Write::Cold(ColdIo {
            chunk,
            stage: ColdStage::Reading { since, .. },
        }) = &slot.write
        else {
            return;
        };
        let disk = chunk.disk;
        if let Some(cold) = self.cold.as_mut() {
            cold.queues.finished(disk);
        }
        self.ctx
            .shared
            .metrics()
            .cold_read(disk, since.elapsed(), res.max(0) as u64);
        if slot.closing {
            if slot.inflight == 0 {
                self.finish_close(key);
            } else {
                self.cold_pump();
            }
            return;
        }
        self.cold_read_done(key, res);
    }

    /// The chunk's bytes are in its buffer (or the read failed): send them, reading the next
    /// buffer's worth meanwhile.
    pub(super) fn cold_read_done(&mut self, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Write::Cold(c) = &mut slot.write else {
            return;
        };
        let ColdStage::Reading { buf, skip, .. } = c.stage else {
            return;
        };
        let disk = c.chunk.disk;
        let next = if res < 0 {
            if -res != libc::ECANCELED {
                tracing::warn!(disk, error = %io::Error::from_raw_os_error(-res), "direct read failed; closing connection");
            }
            let media = oca_store::is_media_error(-res);
            policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, media)
            })
        } else if res as u32 <= skip {
            // Nothing of the part came back: the file is shorter than when it was opened.
            tracing::warn!(
                offset = c.chunk.offset,
                "file shorter than when opened; closing connection"
            );
            policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, false)
            })
        } else {
            let avail = (res as u32 - skip).min(c.chunk.len.min(u64::from(u32::MAX)) as u32);
            let rate = self.ctx.shared.cold.min_send_rate.max(1);
            let hold = std::time::Duration::from_secs_f64(f64::from(avail) / rate as f64);
            c.stage = ColdStage::Sending(Sending {
                buf,
                skip,
                avail,
                sent: 0,
                hold_until: self.ctx.now + hold.max(MIN_HOLD),
                notifs: 0,
                copy_rest: false,
                send: SendState::Idle,
                ahead: None,
            });
            slot.conn.extend_send(&self.ctx);
            self.read_ahead(key);
            return self.cold_send(key);
        };
        self.cold_end(key);
        self.act(key, next);
    }

    /// Starts reading the part's next buffer while this one is sent, when the part goes on past
    /// it and a buffer and the disk are free with nobody waiting for either: a stream then has
    /// its disk and its socket busy at once, and never at another stream's expense.
    pub(super) fn read_ahead(&mut self, key: usize) {
        let (Some(cold), Some(slot)) = (self.cold.as_mut(), self.slots.get_mut(key)) else {
            return;
        };
        if slot.orphan.is_some() {
            return; // One read ahead in flight at a time: see Slot::orphan.
        }
        let Write::Cold(ColdIo {
            chunk,
            stage: ColdStage::Sending(s),
        }) = &mut slot.write
        else {
            return;
        };
        let (chunk, avail) = (*chunk, u64::from(s.avail));
        if s.ahead.is_some()
            || chunk.len <= avail
            || !cold.queues.has_room(chunk.disk)
            || cold.queues.any_waiting()
        {
            return;
        }
        let Some(buf) = cold.pool.take() else {
            return; // none free, or none mapped: no read ahead is worth mapping them
        };
        let offset = chunk.offset + avail;
        let (start, len, skip) =
            aligned_read(offset, chunk.len - avail, cold.pool.size, chunk.align);
        cold.queues.started(chunk.disk);
        let entry = cold
            .pool
            .read_entry(buf, chunk.fd, start, len, cold.punt[chunk.disk]);
        s.ahead = Some(Ahead {
            fd: chunk.fd,
            direct: slot.conn.direct_file(),
            offset,
            disk: chunk.disk,
            buf,
            skip,
            since: Instant::now(),
            res: None,
        });
        slot.inflight += 1;
        let ud = ud(Op::ColdAhead, key, slot.gen);
        self.push(entry.user_data(ud));
    }

    /// A read ahead completed: an orphan's buffer goes back; the chunk's own is kept for the
    /// next chunk (given back if the slot is closing). One the next chunk adopted while it was
    /// in flight is that chunk's read.
    pub(super) fn on_cold_ahead(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        let (disk, since, release) = if let Some(o) = slot.orphan.take() {
            (o.disk, o.since, Some(o.buf))
        } else if let Write::Cold(ColdIo {
            stage: ColdStage::Sending(s),
            ..
        }) = &mut slot.write
        {
            let Some(a) = s.ahead.as_mut().filter(|a| a.res.is_none()) else {
                return self.on_cold_read(gen, key, res);
            };
            a.res = Some(res);
            let (disk, since, buf) = (a.disk, a.since, a.buf);
            if slot.closing {
                s.ahead = None;
            }
            (disk, since, slot.closing.then_some(buf))
        } else {
            return self.on_cold_read(gen, key, res);
        };
        slot.completed();
        self.ctx
            .shared
            .metrics()
            .cold_read(disk, since.elapsed(), res.max(0) as u64);
        let Some(cold) = self.cold.as_mut() else {
            return;
        };
        cold.queues.finished(disk);
        if let Some(buf) = release {
            cold.pool.give(buf);
            self.ctx.stats().cold_ahead(false);
            if slot.closing && slot.inflight == 0 {
                return self.finish_close(key);
            }
        }
        self.cold_pump();
    }

    /// Lets go of a read ahead nobody will adopt: its buffer now, or once its read completes.
    pub(super) fn drop_ahead(&mut self, key: usize, a: Ahead) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if a.res.is_none() {
            debug_assert!(slot.orphan.is_none(), "two read aheads in flight");
            slot.orphan = Some(Orphan {
                buf: a.buf,
                disk: a.disk,
                since: a.since,
                _direct: a.direct,
            });
            return;
        }
        self.ctx.stats().cold_ahead(false);
        if let Some(cold) = self.cold.as_mut() {
            cold.pool.give(a.buf);
        }
        self.cold_pump();
    }

    /// Sends what is left of the chunk's bytes in its buffer.
    pub(super) fn cold_send(&mut self, key: usize) {
        let Some(cold) = self.cold.as_ref() else {
            return self.close(key);
        };
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Write::Cold(c) = &mut slot.write else {
            return;
        };
        let ColdStage::Sending(s) = &mut c.stage else {
            return self.close(key);
        };
        if s.sent < s.avail && self.ctx.now >= s.hold_until {
            // Too slow a reader to keep a buffer others wait for: once the kernel has let go of
            // it (a trailing notification comes back here), the rest goes through the page cache.
            if s.notifs == 0 {
                self.cold_finish(key, Some(Reason::Slow));
            }
            return;
        }
        // SAFETY: skip + sent < skip + avail <= the bytes read, all inside this buffer.
        let ptr = unsafe { cold.pool.ptr(s.buf).add((s.skip + s.sent) as usize) };
        let len = s.avail - s.sent;
        let fd = types::Fd(slot.conn.sock().as_raw_fd());
        let zero_copy = cold.send_zc && c.chunk.zero_copy && !s.copy_rest;
        let entry = if zero_copy {
            let fixed = cold.pool.registered.then_some(s.buf);
            opcode::SendZc::new(fd, ptr, len).buf_index(fixed).build()
        } else {
            opcode::Send::new(fd, ptr, len).build()
        };
        s.send = SendState::InFlight {
            asked: len,
            cancelling: false,
        };
        self.ctx.stats().cold_send(zero_copy);
        slot.inflight += 1;
        let ud = ud(Op::ColdSend, key, slot.gen);
        self.push(entry.user_data(ud));
    }

    pub(super) fn on_cold_send(&mut self, gen: u32, key: usize, res: i32, flags: u32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        let Write::Cold(ColdIo {
            stage: ColdStage::Sending(s),
            ..
        }) = &mut slot.write
        else {
            return;
        };
        if cqueue::notif(flags) {
            // The kernel posts a send's notification after its result (io_uring orders them).
            s.notifs = s.notifs.saturating_sub(1);
        } else {
            let (asked, cancelled) = match std::mem::replace(&mut s.send, SendState::Idle) {
                SendState::InFlight { asked, cancelling } => (asked, cancelling),
                _ => (0, false),
            };
            if cqueue::more(flags) {
                // A zero-copy send: its notification follows when the kernel lets go.
                s.notifs += 1;
                slot.inflight += 1;
            }
            match res {
                n if n > 0 => {
                    s.copy_rest |= cqueue::more(flags) && (n as u32) < asked;
                    s.sent += n as u32;
                }
                // Cancelled by cold_deadlines: the reader is too slow; cold_send moves it on.
                e if -e == libc::ECANCELED && cancelled && !slot.closing => {}
                e if -e == libc::EAGAIN && !slot.closing => {
                    s.send = SendState::Blocked;
                    slot.inflight += 1;
                    let fd = types::Fd(slot.conn.sock().as_raw_fd());
                    let poll = opcode::PollAdd::new(fd, libc::POLLOUT as u32)
                        .build()
                        .user_data(ud(Op::Poll, key, slot.gen));
                    return self.push(poll);
                }
                _ => {
                    if !slot.closing {
                        return self.close(key);
                    }
                }
            }
        }
        if slot.closing {
            if slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        if s.send != SendState::Idle {
            return; // A send's result or the socket's room comes first.
        }
        if s.sent < s.avail {
            // The rest of the buffer goes now; earlier sends' notifications may still trail.
            return self.cold_send(key);
        }
        if s.notifs > 0 {
            return; // Every byte is queued, but the buffer is the kernel's until it lets go.
        }
        self.cold_finish(key, None);
    }

    /// The chunk's buffer is free of the kernel: gives it back and lets the connection go on,
    /// past the bytes sent from it, on the cold path or (`fallback`) through the page cache.
    /// Its next chunk adopts the read ahead, if it fits; otherwise it is let go.
    pub(super) fn cold_finish(&mut self, key: usize, fallback: Option<Reason>) {
        let (sent, ahead) = self.cold_end(key);
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| match fallback {
            None => slot.conn.on_body_sent(sent, ctx),
            Some(reason) if slot.conn.cold_abandoned(sent, reason, ctx) => {
                slot.conn.on_writable(ctx)
            }
            Some(_) => Next::Close,
        });
        match next {
            Next::Cold(chunk) => self.cold_start(key, chunk, ahead),
            next => {
                if let Some(a) = ahead {
                    self.drop_ahead(key, a);
                }
                self.act(key, next);
            }
        }
    }

    /// Moves parts that waited past cold.wait_timeout for a buffer or their disk, and blocked
    /// readers past their hold, to the page cache (checked every tick).
    pub(super) fn cold_deadlines(&mut self) {
        if self.cold.is_none() {
            return;
        }
        let now = self.ctx.now;
        let wait = self.ctx.shared.cold.wait_timeout;
        let mut waited = Vec::new();
        let mut slow = Vec::new();
        let mut cancels = Vec::new();
        for (key, slot) in self.slots.iter() {
            let Write::Cold(c) = &slot.write else {
                continue;
            };
            if slot.closing {
                continue;
            }
            match &c.stage {
                ColdStage::Queued { since } if now >= *since + wait => waited.push(key),
                ColdStage::Sending(s) if now >= s.hold_until => match s.send {
                    // A send waiting for the reader holds the buffer: cancel it (it has sent
                    // nothing while it waited); its completion moves the reader on.
                    SendState::InFlight {
                        cancelling: false, ..
                    } => cancels.push(key),
                    SendState::Blocked if s.notifs == 0 => slow.push(key),
                    _ => {}
                },
                _ => {}
            }
        }
        for key in cancels {
            let slot = &mut self.slots[key];
            if let Write::Cold(ColdIo {
                stage: ColdStage::Sending(s),
                ..
            }) = &mut slot.write
            {
                if let SendState::InFlight { cancelling, .. } = &mut s.send {
                    *cancelling = true;
                }
            }
            let target = ud(Op::ColdSend, key, slot.gen);
            self.push(
                opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(Tag::worker(Op::Cancel).encode()),
            );
        }
        for key in waited {
            let slot = &mut self.slots[key];
            // Another's close may have let this chunk have a buffer meanwhile.
            let Write::Cold(ColdIo {
                chunk,
                stage: ColdStage::Queued { .. },
            }) = &slot.write
            else {
                continue;
            };
            if let Some(cold) = self.cold.as_mut() {
                cold.queues.cancel(chunk.disk, (key, slot.gen));
            }
            slot.write = Write::Idle;
            let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                if slot.conn.cold_abandoned(0, Reason::Busy, ctx) {
                    slot.conn.on_writable(ctx)
                } else {
                    Next::Close
                }
            });
            self.act(key, next);
        }
        for key in slow {
            let (sent, ahead) = self.cold_end(key);
            // Its writability poll stays armed; when it fires, the connection goes on through
            // the page cache.
            self.slots[key].write = Write::Poll;
            if let Some(a) = ahead {
                self.drop_ahead(key, a);
            }
            let slot = &mut self.slots[key];
            let ok = policy::guarded(&mut self.ctx, false, |ctx| {
                slot.conn.cold_abandoned(sent, Reason::Slow, ctx)
            });
            if !ok {
                self.close(key);
            }
        }
    }

    /// Ends the connection's cold chunk: gives its buffer back and lets the next waiter have it.
    /// Returns the bytes sent from it and the read ahead beside it, for the caller to hand on
    /// or let go.
    pub(super) fn cold_end(&mut self, key: usize) -> (u64, Option<Ahead>) {
        let mut out = (0, None);
        if let Some(slot) = self.slots.get_mut(key) {
            match std::mem::take(&mut slot.write) {
                Write::Cold(c) => {
                    let buf = match c.stage {
                        ColdStage::Queued { .. } => None,
                        ColdStage::Reading { buf, .. } => Some(buf),
                        ColdStage::Sending(s) => {
                            out = (u64::from(s.sent), s.ahead);
                            Some(s.buf)
                        }
                    };
                    if let (Some(cold), Some(buf)) = (self.cold.as_mut(), buf) {
                        cold.pool.give(buf);
                    }
                }
                other => slot.write = other,
            }
        }
        self.cold_pump();
        out
    }
}
