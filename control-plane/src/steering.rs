//! Steering (DESIGN.md): from a client address and a content id to up to 10 ranked appliances.
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

use oca_protocol::health::{HealthReport, Inventory};
use oca_protocol::prefix::Prefix;
use oca_protocol::steering::{Explanation, SteerAnswer, Steered};

use crate::db::{Db, DbError};
use crate::lpm::PrefixTable;

/// Most appliances in one answer.
pub const MAX_ANSWER: usize = 10;

/// An appliance is skipped above this share of its capacity.
pub const LOAD_THRESHOLD: f64 = 0.9;

/// What steering knows about one appliance.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Appliance id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Public base URL.
    pub url: String,
    /// Configured capacity, bits per second.
    pub capacity_bps: u64,
    /// Last reported status (`ok|warning|error`), none before its first report.
    pub status: Option<String>,
    /// Unix seconds of the last report, with the control plane's own downtime not counted
    /// ([`crate::db::Downtime`]).
    pub last_report: i64,
    /// Last reported bytes per second.
    pub bytes_per_sec: u64,
    /// Storage on its working disks, from its last report (what the fill planner may use).
    pub storage_bytes: u64,
}

/// Storage on the disks a report lists as usable (not failed).
pub fn usable_storage(disks: &[oca_protocol::health::DiskReport]) -> u64 {
    disks
        .iter()
        .filter(|d| d.state != oca_protocol::health::DiskState::Failed)
        .map(|d| d.capacity_bytes)
        .sum()
}

/// Everything steering needs, in memory: read from the database at start (and after admin
/// changes), then kept current by the health intake.
pub struct Snapshot {
    appliances: Vec<Candidate>,
    sites: HashMap<String, (Option<String>, String)>,
    prefixes: PrefixTable<Vec<String>>,
    holders: Holders,
    index: HashMap<String, usize>,
    /// Prefixes each appliance reported, by appliance index.
    reported: Vec<Vec<Prefix>>,
    /// Coverage zones with a site.
    zones: Vec<(Prefix, String)>,
    /// Content each appliance holds, by appliance index.
    held: Vec<HashSet<String>>,
    /// Coverage zones with a country.
    countries: PrefixTable<String>,
    /// Appliance indices by site.
    by_site: HashMap<String, Vec<usize>>,
    /// Site ids by region.
    by_region: HashMap<String, Vec<String>>,
    /// Appliance count by region.
    region_appliances: HashMap<String, usize>,
}

