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
//! or for the next dial), `OpenSent`, `OpenConfirm`, `Established`. A passive neighbour is never
//! dialled. Every connection sends its OPEN at once (no DelayOpen).
//!
//! Two connections can be up at once, one each way; when the second OPEN arrives, the one
//! opened by the side with the higher BGP identifier stays and the other gets Cease/7 (RFC 4271
//! §6.8, RFC 6286 §2.3 for equal identifiers). A new connection while Established is refused,
//! unless the neighbour does graceful restart: then it is the neighbour back from a restart we
//! did not see, and every connection from before goes (RFC 4724 §4.2, as BIRD does).
//!
//! # Errors and what follows
//!
//! Every malformed message gets its NOTIFICATION (the codes come from [`crate::wire`]), then the
//! connection closes. Unexpected messages get FSM Error with RFC 6608's subcodes. The session
//! then waits before trying again ([`backoff`]): in `Idle`, refusing connections, after an error
//! we detected (including hold timer expiry); in `Active`, still accepting, after the neighbour
//! closed or sent a NOTIFICATION. More routes than `max_prefixes` gets Cease/1 and a longer
//! `Idle` of `max_prefix_restart`.
//!
//! # Routes when the session ends
//!
//! Dropped, unless the neighbour advertised graceful restart and the TCP connection ended
//! without a NOTIFICATION either way (RFC 4724 §4.2; a hold timer expiry is a NOTIFICATION, so
//! it drops them too). Then the routes of the families in its capability stay, marked stale,
//! until the neighbour's restart time (capped by `graceful_restart_max`) runs out; when the
//! session comes back, families the new OPEN does not keep forwarding for (F bit clear) go at
//! once, and the rest go at the neighbour's End-of-RIB for the family, or after `stale_time`.
//! On Established we send our own End-of-RIB for each family, which a restarting router waits
//! for before sending its routes.

mod backoff;
mod conn;

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use serde::Serialize;
use thiserror::Error;

pub use self::backoff::{Backoff, STABLE_AFTER};
use self::conn::{check_open, Conn};
pub use self::conn::{ConnId, ConnState, Direction, Negotiated, OPEN_HOLD};
use crate::rib::{ImportFilter, Rib};
use crate::wire::{self, code, subcode, Family, Message, Notification, UpdateOutcome};

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
}

/// What the session is doing while no connection is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Stopped,
    Idle { until: Instant },
    Active { connect_at: Option<Instant> },
    Connect { id: ConnId, deadline: Instant },
}

/// Why a connection ended.
#[derive(Clone, Debug)]
enum End {
    /// TCP closed or broke, no NOTIFICATION.
    TcpClosed,
    /// The neighbour sent this NOTIFICATION.
    Received(Notification),
    /// We sent this NOTIFICATION for an error we found.
    Sent(Notification),
    /// We sent Cease/1.
    MaxPrefix(Notification),
    /// It lost a collision (we sent Cease/7).
    Collision,
    /// The neighbour came back from a restart on a new connection.
    Replaced,
    /// We were told to stop (Cease/2 sent).
    Stopped,
}

impl End {
    fn sent(&self) -> Option<Notification> {
        match self {
            End::Sent(n) | End::MaxPrefix(n) => Some(n.clone()),
            End::Collision => Some(Notification::new(code::CEASE, subcode::COLLISION, vec![])),
            End::Stopped => Some(Notification::new(
                code::CEASE,
                subcode::ADMIN_SHUTDOWN,
                vec![],
            )),
            _ => None,
        }
    }

    /// RFC 4724 §4.2: only a connection lost without a NOTIFICATION is a restart.
    fn keeps_routes(&self) -> bool {
        matches!(self, End::TcpClosed | End::Replaced)
    }

    fn describe(&self, was: ConnState) -> Option<String> {
        Some(match self {
            End::TcpClosed if was == ConnState::Established => {
                "connection closed by the neighbour".to_string()
            }
            End::TcpClosed => format!("connection closed in {was:?}"),
            End::Received(n) => format!("received NOTIFICATION {n}"),
            End::Sent(n) | End::MaxPrefix(n) => format!("sent NOTIFICATION {n}"),
            End::Replaced => "neighbour reconnected while Established (restarted)".to_string(),
            End::Collision | End::Stopped => return None,
        })
    }
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

