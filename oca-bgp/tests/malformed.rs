//! Malformed and unexpected messages from a router played by the test, against the real speaker
//! on loopback (no root needed): each gets the NOTIFICATION RFC 4271 asks for and the session
//! ends and drops its routes, or (RFC 7606) the UPDATE's routes are withdrawn and the session
//! stays up. Never a panic: the speaker answers a snapshot after every case.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::msg;
use common::scripted::{Harness, ROUTER, ROUTER_AS, ROUTER_ID};
use oca_bgp::SessionState;

const NH: [u8; 4] = [192, 0, 2, 1];

/// A good route to hold before the bad message, so we can see whether routes survive.
fn good() -> Vec<u8> {
    msg::announce4(&[ROUTER_AS], NH, &[([8, 8, 8, 0], 24)])
}

/// After `bad` on an established session: the NOTIFICATION's code and subcode, the close,
/// routes dropped, and the session no longer Established.
fn expect_reset(bad: &[u8], code: u8, subcode: u8) -> Vec<u8> {
    let h = Harness::start();
    let mut r = h.established(90);
    r.send(&good());
    common::wait_until(Duration::from_secs(5), "the good route", || {
        (h.prefixes() == ["8.8.8.0/24"]).then_some(())
    });
    r.send(bad);
    let (c, s, data) = r.expect_notification();
    assert_eq!((c, s), (code, subcode), "NOTIFICATION for {bad:02x?}");
    let snap = h.snapshot();
    let s = &snap.sessions[0];
    assert_ne!(s.state, SessionState::Established);
    assert_eq!(s.prefixes_received, 0, "routes dropped");
    assert!(s
        .last_error
        .as_deref()
        .unwrap()
        .contains(&format!("{code}/{subcode}")));
    // RFC 4271: after an error the session is Idle for a while, refusing connections.
    assert_eq!(s.state, SessionState::Idle);
    data
}

/// After `bad`: no NOTIFICATION, the session up, `left` the prefixes still accepted.
fn expect_withdraw(bad: &[u8], left: &[&str]) {
    let h = Harness::start();
    let mut r = h.established(90);
    r.send(&good());
    r.send(bad);
    // A message after it proves the stream is still in step.
    r.send(&msg::announce4(&[ROUTER_AS], NH, &[([9, 9, 9, 0], 24)]));
    common::wait_until(
        Duration::from_secs(5),
        "the route after the bad UPDATE",
        || {
            h.prefixes()
                .contains(&"9.9.9.0/24".to_string())
                .then_some(())
        },
    );
    assert!(
        !r.closed_within(Duration::from_millis(300)),
        "the session stays"
    );
    let mut want: Vec<String> = left.iter().map(|s| s.to_string()).collect();
    want.push("9.9.9.0/24".into());
    assert_eq!(h.prefixes(), want);
    let s = &h.snapshot().sessions[0];
    assert_eq!(s.state, SessionState::Established);
}

/// An UPDATE announcing 8.8.8.0/24 again and 1.1.1.0/24, with `attrs`.
fn update_with(attrs: &[u8]) -> Vec<u8> {
    msg::update(
        &[],
        attrs,
        &msg::nlri4(&[([8, 8, 8, 0], 24), ([1, 1, 1, 0], 24)]),
    )
}

#[test]
fn header_errors_reset_the_session() {
    let mut bad_marker = msg::keepalive();
    bad_marker[0] = 0xfe;
    expect_reset(&bad_marker, 1, 1);
    let mut short = msg::keepalive();
    short[17] = 18;
    assert_eq!(expect_reset(&short, 1, 2), vec![0, 18]);
    let mut long = msg::keepalive();
    long[16..18].copy_from_slice(&4097u16.to_be_bytes());
    assert_eq!(expect_reset(&long, 1, 2), 4097u16.to_be_bytes());
    assert_eq!(expect_reset(&msg::message(9, &[]), 1, 3), vec![9]);
    assert_eq!(expect_reset(&msg::message(4, &[0, 0]), 1, 2), vec![0, 21]);
}

#[test]
fn update_errors_that_lose_the_nlri_reset_the_session() {
    let attrs = msg::basic_attrs(&[ROUTER_AS], NH);
    // Withdrawn-routes length past the message.
    let mut m = good();
    m[19..21].copy_from_slice(&300u16.to_be_bytes());
    expect_reset(&m, 3, 1);
    // Total path attribute length past the message.
    let mut m = good();
    m[21..23].copy_from_slice(&300u16.to_be_bytes());
    expect_reset(&m, 3, 1);
    // NLRI prefix length 33.
    expect_reset(&msg::update(&[], &attrs, &[33, 1, 1, 1, 1, 1]), 3, 10);
    // MP_REACH_NLRI twice.
    let a = "2001:db8:1::".parse().unwrap();
    let reach = msg::mp_reach6("2001:db8::1".parse().unwrap(), &[(a, 48)]);
    let m = msg::update(&[], &[attrs.clone(), reach.clone(), reach].concat(), &[]);
    expect_reset(&m, 3, 1);
}

