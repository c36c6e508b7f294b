//! Our own small types for what a message carries: [`Family`], [`Prefix`], [`Origin`] and
//! [`Route`], with their conversions from and to the codec's.
//!
//! These are the types the rest of the crate (and the fill agent, through the snapshot) sees; the
//! codec's own never leave `wire`. A [`Prefix`] always has its host bits cleared, so two
//! spellings of one network compare equal; it is written and parsed as `198.51.100.0/24` (and
//! serialised that way). A [`Route`] is a prefix and its next hop with the [`PathAttributes`]
//! of the UPDATE that carried it, behind an `Arc` that every route of that UPDATE shares: the
//! attributes steering uses, the AS path (with AS4_PATH already merged in by the codec), ORIGIN,
//! MED, LOCAL_PREF (from internal neighbours only, RFC 4271 §5.1.5), and standard and large
//! communities. Their lists are bounded (docs/bgp.md, "Bounds"): at most 255 ASNs, 64
//! communities and 64 large communities are kept, and the AS path's true length is kept beside
//! its list. A route serialises flat, as if the attributes were its own fields.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use rustbgpd_wire as w;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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

    pub(super) fn from_codec(afi: w::Afi, safi: w::Safi) -> Option<Family> {
        match (afi, safi) {
            (w::Afi::Ipv4, w::Safi::Unicast) => Some(Family::Ipv4Unicast),
            (w::Afi::Ipv6, w::Safi::Unicast) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub(super) fn to_codec(self) -> (w::Afi, w::Safi) {
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

    pub(super) fn from_codec(p: w::nlri::Prefix) -> Option<Prefix> {
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

/// Why text is not a [`Prefix`].
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum PrefixError {
    /// No `/` between address and length.
    #[error("{0:?} is not a prefix (address/length)")]
    NoSlash(String),
    /// The part before the `/` is not an IP address.
    #[error("{0:?} is not an address")]
    BadAddress(String),
    /// The part after the `/` is not a number from 0 to 255.
    #[error("{0:?} is not a length")]
    BadLength(String),
    /// The length is past the family's width (32 or 128).
    #[error("length {0} is too long")]
    TooLong(u8),
    /// Bits past the length are set: the text names a host inside the network, not the network.
    #[error("{text} has host bits set (network is {network})")]
    HostBits {
        /// The text as given.
        text: String,
        /// The network it lies in.
        network: Prefix,
    },
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::NoSlash(s.to_string()))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| PrefixError::BadAddress(a.to_string()))?;
        let len: u8 = l
            .parse()
            .map_err(|_| PrefixError::BadLength(l.to_string()))?;
        let p = Prefix::new(addr, len).ok_or(PrefixError::TooLong(len))?;
        if p.addr != addr {
            return Err(PrefixError::HostBits {
                text: s.to_string(),
                network: p,
            });
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

/// One route as the neighbour sent it: a prefix, its next hop, and the attributes steering
/// cares about, shared with every other route of the same UPDATE.
///
/// Serialised flat: `prefix`, `next_hop`, then the fields of [`PathAttributes`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The destination.
    pub prefix: Prefix,
    /// The neighbour's next hop for it (we do not forward; it is reported). Per route, since
    /// one UPDATE can carry IPv4 routes with NEXT_HOP and IPv6 routes with MP_REACH_NLRI's.
    pub next_hop: IpAddr,
    /// The UPDATE's attributes: one allocation for all of its routes, so a table costs memory
    /// per UPDATE rather than per prefix, and a snapshot clones a pointer, not the lists.
    #[serde(flatten)]
    pub attrs: Arc<PathAttributes>,
}

/// The attributes of one UPDATE that steering uses and reports show, bounded: at most
/// [`MAX_AS_PATH`](PathAttributes::MAX_AS_PATH) ASNs,
/// [`MAX_COMMUNITIES`](PathAttributes::MAX_COMMUNITIES) communities and
/// [`MAX_LARGE_COMMUNITIES`](PathAttributes::MAX_LARGE_COMMUNITIES) large communities are kept
/// (the first ones, in the order sent); the AS path's true length is kept apart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathAttributes {
    /// The AS path, nearest AS first, AS4_PATH already merged in by the codec; at most
    /// [`MAX_AS_PATH`](PathAttributes::MAX_AS_PATH) of its ASNs.
    pub as_path: Vec<u32>,
    /// ASNs of the path left out of `as_path` by the bound ([`PathAttributes::as_path_len`]
    /// adds them back); not serialised when zero, so a bounded path reports as before.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub as_path_omitted: u32,
    /// ORIGIN.
    pub origin: Origin,
    /// MULTI_EXIT_DISC, when sent.
    pub med: Option<u32>,
    /// LOCAL_PREF, only from an internal neighbour (RFC 4271 §5.1.5: ignored from external).
    pub local_pref: Option<u32>,
    /// Standard communities (RFC 1997) as (AS, value); at most
    /// [`MAX_COMMUNITIES`](PathAttributes::MAX_COMMUNITIES).
    pub communities: Vec<(u16, u16)>,
    /// Large communities (RFC 8092) as (global, local 1, local 2); at most
    /// [`MAX_LARGE_COMMUNITIES`](PathAttributes::MAX_LARGE_COMMUNITIES).
    pub large_communities: Vec<(u32, u32, u32)>,
    /// Whether the receiving speaker's own AS is anywhere in the whole path, ASNs past the
    /// bound included: the import filter's loop check (RFC 4271 §9.1.2) must see the part the
    /// list no longer holds. Set when the UPDATE is read; not serialised.
    #[serde(skip)]
    pub local_as_in_path: bool,
}

impl PathAttributes {
    /// Most AS path ASNs kept per UPDATE: more than any real path (prepending included), and
    /// the most one AS_PATH segment can hold.
    pub const MAX_AS_PATH: usize = 255;
    /// Most standard communities kept per UPDATE.
    pub const MAX_COMMUNITIES: usize = 64;
    /// Most large communities kept per UPDATE.
    pub const MAX_LARGE_COMMUNITIES: usize = 64;

    /// The AS path's length as sent, ASNs left out of the list included (what steering ranks
    /// by).
    pub fn as_path_len(&self) -> usize {
        self.as_path.len() + self.as_path_omitted as usize
    }
}

impl Default for PathAttributes {
    /// An empty path, ORIGIN INCOMPLETE and nothing else: what a route built by hand starts
    /// from.
    fn default() -> PathAttributes {
        PathAttributes {
            as_path: Vec::new(),
            as_path_omitted: 0,
            origin: Origin::Incomplete,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            local_as_in_path: false,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
