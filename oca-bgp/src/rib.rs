//! The Adj-RIB-In of one session: every route the neighbour sent, by prefix, with the import
//! filter's verdict and a stale mark.
//!
//! # What is kept
//!
//! Every received route is kept, accepted or not, so that a later withdrawal or replacement of a
//! refused prefix is handled like any other and the received count is exact. The session's
//! max-prefix limit counts *received* routes (as BIRD's `receive limit` does): the limit exists
//! to bound the memory a neighbour can make us hold, and refused routes take memory too. So the
//! table never holds more than the limit plus one route.
//!
//! A route's attributes are shared with the other routes of its UPDATE (`Arc<PathAttributes>`,
//! bounded lists: `wire/update.rs`), so an entry costs a prefix, a next hop and a pointer, and
//! [`Rib::accepted_routes`] (the snapshot) copies pointers, not attribute lists. The worst case
//! is a router sending one prefix per UPDATE, each with attributes at their bounds: about 2 KB
//! a route.
//!
//! # The import filter
//!
//! A route is accepted unless it is
//! - a default route (`0.0.0.0/0`, `::/0`): it would steer every client to this appliance;
//! - longer than the family's maximum (default /24 for IPv4, /48 for IPv6): a router leaking
//!   host routes would otherwise swell every health report;
//! - a bogon, when `refuse_bogons` is on (the default): inside one of RFC 6890's special-purpose
//!   ranges that are not globally reachable (private, loopback, link-local, documentation,
//!   benchmarking, shared address space, reserved), or multicast. Nobody's clients live there.
//!   Labs that announce documentation prefixes turn it off;
//! - a loop: our own AS is in its AS path (RFC 4271 §9.1.2), anywhere in it, ASNs past the
//!   stored list's bound included.
//!
//! # Stale routes (graceful restart)
//!
//! When a neighbour that advertised graceful restart drops the TCP connection without a
//! NOTIFICATION, the session keeps its routes and marks them stale ([`Rib::mark_stale`]). A
//! route sent again clears its mark; at the neighbour's End-of-RIB, or when the restart or stale
//! timer runs out, what is still stale goes ([`Rib::drop_stale`]). Stale routes are still
//! reported and still accepted: keeping them in use is the point of graceful restart.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::wire::{Family, Prefix, Route};

/// Which received routes are accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportFilter {
    /// Longest IPv4 prefix accepted.
    pub max_prefix_len_v4: u8,
    /// Longest IPv6 prefix accepted.
    pub max_prefix_len_v6: u8,
    /// Refuse RFC 6890 special-purpose (not globally reachable) and multicast prefixes.
    pub refuse_bogons: bool,
}

impl Default for ImportFilter {
    fn default() -> ImportFilter {
        ImportFilter {
            max_prefix_len_v4: 24,
            max_prefix_len_v6: 48,
            refuse_bogons: true,
        }
    }
}

/// The import filter's verdict on one route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Accepted.
    Accepted,
    /// A default route.
    DefaultRoute,
    /// Longer than the family's maximum.
    TooSpecific,
    /// Inside a special-purpose or multicast range.
    Bogon,
    /// Our own AS is in the path.
    OwnAs,
}

impl ImportFilter {
    /// The verdict on `route` for a speaker in `local_as`.
    pub fn check(&self, route: &Route, local_as: u32) -> Verdict {
        let p = &route.prefix;
        let max = match p.family() {
            Family::Ipv4Unicast => self.max_prefix_len_v4,
            Family::Ipv6Unicast => self.max_prefix_len_v6,
        };
        if p.is_empty() {
            Verdict::DefaultRoute
        } else if p.len() > max {
            Verdict::TooSpecific
        } else if self.refuse_bogons && is_bogon(p) {
            Verdict::Bogon
        } else if route.attrs.local_as_in_path || route.attrs.as_path.contains(&local_as) {
            // The flag covers ASNs past the list's bound; the list, routes built by hand.
            Verdict::OwnAs
        } else {
            Verdict::Accepted
        }
    }
}

