//! What the fleet hears, for operators (docs/control-plane.md, "BGP"): each appliance's
//! sessions, the route explorer (who hears a prefix, with its attributes, and which route
//! steering prefers), and the sites whose appliances hear different prefixes. Read off the
//! fleet view, which is what steering acts on; the explorer adds the attributes the view does
//! not keep (AS path, communities) from storage's rows, passed in.

use std::collections::BTreeMap;

use oca_protocol::admin::{
    BgpAppliance, BgpRoutes, HeardRoute, HeardVia, InconsistentSite, PrefixSplit, SiteHearing,
};
use oca_protocol::health::BgpRoute;
use oca_protocol::prefix::Prefix;

use crate::domain::routes::Preference;
use crate::fleet::{heard_route, Candidate, Snapshot};

/// Most prefixes an inconsistent site lists (its total is given beside them).
pub const MAX_DIFFERING: usize = 100;

/// Whether an appliance reported within `stale_after` seconds of `now`: the appliances whose
/// BGP state counts.
pub fn fresh(a: &Candidate, now: i64, stale_after: i64) -> bool {
    a.status.is_some() && now - a.last_report <= stale_after
}

/// The BGP sessions of every appliance whose last report carried BGP (or of `oca_id` only),
/// by appliance id.
pub fn sessions(snap: &Snapshot, oca_id: Option<&str>) -> Vec<BgpAppliance> {
    let mut out: Vec<BgpAppliance> = (0..snap.len())
        .filter(|&i| oca_id.is_none_or(|id| snap.at(i).id == id))
        .filter_map(|i| {
            let bgp = snap.bgp(i)?;
            let a = snap.at(i);
            Some(BgpAppliance {
                oca_id: a.id.clone(),
                site: a.site.clone(),
                sessions: bgp.sessions.clone(),
                routes: bgp.routes.len() as u64,
                prefixes: bgp.prefixes().count() as u64,
                last_report: a.last_report,
            })
        })
        .collect();
    out.sort_by(|a, b| a.oca_id.cmp(&b.oca_id));
    out
}

/// The appliances hearing exactly `prefix` over BGP, by id.
pub fn hearing(snap: &Snapshot, prefix: &Prefix) -> Vec<String> {
    let mut ids: Vec<String> = snap
        .routes()
        .get(prefix)
        .into_iter()
        .flat_map(|s| s.heard.iter())
        .filter(|(i, _)| {
            snap.bgp(*i)
                .is_some_and(|b| !b.routes_of(prefix).is_empty())
        })
        .map(|(i, _)| snap.at(*i).id.clone())
        .collect();
    ids.sort();
    ids
}

/// The route explorer: the BGP routes storage found (`stored`, asked for with the same filter
/// and at most `limit + 1` rows) and the static prefixes of the view, of `prefix` and/or `oca_id`, each
/// marked best when steering prefers it for its prefix; by prefix, best first, then appliance
/// and neighbour; at most `limit`.
pub fn explore(
    snap: &Snapshot,
    stored: Vec<(String, BgpRoute)>,
    prefix: Option<&Prefix>,
    oca_id: Option<&str>,
    limit: usize,
) -> BgpRoutes {
    let best_of = |p: &Prefix| snap.routes().get(p).and_then(|s| s.best());
    let mut routes: Vec<HeardRoute> = stored
        .into_iter()
        .filter_map(|(oca, r)| {
            let site = snap.appliance(&oca)?.site.clone();
            let best = best_of(&r.prefix) == Some(Preference::of(&heard_route(&r)));
            Some(HeardRoute {
                oca_id: oca,
                site,
                best,
                via: HeardVia::Bgp(r),
            })
        })
        .collect();
    let static_route = |i: usize, p: Prefix| {
        let a = snap.at(i);
        HeardRoute {
            oca_id: a.id.clone(),
            site: a.site.clone(),
            best: best_of(&p) == Some(Preference::LOCAL),
            via: HeardVia::Static { prefix: p },
        }
    };
    let appliances: Vec<usize> = match (oca_id, prefix) {
        (Some(id), _) => snap.index_of(id).into_iter().collect(),
        (None, Some(p)) => snap
            .routes()
            .get(p)
            .map(|s| s.heard.iter().map(|(i, _)| *i).collect())
            .unwrap_or_default(),
        (None, None) => (0..snap.len()).collect(),
    };
    let mut statics = 0;
    'statics: for i in appliances {
        for p in snap.statics(i) {
            if prefix.is_some_and(|want| want != p) {
                continue;
            }
            // One past the limit is enough to know there are more.
            if statics > limit {
                break 'statics;
            }
            statics += 1;
            routes.push(static_route(i, *p));
        }
    }
    routes.sort_by(|a, b| {
        (a.prefix(), !a.best, &a.oca_id, a.neighbor()).cmp(&(
            b.prefix(),
            !b.best,
            &b.oca_id,
            b.neighbor(),
        ))
    });
    let more = routes.len() > limit;
    routes.truncate(limit);
    BgpRoutes { routes, more }
}

