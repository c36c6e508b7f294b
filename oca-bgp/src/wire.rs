//! The BGP message format: the one file that speaks `rustbgpd-wire`.
//!
//! Everything above this module works with the small types defined here ([`Message`], [`Open`],
//! [`Notification`], [`Route`], [`UpdateOutcome`]) and never sees the codec's own, so an upgrade
//! of the codec (pinned exactly; it breaks its API every few weeks) touches this file alone.
//!
//! # Reading
//!
//! [`next_message`] takes whole messages off the front of a connection's buffer. It checks the
//! header first (RFC 4271 §6.1: marker, length 19..=4096, type, and the length each type must
//! have) and only decodes once the whole message is buffered, so a short read is never mistaken
//! for a bad length. A bad header is an error whose [`Notification`] is the one to send before
//! closing: after it the byte stream can no longer be trusted to be in step.
//!
//! An UPDATE is decoded in two steps. [`next_message`] frames it; [`parse_update`] then applies
//! RFC 7606 revised error handling (the codec's `parse_revised`, which says for each bad
//! attribute whether to reset the session, withdraw the UPDATE's routes or drop the attribute,
//! then the codec's semantic checks: mandatory attributes, next hops, AS path) and turns what
//! is left into [`Route`]s. Its answer is an [`UpdateOutcome`], or the NOTIFICATION that resets
//! the session when RFC 7606 says nothing less will do (the NLRI can no longer be located).
//!
//! An unrecognised well-known attribute (Optional bit clear, type unknown) is treat-as-withdraw
//! here, not the session reset of RFC 4271 §6.3: RFC 7606 keeps resets for errors that make the
//! NLRI unlocatable, and this one leaves the NLRI intact, so one bad UPDATE withdraws its own
//! routes instead of all of the session's (docs/bgp.md).
//!
//! # Writing
//!
//! We only ever send OPEN, KEEPALIVE, NOTIFICATION, ROUTE-REFRESH and End-of-RIB markers: the
//! speaker announces nothing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use bytes::{Bytes, BytesMut};
use rustbgpd_wire as w;
use rustbgpd_wire::attribute::{AsPathSegment, PathAttribute};
use rustbgpd_wire::validate::{ErrorDisposition, UpdateValidationOptions};
use serde::{Deserialize, Serialize};

/// Largest message RFC 4271 allows; we never negotiate extended messages (RFC 8654).
pub const MAX_MESSAGE_LEN: usize = 4096;
const HEADER_LEN: usize = 19;

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313).
pub mod code {
    /// Message Header Error.
    pub const HEADER: u8 = 1;
    /// OPEN Message Error.
    pub const OPEN: u8 = 2;
    /// UPDATE Message Error.
    pub const UPDATE: u8 = 3;
    /// Hold Timer Expired.
    pub const HOLD_TIMER: u8 = 4;
    /// Finite State Machine Error.
    pub const FSM: u8 = 5;
    /// Cease.
    pub const CEASE: u8 = 6;
    /// ROUTE-REFRESH Message Error (RFC 7313).
    pub const ROUTE_REFRESH: u8 = 7;
}

/// Subcodes we send (RFC 4271 §6, RFC 4486, RFC 6608, RFC 5492).
pub mod subcode {
    /// Header: Bad Message Length.
    pub const BAD_LENGTH: u8 = 2;
    /// OPEN: Bad Peer AS.
    pub const BAD_PEER_AS: u8 = 2;
    /// OPEN: Bad BGP Identifier.
    pub const BAD_BGP_ID: u8 = 3;
    /// OPEN: Unacceptable Hold Time.
    pub const BAD_HOLD_TIME: u8 = 6;
    /// OPEN: Unsupported Capability.
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
    /// FSM: unexpected message in OpenSent.
    pub const FSM_OPEN_SENT: u8 = 1;
    /// FSM: unexpected message in OpenConfirm.
    pub const FSM_OPEN_CONFIRM: u8 = 2;
    /// FSM: unexpected message in Established.
    pub const FSM_ESTABLISHED: u8 = 3;
    /// Cease: Maximum Number of Prefixes Reached.
    pub const MAX_PREFIXES: u8 = 1;
    /// Cease: Administrative Shutdown.
    pub const ADMIN_SHUTDOWN: u8 = 2;
    /// Cease: Connection Collision Resolution.
    pub const COLLISION: u8 = 7;
    /// ROUTE-REFRESH: Invalid Message Length.
    pub const RR_BAD_LENGTH: u8 = 1;
}

