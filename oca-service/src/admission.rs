//! Admission: the caps a new connection passes before it gets any state (no connection object,
//! no TLS session, no buffer): a listener-wide `max_connections`, and
//! `max_connections_per_client` per client, so one address cannot take every connection.
//! oca-daemon and the control plane count their connections here.
//!
//! A client is an IPv4 address, or an IPv6 /64: one subscriber's prefix, inside which a host
//! can take as many addresses as it likes. The default per-client cap (1,024) is CGNAT-aware:
//! a carrier-grade NAT puts tens to a few hundred subscribers behind one public IPv4 address,
//! each player with a handful of connections, and the appliance must not turn them away; one
//! address holding more than that is an attack or a broken client. `0` turns the cap off
//! (benchmarks, labs where every client is loopback).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

/// Per-client counts are split over this many locks, so accepting workers seldom meet.
const SHARDS: usize = 64;

/// Who a connection counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Client {
    /// An IPv4 address (also IPv4-mapped IPv6).
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl Client {
    /// The client an address belongs to.
    pub fn of(ip: IpAddr) -> Client {
        match ip {
            IpAddr::V4(v4) => Client::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Client::V4(u32::from(v4)),
                None => Client::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }

    fn shard(self) -> usize {
        let x = match self {
            Client::V4(a) => u64::from(a),
            Client::V6(p) => p ^ 0x9e37_79b9_7f4a_7c15,
        };
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS
    }
}

/// Why a connection was refused (metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Total,
    /// `max_connections_per_client` reached for its client.
    PerClient,
}

impl Refusal {
    /// Label values, in the order of [`Admission::rejected`].
    pub const NAMES: [&'static str; 2] = ["max_connections", "per_client"];
}

/// A place taken under the caps, given back when dropped (with the connection that holds it),
/// so no path that forgets a connection can leak its place.
#[derive(Debug)]
pub struct Ticket {
    client: Option<Client>,
    admission: Arc<Admission>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.client);
    }
}

/// The caps and the connections counted against them.
#[derive(Debug)]
pub struct Admission {
    max_total: usize,
    max_per_client: u32,
    open: AtomicUsize,
    clients: [Mutex<HashMap<Client, u32>>; SHARDS],
    rejected: [AtomicU64; 2],
}

impl Admission {
    /// Caps of `max_total` connections and `max_per_client` per client (0: no per-client cap).
    pub fn new(max_total: usize, max_per_client: u32) -> Admission {
        Admission {
            max_total,
            max_per_client,
            open: AtomicUsize::new(0),
            clients: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            rejected: Default::default(),
        }
    }

    /// Takes a place for a connection from `peer` (unknown: counted only in the total).
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Ticket, Refusal> {
        self.admit_counted(peer, true)
    }

    /// Takes a place past `max_total` (still under the per-client cap): for a connection
    /// that replaces one being closed to make room for it.
    pub fn admit_replacing(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Ticket, Refusal> {
        self.admit_counted(peer, false)
    }

    fn admit_counted(
        self: &Arc<Self>,
        peer: Option<IpAddr>,
        capped: bool,
    ) -> Result<Ticket, Refusal> {
        if self.open.fetch_add(1, Relaxed) >= self.max_total && capped {
            self.open.fetch_sub(1, Relaxed);
            return Err(self.refuse(Refusal::Total));
        }
        let client = peer.filter(|_| self.max_per_client > 0).map(Client::of);
        if let Some(c) = client {
            let mut map = self.clients[c.shard()].lock();
            let n = map.entry(c).or_insert(0);
            if *n >= self.max_per_client {
                drop(map);
                self.open.fetch_sub(1, Relaxed);
                return Err(self.refuse(Refusal::PerClient));
            }
            *n += 1;
        }
        Ok(Ticket {
            client,
            admission: self.clone(),
        })
    }

    fn release(&self, client: Option<Client>) {
        self.open.fetch_sub(1, Relaxed);
        if let Some(c) = client {
            let mut map = self.clients[c.shard()].lock();
            if let std::collections::hash_map::Entry::Occupied(mut e) = map.entry(c) {
                *e.get_mut() -= 1;
                if *e.get() == 0 {
                    e.remove();
                }
            }
        }
    }

    fn refuse(&self, why: Refusal) -> Refusal {
        self.rejected[why as usize].fetch_add(1, Relaxed);
        why
    }

    /// Connections refused, per [`Refusal::NAMES`].
    pub fn rejected(&self) -> [u64; 2] {
        [
            self.rejected[0].load(Relaxed),
            self.rejected[1].load(Relaxed),
        ]
    }

    /// Connections holding a place now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Clients with at least one connection (idle: none).
    pub fn clients(&self) -> usize {
        self.clients.iter().map(|m| m.lock().len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_are_addresses_and_ipv6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            Client::of(ip("192.0.2.1")),
            Client::of(ip("::ffff:192.0.2.1"))
        );
        assert_ne!(Client::of(ip("192.0.2.1")), Client::of(ip("192.0.2.2")));
        assert_eq!(
            Client::of(ip("2001:db8:1:2::1")),
            Client::of(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            Client::of(ip("2001:db8:1:2::1")),
            Client::of(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn caps_hold_and_places_come_back() {
        let a = Arc::new(Admission::new(3, 2));
        let one = Some("192.0.2.1".parse().unwrap());
        let two = Some("192.0.2.2".parse().unwrap());
        let t1 = a.admit(one).unwrap();
        let t2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::PerClient);
        let t3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).unwrap_err(), Refusal::Total);
        drop(t1);
        let t4 = a.admit(one).unwrap();
        assert_eq!(a.rejected(), [1, 1]);
        drop((t2, t3, t4));
        assert_eq!(a.clients(), 0, "no entry is left behind");
        assert_eq!(a.open.load(Relaxed), 0);
        let off = Arc::new(Admission::new(10, 0));
        let ts: Vec<_> = (0..10).map(|_| off.admit(one).unwrap()).collect();
        assert_eq!(
            off.clients(),
            0,
            "no per-client cap, nothing kept per client"
        );
        drop(ts);
    }
}