impl Snapshot {
    /// Reads sites, appliances, health, prefixes, zones and inventories.
    pub fn load(db: &Db) -> Result<Snapshot, DbError> {
        let conn = db.reader();
        let mut sites = HashMap::new();
        let mut stmt = conn.prepare("SELECT id, parent, region FROM sites")?;
        for row in stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
            ))
        })? {
            let (id, parent, region) = row?;
            sites.insert(id, (parent, region));
        }
        let mut stmt = conn.prepare(
            "SELECT a.id, a.site, a.url, a.capacity_bps, h.status, COALESCE(h.last_report, 0), COALESCE(h.bytes_per_sec, 0),
                    COALESCE(h.disks_json, '[]')
             FROM appliances a LEFT JOIN appliance_health h ON h.oca_id = a.id ORDER BY a.id",
        )?;
        let appliances: Vec<Candidate> = stmt
            .query_map([], |r| {
                Ok(Candidate {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    url: r.get(2)?,
                    capacity_bps: r.get::<_, i64>(3)? as u64,
                    status: r.get(4)?,
                    last_report: db.downtime().heard(r.get(5)?),
                    bytes_per_sec: r.get::<_, i64>(6)? as u64,
                    storage_bytes: usable_storage(
                        &serde_json::from_str::<Vec<oca_protocol::health::DiskReport>>(
                            &r.get::<_, String>(7)?,
                        )
                        .unwrap_or_default(),
                    ),
                })
            })?
            .collect::<Result<_, _>>()?;
        let index: HashMap<String, usize> = appliances
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let mut reported: Vec<Vec<Prefix>> = vec![Vec::new(); appliances.len()];
        let mut stmt = conn.prepare("SELECT oca_id, prefix FROM appliance_prefixes")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (oca, p) = row?;
            if let (Some(&i), Ok(prefix)) = (index.get(&oca), p.parse::<Prefix>()) {
                reported[i].push(prefix);
            }
        }
        let mut countries = PrefixTable::default();
        let mut stmt =
            conn.prepare("SELECT prefix, country FROM coverage_zones WHERE country IS NOT NULL")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (p, country) = row?;
            if let Ok(prefix) = p.parse::<Prefix>() {
                countries.insert(prefix, country);
            }
        }
        let mut zones = Vec::new();
        let mut stmt =
            conn.prepare("SELECT prefix, site FROM coverage_zones WHERE site IS NOT NULL")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (p, site) = row?;
            if let Ok(prefix) = p.parse::<Prefix>() {
                zones.push((prefix, site));
            }
        }
        let mut holders = Holders::default();
        let mut held: Vec<HashSet<String>> = vec![HashSet::new(); appliances.len()];
        let mut stmt = conn.prepare(
            // CROSS JOIN keeps appliances the outer loop, so each one's current generation is
            // a range of the key and generations being written are never scanned.
            "SELECT i.content_id, a.id FROM appliances a
             CROSS JOIN inventory i ON i.oca_id = a.id AND i.gen = a.inventory_gen",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (content, oca) = row?;
            if let Some(&i) = index.get(&oca) {
                holders.insert(&content, i);
                held[i].insert(content);
            }
        }
        let mut snap = Snapshot {
            appliances,
            sites,
            prefixes: PrefixTable::default(),
            holders,
            index,
            reported,
            zones,
            held,
            countries,
            by_site: HashMap::new(),
            by_region: HashMap::new(),
            region_appliances: HashMap::new(),
        };
        for (i, a) in snap.appliances.iter().enumerate() {
            snap.by_site.entry(a.site.clone()).or_default().push(i);
        }
        for (id, (_, region)) in &snap.sites {
            snap.by_region
                .entry(region.clone())
                .or_default()
                .push(id.clone());
            *snap.region_appliances.entry(region.clone()).or_default() +=
                snap.by_site.get(id).map_or(0, Vec::len);
        }
        snap.rebuild_prefixes();
        Ok(snap)
    }

    /// An appliance by id.
    pub fn appliance(&self, id: &str) -> Option<&Candidate> {
        self.index.get(id).map(|&i| &self.appliances[i])
    }

    /// The appliances of a site.
    pub fn site_appliances(&self, site: &str) -> Vec<&Candidate> {
        self.by_site
            .get(site)
            .into_iter()
            .flatten()
            .map(|&i| &self.appliances[i])
            .collect()
    }

    /// The tier site a site fills from.
    pub fn parent(&self, site: &str) -> Option<&str> {
        self.sites.get(site)?.0.as_deref()
    }

    /// Whether `appliance` holds `content`, as last reported.
    pub fn holds(&self, appliance: &str, content: &str) -> bool {
        let (Some(&i), Some(h)) = (self.index.get(appliance), self.holders.get(content)) else {
            return false;
        };
        h.contains(&i)
    }

    /// Whether an appliance may serve (fresh, not `error`, under its load threshold).
    pub fn serving(&self, a: &Candidate, now: i64, report_interval_secs: u64) -> bool {
        drop_reason(a, true, now, 3 * report_interval_secs as i64).is_none()
    }

    /// The client's country from the coverage zones (longest match).
    pub fn country(&self, client: IpAddr) -> Option<&str> {
        self.countries
            .longest_match(client)
            .map(|(_, c)| c.as_str())
    }

    /// Rebuilds the prefix table from the reported prefixes and the zones (a trie has no removal;
    /// prefixes change rarely, so a rebuild when they do is cheaper than a mutable structure).
    fn rebuild_prefixes(&mut self) {
        let mut table: PrefixTable<Vec<String>> = PrefixTable::default();
        let reported = self
            .reported
            .iter()
            .enumerate()
            .flat_map(|(i, ps)| ps.iter().map(move |p| (*p, i)))
            .map(|(p, i)| (p, self.appliances[i].site.clone()));
        for (prefix, site) in reported.chain(self.zones.iter().cloned()) {
            add_route(&mut table, prefix, site);
        }
        self.prefixes = table;
    }

    /// Applies an accepted health report, so steering sees it without rereading the database.
    /// A full inventory longer than [`crate::intake::INVENTORY_CHUNK`] is applied as deltas of
    /// that size, each under its own short write lock, so steering never waits long for it.
    pub fn apply(
        fleet: &parking_lot::RwLock<Snapshot>,
        r: &HealthReport,
        full_inventory_needed: bool,
        now: i64,
    ) {
        let write = || fleet.write();
        let content = match &r.inventory {
            Inventory::Full { content, .. }
                if !full_inventory_needed && content.len() > crate::intake::INVENTORY_CHUNK =>
            {
                content
            }
            _ => return write().apply_report(r, full_inventory_needed, now),
        };
        // Status and routes first, then the held set is swapped whole (built outside the lock),
        // then the holder index follows in chunks.
        write().apply_report(r, true, now);
        let new: HashSet<String> = content.iter().cloned().collect();
        let held = new.clone();
        let old = {
            let mut snap = write();
            let Some(&i) = snap.index.get(&r.oca_id) else {
                return;
            };
            std::mem::replace(&mut snap.held[i], held)
        };
        let added: Vec<&String> = new.iter().filter(|c| !old.contains(*c)).collect();
        let removed: Vec<&String> = old.iter().filter(|c| !new.contains(*c)).collect();
        let step = crate::intake::INVENTORY_CHUNK;
        // Each chunk hands the lock to whoever waits (unlock_fair) instead of taking it again
        // straight away, so steering runs between chunks.
        for chunk in added.chunks(step) {
            let mut snap = write();
            if let Some(&i) = snap.index.get(&r.oca_id) {
                chunk.iter().for_each(|c| snap.holders.insert(c, i));
            }
            parking_lot::RwLockWriteGuard::unlock_fair(snap);
        }
        for chunk in removed.chunks(step) {
            let mut snap = write();
            if let Some(&i) = snap.index.get(&r.oca_id) {
                chunk.iter().for_each(|c| snap.holders.remove(c, i));
            }
            parking_lot::RwLockWriteGuard::unlock_fair(snap);
        }
    }

    /// Adds and removes content held by one appliance.
    fn change_inventory(&mut self, oca_id: &str, added: &[String], removed: &[String]) {
        let Some(&i) = self.index.get(oca_id) else {
            return;
        };
        for c in removed {
            self.unhold(c, i);
            self.held[i].remove(c);
        }
        for c in added {
            self.hold(c, i);
        }
    }

    fn apply_report(&mut self, r: &HealthReport, full_inventory_needed: bool, now: i64) {
        let Some(&i) = self.index.get(&r.oca_id) else {
            return;
        };
        let a = &mut self.appliances[i];
        a.status = Some(crate::intake::status_str(r.status).to_string());
        a.last_report = now;
        a.bytes_per_sec = r.serving.bytes_per_sec;
        a.storage_bytes = usable_storage(&r.disks);
        let mut prefixes = r.prefixes.clone();
        prefixes.sort();
        prefixes.dedup();
        let mut before = self.reported[i].clone();
        before.sort();
        if before != prefixes {
            // Routes only added (an appliance's first report, a new route) go into the trie as
            // they are; a withdrawn route needs a rebuild, the trie having no removal.
            let only_added = before.iter().all(|p| prefixes.binary_search(p).is_ok());
            if only_added {
                let site = self.appliances[i].site.clone();
                for p in prefixes.iter().filter(|p| before.binary_search(p).is_err()) {
                    add_route(&mut self.prefixes, *p, site.clone());
                }
                self.reported[i] = prefixes;
            } else {
                self.reported[i] = prefixes;
                self.rebuild_prefixes();
            }
        }
        if full_inventory_needed {
            return;
        }
        match &r.inventory {
            Inventory::Full { content, .. } => {
                for old in std::mem::take(&mut self.held[i]) {
                    self.unhold(&old, i);
                }
                for c in content {
                    self.hold(c, i);
                }
            }
            Inventory::Delta { added, removed, .. } => {
                self.change_inventory(&r.oca_id, added, removed);
            }
        }
    }

    fn hold(&mut self, content: &str, i: usize) {
        self.holders.insert(content, i);
        self.held[i].insert(content.to_string());
    }

    fn unhold(&mut self, content: &str, i: usize) {
        self.holders.remove(content, i);
    }

    /// The client's neighbourhood: its matched sites, their tier sites and their regions.
    pub fn neighbourhood(&self, client: IpAddr) -> Neighbourhood<'_> {
        let mut rank: HashMap<&str, u8> = HashMap::new();
        let best = self.prefixes.longest_match(client).map(|(p, _)| *p);
        // Only the most specific match decides the client's own sites; wider covering prefixes
        // (an IXP announcing a /8) rank those sites as tier neighbours instead.
        for (p, sites) in self.prefixes.matches(client) {
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
            .filter_map(|s| self.sites.get(*s))
            .map(|(_, reg)| reg.as_str())
            .collect();
        regions.sort_unstable();
        regions.dedup();
        for s in &matched {
            if let Some((Some(parent), _)) = self.sites.get(*s) {
                if let Some((id, _)) = self.sites.get_key_value(parent.as_str()) {
                    let e = rank.entry(id.as_str()).or_insert(1);
                    *e = (*e).min(1);
                }
            }
        }
        Neighbourhood {
            snap: self,
            rank,
            regions,
            matched: best,
        }
    }
}

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
    /// Proximity rank of `site`, none when it is not a candidate.
    fn rank_of(&self, site: &str) -> Option<u8> {
        if let Some(r) = self.rank.get(site) {
            return Some(*r);
        }
        let (_, region) = self.snap.sites.get(site)?;
        self.regions.contains(&region.as_str()).then_some(2)
    }

    /// Every candidate site's appliances, with their rank.
    fn candidates(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        let ranked = self.rank.iter().map(|(s, r)| (*s, *r));
        let regional = self
            .regions
            .iter()
            .flat_map(|reg| self.snap.by_region.get(*reg).into_iter().flatten())
            .filter(|s| !self.rank.contains_key(s.as_str()))
            .map(|s| (s.as_str(), 2));
        ranked.chain(regional).flat_map(|(site, prox)| {
            self.snap
                .by_site
                .get(site)
                .into_iter()
                .flatten()
                .map(move |&i| (i, prox))
        })
    }

    /// About how many appliances the candidate sites have (at most twice the count: a tier site
    /// in the same region counts twice), the cost of walking them.
    fn candidate_estimate(&self) -> usize {
        let ranked: usize = self
            .rank
            .keys()
            .map(|s| self.snap.by_site.get(*s).map_or(0, Vec::len))
            .sum();
        let regional: usize = self
            .regions
            .iter()
            .map(|r| self.snap.region_appliances.get(*r).copied().unwrap_or(0))
            .sum();
        ranked + regional
    }
}

