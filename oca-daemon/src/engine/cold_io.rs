//! The io_uring engine's cold-read resources: a bounded pool of page-aligned buffers registered
//! with the ring (reads go straight into them with `ReadFixed`, sends go out of them), and one
//! queue per disk with a cap on reads in flight, so a slow or saturated disk holds at most its
//! own share of buffers and never delays the others.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use io_uring::IoUring;

use super::mapping::Mapping;
use crate::cold::ColdConfig;

/// How long a worker keeps its buffers once every one is back: a worker that serves only from
/// the page cache holds none (10,000 idle connections measured 85 MB with the pool mapped and
/// pinned from the start, 20 MB without).
const IDLE_RELEASE: Duration = Duration::from_secs(30);

/// The buffer pool: one anonymous mapping cut into equal buffers, mapped and registered when the
/// first cold read needs it and given back after `IDLE_RELEASE` with every buffer free.
pub struct Pool {
    mem: Option<Mapping>,
    count: usize,
    /// Bytes per buffer.
    pub size: usize,
    free: Vec<u16>,
    /// Whether the buffers are registered with the ring (ReadFixed / fixed sends).
    pub registered: bool,
    /// Since when every buffer has been free.
    idle_since: Instant,
    /// The kernel refused registration once already (logged once).
    refused: bool,
}

impl Pool {
    /// A pool of `cfg.buffers` buffers of `cfg.buffer_bytes`, none mapped yet.
    pub fn new(cfg: &ColdConfig) -> Pool {
        Pool {
            mem: None,
            count: cfg.buffers,
            size: cfg.buffer_bytes,
            free: (0..cfg.buffers as u16).rev().collect(),
            registered: false,
            idle_since: Instant::now(),
            refused: false,
        }
    }

    /// Whether the buffers are mapped, mapping and registering them with `ring` if not; false
    /// when they cannot be mapped (logged), and the part waits and falls back as when no buffer
    /// is free. When the kernel refuses to register them (RLIMIT_MEMLOCK), they are used
    /// unregistered and that is logged.
    pub fn ready(&mut self, ring: &IoUring) -> bool {
        if self.mem.is_some() {
            return true;
        }
        let len = self.count * self.size;
        let mem = match Mapping::new(len) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, bytes = len, "cannot map the cold-path buffers");
                return false;
            }
        };
        let iovecs: Vec<libc::iovec> = (0..self.count)
            .map(|i| libc::iovec {
                iov_base: mem.at(i * self.size).cast(),
                iov_len: self.size,
            })
            .collect();
        // SAFETY: the iovecs describe memory this pool owns until it unregisters them (only with
        // every buffer free, so no operation uses them) or after the ring is dropped (the engine
        // drops the ring first, and leaks the pool when reads may be in flight).
        match unsafe { ring.submitter().register_buffers(&iovecs) } {
            Ok(()) => self.registered = true,
            Err(e) if !self.refused => {
                self.refused = true;
                tracing::warn!(
                    error = %e,
                    bytes = len,
                    "cannot register the cold-path buffers with io_uring (raise LimitMEMLOCK); using them unregistered"
                );
            }
            Err(_) => {}
        }
        self.mem = Some(mem);
        // Idle time counts from here: a pool just mapped is not given back before it is used.
        self.idle_since = Instant::now();
        true
    }

    /// Unmaps the buffers once every one has been free for `IDLE_RELEASE` at `now`.
    pub fn release_idle(&mut self, ring: &IoUring, now: Instant) {
        if self.mem.is_none()
            || self.free.len() < self.count
            || now.saturating_duration_since(self.idle_since) < IDLE_RELEASE
        {
            return;
        }
        if self.registered {
            if let Err(e) = ring.submitter().unregister_buffers() {
                tracing::debug!(error = %e, "cold-path buffers stay registered");
                return;
            }
            self.registered = false;
        }
        self.mem = None;
    }

    /// Start of buffer `i`.
    pub fn ptr(&self, i: u16) -> *mut u8 {
        let mem = self
            .mem
            .as_ref()
            .expect("a buffer is taken only from a mapped pool");
        mem.at(i as usize * self.size)
    }

    /// Gives up the buffers without unmapping them (reads may still be in flight).
    pub fn leak(self) {
        if let Some(mem) = self.mem {
            mem.leak();
        }
    }

    /// A direct read of `len` bytes at `start` of `fd` into buffer `buf` (fixed when the pool is
    /// registered).
    /// `punt`: hand the read to the kernel's workers outright (IOSQE_ASYNC), for filesystems
    /// that may block the submitting thread (FUSE waits for its daemon inside the submission,
    /// and a hung one would stop the worker).
    pub fn read_entry(
        &self,
        buf: u16,
        fd: std::os::fd::RawFd,
        start: u64,
        len: u32,
        punt: bool,
    ) -> io_uring::squeue::Entry {
        let (ptr, fd) = (self.ptr(buf), io_uring::types::Fd(fd));
        let entry = if self.registered {
            io_uring::opcode::ReadFixed::new(fd, ptr, len, buf)
                .offset(start)
                .build()
        } else {
            io_uring::opcode::Read::new(fd, ptr, len)
                .offset(start)
                .build()
        };
        if punt {
            entry.flags(io_uring::squeue::Flags::ASYNC)
        } else {
            entry
        }
    }

    /// Takes a free buffer (after [`Pool::ready`]).
    pub fn take(&mut self) -> Option<u16> {
        self.mem.as_ref()?;
        self.free.pop()
    }

    /// Gives a buffer back.
    pub fn give(&mut self, i: u16) {
        self.free.push(i);
        if self.free.len() == self.count {
            self.idle_since = Instant::now();
        }
    }

    /// Whether a buffer is free.
    pub fn any_free(&self) -> bool {
        !self.free.is_empty()
    }
}

