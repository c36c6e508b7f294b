//! The OPEN exchange: to Established, the OPEN checks and their NOTIFICATIONs, families
//! negotiated (`open.rs`).

use super::*;

#[test]
fn active_open_reaches_established_and_sends_end_of_rib() {
    let mut t = T::new(cfg());
    assert_eq!(t.s.state(), SessionState::Idle);
    t.s.start(t.now);
    assert_eq!(t.s.state(), SessionState::Connect);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    assert_eq!(t.sent(), vec![OPEN]);
    assert_eq!(t.s.state(), SessionState::OpenSent);
    t.feed(id, &msg::router_open(64500, 30, PEER_ID, None));
    assert_eq!(t.s.state(), SessionState::OpenConfirm);
    assert_eq!(t.sent(), vec![KEEPALIVE]);
    t.feed(id, &msg::keepalive());
    assert_eq!(t.s.state(), SessionState::Established);
    // Our End-of-RIB for each family, which a restarting router waits for.
    assert_eq!(t.sent(), vec![UPDATE, UPDATE]);
    let n = t.s.negotiated().unwrap();
    assert_eq!(n.hold_time, 30, "the smaller hold time");
    assert_eq!(n.families, Family::ALL.to_vec());
}

#[test]
fn a_bad_open_gets_the_right_notification() {
    let cases: [(Vec<u8>, u8, u8); 4] = [
        (msg::router_open(64999, 90, PEER_ID, None), 2, 2),
        (msg::router_open(64500, 2, PEER_ID, None), 2, 6),
        (msg::router_open(64500, 90, [0, 0, 0, 0], None), 2, 3),
        (msg::open(64500, 90, PEER_ID, &[msg::cap_mp(1, 2)]), 2, 7),
    ];
    for (open, code, sub) in cases {
        let mut t = T::new(cfg());
        t.s.start(t.now);
        let Some(Action::Connect(id)) = t.s.poll_action() else {
            panic!("no dial");
        };
        t.s.connected(id, t.now);
        t.sent();
        t.feed(id, &open);
        let sent = t.sent();
        assert!(
            matches!(&sent[..], [Sent::Notification(c, s, _), Sent::Close] if (*c, *s) == (code, sub)),
            "{code}/{sub}: {sent:?}"
        );
        assert_eq!(t.s.state(), SessionState::Idle);
    }
}

#[test]
fn a_router_without_mp_capabilities_gets_ipv4() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    t.feed(id, &msg::open(64500, 90, PEER_ID, &[msg::cap_as4(64500)]));
    t.feed(id, &msg::keepalive());
    assert_eq!(
        t.s.negotiated().unwrap().families,
        vec![Family::Ipv4Unicast]
    );
    assert_eq!(
        t.sent(),
        vec![OPEN, KEEPALIVE, UPDATE],
        "one End-of-RIB: IPv4 only"
    );
    // IPv6 routes from it are ignored, not an error.
    t.feed(id, &v6_route());
    assert_eq!((t.received(), t.s.counters().routes_ignored), (0, 1));
}
