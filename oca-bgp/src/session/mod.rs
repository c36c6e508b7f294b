//! One neighbour's BGP session as a sans-IO state machine (RFC 4271 §8), with its Adj-RIB-In.
//!
//! # Driving it
//!
//! The machine owns no socket and reads no clock. Its driver (the speaker's task for this
//! neighbour, or a test) tells it what happened, passing the time as an [`Instant`]:
//!
//! | event | call |
//! |---|---|
//! | start / stop (ManualStart, ManualStop) | [`Session::start`], [`Session::stop`] |
//! | the neighbour connected to us | [`Session::accept`] (returns the new connection's id, or `None`: close it) |
//! | our connect finished or failed | [`Session::connected`], [`Session::connect_failed`] |
//! | bytes arrived, in any chunks | [`Session::received`] |
//! | the connection closed or broke | [`Session::closed`] |
//! | time passed | [`Session::on_timer`], at [`Session::next_deadline`] at the latest |
//!
//! and after each call carries out the [`Action`]s from [`Session::poll_action`], in order: dial
//! the neighbour, send bytes on a connection, close a connection (after sending what came
//! before). Timers are not separate actions: the machine keeps its deadlines (connect retry,
//! hold, keepalive, graceful-restart) and [`Session::next_deadline`] says when to call back, so
//! nothing needs cancelling. Route changes are not actions either: the machine applies them to
//! its own [`Rib`], which the driver reads ([`Session::rib`]); that keeps dropping, staling and
//! limiting routes inside the part the unit tests drive.
//!
//! # States
//!
//! [`SessionState`] is RFC 4271's: `Idle` (stopped, or holding off after an error we detected,
//! refusing connections), `Connect` (dialling), `Active` (waiting for the neighbour to connect,
//! or for the next dial), `OpenSent`, `OpenConfirm`, `Established`. It is derived, never set:
//! the furthest state of the session's connections ([`ConnState`]), or with none up, what the
//! session is doing between connections (a private `Phase`: stopped, idle until, active with the
//! next dial at, or dialling with its deadline). A passive neighbour is never dialled. Every
//! connection sends its OPEN at once (no DelayOpen).
//!
//! # Transitions, and where each lives
//!
//! | from | on | to | file |
//! |---|---|---|---|
//! | Idle (stopped) | start | Connect (a dial), or Active when passive | `lifecycle.rs` |
//! | Idle (holding off), Active | the wait ends | Connect (or Active when passive) | `timers.rs` |
//! | Connect, Active | the neighbour connects | OpenSent (our OPEN sent) | `lifecycle.rs` |
//! | Connect | our dial connects | OpenSent (our OPEN sent) | `lifecycle.rs` |
//! | Connect | the dial fails or times out | Active, the next dial after the backoff | `lifecycle.rs`, `timers.rs` |
//! | OpenSent | an acceptable OPEN | OpenConfirm (our KEEPALIVE sent); a collision resolved | `open.rs`, `collision.rs` |
//! | OpenConfirm | a KEEPALIVE | Established (our End-of-RIB sent for each family) | `open.rs` |
//! | Established | UPDATE, KEEPALIVE, ROUTE-REFRESH | Established: routes into the [`Rib`] | `routes.rs` |
//! | Established | a new connection from a neighbour that does graceful restart | Established, the new one a candidate in OpenSent (an older candidate closed) | `lifecycle.rs` |
//! | Established | an acceptable OPEN on the candidate | OpenConfirm on it, the old one gone without a NOTIFICATION, routes stale | `collision.rs`, `graceful_restart.rs` |
//! | any | an error we found, hold timer expiry included (NOTIFICATION sent) | Idle for the backoff (for `max_prefix_restart` after Cease/1) | `lifecycle.rs`, `messages.rs`, `timers.rs` |
//! | any | the neighbour closed or sent a NOTIFICATION | Active, the next dial after the backoff | `lifecycle.rs`, `messages.rs` |
//! | any | stop | Idle (stopped): Cease/2, routes dropped | `lifecycle.rs` |
//!
//! The last three apply when the connection was the session's last; with another still up, the
//! session simply goes on with that one. `messages.rs` takes bytes apart into messages and sends
//! each to its transition by the connection's state; an unexpected one is an FSM Error (RFC
//! 6608). Two connections can be up at once, one each way, until collision resolution keeps one
//! (`collision.rs`). What happens to the routes when an Established connection ends (dropped, or
//! kept stale through a graceful restart) is in `graceful_restart.rs`.
//!
//! The files, lowest first (each uses only the files above it, and the types in this one):
//!
//! | file | what it is |
//! |---|---|
//! | `backoff.rs` | the wait before the next try: exponential, jittered |
//! | `conn.rs` | one connection's data: state, buffer, deadlines, what it negotiated, why it ended |
//! | `graceful_restart.rs` | a session going down: stale routes or none, the flap; stale routes after the restart |
//! | `lifecycle.rs` | start, stop, connections opened and ended, the wait before the next try |
//! | `collision.rs` | two connections at once (RFC 4271 §6.8) |
//! | `open.rs` | the OPEN exchange: checks, capability negotiation, Established |
//! | `routes.rs` | UPDATEs into the Rib, the prefix limit, route refresh |
//! | `timers.rs` | every deadline, and what happens when it passes |
//! | `messages.rs` | bytes into messages, each to its transition |
//!
//! # Errors and what follows
//!
//! Every malformed message gets its NOTIFICATION (the codes come from [`crate::wire`]), then the
//! connection closes. The session then waits before trying again (`backoff.rs`): in `Idle`,
//! refusing connections, after an error we detected (including hold timer expiry); in `Active`,
//! still accepting, after the neighbour closed or sent a NOTIFICATION. More routes than
//! `max_prefixes` gets Cease/1 and a longer `Idle` of `max_prefix_restart`.

