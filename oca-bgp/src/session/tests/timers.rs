//! Deadlines: the dial's, the hold timer (with and without a negotiated hold time), keepalives
//! (`timers.rs`).

use super::*;

#[test]
fn a_dial_that_hangs_is_abandoned() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.at(CONNECT_TIMEOUT.as_secs_f64());
    assert_eq!(t.s.poll_action(), Some(Action::Close(id)));
    assert_eq!(t.s.state(), SessionState::Active);
    // Its late success is closed, not used.
    t.s.connected(id, t.now);
    assert_eq!(t.s.poll_action(), Some(Action::Close(id)));
}

#[test]
fn keepalives_go_at_a_third_of_the_hold_time_and_silence_expires_it() {
    let mut t = T::new(cfg());
    let id = t.establish(None);
    t.feed(id, &three_routes());
    // Keepalives every 30 s (jittered to 22.5-30 s); the router's keepalives keep it up.
    let mut kept = 0;
    for s in 1..=200 {
        t.at(f64::from(s));
        kept += t.sent().iter().filter(|m| **m == KEEPALIVE).count();
        if s % 30 == 0 {
            t.feed(id, &msg::keepalive());
        }
    }
    assert!((6..=9).contains(&kept), "{kept} keepalives in 200 s");
    assert_eq!(t.s.state(), SessionState::Established);
    // Then silence: at 90 s after the last keepalive (t=180), NOTIFICATION 4/0.
    t.at(269.0);
    assert_eq!(t.s.state(), SessionState::Established);
    t.sent();
    t.at(270.0);
    assert_eq!(t.sent(), vec![notif(4, 0), Sent::Close]);
    assert_eq!(t.received(), 0, "hold timer expiry drops the routes");
    assert_eq!(t.s.state(), SessionState::Idle);
    assert_eq!(t.s.flaps(), 1);
    assert!(t.s.last_error().unwrap().contains("4/0"));
    // Refusing connections while holding off, then dialling again.
    assert_eq!(t.s.accept(t.now), None);
    let next = t.s.next_deadline().unwrap();
    assert!(next - t.now <= Duration::from_secs(5));
    t.now = next;
    t.s.on_timer(t.now);
    assert_eq!(t.sent(), vec![Sent::Connect]);
}

#[test]
fn the_open_wait_has_its_own_long_hold_timer() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    t.sent();
    t.at(239.0);
    assert_eq!(t.s.state(), SessionState::OpenSent);
    t.at(240.0);
    assert_eq!(t.sent(), vec![notif(4, 0), Sent::Close]);
}

#[test]
fn with_no_hold_time_the_keepalive_wait_still_ends() {
    let mut t = T::new(SessionConfig {
        hold_time: 0,
        ..cfg()
    });
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    t.feed(id, &msg::router_open(64500, 0, PEER_ID, None));
    assert_eq!(t.s.state(), SessionState::OpenConfirm);
    t.actions();
    t.at(OPEN_HOLD.as_secs_f64());
    assert_eq!(t.sent(), vec![notif(4, 0), Sent::Close]);
    // Established with no hold time: no keepalives, no expiry.
    let mut t = T::new(SessionConfig {
        hold_time: 0,
        ..cfg()
    });
    let id = t.establish(None);
    t.at(100_000.0);
    assert!(t.actions().is_empty());
    assert_eq!(t.s.state(), SessionState::Established);
    let _ = id;
}
