//! Thin, checked wrappers over the socket syscalls the engines share.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

/// Opens `count` SO_REUSEPORT listeners on `addr`, one per worker, so the kernel spreads
/// connections over workers without a shared accept queue. Port 0 is resolved by the first.
pub fn reuseport_listeners(
    addr: SocketAddr,
    count: usize,
) -> io::Result<(Vec<OwnedFd>, SocketAddr)> {
    let mut bound = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let s = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_nonblocking(true)?;
        s.set_cloexec(true)?;
        s.bind(&bound.into())?;
        s.listen(4096)?;
        if bound.port() == 0 {
            bound = s
                .local_addr()?
                .as_socket()
                .ok_or_else(|| io::Error::other("not an IP socket"))?;
        }
        out.push(OwnedFd::from(s));
    }
    Ok((out, bound))
}

fn cvt(ret: isize) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Non-blocking send; `more` sets MSG_MORE so a head and the body that follows share packets.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: the pointer and length come from a live slice; the fd is borrowed, so open.
    cvt(unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) })
}

/// Non-blocking receive.
pub fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length come from a live mutable slice; the fd is open.
    cvt(unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    })
}

/// A read of file bytes only as far as the page cache holds them (preadv2 with RWF_NOWAIT):
/// EAGAIN when it would wait for the disk (EOPNOTSUPP where the filesystem cannot tell).
pub fn pread_nowait(fd: RawFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: one iovec over a live mutable slice; the fd is open for the call.
    cvt(unsafe { libc::preadv2(fd, &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) })
}

/// sendfile(2): file bytes from the page cache to the socket with no userspace copy.
pub fn sendfile(sock: BorrowedFd<'_>, file: RawFd, offset: u64, count: usize) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: both descriptors are open for the call; `off` is a valid local the kernel updates.
    cvt(unsafe { libc::sendfile(sock.as_raw_fd(), file, &mut off, count) })
}

/// Disables Nagle: responses end with a partial segment that must leave at once.
pub fn set_nodelay(fd: BorrowedFd<'_>) {
    let one: libc::c_int = 1;
    // SAFETY: a valid pointer to a c_int of the stated size; failure is harmless (latency only).
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Shuts down one or both directions; errors (peer already gone) do not matter to callers.
pub fn shutdown(fd: BorrowedFd<'_>, how: libc::c_int) {
    // SAFETY: plain syscall on an open descriptor.
    unsafe {
        libc::shutdown(fd.as_raw_fd(), how);
    }
}

/// Resets a TCP connection now: a connect to AF_UNSPEC runs the kernel's disconnect, which
/// drops everything still queued to send and answers the peer with RST. Errors do not matter.
pub fn abort(fd: BorrowedFd<'_>) {
    let addr = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: the address is a valid, fully initialised sockaddr of the length passed; the
    // descriptor is open (borrowed).
    unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &addr,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        );
    }
}
