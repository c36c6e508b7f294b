//! Bytes into messages and each message to its transition: chunked input, unexpected messages,
//! a NOTIFICATION received (`messages.rs`).

use super::*;

#[test]
fn unexpected_messages_are_fsm_errors_with_rfc_6608_subcodes() {
    // KEEPALIVE in OpenSent.
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    t.sent();
    t.feed(id, &msg::keepalive());
    assert_eq!(t.sent(), vec![notif(5, 1), Sent::Close]);
    // UPDATE in OpenConfirm.
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    t.feed(id, &msg::router_open(64500, 90, PEER_ID, None));
    t.sent();
    t.feed(id, &three_routes());
    assert_eq!(t.sent(), vec![notif(5, 2), Sent::Close]);
    // OPEN in Established: routes dropped.
    let mut t = T::new(cfg());
    let id = t.establish(None);
    t.feed(id, &three_routes());
    t.feed(id, &msg::router_open(64500, 90, PEER_ID, None));
    assert_eq!(t.sent(), vec![notif(5, 3), Sent::Close]);
    assert_eq!(t.received(), 0);
}

#[test]
fn a_notification_from_the_router_ends_the_session_quietly() {
    let mut t = T::new(cfg());
    let id = t.establish(Some(msg::gr_both(120, false, true)));
    t.feed(id, &three_routes());
    t.feed(
        id,
        &msg::notification(6, 2, &[5, b'm', b'a', b'i', b'n', b't']),
    );
    assert_eq!(t.sent(), vec![Sent::Close]);
    // A NOTIFICATION is never a graceful restart (RFC 4724 §4.2).
    assert_eq!(t.received(), 0);
    assert_eq!(t.s.state(), SessionState::Active, "still accepting");
    let e = t.s.last_error().unwrap();
    assert!(e.contains("6/2") && e.contains("maint"), "{e}");
}

#[test]
fn bytes_may_arrive_in_any_chunks() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    let stream = [
        msg::router_open(64500, 90, PEER_ID, None),
        msg::keepalive(),
        three_routes(),
        v6_route(),
        msg::keepalive(),
    ]
    .concat();
    for b in &stream {
        t.feed(id, std::slice::from_ref(b));
    }
    assert_eq!(t.s.state(), SessionState::Established);
    assert_eq!(t.received(), 4);
}
