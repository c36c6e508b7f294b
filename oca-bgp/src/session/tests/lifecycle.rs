//! Starting and stopping, connections opened and ended, and the wait before the next try
//! (`lifecycle.rs`).

use super::*;

#[test]
fn a_passive_session_waits_and_accepts() {
    let mut t = T::new(SessionConfig {
        passive: true,
        ..cfg()
    });
    t.s.start(t.now);
    assert_eq!(t.s.state(), SessionState::Active);
    assert!(t.actions().is_empty(), "a passive session never dials");
    assert_eq!(t.s.next_deadline(), None);
    let id = t.s.accept(t.now).unwrap();
    assert_eq!(t.sent(), vec![OPEN]);
    t.finish_open(id, None);
    // A second connection while Established, from a router without graceful restart: refused.
    assert_eq!(t.s.accept(t.now), None);
}

#[test]
fn failed_dials_back_off_exponentially_with_jitter() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let mut waits = Vec::new();
    for _ in 0..5 {
        let Some(Action::Connect(id)) = t.s.poll_action() else {
            panic!("no dial");
        };
        t.s.connect_failed(id, "refused", t.now);
        assert_eq!(t.s.state(), SessionState::Active);
        let next = t.s.next_deadline().unwrap();
        waits.push(next - t.now);
        t.now = next;
        t.s.on_timer(t.now);
        assert_eq!(t.s.state(), SessionState::Connect);
    }
    for (w, nominal) in waits.iter().zip([5, 10, 20, 40, 80]) {
        let n = Duration::from_secs(nominal);
        assert!(*w <= n && *w >= n.mul_f64(0.75), "{waits:?}");
    }
    assert_eq!(t.s.last_error(), Some("connect: refused"));
}

#[test]
fn stop_sends_cease_2_and_drops_everything() {
    let mut t = T::new(cfg());
    let id = t.establish(None);
    t.feed(id, &three_routes());
    t.s.stop(t.now);
    assert_eq!(t.sent(), vec![notif(6, 2), Sent::Close]);
    assert_eq!(t.received(), 0);
    assert_eq!(t.s.state(), SessionState::Idle);
    assert_eq!(t.s.accept(t.now), None);
    assert_eq!(t.s.next_deadline(), None);
    t.s.start(t.now);
    assert_eq!(t.sent(), vec![Sent::Connect]);
}

#[test]
fn a_long_lived_session_resets_the_backoff() {
    let mut t = T::new(SessionConfig {
        passive: false,
        ..cfg()
    });
    // Three quick failures push the wait to 20 s nominal.
    t.s.start(t.now);
    for _ in 0..3 {
        let Some(Action::Connect(id)) = t.s.poll_action() else {
            panic!("no dial");
        };
        t.s.connect_failed(id, "refused", t.now);
        t.now = t.s.next_deadline().unwrap();
        t.s.on_timer(t.now);
    }
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    t.finish_open(id, None);
    for _ in 0..4 {
        t.now += Duration::from_secs(30);
        t.feed(id, &msg::keepalive());
        t.s.on_timer(t.now);
    }
    t.s.closed(id, t.now);
    let wait = t.s.next_deadline().unwrap() - t.now;
    assert!(wait <= Duration::from_secs(5), "{wait:?}");
}

#[test]
fn an_error_on_their_connection_abandons_our_dial_and_holds_off() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(dial)) = t.s.poll_action() else {
        panic!("no dial");
    };
    let inc = t.s.accept(t.now).unwrap();
    t.actions();
    t.feed(inc, &msg::keepalive());
    let a = t.actions();
    assert!(
        a.contains(&Action::Close(inc)) && a.contains(&Action::Close(dial)),
        "{a:?}"
    );
    assert_eq!(t.s.state(), SessionState::Idle);
    // Its late success is closed too.
    t.s.connected(dial, t.now);
    assert_eq!(t.s.poll_action(), Some(Action::Close(dial)));
}

#[test]
fn their_connection_closing_leaves_our_dial_running() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(dial)) = t.s.poll_action() else {
        panic!("no dial");
    };
    let inc = t.s.accept(t.now).unwrap();
    t.s.closed(inc, t.now);
    assert_eq!(t.s.state(), SessionState::Connect);
    t.actions();
    t.s.connected(dial, t.now);
    assert_eq!(t.sent(), vec![OPEN]);
}
