//! The cold pipeline: file parts read with O_DIRECT into the worker's registered buffers and
//! sent from there (zero-copy where the socket allows), so the long tail does not evict the page
//! cache. Per disk, reads queue for a buffer and a place in the disk's queue; while one buffer
//! is sent, the part's next is read ahead; a reader too slow to keep a shared buffer, or a part
//! that waited too long, goes back to the page cache midway (`Conn::cold_abandoned`).
//!
//! This module is the one over the ~600-line guideline: the pipeline is one state machine per
//! slot (queued → reading → sending → notified → released, with the read ahead beside it), and
//! its transitions read best in one place; the policy deciding which parts go this way is
//! `cold`, the buffers and queues are `engine::cold_io`.
//!
//! Invariant: a buffer is the kernel's from the read's submission until the last zero-copy
//! notification of its sends; only then does it go back to the pool.

use std::io;
use std::os::fd::AsRawFd;
use std::os::fd::RawFd;
use std::time::Instant;

use io_uring::{cqueue, opcode, types};

use crate::cold::{ColdMode, Reason};
use crate::engine::cold_io::{aligned_read, DiskQueues, Pool};
use crate::engine::contract::{ColdChunk, Next};
use crate::engine::policy;
use crate::engine::uring::probe::Support;
use crate::engine::uring::tag::{Op, Tag};
use crate::engine::uring::{ud, Loop};
use crate::worker::WorkerCtx;

/// The shortest a reader may hold a cold buffer, however few its bytes: a tick and a round trip
/// or two of slack.
pub(super) const MIN_HOLD: std::time::Duration = std::time::Duration::from_secs(1);

/// A direct read of a long part's next buffer, started while the current buffer is sent, so
/// one stream keeps the disk and the socket busy at once. It owns its buffer until the next
/// chunk adopts it.
pub(super) struct Ahead {
    /// The file and the first byte of the part the buffer will hold (the next chunk's offset).
    pub(super) fd: RawFd,
    /// Keeps `fd` open while the read is in flight, whatever the connection does meanwhile (a
    /// read handed to the kernel's workers may look the descriptor up only when it runs).
    pub(super) _direct: Option<std::rc::Rc<crate::open_files::Direct>>,
    pub(super) offset: u64,
    pub(super) disk: usize,
    pub(super) buf: u16,
    pub(super) skip: u32,
    pub(super) read_at: Instant,
    /// What the read returned, once it has.
    pub(super) res: Option<i32>,
    /// Nobody will adopt it (the connection moved on): the buffer goes back when it completes.
    pub(super) orphan: bool,
}

