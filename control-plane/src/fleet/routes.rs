//! The fleet view's route table entries: what one appliance hears over BGP, kept small, and
//! who serves each prefix with which preference.

use oca_protocol::health::{BgpRoute, BgpSession, Origin};
use oca_protocol::prefix::Prefix;
use oca_protocol::steering::{MatchedRoute, RouteSource};

use crate::domain::routes::Preference;
use crate::lpm::PrefixTable;

/// A reported BGP route as the fleet view keeps it: what steering compares and `explain=1`
/// shows (a [`MatchedRoute`]). The AS path itself and the communities stay in storage (the route
/// explorer reads them there), which keeps a route within 64 bytes of memory.
pub fn heard_route(r: &BgpRoute) -> MatchedRoute {
    MatchedRoute {
        prefix: r.prefix,
        source: RouteSource::Bgp,
        neighbor: Some(r.neighbor),
        as_path_len: u32::try_from(r.as_path.len()).unwrap_or(u32::MAX),
        origin: r.origin,
        med: r.med,
        local_pref: r.local_pref,
        stale: r.stale,
    }
}

/// A locally originated route as `explain=1` shows it: a static prefix or a coverage zone.
pub fn local_route(prefix: Prefix, source: RouteSource) -> MatchedRoute {
    MatchedRoute {
        prefix,
        source,
        neighbor: None,
        as_path_len: 0,
        origin: Origin::Igp,
        med: None,
        local_pref: None,
        stale: false,
    }
}

/// What an appliance's BGP speaker last reported.
#[derive(Debug, Clone, Default)]
pub struct BgpHeard {
    /// Its sessions.
    pub sessions: Vec<BgpSession>,
    /// The routes kept (inside the site's allowed prefixes), sorted by (prefix, neighbour).
    pub routes: Vec<MatchedRoute>,
}

impl BgpHeard {
    /// The distinct prefixes heard, in order.
    pub fn prefixes(&self) -> impl Iterator<Item = Prefix> + '_ {
        let mut last = None;
        self.routes.iter().filter_map(move |r| {
            let new = last != Some(r.prefix);
            last = Some(r.prefix);
            new.then_some(r.prefix)
        })
    }

    /// The routes of one prefix (one per neighbour that sent it).
    pub fn routes_of(&self, prefix: &Prefix) -> &[MatchedRoute] {
        let start = self.routes.partition_point(|r| r.prefix < *prefix);
        let end = start + self.routes[start..].partition_point(|r| r.prefix == *prefix);
        &self.routes[start..end]
    }
}

/// Who serves one prefix: a value of the route table.
#[derive(Debug, Default)]
pub struct Served {
    /// Sites an admin coverage zone gives the prefix.
    pub zone_sites: Vec<String>,
    /// Appliances hearing it (statically or over BGP), each with the preference of its best
    /// route for it.
    pub heard: Vec<(usize, Preference)>,
}

impl Served {
    /// Whether nobody serves the prefix any more (the entry is then removed).
    pub fn is_empty(&self) -> bool {
        self.zone_sites.is_empty() && self.heard.is_empty()
    }

    /// The best preference any appliance hears the prefix with.
    pub fn best(&self) -> Option<Preference> {
        self.heard.iter().map(|(_, p)| *p).min()
    }
}

/// The entry of `prefix`, created empty when missing.
pub(super) fn served_mut(table: &mut PrefixTable<Served>, prefix: Prefix) -> &mut Served {
    if table.get(&prefix).is_none() {
        table.insert(prefix, Served::default());
    }
    table.get_mut(&prefix).expect("inserted above")
}

/// An appliance's best route per prefix, static or BGP, sorted by prefix: what the route table
/// holds for it.
pub(super) fn best_routes(statics: &[Prefix], bgp: Option<&BgpHeard>) -> Vec<(Prefix, Preference)> {
    let mut all: Vec<(Prefix, Preference)> = statics
        .iter()
        .map(|p| (*p, Preference::LOCAL))
        .chain(
            bgp.into_iter()
                .flat_map(|b| b.routes.iter().map(|r| (r.prefix, Preference::of(r)))),
        )
        .collect();
    all.sort_unstable();
    // Sorted by prefix then preference: the first of each prefix is its best.
    all.dedup_by_key(|(p, _)| *p);
    all
}
