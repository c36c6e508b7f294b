//! The fleet model: sites, appliances and what each last reported (health, load, storage, routes,
//! inventory), in memory, so steering and planning read no database. Loaded from storage at
//! start and after admin changes; health reports are applied to it as they are recorded.
//!
//! Routes (reported prefixes and admin coverage zones) are a longest-prefix-match table
//! ([`crate::lpm`]); which appliances hold a file is a sharded index (`Holders`) that a
//! million-file inventory grows chunk by chunk, under short write locks.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use oca_protocol::health::{HealthReport, Inventory};
use oca_protocol::prefix::Prefix;

use crate::lpm::PrefixTable;
use crate::storage::{status_str, Storage, StorageError, INVENTORY_CHUNK};

/// An appliance is skipped above this share of its capacity.
pub const LOAD_THRESHOLD: f64 = 0.9;

/// What the fleet view knows about one appliance.
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
    /// ([`crate::storage::Downtime`]).
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

impl Candidate {
    /// Share of its capacity it sends (1 when it has none).
    pub fn load(&self) -> f64 {
        if self.capacity_bps == 0 {
            return 1.0;
        }
        (self.bytes_per_sec as f64 * 8.0) / self.capacity_bps as f64
    }

    /// Why it may not serve a file (`holds`: whether it holds it) at `now`, none when it may.
    pub fn drop_reason(&self, holds: bool, now: i64, stale_after: i64) -> Option<&'static str> {
        match self.status.as_deref() {
            None => Some("never reported"),
            _ if now - self.last_report > stale_after => {
                Some("stale: no report for 3 intervals (unknown)")
            }
            Some("error") => Some("status error"),
            _ if self.load() > LOAD_THRESHOLD => Some("over load threshold"),
            _ if !holds => Some("does not hold the content"),
            _ => None,
        }
    }
}

/// A site as the fleet view knows it.
#[derive(Debug, Clone)]
pub struct SiteInfo {
    /// The tier site it fills from.
    pub parent: Option<String>,
    /// Its region.
    pub region: String,
}

/// The fleet in memory, everything steering and planning read: loaded from storage at start
/// (and after admin changes), then kept current by the health intake.
pub struct Snapshot {
    appliances: Vec<Candidate>,
    sites: HashMap<String, SiteInfo>,
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
    pub fn load(store: &dyn Storage) -> Result<Snapshot, StorageError> {
        let downtime = store.downtime();
        let sites: HashMap<String, SiteInfo> = store
            .sites()?
            .into_iter()
            .map(|s| {
                let info = SiteInfo {
                    parent: s.parent,
                    region: s.region,
                };
                (s.id, info)
            })
            .collect();
        let appliances: Vec<Candidate> = store
            .reported_appliances()?
            .into_iter()
            .map(|r| Candidate {
                id: r.appliance.id,
                site: r.appliance.site,
                url: r.appliance.url,
                capacity_bps: r.appliance.capacity_bps,
                status: r.status,
                last_report: downtime.heard(r.last_report),
                bytes_per_sec: r.bytes_per_sec,
                storage_bytes: usable_storage(&r.disks),
            })
            .collect();
        let index: HashMap<String, usize> = appliances
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let mut reported: Vec<Vec<Prefix>> = vec![Vec::new(); appliances.len()];
        for (oca, prefix) in store.reported_prefixes()? {
            if let Some(&i) = index.get(&oca) {
                reported[i].push(prefix);
            }
        }
        let mut countries = PrefixTable::default();
        let mut zones = Vec::new();
        for z in store.zones()? {
            if let Some(country) = z.country {
                countries.insert(z.prefix, country);
            }
            if let Some(site) = z.site {
                zones.push((z.prefix, site));
            }
        }
        let mut holders = Holders::default();
        let mut held: Vec<HashSet<String>> = vec![HashSet::new(); appliances.len()];
        store.holdings(&mut |content, oca| {
            if let Some(&i) = index.get(&oca) {
                holders.insert(&content, i);
                held[i].insert(content);
            }
        })?;
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
        for (id, site) in &snap.sites {
            snap.by_region
                .entry(site.region.clone())
                .or_default()
                .push(id.clone());
            *snap
                .region_appliances
                .entry(site.region.clone())
                .or_default() += snap.by_site.get(id).map_or(0, Vec::len);
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
        self.sites.get(site)?.parent.as_deref()
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
        a.drop_reason(true, now, 3 * report_interval_secs as i64)
            .is_none()
    }

    /// The client's country from the coverage zones (longest match).
    pub fn country(&self, client: IpAddr) -> Option<&str> {
        self.countries
            .longest_match(client)
            .map(|(_, c)| c.as_str())
    }

    /// The routes table: reported prefixes and coverage zones, each to its sites.
    pub fn routes(&self) -> &PrefixTable<Vec<String>> {
        &self.prefixes
    }

    /// A site by id, with the id as the view holds it.
    pub fn site(&self, id: &str) -> Option<(&str, &SiteInfo)> {
        self.sites.get_key_value(id).map(|(k, v)| (k.as_str(), v))
    }

    /// The site ids of a region.
    pub fn region_sites(&self, region: &str) -> &[String] {
        self.by_region.get(region).map_or(&[], Vec::as_slice)
    }

    /// How many appliances a region has.
    pub fn region_size(&self, region: &str) -> usize {
        self.region_appliances.get(region).copied().unwrap_or(0)
    }

    /// The indices ([`Snapshot::at`]) of a site's appliances.
    pub fn site_members(&self, site: &str) -> &[usize] {
        self.by_site.get(site).map_or(&[], Vec::as_slice)
    }

    /// The appliance at an index.
    pub fn at(&self, i: usize) -> &Candidate {
        &self.appliances[i]
    }

    /// The indices of the appliances holding `content`, as last reported.
    pub fn holders(&self, content: &str) -> Option<&HashSet<usize>> {
        self.holders.get(content)
    }

    /// Every prefix appliances reported.
    pub fn reported_prefixes(&self) -> impl Iterator<Item = &Prefix> {
        self.reported.iter().flatten()
    }

    /// Every content id some appliance holds.
    pub fn held_content(&self) -> impl Iterator<Item = &String> {
        self.holders.keys()
    }

    /// When the newest report arrived, none before any.
    pub fn newest_report(&self) -> Option<i64> {
        self.appliances.iter().map(|a| a.last_report).max()
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
    /// A full inventory longer than [`INVENTORY_CHUNK`] is applied as deltas of
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
                if !full_inventory_needed && content.len() > INVENTORY_CHUNK =>
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
        let step = INVENTORY_CHUNK;
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
        a.status = Some(status_str(r.status).to_string());
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
}

/// Adds `site` to the sites routed by `prefix`.
fn add_route(table: &mut PrefixTable<Vec<String>>, prefix: Prefix, site: String) {
    let mut sites = table.insert(prefix, Vec::new()).unwrap_or_default();
    if !sites.contains(&site) {
        sites.push(site);
    }
    table.insert(prefix, sites);
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

    /// The appliances holding `content`.
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