/// An address family this speaker takes routes for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Family {
    /// AFI 1, SAFI 1.
    #[serde(rename = "ipv4-unicast")]
    Ipv4Unicast,
    /// AFI 2, SAFI 1.
    #[serde(rename = "ipv6-unicast")]
    Ipv6Unicast,
}

impl Family {
    /// Both families, in index order.
    pub const ALL: [Family; 2] = [Family::Ipv4Unicast, Family::Ipv6Unicast];

    /// A dense index (0 or 1), for per-family arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The AFI and SAFI numbers.
    pub fn afi_safi(self) -> (u16, u8) {
        match self {
            Family::Ipv4Unicast => (1, 1),
            Family::Ipv6Unicast => (2, 1),
        }
    }

    fn from_codec(afi: w::Afi, safi: w::Safi) -> Option<Family> {
        match (afi, safi) {
            (w::Afi::Ipv4, w::Safi::Unicast) => Some(Family::Ipv4Unicast),
            (w::Afi::Ipv6, w::Safi::Unicast) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    fn to_codec(self) -> (w::Afi, w::Safi) {
        match self {
            Family::Ipv4Unicast => (w::Afi::Ipv4, w::Safi::Unicast),
            Family::Ipv6Unicast => (w::Afi::Ipv6, w::Safi::Unicast),
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::Ipv4Unicast => "ipv4-unicast",
            Family::Ipv6Unicast => "ipv6-unicast",
        })
    }
}

/// An IP prefix with its host bits cleared; written `198.51.100.0/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// The prefix of `len` bits at `addr` (host bits cleared); `None` past the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let addr = match addr {
            IpAddr::V4(a) if len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) if len <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
            _ => return None,
        };
        Some(Prefix { addr, len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn len(&self) -> u8 {
        self.len
    }

    /// Whether this is a default route (length 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The unicast family the prefix belongs to.
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::Ipv4Unicast,
            IpAddr::V6(_) => Family::Ipv6Unicast,
        }
    }

    /// Whether `other` lies inside this prefix (or is it).
    pub fn contains(&self, other: &Prefix) -> bool {
        self.family() == other.family()
            && other.len >= self.len
            && Prefix::new(other.addr, self.len).is_some_and(|p| p.addr == self.addr)
    }

    fn from_codec(p: w::nlri::Prefix) -> Option<Prefix> {
        match p {
            w::nlri::Prefix::V4(v4) => Prefix::new(IpAddr::V4(v4.addr), v4.len),
            w::nlri::Prefix::V6(v6) => Prefix::new(IpAddr::V6(v6.addr), v6.len),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Prefix, String> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a prefix (address/length)"))?;
        let addr: IpAddr = a.parse().map_err(|_| format!("{a:?} is not an address"))?;
        let len: u8 = l.parse().map_err(|_| format!("{l:?} is not a length"))?;
        let p = Prefix::new(addr, len).ok_or_else(|| format!("length {len} is too long"))?;
        if p.addr != addr {
            return Err(format!("{s} has host bits set (network is {p})"));
        }
        Ok(p)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the route's originator learned it (RFC 4271 §5.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// From an interior protocol.
    Igp,
    /// From EGP.
    Egp,
    /// Some other way (redistribution, static).
    Incomplete,
}

/// One route as the neighbour sent it: a prefix and the attributes steering cares about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    pub prefix: Prefix,
    /// The neighbour's next hop for it (we do not forward; it is reported).
    pub next_hop: IpAddr,
    /// The AS path, nearest AS first, AS4_PATH already merged in by the codec.
    pub as_path: Vec<u32>,
    /// ORIGIN.
    pub origin: Origin,
    /// MULTI_EXIT_DISC, when sent.
    pub med: Option<u32>,
    /// LOCAL_PREF, only from an internal neighbour (RFC 4271 §5.1.5: ignored from external).
    pub local_pref: Option<u32>,
    /// Standard communities (RFC 1997) as (AS, value).
    pub communities: Vec<(u16, u16)>,
    /// Large communities (RFC 8092) as (global, local 1, local 2).
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// A NOTIFICATION: code, subcode and data (RFC 4271 §4.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Error code ([`code`]).
    pub code: u8,
    /// Error subcode ([`subcode`]).
    pub subcode: u8,
    /// Diagnostic data.
    pub data: Vec<u8>,
}

