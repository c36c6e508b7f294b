//! Memory the kernel reads and writes behind Rust's back: an anonymous mapping addressed only
//! through raw pointers.
//!
//! io_uring receives and direct reads write into buffers while the worker runs; a Rust owner
//! such as `Box<[u8]>` promises that nothing else changes its bytes, which the kernel would
//! break. A mapping is never borrowed whole: only a buffer the kernel has handed back with a
//! completion (and will not touch until it is handed to the kernel again) is ever viewed as a
//! slice, by the caller's `unsafe` promise. It is unmapped on drop, or deliberately leaked with
//! [`Mapping::leak`] when operations that may still write into it could not be waited for.

use std::io;
use std::ptr::NonNull;

/// One anonymous, private, read-write mapping.
#[derive(Debug)]
pub struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes (zeroed, page-aligned).
    pub fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
        Ok(Mapping { base, len })
    }

    /// The address `offset` bytes in; `offset` must not pass the end.
    pub fn at(&self, offset: usize) -> *mut u8 {
        assert!(
            offset <= self.len,
            "offset {offset} past a {} byte mapping",
            self.len
        );
        // SAFETY: the offset stays inside (or one past) the mapping, checked above.
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// The `len` bytes at `offset` as a slice.
    ///
    /// # Safety
    ///
    /// Nothing may write those bytes while the slice lives: the kernel has completed every
    /// operation that wrote them and none that could is pending.
    pub unsafe fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len));
        // SAFETY: inside the mapping (checked above); the caller promises no writer.
        unsafe { std::slice::from_raw_parts(self.at(offset), len) }
    }

    /// Gives up the mapping without unmapping it: operations still in flight may write into it
    /// after the ring is gone, and a later mapping at the same address must not receive them.
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; its users are done with it (or it
        // was leaked instead).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}
