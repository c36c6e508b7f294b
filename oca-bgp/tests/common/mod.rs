//! What the integration tests share: raw message builders ([`msg`]), a speaker on loopback with
//! a scripted router ([`scripted`]), and for the interoperability tests a pair of network
//! namespaces joined by a veth ([`netns`]) with the speaker running as `oca-bgp-probe` in one
//! of them ([`probe`]).
#![allow(dead_code)]

pub mod msg;
pub mod netns;
pub mod probe;
pub mod scripted;

use std::time::{Duration, Instant};

/// Polls `f` until it gives `Some`, for at most `within`; panics with `what` after.
pub fn wait_until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
