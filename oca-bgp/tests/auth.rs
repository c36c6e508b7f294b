//! TCP authentication, on loopback without root: a neighbour configured with a TCP-MD5
//! password cannot connect unsigned (the kernel drops its SYN, with the key on the listening
//! socket), and one configured with TCP-AO, which this kernel lacks, stays down with that as its
//! error and is never served unsigned. (A signed session with a real router is in
//! interop_bird.rs.)

mod common;

use std::time::Duration;

use common::scripted::{Harness, ROUTER};
use oca_bgp::config::TcpAo;
use oca_bgp::SessionState;

#[test]
fn an_md5_neighbour_cannot_connect_unsigned() {
    let h = Harness::start_with(|n| n.md5_password = Some("s3cret".into()));
    assert!(
        h.try_connect_from(ROUTER, Duration::from_secs(2)).is_none(),
        "an unsigned SYN from an MD5 neighbour must go unanswered"
    );
    assert_ne!(h.state(), SessionState::Established);
}

#[test]
fn tcp_ao_the_kernel_lacks_keeps_the_session_down() {
    let support = oca_bgp::transport::probe();
    let h = Harness::start_with(|n| {
        n.tcp_ao = Some(TcpAo {
            key: "s3cret".into(),
            algorithm: "hmac(sha1)".into(),
            send_id: 1,
            recv_id: 1,
        })
    });
    let s = h.snapshot().sessions[0].clone();
    if let Err(why) = &support.tcp_ao {
        assert_eq!(s.state, SessionState::Idle);
        let e = s.last_error.unwrap_or_default();
        assert!(
            e.contains("TCP-AO unsupported by the kernel"),
            "{e} ({why})"
        );
    }
    // Unsigned, it never gets an OPEN: refused at once without AO, or never answered with it.
    if let Some(mut r) = h.try_connect_from(ROUTER, Duration::from_secs(2)) {
        assert!(
            r.read_message().is_none(),
            "no OPEN for an unsigned connection"
        );
    }
    assert_ne!(h.state(), SessionState::Established);
}
