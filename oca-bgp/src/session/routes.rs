//! Established: UPDATEs into the session's Adj-RIB-In, the prefix limit, and route refresh.
//!
//! Each UPDATE is read by [`wire::parse_update`] under RFC 7606 and its outcome applied to the
//! [`Rib`](crate::rib::Rib): an End-of-RIB ends the wait of that family's stale routes
//! (`graceful_restart.rs`); a treat-as-withdraw withdraws every prefix the UPDATE names and keeps
//! the session; otherwise the withdrawn prefixes go and the announced routes are installed,
//! where the Rib's import filter gives each its verdict (attribute lists past their bounds cut
//! and counted, the routes kept: `wire/update.rs`). An UPDATE that RFC 7606 says must reset
//! the session ends the connection with its NOTIFICATION. Routes of families the session did
//! not negotiate are counted and ignored.
//!
//! Every received route counts towards `max_prefixes`, accepted or not (like BIRD's `receive
//! limit`: the limit bounds the memory a router can make us hold). One route past it ends the
//! connection with Cease/1 carrying AFI, SAFI and the limit (RFC 4486 §4); the session then
//! stays `Idle` for `max_prefix_restart`.
//!
//! A ROUTE-REFRESH from the neighbour is ignored: we keep no Adj-RIB-Out, so there is nothing to
//! send again. [`Session::route_refresh`] asks the neighbour for each negotiated family again,
//! when it advertised the capability (RFC 2918).

use std::time::Instant;

use super::conn::{ConnId, ConnState, End};
use super::{Action, RefreshError, Session};
use crate::wire::{self, Family, Notification, UpdateOutcome};

impl Session {
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

    pub(super) fn on_update(&mut self, id: ConnId, u: &wire::Update, now: Instant) -> bool {
        self.counters.updates += 1;
        let Some(n) = self.conn_mut(id).and_then(|c| c.negotiated.clone()) else {
            return false;
        };
        let ctx = wire::UpdateContext {
            four_octet_as: n.four_octet_as,
            ibgp: self.cfg.peer_as == self.cfg.local_as,
            local_as: self.cfg.local_as,
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
                truncated,
            }) => {
                if truncated {
                    self.counters.attributes_truncated += 1;
                    tracing::debug!(neighbor = %self.cfg.peer_addr, routes = announced.len(), "attribute lists cut to their bounds");
                }
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
}
