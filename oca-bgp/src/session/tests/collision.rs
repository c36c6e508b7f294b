//! Connection collisions both ways (`collision.rs`).

use super::*;

/// Two connections both reach OpenConfirm; the one the higher BGP identifier opened stays.
fn collide(peer_id: [u8; 4]) -> (T, ConnId, ConnId) {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(out)) = t.s.poll_action() else {
        panic!("no dial");
    };
    let inc = t.s.accept(t.now).unwrap();
    t.s.connected(out, t.now);
    t.actions();
    t.feed(inc, &msg::router_open(64500, 90, peer_id, None));
    t.feed(out, &msg::router_open(64500, 90, peer_id, None));
    (t, out, inc)
}

#[test]
fn a_collision_keeps_the_connection_of_the_higher_identifier() {
    // Ours (10.250.0.2) is higher than 10.250.0.1: our dial stays.
    let (mut t, out, inc) = collide([10, 250, 0, 1]);
    let a = t.actions();
    assert!(
        a.contains(&Action::Close(inc)) && !a.contains(&Action::Close(out)),
        "{a:?}"
    );
    let cease: Vec<u8> = wire::Notification::new(6, 7, vec![]).encode();
    assert!(a.contains(&Action::Send(inc, cease)));
    t.feed(out, &msg::keepalive());
    assert_eq!(t.s.state(), SessionState::Established);
    // Theirs (10.250.0.3) is higher: their connection stays.
    let (mut t, out, inc) = collide([10, 250, 0, 3]);
    let a = t.actions();
    assert!(
        a.contains(&Action::Close(out)) && !a.contains(&Action::Close(inc)),
        "{a:?}"
    );
    t.feed(inc, &msg::keepalive());
    assert_eq!(t.s.state(), SessionState::Established);
}

#[test]
fn an_open_after_establishment_on_the_other_connection_loses() {
    let mut t = T::new(cfg());
    t.s.start(t.now);
    let Some(Action::Connect(out)) = t.s.poll_action() else {
        panic!("no dial");
    };
    let inc = t.s.accept(t.now).unwrap();
    t.s.connected(out, t.now);
    t.feed(inc, &msg::router_open(64500, 90, PEER_ID, None));
    t.feed(inc, &msg::keepalive());
    t.actions();
    t.feed(out, &msg::router_open(64500, 90, PEER_ID, None));
    let a = t.actions();
    assert!(a.contains(&Action::Close(out)), "{a:?}");
    assert_eq!(t.s.state(), SessionState::Established);
}