/// The fresh appliances of each site whose last report carried BGP, by site id, where there
/// are at least two to compare.
fn comparable(snap: &Snapshot, now: i64, stale_after: i64) -> BTreeMap<&str, Vec<usize>> {
    let mut out = BTreeMap::new();
    for site in snap.site_ids() {
        let members: Vec<usize> = snap
            .site_members(site)
            .iter()
            .copied()
            .filter(|&i| snap.bgp(i).is_some() && fresh(snap.at(i), now, stale_after))
            .collect();
        if members.len() >= 2 {
            out.insert(site, members);
        }
    }
    out
}

/// Whether the appliances `members` all hear the same prefixes.
fn same_prefixes(snap: &Snapshot, members: &[usize]) -> bool {
    let first = snap
        .bgp(members[0])
        .expect("comparable appliances report BGP");
    members[1..].iter().all(|&i| {
        let other = snap.bgp(i).expect("comparable appliances report BGP");
        first.prefixes().eq(other.prefixes())
    })
}

/// How many sites are inconsistent (cheap: no allocation per prefix, for the metrics).
pub fn inconsistent_count(snap: &Snapshot, now: i64, stale_after: i64) -> usize {
    comparable(snap, now, stale_after)
        .values()
        .filter(|members| !same_prefixes(snap, members))
        .count()
}

/// The sites whose fresh appliances hear different prefixes over BGP, by site id, each with the
/// prefixes only some of them hear. Appliances without BGP (static prefixes only) and silent
/// ones are left out: they hear nothing to compare.
pub fn inconsistent(snap: &Snapshot, now: i64, stale_after: i64) -> Vec<InconsistentSite> {
    let mut out = Vec::new();
    for (site, members) in comparable(snap, now, stale_after) {
        if same_prefixes(snap, &members) {
            continue;
        }
        let mut heard: BTreeMap<Prefix, Vec<usize>> = BTreeMap::new();
        for &i in &members {
            for p in snap.bgp(i).expect("comparable").prefixes() {
                heard.entry(p).or_default().push(i);
            }
        }
        let id = |i: &usize| snap.at(*i).id.clone();
        let split: Vec<(Prefix, Vec<usize>)> = heard
            .into_iter()
            .filter(|(_, by)| by.len() < members.len())
            .collect();
        let differing_total = split.len() as u64;
        let differing = split
            .into_iter()
            .take(MAX_DIFFERING)
            .map(|(prefix, by)| PrefixSplit {
                prefix,
                heard_by: by.iter().map(id).collect(),
                not_heard_by: members.iter().filter(|i| !by.contains(i)).map(id).collect(),
            })
            .collect();
        out.push(InconsistentSite {
            site: site.to_string(),
            appliances: members
                .iter()
                .map(|&i| SiteHearing {
                    oca_id: id(&i),
                    prefixes: snap.bgp(i).expect("comparable").prefixes().count() as u64,
                })
                .collect(),
            differing,
            differing_total,
        });
    }
    out
}
