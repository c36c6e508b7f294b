//! Free space on a store disk's filesystem: what the report says of each disk and what the
//! fill scheduler checks before it places a file.

use std::path::Path;

/// Below this much free space a disk counts as full.
pub const FREE_FLOOR: u64 = 16 << 20;

/// Free bytes for an unprivileged writer on the filesystem of `path` (0 if it cannot be read).
pub fn free_bytes(path: &Path) -> u64 {
    statvfs(path).map_or(0, |(_, _, avail)| avail)
}

/// (size, used, available) of the filesystem of `path`.
pub fn statvfs(path: &Path) -> Option<(u64, u64, u64)> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: all-zero bytes are a valid statvfs (plain integers).
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: statvfs writes into the struct we own; the path is NUL-terminated.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let f = s.f_frsize;
    Some((s.f_blocks * f, (s.f_blocks - s.f_bfree) * f, s.f_bavail * f))
}