mod backoff;
mod collision;
mod conn;
mod graceful_restart;
mod lifecycle;
mod messages;
mod open;
mod routes;
mod timers;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

pub use self::backoff::{Backoff, STABLE_AFTER};
use self::conn::Conn;
pub use self::conn::{ConnId, ConnState, Direction, Negotiated, OPEN_HOLD};
use crate::rib::{ImportFilter, Rib};
use crate::wire::Family;

/// How long a dial may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything one session needs to know, resolved from the configuration.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The neighbour's address.
    pub peer_addr: IpAddr,
    /// The neighbour's AS (equal to ours: internal BGP).
    pub peer_as: u32,
    /// Never dial; wait for the neighbour.
    pub passive: bool,
    /// Our hold time, seconds (0 or at least 3).
    pub hold_time: u16,
    /// First wait before redialling.
    pub connect_retry: Duration,
    /// Longest wait before redialling.
    pub connect_retry_max: Duration,
    /// Most routes held from this neighbour (received, accepted or not).
    pub max_prefixes: u32,
    /// How long to stay down after the neighbour sent more.
    pub max_prefix_restart: Duration,
    /// The families we take.
    pub families: Vec<Family>,
    /// Which routes are accepted.
    pub import: ImportFilter,
    /// The restart time our Graceful Restart capability states, seconds.
    pub restart_time: u16,
    /// Cap on the neighbour's restart time while we keep its routes (zero: never keep them).
    pub graceful_restart_max: Duration,
    /// After the session is back, how long stale routes wait for the End-of-RIB.
    pub stale_time: Duration,
}

/// RFC 4271's session states, as reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionState {
    /// Stopped, or holding off; connections are refused.
    Idle,
    /// Dialling the neighbour.
    Connect,
    /// Waiting for the neighbour to connect, or for the next dial.
    Active,
    /// Our OPEN sent.
    OpenSent,
    /// OPENs exchanged.
    OpenConfirm,
    /// Up: routes flow.
    Established,
}

impl std::fmt::Display for SessionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Dial the neighbour; report [`Session::connected`] or [`Session::connect_failed`].
    Connect(ConnId),
    /// Send these bytes on the connection.
    Send(ConnId, Vec<u8>),
    /// Close the connection after what was sent on it (or abandon the dial).
    Close(ConnId),
}

/// Why a route refresh could not be asked for.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RefreshError {
    /// No session is up.
    #[error("the session is not established")]
    NotEstablished,
    /// The neighbour did not advertise the route refresh capability.
    #[error("the neighbour does not support route refresh")]
    NotSupported,
}