impl Notification {
    /// A NOTIFICATION with data.
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease/1 for the family whose prefix went over `limit` (RFC 4486 §4: AFI, SAFI, limit).
    pub fn max_prefixes(family: Family, limit: u32) -> Notification {
        let (afi, safi) = family.afi_safi();
        let mut data = afi.to_be_bytes().to_vec();
        data.push(safi);
        data.extend_from_slice(&limit.to_be_bytes());
        Notification::new(code::CEASE, subcode::MAX_PREFIXES, data)
    }

    /// The message on the wire; data too long for one message is cut to fit.
    pub fn encode(&self) -> Vec<u8> {
        let mut data = self.data.clone();
        data.truncate(MAX_MESSAGE_LEN - HEADER_LEN - 2);
        let n = w::NotificationMessage::new(
            w::NotificationCode::from_u8(self.code),
            self.subcode,
            Bytes::from(data),
        );
        encode(&w::Message::Notification(n))
    }

    /// The shutdown communication of Cease/2 and Cease/4 (RFC 9003), when there is one.
    pub fn shutdown_message(&self) -> Option<String> {
        if self.code != code::CEASE || !matches!(self.subcode, 2 | 4) {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..usize::from(len))?;
        Some(String::from_utf8_lossy(text).into_owned())
    }

    fn describe(&self) -> &'static str {
        match (self.code, self.subcode) {
            (1, 1) => "Message Header Error: Connection Not Synchronized",
            (1, 2) => "Message Header Error: Bad Message Length",
            (1, 3) => "Message Header Error: Bad Message Type",
            (1, _) => "Message Header Error",
            (2, 1) => "OPEN Message Error: Unsupported Version Number",
            (2, 2) => "OPEN Message Error: Bad Peer AS",
            (2, 3) => "OPEN Message Error: Bad BGP Identifier",
            (2, 4) => "OPEN Message Error: Unsupported Optional Parameter",
            (2, 6) => "OPEN Message Error: Unacceptable Hold Time",
            (2, 7) => "OPEN Message Error: Unsupported Capability",
            (2, _) => "OPEN Message Error",
            (3, 1) => "UPDATE Message Error: Malformed Attribute List",
            (3, 2) => "UPDATE Message Error: Unrecognized Well-known Attribute",
            (3, 3) => "UPDATE Message Error: Missing Well-known Attribute",
            (3, 4) => "UPDATE Message Error: Attribute Flags Error",
            (3, 5) => "UPDATE Message Error: Attribute Length Error",
            (3, 6) => "UPDATE Message Error: Invalid ORIGIN Attribute",
            (3, 8) => "UPDATE Message Error: Invalid NEXT_HOP Attribute",
            (3, 9) => "UPDATE Message Error: Optional Attribute Error",
            (3, 10) => "UPDATE Message Error: Invalid Network Field",
            (3, 11) => "UPDATE Message Error: Malformed AS_PATH",
            (3, _) => "UPDATE Message Error",
            (4, _) => "Hold Timer Expired",
            (5, _) => "Finite State Machine Error",
            (6, 1) => "Cease: Maximum Number of Prefixes Reached",
            (6, 2) => "Cease: Administrative Shutdown",
            (6, 3) => "Cease: Peer De-configured",
            (6, 4) => "Cease: Administrative Reset",
            (6, 5) => "Cease: Connection Rejected",
            (6, 6) => "Cease: Other Configuration Change",
            (6, 7) => "Cease: Connection Collision Resolution",
            (6, 8) => "Cease: Out of Resources",
            (6, 9) => "Cease: Hard Reset",
            (6, _) => "Cease",
            (7, _) => "ROUTE-REFRESH Message Error",
            (8, _) => "Send Hold Timer Expired",
            _ => "unknown error code",
        }
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} ({})", self.code, self.subcode, self.describe())?;
        if let Some(m) = self.shutdown_message() {
            write!(f, " {m:?}")?;
        }
        Ok(())
    }
}

/// The neighbour's Graceful Restart capability (RFC 4724 §3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GracefulRestart {
    /// Seconds it asks us to keep its routes after the session goes down.
    pub restart_time: u16,
    /// R bit: it has just restarted.
    pub restarting: bool,
    /// The families it keeps forwarding through a restart, with the F bit of this restart.
    pub families: Vec<(Family, bool)>,
}

