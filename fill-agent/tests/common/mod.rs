//! What the fill agent's tests share: the fakes that `hostile.rs` runs the agent against
//! ([`fakes`]), the deployment of real processes that `fill.rs` runs ([`lab`]), the ISP router
//! that `bgp.rs` peers with ([`router`]), and a few helpers.
#![allow(dead_code)]

pub mod fakes;
pub mod lab;
pub mod router;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// One mebibyte.
pub const MIB: usize = 1 << 20;

/// The hex SHA-256 of `b`, as manifests carry it.
pub fn sha(b: &[u8]) -> String {
    oca_protocol::manifest::hex(&Sha256::digest(b))
}

/// Polls `ok` every 100 ms; fails the test, naming `what`, when it is still false after `within`.
pub fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A mount point, unmounted (lazily) on drop.
pub struct Mounted(pub PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
