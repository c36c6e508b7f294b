//! IP prefixes (`192.0.2.0/24`, `2001:db8::/32`): the routes appliances report and the coverage
//! zones the control plane steers by.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network prefix with its host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a string is not a prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// No `/len` part.
    #[error("{0:?} is not a prefix: expected ADDRESS/LENGTH")]
    NoLength(String),
    /// The address does not parse.
    #[error("{0:?} is not a prefix: bad address")]
    BadAddress(String),
    /// The length is not a number within the family's width.
    #[error("{0:?} is not a prefix: length must be 0-32 (IPv4) or 0-128 (IPv6)")]
    BadLength(String),
    /// Bits are set past the length (`10.0.0.1/8`); refused rather than guessed.
    #[error("{0:?} has bits set past its length (did you mean {1}?)")]
    HostBits(String, String),
}

impl Prefix {
    /// A prefix; `None` when the length is too long or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Option<Prefix> {
        let p = Prefix { addr, len };
        (len <= p.width() && p.masked() == addr).then_some(p)
    }

    /// The prefix of length `len` that contains `ip` (host bits cleared); `None` when `len` is
    /// longer than the address family allows.
    pub fn containing(ip: IpAddr, len: u8) -> Option<Prefix> {
        Prefix::new(mask(ip, len), len)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn bits(&self) -> u8 {
        self.len
    }

    /// Whether this is the zero-length prefix (the default route).
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    fn width(&self) -> u8 {
        if self.addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    fn masked(&self) -> IpAddr {
        mask(self.addr, self.len)
    }

    /// Whether `ip` falls inside the prefix (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }

    /// Whether every address of `other` falls inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        self.len <= other.len && self.contains(other.addr)
    }
}

fn mask(ip: IpAddr, len: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Prefix, PrefixError> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| PrefixError::NoLength(s.to_string()))?;
        let addr: IpAddr = a
            .parse()
            .map_err(|_| PrefixError::BadAddress(s.to_string()))?;
        let len: u8 = l
            .parse()
            .map_err(|_| PrefixError::BadLength(s.to_string()))?;
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if len > width || l.starts_with('+') {
            return Err(PrefixError::BadLength(s.to_string()));
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(PrefixError::HostBits(
                s.to_string(),
                format!("{masked}/{len}"),
            ));
        }
        Ok(Prefix { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl serde::Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_only_within_the_family_and_length() {
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        assert!(p("192.0.2.0/24").covers(&p("192.0.2.128/25")));
        assert!(p("192.0.2.0/24").covers(&p("192.0.2.0/24")));
        assert!(!p("192.0.2.128/25").covers(&p("192.0.2.0/24")));
        assert!(!p("192.0.2.0/24").covers(&p("192.0.3.0/24")));
        assert!(!p("0.0.0.0/0").covers(&p("2001:db8::/32")));
        assert!(p("2001:db8::/32").covers(&p("2001:db8:5::/48")));
    }

    #[test]
    fn parses_and_matches_both_families() {
        let p: Prefix = "192.0.2.0/24".parse().unwrap();
        assert!(p.contains("192.0.2.77".parse().unwrap()));
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(
            !p.contains("::ffff:192.0.2.1".parse().unwrap()),
            "no cross-family match"
        );
        let q: Prefix = "2001:db8::/32".parse().unwrap();
        assert!(q.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!q.contains("2001:db9::1".parse().unwrap()));
        let all: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all.is_default() && all.contains("8.8.8.8".parse().unwrap()));
        assert_eq!(q.to_string(), "2001:db8::/32");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"192.0.2.0/24\"");
        assert_eq!(
            serde_json::from_str::<Prefix>("\"10.0.0.0/8\"")
                .unwrap()
                .bits(),
            8
        );
    }

    #[test]
    fn refuses_what_is_not_a_prefix() {
        assert!(matches!(
            "10.0.0.0".parse::<Prefix>(),
            Err(PrefixError::NoLength(_))
        ));
        assert!(matches!(
            "10.0.0/8".parse::<Prefix>(),
            Err(PrefixError::BadAddress(_))
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::BadLength(_))
        ));
        assert!(matches!(
            "::/129".parse::<Prefix>(),
            Err(PrefixError::BadLength(_))
        ));
        assert!(matches!(
            "10.0.0.0/+8".parse::<Prefix>(),
            Err(PrefixError::BadLength(_))
        ));
        let e = "10.0.0.1/8".parse::<Prefix>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"10.0.0.1/8\" has bits set past its length (did you mean 10.0.0.0/8?)"
        );
        assert!(serde_json::from_str::<Prefix>("\"x\"").is_err());
    }
}