/// A received OPEN, reduced to what the session needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Open {
    /// The neighbour's AS (from the 4-octet AS capability when present).
    pub asn: u32,
    /// Its proposed hold time, seconds.
    pub hold_time: u16,
    /// Its BGP identifier.
    pub router_id: Ipv4Addr,
    /// Whether it speaks 4-octet AS numbers (RFC 6793).
    pub four_octet_as: bool,
    /// The unicast families of its MP capabilities.
    pub families: Vec<Family>,
    /// Whether it sent any MP capability at all (none means IPv4 unicast alone, RFC 4760 §8).
    pub multiprotocol: bool,
    /// Whether it takes ROUTE-REFRESH (RFC 2918).
    pub route_refresh: bool,
    /// Its Graceful Restart capability.
    pub graceful_restart: Option<GracefulRestart>,
}

/// What we put in our OPEN.
#[derive(Clone, Debug)]
pub struct OpenParams {
    /// Our AS.
    pub local_as: u32,
    /// Our hold time, seconds.
    pub hold_time: u16,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// The families we take.
    pub families: Vec<Family>,
    /// The restart time our Graceful Restart capability states, seconds (12 bits).
    pub restart_time: u16,
}

/// A framed UPDATE, kept in the codec's form until [`parse_update`] reads it.
#[derive(Clone, Debug)]
pub struct Update(w::UpdateMessage);

/// A whole message as received.
#[derive(Clone, Debug)]
pub enum Message {
    /// OPEN.
    Open(Open),
    /// UPDATE, still to be parsed (see [`parse_update`]).
    Update(Update),
    /// NOTIFICATION.
    Notification(Notification),
    /// KEEPALIVE.
    Keepalive,
    /// ROUTE-REFRESH for this AFI and SAFI.
    RouteRefresh {
        /// AFI.
        afi: u16,
        /// SAFI.
        safi: u8,
    },
}

impl Message {
    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh { .. } => "ROUTE-REFRESH",
        }
    }
}

/// Takes the next whole message off the front of `buf`: `Ok(None)` until one is buffered; an
/// error is the NOTIFICATION to send before closing.
pub fn next_message(buf: &mut BytesMut) -> Result<Option<Message>, Notification> {
    let len = match w::peek_message_length(buf, MAX_MESSAGE_LEN as u16) {
        Ok(None) => return Ok(None),
        Ok(Some(len)) => usize::from(len),
        Err(e) => return Err(from_decode_error(&e)),
    };
    check_type_length(buf[18], len, buf)?;
    if buf.len() < len {
        return Ok(None);
    }
    let mut one = buf.split_to(len).freeze();
    let raw = one.clone();
    match w::decode_message(&mut one, MAX_MESSAGE_LEN as u16) {
        Ok(m) => Ok(Some(from_codec_message(m))),
        Err(w::DecodeError::InvalidKeepaliveLength { length }) => Err(bad_length(length)),
        Err(e) => {
            tracing::debug!(error = %e, len = raw.len(), "undecodable message");
            Err(from_decode_error(&e))
        }
    }
}

/// RFC 4271 §6.1: a length wrong for the message's type is a header error, judged from the
/// header alone (before the body is even buffered).
fn check_type_length(kind: u8, len: usize, buf: &[u8]) -> Result<(), Notification> {
    let ok = match kind {
        1 => len >= 29,
        2 => len >= 23,
        3 => len >= 21,
        4 => len == 19,
        5 => len >= 23,
        _ => true,
    };
    if !ok {
        return Err(bad_length(len as u16));
    }
    // RFC 7313 §5: a ROUTE-REFRESH longer than 23 bytes (ORF, which we never negotiate) is its
    // own error, with the whole message as data.
    if kind == 5 && len > 23 {
        let whole = buf.get(..len).unwrap_or(buf).to_vec();
        return Err(Notification::new(
            code::ROUTE_REFRESH,
            subcode::RR_BAD_LENGTH,
            whole,
        ));
    }
    Ok(())
}

fn bad_length(length: u16) -> Notification {
    Notification::new(
        code::HEADER,
        subcode::BAD_LENGTH,
        length.to_be_bytes().to_vec(),
    )
}

fn from_decode_error(e: &w::DecodeError) -> Notification {
    let (c, s, d) = e.to_notification();
    Notification::new(c.as_u8(), s, d.to_vec())
}