/// Adds `site` to the sites routed by `prefix`.
fn add_route(table: &mut PrefixTable<Vec<String>>, prefix: Prefix, site: String) {
    let mut sites = table.insert(prefix, Vec::new()).unwrap_or_default();
    if !sites.contains(&site) {
        sites.push(site);
    }
    table.insert(prefix, sites);
}

/// Times `n` in-process steering decisions for random clients (inside reported prefixes) and
/// random held content; returns (p50, p99, max) in microseconds. Used by `--bench-steer`.
pub fn bench(snap: &Snapshot, n: usize, report_interval_secs: u64) -> Option<(f64, f64, f64)> {
    // As of the newest report, so the fleet is as fresh as when it was recorded.
    let now = snap.appliances.iter().map(|a| a.last_report).max()?;
    let prefixes: Vec<Prefix> = snap.reported.iter().flatten().copied().collect();
    let contents: Vec<&String> = snap.holders.keys().collect();
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
    let near = snap.neighbourhood(client);
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
    let holders = snap.holders.get(content_id);
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
                    .filter_map(|&i| near.rank_of(&snap.appliances[i].site).map(|r| (i, r))),
            )
        } else {
            Box::new(near.candidates())
        };
    for (i, prox) in walk {
        let a = &snap.appliances[i];
        let reason = drop_reason(a, holders.is_some_and(|h| h.contains(&i)), now, stale_after);
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
        let headroom = 1.0 - load(a);
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

fn load(a: &Candidate) -> f64 {
    if a.capacity_bps == 0 {
        return 1.0;
    }
    (a.bytes_per_sec as f64 * 8.0) / a.capacity_bps as f64
}

fn drop_reason(a: &Candidate, holds: bool, now: i64, stale_after: i64) -> Option<&'static str> {
    match a.status.as_deref() {
        None => Some("never reported"),
        _ if now - a.last_report > stale_after => {
            Some("stale: no report for 3 intervals (unknown)")
        }
        Some("error") => Some("status error"),
        _ if load(a) > LOAD_THRESHOLD => Some("over load threshold"),
        _ if !holds => Some("does not hold the content"),
        _ => None,
    }
}

