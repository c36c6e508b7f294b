//! Graceful restart, as the receiving speaker (RFC 4724), and what happens to routes when a
//! session goes down.
//!
//! When the connection of an Established session ends **without a NOTIFICATION either way**
//! ([`End::keeps_routes`]: the TCP connection closed or broke, or an acceptable OPEN came on a
//! new connection while Established) and the neighbour advertised graceful restart, the routes of
//! the families in its capability stay, marked stale (still reported and accepted: that is the
//! point), and the rest go. They wait for the neighbour's restart time, capped by
//! `graceful_restart_max` (zero: never keep them). A hold timer expiry, a max-prefix Cease or any
//! NOTIFICATION is not a restart: the routes are dropped (we do not advertise the N bit of RFC
//! 8538).
//!
//! When the session is back ([`Session::keep_stale_after_restart`], at Established): families
//! the new OPEN does not list lose their routes, families it lists with the F bit clear lose
//! their stale routes at once, and the others wait for the neighbour's End-of-RIB for the family
//! ([`Session::end_of_rib`]) or `stale_time`. A route sent again is fresh (the Rib clears its
//! mark). A second restart before the first finished drops what the first did not refresh, then
//! marks the rest stale, as BIRD does.
//!
//! Every end of an Established connection is also a flap, and one that lasted
//! [`STABLE_AFTER`] resets the retry backoff.

use std::time::{Duration, Instant};

use super::backoff::STABLE_AFTER;
use super::conn::{Conn, End, Negotiated};
use super::Session;
use crate::wire::Family;

impl Session {
    /// The Established connection ended: stale routes or none, and the flap.
    pub(super) fn session_down(&mut self, conn: &Conn, why: &End, now: Instant) {
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

    pub(super) fn forget_routes(&mut self) {
        self.rib.clear();
        self.restart_deadline = None;
        self.stale_deadline = [None; 2];
    }

    /// RFC 4724 §4.2 when the session is back: which stale routes may wait for End-of-RIB.
    pub(super) fn keep_stale_after_restart(&mut self, n: &Negotiated, now: Instant) {
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

    pub(super) fn end_of_rib(&mut self, f: Family) {
        self.awaiting_eor[f.index()] = false;
        self.stale_deadline[f.index()] = None;
        let gone = self.rib.drop_stale(Some(f));
        tracing::info!(neighbor = %self.cfg.peer_addr, family = %f, stale_dropped = gone, "End-of-RIB received");
    }

    pub(super) fn restart_timers(&mut self, now: Instant) {
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
}
