//! The BGP speaker's whole receive path, fed any bytes: framing, decoding, RFC 7606 parsing and
//! validation, route building (oca-bgp's `wire`, the only user of the codec crate), then a real
//! session state machine fed the same bytes in chunks the input chooses, with time passing.
//! Never a panic; every NOTIFICATION and message we would send fits in 4096 bytes; the session
//! never holds more routes than its limit nor buffers a whole message unread; stale routes are
//! only ever counted among the received.
//!
//! Input: byte 0 picks the chunking and whether the router's OPEN and KEEPALIVE come first (so
//! that UPDATEs reach an Established session); the rest is the router's byte stream.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use oca_bgp::rib::ImportFilter;
use oca_bgp::session::{Action, Session, SessionConfig, SessionState};
use oca_bgp::wire::{self, Family, Message, UpdateContext, UpdateOutcome};

const LIMIT: u32 = 50;

fn config() -> SessionConfig {
    SessionConfig {
        local_as: 64501,
        router_id: Ipv4Addr::new(10, 0, 0, 2),
        peer_addr: "10.0.0.1".parse().unwrap(),
        peer_as: 64500,
        passive: false,
        hold_time: 90,
        connect_retry: Duration::from_secs(1),
        connect_retry_max: Duration::from_secs(8),
        max_prefixes: LIMIT,
        max_prefix_restart: Duration::from_secs(30),
        families: Family::ALL.to_vec(),
        import: ImportFilter::default(),
        restart_time: 120,
        graceful_restart_max: Duration::from_secs(60),
        stale_time: Duration::from_secs(60),
    }
}

/// The router's side of the OPEN exchange, as our own encoder writes an OPEN.
fn prelude() -> Vec<u8> {
    let mut p = wire::encode_open(&wire::OpenParams {
        local_as: 64500,
        hold_time: 90,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        families: Family::ALL.to_vec(),
        restart_time: 120,
    });
    p.extend_from_slice(&wire::encode_keepalive());
    p
}

/// Framing and parsing alone, under each way a session may read UPDATEs.
fn decode_all(data: &[u8]) {
    for (four_octet_as, ibgp) in [(true, false), (false, false), (true, true)] {
        let ctx = UpdateContext {
            four_octet_as,
            ibgp,
            local_as: 64501,
        };
        let mut buf = BytesMut::from(data);
        loop {
            match wire::next_message(&mut buf) {
                Ok(None) => break,
                Ok(Some(Message::Update(u))) => check_update(wire::parse_update(&u, ctx)),
                Ok(Some(_)) => {}
                Err(n) => {
                    assert!(n.encode().len() <= wire::MAX_MESSAGE_LEN);
                    break;
                }
            }
        }
        assert!(buf.len() < wire::MAX_MESSAGE_LEN);
    }
}

fn check_update(r: Result<UpdateOutcome, wire::Notification>) {
    match r {
        Err(n) => assert!(n.encode().len() <= wire::MAX_MESSAGE_LEN && n.code == 3),
        Ok(UpdateOutcome::Routes { announced, .. }) => {
            for route in announced {
                // Host bits are cleared: the prefix reads back as itself.
                let text = route.prefix.to_string();
                assert_eq!(text.parse::<wire::Prefix>().ok(), Some(route.prefix));
            }
        }
        Ok(_) => {}
    }
}

/// The session fed `stream` in chunks of 1 to 64 bytes, with time passing.
fn drive(control: u8, stream: &[u8]) {
    let t0 = Instant::now();
    let mut now = t0;
    let mut s = Session::new(config(), u64::from(control), now);
    s.start(now);
    let Some(Action::Connect(id)) = s.poll_action() else {
        panic!("an active session dials first");
    };
    s.connected(id, now);
    let mut bytes = Vec::new();
    if control & 1 == 1 {
        bytes.extend_from_slice(&prelude());
    }
    bytes.extend_from_slice(stream);
    let chunk = usize::from(control >> 2).max(1);
    for piece in bytes.chunks(chunk) {
        s.received(id, piece, now);
        check(&mut s);
        now += Duration::from_millis(u64::from(control) * 50);
        s.on_timer(now);
        check(&mut s);
    }
    s.closed(id, now);
    check(&mut s);
    s.on_timer(now + Duration::from_secs(3600));
    check(&mut s);
}

fn check(s: &mut Session) {
    while let Some(a) = s.poll_action() {
        if let Action::Send(_, b) = a {
            assert!(b.len() >= 19 && b.len() <= wire::MAX_MESSAGE_LEN);
        }
    }
    let rib = s.rib();
    assert!(rib.received() <= LIMIT as usize);
    assert!(rib.accepted() <= rib.received() && rib.stale() <= rib.received());
    if s.state() == SessionState::Established {
        assert!(s.negotiated().is_some());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    decode_all(stream);
    drive(control, stream);
});
