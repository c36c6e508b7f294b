//! The state machine driven by hand: transitions, timers, collisions, graceful restart and the
//! prefix limit, with time passed in and no sockets.
//!
//! This file is the harness (a session and its clock, what it sent, the router's messages);
//! the tests are split by the same jobs as the machine's own files, one test file each.

mod collision;
mod graceful_restart;
mod lifecycle;
mod messages;
mod open;
mod routes;
mod timers;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use super::*;
use crate::rib::ImportFilter;
use crate::test_msg as msg;
use crate::wire::{self, Family};

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
