//! The health of the store's disks as the daemon sees it: which disks have failed, and the
//! watch on worker threads blocked in an operation on one.
//!
//! A disk is marked failed the first time it returns a media error (the classification is the
//! store's: `oca_store::is_media_error`) or an operation on it outlives `disk_timeout`; from
//! then on its files are answered 503 and are never opened on it again, while the other disks
//! keep serving, until the daemon restarts. Nothing here ever clears a mark.
//!
//! A worker's thread that makes a blocking disk call (an open, a sendfile, a read) notes it
//! first with [`DiskHealth::enter`]; the note is one atomic store on the worker's own cache
//! line. A watcher on the main thread ([`DiskHealth::check_blocked`], every tick) marks the disk
//! hung when a note grows too old: a thread stuck in the kernel cannot time itself. The
//! io_uring engine, whose disk operations run off the thread, times them itself and reports
//! with [`DiskHealth::hung`].
//!
//! The counters kept here (errors, hangs) are exported by the metrics module, which reads them
//! through [`DiskHealth::each`].

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Bits of a blocked-operation note that hold its start (ms since the watch began).
const SINCE_BITS: u32 = 40;
const SINCE_MASK: u64 = (1 << SINCE_BITS) - 1;

/// One disk's health.
#[derive(Debug)]
struct Disk {
    path: String,
    errors: AtomicU64,
    /// Operations that did not complete within `disk_timeout`.
    hangs: AtomicU64,
    failed: AtomicBool,
}

/// The disk operation one worker's thread is blocked in, if any: (disk + 1) << 40 | its start.
#[repr(align(128))]
#[derive(Debug, Default)]
struct Blocked(AtomicU64);

/// What [`DiskHealth::each`] reports of one disk.
#[derive(Clone, Copy, Debug)]
pub struct DiskState<'a> {
    /// The disk's root, as its metrics are labelled.
    pub path: &'a str,
    /// Read errors seen.
    pub errors: u64,
    /// Operations that outlived `disk_timeout`.
    pub hangs: u64,
    /// Whether its files are no longer served.
    pub failed: bool,
}

/// The health of every store disk, shared by all workers.
#[derive(Debug)]
pub struct DiskHealth {
    disks: Vec<Disk>,
    blocked: Vec<Blocked>,
    started: Instant,
}

/// Clears a worker's [`DiskHealth::enter`] note when dropped.
pub struct OnDisk<'a>(&'a AtomicU64);

impl Drop for OnDisk<'_> {
    fn drop(&mut self) {
        self.0.store(0, Relaxed);
    }
}

impl DiskHealth {
    /// Every disk healthy, for `workers` worker threads.
    pub fn new(paths: Vec<String>, workers: usize) -> DiskHealth {
        DiskHealth {
            disks: paths
                .into_iter()
                .map(|path| Disk {
                    path,
                    errors: AtomicU64::new(0),
                    hangs: AtomicU64::new(0),
                    failed: AtomicBool::new(false),
                })
                .collect(),
            blocked: (0..workers).map(|_| Blocked::default()).collect(),
            started: Instant::now(),
        }
    }

    /// Counts a read error on disk `i` and marks the disk failed: from then on its files are
    /// answered 503 and the other disks keep serving (until the daemon restarts).
    pub fn error(&self, i: usize) {
        if let Some(d) = self.disks.get(i) {
            d.errors.fetch_add(1, Relaxed);
            if !d.failed.swap(true, Relaxed) {
                tracing::error!(disk = i, path = %d.path, "disk returned an I/O error: marked failed, its files are no longer served");
            }
        }
    }

    /// An operation on disk `i` has not completed after `waited` (past `disk_timeout`): the
    /// disk is marked failed like one returning errors, so its files are no longer served and
    /// the other disks keep going.
    pub fn hung(&self, i: usize, waited: Duration) {
        if let Some(d) = self.disks.get(i) {
            d.hangs.fetch_add(1, Relaxed);
            if !d.failed.swap(true, Relaxed) {
                tracing::error!(disk = i, path = %d.path, waited_ms = waited.as_millis() as u64, "disk operation did not complete: disk marked hung and failed, its files are no longer served");
            }
        }
    }

    /// Whether disk `i` has been marked failed.
    pub fn failed(&self, i: usize) -> bool {
        self.disks.get(i).is_some_and(|d| d.failed.load(Relaxed))
    }

    /// Notes that worker `w`'s thread is about to block in an operation on disk `disk`; the
    /// returned guard clears the note.
    pub fn enter(&self, w: usize, disk: usize) -> OnDisk<'_> {
        let note = &self.blocked[w].0;
        let ms = self.started.elapsed().as_millis() as u64 & SINCE_MASK;
        note.store(((disk as u64 + 1) << SINCE_BITS) | ms, Relaxed);
        OnDisk(note)
    }

    /// Marks hung every disk a worker's thread has been blocked on for longer than `timeout`.
    pub fn check_blocked(&self, timeout: Duration) {
        let now = self.started.elapsed().as_millis() as u64;
        for b in &self.blocked {
            let v = b.0.load(Relaxed);
            if v == 0 {
                continue;
            }
            let (disk, since) = ((v >> SINCE_BITS) as usize - 1, v & SINCE_MASK);
            let waited = Duration::from_millis(now.saturating_sub(since));
            if waited > timeout {
                self.hung(disk, waited);
            }
        }
    }

    /// Each disk's state, in the store's order.
    pub fn each(&self) -> impl Iterator<Item = DiskState<'_>> {
        self.disks.iter().map(|d| DiskState {
            path: &d.path,
            errors: d.errors.load(Relaxed),
            hangs: d.hangs.load(Relaxed),
            failed: d.failed.load(Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disk_fails_once_and_stays_failed() {
        let h = DiskHealth::new(vec!["a".into(), "b".into()], 1);
        h.error(1);
        h.error(1);
        assert!(!h.failed(0) && h.failed(1));
        let b: Vec<_> = h.each().map(|d| (d.errors, d.failed)).collect();
        assert_eq!(b, [(0, false), (2, true)]);
    }

    #[test]
    fn a_thread_blocked_past_the_timeout_marks_its_disk_hung() {
        let h = DiskHealth::new(vec!["a".into(), "b".into()], 2);
        let _note = h.enter(1, 0);
        h.check_blocked(Duration::from_secs(60));
        assert!(!h.failed(0));
        std::thread::sleep(Duration::from_millis(5));
        h.check_blocked(Duration::ZERO);
        assert!(h.failed(0) && !h.failed(1));
        drop(_note);
        assert_eq!(h.blocked[1].0.load(Relaxed), 0);
    }
}
