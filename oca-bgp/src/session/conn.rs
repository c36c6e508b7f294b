//! One TCP connection's part of the session: its state from OPEN to Established, its receive
//! buffer, its hold and keepalive deadlines, and what its OPEN exchange negotiated.
//!
//! A session may have two connections at once (one we dialled, one the neighbour dialled) until
//! RFC 4271 §6.8 collision resolution keeps one; each is a [`Conn`].

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;

use super::SessionConfig;
use crate::wire::{self, code, subcode, Family, GracefulRestart, Notification, Open};

/// RFC 4271 §8.2.2: the hold timer while waiting for the neighbour's OPEN is "a large value";
/// 4 minutes is the RFC's suggestion, and BIRD's and GoBGP's.
pub const OPEN_HOLD: Duration = Duration::from_secs(240);

/// Which side opened the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// We connected to the neighbour.
    Outgoing,
    /// The neighbour connected to us.
    Incoming,
}

/// A connection's identity, unique within its session (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(super) u64);

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Where a connection is in the OPEN exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConnState {
    /// Our OPEN is sent; waiting for theirs.
    OpenSent,
    /// OPENs exchanged, our KEEPALIVE sent; waiting for theirs.
    OpenConfirm,
    /// Up.
    Established,
}

/// What the OPEN exchange settled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Negotiated {
    /// The neighbour's BGP identifier.
    pub peer_router_id: Ipv4Addr,
    /// The hold time in force, seconds (0: no hold timer, no keepalives).
    pub hold_time: u16,
    /// Whether AS numbers are four octets on the wire.
    pub four_octet_as: bool,
    /// The families both sides take.
    pub families: Vec<Family>,
    /// Whether the neighbour takes ROUTE-REFRESH.
    pub route_refresh: bool,
    /// The neighbour's Graceful Restart capability.
    pub graceful_restart: Option<GracefulRestart>,
}

impl Negotiated {
    /// The keepalive interval: a third of the hold time (RFC 4271 §10), at least a second.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        (self.hold_time > 0).then(|| Duration::from_secs(u64::from(self.hold_time / 3).max(1)))
    }
}

/// One connection of a session.
#[derive(Debug)]
pub struct Conn {
    /// Its identity.
    pub id: ConnId,
    /// Who dialled.
    pub dir: Direction,
    /// Where it is in the OPEN exchange.
    pub state: ConnState,
    /// Received bytes not yet a whole message (less than one message long between reads).
    pub buf: BytesMut,
    /// When the neighbour will have been silent too long.
    pub hold_deadline: Option<Instant>,
    /// When our next KEEPALIVE is due.
    pub keepalive_at: Option<Instant>,
    /// What its OPEN exchange settled, from OpenConfirm on.
    pub negotiated: Option<Negotiated>,
}

impl Conn {
    /// A connection whose OPEN we have just sent.
    pub fn opened(id: ConnId, dir: Direction, now: Instant) -> Conn {
        Conn {
            id,
            dir,
            state: ConnState::OpenSent,
            buf: BytesMut::with_capacity(wire::MAX_MESSAGE_LEN),
            hold_deadline: Some(now + OPEN_HOLD),
            keepalive_at: None,
            negotiated: None,
        }
    }

    /// A KEEPALIVE or UPDATE arrived: the neighbour is alive (RFC 4271 §8.2.2).
    pub fn heard(&mut self, now: Instant) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        self.hold_deadline = (hold > 0).then(|| now + Duration::from_secs(u64::from(hold)));
    }
}

/// Checks the neighbour's OPEN against the configuration (RFC 4271 §6.2); an error is the
/// NOTIFICATION to send.
pub fn check_open(open: &Open, cfg: &SessionConfig) -> Result<Negotiated, Notification> {
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
