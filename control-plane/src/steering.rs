//! Steering (docs/architecture.md): from a client address and a content id to up to 10 ranked appliances.
//!
//! 1. Longest-prefix match of the client against the routes appliances hear (over BGP, or
//!    configured: static prefixes are locally originated routes) and the coverage zones → where
//!    each candidate stands ([`Place`]): appliances hearing the longest match, and the sites of a
//!    zone on it, are the client's own (proximity 0); appliances hearing or zone sites of a wider
//!    covering prefix, and the parent (tier) sites of the client's sites, are 1; the IXP sites
//!    of the client's regions, 2. An ISP site's appliances are candidates only by route, zone or
//!    tier, never by region: like Open Connect's embedded appliances they serve only the clients
//!    their ISP announces to them (docs/bgp.md).
//! 2. Keep appliances that are fresh (reported within 3 intervals), not `error`, under the load
//!    threshold, not in a maintenance window, and hold the content; and that the live checks do
//!    not keep out (unreachable from the control plane, not qualified:
//!    [`crate::fleet::Snapshot::gate`]).
//! 3. Rank by proximity, then, among the client's own, by route as BGP's decision process
//!    would ([`crate::domain::routes`]: LOCAL_PREF, AS path length, ORIGIN, MED), then the
//!    rendezvous hash of (content id, appliance id) so one file's traffic lands on the same few
//!    appliances, then load headroom.
//! 4. Return up to 10; when the first picks all come from one site and another site qualifies, its
//!    best appliance takes the last place, so a player always has a second site to fail over to.
//!
//! An appliance is the client's own only while it hears the route: once a report withdraws it,
//! the appliance ranks by what else it hears or where its site stands, like any other; an ISP
//! appliance that hears nothing covering the client is no candidate at all.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;

use oca_protocol::prefix::Prefix;
use oca_protocol::steering::{Explanation, MatchedRoute, RouteSource, SteerAnswer, Steered};

use crate::domain::maintenance;
use crate::domain::routes::Preference;
use crate::fleet::{local_route, Candidate, Snapshot};

/// Most appliances in one answer.
pub const MAX_ANSWER: usize = 10;

/// Why a candidate is where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// It hears this route covering the client.
    Route(Prefix),
    /// A coverage zone on this prefix names its site.
    Zone(Prefix),
    /// Its site is the tier site of one of the client's sites.
    Tier,
    /// Its site is an IXP site in one of the client's regions.
    Region,
}

/// Where a candidate stands for a client: ordered best first by (proximity, route preference).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// 0 the client's own, 1 tier, 2 an IXP site of the client's region.
    pub prox: u8,
    /// Its route's preference among the client's own; [`Preference::LOCAL`] for every other
    /// place, so routes order only the appliances hearing the client's longest match.
    pub pref: Preference,
    /// Why.
    pub why: Why,
}

impl Place {
    fn key(&self) -> (u8, Preference) {
        (self.prox, self.pref)
    }
}

/// Where a client is: the place of every candidate appliance. Computed once per client and
/// shared by the decisions for each rendition of a play.
pub struct Neighbourhood<'a> {
    snap: &'a Snapshot,
    /// Appliances hearing a route covering the client, with the best place it gives them.
    heard: HashMap<usize, Place>,
    /// Sites placed whole: zone sites (0 or 1) and tier sites of the client's sites (1).
    sites: HashMap<&'a str, Place>,
    regions: Vec<&'a str>,
    /// `sites` by site number ([`Snapshot::site_no`]), which [`Neighbourhood::place_of`] compares
    /// without hashing a site id.
    placed: Vec<(u32, Place)>,
    /// The site numbers of the IXP sites of `regions`: one run per region.
    region_runs: Vec<Range<u32>>,
    /// Every site whose appliances may be candidates, as sorted, disjoint runs of site numbers:
    /// where a file's holders are looked up.
    runs: Vec<Range<u32>>,
    /// The client's own site (the first by id when several hear its route): misses count there.
    own_site: Option<&'a str>,
}

