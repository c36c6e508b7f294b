//! `kernel.io_uring_disabled = 2` on the real kernel: `--engine auto` falls back to epoll with the
//! reason logged and serves. Its own test binary (cargo runs test binaries one after another), so
//! flipping the machine-wide sysctl cannot touch other tests; restored on drop, even on failure.

mod common;

use common::*;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[test]
fn io_uring_disabled_sysctl_falls_back_to_epoll() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED io_uring_disabled_sysctl_falls_back_to_epoll: not root (the sysctl needs root)");
        return;
    }
    let Ok(before) = std::fs::read_to_string(SYSCTL) else {
        println!("SKIPPED io_uring_disabled_sysctl_falls_back_to_epoll: kernel has no {SYSCTL}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(4, 70_000);
    put(dir.path(), "y.mp4", &data);
    let _restore = Restore(before);
    std::fs::write(SYSCTL, "2").unwrap();
    let s = Server::start("auto", &[dir.path()], &[]);
    let log = s.log();
    assert!(log.contains("kernel.io_uring_disabled = 2"), "{log}");
    assert!(s.metrics().contains("oca_engine{engine=\"epoll\""));
    let r = raw(
        s.addr,
        b"GET /c/y.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=-1000\r\n\r\n",
    )
    .unwrap();
    assert!(r.body[..] == data[data.len() - 1000..]);
}
