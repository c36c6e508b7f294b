//! A session's life between connections: started and stopped, connections opened (ours dialled,
//! theirs accepted) and ended, and the wait before the next try.
//!
//! Every connection sends our OPEN as soon as it exists ([`Session::open_conn`]; no DelayOpen).
//! While Established a new connection from the neighbour is refused, unless it does graceful
//! restart: then it may be the neighbour back from a restart whose TCP close we never saw. It is
//! taken as a candidate (one at a time, the newest) and the Established connection carries on
//! untouched; only when the candidate's OPEN passes the checks does it replace the old one, which
//! ends without a NOTIFICATION so its routes go stale (RFC 4724 §4.2, `collision.rs`). A
//! candidate that sends a bad OPEN gets its NOTIFICATION, and one that sends nothing is closed at
//! its OPEN deadline (4 minutes): either way the session and its routes never noticed.
//!
//! [`Session::end`] is the one way a connection ends: the NOTIFICATION it calls for (if any) is
//! sent, the connection closed, and when it was Established the session goes down
//! (`graceful_restart.rs`). When it was the session's last connection, what follows depends on
//! why it ended:
//!
//! - an error we found (a NOTIFICATION we sent, hold timer expiry included): `Idle` for the
//!   backoff, refusing connections and abandoning a dial under way ([`Session::hold_off`]);
//! - more routes than `max_prefixes` (Cease/1): `Idle` for `max_prefix_restart`;
//! - anything else (the neighbour closed or sent a NOTIFICATION): `Active`, still accepting,
//!   with the next dial after the backoff ([`Session::retry_later`]); a dial already under way
//!   is that next try. After a stop, nothing follows.
//!
//! The backoff (`backoff.rs`) starts at `connect_retry`, doubles to `connect_retry_max`, and is
//! jittered to 75–100 %.

use std::time::Instant;

use super::conn::{Conn, ConnId, ConnState, Direction, End};
use super::{Action, Phase, Session, CONNECT_TIMEOUT};
use crate::wire;

impl Session {
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
    /// (stopped, holding off, or a session already has it; while Established, a candidate
    /// restart when the neighbour does graceful restart).
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
            // Perhaps the router restarted, perhaps not: the new connection only proves that
            // someone reached port 179 from its address. It waits as a candidate; the
            // Established one carries on until the candidate's OPEN passes the checks
            // (`collision.rs`), and a candidate that never sends one dies at its OPEN deadline.
            // One candidate at a time, the newest: a router that connects again has given up
            // on its older attempt, so that one is the likelier to be dead.
            let older: Vec<ConnId> = self
                .conns
                .iter()
                .filter(|c| c.state != ConnState::Established)
                .map(|c| c.id)
                .collect();
            for id in older {
                self.end(id, End::Collision, now);
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
    pub(super) fn end(&mut self, id: ConnId, why: End, now: Instant) {
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
    pub(super) fn try_now(&mut self, now: Instant) {
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
}