const V4_BOGONS: [([u8; 4], u8); 15] = [
    ([0, 0, 0, 0], 8),       // "this network"
    ([10, 0, 0, 0], 8),      // private
    ([100, 64, 0, 0], 10),   // shared address space (CGN)
    ([127, 0, 0, 0], 8),     // loopback
    ([169, 254, 0, 0], 16),  // link-local
    ([172, 16, 0, 0], 12),   // private
    ([192, 0, 0, 0], 24),    // IETF protocol assignments
    ([192, 0, 2, 0], 24),    // TEST-NET-1
    ([192, 168, 0, 0], 16),  // private
    ([198, 18, 0, 0], 15),   // benchmarking
    ([198, 51, 100, 0], 24), // TEST-NET-2
    ([203, 0, 113, 0], 24),  // TEST-NET-3
    ([224, 0, 0, 0], 4),     // multicast (RFC 5771)
    ([240, 0, 0, 0], 4),     // reserved
    ([255, 255, 255, 255], 32),
];

const V6_BOGONS: [(u128, u8); 11] = [
    (0, 128),                               // unspecified
    (1, 128),                               // loopback
    (0xffff_0000_0000, 96),                 // IPv4-mapped
    (0x0100 << 112, 64),                    // discard-only
    (0x2001 << 112, 23),                    // IETF protocol assignments
    ((0x2001 << 112) | (0x0002 << 96), 48), // benchmarking
    ((0x2001 << 112) | (0x0010 << 96), 28), // ORCHID
    ((0x2001 << 112) | (0x0db8 << 96), 32), // documentation
    (0xfc00 << 112, 7),                     // unique local
    (0xfe80 << 112, 10),                    // link-local
    (0xff00 << 112, 8),                     // multicast
];

/// Whether `p` lies inside a special-purpose range that is not globally reachable (RFC 6890)
/// or in multicast.
pub fn is_bogon(p: &Prefix) -> bool {
    match p.family() {
        Family::Ipv4Unicast => V4_BOGONS.iter().any(|(a, l)| {
            Prefix::new(IpAddr::V4(Ipv4Addr::from(*a)), *l).is_some_and(|b| b.contains(p))
        }),
        Family::Ipv6Unicast => V6_BOGONS.iter().any(|(a, l)| {
            Prefix::new(IpAddr::V6(Ipv6Addr::from(*a)), *l).is_some_and(|b| b.contains(p))
        }),
    }
}

#[derive(Clone, Debug)]
struct Entry {
    route: Route,
    verdict: Verdict,
    stale: bool,
}

/// One session's received routes.
#[derive(Clone, Debug)]
pub struct Rib {
    filter: ImportFilter,
    local_as: u32,
    routes: BTreeMap<Prefix, Entry>,
    accepted: usize,
    stale: usize,
}

/// An accepted route as reported: the route and whether it is stale.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedRoute {
    /// The route.
    #[serde(flatten)]
    pub route: Route,
    /// Kept through the neighbour's graceful restart, not yet sent again.
    pub stale: bool,
}

impl Rib {
    /// An empty table filtering with `filter` for a speaker in `local_as`.
    pub fn new(filter: ImportFilter, local_as: u32) -> Rib {
        Rib {
            filter,
            local_as,
            routes: BTreeMap::new(),
            accepted: 0,
            stale: 0,
        }
    }

    /// Installs `route`, replacing (and un-staling) any route for its prefix; returns the
    /// filter's verdict.
    pub fn announce(&mut self, route: Route) -> Verdict {
        let verdict = self.filter.check(&route, self.local_as);
        let prefix = route.prefix;
        self.remove(&prefix);
        if verdict == Verdict::Accepted {
            self.accepted += 1;
        }
        self.routes.insert(
            prefix,
            Entry {
                route,
                verdict,
                stale: false,
            },
        );
        verdict
    }

    /// Removes the route for `prefix`; whether there was one.
    pub fn withdraw(&mut self, prefix: &Prefix) -> bool {
        self.remove(prefix)
    }

    fn remove(&mut self, prefix: &Prefix) -> bool {
        let Some(old) = self.routes.remove(prefix) else {
            return false;
        };
        self.forget(&old);
        true
    }

    fn forget(&mut self, e: &Entry) {
        if e.verdict == Verdict::Accepted {
            self.accepted -= 1;
        }
        if e.stale {
            self.stale -= 1;
        }
    }

