//! The ring itself: how it is built (the task-run mode that keeps completions off signals) and
//! how entries reach its submission queue.
//!
//! Invariant: entries are submitted in the order they were pushed. One that finds the queue
//! full waits in the backlog, and every later one queues behind it until the loop has reaped
//! and the backlog drains; a linked pair is pushed as one group, so its link is never split
//! across submissions. The loop never spins on a queue the kernel will not take.

use std::io;

use io_uring::{squeue, IoUring};

use crate::engine::uring::{Loop, RING_ENTRIES};

/// A ring whose completion work runs only when the worker asks for events. Without this the kernel
/// signals the thread for every completion (TWA_SIGNAL), and the workers, which share one signal
/// handler table, contend on its lock inside every send and sendfile (seen in perf as
/// `get_signal` → `_raw_spin_lock_bh`, 14% of CPU at 1,000 connections). DEFER_TASKRUN needs 6.1;
/// COOP_TASKRUN (5.19) is the next best; older kernels get a plain ring.
pub(super) fn build_ring() -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
        .or_else(|_| {
            IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag()
                .build(RING_ENTRIES)
        })
        .or_else(|_| IoUring::new(RING_ENTRIES))
}

/// The first generation a worker gives a connection: 1, or `OCA_URING_FIRST_GENERATION` (a
/// diagnostic, like `OCA_URING_SINGLESHOT_RECV`: tests start near a wrap of the counter to cross
/// it with a few thousand connections instead of 2^24 or 2^32).
pub(super) fn first_generation() -> u32 {
    std::env::var("OCA_URING_FIRST_GENERATION")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(1)
}

impl Loop {
    /// Queues an entry for the next submission.
    pub(super) fn push(&mut self, entry: squeue::Entry) {
        let one = std::slice::from_ref(&entry);
        if !self.backlog.is_empty() || !self.try_push_group(one) {
            self.backlog.push_back(vec![entry]);
        }
    }

    /// Queues entries that must go in one submission (a linked pair), after any backlog.
    pub(super) fn push_group(&mut self, group: &[squeue::Entry]) {
        if !self.backlog.is_empty() || !self.try_push_group(group) {
            self.backlog.push_back(group.to_vec());
        }
    }

    /// Puts the group on the submission queue, submitting what is there first when it lacks
    /// room; false when the kernel takes nothing now (EBUSY: completions wait to be reaped).
    pub(super) fn try_push_group(&mut self, group: &[squeue::Entry]) -> bool {
        if self.sq_room() < group.len() {
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) {
                    tracing::error!(error = %e, "io_uring submit failed");
                }
            }
            if self.sq_room() < group.len() {
                return false;
            }
        }
        let mut sq = self.ring.submission();
        for entry in group {
            // SAFETY: every entry built by this loop points only at memory the Loop owns for
            // the ring's lifetime (the receive buffers, the cold pool, the boxed timespec; both
            // buffer mappings are leaked rather than freed if operations outlive the loop) or
            // at nothing. Room was checked above.
            unsafe { sq.push(entry) }.expect("room checked");
        }
        true
    }

    pub(super) fn sq_room(&mut self) -> usize {
        let sq = self.ring.submission();
        sq.capacity() - sq.len()
    }

    /// Submits the backlog, in order, as far as the queue takes it.
    pub(super) fn flush_backlog(&mut self) {
        while let Some(group) = self.backlog.pop_front() {
            if !self.try_push_group(&group) {
                self.backlog.push_front(group);
                return;
            }
        }
    }

    /// Pushes two linked entries into one submission, so the link is never split.
    pub(super) fn push_linked(&mut self, first: squeue::Entry, second: squeue::Entry) {
        self.push_group(&[first, second]);
    }
}
