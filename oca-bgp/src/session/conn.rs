//! One TCP connection's part of the session: its state from OPEN to Established, its receive
//! buffer, its hold and keepalive deadlines, what its OPEN exchange negotiated, and why it
//! ended.
//!
//! A session may have two connections at once (one we dialled, one the neighbour dialled) until
//! RFC 4271 §6.8 collision resolution keeps one; each is a [`Conn`]. This file holds data only:
//! what the session does with a connection is in the files beside it.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde::Serialize;

use crate::wire::{self, code, subcode, Family, GracefulRestart, Notification};

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

/// Why a connection ended.
#[derive(Clone, Debug)]
pub(super) enum End {
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
    /// The neighbour came back from a restart: an acceptable OPEN on a new connection.
    Replaced,
    /// We were told to stop (Cease/2 sent).
    Stopped,
}

impl End {
    pub(super) fn sent(&self) -> Option<Notification> {
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
    pub(super) fn keeps_routes(&self) -> bool {
        matches!(self, End::TcpClosed | End::Replaced)
    }

    pub(super) fn describe(&self, was: ConnState) -> Option<String> {
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
