//! The speaker's configuration: who we are, where we listen, and each neighbour.
//!
//! It is plain serde, meant to sit in the fill agent's TOML as a `[bgp]` table (the fill agent
//! owns the file; this crate owns the table's meaning). Times are whole seconds. A neighbour
//! needs only `address` and `peer_as`; everything else has the default shown:
//!
//! ```toml
//! local_as = 64501
//! router_id = "10.250.0.2"
//! listen_addresses = ["0.0.0.0", "::"]   # [] to only dial out
//! listen_port = 179
//! graceful_restart_time = 120            # what our Graceful Restart capability states
//!
//! [[neighbors]]
//! address = "10.250.0.1"
//! peer_as = 64500                        # equal to local_as: internal BGP
//! # local_address = "10.250.0.2"         # dial from this address
//! port = 179                             # the neighbour's port, when dialling
//! passive = false                        # true: never dial, wait for the router
//! hold_time = 90                         # 0, or at least 3
//! connect_retry = 5                      # first redial wait; doubles up to connect_retry_max
//! connect_retry_max = 120
//! max_prefixes = 20000                   # more received routes: Cease/1, then down for
//! max_prefix_restart = 300               #   this long
//! graceful_restart_max = 300             # cap on the router's restart time (0: never keep routes)
//! stale_time = 360                       # after it is back, wait this long for End-of-RIB
//! families = ["ipv4-unicast", "ipv6-unicast"]
//! # md5_password = "secret"              # TCP-MD5 (RFC 2385)
//! # tcp_ao = { key = "secret", algorithm = "hmac(sha1)", send_id = 1, recv_id = 1 }
//! [neighbors.import]
//! max_prefix_len_v4 = 24
//! max_prefix_len_v6 = 48
//! refuse_bogons = true
//! ```
//!
//! [`Config::validate`] refuses what would only fail later: a zero router id or AS, duplicate
//! or link-local neighbours, a hold time of 1 or 2, MD5 and TCP-AO on one neighbour, keys
//! longer than the kernel takes.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::rib::ImportFilter;
use crate::session::SessionConfig;
use crate::wire::Family;

/// Longest TCP-MD5 or TCP-AO key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`, `TCP_AO_MAXKEYLEN`).
pub const MAX_KEY_LEN: usize = 80;

/// A configuration the speaker cannot run with.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The TOML does not parse into a configuration.
    #[error("BGP configuration: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value is out of range or inconsistent.
    #[error("BGP configuration: {0}")]
    Invalid(String),
}

/// The whole speaker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier (usually the appliance's IPv4 address).
    pub router_id: Ipv4Addr,
    /// Addresses to listen on (an empty list: dial out only).
    #[serde(default = "default_listen")]
    pub listen_addresses: Vec<IpAddr>,
    /// Port to listen on.
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// The restart time our Graceful Restart capability states, seconds (at most 4095).
    #[serde(default = "default_restart_time")]
    pub graceful_restart_time: u16,
    /// The ISP's routers.
    #[serde(default)]
    pub neighbors: Vec<Neighbor>,
}

/// One of the ISP's routers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Neighbor {
    /// Its address; connections from any other address are closed at once.
    pub address: IpAddr,
    /// Its AS.
    pub peer_as: u32,
    /// Our address to dial from.
    #[serde(default)]
    pub local_address: Option<IpAddr>,
    /// Its port, when dialling.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Never dial; wait for the router to connect.
    #[serde(default)]
    pub passive: bool,
    /// Our hold time, seconds.
    #[serde(default = "default_hold")]
    pub hold_time: u16,
    /// First redial wait, seconds.
    #[serde(default = "default_connect_retry")]
    pub connect_retry: u64,
    /// Longest redial wait, seconds.
    #[serde(default = "default_connect_retry_max")]
    pub connect_retry_max: u64,
    /// Most routes held from it.
    #[serde(default = "default_max_prefixes")]
    pub max_prefixes: u32,
    /// Seconds to stay down after it sent more.
    #[serde(default = "default_max_prefix_restart")]
    pub max_prefix_restart: u64,
    /// Cap on its restart time while we keep its routes, seconds (0: never keep them).
    #[serde(default = "default_gr_max")]
    pub graceful_restart_max: u64,
    /// Seconds stale routes wait for its End-of-RIB once it is back.
    #[serde(default = "default_stale_time")]
    pub stale_time: u64,
    /// The families we take from it.
    #[serde(default = "default_families")]
    pub families: Vec<Family>,
    /// TCP-MD5 password (RFC 2385).
    #[serde(default)]
    pub md5_password: Option<String>,
    /// TCP-AO key (RFC 5925).
    #[serde(default)]
    pub tcp_ao: Option<TcpAo>,
    /// Which of its routes are accepted.
    #[serde(default)]
    pub import: ImportFilter,
}