fn from_codec_message(m: w::Message) -> Message {
    match m {
        w::Message::Open(o) => Message::Open(from_codec_open(&o)),
        w::Message::Update(u) => Message::Update(Update(u)),
        w::Message::Notification(n) => Message::Notification(Notification::new(
            n.code.as_u8(),
            n.subcode,
            n.data.to_vec(),
        )),
        w::Message::RouteRefresh(rr) => Message::RouteRefresh {
            afi: rr.afi_raw,
            safi: rr.safi_raw,
        },
        // Keepalive, and whatever a later codec adds (never produced for the types we frame).
        _ => Message::Keepalive,
    }
}

fn from_codec_open(o: &w::OpenMessage) -> Open {
    let mut open = Open {
        asn: o.four_byte_as(),
        hold_time: o.hold_time,
        router_id: o.bgp_identifier,
        four_octet_as: false,
        families: Vec::new(),
        multiprotocol: false,
        route_refresh: false,
        graceful_restart: None,
    };
    for cap in &o.capabilities {
        match cap {
            w::Capability::FourOctetAs { .. } => open.four_octet_as = true,
            w::Capability::MultiProtocol { afi, safi } => {
                open.multiprotocol = true;
                if let Some(f) = Family::from_codec(*afi, *safi) {
                    if !open.families.contains(&f) {
                        open.families.push(f);
                    }
                }
            }
            w::Capability::RouteRefresh => open.route_refresh = true,
            w::Capability::GracefulRestart {
                restart_state,
                restart_time,
                families,
                ..
            } => {
                open.graceful_restart = Some(GracefulRestart {
                    restart_time: *restart_time,
                    restarting: *restart_state,
                    families: families
                        .iter()
                        .filter_map(|f| {
                            Family::from_codec(f.afi, f.safi).map(|x| (x, f.forwarding_preserved))
                        })
                        .collect(),
                });
            }
            // RFC 5492: capabilities we do not know are ignored.
            _ => {}
        }
    }
    open
}

/// Our OPEN: MP for each family, route refresh, 4-octet AS, and Graceful Restart with no
/// family tuples (RFC 4724 §3: we keep no forwarding state, but do the receiving speaker's part).
pub fn encode_open(p: &OpenParams) -> Vec<u8> {
    let mut caps: Vec<w::Capability> = p
        .families
        .iter()
        .map(|f| {
            let (afi, safi) = f.to_codec();
            w::Capability::MultiProtocol { afi, safi }
        })
        .collect();
    caps.push(w::Capability::RouteRefresh);
    caps.push(w::Capability::FourOctetAs { asn: p.local_as });
    caps.push(w::Capability::GracefulRestart {
        restart_state: false,
        notification: false,
        restart_time: p.restart_time.min(0x0fff),
        families: Vec::new(),
    });
    let open = w::OpenMessage {
        version: 4,
        // RFC 6793 §4.1: AS_TRANS when our AS does not fit two octets.
        my_as: u16::try_from(p.local_as).unwrap_or(23456),
        hold_time: p.hold_time,
        bgp_identifier: p.router_id,
        capabilities: caps,
    };
    encode(&w::Message::Open(open))
}

/// A KEEPALIVE.
pub fn encode_keepalive() -> Vec<u8> {
    encode(&w::Message::Keepalive)
}

/// A ROUTE-REFRESH asking the neighbour to send `family` again (RFC 2918).
pub fn encode_route_refresh(family: Family) -> Vec<u8> {
    let (afi, safi) = family.to_codec();
    encode(&w::Message::RouteRefresh(w::RouteRefreshMessage::new(
        afi, safi,
    )))
}

/// Our End-of-RIB for `family` (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an UPDATE
/// holding only an empty MP_UNREACH_NLRI for any other family.
pub fn encode_end_of_rib(family: Family) -> Vec<u8> {
    let path_attributes = match family {
        Family::Ipv4Unicast => Bytes::new(),
        // Written out: the codec's MP_UNREACH_NLRI builder wants every family's NLRI lists.
        Family::Ipv6Unicast => Bytes::from_static(&[0x80, 15, 3, 0, 2, 1]),
    };
    encode(&w::Message::Update(w::UpdateMessage {
        withdrawn_routes: Bytes::new(),
        path_attributes,
        nlri: Bytes::new(),
    }))
}

fn encode(m: &w::Message) -> Vec<u8> {
    // Our messages are a few dozen bytes and NOTIFICATION data is cut to fit: never too long.
    w::encode_message(m).map_or_else(|_| Vec::new(), |b| b.to_vec())
}

