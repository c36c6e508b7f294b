//! Opening content files off the worker's thread (IORING_OP_OPENAT2, 5.6): one disk after
//! another in placement order until one has the file, skipping failed disks. An open on a disk
//! that hangs is given up on (the disk marked failed) and retried on the next disk once; the
//! abandoned open may still complete, and is told apart by its tag (`Op::OpenRetry`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, types};

use crate::engine::contract::Next;
use crate::engine::policy;
use crate::engine::uring::slot::{OpenOp, Write};
use crate::engine::uring::tag::Op;
use crate::engine::uring::{ud, Loop};

impl Loop {
    /// Starts opening the file the connection waits for, on the first disk that may hold it.
    pub(super) fn open_start(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if slot.write.busy() {
            return self.asked_while_busy(key, "open");
        }
        let Some(id) = slot.conn.opening().map(str::to_string) else {
            return self.close(key);
        };
        let Ok(cid) = oca_store::ContentId::parse(&id) else {
            return self.close(key);
        };
        let disks = &self.ctx.shared.process.disks;
        let candidates = self.ctx.shared.store.candidates(cid, &|d| disks.failed(d));
        let how = types::OpenHow::new()
            .flags((oca_store::CONTENT_OPEN_FLAGS | libc::O_CLOEXEC) as u64)
            .resolve(oca_store::beneath::RESOLVE);
        let op = Box::new(OpenOp {
            path: oca_store::content_path(cid),
            id,
            how,
            candidates,
            at: 0,
            started: self.ctx.now,
            abandoned: false,
        });
        let poll = matches!(slot.write, Write::Poll);
        slot.write = Write::Open { op, poll };
        self.open_next(key);
    }

    /// Submits the open on the current candidate disk; with none left, the request is answered
    /// 404.
    pub(super) fn open_next(&mut self, key: usize) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let Write::Open { op, .. } = &mut slot.write else {
            return;
        };
        // Disks marked failed meanwhile (one hung under this very open) are skipped.
        let disks = &self.ctx.shared.process.disks;
        while op.candidates.get(op.at).is_some_and(|&d| disks.failed(d)) {
            op.at += 1;
        }
        let Some(&disk) = op.candidates.get(op.at) else {
            return self.open_done(key, Err(oca_store::OpenError::NotFound));
        };
        op.started = self.ctx.now;
        op.abandoned |= slot.stale_opens > 0;
        let kind = op.kind();
        let dir = self.ctx.shared.store.disks()[disk].objects_dir();
        // The kernel copies the path and `how` when it takes the entry; both live in the slot
        // until the completion anyway (the entry may wait in the backlog before that).
        let entry = opcode::OpenAt2::new(types::Fd(dir.as_raw_fd()), op.path.as_ptr(), &op.how)
            .build()
            .user_data(ud(kind, key, slot.gen));
        slot.inflight += 1;
        self.push(entry);
    }

    pub(super) fn on_open(&mut self, kind: Op, gen: u32, key: usize, res: i32) {
        let Some(slot) = self.slots.get_mut(key).filter(|s| s.gen == gen) else {
            if res >= 0 {
                // SAFETY: the kernel opened this descriptor for a connection that is gone.
                drop(unsafe { OwnedFd::from_raw_fd(res) });
            }
            return;
        };
        slot.completed();
        let opened = if res >= 0 {
            // SAFETY: the kernel just opened this descriptor for us; nothing else owns it.
            Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(res) }))
        } else {
            Err(-res)
        };
        // An open given up on (its disk hung) that completes after all: not this request's,
        // nor the next one's.
        let stale = kind == Op::Open && slot.stale_opens > 0;
        if stale {
            slot.stale_opens -= 1;
        }
        if slot.closing || stale {
            if slot.closing && slot.inflight == 0 {
                self.finish_close(key);
            }
            return;
        }
        let Write::Open { op, .. } = &mut slot.write else {
            return;
        };
        let disk = op.candidates[op.at];
        let outcome = match opened {
            Ok(file) => self.ctx.shared.store.adopt(file, disk),
            Err(errno) => Err(oca_store::OpenError::from_os(errno, disk)),
        };
        match outcome {
            Err(oca_store::OpenError::NotFound) => {
                op.at += 1;
                self.open_next(key)
            }
            other => self.open_done(key, other),
        }
    }

    /// The open ended: the worker's open files learn the outcome, and the request is answered.
    pub(super) fn open_done(
        &mut self,
        key: usize,
        outcome: Result<oca_store::Opened, oca_store::OpenError>,
    ) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        if !matches!(slot.write, Write::Open { .. }) {
            return;
        }
        let Write::Open { op, poll } = std::mem::take(&mut slot.write) else {
            return;
        };
        slot.write = Write::after_engine_op(poll);
        let Ok(cid) = oca_store::ContentId::parse(&op.id) else {
            return self.close(key);
        };
        match outcome {
            Ok(opened) => {
                let now = self.ctx.now;
                self.ctx.files_mut().adopt(cid, opened, now);
            }
            Err(e) => self.ctx.files_mut().adopt_error(cid, e),
        }
        let next = policy::guarded(&mut self.ctx, Next::Close, |ctx| slot.conn.on_opened(ctx));
        self.act(key, next);
    }
}
