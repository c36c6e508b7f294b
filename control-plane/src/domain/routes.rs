//! How steering compares the routes of several appliances hearing one prefix: the part of BGP's
//! decision process (RFC 4271 §9.1.2.2) that applies to routes an appliance was told about.
//!
//! Order, each step only between routes equal on the ones before it:
//! 1. higher LOCAL_PREF (absent: [`DEFAULT_LOCAL_PREF`]);
//! 2. shorter AS path;
//! 3. lower ORIGIN (IGP < EGP < INCOMPLETE);
//! 4. lower MED, compared whatever the neighbour AS (always-compare-MED; absent: 0, as the RFC
//!    says);
//! 5. a route not kept through a router's graceful restart before a stale one.
//!
//! This is the RFC's order (origin before MED), which issue 16's text had the other way round:
//! the ISP's routers choose by it, so steering prefers the appliance the ISP's own routing
//! prefers, and an ISP steering traffic with ORIGIN (set by policy) gets what its routers do.
//! The RFC's later steps (eBGP over iBGP, IGP cost to the next hop, router id, peer address)
//! are left out on purpose: they pick one route among equals, and steering wants equals kept
//! equal so the rendezvous hash spreads files over them. Static prefixes and admin zones count
//! as locally originated routes ([`Preference::LOCAL`]).

use std::cmp::Ordering;

use oca_protocol::health::Origin;
use oca_protocol::steering::MatchedRoute;

/// LOCAL_PREF of a route that carries none: eBGP routes never do (RFC 4271 §5.1.5), and 100 is
/// the default of BIRD, Cisco IOS and Junos alike.
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// What steering compares of a route. Ordered best first: `a < b` when `a` is preferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Preference {
    /// LOCAL_PREF (absent: [`DEFAULT_LOCAL_PREF`]).
    pub local_pref: u32,
    /// AS path length.
    pub as_path_len: u32,
    /// ORIGIN.
    pub origin: Origin,
    /// MED (absent: 0).
    pub med: u32,
    /// Kept through a graceful restart.
    pub stale: bool,
}

impl Preference {
    /// A locally originated route: a static prefix or an admin coverage zone.
    pub const LOCAL: Preference = Preference {
        local_pref: DEFAULT_LOCAL_PREF,
        as_path_len: 0,
        origin: Origin::Igp,
        med: 0,
        stale: false,
    };

    /// The preference of a route as steering holds it.
    pub fn of(route: &MatchedRoute) -> Preference {
        Preference::from_attributes(
            route.local_pref,
            route.as_path_len as usize,
            route.origin,
            route.med,
            route.stale,
        )
    }

    /// The preference of a route with these attributes (absent ones take the RFC's defaults).
    pub fn from_attributes(
        local_pref: Option<u32>,
        as_path_len: usize,
        origin: Origin,
        med: Option<u32>,
        stale: bool,
    ) -> Preference {
        Preference {
            local_pref: local_pref.unwrap_or(DEFAULT_LOCAL_PREF),
            as_path_len: u32::try_from(as_path_len).unwrap_or(u32::MAX),
            origin,
            med: med.unwrap_or(0),
            stale,
        }
    }

    /// Which step of the decision ranks `self` before `other`, in words (for `explain=1`);
    /// none when `self` is not strictly better.
    pub fn why_better(&self, other: &Preference) -> Option<String> {
        if self.cmp(other) != Ordering::Less {
            return None;
        }
        Some(if self.local_pref != other.local_pref {
            format!(
                "higher LOCAL_PREF ({} > {})",
                self.local_pref, other.local_pref
            )
        } else if self.as_path_len != other.as_path_len {
            format!(
                "shorter AS path ({} < {})",
                self.as_path_len, other.as_path_len
            )
        } else if self.origin != other.origin {
            format!(
                "lower ORIGIN ({} < {})",
                self.origin.as_str(),
                other.origin.as_str()
            )
        } else if self.med != other.med {
            format!("lower MED ({} < {})", self.med, other.med)
        } else {
            "not stale (the other was kept through a router's graceful restart)".to_string()
        })
    }
}

impl Ord for Preference {
    fn cmp(&self, other: &Preference) -> Ordering {
        other
            .local_pref
            .cmp(&self.local_pref)
            .then(self.as_path_len.cmp(&other.as_path_len))
            .then(self.origin.cmp(&other.origin))
            .then(self.med.cmp(&other.med))
            .then(self.stale.cmp(&other.stale))
    }
}

impl PartialOrd for Preference {
    fn partial_cmp(&self, other: &Preference) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pref(local_pref: Option<u32>, path: usize, origin: Origin, med: Option<u32>) -> Preference {
        Preference::from_attributes(local_pref, path, origin, med, false)
    }

    #[test]
    fn the_decision_runs_in_the_rfcs_order() {
        use Origin::*;
        // LOCAL_PREF beats a shorter path.
        let a = pref(Some(200), 5, Incomplete, Some(900));
        let b = pref(None, 1, Igp, None);
        assert!(a < b);
        assert_eq!(a.why_better(&b).unwrap(), "higher LOCAL_PREF (200 > 100)");
        // Absent LOCAL_PREF is 100: equal to an explicit 100, below 101.
        assert_eq!(pref(None, 1, Igp, None), pref(Some(100), 1, Igp, None));
        assert!(pref(Some(101), 9, Igp, None) < pref(None, 1, Igp, None));
        // Shorter AS path beats origin and MED.
        let a = pref(None, 1, Incomplete, Some(500));
        let b = pref(None, 2, Igp, Some(0));
        assert!(a < b);
        assert_eq!(a.why_better(&b).unwrap(), "shorter AS path (1 < 2)");
        // Origin before MED (the RFC's order).
        let a = pref(None, 2, Igp, Some(100));
        let b = pref(None, 2, Egp, Some(0));
        assert!(a < b);
        assert_eq!(a.why_better(&b).unwrap(), "lower ORIGIN (igp < egp)");
        assert!(pref(None, 2, Egp, None) < pref(None, 2, Incomplete, None));
        // Then MED; an absent MED is 0, the lowest.
        let a = pref(None, 2, Igp, Some(10));
        let b = pref(None, 2, Igp, Some(50));
        assert_eq!(a.why_better(&b).unwrap(), "lower MED (10 < 50)");
        assert!(pref(None, 2, Igp, None) < a);
        // Then fresh before stale.
        let stale = Preference { stale: true, ..a };
        assert!(a < stale);
        assert!(a.why_better(&stale).unwrap().starts_with("not stale"));
        // Equal routes: neither is better, so the rendezvous hash decides.
        assert_eq!(a.why_better(&a), None);
        assert_eq!(b.why_better(&a), None);
        // A static prefix is a locally originated route: it beats any eBGP route of equal
        // LOCAL_PREF.
        assert!(Preference::LOCAL < pref(None, 1, Igp, None));
    }
}
