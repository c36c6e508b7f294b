//! What the cold-path tests share: skipping without root or FUSE, writing a file past the page
//! cache, ranges and their expected bytes, one metric's value.

use super::*;
use std::path::Path;

/// The io_uring variants: the cold path belongs to that engine.
pub const URING: [&str; 3] = ["uring", "uring-splice", "uring-sendfile"];

pub fn skip() -> bool {
    match loop_skip_reason() {
        None => false,
        Some(reason) => {
            assert!(std::env::var_os("OCA_REQUIRE_VM").is_none(), "{reason}");
            eprintln!("skipped: {reason}");
            true
        }
    }
}

/// Whether FUSE (the failfs test disk) is missing: a skip, or a failure where it is required.
pub fn no_fuse() -> bool {
    if Path::new("/dev/fuse").exists() {
        return false;
    }
    assert!(std::env::var_os("OCA_REQUIRE_VM").is_none(), "no /dev/fuse");
    eprintln!("skipped: no /dev/fuse");
    true
}

/// Writes a file, makes it durable and drops it from the page cache, so reads reach the disk.
pub fn put_cold(store: &Path, id: &str, body: &[u8]) {
    let path = put(store, id, body);
    let f = std::fs::File::open(&path).unwrap();
    f.sync_all().unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: fadvise on an open descriptor; only a hint.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

pub fn get_range(s: &Server, id: &str, range: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(s.url(&format!("/c/{id}")))
        .header("Range", format!("bytes={range}"))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
}

/// The bytes a single range names, or None when unsatisfiable.
pub fn expect(body: &[u8], range: &str) -> Option<Vec<u8>> {
    let len = body.len() as u64;
    let (a, b) = range.split_once('-').unwrap();
    let (start, end) = match (a, b) {
        ("", n) => (len.saturating_sub(n.parse().unwrap()), len),
        (a, "") => (a.parse().unwrap(), len),
        (a, b) => (a.parse().unwrap(), (b.parse::<u64>().unwrap() + 1).min(len)),
    };
    (start < len).then(|| body[start as usize..end as usize].to_vec())
}

pub fn metric_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
