//! Graceful restart as the receiving speaker: stale routes, the F bit, End-of-RIB, the restart
//! and stale timers, a second restart, a restart seen as a new connection whose OPEN passes the
//! checks, and new connections that never get that far (`graceful_restart.rs`, and
//! `lifecycle.rs` and `collision.rs` for the new connection).

use super::*;

#[test]
fn graceful_restart_keeps_routes_stale_until_end_of_rib() {
    let mut t = T::new(cfg());
    let id = t.establish(Some(msg::gr_both(120, false, true)));
    t.feed(id, &three_routes());
    t.feed(id, &v6_route());
    t.s.closed(id, t.now);
    assert_eq!(t.sent(), vec![Sent::Close]);
    assert_eq!((t.received(), t.s.rib().stale()), (4, 4));
    assert_eq!(t.s.state(), SessionState::Active);
    assert!(t.s.restart_deadline().is_some());
    // The router is back (R and F bits) and resends part of its table.
    t.at(10.0);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no redial");
    };
    t.s.connected(id, t.now);
    t.finish_open(id, Some(msg::gr_both(120, true, true)));
    assert_eq!(t.s.rib().stale(), 4, "kept through OPEN: F bit set");
    assert!(t.s.restart_deadline().is_none());
    t.feed(
        id,
        &msg::announce4(&[64500, 64510], NH, &[([198, 51, 100, 0], 24)]),
    );
    assert_eq!(t.s.rib().stale(), 3);
    t.feed(id, &msg::eor4());
    assert_eq!(
        (t.received(), t.s.rib().stale()),
        (2, 1),
        "IPv4 leftovers gone at End-of-RIB"
    );
    // No IPv6 End-of-RIB: the stale timer drops the rest (the router's keepalives keep the
    // session up meanwhile).
    for s in (40..=360).step_by(30) {
        t.at(f64::from(s));
        t.feed(id, &msg::keepalive());
    }
    t.at(10.0 + 359.0);
    assert_eq!(t.s.rib().stale(), 1);
    t.at(10.0 + 360.0);
    assert_eq!((t.received(), t.s.rib().stale()), (1, 0));
    assert_eq!(t.s.state(), SessionState::Established);
}

#[test]
fn graceful_restart_drops_what_the_new_open_does_not_keep() {
    let mut t = T::new(cfg());
    let id = t.establish(Some(msg::gr_both(120, false, true)));
    t.feed(id, &three_routes());
    t.feed(id, &v6_route());
    t.s.closed(id, t.now);
    t.actions();
    let id = t.s.accept(t.now).unwrap();
    // Back with IPv4 forwarding kept (F=1) and IPv6 not (F=0).
    let gr = msg::cap_gr(120, true, &[(1, 1, true), (2, 1, false)]);
    t.finish_open(id, Some(gr));
    assert_eq!((t.received(), t.s.rib().stale()), (3, 3));
    // Back without the capability at all: everything stale goes.
    t.s.closed(id, t.now);
    t.actions();
    let id = t.s.accept(t.now).unwrap();
    t.finish_open(id, None);
    assert_eq!(t.received(), 0);
}

#[test]
fn graceful_restart_gives_up_when_the_router_stays_away() {
    let mut t = T::new(SessionConfig {
        passive: true,
        graceful_restart_max: Duration::from_secs(60),
        ..cfg()
    });
    t.s.start(t.now);
    let id = t.s.accept(t.now).unwrap();
    t.finish_open(id, Some(msg::gr_both(120, false, true)));
    t.feed(id, &three_routes());
    t.s.closed(id, t.now);
    // Its restart time (120 s) capped by ours (60 s).
    t.at(59.0);
    assert_eq!(t.s.rib().stale(), 3);
    t.at(60.0);
    assert_eq!(t.received(), 0);
}

#[test]
fn a_router_back_on_a_new_connection_while_established_is_a_restart() {
    let mut t = T::new(cfg());
    let old = t.establish(Some(msg::gr_both(120, false, true)));
    t.feed(old, &three_routes());
    // It rebooted without closing the old connection; its new one arrives. Until its OPEN
    // passes the checks it proves nothing: the old session carries on.
    let new = t.s.accept(t.now).unwrap();
    assert_eq!(t.sent(), vec![OPEN]);
    assert_eq!(
        (t.s.state(), t.s.rib().stale()),
        (SessionState::Established, 0)
    );
    t.feed(
        new,
        &msg::router_open(64500, 90, PEER_ID, Some(msg::gr_both(120, true, true))),
    );
    let a = t.actions();
    assert!(a.contains(&Action::Close(old)), "{a:?}");
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Send(i, b) if *i == old && b[18] == 3)),
        "no NOTIFICATION on the old connection"
    );
    assert_eq!(t.s.rib().stale(), 3);
    assert_eq!(t.s.state(), SessionState::OpenConfirm);
    t.feed(new, &msg::keepalive());
    assert_eq!(t.s.state(), SessionState::Established);
    assert_eq!(t.s.rib().stale(), 3, "stale until End-of-RIB");
    t.feed(new, &msg::eor4());
    assert_eq!(t.received(), 0);
    assert_eq!(t.s.flaps(), 1);
}

