//! The worker's loop: submit and wait, dispatch each completion by its tag to the job that
//! owns the operation, the tick (timeouts, disk deadlines, the cold path's deadlines, drain),
//! and the teardown that waits for every operation before the memory they point into goes.
//!
//! The tick, drain and heartbeat are the shared policy of both engines (`engine::policy`); what
//! is io_uring's own here is that each connection's operations must all complete before its
//! slot goes, and that a worker may stop only once nothing in flight points into its buffers.

use std::io;
use std::time::Instant;

use io_uring::{opcode, types};

use crate::engine::contract::Next;
use crate::engine::policy;
use crate::engine::uring::tag::{Op, Tag};
use crate::engine::uring::{ud, Loop, BUF_GROUP, BUF_SIZE, RING_ENTRIES};

/// How long a stopping worker waits for its cancelled operations to complete.
pub(super) const TEARDOWN: std::time::Duration = std::time::Duration::from_secs(2);

impl Loop {
    pub(super) fn run(&mut self) -> io::Result<()> {
        let mut batch: Vec<(u64, i32, u32)> = Vec::with_capacity(RING_ENTRIES as usize);
        loop {
            self.turn(&mut batch)?;
            self.give_back_buffers();
            self.flush_backlog();
            if self.finished() {
                return Ok(());
            }
        }
    }

    /// Submits what is queued, waits for at least one completion and handles all that came.
    pub(super) fn turn(&mut self, batch: &mut Vec<(u64, i32, u32)>) -> io::Result<()> {
        match self.ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
            Err(e) => return Err(e),
        }
        self.ctx.now = Instant::now();
        batch.clear();
        batch.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        for &(user_data, res, flags) in batch.iter() {
            self.complete(user_data, res, flags);
        }
        Ok(())
    }

    pub(super) fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        let Some(Tag { op, key, gen }) = Tag::decode(user_data) else {
            return;
        };
        match op {
            Op::Accept => self.on_accept(key.min(1), res, flags),
            Op::Recv | Op::Poll | Op::SpliceIn | Op::SpliceOut => {
                self.on_conn_op(op, gen, key, res, flags)
            }
            Op::ColdRead => self.on_cold_read(gen, key, res),
            Op::ColdSend => self.on_cold_send(gen, key, res, flags),
            Op::ColdAhead => self.on_cold_ahead(gen, key, res),
            Op::Open | Op::OpenRetry => self.on_open(op, gen, key, res),
            Op::FileRead => self.on_file_read(gen, key, res),
            Op::Tick => self.on_tick(),
            Op::Provide => {
                self.providing = self.providing.saturating_sub(1);
                if res < 0 {
                    tracing::error!(error = %io::Error::from_raw_os_error(-res), "providing receive buffers failed");
                }
            }
            _ => {}
        }
    }

    /// Cancels every connection and waits, up to [`TEARDOWN`], until no operation that points
    /// into the worker's memory is in flight; false when some still are (a read stuck on a hung
    /// disk), and then the memory must be leaked, not freed.
    pub(super) fn quiesce(&mut self) -> bool {
        self.stopping = true;
        self.listeners = [None, None];
        let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key);
        }
        let deadline = Instant::now() + TEARDOWN;
        let mut batch: Vec<(u64, i32, u32)> = Vec::new();
        while !(self.slots.is_empty() && self.providing == 0 && self.backlog.is_empty()) {
            if Instant::now() >= deadline {
                return false;
            }
            self.flush_backlog();
            // The tick re-arms itself, so no wait outlasts it.
            if self.turn(&mut batch).is_err() {
                return false;
            }
            self.free_bufs.clear();
            self.starved.clear();
        }
        true
    }

    pub(super) fn arm_tick(&mut self) {
        let entry = opcode::Timeout::new(&*self.tick as *const types::Timespec)
            .build()
            .user_data(Tag::worker(Op::Tick).encode());
        self.push(entry);
    }

    pub(super) fn give_back_buffers(&mut self) {
        while let Some(bid) = self.free_bufs.pop() {
            let addr = self.recv_bufs.at(bid as usize * BUF_SIZE);
            let entry = opcode::ProvideBuffers::new(addr, BUF_SIZE as i32, 1, BUF_GROUP, bid)
                .build()
                .user_data(Tag::worker(Op::Provide).encode());
            self.providing += 1;
            self.push(entry);
        }
        for key in std::mem::take(&mut self.starved) {
            self.act(key, Next::Read);
        }
    }

    pub(super) fn on_tick(&mut self) {
        if self.ticker.tick(&mut self.ctx) {
            for i in 0..2 {
                if self.accept_armed[i] {
                    self.push(
                        opcode::AsyncCancel::new(ud(Op::Accept, i, 0))
                            .build()
                            .user_data(Tag::worker(Op::Cancel).encode()),
                    );
                } else {
                    self.listeners[i] = None;
                }
            }
        }
        let mut expired = Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            // Waiting for a cold buffer or a direct read is the disk's time, not the client's:
            // the send timeout starts again once the bytes are in memory.
            if !slot.closing
                && (!slot.write.on_disk() || self.ctx.draining())
                && policy::expired(&mut slot.conn, &mut self.ctx)
            {
                expired.push(key);
            }
        }
        for key in expired {
            self.close(key);
        }
        self.disk_deadlines();
        self.cold_deadlines();
        let now = self.ctx.now;
        // Pipes not taken from the pool for a while go: an idle worker holds none.
        if now.saturating_duration_since(self.pipes_used) > std::time::Duration::from_secs(5) {
            self.pipes.clear();
        }
        if let Some(cold) = self.cold.as_mut() {
            cold.pool.release_idle(&self.ring, now);
        }
        if !self.ctx.draining() {
            self.arm_accepts();
        }
        self.arm_tick();
    }

    pub(super) fn finished(&self) -> bool {
        self.ticker.finished(self.ctx.now, self.slots.len())
    }
}
