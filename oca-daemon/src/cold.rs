//! The cold-read path's policy and settings: which file parts bypass the page cache (O_DIRECT
//! reads into registered buffers, sent from there) and which keep using it (sendfile/splice).
//!
//! `auto` keeps the page cache for what it serves well and off what would only evict it: tiny
//! parts (under 16 KiB, such as a container's index, read over and over), popular regions of
//! files (a frequency sketch of recent requests per 2 MiB region: sending those through the page
//! cache is what puts them there), and bytes the page cache already holds (every page of the
//! part, by cachestat(2) or mincore(2), which read nothing); the rest, the long tail, is read
//! from the disk directly.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};

use clap::ValueEnum;
use serde::Deserialize;

/// Which path file parts take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColdMode {
    /// Per part: small, popular or already cached → page cache; otherwise O_DIRECT.
    Auto,
    /// Every file part O_DIRECT (io_uring engine, plain HTTP and kernel TLS).
    Always,
    /// Page cache only (sendfile/splice), as before.
    Off,
}

/// The cold path's settings.
#[derive(Clone, Copy, Debug)]
pub struct ColdConfig {
    /// Mode.
    pub mode: ColdMode,
    /// Registered buffers per worker: the pool is bounded, requests wait for a buffer.
    pub buffers: usize,
    /// Bytes per buffer (a multiple of 4 KiB).
    pub buffer_bytes: usize,
    /// Direct reads in flight per disk and worker; more wait in that disk's queue.
    pub queue_depth: usize,
    /// Parts shorter than this stay on the page cache in `auto`.
    pub min_bytes: u64,
    /// Requests for one file (recent, decayed) from which it stays on the page cache in `auto`.
    pub hot_hits: u8,
    /// Slowest a reader may take a buffer's bytes and keep it (bytes per second): a slower
    /// one has the rest of its part sent through the page cache, and the buffer goes back.
    pub min_send_rate: u64,
    /// Longest a part waits for a buffer or its disk's queue before it goes through the page
    /// cache instead.
    pub wait_timeout: std::time::Duration,
}

impl Default for ColdConfig {
    fn default() -> Self {
        ColdConfig {
            mode: ColdMode::Auto,
            buffers: 32,
            buffer_bytes: 1 << 20,
            queue_depth: 8,
            min_bytes: 16 << 10,
            hot_hits: 3,
            min_send_rate: 256 << 10,
            wait_timeout: std::time::Duration::from_secs(1),
        }
    }
}

/// Why a part took the path it took (metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Shorter than `min_bytes`.
    Small,
    /// A popular file.
    Hot,
    /// Its first byte was in the page cache.
    Cached,
    /// None of those: read directly.
    Cold,
    /// `always`.
    Forced,
    /// `off`, or the connection cannot take it (userspace TLS, epoll engine).
    Off,
    /// Moved off the cold path midway: the reader took its buffer slower than
    /// `min_send_rate`.
    Slow,
    /// Moved off the cold path before it began: no buffer or disk slot within `wait_timeout`.
    Busy,
}

impl Reason {
    /// All reasons, in metric order.
    pub const ALL: [Reason; 8] = [
        Reason::Small,
        Reason::Hot,
        Reason::Cached,
        Reason::Cold,
        Reason::Forced,
        Reason::Off,
        Reason::Slow,
        Reason::Busy,
    ];

    /// Label value.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Small => "small",
            Reason::Hot => "hot",
            Reason::Cached => "cached",
            Reason::Cold => "cold",
            Reason::Forced => "always",
            Reason::Off => "off",
            Reason::Slow => "slow_reader",
            Reason::Busy => "wait_timeout",
        }
    }

    /// Whether this reason sends the part down the cold path.
    pub fn is_cold(self) -> bool {
        matches!(self, Reason::Cold | Reason::Forced)
    }
}

const ROWS: usize = 4;
const WIDTH: usize = 4096;
/// Counts halve after this many increments, so popularity is recent popularity.
const AGE_EVERY: u32 = 32 * 1024;

/// A count-min sketch of requests per file, shared by the workers (a per-worker sketch would
/// see only its share of a file's requests): four rows of saturating 8-bit counters. Racing
/// updates may lose a count now and then, which a popularity estimate can afford.
pub struct Sketch {
    rows: Box<[[AtomicU8; WIDTH]; ROWS]>,
    added: AtomicU32,
    /// Increments, halved with the counters: `weight / WIDTH` is the mean counter.
    weight: AtomicU32,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            rows: Box::new(std::array::from_fn(|_| {
                std::array::from_fn(|_| AtomicU8::new(0))
            })),
            added: AtomicU32::new(0),
            weight: AtomicU32::new(0),
        }
    }
}

