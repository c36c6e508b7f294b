//! Our own small types for what a message carries: [`Family`], [`Prefix`], [`Origin`] and
//! [`Route`], with their conversions from and to the codec's.
//!
//! These are the types the rest of the crate (and the fill agent, through the snapshot) sees; the
//! codec's own never leave `wire`. A [`Prefix`] always has its host bits cleared, so two
//! spellings of one network compare equal; it is written and parsed as `198.51.100.0/24` (and
//! serialised that way). A [`Route`] holds only the attributes steering uses: the AS path (with
//! AS4_PATH already merged in by the codec), ORIGIN, MED, LOCAL_PREF (from internal neighbours
//! only, RFC 4271 §5.1.5), and standard and large communities.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use rustbgpd_wire as w;
use serde::{Deserialize, Serialize};

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
    /// The IPv4 default route, a placeholder until a route's own prefix is filled in.
    pub(super) const PLACEHOLDER: Prefix = Prefix {
        addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        len: 0,
    };

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
