//! Connection collisions (RFC 4271 §6.8): two connections up at once, one each way.
//!
//! Both connections run their OPEN exchange. When the second OPEN arrives (the first connection
//! in OpenConfirm), the one opened by the side with the higher BGP identifier stays; with equal
//! identifiers, the side with the higher AS (RFC 6286 §2.3). An OPEN on a connection while the
//! other is already Established loses, unless the neighbour does graceful restart. The loser
//! gets Cease/7 (Connection Collision Resolution) and closes; since the other connection is
//! still up, nothing else follows.
//!
//! With graceful restart, an acceptable OPEN on a new connection while the other is Established
//! is the neighbour back from a restart whose TCP close we never saw: RFC 4724 §4.2 says to
//! treat it as the end of the old connection, close that one and keep the new. The old one ends
//! without a NOTIFICATION ([`End::Replaced`]), so its routes stay, stale, until the new session's
//! End-of-RIB (`graceful_restart.rs`). It is the OPEN that says so, not the TCP connection: a
//! connection alone proves only that something reached us from the neighbour's address, and
//! taking it as the restart would let one that never completes an OPEN drop every route at the
//! restart deadline. BIRD acts on the connection; we wait for the OPEN and its checks.

use std::time::Instant;

use super::conn::{ConnId, ConnState, Direction, End};
use super::Session;

impl Session {
    /// RFC 4271 §6.8 once `id` has the neighbour's OPEN; whether `id` survives.
    pub(super) fn resolve_collision(&mut self, id: ConnId, now: Instant) -> bool {
        let Some(other) = self.conns.iter().find(|c| c.id != id) else {
            return true;
        };
        let loser = match other.state {
            ConnState::OpenSent => return true,
            ConnState::Established
                if other
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.graceful_restart.is_some()) =>
            {
                let old = other.id;
                tracing::info!(neighbor = %self.cfg.peer_addr, old = %old, new = %id, "neighbour restarted: its new connection replaces the Established one");
                self.end(old, End::Replaced, now);
                return true;
            }
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
}