impl Sketch {
    fn slots(key: u64) -> [usize; ROWS] {
        let mut h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        std::array::from_fn(|_| {
            h ^= h >> 29;
            h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            (h >> 20) as usize % WIDTH
        })
    }

    /// Counts one request for `key` and returns the estimate before it.
    pub fn hit(&self, key: u64) -> u8 {
        let slots = Self::slots(key);
        let est = (0..ROWS)
            .map(|r| self.rows[r][slots[r]].load(Relaxed))
            .min()
            .unwrap_or(0);
        for (r, s) in slots.iter().enumerate() {
            // Conservative update: only the counters at the minimum grow.
            let c = &self.rows[r][*s];
            if c.load(Relaxed) == est {
                c.store(est.saturating_add(1), Relaxed);
            }
        }
        self.weight.fetch_add(1, Relaxed);
        if self.added.fetch_add(1, Relaxed) + 1 == AGE_EVERY {
            self.added.store(0, Relaxed);
            self.weight.store(self.weight.load(Relaxed) / 2, Relaxed);
            for row in self.rows.iter() {
                for c in row {
                    c.store(c.load(Relaxed) >> 1, Relaxed);
                }
            }
        }
        est
    }

    /// The mean counter: what a key that is asked for no more than any other would show.
    pub fn mean(&self) -> u32 {
        self.weight.load(Relaxed) / WIDTH as u32
    }
}

/// A region is popular when asked for this many times more often than the mean: under a flat
/// load over more data than memory (every region asked for a few times) nothing qualifies, and
/// nothing is pulled into a page cache it would only churn.
const HOT_OVER_MEAN: u32 = 4;

/// Whether the page cache holds every page of the `len` bytes at `offset` of `fd`, asked
/// without reading: cachestat(2) (Linux 6.5+), else mincore(2) over a short-lived mapping. Not a
/// `preadv2(RWF_NOWAIT)` probe: on a missing page that starts the kernel's readahead, so every
/// cold part was read twice, once through the page cache it was meant to keep out of (measured:
/// `auto` moved 15-20% less than `always` at 64 KiB, with 2-4x the p99).
pub fn cached(fd: RawFd, offset: u64, len: u64) -> bool {
    // 0: not tried yet, 1: the kernel has cachestat, 2: it has not.
    static CACHESTAT: AtomicU8 = AtomicU8::new(0);
    if len == 0 {
        return true;
    }
    if CACHESTAT.load(Relaxed) != 2 {
        match cachestat_pages(fd, offset, len) {
            Ok(n) => {
                CACHESTAT.store(1, Relaxed);
                return n >= pages(offset, len);
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                tracing::info!("no cachestat(2) in this kernel: cache probes use mincore(2)");
                CACHESTAT.store(2, Relaxed);
            }
            Err(_) => return false,
        }
    }
    mincore_all(fd, offset, len)
}

/// The kernel's page size (4 KiB unless it says otherwise).
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *PAGE.get_or_init(|| match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as u64,
        _ => 4096,
    })
}

/// Pages the byte range touches.
fn pages(offset: u64, len: u64) -> u64 {
    let p = page_size();
    (offset + len).div_ceil(p) - offset / p
}

/// cachestat(2)'s range and answer (include/uapi/linux/mman.h).
#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// cachestat's number: new system calls share one number on every architecture, and the libc
/// crate does not name it for x86_64 glibc yet.
const SYS_CACHESTAT: libc::c_long = 451;

/// Pages of the range in the page cache, by cachestat(2).
fn cachestat_pages(fd: RawFd, offset: u64, len: u64) -> std::io::Result<u64> {
    let p = page_size();
    let start = offset / p * p;
    let range = CachestatRange {
        off: start,
        len: (offset + len).div_ceil(p) * p - start,
    };
    let mut cs = Cachestat::default();
    // SAFETY: both structs are live, of the layout the kernel expects, and only `cs` is written.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const CachestatRange,
            &mut cs as *mut Cachestat,
            0u32,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cs.nr_cache)
}

