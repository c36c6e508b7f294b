//! The fallback engine: epoll (edge-triggered) for readiness, sendfile for bodies. Used where
//! io_uring is disabled (sysctl `kernel.io_uring_disabled`, seccomp) or when forced.
//!
//! It declares no capabilities (`contract::Capabilities::default()`): its connections never
//! ask it to splice, open, or read, and do all their I/O on the worker's thread. The tick,
//! drain and accept-error policy are the shared ones (`engine::policy`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use slab::Slab;

use crate::conn::Conn;
use crate::engine::contract::Next;
use crate::engine::policy::{self, accept_admitted, AcceptError, Ticker};
use crate::engine::{Worker, TICK};
use crate::socket;
use crate::worker::WorkerCtx;

const LISTENER: u64 = u64::MAX;
const TLS_LISTENER: u64 = u64::MAX - 1;

/// Runs one epoll worker until it has drained.
pub fn run(worker: Worker) -> io::Result<()> {
    // SAFETY: plain syscall; the result is checked before use.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if ep < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: epoll_create1 returned a fresh descriptor owned by nobody else.
    let ep = unsafe { OwnedFd::from_raw_fd(ep) };
    let Worker {
        listener,
        tls_listener,
        mut ctx,
    } = worker;
    ctl(
        &ep,
        libc::EPOLL_CTL_ADD,
        &listener,
        libc::EPOLLIN as u32,
        LISTENER,
    )?;
    if let Some(l) = &tls_listener {
        ctl(
            &ep,
            libc::EPOLL_CTL_ADD,
            l,
            libc::EPOLLIN as u32,
            TLS_LISTENER,
        )?;
    }
    let mut listener = Some(listener);
    let mut tls_listener = tls_listener;
    let mut conns: Slab<Conn> = Slab::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut scratch = vec![0u8; 16 * 1024];
    let mut last_tick = Instant::now();
    let mut ticker = Ticker::default();
    loop {
        // SAFETY: `events` is a live buffer of the stated length.
        let n = unsafe {
            libc::epoll_wait(
                ep.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                TICK.as_millis() as i32,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        ctx.now = Instant::now();
        for ev in &events[..n.max(0) as usize] {
            let (token, bits) = (ev.u64, ev.events);
            if token == LISTENER || token == TLS_LISTENER {
                let tls = token == TLS_LISTENER;
                if let Some(l) = if tls { &tls_listener } else { &listener } {
                    accept_all(l, &ep, &mut conns, &mut ctx, tls);
                }
                continue;
            }
            let key = token as usize;
            let Some(conn) = conns.get_mut(key) else {
                continue;
            };
            let next = policy::guarded(&mut ctx, Next::Close, |ctx| {
                on_event(conn, bits, &mut scratch, ctx)
            });
            if next == Next::Close {
                close(&mut conns, key, &ctx);
            }
        }
        if ctx.now.duration_since(last_tick) >= TICK {
            last_tick = ctx.now;
            if ticker.tick(&mut ctx) {
                for l in [listener.take(), tls_listener.take()].into_iter().flatten() {
                    let _ = ctl(&ep, libc::EPOLL_CTL_DEL, &l, 0, 0);
                }
            }
            let expired: Vec<usize> = conns
                .iter_mut()
                .filter_map(|(k, c)| policy::expired(c, &mut ctx).then_some(k))
                .collect();
            for k in expired {
                close(&mut conns, k, &ctx);
            }
            if ticker.finished(ctx.now, conns.len()) {
                let keys: Vec<usize> = conns.iter().map(|(k, _)| k).collect();
                for k in keys {
                    close(&mut conns, k, &ctx);
                }
                return Ok(());
            }
        }
    }
}

fn on_event(conn: &mut Conn, bits: u32, scratch: &mut [u8], ctx: &mut WorkerCtx) -> Next {
    let mut next = if bits & libc::EPOLLOUT as u32 != 0 {
        conn.on_writable(ctx)
    } else {
        Next::Read
    };
    // Always read when the connection wants input: a request pipelined while the previous
    // response was blocked raised its edge then, and no new edge will come for it.
    if next == Next::Read {
        next = read_until_blocked(conn, scratch, ctx);
    }
    next
}

/// Edge-triggered: read until EAGAIN, or until the connection stops wanting input.
fn read_until_blocked(conn: &mut Conn, scratch: &mut [u8], ctx: &mut WorkerCtx) -> Next {
    loop {
        match socket::recv(conn.sock().as_fd(), scratch) {
            Ok(0) => return conn.on_eof(ctx),
            Ok(n) => match conn.on_data(&scratch[..n], ctx) {
                Next::Read => continue,
                // A blocked response waits for EPOLLOUT; unread input waits in the kernel.
                other => return other,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => match conn.on_recv_error(e.raw_os_error().unwrap_or(0), ctx) {
                Next::Read => continue,
                other => return other,
            },
        }
    }
}

fn accept_all(
    listener: &OwnedFd,
    ep: &OwnedFd,
    conns: &mut Slab<Conn>,
    ctx: &mut WorkerCtx,
    tls: bool,
) {
    loop {
        // SAFETY: null address pointers are allowed; flags are valid for accept4.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            match AcceptError::of(io::Error::last_os_error().raw_os_error().unwrap_or(0)) {
                AcceptError::Empty => return,
                AcceptError::Aborted => continue,
                AcceptError::Exhausted => {
                    // Leave the rest queued; the next event retries.
                    std::thread::sleep(Duration::from_millis(1));
                    return;
                }
            }
        }
        // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let Some(conn) = accept_admitted(sock, ctx, tls) else {
            continue;
        };
        let entry = conns.vacant_entry();
        let key = entry.key();
        let bits = (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
        if ctl(ep, libc::EPOLL_CTL_ADD, conn.sock(), bits, key as u64).is_err() {
            policy::release(conn, ctx);
            continue;
        }
        entry.insert(conn);
    }
}

fn close(conns: &mut Slab<Conn>, key: usize, ctx: &WorkerCtx) {
    if let Some(conn) = conns.try_remove(key) {
        // Dropping the Conn closes the socket, which also removes it from the epoll set.
        policy::release(conn, ctx);
    }
}

fn ctl(ep: &OwnedFd, op: libc::c_int, fd: &OwnedFd, events: u32, token: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: both descriptors are open and `ev` is a valid local.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
