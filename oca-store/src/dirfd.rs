//! Operations on a directory through its descriptor, never through a path resolved again:
//! create, list, unlink, make durable. With [`crate::beneath`] they are how the store touches a
//! disk's tree, so a symlink or a rename under it cannot redirect a write.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// mkdirat(2); an existing entry (of any kind: a symlink is refused when opened) is fine.
/// Returns whether the directory was created.
pub(crate) fn mkdir_at(dir: &OwnedFd, name: &CStr) -> io::Result<bool> {
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
        return Ok(false);
    }
    Ok(true)
}

/// fsync(2) of a directory open for reading: makes the entries added or renamed in it durable.
pub(crate) fn fsync_dir(dir: &OwnedFd) -> io::Result<()> {
    // SAFETY: a valid descriptor.
    if unsafe { libc::fsync(dir.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The names in a directory (without `.` and `..`), read through its descriptor so that no
/// path is resolved again.
pub(crate) fn list_dir(dir: &OwnedFd) -> io::Result<Vec<std::ffi::CString>> {
    use std::os::fd::IntoRawFd;
    // fdopendir takes the descriptor over (closedir closes it): give it a duplicate. The
    // duplicate shares the file offset, hence the rewind.
    let fd = dir.try_clone()?.into_raw_fd();
    // SAFETY: a valid directory descriptor this function owns.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: fdopendir failed, so the descriptor is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    let mut names = Vec::new();
    // SAFETY: `d` is a valid DIR until closedir below; each dirent is read before the next
    // readdir call, which may reuse it.
    unsafe {
        libc::rewinddir(d);
        *libc::__errno_location() = 0;
        loop {
            let ent = libc::readdir(d);
            if ent.is_null() {
                break;
            }
            let name = CStr::from_ptr((*ent).d_name.as_ptr());
            if name.to_bytes() != b"." && name.to_bytes() != b".." {
                names.push(name.to_owned());
            }
        }
        let errno = *libc::__errno_location();
        libc::closedir(d);
        if errno != 0 {
            return Err(io::Error::from_raw_os_error(errno));
        }
    }
    Ok(names)
}

/// unlinkat(2) (never follows `name`); absent is fine.
pub(crate) fn unlink_at(dir: &OwnedFd, name: &CStr) -> io::Result<()> {
    // SAFETY: a valid directory descriptor and a NUL-terminated name.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(e);
        }
    }
    Ok(())
}