impl<'a> Neighbourhood<'a> {
    /// The neighbourhood of `client`: who hears its routes, its zone sites, their tier sites
    /// and their regions.
    pub fn of(snap: &'a Snapshot, client: IpAddr) -> Neighbourhood<'a> {
        let matches: Vec<_> = snap.routes().matches(client).collect();
        let best = matches.last().map(|(p, _)| **p);
        let mut heard: HashMap<usize, Place> = HashMap::new();
        let mut sites: HashMap<&str, Place> = HashMap::new();
        // Shortest first: a longer covering prefix replaces a shorter one at the same place, so
        // an explanation names the most specific route each appliance hears.
        for (p, served) in &matches {
            // Only the most specific match decides the client's own; wider covering prefixes (an
            // IXP announcing a /8) rank as tier neighbours instead.
            let own = Some(**p) == best;
            for &(i, pref) in &served.heard {
                let place = Place {
                    prox: if own { 0 } else { 1 },
                    pref: if own { pref } else { Preference::LOCAL },
                    why: Why::Route(**p),
                };
                better(heard.entry(i).or_insert(place), place);
            }
            for site in &served.zone_sites {
                let place = Place {
                    prox: if own { 0 } else { 1 },
                    pref: Preference::LOCAL,
                    why: Why::Zone(**p),
                };
                better(sites.entry(site.as_str()).or_insert(place), place);
            }
        }
        let mut own: Vec<&str> = heard
            .iter()
            .filter(|(_, place)| place.prox == 0)
            .map(|(&i, _)| snap.at(i).site.as_str())
            .chain(
                sites
                    .iter()
                    .filter(|(_, place)| place.prox == 0)
                    .map(|(s, _)| *s),
            )
            .collect();
        own.sort_unstable();
        own.dedup();
        let mut regions: Vec<&str> = own
            .iter()
            .filter_map(|s| snap.site(s))
            .map(|(_, site)| site.region.as_str())
            .collect();
        regions.sort_unstable();
        regions.dedup();
        for s in &own {
            if let Some(parent) = snap.site(s).and_then(|(_, site)| site.parent.as_deref()) {
                if let Some((id, _)) = snap.site(parent) {
                    let place = Place {
                        prox: 1,
                        pref: Preference::LOCAL,
                        why: Why::Tier,
                    };
                    better(sites.entry(id).or_insert(place), place);
                }
            }
        }
        let placed: Vec<(u32, Place)> = sites
            .iter()
            .filter_map(|(s, place)| snap.site_number(s).map(|n| (n, *place)))
            .collect();
        let region_runs: Vec<Range<u32>> = regions
            .iter()
            .map(|r| snap.region_fallback_numbers(r))
            .filter(|r| !r.is_empty())
            .collect();
        let runs = disjoint(
            heard
                .keys()
                .map(|&i| snap.site_no(i))
                .chain(placed.iter().map(|(n, _)| *n))
                .map(|n| n..n + 1)
                .chain(region_runs.iter().cloned())
                .collect(),
        );
        Neighbourhood {
            snap,
            heard,
            sites,
            regions,
            placed,
            region_runs,
            runs,
            own_site: own.first().copied(),
        }
    }

    /// The place of the appliance at index `i`, none when it is not a candidate: the best of
    /// what it hears, where its site stands and its region.
    pub fn place_of(&self, i: usize) -> Option<Place> {
        let site = self.snap.site_no(i);
        let mut place = self.heard.get(&i).copied();
        for candidate in [
            self.placed
                .iter()
                .find(|(n, _)| *n == site)
                .map(|(_, place)| *place),
            // The region runs hold only IXP sites: ISP sites are never candidates by region.
            self.region_runs
                .iter()
                .any(|r| r.contains(&site))
                .then_some(Place {
                    prox: 2,
                    pref: Preference::LOCAL,
                    why: Why::Region,
                }),
        ]
        .into_iter()
        .flatten()
        {
            match &mut place {
                Some(p) if candidate.key() < p.key() => *p = candidate,
                Some(_) => {}
                None => place = Some(candidate),
            }
        }
        place
    }

    /// The sites whose appliances may be candidates, each once.
    fn candidate_sites(&self) -> Vec<&str> {
        let mut sites: Vec<&str> = self
            .heard
            .keys()
            .map(|&i| self.snap.at(i).site.as_str())
            .chain(self.sites.keys().copied())
            .chain(
                self.regions
                    .iter()
                    .flat_map(|r| self.snap.region_fallback_sites(r))
                    .map(String::as_str),
            )
            .collect();
        sites.sort_unstable();
        sites.dedup();
        sites
    }

    /// Every candidate appliance with its place.
    fn candidates(&self) -> impl Iterator<Item = (usize, Place)> + '_ {
        self.candidate_sites()
            .into_iter()
            .flat_map(|s| self.snap.site_members(s).iter())
            .filter_map(|&i| self.place_of(i).map(|p| (i, p)))
    }