/// A connection waiting for its disk's queue or a buffer: slot key and generation.
pub type Waiter = (usize, u32);

/// Per-disk queues with a cap on reads in flight, served round-robin.
pub struct DiskQueues {
    inflight: Vec<usize>,
    waiting: Vec<VecDeque<Waiter>>,
    depth: usize,
    next: usize,
}

impl DiskQueues {
    /// Queues for `disks` disks, `depth` reads in flight each.
    pub fn new(disks: usize, depth: usize) -> DiskQueues {
        DiskQueues {
            inflight: vec![0; disks],
            waiting: (0..disks).map(|_| VecDeque::new()).collect(),
            depth,
            next: 0,
        }
    }

    /// Whether disk `d` can take a read now.
    pub fn has_room(&self, d: usize) -> bool {
        self.inflight.get(d).is_some_and(|&n| n < self.depth)
    }

    /// Queues a waiter behind disk `d`.
    pub fn wait(&mut self, d: usize, w: Waiter) {
        if let Some(q) = self.waiting.get_mut(d) {
            q.push_back(w);
        }
    }

    /// Takes a waiter out of disk `d`'s queue (it gave up waiting).
    pub fn cancel(&mut self, d: usize, w: Waiter) {
        if let Some(q) = self.waiting.get_mut(d) {
            q.retain(|x| *x != w);
        }
    }

    /// Whether anyone waits for disk `d`.
    pub fn has_waiters(&self, d: usize) -> bool {
        self.waiting.get(d).is_some_and(|q| !q.is_empty())
    }

    /// Whether anyone waits for any disk.
    pub fn any_waiting(&self) -> bool {
        self.waiting.iter().any(|q| !q.is_empty())
    }

    /// The next waiter of a disk with room, taking disks in turn.
    pub fn next_ready(&mut self) -> Option<(usize, Waiter)> {
        let n = self.waiting.len();
        for i in 0..n {
            let d = (self.next + i) % n;
            if self.inflight[d] < self.depth {
                if let Some(w) = self.waiting[d].pop_front() {
                    self.next = (d + 1) % n;
                    return Some((d, w));
                }
            }
        }
        None
    }

    /// A read was submitted on disk `d`.
    pub fn started(&mut self, d: usize) {
        self.inflight[d] += 1;
    }

    /// A read on disk `d` completed.
    pub fn finished(&mut self, d: usize) {
        self.inflight[d] = self.inflight[d].saturating_sub(1);
    }
}

/// Rounds `x` down to a multiple of `align` (a power of two).
pub fn align_down(x: u64, align: u64) -> u64 {
    x & !(align - 1)
}

/// Rounds `x` up to a multiple of `align` (a power of two).
pub fn align_up(x: u64, align: u64) -> u64 {
    (x + align - 1) & !(align - 1)
}

/// The aligned read covering the start of `len` bytes at `offset`, within `buf` bytes:
/// (read offset, read length, bytes to skip at the front). The read may run past the part (or
/// the file's end); the engine sends only the part's bytes.
pub fn aligned_read(offset: u64, len: u64, buf: usize, align: u32) -> (u64, u32, u32) {
    let align = u64::from(align.max(512));
    let start = align_down(offset, align);
    let skip = offset - start;
    let want = align_up(skip + len, align).min(buf as u64);
    (start, want as u32, skip as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_reads_cover_the_part_and_never_exceed_the_buffer() {
        assert_eq!(aligned_read(0, 100, 1 << 20, 4096), (0, 4096, 0));
        assert_eq!(aligned_read(5000, 100, 1 << 20, 4096), (4096, 4096, 904));
        assert_eq!(aligned_read(4095, 2, 1 << 20, 4096), (0, 8192, 4095));
        assert_eq!(
            aligned_read(1 << 20, 4 << 20, 1 << 20, 4096),
            (1 << 20, 1 << 20, 0)
        );
        // Unaligned start of a long part: the buffer's worth, the skip inside it.
        assert_eq!(aligned_read(10, 4 << 20, 1 << 20, 512), (0, 1 << 20, 10));
        for off in [0u64, 1, 511, 512, 4097, 123_457] {
            for len in [1u64, 100, 4096, 1 << 20] {
                let (s, n, k) = aligned_read(off, len, 1 << 20, 4096);
                assert_eq!(s % 4096, 0);
                assert_eq!(n % 4096, 0);
                assert_eq!(s + u64::from(k), off);
                assert!(u64::from(n) > u64::from(k), "some of the part is read");
            }
        }
    }

    #[test]
    fn a_full_disk_queue_does_not_hold_back_another_disk() {
        let mut q = DiskQueues::new(2, 1);
        q.started(0);
        q.wait(0, (1, 0));
        q.wait(1, (2, 0));
        assert_eq!(
            q.next_ready(),
            Some((1, (2, 0))),
            "disk 1 goes ahead of full disk 0"
        );
        q.started(1);
        assert_eq!(q.next_ready(), None);
        q.finished(0);
        assert_eq!(q.next_ready(), Some((0, (1, 0))));
    }
}