/// A TCP-AO master key tuple for one neighbour.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpAo {
    /// The key.
    pub key: String,
    /// The kernel crypto algorithm: `hmac(sha1)` or `cmac(aes128)` (RFC 5926).
    #[serde(default = "default_ao_algorithm")]
    pub algorithm: String,
    /// Our key id.
    pub send_id: u8,
    /// The neighbour's key id.
    pub recv_id: u8,
}

fn default_listen() -> Vec<IpAddr> {
    vec![
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    ]
}
fn default_port() -> u16 {
    179
}
fn default_restart_time() -> u16 {
    120
}
fn default_hold() -> u16 {
    90
}
fn default_connect_retry() -> u64 {
    5
}
fn default_connect_retry_max() -> u64 {
    120
}
fn default_max_prefixes() -> u32 {
    20_000
}
fn default_max_prefix_restart() -> u64 {
    300
}
fn default_gr_max() -> u64 {
    300
}
fn default_stale_time() -> u64 {
    360
}
fn default_families() -> Vec<Family> {
    Family::ALL.to_vec()
}
fn default_ao_algorithm() -> String {
    "hmac(sha1)".into()
}

impl Neighbor {
    /// A neighbour with every default.
    pub fn new(address: IpAddr, peer_as: u32) -> Neighbor {
        Neighbor {
            address,
            peer_as,
            local_address: None,
            port: default_port(),
            passive: false,
            hold_time: default_hold(),
            connect_retry: default_connect_retry(),
            connect_retry_max: default_connect_retry_max(),
            max_prefixes: default_max_prefixes(),
            max_prefix_restart: default_max_prefix_restart(),
            graceful_restart_max: default_gr_max(),
            stale_time: default_stale_time(),
            families: default_families(),
            md5_password: None,
            tcp_ao: None,
            import: ImportFilter::default(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let a = self.address;
        if a.is_unspecified() || a.is_multicast() {
            return Err(format!("neighbor {a}: not a unicast address"));
        }
        if let IpAddr::V6(v6) = a {
            if v6.is_unicast_link_local() {
                return Err(format!(
                    "neighbor {a}: link-local neighbours are not supported"
                ));
            }
        }
        if self
            .local_address
            .is_some_and(|l| l.is_ipv4() != a.is_ipv4())
        {
            return Err(format!(
                "neighbor {a}: local_address is of the other family"
            ));
        }
        if self.peer_as == 0 {
            return Err(format!("neighbor {a}: peer_as 0 is reserved (RFC 7607)"));
        }
        if matches!(self.hold_time, 1 | 2) {
            return Err(format!("neighbor {a}: hold_time must be 0 or at least 3"));
        }
        if self.connect_retry == 0 || self.connect_retry_max < self.connect_retry {
            return Err(format!(
                "neighbor {a}: need 1 <= connect_retry <= connect_retry_max"
            ));
        }
        if self.max_prefixes == 0 {
            return Err(format!("neighbor {a}: max_prefixes must be at least 1"));
        }
        if self.families.is_empty() {
            return Err(format!("neighbor {a}: no families"));
        }
        if self.import.max_prefix_len_v4 > 32 || self.import.max_prefix_len_v6 > 128 {
            return Err(format!(
                "neighbor {a}: import prefix length past the family's width"
            ));
        }
        self.validate_auth()
    }

    fn validate_auth(&self) -> Result<(), String> {
        let a = self.address;
        if self.md5_password.is_some() && self.tcp_ao.is_some() {
            return Err(format!(
                "neighbor {a}: md5_password and tcp_ao exclude each other (RFC 5925)"
            ));
        }
        if let Some(p) = &self.md5_password {
            if p.is_empty() || p.len() > MAX_KEY_LEN {
                return Err(format!("neighbor {a}: md5_password must be 1 to 80 bytes"));
            }
        }
        if let Some(ao) = &self.tcp_ao {
            if ao.key.is_empty() || ao.key.len() > MAX_KEY_LEN {
                return Err(format!("neighbor {a}: tcp_ao key must be 1 to 80 bytes"));
            }
            if ao.algorithm.is_empty() || ao.algorithm.len() >= 64 {
                return Err(format!(
                    "neighbor {a}: tcp_ao algorithm must be 1 to 63 bytes"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Parses and validates a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text)?;
        c.validate()?;
        Ok(c)
    }

    /// Checks what serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(ConfigError::Invalid)
    }

    fn check(&self) -> Result<(), String> {
        if self.local_as == 0 || self.local_as == 23456 {
            return Err(format!("local_as {} is reserved", self.local_as));
        }
        if self.router_id.is_unspecified() {
            return Err("router_id must not be 0.0.0.0".into());
        }
        if self.graceful_restart_time > 0x0fff {
            return Err("graceful_restart_time is at most 4095 seconds".into());
        }
        let mut seen = HashSet::new();
        for n in &self.neighbors {
            if !seen.insert(n.address) {
                return Err(format!("neighbor {} is listed twice", n.address));
            }
            n.validate()?;
        }
        Ok(())
    }

    /// What the session with `n` runs with.
    pub fn session_config(&self, n: &Neighbor) -> SessionConfig {
        SessionConfig {
            local_as: self.local_as,
            router_id: self.router_id,
            peer_addr: n.address,
            peer_as: n.peer_as,
            passive: n.passive,
            hold_time: n.hold_time,
            connect_retry: Duration::from_secs(n.connect_retry),
            connect_retry_max: Duration::from_secs(n.connect_retry_max),
            max_prefixes: n.max_prefixes,
            max_prefix_restart: Duration::from_secs(n.max_prefix_restart),
            families: n.families.clone(),
            import: n.import.clone(),
            restart_time: self.graceful_restart_time,
            graceful_restart_max: Duration::from_secs(n.graceful_restart_max),
            stale_time: Duration::from_secs(n.stale_time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_neighbour_gets_the_documented_defaults() {
        let c = Config::from_toml(
            r#"
            local_as = 64501
            router_id = "10.250.0.2"
            [[neighbors]]
            address = "10.250.0.1"
            peer_as = 64500
            "#,
        )
        .unwrap();
        assert_eq!(c.listen_port, 179);
        assert_eq!(c.listen_addresses.len(), 2);
        let n = &c.neighbors[0];
        assert_eq!(n, &Neighbor::new("10.250.0.1".parse().unwrap(), 64500));
        let s = c.session_config(n);
        assert_eq!(s.hold_time, 90);
        assert_eq!(s.connect_retry, Duration::from_secs(5));
        assert_eq!(s.connect_retry_max, Duration::from_secs(120));
        assert_eq!(s.max_prefixes, 20_000);
        assert_eq!(s.max_prefix_restart, Duration::from_secs(300));
        assert_eq!(s.import, ImportFilter::default());
        assert_eq!(s.families, Family::ALL.to_vec());
    }

    /// A line of the module doc's example, commented-out settings switched on, comments gone.
    fn uncomment(l: &str) -> String {
        let l = l.trim_start_matches("//!").trim_start_matches(' ');
        let l = l.strip_prefix("# ").unwrap_or(l);
        let l = l.split(" #").next().unwrap_or_default();
        format!("{l}\n")
    }

    #[test]
    fn the_module_doc_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(uncomment)
            .collect();
        let c = Config::from_toml(&example);
        assert!(c.is_err(), "md5 and tcp_ao together must be refused");
        let without_ao: String = example
            .lines()
            .filter(|l| !l.starts_with("tcp_ao"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = Config::from_toml(&without_ao).unwrap();
        assert_eq!(c.neighbors[0].md5_password.as_deref(), Some("secret"));
        assert_eq!(
            c.neighbors[0].local_address,
            Some("10.250.0.2".parse().unwrap())
        );
    }

    #[test]
    fn nonsense_is_refused_with_the_reason() {
        let base = Config {
            local_as: 64501,
            router_id: "10.0.0.2".parse().unwrap(),
            listen_addresses: vec![],
            listen_port: 179,
            graceful_restart_time: 120,
            neighbors: vec![Neighbor::new("10.0.0.1".parse().unwrap(), 64500)],
        };
        assert!(base.validate().is_ok());
        let bad = |f: &dyn Fn(&mut Config), why: &str| {
            let mut c = base.clone();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        };
        bad(&|c| c.router_id = Ipv4Addr::UNSPECIFIED, "router_id");
        bad(&|c| c.local_as = 0, "reserved");
        bad(&|c| c.neighbors[0].hold_time = 2, "hold_time");
        bad(&|c| c.neighbors.push(c.neighbors[0].clone()), "twice");
        bad(
            &|c| c.neighbors[0].address = "fe80::1".parse().unwrap(),
            "link-local",
        );
        bad(&|c| c.neighbors[0].max_prefixes = 0, "max_prefixes");
        bad(
            &|c| c.neighbors[0].md5_password = Some("x".repeat(81)),
            "md5",
        );
        bad(
            &|c| c.neighbors[0].local_address = Some("::1".parse().unwrap()),
            "family",
        );
    }
}
