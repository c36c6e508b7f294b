//! Steering (docs/architecture.md): from a client address and a content id to up to 10 ranked appliances.
//!
//! 1. Longest-prefix match of the client against the prefixes appliances report and the coverage
//!    zones → candidate sites: the matched (ISP) sites first, then their parent (tier) sites, then
//!    the rest of the region.
//! 2. Keep appliances that are fresh (reported within 3 intervals), not `error`, under the load
//!    threshold, and hold the content.
//! 3. Rank by proximity, then the rendezvous hash of (content id, appliance id) so one file's
//!    traffic lands on the same few appliances, then load headroom.
//! 4. Return up to 10; when the first picks all come from one site and another site qualifies, its
//!    best appliance takes the last place, so a player always has a second site to fail over to.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use oca_protocol::prefix::Prefix;
use oca_protocol::steering::{Explanation, SteerAnswer, Steered};

use crate::fleet::{Candidate, Snapshot};

/// Most appliances in one answer.
pub const MAX_ANSWER: usize = 10;

/// Where a client is: the proximity rank of every candidate site (0 the client's own sites, 1
/// their tier sites, 2 the rest of their regions). Computed once per client and shared by the
/// decisions for each rendition of a play.
pub struct Neighbourhood<'a> {
    snap: &'a Snapshot,
    rank: HashMap<&'a str, u8>,
    regions: Vec<&'a str>,
    matched: Option<Prefix>,
}