    /// Marks every route of `families` stale; returns how many are stale now.
    pub fn mark_stale(&mut self, families: &[Family]) -> usize {
        for e in self.routes.values_mut() {
            if !e.stale && families.contains(&e.route.prefix.family()) {
                e.stale = true;
                self.stale += 1;
            }
        }
        self.stale
    }

    /// Removes the stale routes of `family` (of every family when `None`); returns how many.
    pub fn drop_stale(&mut self, family: Option<Family>) -> usize {
        self.drop_where(|e| e.stale && family.is_none_or(|f| e.route.prefix.family() == f))
    }

    /// Removes every route of `family`; returns how many.
    pub fn clear_family(&mut self, family: Family) -> usize {
        self.drop_where(|e| e.route.prefix.family() == family)
    }

    /// Removes every route.
    pub fn clear(&mut self) {
        self.routes.clear();
        self.accepted = 0;
        self.stale = 0;
    }

    fn drop_where(&mut self, doomed: impl Fn(&Entry) -> bool) -> usize {
        let before = self.routes.len();
        let mut gone = Vec::new();
        self.routes.retain(|_, e| {
            let d = doomed(e);
            if d {
                gone.push((e.verdict, e.stale));
            }
            !d
        });
        for (verdict, stale) in gone {
            self.accepted -= usize::from(verdict == Verdict::Accepted);
            self.stale -= usize::from(stale);
        }
        before - self.routes.len()
    }

    /// Routes received and held, accepted or not.
    pub fn received(&self) -> usize {
        self.routes.len()
    }

    /// Routes the import filter accepted.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// Routes marked stale.
    pub fn stale(&self) -> usize {
        self.stale
    }

    /// Whether any route of `family` is stale.
    pub fn has_stale(&self, family: Family) -> bool {
        self.stale > 0
            && self
                .routes
                .values()
                .any(|e| e.stale && e.route.prefix.family() == family)
    }

    /// The filter's verdict on the route held for `prefix`.
    pub fn verdict(&self, prefix: &Prefix) -> Option<Verdict> {
        self.routes.get(prefix).map(|e| e.verdict)
    }