    /// When [`Session::on_timer`] must be called next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let conns = self
            .conns
            .iter()
            .flat_map(|c| [c.hold_deadline, c.keepalive_at]);
        let phase = match self.phase {
            Phase::Idle { until } => Some(until),
            Phase::Active { connect_at } if self.conns.is_empty() => connect_at,
            Phase::Connect { deadline, .. } => Some(deadline),
            _ => None,
        };
        conns
            .chain([phase, self.restart_deadline])
            .chain(self.stale_deadline)
            .flatten()
            .min()
    }

    // ---- events ----

    /// ManualStart: dial at once (or wait, when passive).
    pub fn start(&mut self, now: Instant) {
        if self.phase == Phase::Stopped {
            self.try_now(now);
            self.update_state(now);
        }
    }

    /// ManualStop: Cease/2 on every connection, routes dropped, `Idle` until started again.
    pub fn stop(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        if let Phase::Connect { id, .. } = self.phase {
            self.actions.push_back(Action::Close(id));
        }
        self.phase = Phase::Stopped;
        for id in ids {
            self.end(id, End::Stopped, now);
        }
        self.forget_routes();
        self.update_state(now);
    }

    /// Stops the session for good with `reason` as its error (e.g. TCP-AO the kernel lacks).
    pub fn disable(&mut self, reason: String, now: Instant) {
        self.stop(now);
        tracing::warn!(neighbor = %self.cfg.peer_addr, %reason, "session disabled");
        self.last_error = Some(reason);
    }

    /// The neighbour connected to us: the new connection's id, or `None` when it must be closed
    /// (stopped, holding off, or a session already has it).
    pub fn accept(&mut self, now: Instant) -> Option<ConnId> {
        if matches!(self.phase, Phase::Stopped | Phase::Idle { .. }) {
            return None;
        }
        if let Some(old) = self
            .conns
            .iter()
            .find(|c| c.state == ConnState::Established)
        {
            let restartable = old
                .negotiated
                .as_ref()
                .is_some_and(|n| n.graceful_restart.is_some());
            if !restartable {
                return None;
            }
            // The router restarted: every connection from before is dead.
            let old: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
            for id in old {
                self.end(id, End::Replaced, now);
            }
        } else if self.conns.iter().any(|c| c.dir == Direction::Incoming) {
            return None;
        }
        let id = self.open_conn(Direction::Incoming, now);
        self.update_state(now);
        Some(id)
    }

    /// Our dial `id` connected.
    pub fn connected(&mut self, id: ConnId, now: Instant) {
        let ours = matches!(self.phase, Phase::Connect { id: d, .. } if d == id);
        let established = self.conns.iter().any(|c| c.state == ConnState::Established);
        if !ours || established {
            self.actions.push_back(Action::Close(id));
            if ours {
                self.phase = Phase::Active { connect_at: None };
            }
            return;
        }
        self.phase = Phase::Active { connect_at: None };
        let conn_id = self.open_conn_with(id, Direction::Outgoing, now);
        debug_assert_eq!(conn_id, id);
        self.update_state(now);
    }

    /// Our dial `id` failed.
    pub fn connect_failed(&mut self, id: ConnId, error: &str, now: Instant) {
        if !matches!(self.phase, Phase::Connect { id: d, .. } if d == id) {
            return;
        }
        tracing::debug!(neighbor = %self.cfg.peer_addr, error, "connect failed");
        self.last_error = Some(format!("connect: {error}"));
        self.phase = Phase::Active { connect_at: None };
        if self.conns.is_empty() {
            self.retry_later(now);
        }
        self.update_state(now);
    }

    /// The connection closed or broke.
    pub fn closed(&mut self, id: ConnId, now: Instant) {
        self.end(id, End::TcpClosed, now);
        self.update_state(now);
    }

    /// Bytes arrived on connection `id`, in any chunks.
    pub fn received(&mut self, id: ConnId, bytes: &[u8], now: Instant) {
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        c.buf.extend_from_slice(bytes);
        while let Some(c) = self.conn_mut(id) {
            match wire::next_message(&mut c.buf) {
                Ok(None) => break,
                Ok(Some(m)) => {
                    if !self.handle(id, m, now) {
                        break;
                    }
                }
                Err(n) => {
                    self.end(id, End::Sent(n), now);
                    break;
                }
            }
        }
        debug_assert!(self
            .conn_mut(id)
            .is_none_or(|c| c.buf.len() < wire::MAX_MESSAGE_LEN));
        self.update_state(now);
    }

    /// Time passed: runs every timer due by `now`.
    pub fn on_timer(&mut self, now: Instant) {
        self.conn_timers(now);
        self.phase_timers(now);
        self.restart_timers(now);
        self.update_state(now);
    }

    /// Asks the neighbour to send its routes again (RFC 2918), for each negotiated family.
    pub fn route_refresh(&mut self) -> Result<(), RefreshError> {
        let c = self
            .conns
            .iter()
            .find(|c| c.state == ConnState::Established)
            .ok_or(RefreshError::NotEstablished)?;
        let n = c.negotiated.as_ref().ok_or(RefreshError::NotEstablished)?;
        if !n.route_refresh {
            return Err(RefreshError::NotSupported);
        }
        for f in &n.families {
            self.actions
                .push_back(Action::Send(c.id, wire::encode_route_refresh(*f)));
        }
        Ok(())
    }

    // ---- connections ----

    fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn new_id(&mut self) -> ConnId {
        self.next_id += 1;
        ConnId(self.next_id)
    }

    fn open_conn(&mut self, dir: Direction, now: Instant) -> ConnId {
        let id = self.new_id();
        self.open_conn_with(id, dir, now)
    }

    /// A new connection sends its OPEN at once.
    fn open_conn_with(&mut self, id: ConnId, dir: Direction, now: Instant) -> ConnId {
        let open = wire::encode_open(&wire::OpenParams {
            local_as: self.cfg.local_as,
            hold_time: self.cfg.hold_time,
            router_id: self.cfg.router_id,
            families: self.cfg.families.clone(),
            restart_time: self.cfg.restart_time,
        });
        self.actions.push_back(Action::Send(id, open));
        self.conns.push(Conn::opened(id, dir, now));
        id
    }

    /// Ends a connection: its NOTIFICATION (if any) and close; routes and the next try if it
    /// was the session's last.
    fn end(&mut self, id: ConnId, why: End, now: Instant) {
        let Some(i) = self.conns.iter().position(|c| c.id == id) else {
            return;
        };
        let conn = self.conns.remove(i);
        if let Some(n) = why.sent() {
            self.actions.push_back(Action::Send(id, n.encode()));
        }
        self.actions.push_back(Action::Close(id));
        if let Some(e) = why.describe(conn.state) {
            tracing::info!(neighbor = %self.cfg.peer_addr, conn = %id, error = %e, "connection ended");
            self.last_error = Some(e);
        }
        if conn.state == ConnState::Established {
            self.session_down(&conn, &why, now);
        }
        if self.conns.is_empty() {
            match why {
                End::MaxPrefix(_) => self.hold_off(now + self.cfg.max_prefix_restart),
                End::Sent(_) => {
                    let until = now + self.backoff.next_wait();
                    self.hold_off(until);
                }
                // A dial already under way is the next try.
                _ if matches!(self.phase, Phase::Connect { .. }) => {}
                _ => self.retry_later(now),
            }
        }
    }

    /// `Idle` until `until`, refusing connections, after an error we found; a dial under way
    /// is abandoned.
    fn hold_off(&mut self, until: Instant) {
        match self.phase {
            Phase::Stopped => return,
            Phase::Connect { id, .. } => self.actions.push_back(Action::Close(id)),
            _ => {}
        }
        self.phase = Phase::Idle { until };
    }

    /// `Active` (accepting) until the next dial.
    fn retry_later(&mut self, now: Instant) {
        if self.phase == Phase::Stopped {
            return;
        }
        let at = now + self.backoff.next_wait();
        self.phase = Phase::Active {
            connect_at: (!self.cfg.passive).then_some(at),
        };
    }

    /// Leaves `Idle`: dial, or wait for the neighbour when passive.
    fn try_now(&mut self, now: Instant) {
        if self.cfg.passive {
            self.phase = Phase::Active { connect_at: None };
            return;
        }
        let id = self.new_id();
        self.actions.push_back(Action::Connect(id));
        self.phase = Phase::Connect {
            id,
            deadline: now + CONNECT_TIMEOUT,
        };
    }

    // ---- messages ----

    /// One message on connection `id`; whether the connection is still open.
    fn handle(&mut self, id: ConnId, m: Message, now: Instant) -> bool {
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        let state = c.state;
        match (state, m) {
            (_, Message::Notification(n)) => {
                self.end(id, End::Received(n), now);
                false
            }
            (ConnState::OpenSent, Message::Open(open)) => self.on_open(id, &open, now),
            (ConnState::OpenConfirm, Message::Keepalive) => {
                self.establish(id, now);
                true
            }
            (ConnState::Established, Message::Keepalive) => {
                c.heard(now);
                true
            }
            (ConnState::Established, Message::Update(u)) => {
                c.heard(now);
                self.on_update(id, &u, now)
            }
            (ConnState::Established, Message::RouteRefresh { afi, safi }) => {
                // No Adj-RIB-Out: there is nothing to send again.
                tracing::debug!(neighbor = %self.cfg.peer_addr, afi, safi, "ROUTE-REFRESH ignored");
                true
            }
            (state, m) => {
                let sub = match state {
                    ConnState::OpenSent => subcode::FSM_OPEN_SENT,
                    ConnState::OpenConfirm => subcode::FSM_OPEN_CONFIRM,
                    ConnState::Established => subcode::FSM_ESTABLISHED,
                };
                tracing::debug!(neighbor = %self.cfg.peer_addr, message = m.name(), ?state, "unexpected message");
                self.end(
                    id,
                    End::Sent(Notification::new(code::FSM, sub, vec![])),
                    now,
                );
                false
            }
        }
    }

    fn on_open(&mut self, id: ConnId, open: &wire::Open, now: Instant) -> bool {
        let negotiated = match check_open(open, &self.cfg) {
            Ok(n) => n,
            Err(n) => {
                self.end(id, End::Sent(n), now);
                return false;
            }
        };
        let keepalive = negotiated.keepalive_interval();
        let Some(c) = self.conn_mut(id) else {
            return false;
        };
        c.negotiated = Some(negotiated);
        c.state = ConnState::OpenConfirm;
        c.heard(now);
        // With no hold time, the wait for the KEEPALIVE still ends some time.
        c.hold_deadline = c.hold_deadline.or(Some(now + OPEN_HOLD));
        c.keepalive_at = keepalive.map(|k| now + k);
        self.actions
            .push_back(Action::Send(id, wire::encode_keepalive()));
        self.resolve_collision(id, now)
    }

    /// RFC 4271 §6.8 once `id` has the neighbour's OPEN; whether `id` survives.
    fn resolve_collision(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(other) = self.conns.iter().find(|c| c.id != id) else {
            return true;
        };
        let loser = match other.state {
            ConnState::OpenSent => return true,
            ConnState::Established => id,
            ConnState::OpenConfirm => {
                let keep = self.collision_winner();
                self.conns
                    .iter()
                    .find(|c| c.dir != keep)
                    .map_or(id, |c| c.id)
            }
        };
        tracing::info!(neighbor = %self.cfg.peer_addr, conn = %loser, "connection collision: closing");
        self.end(loser, End::Collision, now);
        loser != id
    }

    /// The direction whose connection survives a collision: the one opened by the side with
    /// the higher BGP identifier, or with equal identifiers the higher AS (RFC 6286 §2.3).
    fn collision_winner(&self) -> Direction {
        let remote = self
            .conns
            .iter()
            .find_map(|c| c.negotiated.as_ref())
            .map_or(0, |n| u32::from(n.peer_router_id));
        let local = u32::from(self.cfg.router_id);
        let we_win = local > remote || (local == remote && self.cfg.local_as > self.cfg.peer_as);
        if we_win {
            Direction::Outgoing
        } else {
            Direction::Incoming
        }
    }

    fn establish(&mut self, id: ConnId, now: Instant) {
        let Some(c) = self.conn_mut(id) else {
            return;
        };
        c.state = ConnState::Established;
        c.heard(now);
        let Some(n) = c.negotiated.clone() else {
            return;
        };
        self.established_at = Some(now);
        self.restart_deadline = None;
        self.keep_stale_after_restart(&n, now);
        for f in &n.families {
            self.actions
                .push_back(Action::Send(id, wire::encode_end_of_rib(*f)));
        }
        tracing::info!(
            neighbor = %self.cfg.peer_addr,
            peer_as = self.cfg.peer_as,
            hold_time = n.hold_time,
            families = ?n.families,
            graceful_restart = n.graceful_restart.is_some(),
            "session established"
        );
    }

    /// RFC 4724 §4.2 when the session is back: which stale routes may wait for End-of-RIB.
    fn keep_stale_after_restart(&mut self, n: &Negotiated, now: Instant) {
        for f in Family::ALL {
            if !n.families.contains(&f) {
                self.rib.clear_family(f);
                continue;
            }
            if !self.rib.has_stale(f) {
                continue;
            }
            let forwarding = n
                .graceful_restart
                .as_ref()
                .and_then(|gr| gr.families.iter().find(|(g, _)| *g == f))
                .is_some_and(|(_, preserved)| *preserved);
            if forwarding {
                self.stale_deadline[f.index()] = Some(now + self.cfg.stale_time);
            } else {
                let gone = self.rib.drop_stale(Some(f));
                tracing::info!(neighbor = %self.cfg.peer_addr, family = %f, gone, "stale routes dropped: not kept through the restart");
            }
        }
    }

    fn on_update(&mut self, id: ConnId, u: &wire::Update, now: Instant) -> bool {
        self.counters.updates += 1;
        let Some(n) = self.conn_mut(id).and_then(|c| c.negotiated.clone()) else {
            return false;
        };
        let ctx = wire::UpdateContext {
            four_octet_as: n.four_octet_as,
            ibgp: self.cfg.peer_as == self.cfg.local_as,
        };
        match wire::parse_update(u, ctx) {
            Err(e) => {
                self.end(id, End::Sent(e), now);
                false
            }
            Ok(UpdateOutcome::EndOfRib(f)) => {
                self.end_of_rib(f);
                true
            }
            Ok(UpdateOutcome::TreatAsWithdraw { withdrawn, error }) => {
                self.counters.treat_as_withdraw += 1;
                tracing::warn!(neighbor = %self.cfg.peer_addr, %error, prefixes = withdrawn.len(), "malformed UPDATE treated as withdraw");
                for p in withdrawn {
                    self.rib.withdraw(&p);
                }
                true
            }
            Ok(UpdateOutcome::Routes {
                withdrawn,
                announced,
                discarded,
            }) => {
                if !discarded.is_empty() {
                    self.counters.attributes_discarded += discarded.len() as u64;
                    tracing::debug!(neighbor = %self.cfg.peer_addr, ?discarded, "malformed attributes discarded");
                }
                for p in withdrawn {
                    self.rib.withdraw(&p);
                }
                self.install(id, &n.families, announced, now)
            }
        }
    }

    /// Installs routes of negotiated families; whether the session survives the prefix limit.
    fn install(
        &mut self,
        id: ConnId,
        families: &[Family],
        routes: Vec<wire::Route>,
        now: Instant,
    ) -> bool {
        for r in routes {
            let family = r.prefix.family();
            if !families.contains(&family) {
                self.counters.routes_ignored += 1;
                continue;
            }
            self.rib.announce(r);
            if self.rib.received() > self.cfg.max_prefixes as usize {
                tracing::warn!(neighbor = %self.cfg.peer_addr, limit = self.cfg.max_prefixes, "maximum number of prefixes exceeded");
                let n = Notification::max_prefixes(family, self.cfg.max_prefixes);
                self.end(id, End::MaxPrefix(n), now);
                return false;
            }
        }
        true
    }

    fn end_of_rib(&mut self, f: Family) {
        self.stale_deadline[f.index()] = None;
        let gone = self.rib.drop_stale(Some(f));
        tracing::info!(neighbor = %self.cfg.peer_addr, family = %f, stale_dropped = gone, "End-of-RIB received");
    }

    /// The Established connection ended: stale routes or none, and the flap.
    fn session_down(&mut self, conn: &Conn, why: &End, now: Instant) {
        self.flaps += 1;
        if self
            .established_at
            .is_some_and(|t| now.saturating_duration_since(t) >= STABLE_AFTER)
        {
            self.backoff.reset();
        }
        self.established_at = None;
        let gr = conn
            .negotiated
            .as_ref()
            .and_then(|n| n.graceful_restart.as_ref());
        match gr {
            Some(gr) if why.keeps_routes() && !self.cfg.graceful_restart_max.is_zero() => {
                // A restart before the last one finished: what it did not refresh goes now.
                self.rib.drop_stale(None);
                let kept: Vec<Family> = gr.families.iter().map(|(f, _)| *f).collect();
                for f in Family::ALL {
                    if !kept.contains(&f) {
                        self.rib.clear_family(f);
                    }
                }
                let stale = self.rib.mark_stale(&kept);
                let wait = Duration::from_secs(u64::from(gr.restart_time))
                    .min(self.cfg.graceful_restart_max);
                self.restart_deadline = Some(now + wait);
                self.stale_deadline = [None; 2];
                tracing::info!(neighbor = %self.cfg.peer_addr, stale, wait_secs = wait.as_secs(), "graceful restart: keeping routes stale");
            }
            _ => self.forget_routes(),
        }
    }

    fn forget_routes(&mut self) {
        self.rib.clear();
        self.restart_deadline = None;
        self.stale_deadline = [None; 2];
    }

    // ---- timers ----

    fn conn_timers(&mut self, now: Instant) {
        let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            let Some(c) = self.conn_mut(id) else {
                continue;
            };
            if c.hold_deadline.is_some_and(|d| d <= now) {
                tracing::warn!(neighbor = %self.cfg.peer_addr, conn = %id, "hold timer expired");
                let n = Notification::new(code::HOLD_TIMER, 0, vec![]);
                self.end(id, End::Sent(n), now);
                continue;
            }
            if c.keepalive_at.is_some_and(|d| d <= now) {
                let interval = c
                    .negotiated
                    .as_ref()
                    .and_then(Negotiated::keepalive_interval);
                let next = interval.map(|i| now + self.backoff.jitter(i));
                if let Some(c) = self.conn_mut(id) {
                    c.keepalive_at = next;
                }
                self.actions
                    .push_back(Action::Send(id, wire::encode_keepalive()));
            }
        }
    }

    fn phase_timers(&mut self, now: Instant) {
        match self.phase {
            Phase::Idle { until } if until <= now => self.try_now(now),
            Phase::Active {
                connect_at: Some(at),
            } if at <= now && self.conns.is_empty() => self.try_now(now),
            Phase::Connect { id, deadline } if deadline <= now => {
                self.actions.push_back(Action::Close(id));
                self.connect_failed(id, "timed out", now);
            }
            _ => {}
        }
    }

    fn restart_timers(&mut self, now: Instant) {
        if self.restart_deadline.is_some_and(|d| d <= now) {
            self.restart_deadline = None;
            let gone = self.rib.drop_stale(None);
            tracing::warn!(neighbor = %self.cfg.peer_addr, gone, "graceful restart timer expired: stale routes dropped");
        }
        for f in Family::ALL {
            if self.stale_deadline[f.index()].is_some_and(|d| d <= now) {
                self.stale_deadline[f.index()] = None;
                let gone = self.rib.drop_stale(Some(f));
                tracing::warn!(neighbor = %self.cfg.peer_addr, family = %f, gone, "no End-of-RIB in time: stale routes dropped");
            }
        }
    }

    // ---- state ----

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
