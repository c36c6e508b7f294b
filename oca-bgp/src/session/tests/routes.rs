//! Established: routes into the Rib, RFC 7606 outcomes, the prefix limit, route refresh
//! (`routes.rs`).

use std::sync::Arc;

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

#[test]
fn routes_of_one_update_share_their_attributes_in_the_rib_and_the_report() {
    let mut cfg = cfg();
    cfg.max_prefixes = 1000;
    let mut t = T::new(cfg);
    let id = t.establish(None);
    // 500 prefixes, 80 communities and a path of 300 ASNs in one UPDATE.
    let prefixes: Vec<([u8; 4], u8)> = (0..500u32)
        .map(|i| ([20 + (i / 250) as u8, (i % 250) as u8, 0, 0], 16))
        .collect();
    let path: Vec<u32> = (0..300).map(|i| 64_512 + i).collect();
    let many: Vec<(u16, u16)> = (0..80).map(|i| (64500, i)).collect();
    let attrs = [msg::basic_attrs(&path, NH), msg::communities(&many)].concat();
    t.feed(id, &msg::update(&[], &attrs, &msg::nlri4(&prefixes)));
    assert_eq!((t.received(), t.s.rib().accepted()), (500, 500));
    assert_eq!(t.s.counters().attributes_truncated, 1);
    let routes: Vec<_> = t.s.rib().accepted_routes().collect();
    let first = &routes[0].route.attrs;
    assert!(routes.iter().all(|r| Arc::ptr_eq(&r.route.attrs, first)));
    assert_eq!(
        (
            first.as_path.len(),
            first.as_path_len(),
            first.communities.len()
        ),
        (255, 300, 64)
    );
    // 500 owners in the Rib and 500 in the snapshot: a snapshot copies pointers, not lists.
    assert_eq!(Arc::strong_count(first), 1000);
}