/// Counts over the session's life, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// UPDATEs received.
    pub updates: u64,
    /// UPDATEs treated as withdraw (RFC 7606).
    pub treat_as_withdraw: u64,
    /// Attributes discarded (RFC 7606).
    pub attributes_discarded: u64,
    /// Routes of families not negotiated, ignored.
    pub routes_ignored: u64,
    /// UPDATEs whose routes were kept with an attribute list cut to its bound (more than 255
    /// ASNs, 64 communities or 64 large communities; the AS path's length is kept whole).
    pub attributes_truncated: u64,
}

/// What the session is doing while no connection is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Stopped,
    Idle { until: Instant },
    Active { connect_at: Option<Instant> },
    Connect { id: ConnId, deadline: Instant },
}

/// One neighbour's session and its routes.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    rib: Rib,
    conns: Vec<Conn>,
    next_id: u64,
    phase: Phase,
    actions: VecDeque<Action>,
    state: SessionState,
    state_since: Instant,
    backoff: Backoff,
    established_at: Option<Instant>,
    restart_deadline: Option<Instant>,
    stale_deadline: [Option<Instant>; 2],
    /// Families negotiated on the Established session whose End-of-RIB has not come yet.
    awaiting_eor: [bool; 2],
    flaps: u64,
    counters: Counters,
    last_error: Option<String>,
}

impl Session {
    /// A stopped session; `seed` drives the retry jitter.
    pub fn new(cfg: SessionConfig, seed: u64, now: Instant) -> Session {
        Session {
            rib: Rib::new(cfg.import.clone(), cfg.local_as),
            backoff: Backoff::new(cfg.connect_retry, cfg.connect_retry_max, seed),
            cfg,
            conns: Vec::new(),
            next_id: 0,
            phase: Phase::Stopped,
            actions: VecDeque::new(),
            state: SessionState::Idle,
            state_since: now,
            established_at: None,
            restart_deadline: None,
            stale_deadline: [None; 2],
            awaiting_eor: [false; 2],
            flaps: 0,
            counters: Counters::default(),
            last_error: None,
        }
    }

    // ---- what the driver reads ----

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The state as RFC 4271 names it.
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// Whether the neighbour's whole table is in: Established, and End-of-RIB (RFC 4724 §2)
    /// received for every negotiated family since. Until then what the RIB holds may be a
    /// fraction of what the router announces (the fill agent does not report it as the truth).
    pub fn table_complete(&self) -> bool {
        self.state == SessionState::Established && !self.awaiting_eor.iter().any(|&a| a)
    }

    /// When the state last changed.
    pub fn state_since(&self) -> Instant {
        self.state_since
    }

    /// The routes received.
    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// Times the session went down from Established.
    pub fn flaps(&self) -> u64 {
        self.flaps
    }

    /// Counts over the session's life.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Why the last connection ended or the last dial failed, if it was not our own stop.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// What the Established connection negotiated.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.conns
            .iter()
            .find(|c| c.state == ConnState::Established)
            .and_then(|c| c.negotiated.as_ref())
    }

    /// While stale routes wait for the neighbour to come back: when they will be dropped.
    pub fn restart_deadline(&self) -> Option<Instant> {
        self.restart_deadline
    }

    /// The next action to carry out.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    // ---- what the files beside this one share ----

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    /// Derives the reported state (see the module doc) and logs a change.
    fn update_state(&mut self, now: Instant) {
        let state = self.conns.iter().map(|c| c.state).max().map_or_else(
            || self.phase_state(),
            |s| match s {
                ConnState::OpenSent => SessionState::OpenSent,
                ConnState::OpenConfirm => SessionState::OpenConfirm,
                ConnState::Established => SessionState::Established,
            },
        );
        if state != self.state {
            tracing::info!(neighbor = %self.cfg.peer_addr, from = %self.state, to = %state, "BGP state");
            self.state = state;
            self.state_since = now;
        }
    }

    fn phase_state(&self) -> SessionState {
        match self.phase {
            Phase::Stopped | Phase::Idle { .. } => SessionState::Idle,
            Phase::Active { .. } => SessionState::Active,
            Phase::Connect { .. } => SessionState::Connect,
        }
    }
}

#[cfg(test)]
mod tests;