/// How an UPDATE is read on this session.
#[derive(Clone, Copy, Debug)]
pub struct UpdateContext {
    /// Whether both sides announced 4-octet AS (AS_PATH entries are then 4 bytes).
    pub four_octet_as: bool,
    /// Whether the neighbour is in our AS (RFC 7606 treats some attributes differently then).
    pub ibgp: bool,
}

/// What one UPDATE asks of the Adj-RIB-In.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateOutcome {
    /// The End-of-RIB marker for a family (RFC 4724 §2).
    EndOfRib(Family),
    /// Routes to withdraw, then routes to install.
    Routes {
        /// Withdrawn prefixes (body and MP_UNREACH_NLRI).
        withdrawn: Vec<Prefix>,
        /// Announced routes (body NLRI and MP_REACH_NLRI).
        announced: Vec<Route>,
        /// Type codes of attributes dropped under RFC 7606 attribute-discard.
        discarded: Vec<u8>,
    },
    /// RFC 7606 treat-as-withdraw: every prefix the UPDATE names is withdrawn, the session stays.
    TreatAsWithdraw {
        /// Every prefix in the UPDATE, announced or withdrawn.
        withdrawn: Vec<Prefix>,
        /// The error a session reset would have sent, for the log.
        error: Notification,
    },
}

/// Reads a framed UPDATE under RFC 7606; an error is the NOTIFICATION that resets the session.
pub fn parse_update(u: &Update, ctx: UpdateContext) -> Result<UpdateOutcome, Notification> {
    let raw = &u.0;
    if raw.withdrawn_routes.is_empty() && raw.path_attributes.is_empty() && raw.nlri.is_empty() {
        return Ok(UpdateOutcome::EndOfRib(Family::Ipv4Unicast));
    }
    let parsed = raw
        .parse_revised(ctx.four_octet_as, ctx.ibgp, false, &[])
        .map_err(|e| from_decode_error(&e))?;
    let update = &parsed.update;
    if parsed.malformed.is_empty() {
        if let Some(f) = end_of_rib(update) {
            return Ok(UpdateOutcome::EndOfRib(f));
        }
    }
    let nlri = Nlri::collect(update);
    let mut worst = Worst::default();
    let mut discarded = Vec::new();
    for m in &parsed.malformed {
        if m.disposition == ErrorDisposition::AttributeDiscard {
            discarded.push(m.type_code);
        }
        worst.note(m.disposition, from_decode_error(&m.error));
    }
    let has_body = !update.announced.is_empty();
    if let Err(v) = w::validate::validate_update_attributes_with_context(
        &update.attributes,
        has_body || nlri.mp_reach,
        has_body,
        !ctx.ibgp,
        UpdateValidationOptions::default(),
    ) {
        let n = Notification::new(code::UPDATE, v.error.subcode, v.error.data);
        worst.note(v.error.disposition, n);
    }
    // The codec only insists on NEXT_HOP for external neighbours; a route without one is
    // unusable from any neighbour (RFC 4271 §5.1.3 makes it mandatory for body NLRI).
    if has_body && nlri.body_next_hop.is_none() {
        worst.note(
            ErrorDisposition::TreatAsWithdraw,
            Notification::new(code::UPDATE, 3, vec![3]),
        );
    }
    match worst.0 {
        Some((ErrorDisposition::SessionReset, n)) => Err(n),
        Some((ErrorDisposition::TreatAsWithdraw, error)) => {
            let mut withdrawn = nlri.withdrawn;
            withdrawn.extend(nlri.announced.iter().map(|(p, _)| *p));
            Ok(UpdateOutcome::TreatAsWithdraw { withdrawn, error })
        }
        _ => Ok(UpdateOutcome::Routes {
            announced: build_routes(&update.attributes, &nlri, ctx),
            withdrawn: nlri.withdrawn,
            discarded,
        }),
    }
}

/// The strongest RFC 7606 disposition met so far (§3 h), with the error that caused it.
#[derive(Default)]
struct Worst(Option<(ErrorDisposition, Notification)>);

impl Worst {
    fn note(&mut self, d: ErrorDisposition, n: Notification) {
        if self.0.as_ref().is_none_or(|(had, _)| d > *had) {
            self.0 = Some((d, n));
        }
    }
}