    /// The accepted routes in prefix order, each with its stale mark.
    pub fn accepted_routes(&self) -> impl Iterator<Item = AcceptedRoute> + '_ {
        self.routes
            .values()
            .filter(|e| e.verdict == Verdict::Accepted)
            .map(|e| AcceptedRoute {
                route: e.route.clone(),
                stale: e.stale,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::wire::{Origin, PathAttributes};

    fn route(p: &str, path: &[u32]) -> Route {
        Route {
            prefix: p.parse().unwrap(),
            next_hop: "10.250.0.1".parse().unwrap(),
            attrs: Arc::new(PathAttributes {
                as_path: path.to_vec(),
                origin: Origin::Igp,
                ..PathAttributes::default()
            }),
        }
    }

    fn open_filter() -> ImportFilter {
        ImportFilter {
            refuse_bogons: false,
            ..ImportFilter::default()
        }
    }

    #[test]
    fn the_default_filter_refuses_defaults_long_prefixes_bogons_and_loops() {
        let f = ImportFilter::default();
        let v = |p: &str, path: &[u32]| f.check(&route(p, path), 64501);
        assert_eq!(v("8.8.8.0/24", &[64500]), Verdict::Accepted);
        assert_eq!(v("2a00:1450::/32", &[64500]), Verdict::Accepted);
        assert_eq!(v("0.0.0.0/0", &[64500]), Verdict::DefaultRoute);
        assert_eq!(v("::/0", &[64500]), Verdict::DefaultRoute);
        assert_eq!(v("8.8.8.0/25", &[64500]), Verdict::TooSpecific);
        assert_eq!(v("2a00:1450::/49", &[64500]), Verdict::TooSpecific);
        assert_eq!(v("2a00:1450::/48", &[64500]), Verdict::Accepted);
        for bogon in [
            "10.1.0.0/16",
            "100.64.0.0/10",
            "127.0.0.0/8",
            "169.254.1.0/24",
            "172.20.0.0/16",
            "192.0.2.0/24",
            "192.168.1.0/24",
            "198.18.0.0/15",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "224.0.0.0/8",
            "240.0.0.0/8",
            "0.0.0.0/8",
            "2001:db8:100::/48",
            "fd00::/8",
            "fe80::/10",
            "ff02::/16",
            "2001:2::/48",
        ] {
            assert_eq!(v(bogon, &[64500]), Verdict::Bogon, "{bogon}");
        }
        // Longer than the IPv6 limit anyway, but a bogon all the same.
        assert!(is_bogon(&"::ffff:0:0/96".parse().unwrap()));
        // Just outside the ranges.
        assert_eq!(v("100.128.0.0/10", &[64500]), Verdict::Accepted);
        assert_eq!(v("172.32.0.0/16", &[64500]), Verdict::Accepted);
        assert_eq!(v("2001:db9::/32", &[64500]), Verdict::Accepted);
        assert_eq!(v("8.8.8.0/24", &[64500, 64501]), Verdict::OwnAs);
        let mut far = route("8.8.8.0/24", &[64500]);
        Arc::make_mut(&mut far.attrs).local_as_in_path = true;
        assert_eq!(
            f.check(&far, 64501),
            Verdict::OwnAs,
            "past the list's bound"
        );
        let open = open_filter();
        assert_eq!(
            open.check(&route("198.51.100.0/24", &[1]), 2),
            Verdict::Accepted
        );
    }

    #[test]
    fn counts_follow_announcements_replacements_and_withdrawals() {
        let mut rib = Rib::new(ImportFilter::default(), 64501);
        assert_eq!(
            rib.announce(route("8.8.8.0/24", &[64500])),
            Verdict::Accepted
        );
        assert_eq!(rib.announce(route("10.0.0.0/8", &[64500])), Verdict::Bogon);
        assert_eq!((rib.received(), rib.accepted()), (2, 1));
        // A replacement that the filter now refuses.
        rib.announce(route("8.8.8.0/24", &[64500, 64501]));
        assert_eq!((rib.received(), rib.accepted()), (2, 0));
        rib.announce(route("8.8.8.0/24", &[64500]));
        assert!(rib.withdraw(&"10.0.0.0/8".parse().unwrap()));
        assert!(!rib.withdraw(&"10.0.0.0/8".parse().unwrap()));
        assert_eq!((rib.received(), rib.accepted()), (1, 1));
        assert_eq!(rib.accepted_routes().count(), 1);
    }

    #[test]
    fn stale_routes_are_refreshed_or_dropped_by_family() {
        let mut rib = Rib::new(open_filter(), 64501);
        rib.announce(route("198.51.100.0/24", &[64500]));
        rib.announce(route("203.0.113.0/24", &[64500]));
        rib.announce(route("2001:db8:100::/48", &[64500]));
        assert_eq!(rib.mark_stale(&[Family::Ipv4Unicast]), 2);
        assert!(rib.has_stale(Family::Ipv4Unicast));
        assert!(!rib.has_stale(Family::Ipv6Unicast));
        // Sent again: fresh.
        rib.announce(route("198.51.100.0/24", &[64500]));
        assert_eq!(rib.stale(), 1);
        assert_eq!(rib.mark_stale(&Family::ALL), 3);
        assert_eq!(rib.drop_stale(Some(Family::Ipv6Unicast)), 1);
        assert_eq!((rib.received(), rib.accepted(), rib.stale()), (2, 2, 2));
        let stale: Vec<bool> = rib.accepted_routes().map(|r| r.stale).collect();
        assert_eq!(stale, vec![true, true]);
        assert_eq!(rib.drop_stale(None), 2);
        assert_eq!((rib.received(), rib.accepted(), rib.stale()), (0, 0, 0));
    }

    #[test]
    fn clearing_a_family_keeps_the_other() {
        let mut rib = Rib::new(open_filter(), 64501);
        rib.announce(route("198.51.100.0/24", &[64500]));
        rib.announce(route("2001:db8:100::/48", &[64500]));
        rib.mark_stale(&Family::ALL);
        assert_eq!(rib.clear_family(Family::Ipv4Unicast), 1);
        assert_eq!((rib.received(), rib.accepted(), rib.stale()), (1, 1, 1));
        rib.clear();
        assert_eq!((rib.received(), rib.accepted(), rib.stale()), (0, 0, 0));
    }
}