    /// The candidates among `holders` (a [`Snapshot::holders`] list) with their places: only
    /// the holders at the neighbourhood's sites are looked at, found by binary search, so the
    /// cost follows the holders near the client, not all the file's holders in the fleet.
    fn holders_near<'h>(&'h self, holders: &'h [u32]) -> impl Iterator<Item = (usize, Place)> + 'h {
        self.runs
            .iter()
            .flat_map(move |sites| self.snap.holders_at(holders, sites))
            .filter_map(|&i| {
                let i = i as usize;
                self.place_of(i).map(|p| (i, p))
            })
    }

    /// The route `explain=1` shows for a candidate at `place`.
    fn route(&self, i: usize, place: &Place) -> Option<MatchedRoute> {
        match place.why {
            Why::Route(p) => self.snap.route_of(i, &p),
            Why::Zone(p) => Some(local_route(p, RouteSource::Zone)),
            Why::Tier | Why::Region => None,
        }
    }
}

/// `runs` sorted and merged: disjoint, none adjacent to the next.
fn disjoint(mut runs: Vec<Range<u32>>) -> Vec<Range<u32>> {
    runs.sort_unstable_by_key(|r| (r.start, r.end));
    let mut out: Vec<Range<u32>> = Vec::with_capacity(runs.len());
    for r in runs {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Keeps the better of two places in `at` (the later on a tie: see [`Neighbourhood::of`]).
fn better(at: &mut Place, candidate: Place) {
    if candidate.key() <= at.key() {
        *at = candidate;
    }
}

/// Times `n` in-process steering decisions for random clients (inside reported prefixes) and
/// random held content; returns (p50, p99, max) in microseconds. Used by `--bench-steer`.
pub fn bench(snap: &Snapshot, n: usize, report_interval_secs: u64) -> Option<(f64, f64, f64)> {
    // As of the newest report, so the fleet is as fresh as when it was recorded.
    let now = snap.newest_report()?;
    let prefixes: Vec<Prefix> = snap.served_prefixes().copied().collect();
    let contents: Vec<&str> = snap.held_content().collect();
    if prefixes.is_empty() || contents.is_empty() || n == 0 {
        return None;
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let p = prefixes[(rnd() % prefixes.len() as u64) as usize];
        let host = rnd();
        let ip = match p.addr() {
            IpAddr::V4(a) => {
                let free = 32 - u32::from(p.bits());
                let mask = if free == 0 {
                    0
                } else {
                    u32::MAX >> (32 - free)
                };
                IpAddr::V4((u32::from(a) | (host as u32 & mask)).into())
            }
            IpAddr::V6(a) => {
                let free = 128 - u32::from(p.bits());
                let mask = if free == 0 {
                    0
                } else {
                    u128::MAX >> (128 - free)
                };
                IpAddr::V6((u128::from(a) | (u128::from(host) & mask)).into())
            }
        };
        let content = contents[(rnd() % contents.len() as u64) as usize];
        let t = std::time::Instant::now();
        let d = steer(report_interval_secs, snap, ip, content, now, false);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        std::hint::black_box(d);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Some((at(0.5), at(0.99), times[times.len() - 1]))
}

/// The outcome of one steering decision.
pub struct Decision {
    /// The answer.
    pub answer: SteerAnswer,
    /// No appliance holds the content at all.
    pub content_miss: bool,
    /// Some appliances hold it, none is usable.
    pub health_miss: bool,
    /// On a miss, the client's own site as steering found it (none: the client has no site);
    /// none otherwise, as nothing else needs it.
    pub client_site: Option<String>,
}

/// Steers `client` to appliances holding `content_id`.
pub fn steer(
    report_interval_secs: u64,
    snap: &Snapshot,
    client: IpAddr,
    content_id: &str,
    now: i64,
    explain: bool,
) -> Decision {
    let near = Neighbourhood::of(snap, client);
    steer_near(
        report_interval_secs,
        &near,
        client,
        content_id,
        now,
        explain,
    )
}

/// An eligible appliance with what ranks it.
struct Ranked<'a> {
    place: Place,
    score: u64,
    headroom: f64,
    index: usize,
    a: &'a Candidate,
}

impl Ranked<'_> {
    /// Best first; the id breaks the last ties, so both walks give the same order.
    fn order(&self, other: &Ranked<'_>) -> std::cmp::Ordering {
        self.place
            .key()
            .cmp(&other.place.key())
            .then(other.score.cmp(&self.score))
            .then(other.headroom.total_cmp(&self.headroom))
            .then(self.a.id.cmp(&other.a.id))
    }
}

/// Steers a client whose neighbourhood is known to appliances holding `content_id`.
pub fn steer_near(
    report_interval_secs: u64,
    near: &Neighbourhood<'_>,
    client: IpAddr,
    content_id: &str,
    now: i64,
    explain: bool,
) -> Decision {
    let snap = near.snap;
    let holders = snap.holders(content_id);
    let mut kept: Vec<Ranked<'_>> = Vec::new();
    let mut notes = Vec::new();
    let stale_after = crate::fleet::stale_after(report_interval_secs);
    // Without an explanation to give, only the file's holders at the neighbourhood's sites need
    // a look (a file sits on a few sites; a region has hundreds of appliances); an explanation
    // gives every candidate's reason. Both walks keep the same appliances.
    let walk: Box<dyn Iterator<Item = (usize, Place)> + '_> = if explain {
        Box::new(near.candidates())
    } else {
        Box::new(near.holders_near(holders))
    };
    for (i, place) in walk {
        let a = snap.at(i);
        // The holder walk yields only holders.
        let holds = !explain || snap.holds_at(holders, i);
        let reason = a.drop_reason(holds, now, stale_after);
        // Plays in flight are not touched: only new answers leave a disabled appliance out.
        let reason = reason.map(Cow::Borrowed).or_else(|| {
            snap.maintenance(a, now)
                .map(|w| Cow::Owned(maintenance::note(w)))
        });
        // The live checks' verdict (unreachable, not qualified) first: it is why a holder is out.
        let reason = snap.gate(i).map(Cow::Borrowed).or(reason);
        if let Some(reason) = reason {
            if explain {
                notes.push(Explanation {
                    oca_id: a.id.clone(),
                    site: a.site.clone(),
                    kept: false,
                    reason: reason.into(),
                    route: near.route(i, &place),
                });
            }
            continue;
        }
        kept.push(Ranked {
            place,
            score: oca_store::placement::score(&a.id, content_id),
            headroom: 1.0 - a.load(),
            index: i,
            a,
        });
    }
    kept.sort_unstable_by(Ranked::order);
    let mut picked: Vec<usize> = (0..kept.len().min(MAX_ANSWER)).collect();
    let mut second_site = None;
    if picked.len() == MAX_ANSWER && picked.iter().all(|&k| kept[k].a.site == kept[0].a.site) {
        if let Some(other) = kept.iter().position(|k| k.a.site != kept[0].a.site) {
            picked[MAX_ANSWER - 1] = other;
            second_site = Some(other);
        }
    }
    let appliances: Vec<Steered> = picked
        .iter()
        .map(|&k| Steered {
            oca_id: kept[k].a.id.clone(),
            site: kept[k].a.site.clone(),
            url: kept[k].a.url.clone(),
        })
        .collect();
    if explain {
        for (n, k) in kept.iter().enumerate() {
            let rank = picked.iter().position(|&p| p == n);
            let reason = match rank {
                Some(r) => {
                    let before = r.checked_sub(1).map(|b| &kept[picked[b]]);
                    let why = if second_site == Some(n) {
                        format!(
                            "the best of another site than {}, so the player has a second \
                             site to fail over to",
                            kept[0].a.site
                        )
                    } else {
                        ranked_after(before, k)
                    };
                    format!("kept: {}, rank {}: {why}", standing(&k.place), r + 1)
                }
                None => format!(
                    "eligible ({}) but beyond the first {MAX_ANSWER}",
                    standing(&k.place)
                ),
            };
            notes.push(Explanation {
                oca_id: k.a.id.clone(),
                site: k.a.site.clone(),
                kept: rank.is_some(),
                reason,
                route: near.route(k.index, &k.place),
            });
        }
    }
    let any_holder = !holders.is_empty();
    let missed = !any_holder || appliances.is_empty();
    Decision {
        content_miss: !any_holder,
        health_miss: any_holder && appliances.is_empty(),
        client_site: near.own_site.filter(|_| missed).map(str::to_string),
        answer: SteerAnswer {
            client_ip: client,
            content_id: content_id.to_string(),
            appliances,
            explain: notes,
        },
    }
}