impl<'a> Neighbourhood<'a> {
    /// The neighbourhood of `client`: its matched sites, their tier sites and their regions.
    pub fn of(snap: &'a Snapshot, client: IpAddr) -> Neighbourhood<'a> {
        let mut rank: HashMap<&str, u8> = HashMap::new();
        let best = snap.routes().longest_match(client).map(|(p, _)| *p);
        // Only the most specific match decides the client's own sites; wider covering prefixes
        // (an IXP announcing a /8) rank those sites as tier neighbours instead.
        for (p, sites) in snap.routes().matches(client) {
            let r = if Some(*p) == best { 0 } else { 1 };
            for s in sites {
                let e = rank.entry(s.as_str()).or_insert(r);
                *e = (*e).min(r);
            }
        }
        let matched: Vec<&str> = rank
            .iter()
            .filter(|(_, r)| **r == 0)
            .map(|(s, _)| *s)
            .collect();
        let mut regions: Vec<&str> = matched
            .iter()
            .filter_map(|s| snap.site(s))
            .map(|(_, site)| site.region.as_str())
            .collect();
        regions.sort_unstable();
        regions.dedup();
        for s in &matched {
            if let Some(parent) = snap.site(s).and_then(|(_, site)| site.parent.as_deref()) {
                if let Some((id, _)) = snap.site(parent) {
                    let e = rank.entry(id).or_insert(1);
                    *e = (*e).min(1);
                }
            }
        }
        Neighbourhood {
            snap,
            rank,
            regions,
            matched: best,
        }
    }

    /// Proximity rank of `site`, none when it is not a candidate.
    fn rank_of(&self, site: &str) -> Option<u8> {
        if let Some(r) = self.rank.get(site) {
            return Some(*r);
        }
        let (_, site) = self.snap.site(site)?;
        self.regions.contains(&site.region.as_str()).then_some(2)
    }

    /// Every candidate site's appliances, with their rank.
    fn candidates(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        let ranked = self.rank.iter().map(|(s, r)| (*s, *r));
        let regional = self
            .regions
            .iter()
            .flat_map(|reg| self.snap.region_sites(reg))
            .filter(|s| !self.rank.contains_key(s.as_str()))
            .map(|s| (s.as_str(), 2));
        ranked
            .chain(regional)
            .flat_map(|(site, prox)| self.snap.site_members(site).iter().map(move |&i| (i, prox)))
    }

    /// About how many appliances the candidate sites have (at most twice the count: a tier site
    /// in the same region counts twice), the cost of walking them.
    fn candidate_estimate(&self) -> usize {
        let ranked: usize = self
            .rank
            .keys()
            .map(|s| self.snap.site_members(s).len())
            .sum();
        let regional: usize = self.regions.iter().map(|r| self.snap.region_size(r)).sum();
        ranked + regional
    }
}

/// Times `n` in-process steering decisions for random clients (inside reported prefixes) and
/// random held content; returns (p50, p99, max) in microseconds. Used by `--bench-steer`.
pub fn bench(snap: &Snapshot, n: usize, report_interval_secs: u64) -> Option<(f64, f64, f64)> {
    // As of the newest report, so the fleet is as fresh as when it was recorded.
    let now = snap.newest_report()?;
    let prefixes: Vec<Prefix> = snap.reported_prefixes().copied().collect();
    let contents: Vec<&String> = snap.held_content().collect();
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
    let matched = near.matched;
    let holders = snap.holders(content_id);
    let mut kept: Vec<(u8, u64, f64, &Candidate)> = Vec::new();
    let mut notes = Vec::new();
    let stale_after = 3 * report_interval_secs as i64;
    // Without an explanation to give, only the holders need a look when they are fewer than the
    // neighbourhood's appliances (a file sits on a few sites; a region has hundreds of
    // appliances). Both walks keep the same appliances.
    let holder_count = holders.map_or(0, HashSet::len);
    let walk: Box<dyn Iterator<Item = (usize, u8)> + '_> =
        if !explain && holder_count < near.candidate_estimate() {
            Box::new(
                holders
                    .into_iter()
                    .flatten()
                    .filter_map(|&i| near.rank_of(&snap.at(i).site).map(|r| (i, r))),
            )
        } else {
            Box::new(near.candidates())
        };
    for (i, prox) in walk {
        let a = snap.at(i);
        let reason = a.drop_reason(holders.is_some_and(|h| h.contains(&i)), now, stale_after);
        if let Some(reason) = reason {
            if explain {
                notes.push(Explanation {
                    oca_id: a.id.clone(),
                    site: a.site.clone(),
                    kept: false,
                    reason: reason.into(),
                });
            }
            continue;
        }
        let headroom = 1.0 - a.load();
        kept.push((
            prox,
            oca_store::placement::score(&a.id, content_id),
            headroom,
            a,
        ));
    }
    // The id breaks the last ties, so both walks give the same order.
    kept.sort_unstable_by(|x, y| {
        x.0.cmp(&y.0)
            .then(y.1.cmp(&x.1))
            .then(y.2.total_cmp(&x.2))
            .then(x.3.id.cmp(&y.3.id))
    });
    let mut picked: Vec<&(u8, u64, f64, &Candidate)> = kept.iter().take(MAX_ANSWER).collect();
    if picked.len() == MAX_ANSWER && picked.iter().all(|k| k.3.site == picked[0].3.site) {
        if let Some(other) = kept.iter().find(|k| k.3.site != picked[0].3.site) {
            picked[MAX_ANSWER - 1] = other;
        }
    }
    let appliances: Vec<Steered> = picked
        .iter()
        .map(|k| Steered {
            oca_id: k.3.id.clone(),
            site: k.3.site.clone(),
            url: k.3.url.clone(),
        })
        .collect();
    if explain {
        for (n, k) in kept.iter().enumerate() {
            let chosen = picked.iter().any(|p| std::ptr::eq(p.3, k.3));
            let proximity = ["client's site", "tier site", "same region"][k.0 as usize];
            let reason = match (chosen, matched) {
                (true, Some(m)) => {
                    format!("kept: {proximity} (client matched {m}), rank {}", n + 1)
                }
                (true, None) => format!("kept: {proximity}, rank {}", n + 1),
                (false, _) => format!("eligible but beyond the first {MAX_ANSWER}"),
            };
            notes.push(Explanation {
                oca_id: k.3.id.clone(),
                site: k.3.site.clone(),
                kept: chosen,
                reason,
            });
        }
    }
    let any_holder = holders.is_some_and(|h| !h.is_empty());
    Decision {
        content_miss: !any_holder,
        health_miss: any_holder && appliances.is_empty(),
        answer: SteerAnswer {
            client_ip: client,
            content_id: content_id.to_string(),
            appliances,
            explain: notes,
        },
    }
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
                let report: HealthReport = serde_json::from_value(serde_json::json!({
                    "oca_id": id, "site": site.id, "version": "t", "status": status,
                    "serving": {"active_connections": 0, "bytes_per_sec": rnd(130_000),
                                "requests_per_sec": 0, "capacity_bps": 1_000_000},
                    "disks": [], "prefixes": [format!("10.{s}.{}.0/24", rnd(2)), format!("10.{}.0.0/16", s - s % 5)],
                    "inventory": {"kind": "full", "seq": 1, "content": content}
                }))
                .unwrap();
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
            let snap = Snapshot::load(&db).unwrap();
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