/// Which appliances hold each content id, in shards: a first inventory of a million files grows
/// the index one shard at a time, so no single insert under the fleet's write lock rehashes it
/// all.
struct Holders {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<HashMap<String, HashSet<usize>>>,
}

impl Default for Holders {
    fn default() -> Holders {
        Holders {
            hasher: Default::default(),
            shards: vec![HashMap::new(); 256],
        }
    }
}

impl Holders {
    fn shard(&self, content: &str) -> usize {
        use std::hash::BuildHasher;
        (self.hasher.hash_one(content) % self.shards.len() as u64) as usize
    }

    fn get(&self, content: &str) -> Option<&HashSet<usize>> {
        self.shards[self.shard(content)].get(content)
    }

    fn insert(&mut self, content: &str, appliance: usize) {
        let s = self.shard(content);
        match self.shards[s].get_mut(content) {
            Some(set) => {
                set.insert(appliance);
            }
            None => {
                self.shards[s].insert(content.to_string(), HashSet::from([appliance]));
            }
        }
    }

    fn remove(&mut self, content: &str, appliance: usize) {
        let s = self.shard(content);
        if let Some(set) = self.shards[s].get_mut(content) {
            set.remove(&appliance);
            if set.is_empty() {
                self.shards[s].remove(content);
            }
        }
    }

    fn keys(&self) -> impl Iterator<Item = &String> {
        self.shards.iter().flat_map(HashMap::keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{Appliance, Site, SiteKind};

    /// A random fleet in a real SQLite file: 60 sites in 3 regions (every fifth an IXP parent),
    /// 1-4 appliances each with random health, load and holdings.
    fn random_fleet(db: &Db, seed: u64) -> i64 {
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
                crate::intake::record(db, &report, if stale { now - 100 } else { now }).unwrap();
            }
        }
        now
    }

    #[test]
    fn the_holder_walk_and_the_neighbourhood_walk_agree() {
        for seed in 1..=8u64 {
            let dir = tempfile::tempdir().unwrap();
            let db = Db::open(&dir.path().join("cp.db")).unwrap();
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
