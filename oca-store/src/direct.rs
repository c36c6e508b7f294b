//! Direct I/O on a content file: the same inode opened a second time with O_DIRECT, and the
//! alignment its reads need (statx `STATX_DIOALIGN`, 6.1+, else 4 KiB). oca-daemon's cold path
//! reads through it, past the page cache.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};

/// Alignment assumed for O_DIRECT when the kernel does not report it (statx STATX_DIOALIGN
/// arrived in 6.1): 4 KiB satisfies 512-byte and 4 KiB devices alike.
pub const FALLBACK_DIO_ALIGN: u32 = 4096;

/// A content file opened a second time for O_DIRECT reads.
#[derive(Debug)]
pub struct DirectFile {
    /// The descriptor, opened with O_DIRECT.
    pub file: File,
    /// Offsets and lengths of direct reads must be multiples of this.
    pub offset_align: u32,
    /// Buffers of direct reads must be aligned to this.
    pub mem_align: u32,
}

/// Reopens an open content file (the same inode, through `/proc/self/fd`, so a rename in
/// between cannot swap it) with O_DIRECT, and reads the alignment direct I/O needs. Fails with
/// EINVAL where the filesystem has no direct I/O.
pub fn open_direct(file: &File) -> io::Result<DirectFile> {
    let path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .expect("no NUL in a formatted path");
    let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_DIRECT;
    // SAFETY: a valid NUL-terminated path; the result is checked before use.
    let fd = unsafe { libc::open(path.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let direct = unsafe { File::from_raw_fd(fd) };
    let (offset_align, mem_align) = dio_align(&direct).unwrap_or((0, 0));
    Ok(DirectFile {
        file: direct,
        offset_align: if offset_align == 0 {
            FALLBACK_DIO_ALIGN
        } else {
            offset_align
        },
        mem_align: if mem_align == 0 {
            FALLBACK_DIO_ALIGN
        } else {
            mem_align
        },
    })
}

/// statx's STATX_DIOALIGN: (offset alignment, memory alignment); zeros when not reported.
fn dio_align(file: &File) -> Option<(u32, u32)> {
    // SAFETY: statx is plain data; zeroed is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: a valid descriptor, an empty path with AT_EMPTY_PATH, and a writable statx.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    Some((stx.stx_dio_offset_align, stx.stx_dio_mem_align))
}