/// The unicast prefixes an UPDATE names, each announced one with its next hop.
struct Nlri {
    withdrawn: Vec<Prefix>,
    announced: Vec<(Prefix, Option<IpAddr>)>,
    body_next_hop: Option<IpAddr>,
    mp_reach: bool,
}

impl Nlri {
    fn collect(update: &w::update::ParsedUpdate) -> Nlri {
        let body_next_hop = update.attributes.iter().find_map(|a| match a {
            PathAttribute::NextHop(nh) => Some(IpAddr::V4(*nh)),
            _ => None,
        });
        let mut n = Nlri {
            withdrawn: update
                .withdrawn
                .iter()
                .filter_map(|e| Prefix::new(IpAddr::V4(e.prefix.addr), e.prefix.len))
                .collect(),
            announced: update
                .announced
                .iter()
                .filter_map(|e| Prefix::new(IpAddr::V4(e.prefix.addr), e.prefix.len))
                .map(|p| (p, body_next_hop))
                .collect(),
            body_next_hop,
            mp_reach: false,
        };
        for a in &update.attributes {
            match a {
                PathAttribute::MpReachNlri(mp) => {
                    n.mp_reach = true;
                    if Family::from_codec(mp.afi, mp.safi).is_some() {
                        n.announced.extend(
                            mp.announced
                                .iter()
                                .filter_map(|e| Prefix::from_codec(e.prefix))
                                .map(|p| (p, Some(mp.next_hop))),
                        );
                    }
                }
                PathAttribute::MpUnreachNlri(mp)
                    if Family::from_codec(mp.afi, mp.safi).is_some() =>
                {
                    n.withdrawn.extend(
                        mp.withdrawn
                            .iter()
                            .filter_map(|e| Prefix::from_codec(e.prefix)),
                    );
                }
                _ => {}
            }
        }
        n
    }
}

/// RFC 4724 §2: the End-of-RIB of a family other than IPv4 unicast is an UPDATE whose only
/// attribute is an empty MP_UNREACH_NLRI.
fn end_of_rib(update: &w::update::ParsedUpdate) -> Option<Family> {
    if !update.withdrawn.is_empty() || !update.announced.is_empty() {
        return None;
    }
    match update.attributes.as_slice() {
        [PathAttribute::MpUnreachNlri(mp)] if mp.withdrawn.is_empty() => {
            Family::from_codec(mp.afi, mp.safi)
        }
        _ => None,
    }
}

fn build_routes(attrs: &[PathAttribute], nlri: &Nlri, ctx: UpdateContext) -> Vec<Route> {
    let template = route_attributes(attrs, ctx);
    nlri.announced
        .iter()
        .filter_map(|(prefix, nh)| {
            Some(Route {
                prefix: *prefix,
                next_hop: (*nh)?,
                ..template.clone()
            })
        })
        .collect()
}

/// The attributes shared by every route of one UPDATE, with a placeholder prefix.
fn route_attributes(attrs: &[PathAttribute], ctx: UpdateContext) -> Route {
    let mut r = Route {
        prefix: Prefix {
            addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            len: 0,
        },
        next_hop: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        as_path: Vec::new(),
        origin: Origin::Incomplete,
        med: None,
        local_pref: None,
        communities: Vec::new(),
        large_communities: Vec::new(),
    };
    for a in attrs {
        match a {
            PathAttribute::Origin(o) => {
                r.origin = match o {
                    w::attribute::Origin::Igp => Origin::Igp,
                    w::attribute::Origin::Egp => Origin::Egp,
                    w::attribute::Origin::Incomplete => Origin::Incomplete,
                }
            }
            PathAttribute::AsPath(p) => {
                r.as_path = p
                    .segments
                    .iter()
                    .flat_map(|s| match s {
                        AsPathSegment::AsSequence(v) | AsPathSegment::AsSet(v) => v.iter(),
                    })
                    .copied()
                    .collect();
            }
            PathAttribute::Med(m) => r.med = Some(*m),
            PathAttribute::LocalPref(l) if ctx.ibgp => r.local_pref = Some(*l),
            PathAttribute::Communities(c) | PathAttribute::CommunitiesPartial(c) => {
                r.communities = c.iter().map(|v| ((v >> 16) as u16, *v as u16)).collect();
            }
            PathAttribute::LargeCommunities(c) | PathAttribute::LargeCommunitiesPartial(c) => {
                r.large_communities = c
                    .iter()
                    .map(|l| (l.global_admin, l.local_data1, l.local_data2))
                    .collect();
            }
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests;
