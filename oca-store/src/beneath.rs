//! Opening names beneath a directory without ever leaving it: no symlink is followed at any
//! component, no `..` climbs out, so a symlink planted anywhere in the store (a shard directory
//! pointing at `/etc`, a `tmp/` pointing at another disk) names nothing.
//!
//! `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS` (Linux 5.6)
//! does it in one call. Kernels without it (`ENOSYS`, remembered) walk the path one component
//! at a time from the directory, each opened with `O_NOFOLLOW` (directories as `O_PATH`), which
//! refuses the same symlinks at the cost of a descriptor per component.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// How every name is resolved (openat2's `resolve`; also for io_uring's OPENAT2).
pub const RESOLVE: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// Set once the kernel has said it has no openat2.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `rel` (a relative path of plain names) beneath `dir` with `flags` (and `mode` when
/// creating). A symlink at any component fails with `ELOOP`; `..` or an absolute path with
/// `EXDEV`.
pub fn open(dir: BorrowedFd<'_>, rel: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    if !NO_OPENAT2.load(Relaxed) {
        match openat2(dir, rel, flags, mode) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => NO_OPENAT2.store(true, Relaxed),
            other => return other,
        }
    }
    walk(dir, rel, flags, mode)
}

fn openat2(dir: BorrowedFd<'_>, rel: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    // SAFETY: open_how is plain integers; zeroed is valid and the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    // openat2 refuses a mode without O_CREAT or O_TMPFILE.
    how.mode = if flags & libc::O_CREAT != 0 {
        u64::from(mode)
    } else {
        0
    };
    how.resolve = RESOLVE;
    // SAFETY: a valid directory descriptor, a NUL-terminated path and a live open_how of the
    // size passed; the result is checked before use.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            rel.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The fallback: one component at a time, none followed.
fn walk(dir: BorrowedFd<'_>, rel: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let bytes = rel.to_bytes();
    if bytes.is_empty() || bytes.starts_with(b"/") {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    let parts: Vec<&[u8]> = bytes
        .split(|&b| b == b'/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.iter().any(|p| *p == b"..") {
        return Err(io::Error::from_raw_os_error(libc::EXDEV));
    }
    let mut held: Option<OwnedFd> = None;
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        let name = std::ffi::CString::new(*part)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let at = held.as_ref().map_or(dir.as_raw_fd(), |f| f.as_raw_fd());
        let f = if last {
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC
        } else {
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
        };
        // SAFETY: a valid directory descriptor and a NUL-terminated name; checked below.
        let fd = unsafe { libc::openat(at, name.as_ptr(), f, mode) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            // A symlink opened with O_PATH | O_NOFOLLOW | O_DIRECTORY says "not a directory";
            // say what openat2 says.
            if !last && e.raw_os_error() == Some(libc::ENOTDIR) && is_symlink(at, &name) {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            return Err(e);
        }
        // SAFETY: openat just returned this descriptor and nothing else owns it.
        held = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    held.ok_or_else(|| io::Error::from_raw_os_error(libc::EXDEV))
}

fn is_symlink(dir: i32, name: &CStr) -> bool {
    // SAFETY: stat is plain data; zeroed is valid and fstatat fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid directory descriptor, a NUL-terminated name and a writable stat.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    rc == 0 && st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn check(open_fn: fn(BorrowedFd<'_>, &CStr, i32, u32) -> io::Result<OwnedFd>) {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"x").unwrap();
        std::fs::create_dir_all(d.path().join("root/ok")).unwrap();
        std::fs::write(d.path().join("root/ok/file"), b"y").unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("root/se")).unwrap();
        std::os::unix::fs::symlink("ok", d.path().join("root/in")).unwrap();
        let root = std::fs::File::open(d.path().join("root")).unwrap();
        let ro = libc::O_RDONLY;
        assert!(open_fn(root.as_fd(), c"ok/file", ro, 0).is_ok());
        for (rel, errno) in [
            (c"se/secret", libc::ELOOP),
            (c"in/file", libc::ELOOP),
            (c"../root/ok/file", libc::EXDEV),
        ] {
            let e = open_fn(root.as_fd(), rel, ro, 0).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(errno), "{rel:?}: {e}");
        }
    }

    #[test]
    fn symlinks_and_dotdot_are_refused_with_openat2() {
        check(open);
    }

    #[test]
    fn symlinks_and_dotdot_are_refused_by_the_fallback_walk() {
        check(walk);
    }
}