/// One cold-path chunk in progress on a connection.
pub(super) struct ColdIo {
    pub(super) chunk: ColdChunk,
    /// The pool buffer it holds, once it has one.
    pub(super) buf: Option<u16>,
    /// Bytes to skip at the buffer's front (alignment), bytes of the part in it, bytes sent.
    pub(super) skip: u32,
    pub(super) avail: u32,
    pub(super) sent: u32,
    /// A send is in flight (its result not yet back): never two at once, or bytes repeat.
    pub(super) sending: bool,
    /// Zero-copy notifications still to come: the buffer is the kernel's until then.
    pub(super) notifs: u32,
    /// When the read was submitted (disk latency).
    pub(super) read_at: Option<Instant>,
    /// Waiting for the socket to take more (a send returned EAGAIN).
    pub(super) blocked: bool,
    /// When it began waiting for a buffer and its disk (cold.wait_timeout runs from here).
    pub(super) queued_at: Instant,
    /// Once its bytes are in the buffer: until when the reader may take them and keep the
    /// buffer (cold.min_send_kib); past it, the rest of the part goes through the page cache.
    pub(super) hold_until: Option<Instant>,
    /// A send waiting on a reader past its hold is being cancelled.
    pub(super) cancelling: bool,
    /// The last send asked for this many bytes; a zero-copy send that took fewer means the
    /// reader is not keeping up, and the rest goes by copy: bytes it has not taken stay pinned
    /// in the buffer only as far as the first send queued them.
    pub(super) asked: u32,
    pub(super) copy_rest: bool,
}

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
    /// Queues a cold chunk behind its disk; refused at once when the disk has failed.
    pub(super) fn cold_start(&mut self, key: usize, chunk: ColdChunk) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if self.ctx.shared.process.disks.failed(chunk.disk) {
            let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, false)
            });
            return self.act(key, next);
        }
        let Some(cold) = self.cold.as_mut() else {
            return self.close(key);
        };
        slot.cold = Some(ColdIo {
            chunk,
            buf: None,
            skip: 0,
            avail: 0,
            sent: 0,
            sending: false,
            notifs: 0,
            read_at: None,
            blocked: false,
            queued_at: self.ctx.now,
            hold_until: None,
            cancelling: false,
            asked: 0,
            copy_rest: false,
        });
        let ahead = slot.ahead.take_if(|a| {
            !a.orphan && a.fd == chunk.fd && a.offset == chunk.offset && a.disk == chunk.disk
        });
        if let (Some(a), Some(c)) = (ahead, slot.cold.as_mut()) {
            // The bytes were read (or are being read) ahead: no queue, no new read.
            self.ctx.stats().cold_ahead(true);
            c.buf = Some(a.buf);
            c.skip = a.skip;
            return match a.res {
                Some(res) => self.cold_read_done(key, res),
                None => {
                    // Its completion (Op::ColdAhead) carries on as this chunk's read.
                    c.read_at = Some(a.read_at);
                    slot.cancel_op = Op::ColdAhead;
                }
            };
        }
        let gen = slot.gen;
        if !(cold.queues.has_room(chunk.disk) && cold.pool.any_free())
            || cold.queues.has_waiters(chunk.disk)
        {
            self.ctx.shared.metrics().cold_queued(chunk.disk);
        }
        cold.queues.wait(chunk.disk, (key, gen));
        // A read ahead for some other part is of no use now.
        self.drop_ahead(key);
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
            let live = self.slots.get(key).is_some_and(|s| {
                s.gen == gen && !s.closing && s.cold.as_ref().is_some_and(|c| c.buf.is_none())
            });
            if !live {
                continue;
            }
            let buf = cold.pool.take().expect("checked free above");
            cold.queues.started(disk);
            let slot = self.slots.get_mut(key).expect("checked live above");
            let c = slot.cold.as_mut().expect("checked live above");
            let (start, len, skip) =
                aligned_read(c.chunk.offset, c.chunk.len, cold.pool.size, c.chunk.align);
            c.buf = Some(buf);
            c.skip = skip;
            c.read_at = Some(Instant::now());
            let punt = cold.punt[c.chunk.disk];
            let entry = cold.pool.read_entry(buf, c.chunk.fd, start, len, punt);
            slot.inflight += 1;
            slot.cancel_op = Op::ColdRead;
            let ud = ud(Op::ColdRead, key, slot.gen);
            self.push(entry.user_data(ud));
        }
    }

    pub(super) fn on_cold_read(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        let disk = c.chunk.disk;
        if let Some(cold) = self.cold.as_mut() {
            cold.queues.finished(disk);
        }
        if let Some(at) = c.read_at.take() {
            self.ctx
                .shared
                .metrics()
                .cold_read(disk, at.elapsed(), res.max(0) as u64);
        }
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
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        let disk = c.chunk.disk;
        let next = if res < 0 {
            if -res != libc::ECANCELED {
                tracing::warn!(disk, error = %io::Error::from_raw_os_error(-res), "direct read failed; closing connection");
            }
            let media = oca_store::is_media_error(-res);
            Some(policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, media)
            }))
        } else if res as u32 <= c.skip {
            // Nothing of the part came back: the file is shorter than when it was opened.
            tracing::warn!(
                offset = c.chunk.offset,
                "file shorter than when opened; closing connection"
            );
            Some(policy::guarded(&mut self.ctx, Next::Close, |ctx| {
                slot.conn.on_body_failed(ctx, false)
            }))
        } else {
            c.avail = (res as u32 - c.skip).min(c.chunk.len.min(u64::from(u32::MAX)) as u32);
            let rate = self.ctx.shared.cold.min_send_rate.max(1);
            let hold = std::time::Duration::from_secs_f64(f64::from(c.avail) / rate as f64);
            c.hold_until = Some(self.ctx.now + hold.max(MIN_HOLD));
            slot.conn.extend_send(&self.ctx);
            None
        };
        match next {
            Some(next) => {
                self.cold_release(key);
                self.act(key, next);
            }
            None => {
                self.read_ahead(key);
                self.cold_send(key);
            }
        }
    }

    /// Starts reading the part's next buffer while this one is sent, when the part goes on past
    /// it and a buffer and the disk are free with nobody waiting for either: a stream then has
    /// its disk and its socket busy at once, and never at another stream's expense.
    pub(super) fn read_ahead(&mut self, key: usize) {
        let (Some(cold), Some(slot)) = (self.cold.as_mut(), self.slots.get_mut(key)) else {
            return;
        };
        let Some(c) = slot.cold.as_ref() else {
            return;
        };
        let (chunk, avail) = (c.chunk, u64::from(c.avail));
        if slot.ahead.is_some()
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
        slot.inflight += 1;
        slot.ahead = Some(Ahead {
            fd: chunk.fd,
            _direct: slot.conn.direct_file(),
            offset,
            disk: chunk.disk,
            buf,
            skip,
            read_at: Instant::now(),
            res: None,
            orphan: false,
        });
        let ud = ud(Op::ColdAhead, key, slot.gen);
        self.push(entry.user_data(ud));
    }

    /// A read ahead completed: kept for the next chunk, or its buffer given back when nobody
    /// will adopt it. One the next chunk adopted while it was in flight is that chunk's read.
    pub(super) fn on_cold_ahead(&mut self, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        if slot.ahead.is_none() {
            return self.on_cold_read(gen, key, res);
        }
        slot.completed();
        let a = slot.ahead.as_mut().expect("checked above");
        a.res = Some(res);
        let (disk, buf, took) = (a.disk, a.buf, a.read_at.elapsed());
        self.ctx
            .shared
            .metrics()
            .cold_read(disk, took, res.max(0) as u64);
        let Some(cold) = self.cold.as_mut() else {
            return;
        };
        cold.queues.finished(disk);
        if a.orphan || slot.closing {
            slot.ahead = None;
            cold.pool.give(buf);
            self.ctx.stats().cold_ahead(false);
            if slot.closing && slot.inflight == 0 {
                return self.finish_close(key);
            }
        }
        self.cold_pump();
    }

    /// Lets go of a read ahead nobody will adopt: its buffer now, or once its read completes.
    pub(super) fn drop_ahead(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Some(a) = slot.ahead.as_mut() else {
            return;
        };
        if a.res.is_none() {
            a.orphan = true;
            return;
        }
        let buf = a.buf;
        slot.ahead = None;
        self.ctx.stats().cold_ahead(false);
        if let Some(cold) = self.cold.as_mut() {
            cold.pool.give(buf);
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
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        let Some(buf) = c.buf else {
            return self.close(key);
        };
        if c.sent < c.avail && c.hold_until.is_some_and(|t| self.ctx.now >= t) {
            // Too slow a reader to keep a buffer others wait for: once the kernel has let go of
            // it (a trailing notification comes back here), the rest goes through the page cache.
            if c.notifs == 0 {
                self.cold_finish(key, Some(Reason::Slow));
            }
            return;
        }
        // SAFETY: skip + sent < skip + avail <= the bytes read, all inside this buffer.
        let ptr = unsafe { cold.pool.ptr(buf).add((c.skip + c.sent) as usize) };
        let len = c.avail - c.sent;
        let fd = types::Fd(slot.conn.sock().as_raw_fd());
        let zero_copy = cold.send_zc && c.chunk.zero_copy && !c.copy_rest;
        c.asked = len;
        let entry = if zero_copy {
            let fixed = cold.pool.registered.then_some(buf);
            opcode::SendZc::new(fd, ptr, len).buf_index(fixed).build()
        } else {
            opcode::Send::new(fd, ptr, len).build()
        };
        c.sending = true;
        self.ctx.stats().cold_send(zero_copy);
        slot.inflight += 1;
        slot.cancel_op = Op::ColdSend;
        let ud = ud(Op::ColdSend, key, slot.gen);
        self.push(entry.user_data(ud));
    }

    pub(super) fn on_cold_send(&mut self, gen: u32, key: usize, res: i32, flags: u32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            return;
        };
        slot.completed();
        let Some(c) = slot.cold.as_mut() else {
            return;
        };
        if cqueue::notif(flags) {
            // The kernel posts a send's notification after its result (io_uring orders them).
            c.notifs = c.notifs.saturating_sub(1);
        } else {
            c.sending = false;
            let cancelled = std::mem::take(&mut c.cancelling);
            if cqueue::more(flags) {
                // A zero-copy send: its notification follows when the kernel lets go.
                c.notifs += 1;
                slot.inflight += 1;
            }
            match res {
                n if n > 0 => {
                    c.copy_rest |= cqueue::more(flags) && (n as u32) < c.asked;
                    c.sent += n as u32;
                }
                // Cancelled by cold_deadlines: the reader is too slow; cold_send moves it on.
                e if -e == libc::ECANCELED && cancelled && !slot.closing => {}
                e if -e == libc::EAGAIN && !slot.closing => {
                    c.blocked = true;
                    slot.poll_armed = true;
                    slot.cancel_op = Op::Poll;
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
        if c.sending || c.blocked {
            return; // A send's result or the socket's room comes first.
        }
        if c.sent < c.avail {
            // The rest of the buffer goes now; earlier sends' notifications may still trail.
            return self.cold_send(key);
        }
        if c.notifs > 0 {
            return; // Every byte is queued, but the buffer is the kernel's until it lets go.
        }
        self.cold_finish(key, None);
    }

    /// The chunk's buffer is free of the kernel: gives it back and lets the connection go on,
    /// past the bytes sent from it, on the cold path or (`fallback`) through the page cache.
    pub(super) fn cold_finish(&mut self, key: usize, fallback: Option<Reason>) {
        let sent = self
            .slots
            .get(key)
            .and_then(|s| s.cold.as_ref())
            .map_or(0, |c| u64::from(c.sent));
        self.cold_release(key);
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
        self.act(key, next);
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
            let Some(c) = slot.cold.as_ref().filter(|_| !slot.closing) else {
                continue;
            };
            if c.buf.is_none() && now >= c.queued_at + wait {
                waited.push(key);
            } else if c.hold_until.is_some_and(|t| now >= t) {
                if c.sending && !c.cancelling {
                    // A send waiting for the reader holds the buffer: cancel it (it has sent
                    // nothing while it waited); its completion moves the reader on.
                    cancels.push(key);
                } else if c.blocked && !c.sending && c.notifs == 0 {
                    slow.push(key);
                }
            }
        }
        for key in cancels {
            let slot = &mut self.slots[key];
            if let Some(c) = slot.cold.as_mut() {
                c.cancelling = true;
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
            if let (Some(c), Some(cold)) = (slot.cold.take(), self.cold.as_mut()) {
                cold.queues.cancel(c.chunk.disk, (key, slot.gen));
            }
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
            // Its writability poll stays armed; when it fires, the connection goes on through
            // the page cache (the Poll completion finds no cold chunk).
            let sent = self.slots[key]
                .cold
                .as_ref()
                .map_or(0, |c| u64::from(c.sent));
            self.cold_release(key);
            self.drop_ahead(key);
            let slot = &mut self.slots[key];
            let ok = policy::guarded(&mut self.ctx, false, |ctx| {
                slot.conn.cold_abandoned(sent, Reason::Slow, ctx)
            });
            if !ok {
                self.close(key);
            }
        }
    }

    /// Gives the connection's cold buffer back and lets the next waiter have it.
    pub(super) fn cold_release(&mut self, key: usize) {
        let buf = self
            .slots
            .get_mut(key)
            .and_then(|s| s.cold.take())
            .and_then(|c| c.buf);
        if let (Some(cold), Some(buf)) = (self.cold.as_mut(), buf) {
            cold.pool.give(buf);
        }
        self.cold_pump();
    }
}
