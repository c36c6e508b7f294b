//! The store's disks as the agent sees them: each disk's health ([`DiskHealth`]: filling, full,
//! failed, unreadable), and the free space on its filesystem that the report states and the fill
//! scheduler checks before it places a file.

use std::path::Path;

use oca_store::Store;

/// What a disk can do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskHealth {
    /// Filling and serving.
    Ok,
    /// Out of space (ENOSPC or EDQUOT): serving, not filling until a report finds room again.
    Full,
    /// Media errors while filling, or no tmp/ directory: serving what it holds, not filling.
    Failed,
    /// oca-daemon found read errors: its files are not served, not held, not filled.
    Unreadable,
}

/// Marks full disks that have room again (at least [`FREE_FLOOR`] free, after evictions or
/// another writer letting go) fit for fills: a disk that once hit ENOSPC is not full forever.
pub fn reevaluate_full(store: &Store, health: &mut [DiskHealth]) {
    for (i, d) in store.disks().iter().enumerate() {
        if health[i] == DiskHealth::Full && free_bytes(d.root()) >= FREE_FLOOR {
            tracing::info!(disk = %d.root().display(), free = free_bytes(d.root()), "disk has room again; filling onto it");
            health[i] = DiskHealth::Ok;
        }
    }
}

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
