//! The state machine driven by hand: transitions, timers, collisions, graceful restart and the
//! prefix limit, with time passed in and no sockets.

use std::net::Ipv6Addr;

use super::*;
use crate::rib::ImportFilter;

use crate::test_msg as msg;

const PEER_ID: [u8; 4] = [10, 250, 0, 1];
const NH: [u8; 4] = [10, 250, 0, 1];

fn cfg() -> SessionConfig {
    SessionConfig {
        local_as: 64501,
        router_id: Ipv4Addr::new(10, 250, 0, 2),
        peer_addr: "10.250.0.1".parse().unwrap(),
        peer_as: 64500,
        passive: false,
        hold_time: 90,
        connect_retry: Duration::from_secs(5),
        connect_retry_max: Duration::from_secs(120),
        max_prefixes: 100,
        max_prefix_restart: Duration::from_secs(300),
        families: Family::ALL.to_vec(),
        import: ImportFilter {
            refuse_bogons: false,
            ..ImportFilter::default()
        },
        restart_time: 120,
        graceful_restart_max: Duration::from_secs(300),
        stale_time: Duration::from_secs(360),
    }
}

/// A session under test and its clock.
struct T {
    s: Session,
    t0: Instant,
    now: Instant,
}

impl T {
    fn new(cfg: SessionConfig) -> T {
        let t0 = Instant::now();
        T {
            s: Session::new(cfg, 7, t0),
            t0,
            now: t0,
        }
    }

    /// Moves the clock to `secs` after the start and runs the timers.
    fn at(&mut self, secs: f64) {
        self.now = self.t0 + Duration::from_secs_f64(secs);
        self.s.on_timer(self.now);
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    /// The message types sent (header byte 18), NOTIFICATIONs as (3, code, subcode).
    fn sent(&mut self) -> Vec<Sent> {
        self.actions()
            .into_iter()
            .map(|a| match a {
                Action::Connect(_) => Sent::Connect,
                Action::Close(_) => Sent::Close,
                Action::Send(_, b) if b[18] == 3 => {
                    Sent::Notification(b[19], b[20], b[21..].to_vec())
                }
                Action::Send(_, b) => Sent::Message(b[18]),
            })
            .collect()
    }

    fn feed(&mut self, id: ConnId, bytes: &[u8]) {
        self.s.received(id, bytes, self.now);
    }

    /// Dials, connects, exchanges OPEN (with `gr`) and KEEPALIVE: the Established connection.
    fn establish(&mut self, gr: Option<Vec<u8>>) -> ConnId {
        self.s.start(self.now);
        let Some(Action::Connect(id)) = self.s.poll_action() else {
            panic!("no dial");
        };
        self.s.connected(id, self.now);
        self.finish_open(id, gr);
        id
    }

    fn finish_open(&mut self, id: ConnId, gr: Option<Vec<u8>>) {
        self.feed(id, &msg::router_open(64500, 90, PEER_ID, gr));
        self.feed(id, &msg::keepalive());
        assert_eq!(self.s.state(), SessionState::Established);
        self.actions();
    }

    fn received(&self) -> usize {
        self.s.rib().received()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Sent {
    Connect,
    Close,
    Message(u8),
    Notification(u8, u8, Vec<u8>),
}

const OPEN: Sent = Sent::Message(1);
const UPDATE: Sent = Sent::Message(2);
const KEEPALIVE: Sent = Sent::Message(4);

fn notif(code: u8, sub: u8) -> Sent {
    Sent::Notification(code, sub, vec![])
}

fn three_routes() -> Vec<u8> {
    msg::announce4(
        &[64500],
        NH,
        &[
            ([198, 51, 100, 0], 24),
            ([203, 0, 113, 0], 25),
            ([8, 8, 8, 0], 24),
        ],
    )
}

fn v6_route() -> Vec<u8> {
    let a: Ipv6Addr = "2001:db8:100::".parse().unwrap();
    let attrs = [
        msg::origin(0),
        msg::as_path(&[64500]),
        msg::mp_reach6("fd00:250::1".parse().unwrap(), &[(a, 48)]),
    ]
    .concat();
    msg::update(&[], &attrs, &[])
}

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
    // It rebooted without closing the old connection; its new one arrives.
    let new = t.s.accept(t.now).unwrap();
    let a = t.actions();
    assert!(a.contains(&Action::Close(old)), "{a:?}");
    assert!(
        !a.iter()
            .any(|x| matches!(x, Action::Send(i, b) if *i == old && b[18] == 3)),
        "no NOTIFICATION on the old connection"
    );
    assert_eq!(t.s.rib().stale(), 3);
    t.finish_open(new, Some(msg::gr_both(120, true, true)));
    t.feed(new, &msg::eor4());
    assert_eq!(t.received(), 0);
    assert_eq!(t.s.flaps(), 1);
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
    let new = t.s.accept(t.now).unwrap();
    let a = t.actions();
    assert!(
        a.contains(&Action::Close(out)) && a.contains(&Action::Close(pending)),
        "{a:?}"
    );
    assert_eq!(t.s.rib().stale(), 3);
    t.finish_open(new, Some(msg::gr_both(120, true, true)));
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
