//! The OPEN exchange: the neighbour's OPEN checked and its capabilities negotiated, then
//! KEEPALIVEs to Established.
//!
//! The neighbour's OPEN is checked per RFC 4271 §6.2, each failure its own NOTIFICATION: the AS
//! (from the 4-octet capability when present) must be the configured one, else 2/2; the
//! identifier non-zero (and not ours on iBGP), else 2/3; the hold time 0 or at least 3, else
//! 2/6; the families are the intersection of ours and theirs (a router without any MP
//! capability gets IPv4 unicast, RFC 4760 §8), and none in common is 2/7 carrying the MP
//! capabilities we wanted (RFC 5492 §3). A version other than 4 is refused by the codec (2/1).
//!
//! An acceptable OPEN settles the connection's [`Negotiated`]: the smaller of the two hold
//! times, keepalives every third of it (jittered), 4-octet AS, families, route refresh and the
//! neighbour's graceful restart capability. We answer with a KEEPALIVE (OpenConfirm); until the
//! neighbour's KEEPALIVE arrives the hold timer still runs, even with no hold time. A collision
//! with the other connection is resolved here (`collision.rs`). On the neighbour's KEEPALIVE the
//! connection is Established: stale routes from a restart are sorted (`graceful_restart.rs`), and
//! we send an End-of-RIB for each family, which a restarting router waits for before sending
//! its routes.

use std::time::Instant;

use super::conn::{ConnId, ConnState, End, Negotiated, OPEN_HOLD};
use super::{Action, Session, SessionConfig};
use crate::wire::{self, code, subcode, Family, Notification, Open};

impl Session {
    pub(super) fn on_open(&mut self, id: ConnId, open: &Open, now: Instant) -> bool {
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

    pub(super) fn establish(&mut self, id: ConnId, now: Instant) {
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
        self.awaiting_eor = [false; 2];
        for f in &n.families {
            self.awaiting_eor[f.index()] = true;
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
}

/// Checks the neighbour's OPEN against the configuration (RFC 4271 §6.2); an error is the
/// NOTIFICATION to send.
fn check_open(open: &Open, cfg: &SessionConfig) -> Result<Negotiated, Notification> {
    if open.asn != cfg.peer_as {
        return Err(Notification::new(code::OPEN, subcode::BAD_PEER_AS, vec![]));
    }
    let ibgp = cfg.peer_as == cfg.local_as;
    if open.router_id.is_unspecified() || (ibgp && open.router_id == cfg.router_id) {
        let id = open.router_id.octets().to_vec();
        return Err(Notification::new(code::OPEN, subcode::BAD_BGP_ID, id));
    }
    if matches!(open.hold_time, 1 | 2) {
        return Err(Notification::new(
            code::OPEN,
            subcode::BAD_HOLD_TIME,
            vec![],
        ));
    }
    // RFC 4760 §8: a speaker that sends no MP capability at all takes IPv4 unicast.
    let theirs: &[Family] = if open.multiprotocol {
        &open.families
    } else {
        &[Family::Ipv4Unicast]
    };
    let families: Vec<Family> = cfg
        .families
        .iter()
        .copied()
        .filter(|f| theirs.contains(f))
        .collect();
    if families.is_empty() {
        return Err(Notification::new(
            code::OPEN,
            subcode::UNSUPPORTED_CAPABILITY,
            mp_capabilities(&cfg.families),
        ));
    }
    Ok(Negotiated {
        peer_router_id: open.router_id,
        hold_time: cfg.hold_time.min(open.hold_time),
        four_octet_as: open.four_octet_as,
        families,
        route_refresh: open.route_refresh,
        graceful_restart: open.graceful_restart.clone(),
    })
}

/// RFC 5492 §3: Unsupported Capability carries the capabilities we wanted.
fn mp_capabilities(families: &[Family]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in families {
        let (afi, safi) = f.afi_safi();
        out.extend_from_slice(&[1, 4]);
        out.extend_from_slice(&afi.to_be_bytes());
        out.extend_from_slice(&[0, safi]);
    }
    out
}