/// Whether every page of the range is resident, by mincore(2) over a mapping made for the
/// question (mapping a file reads nothing).
fn mincore_all(fd: RawFd, offset: u64, len: u64) -> bool {
    let p = page_size();
    let start = offset / p * p;
    let n = pages(offset, len) as usize;
    let span = n * p as usize;
    // SAFETY: a fresh shared read-only mapping of the file's own range; unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ,
            libc::MAP_SHARED,
            fd,
            start as libc::off_t,
        )
    };
    if addr == libc::MAP_FAILED {
        return false;
    }
    let mut vec = vec![0u8; n];
    // SAFETY: `addr` maps `span` bytes; `vec` has one byte per page of it.
    let ok = unsafe { libc::mincore(addr, span, vec.as_mut_ptr()) } == 0;
    // SAFETY: unmapping exactly the mapping made above.
    unsafe { libc::munmap(addr, span) };
    ok && vec.iter().all(|v| v & 1 == 1)
}

/// Popularity is counted per region of a file, not per file: one viewer's stream asks for
/// every region of a title once, many viewers of a popular title ask for the same regions.
const REGION_SHIFT: u32 = 21;

/// How much of a part the page-cache probe looks at: its first region's worth (512 pages), so a
/// request costs the same whatever its length (a probe over a multi-gigabyte part walked every
/// page of it). A part cached at its start and not later goes by splice, whose reads of the
/// missing pages wait off the worker's thread.
pub const PROBE_BYTES: u64 = 1 << REGION_SHIFT;

/// Decides one file part's path under `cfg` for the file with inode `ino`.
pub fn decide(
    cfg: &ColdConfig,
    sketch: &Sketch,
    ino: u64,
    fd: RawFd,
    offset: u64,
    len: u64,
) -> Reason {
    match cfg.mode {
        ColdMode::Off => Reason::Off,
        ColdMode::Always => Reason::Forced,
        ColdMode::Auto => {
            let hits = sketch.hit(ino.rotate_left(32) ^ (offset >> REGION_SHIFT));
            if len < cfg.min_bytes {
                Reason::Small
            } else if u32::from(hits) >= u32::from(cfg.hot_hits).max(HOT_OVER_MEAN * sketch.mean())
            {
                Reason::Hot
            } else if cached(fd, offset, len.min(PROBE_BYTES)) {
                Reason::Cached
            } else {
                Reason::Cold
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_counts_and_ages() {
        let s = Sketch::default();
        for i in 0..5 {
            assert_eq!(s.hit(42), i);
        }
        assert_eq!(s.hit(7), 0, "another key starts at zero");
        for k in 0..AGE_EVERY as u64 {
            s.hit(1_000_000 + k);
        }
        assert!(s.hit(42) <= 3, "halved by ageing");
    }

    #[test]
    fn auto_keeps_small_hot_and_cached_parts_on_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 1 << 20]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        let cfg = ColdConfig::default();
        let s = Sketch::default();
        assert_eq!(decide(&cfg, &s, 1, fd, 0, 1000), Reason::Small);
        // Just written: in the page cache.
        assert_eq!(decide(&cfg, &s, 2, fd, 0, 1 << 20), Reason::Cached);
        for _ in 0..3 {
            decide(&cfg, &s, 3, fd, 0, 1 << 20);
        }
        assert_eq!(decide(&cfg, &s, 3, fd, 0, 1 << 20), Reason::Hot);
        let off = ColdConfig {
            mode: ColdMode::Off,
            ..cfg
        };
        assert_eq!(decide(&off, &s, 9, fd, 0, 1 << 20), Reason::Off);
    }

    #[test]
    fn cache_probes_say_what_is_cached_and_read_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![7u8; 4 << 20]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        f.sync_all().unwrap();
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        assert!(cached(fd, 1000, 100_000), "just written");
        assert!(mincore_all(fd, 1000, 100_000));
        // SAFETY: fadvise on an open descriptor; only a hint.
        unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_DONTNEED) };
        if cached(fd, 0, 4 << 20) {
            eprintln!("skipped: this filesystem keeps the pages (tmpfs?)");
            return;
        }
        // Asked twice: a probe that read (readahead) would find the second time cached.
        for _ in 0..2 {
            assert!(!cached(fd, 1 << 20, 65_536));
            assert!(!mincore_all(fd, 2 << 20, 65_536));
        }
        // One page read in: a range of just it is cached, a range reaching past it is not.
        let mut b = [0u8; 1];
        // SAFETY: reading into a live one-byte buffer.
        let n = unsafe { libc::pread(fd, b.as_mut_ptr().cast(), 1, 3 << 20) };
        assert_eq!(n, 1);
        assert!(cached(fd, 3 << 20, 10));
        assert!(mincore_all(fd, 3 << 20, 10));
        assert_eq!(pages(4095, 2), 2);
        assert_eq!(pages(0, 4096), 1);
    }
}