#[test]
fn attribute_errors_withdraw_the_update_and_keep_the_session() {
    let path = msg::as_path(&[ROUTER_AS]);
    let nh = msg::next_hop(NH);
    let base = [msg::origin(0), path.clone(), nh.clone()].concat();
    // Bad ORIGIN value: 8.8.8.0/24 withdrawn with it, 1.1.1.0/24 never installed.
    expect_withdraw(
        &update_with(&[msg::origin(5), path.clone(), nh.clone()].concat()),
        &[],
    );
    // Missing ORIGIN.
    expect_withdraw(&update_with(&[path.clone(), nh.clone()].concat()), &[]);
    // Loopback NEXT_HOP.
    expect_withdraw(
        &update_with(&[msg::origin(0), path.clone(), msg::next_hop([127, 0, 0, 1])].concat()),
        &[],
    );
    // AS_PATH segment of length 0.
    expect_withdraw(
        &update_with(&[msg::origin(0), msg::attr(0x40, 2, &[2, 0]), nh.clone()].concat()),
        &[],
    );
    // COMMUNITIES of 3 bytes.
    expect_withdraw(
        &update_with(&[base.clone(), msg::attr(0xc0, 8, &[1, 2, 3])].concat()),
        &[],
    );
    // An attribute whose length runs past the attribute section.
    let mut overrun = base.clone();
    overrun.extend_from_slice(&[0x80, 4, 200, 0, 0]);
    expect_withdraw(&update_with(&overrun), &[]);
    // An unknown well-known attribute (our decision: treat-as-withdraw, docs/bgp.md).
    expect_withdraw(
        &update_with(&[base.clone(), msg::attr(0x40, 99, &[0])].concat()),
        &[],
    );
    // A withdrawal of something else in the same bad UPDATE is carried out too.
    let bad = msg::update(
        &msg::nlri4(&[([8, 8, 8, 0], 24)]),
        &[msg::origin(9), path, nh].concat(),
        &msg::nlri4(&[([1, 1, 1, 0], 24)]),
    );
    expect_withdraw(&bad, &[]);
}

#[test]
fn a_malformed_harmless_attribute_is_discarded() {
    let h = Harness::start();
    let mut r = h.established(90);
    let attrs = [msg::basic_attrs(&[ROUTER_AS], NH), msg::attr(0x40, 6, &[1])].concat();
    r.send(&update_with(&attrs));
    common::wait_until(Duration::from_secs(5), "both routes", || {
        (h.prefixes() == ["1.1.1.0/24", "8.8.8.0/24"]).then_some(())
    });
    assert_eq!(h.snapshot().sessions[0].counters.attributes_discarded, 1);
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    // OPEN once Established: FSM error in Established (RFC 6608).
    expect_reset(&msg::router_open(ROUTER_AS, 90, ROUTER_ID, None), 5, 3);
    // UPDATE before the KEEPALIVE: in OpenConfirm.
    let h = Harness::start();
    let mut r = h.connect_from(ROUTER);
    r.send(&msg::router_open(ROUTER_AS, 90, ROUTER_ID, None));
    assert_eq!(r.expect_kind(), 1);
    assert_eq!(r.expect_kind(), 4);
    r.send(&good());
    assert_eq!(r.expect_notification().0, 5);
}

#[test]
fn bad_opens_get_open_errors() {
    let cases: [(Vec<u8>, u8, u8); 3] = [
        (msg::router_open(65000, 90, ROUTER_ID, None), 2, 2),
        (msg::router_open(ROUTER_AS, 1, ROUTER_ID, None), 2, 6),
        (msg::router_open(ROUTER_AS, 90, [0; 4], None), 2, 3),
    ];
    for (open, code, sub) in cases {
        let h = Harness::start();
        let mut r = h.connect_from(ROUTER);
        r.send(&open);
        assert_eq!(r.expect_kind(), 1, "our OPEN first");
        let (c, s, _) = r.expect_notification();
        assert_eq!((c, s), (code, sub));
    }
    // Version 3: Unsupported Version Number, data the version we speak.
    let h = Harness::start();
    let mut r = h.connect_from(ROUTER);
    let mut open = msg::router_open(ROUTER_AS, 90, ROUTER_ID, None);
    open[19] = 3;
    r.send(&open);
    assert_eq!(r.expect_kind(), 1);
    assert_eq!(r.expect_notification(), (2, 1, vec![0, 4]));
}

#[test]
fn a_silent_router_is_dropped_at_the_hold_time() {
    let h = Harness::start();
    let mut r = h.established(3);
    r.send(&good());
    common::wait_until(Duration::from_secs(5), "the route", || {
        (h.prefixes().len() == 1).then_some(())
    });
    // Our keepalives keep coming (every second); the router says nothing.
    let started = std::time::Instant::now();
    assert_eq!(r.expect_notification(), (4, 0, vec![]));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(h.snapshot().sessions[0].prefixes_received, 0);
}

#[test]
fn a_stranger_is_closed_at_once_and_the_neighbour_still_served() {
    let h = Harness::start();
    let mut stranger = h.connect_from(Ipv4Addr::new(127, 0, 0, 3));
    assert!(stranger.closed_within(Duration::from_secs(2)));
    let _r = h.established(90);
}

#[test]
fn garbage_in_any_amount_never_panics() {
    // A handful of byte streams no router sends, each on a fresh session.
    let streams: [Vec<u8>; 4] = [
        vec![0xff; 5000],
        (0..3000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        [msg::keepalive(), vec![0xff; 16], vec![0, 19, 4]].concat(),
        [good(), good()[..30].to_vec()].concat(),
    ];
    for s in streams {
        let h = Harness::start_with(|n| n.connect_retry = 1);
        let mut r = h.established(90);
        r.send(&s);
        let _ = r.closed_within(Duration::from_millis(500));
        // Still alive: either still up, or back to accepting and reaching Established again.
        if h.state() != SessionState::Established {
            common::wait_until(Duration::from_secs(3), "Active after the hold-off", || {
                (h.state() == SessionState::Active).then_some(())
            });
            let _again = h.established(90);
        }
    }
}
