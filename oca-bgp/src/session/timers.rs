//! Time: every deadline the session keeps, and what happens when one passes.
//!
//! The machine reads no clock and sets no timers of its own: [`Session::next_deadline`] is the
//! earliest of its deadlines, and the driver calls [`Session::on_timer`] then (or earlier: a
//! deadline not yet due does nothing). The deadlines:
//!
//! | deadline | when it passes |
//! |---|---|
//! | a connection's hold timer (the negotiated hold time since the neighbour was last heard; 4 minutes while waiting for its OPEN, and in OpenConfirm with no hold time) | NOTIFICATION 4/0, the connection ends (an error we found: `Idle` for the backoff) |
//! | a connection's next KEEPALIVE (a third of the hold time; jittered after the first) | KEEPALIVE sent |
//! | the end of `Idle` | dial, or `Active` when passive |
//! | the next dial while `Active` with no connection | dial |
//! | the dial's deadline ([`CONNECT_TIMEOUT`](super::CONNECT_TIMEOUT)) | the dial abandoned, as failed |
//! | the restart time while routes are stale, and each family's `stale_time` after the session is back | stale routes dropped (`graceful_restart.rs`) |
//!
//! Nothing is ever cancelled: a deadline that no longer applies is simply gone from the state.

use std::time::Instant;

use super::conn::{ConnId, End, Negotiated};
use super::{Action, Phase, Session};
use crate::wire::{self, code, Notification};

impl Session {
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

    /// Time passed: runs every timer due by `now`.
    pub fn on_timer(&mut self, now: Instant) {
        self.conn_timers(now);
        self.phase_timers(now);
        self.restart_timers(now);
        self.update_state(now);
    }

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
}