/// Where a candidate stands, in words.
fn standing(place: &Place) -> String {
    match (place.prox, place.why) {
        (0, Why::Route(p)) => format!("client's site: hears the client's route {p}"),
        (0, Why::Zone(p)) => format!("client's site: coverage zone {p}"),
        (_, Why::Route(p)) => format!("tier site: hears the covering route {p}"),
        (_, Why::Zone(p)) => format!("tier site: covering coverage zone {p}"),
        (_, Why::Tier) => "tier site of the client's site".to_string(),
        (_, Why::Region) => "same region".to_string(),
    }
}

/// Why `k` ranks right after `before` (none: it ranks first).
fn ranked_after(before: Option<&Ranked<'_>>, k: &Ranked<'_>) -> String {
    let Some(b) = before else {
        return "first".to_string();
    };
    let prox = ["client's site", "tier site", "same region"];
    if b.place.prox != k.place.prox {
        return format!(
            "after {}, nearer ({} before {})",
            b.a.id, prox[b.place.prox as usize], prox[k.place.prox as usize]
        );
    }
    if let Some(why) = b.place.pref.why_better(&k.place.pref) {
        return format!("after {}, whose route is better: {why}", b.a.id);
    }
    let same = if k.place.prox == 0 {
        "an equal route, "
    } else {
        ""
    };
    if b.score != k.score {
        return format!(
            "after {}: {same}the rendezvous hash of (content, appliance) puts it first",
            b.a.id
        );
    }
    format!("after {}: {same}it has more load headroom", b.a.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::{Appliance, FleetStore, InventoryStore, Site, SiteKind};
    use oca_protocol::health::HealthReport;

    /// A random fleet in a real SQLite file: 60 sites in 3 regions (every fifth an IXP parent),
    /// 1-4 appliances each with random health, load and holdings.
    fn random_fleet(db: &SqliteStorage, seed: u64) -> i64 {
        let mut x = seed | 1;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let now = 1_000_000;
        for s in 0..60u64 {
            let parent = (s % 5 != 0).then(|| format!("s{}", s - s % 5));
            let site = Site {
                id: format!("s{s}"),
                kind: if parent.is_some() {
                    SiteKind::Isp
                } else {
                    SiteKind::Ixp
                },
                region: format!("r{}", (s - s % 5) % 3),
                parent,
                allowed_prefixes: Vec::new(),
                org: None,
            };
            db.create_site(&site).unwrap();
            for k in 0..=rnd(4) {
                let id = format!("a{s}-{k}");
                let a = Appliance {
                    id: id.clone(),
                    site: site.id.clone(),
                    url: format!("http://{id}"),
                    capacity_bps: 1_000_000,
                };
                db.create_appliance(&a, &[0; 32], now).unwrap();
                let status = ["ok", "ok", "ok", "warning", "error"][rnd(5) as usize];
                let content: Vec<String> = (0..rnd(20)).map(|_| format!("c{}", rnd(40))).collect();
                let mut report = serde_json::json!({
                    "oca_id": id, "site": site.id, "version": "t", "status": status,
                    "serving": {"active_connections": 0, "bytes_per_sec": rnd(130_000),
                                "requests_per_sec": 0, "capacity_bps": 1_000_000},
                    "disks": [], "prefixes": [format!("10.{s}.{}.0/24", rnd(2)), format!("10.{}.0.0/16", s - s % 5)],
                    "inventory": {"kind": "full", "seq": 1, "content": content}
                });
                // Half the appliances also hear routes over BGP, with random attributes, some
                // more specific than the static ones.
                if rnd(2) == 0 {
                    let routes: Vec<serde_json::Value> = (0..rnd(4))
                        .map(|n| {
                            serde_json::json!({
                                "prefix": format!("10.{s}.{}.0/{}", rnd(2), [24, 25][rnd(2) as usize]),
                                "neighbor": format!("192.0.2.{n}"),
                                "as_path": vec![64500u32; rnd(4) as usize],
                                "origin": (["igp", "egp", "incomplete"][rnd(3) as usize]),
                                "med": ([None, Some(0u32), Some(10)][rnd(3) as usize]),
                                "local_pref": ([None, Some(100u32), Some(200)][rnd(3) as usize]),
                            })
                        })
                        .collect();
                    report["bgp"] = serde_json::json!({"sessions": [], "routes": routes});
                }
                let report: HealthReport = serde_json::from_value(report).unwrap();
                let stale = rnd(6) == 0;
                db.record_report(&report, if stale { now - 100 } else { now })
                    .unwrap();
            }
        }
        now
    }

    #[test]
    fn the_holder_walk_and_the_neighbourhood_walk_agree() {
        for seed in 1..=8u64 {
            let dir = tempfile::tempdir().unwrap();
            let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
            let now = random_fleet(&db, seed * 7919);
            let snap = Snapshot::load(&db, now).unwrap();
            let mut answered = 0;
            for s in 0..60u8 {
                for h in [1u8, 200] {
                    let client: IpAddr = format!("10.{s}.{}.{h}", h % 2).parse().unwrap();
                    for c in 0..40 {
                        let content = format!("c{c}");
                        let fast = steer(10, &snap, client, &content, now, false);
                        let full = steer(10, &snap, client, &content, now, true);
                        assert_eq!(
                            fast.answer.appliances, full.answer.appliances,
                            "seed {seed} client {client} {content}"
                        );
                        assert_eq!(fast.content_miss, full.content_miss);
                        assert_eq!(fast.health_miss, full.health_miss);
                        answered += usize::from(!fast.answer.appliances.is_empty());
                    }
                }
            }
            assert!(answered > 500, "the fleet steers somewhere: {answered}");
        }
    }
}