#[test]
fn a_new_connection_without_a_valid_open_leaves_the_session_alone() {
    let mut t = T::new(cfg());
    let old = t.establish(Some(msg::gr_both(120, false, true)));
    t.feed(old, &three_routes());
    // A connection from the router's address that never sends an OPEN: closed at its OPEN
    // deadline (4 minutes), the router's keepalives keeping the old session up meanwhile.
    let silent = t.s.accept(t.now).unwrap();
    for s in (30..=240).step_by(30) {
        t.at(f64::from(s));
        t.feed(old, &msg::keepalive());
        assert_eq!(t.s.state(), SessionState::Established);
        assert_eq!((t.received(), t.s.rib().stale()), (3, 0), "at {s} s");
    }
    let a = t.actions();
    assert!(
        a.contains(&Action::Close(silent)) && !a.contains(&Action::Close(old)),
        "{a:?}"
    );
    assert!(t.s.restart_deadline().is_none());
    // One whose OPEN fails the checks (the wrong AS): its NOTIFICATION, and nothing else.
    let bad = t.s.accept(t.now).unwrap();
    t.actions();
    t.feed(
        bad,
        &msg::router_open(64999, 90, PEER_ID, Some(msg::gr_both(120, true, true))),
    );
    assert_eq!(t.sent(), vec![notif(2, 2), Sent::Close]);
    // One that sends something other than an OPEN: an FSM error, nothing else.
    let odd = t.s.accept(t.now).unwrap();
    t.actions();
    t.feed(odd, &msg::keepalive());
    assert_eq!(t.sent(), vec![notif(5, 1), Sent::Close]);
    assert_eq!(t.s.state(), SessionState::Established);
    assert_eq!((t.received(), t.s.rib().stale(), t.s.flaps()), (3, 0, 0));
    // The old connection still carries routes.
    t.feed(old, &msg::withdraw4(&[([8, 8, 8, 0], 24)]));
    assert_eq!(t.received(), 2);
}

#[test]
fn a_newer_candidate_replaces_an_older_one() {
    let mut t = T::new(cfg());
    let old = t.establish(Some(msg::gr_both(120, false, true)));
    t.feed(old, &three_routes());
    let first = t.s.accept(t.now).unwrap();
    t.actions();
    let second = t.s.accept(t.now).unwrap();
    let a = t.actions();
    assert!(
        a.contains(&Action::Close(first)) && !a.contains(&Action::Close(old)),
        "{a:?}"
    );
    assert_eq!(t.s.rib().stale(), 0);
    t.finish_open(second, Some(msg::gr_both(120, true, true)));
    assert_eq!(t.s.rib().stale(), 3);
}

#[test]
fn without_graceful_restart_a_new_connection_is_refused() {
    let mut t = T::new(cfg());
    let old = t.establish(None);
    t.feed(old, &three_routes());
    assert_eq!(t.s.accept(t.now), None);
    assert_eq!((t.s.state(), t.received()), (SessionState::Established, 3));
}

#[test]
fn a_second_restart_drops_what_the_first_did_not_refresh() {
    let mut t = T::new(cfg());
    let id = t.establish(Some(msg::gr_both(120, false, true)));
    t.feed(id, &three_routes());
    t.s.closed(id, t.now);
    t.actions();
    let id = t.s.accept(t.now).unwrap();
    t.finish_open(id, Some(msg::gr_both(120, true, true)));
    t.feed(id, &msg::announce4(&[64500], NH, &[([8, 8, 8, 0], 24)]));
    // Down again before its End-of-RIB.
    t.s.closed(id, t.now);
    assert_eq!((t.received(), t.s.rib().stale()), (1, 1));
}

#[test]
fn a_restart_seen_as_a_new_connection_closes_every_old_one() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(out)) = t.s.poll_action() else {
        panic!("no dial");
    };
    // Their connection is pending when ours comes up with graceful restart.
    let pending = t.s.accept(t.now).unwrap();
    t.s.connected(out, t.now);
    t.finish_open(out, Some(msg::gr_both(120, false, true)));
    t.feed(out, &three_routes());
    // The new connection supersedes the pending one at once; its OPEN, the Established one.
    let new = t.s.accept(t.now).unwrap();
    let a = t.actions();
    assert!(
        a.contains(&Action::Close(pending)) && !a.contains(&Action::Close(out)),
        "{a:?}"
    );
    assert_eq!(t.s.rib().stale(), 0);
    t.finish_open(new, Some(msg::gr_both(120, true, true)));
    assert_eq!(t.s.rib().stale(), 3);
    assert!(t.s.negotiated().is_some());
}

#[test]
fn the_table_is_complete_once_every_family_has_its_end_of_rib() {
    let mut t = T::new(cfg());
    let id = t.establish(None);
    assert!(!t.s.table_complete(), "Established, nothing received yet");
    t.feed(id, &three_routes());
    t.feed(id, &msg::eor4());
    assert!(!t.s.table_complete(), "IPv6 still to come");
    t.feed(id, &msg::eor6());
    assert!(t.s.table_complete());
    // Down: nothing is complete until a new session has sent its own End-of-RIBs.
    t.s.closed(id, t.now);
    assert!(!t.s.table_complete());
}
