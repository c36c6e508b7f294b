//! Established: routes into the Rib, RFC 7606 outcomes, the prefix limit, route refresh
//! (`routes.rs`).

use super::*;

#[test]
fn routes_are_installed_withdrawn_and_filtered() {
    let mut t = T::new(SessionConfig {
        import: ImportFilter::default(),
        ..cfg()
    });
    let id = t.establish(None);
    t.feed(id, &three_routes());
    t.feed(id, &v6_route());
    // The documentation prefixes are bogons to the default filter: received, not accepted.
    assert_eq!((t.received(), t.s.rib().accepted()), (4, 1));
    t.feed(
        id,
        &msg::withdraw4(&[([8, 8, 8, 0], 24), ([198, 51, 100, 0], 24)]),
    );
    assert_eq!((t.received(), t.s.rib().accepted()), (2, 0));
    assert_eq!(t.s.counters().updates, 3);
    assert_eq!(t.s.state(), SessionState::Established);
}

#[test]
fn a_malformed_update_is_withdrawn_and_the_session_stays() {
    let mut t = T::new(cfg());
    let id = t.establish(None);
    t.feed(id, &three_routes());
    let bad = msg::update(
        &[],
        &[msg::origin(7), msg::as_path(&[64500]), msg::next_hop(NH)].concat(),
        &msg::nlri4(&[([198, 51, 100, 0], 24)]),
    );
    t.feed(id, &bad);
    assert_eq!(t.s.state(), SessionState::Established);
    assert!(t.sent().is_empty());
    assert_eq!(t.received(), 2);
    assert_eq!(t.s.counters().treat_as_withdraw, 1);
    // An unparsable NLRI is a reset (RFC 7606 §5.3).
    t.feed(
        id,
        &msg::update(&[], &msg::basic_attrs(&[64500], NH), &[40, 1, 2, 3, 4, 5]),
    );
    let sent = t.sent();
    assert!(
        matches!(&sent[..], [Sent::Notification(3, 10, _), Sent::Close]),
        "{sent:?}"
    );
    assert_eq!(t.received(), 0);
}

#[test]
fn too_many_prefixes_cease_and_hold_off() {
    let mut t = T::new(SessionConfig {
        max_prefixes: 2,
        ..cfg()
    });
    let id = t.establish(None);
    t.feed(id, &three_routes());
    // RFC 4486 §4: Cease/1 with AFI 1, SAFI 1 and the limit.
    assert_eq!(
        t.sent(),
        vec![
            Sent::Notification(6, 1, vec![0, 1, 1, 0, 0, 0, 2]),
            Sent::Close
        ]
    );
    assert_eq!(t.received(), 0);
    assert_eq!(t.s.state(), SessionState::Idle);
    assert_eq!(t.s.accept(t.now), None, "refused while held off");
    t.at(299.0);
    assert!(t.sent().is_empty());
    t.at(300.0);
    assert_eq!(t.sent(), vec![Sent::Connect]);
}

#[test]
fn route_refresh_is_asked_per_family_when_supported() {
    let mut t = T::new(cfg());
    assert_eq!(t.s.route_refresh(), Err(RefreshError::NotEstablished));
    t.establish(None);
    t.s.route_refresh().unwrap();
    assert_eq!(t.sent(), vec![Sent::Message(5), Sent::Message(5)]);
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(id)) = t.s.poll_action() else {
        panic!("no dial");
    };
    t.s.connected(id, t.now);
    t.feed(
        id,
        &msg::open(
            64500,
            90,
            PEER_ID,
            &[msg::cap_mp(1, 1), msg::cap_as4(64500)],
        ),
    );
    t.feed(id, &msg::keepalive());
    assert_eq!(t.s.route_refresh(), Err(RefreshError::NotSupported));
    // Its ROUTE-REFRESH to us is ignored: we have nothing to send.
    t.actions();
    t.feed(id, &msg::message(5, &[0, 1, 0, 1]));
    assert!(t.actions().is_empty());
    assert_eq!(t.s.state(), SessionState::Established);
}
