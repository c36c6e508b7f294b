//! The fleet model: sites, appliances and what each last reported (health, load, storage, routes,
//! BGP sessions, inventory), in memory, so steering and planning read no database. Loaded from
//! storage at start and after admin changes; health reports are applied to it as they are
//! recorded.
//!
//! Routes are a longest-prefix-match table ([`crate::lpm`]) from each prefix to who serves it
//! ([`Served`]): the appliances hearing it, statically or over BGP, each with the preference of
//! its best route for it ([`Preference`]), and the sites an admin coverage zone gives it. A
//! report changes only the table entries of the routes it added, withdrew or changed, in place,
//! so a moved route reaches steering at the report that moved it without a rebuild. Which
//! appliances hold a file is a sharded index (`Holders`) that a million-file inventory grows
//! chunk by chunk, under short write locks; each file's holders are sorted by site number
//! ([`Snapshot::site_no`]: sites numbered by region, IXP sites first), so steering reads only
//! the holders at the sites near its client.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;

use oca_protocol::admin::{SiteKind, Zone};
use oca_protocol::health::{HealthReport, Inventory};
use oca_protocol::prefix::Prefix;
use oca_protocol::steering::{MatchedRoute, RouteSource};

use crate::domain::routes::Preference;
use crate::lpm::PrefixTable;
use crate::storage::changes::{ApplianceRecord, ReportChange};
pub use crate::storage::usable_storage;
use crate::storage::{
    status_str, Downtime, ReportedAppliance, Storage, StorageError, INVENTORY_CHUNK,
};

mod gates;

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

impl Candidate {
    /// An appliance as registered, with its last report as recorded.
    pub fn of(r: ReportedAppliance, downtime: Downtime) -> Candidate {
        Candidate {
            id: r.appliance.id,
            site: r.appliance.site,
            url: r.appliance.url,
            capacity_bps: r.appliance.capacity_bps,
            status: r.status,
            last_report: downtime.heard(r.last_report),
            bytes_per_sec: r.bytes_per_sec,
            storage_bytes: usable_storage(&r.disks),
        }
    }

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

/// Seconds of silence after which an appliance is stale and steered around: 3 report
/// intervals, so one lost report (or two) does not take it out.
pub fn stale_after(report_interval_secs: u64) -> i64 {
    3 * report_interval_secs as i64
}

/// A site as the fleet view knows it.
#[derive(Debug, Clone)]
pub struct SiteInfo {
    /// ISP or IXP.
    pub kind: SiteKind,
    /// The tier site it fills from.
    pub parent: Option<String>,
    /// Its region.
    pub region: String,
}

/// (and after admin changes), then kept current by the health intake.
/// The fleet in memory, everything steering and planning read: loaded from storage at start
pub struct Snapshot {
    appliances: Vec<Candidate>,
    sites: HashMap<String, SiteInfo>,
    routes: PrefixTable<Served>,
    holders: Holders,
    index: HashMap<String, usize>,
    /// Static prefixes each appliance reported, sorted, by appliance index.
    statics: Vec<Vec<Prefix>>,
    /// What each appliance's BGP speaker reported, by appliance index; none when its last
    /// report had no `bgp`.
    bgp: Vec<Option<BgpHeard>>,
    /// Coverage zones with a site.
    zones: Vec<(Prefix, String)>,
    /// Content each appliance holds, by appliance index. The ids are the holder index's own
    /// (shared, not copied): a fleet holds millions of (appliance, file) pairs.
    held: Vec<HashSet<Arc<str>>>,
    /// The inventory sequence each held set is at, by appliance index, where known (a report
    /// recorded here, or an inventory reread for the change feed): a delta another replica
    /// recorded applies only to its base.
    inventory_seqs: Vec<Option<u64>>,
    /// Coverage zones with a country.
    countries: PrefixTable<String>,
    /// Appliance indices by site.
    by_site: HashMap<String, Vec<usize>>,
    /// The sites that take a region's clients whatever their route, by region: IXP sites only
    /// (docs/bgp.md, "ISP sites serve only what their ISP announces").
    region_fallbacks: HashMap<String, Vec<String>>,
    /// Each appliance's site number, by appliance index (see [`Snapshot::site_no`]).
    site_no: Vec<u32>,
    /// Site numbers by site id.
    site_nos: HashMap<String, u32>,
    /// Each region's IXP sites, as the run of their site numbers.
    region_ixps: HashMap<String, Range<u32>>,
    /// Maintenance windows not over when the view was loaded.
    maintenance: Windows,
    /// Why the live checks keep an appliance out of steering, by appliance index (`gates`).
    gates: HashMap<usize, String>,
}

impl Snapshot {
    /// Reads sites, appliances, health, prefixes, zones, inventories and the maintenance
    /// windows not over at `now`.
    pub fn load(store: &dyn Storage, now: i64) -> Result<Snapshot, StorageError> {
        let downtime = store.downtime();
        let sites: HashMap<String, SiteInfo> = store
            .sites()?
            .into_iter()
            .map(|s| {
                let info = SiteInfo {
                    kind: s.kind,
                    parent: s.parent,
                    region: s.region,
                };
                (s.id, info)
            })
            .collect();
        let appliances: Vec<Candidate> = store
            .reported_appliances()?
            .into_iter()
            .map(|r| Candidate::of(r, downtime))
            .collect();
        let index: HashMap<String, usize> = appliances
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect();
        let mut statics: Vec<Vec<Prefix>> = vec![Vec::new(); appliances.len()];
        for (oca, prefix) in store.reported_prefixes()? {
            if let Some(&i) = index.get(&oca) {
                statics[i].push(prefix);
            }
        }
        for s in &mut statics {
            s.sort_unstable();
            s.dedup();
        }
        let mut bgp: Vec<Option<BgpHeard>> = vec![None; appliances.len()];
        store.reported_bgp(&mut |oca, sessions, routes| {
            if let Some(&i) = index.get(&oca) {
                bgp[i] = Some(BgpHeard {
                    sessions,
                    routes: routes.iter().map(heard_route).collect(),
                });
            }
        })?;
        let (countries, zones) = split_zones(store.zones()?);
        let numbers = SiteNumbers::new(&sites, &appliances);
        let mut holders = Holders::default();
        let mut held: Vec<HashSet<Arc<str>>> = vec![HashSet::new(); appliances.len()];
        store.holdings(&mut |content, oca| {
            if let Some(&i) = index.get(&oca) {
                held[i].insert(holders.insert(&content, i, &numbers.of_appliance));
            }
        })?;
        // `now` only prunes windows already over; whether one is in force is decided with each
        // caller's `now`.
        let maintenance = Windows::new(store.open_windows(now)?);
        let mut snap = Snapshot {
            maintenance,
            appliances,
            sites,
            routes: PrefixTable::default(),
            holders,
            index,
            statics,
            bgp,
            zones,
            inventory_seqs: vec![None; held.len()],
            held,
            countries,
            by_site: HashMap::new(),
            region_fallbacks: HashMap::new(),
            site_no: numbers.of_appliance,
            site_nos: numbers.by_id,
            region_ixps: numbers.region_ixps,
            gates: HashMap::new(),
        };
        for (i, a) in snap.appliances.iter().enumerate() {
            snap.by_site.entry(a.site.clone()).or_default().push(i);
        }
        for (id, site) in snap.sites.iter().filter(|(_, s)| s.kind == SiteKind::Ixp) {
            snap.region_fallbacks
                .entry(site.region.clone())
                .or_default()
                .push(id.clone());
        }
        snap.rebuild_routes();
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
        self.index
            .get(appliance)
            .is_some_and(|&i| self.holds_at(self.holders.get(content), i))
    }

    /// Whether the appliance at index `i` is in `holders` (a [`Snapshot::holders`] list).
    pub fn holds_at(&self, list: &[u32], i: usize) -> bool {
        holders::find(list, &self.site_no, i).is_ok()
    }

    /// The part of `holders` (a [`Snapshot::holders`] list) at the sites numbered in `sites`.
    pub fn holders_at<'l>(&self, list: &'l [u32], sites: &Range<u32>) -> &'l [u32] {
        holders::within(list, &self.site_no, sites)
    }

    /// Whether an appliance may serve (fresh, not `error`, under its load threshold, not in
    /// maintenance).
    pub fn serving(&self, a: &Candidate, now: i64, report_interval_secs: u64) -> bool {
        a.drop_reason(true, now, stale_after(report_interval_secs))
            .is_none()
            && self.maintenance(a, now).is_none()
    }

    /// The maintenance window in force at `now` on an appliance or its site, if any.
    pub fn maintenance(&self, a: &Candidate, now: i64) -> Option<&MaintenanceWindow> {
        self.maintenance.in_force(&a.id, &a.site, now)
    }

    /// The maintenance windows not over when the view was loaded.
    pub fn windows(&self) -> &Windows {
        &self.maintenance
    }

    /// The client's country from the coverage zones (longest match).
    pub fn country(&self, client: IpAddr) -> Option<&str> {
        self.countries
            .longest_match(client)
            .map(|(_, c)| c.as_str())
    }

    /// The route table: every prefix appliances hear (statically or over BGP) and every
    /// coverage zone with a site, each to who serves it.
    pub fn routes(&self) -> &PrefixTable<Served> {
        &self.routes
    }

    /// The index ([`Snapshot::at`]) of an appliance.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// How many appliances the view holds (indices run below it).
    pub fn len(&self) -> usize {
        self.appliances.len()
    }

    /// Whether the view holds no appliance.
    pub fn is_empty(&self) -> bool {
        self.appliances.is_empty()
    }

    /// The static prefixes of the appliance at index `i`, sorted.
    pub fn statics(&self, i: usize) -> &[Prefix] {
        &self.statics[i]
    }

    /// What the BGP speaker of the appliance at index `i` last reported; none when its last
    /// report had no BGP.
    pub fn bgp(&self, i: usize) -> Option<&BgpHeard> {
        self.bgp[i].as_ref()
    }

    /// The site ids, in no particular order.
    pub fn site_ids(&self) -> impl Iterator<Item = &str> {
        self.sites.keys().map(String::as_str)
    }

    /// The best route of the appliance at index `i` for exactly `prefix`: its best BGP route,
    /// or its static one, a locally originated route, when that is at least as good.
    pub fn route_of(&self, i: usize, prefix: &Prefix) -> Option<MatchedRoute> {
        let bgp = self.bgp[i]
            .as_ref()
            .and_then(|b| b.routes_of(prefix).iter().min_by_key(|r| Preference::of(r)));
        let is_static = self.statics[i].binary_search(prefix).is_ok();
        match bgp {
            Some(r) if !is_static || Preference::of(r) < Preference::LOCAL => Some(r.clone()),
            _ if is_static => Some(local_route(*prefix, RouteSource::Static)),
            _ => None,
        }
    }

    /// A site by id, with the id as the view holds it.
    pub fn site(&self, id: &str) -> Option<(&str, &SiteInfo)> {
        self.sites.get_key_value(id).map(|(k, v)| (k.as_str(), v))
    }

    /// The sites that take a region's clients whatever their route: its IXP sites.
    pub fn region_fallback_sites(&self, region: &str) -> &[String] {
        self.region_fallbacks.get(region).map_or(&[], Vec::as_slice)
    }

    /// The site numbers of a region's fallback (IXP) sites: one run, as sites are numbered by
    /// region, IXP sites first (empty when it has none).
    pub fn region_fallback_numbers(&self, region: &str) -> Range<u32> {
        self.region_ixps.get(region).cloned().unwrap_or(0..0)
    }

    /// The number of the site of the appliance at index `i`. Sites are numbered in the order
    /// (region, IXP sites first, id), so one site's appliances, and one region's IXP sites'
    /// appliances, are each a run of numbers; holder lists are sorted by it.
    pub fn site_no(&self, i: usize) -> u32 {
        self.site_no[i]
    }

    /// The number ([`Snapshot::site_no`]) of a site, none when no site or appliance has that id.
    pub fn site_number(&self, site: &str) -> Option<u32> {
        self.site_nos.get(site).copied()
    }

    /// The indices ([`Snapshot::at`]) of a site's appliances.
    pub fn site_members(&self, site: &str) -> &[usize] {
        self.by_site.get(site).map_or(&[], Vec::as_slice)
    }

    /// The appliance at an index.
    pub fn at(&self, i: usize) -> &Candidate {
        &self.appliances[i]
    }

    /// The indices of the appliances holding `content`, as last reported, sorted by
    /// ([`Snapshot::site_no`], index); empty when none does.
    pub fn holders(&self, content: &str) -> &[u32] {
        self.holders.get(content)
    }

    /// Every prefix some appliance hears, statically or over BGP.
    pub fn served_prefixes(&self) -> impl Iterator<Item = &Prefix> {
        self.routes
            .iter()
            .filter(|(_, s)| !s.heard.is_empty())
            .map(|(p, _)| p)
    }

    /// Every content id some appliance holds.
    pub fn held_content(&self) -> impl Iterator<Item = &str> {
        self.holders.keys()
    }

    /// When the newest report arrived, none before any.
    pub fn newest_report(&self) -> Option<i64> {
        self.appliances.iter().map(|a| a.last_report).max()
    }

    /// Builds the route table from the zones and every appliance's routes (at load; reports
    /// then change it in place).
    /// Replaces the maintenance windows (those not over), after one was opened or ended.
    pub fn set_windows(&mut self, open: Vec<MaintenanceWindow>) {
        self.maintenance = Windows::new(open);
    }

    /// Replaces the coverage zones with `all` as committed: the route table's zone entries are
    /// patched (not rebuilt from every appliance's routes), and the country table is rebuilt.
    pub fn set_zones(&mut self, all: Vec<Zone>) {
        let (countries, zones) = split_zones(all);
        for (prefix, site) in &self.zones {
            if let Some(served) = self.routes.get_mut(prefix) {
                served.zone_sites.retain(|s| s != site);
                if served.is_empty() {
                    self.routes.remove(prefix);
                }
            }
        }
        for (prefix, site) in &zones {
            let served = served_mut(&mut self.routes, *prefix);
            if !served.zone_sites.contains(site) {
                served.zone_sites.push(site.clone());
            }
        }
        self.zones = zones;
        self.countries = countries;
    }

    fn rebuild_routes(&mut self) {
        let mut table: PrefixTable<Served> = PrefixTable::default();
        for (prefix, site) in &self.zones {
            let served = served_mut(&mut table, *prefix);
            if !served.zone_sites.contains(site) {
                served.zone_sites.push(site.clone());
            }
        }
        for i in 0..self.appliances.len() {
            for (prefix, pref) in best_routes(&self.statics[i], self.bgp[i].as_ref()) {
                served_mut(&mut table, prefix).heard.push((i, pref));
            }
        }
        self.routes = table;
    }

    /// Brings the route table from appliance `i`'s routes `old` to `new` (both from
    /// [`best_routes`]): only the prefixes added, withdrawn or changed are touched.
    fn rehear(&mut self, i: usize, old: &[(Prefix, Preference)], new: &[(Prefix, Preference)]) {
        let (mut o, mut n) = (0, 0);
        loop {
            match (old.get(o), new.get(n)) {
                (None, None) => break,
                (Some(gone), next) if next.is_none_or(|next| gone.0 < next.0) => {
                    if let Some(served) = self.routes.get_mut(&gone.0) {
                        served.heard.retain(|(a, _)| *a != i);
                        if served.is_empty() {
                            self.routes.remove(&gone.0);
                        }
                    }
                    o += 1;
                }
                (before, Some(added)) if before.is_none_or(|before| added.0 < before.0) => {
                    served_mut(&mut self.routes, added.0)
                        .heard
                        .push((i, added.1));
                    n += 1;
                }
                (Some(before), Some(now)) => {
                    if before.1 != now.1 {
                        let served = served_mut(&mut self.routes, now.0);
                        match served.heard.iter_mut().find(|(a, _)| *a == i) {
                            Some(h) => h.1 = now.1,
                            None => served.heard.push((i, now.1)),
                        }
                    }
                    o += 1;
                    n += 1;
                }
                _ => unreachable!("covered by the arms above"),
            }
        }
    }

    /// Applies an accepted health report, so steering sees it without rereading the database;
    /// returns the appliance's previous report time (0: never), none (nothing applied) when the
    /// view does not hold the appliance.
    /// A full inventory longer than [`INVENTORY_CHUNK`] is applied as deltas of
    /// that size, each under its own short write lock, so steering never waits long for it.
    pub fn apply(
        fleet: &parking_lot::RwLock<Snapshot>,
        r: &HealthReport,
        accepted: &crate::storage::Accepted,
        now: i64,
    ) -> Option<i64> {
        let full_inventory_needed = accepted.send_full_inventory;
        let seq = accepted.inventory_seq;
        let write = || fleet.write();
        let content = match &r.inventory {
            Inventory::Full { content, .. }
                if !full_inventory_needed && content.len() > INVENTORY_CHUNK =>
            {
                content
            }
            _ => return write().apply_report(r, full_inventory_needed, seq, now),
        };
        // Status and routes first, then the held set and the holder index.
        let previous = write().apply_report(r, true, seq, now)?;
        Snapshot::replace_held(fleet, &r.oca_id, content);
        Some(previous)
    }

    /// Replaces what appliance `oca_id` holds by `content`: the held set is swapped whole
    /// (built outside the lock, so its ids are its own, not the index's), then the holder
    /// index follows in chunks of [`INVENTORY_CHUNK`], each under its own short write lock.
    fn replace_held(fleet: &parking_lot::RwLock<Snapshot>, oca_id: &str, content: &[String]) {
        let write = || fleet.write();
        let new: HashSet<&str> = content.iter().map(String::as_str).collect();
        let held: HashSet<Arc<str>> = new.iter().map(|&c| Arc::from(c)).collect();
        let old = {
            let mut snap = write();
            let Some(&i) = snap.index.get(oca_id) else {
                return;
            };
            std::mem::replace(&mut snap.held[i], held)
        };
        let added: Vec<&str> = new.iter().copied().filter(|&c| !old.contains(c)).collect();
        let removed: Vec<&str> = old
            .iter()
            .map(|c| &**c)
            .filter(|c| !new.contains(c))
            .collect();
        let step = INVENTORY_CHUNK;
        // Each chunk hands the lock to whoever waits (unlock_fair) instead of taking it again
        // straight away, so steering runs between chunks.
        for chunk in added.chunks(step) {
            let mut snap = write();
            if let Some(&i) = snap.index.get(oca_id) {
                let Snapshot {
                    holders, site_no, ..
                } = &mut *snap;
                chunk.iter().for_each(|c| {
                    holders.insert(c, i, site_no);
                });
            }
            parking_lot::RwLockWriteGuard::unlock_fair(snap);
        }
        for chunk in removed.chunks(step) {
            let mut snap = write();
            if let Some(&i) = snap.index.get(oca_id) {
                let Snapshot {
                    holders, site_no, ..
                } = &mut *snap;
                chunk.iter().for_each(|c| holders.remove(c, i, site_no));
            }
            parking_lot::RwLockWriteGuard::unlock_fair(snap);
        }
    }

    /// Applies health reports other replicas recorded, each with its appliance's rows when
    /// they were reread (`records`, read after the report committed), under one write lock:
    /// status and load when newer than what the view has; an inventory the report carries
    /// (whole, or a delta whose base the view holds) or the one reread; routes reread when the
    /// report changed them. An inventory longer than [`INVENTORY_CHUNK`] is swapped in after,
    /// chunk by chunk, as a report's own is.
    pub fn follow_all(
        fleet: &parking_lot::RwLock<Snapshot>,
        changes: &[ReportChange],
        records: &[Option<ApplianceRecord>],
    ) {
        let mut large = Vec::new();
        {
            let mut snap = fleet.write();
            for (change, record) in changes.iter().zip(records) {
                if let Some(big) = snap.follow_one(change, record.as_ref()) {
                    large.push(big);
                }
            }
        }
        for (oca_id, content, seq) in large {
            Snapshot::replace_held(fleet, oca_id, content);
            let mut snap = fleet.write();
            if let Some(&i) = snap.index.get(oca_id) {
                snap.inventory_seqs[i] = Some(seq);
            }
        }
    }

    /// [`Snapshot::follow_all`] for one report; gives back an inventory too long to swap in
    /// under this lock.
    fn follow_one<'c>(
        &mut self,
        change: &'c ReportChange,
        record: Option<&'c ApplianceRecord>,
    ) -> Option<(&'c str, &'c [String], u64)> {
        let &i = self.index.get(&change.oca_id)?;
        let a = &mut self.appliances[i];
        if change.at >= a.last_report {
            a.status = Some(status_str(change.status).to_string());
            a.last_report = change.at;
            a.bytes_per_sec = change.bytes_per_sec;
            a.storage_bytes = change.storage_bytes;
        }
        match (record, &change.bgp_sessions) {
            (Some(rec), sessions) if change.routes_changed => {
                let bgp = sessions.clone().map(|s| (s, rec.routes.as_slice()));
                self.set_routes(i, rec.prefixes.clone(), bgp);
            }
            (_, Some(sessions)) => {
                if let Some(heard) = self.bgp[i].as_mut() {
                    heard.sessions = sessions.clone();
                }
            }
            (_, None) => {}
        }
        if !change.inventory_changed {
            return None;
        }
        let whole = match (&change.full, record) {
            (Some(content), _) => Some((content.as_slice(), change.inventory_seq)),
            (None, Some(rec)) => Some((rec.inventory.as_slice(), rec.inventory_seq)),
            (None, None) => None,
        };
        match whole {
            Some((content, seq)) if content.len() > INVENTORY_CHUNK => {
                return Some((change.oca_id.as_str(), content, seq));
            }
            Some((content, seq)) => {
                self.hold_only(i, content);
                self.inventory_seqs[i] = Some(seq);
            }
            None => {
                if let Some(d) = change
                    .delta
                    .as_ref()
                    .filter(|d| self.inventory_seqs[i] == Some(d.base_seq))
                {
                    self.change_inventory(&change.oca_id, &d.added, &d.removed);
                    self.inventory_seqs[i] = Some(change.inventory_seq);
                }
            }
        }
        None
    }

    /// Whether following `change` needs the appliance's rows reread: its routes changed, or
    /// its inventory did other than by a delta this view can apply (one whose base it holds).
    pub fn needs_record(&self, change: &ReportChange) -> bool {
        let Some(&i) = self.index.get(&change.oca_id) else {
            return false;
        };
        let delta_applies = change
            .delta
            .as_ref()
            .is_some_and(|d| self.inventory_seqs[i] == Some(d.base_seq));
        change.routes_changed
            || (change.inventory_changed && !delta_applies && change.full.is_none())
    }

    /// Adds and removes content held by one appliance.
    fn change_inventory(&mut self, oca_id: &str, added: &[String], removed: &[String]) {
        let Some(&i) = self.index.get(oca_id) else {
            return;
        };
        for c in removed {
            self.unhold(c, i);
            self.held[i].remove(c.as_str());
        }
        for c in added {
            self.hold(c, i);
        }
    }

    /// The appliance's previous report time (0: never), or none when the view does not hold
    /// it.
    fn apply_report(
        &mut self,
        r: &HealthReport,
        full_inventory_needed: bool,
        seq: u64,
        now: i64,
    ) -> Option<i64> {
        let &i = self.index.get(&r.oca_id)?;
        // Large inventories are swapped in after this; the sequence is theirs either way.
        self.inventory_seqs[i] = Some(seq);
        let a = &mut self.appliances[i];
        let previous = a.last_report;
        a.status = Some(status_str(r.status).to_string());
        a.last_report = now;
        a.bytes_per_sec = r.serving.bytes_per_sec;
        a.storage_bytes = usable_storage(&r.disks);
        self.apply_routes(i, r);
        if full_inventory_needed {
            return Some(previous);
        }
        match &r.inventory {
            Inventory::Full { content, .. } => self.hold_only(i, content),
            Inventory::Delta { added, removed, .. } => {
                self.change_inventory(&r.oca_id, added, removed);
            }
        }
        Some(previous)
    }

    /// Replaces appliance `i`'s static prefixes and BGP state by the report's.
    fn apply_routes(&mut self, i: usize, r: &HealthReport) {
        let bgp = r
            .bgp
            .as_ref()
            .map(|b| (b.sessions.clone(), b.routes.as_slice()));
        self.set_routes(i, r.prefixes.clone(), bgp);
    }

    /// Replaces appliance `i`'s static prefixes and BGP sessions and routes; the route table
    /// changes only where its best routes did (most reports change none).
    fn set_routes(
        &mut self,
        i: usize,
        mut statics: Vec<Prefix>,
        bgp: Option<(
            Vec<oca_protocol::health::BgpSession>,
            &[oca_protocol::health::BgpRoute],
        )>,
    ) {
        statics.sort_unstable();
        statics.dedup();
        let bgp = bgp.map(|(sessions, routes)| {
            let mut routes: Vec<MatchedRoute> = routes.iter().map(heard_route).collect();
            // The intake sorts them; sorting what is sorted costs one pass.
            routes.sort_by_key(|x| (x.prefix, x.neighbor));
            BgpHeard { sessions, routes }
        });
        let unchanged = statics == self.statics[i]
            && match (&bgp, &self.bgp[i]) {
                (Some(new), Some(old)) => new.routes == old.routes,
                (None, None) => true,
                _ => false,
            };
        if unchanged {
            // Sessions change between reports (counters, states); routes mostly do not.
            if let (Some(new), Some(old)) = (bgp, self.bgp[i].as_mut()) {
                old.sessions = new.sessions;
            }
            return;
        }
        let old = best_routes(&self.statics[i], self.bgp[i].as_ref());
        self.statics[i] = statics;
        self.bgp[i] = bgp;
        let new = best_routes(&self.statics[i], self.bgp[i].as_ref());
        if old != new {
            self.rehear(i, &old, &new);
        }
    }

    /// Makes `content` all that appliance `i` holds (under one lock: for small inventories).
    fn hold_only(&mut self, i: usize, content: &[String]) {
        for old in std::mem::take(&mut self.held[i]) {
            self.unhold(&old, i);
        }
        for c in content {
            self.hold(c, i);
        }
    }

    fn hold(&mut self, content: &str, i: usize) {
        let id = self.holders.insert(content, i, &self.site_no);
        self.held[i].insert(id);
    }

    fn unhold(&mut self, content: &str, i: usize) {
        self.holders.remove(content, i, &self.site_no);
    }
}

/// The view's site numbering ([`Snapshot::site_no`]).
struct SiteNumbers {
    by_id: HashMap<String, u32>,
    of_appliance: Vec<u32>,
    region_ixps: HashMap<String, Range<u32>>,
}

impl SiteNumbers {
    /// Numbers every site, and every site id an appliance names (none is missing from `sites`
    /// while storage keeps its foreign keys; such a site sorts last, in no region), in the
    /// order (region, IXP sites first, id).
    fn new(sites: &HashMap<String, SiteInfo>, appliances: &[Candidate]) -> SiteNumbers {
        let mut ids: Vec<(Option<&str>, bool, &str)> = sites
            .iter()
            .map(|(id, s)| {
                (
                    Some(s.region.as_str()),
                    s.kind != SiteKind::Ixp,
                    id.as_str(),
                )
            })
            .chain(
                appliances
                    .iter()
                    .filter(|a| !sites.contains_key(&a.site))
                    .map(|a| (None, true, a.site.as_str())),
            )
            .collect();
        // Sites in no region sort after every region.
        ids.sort_unstable_by(|a, b| {
            (a.0.is_none(), a.0, a.1, a.2).cmp(&(b.0.is_none(), b.0, b.1, b.2))
        });
        ids.dedup();
        let mut region_ixps: HashMap<String, Range<u32>> = HashMap::new();
        for (n, (region, isp, _)) in ids.iter().enumerate() {
            if let (Some(region), false) = (region, isp) {
                let n = n as u32;
                region_ixps
                    .entry(region.to_string())
                    .and_modify(|r| r.end = n + 1)
                    .or_insert(n..n + 1);
            }
        }
        let by_id: HashMap<String, u32> = ids
            .iter()
            .enumerate()
            .map(|(n, (_, _, id))| (id.to_string(), n as u32))
            .collect();
        let of_appliance = appliances.iter().map(|a| by_id[a.site.as_str()]).collect();
        SiteNumbers {
            by_id,
            of_appliance,
            region_ixps,
        }
    }
}

mod holders;
pub mod maintenance;
mod registrations;
mod routes;
#[cfg(test)]
mod tests;

use holders::Holders;
use maintenance::Windows;

/// Coverage zones as the view keeps them: the country table, and the (prefix, site) pairs.
fn split_zones(all: Vec<Zone>) -> (PrefixTable<String>, Vec<(Prefix, String)>) {
    let mut countries = PrefixTable::default();
    let mut zones = Vec::new();
    for z in all {
        if let Some(country) = z.country {
            countries.insert(z.prefix, country);
        }
        if let Some(site) = z.site {
            zones.push((z.prefix, site));
        }
    }
    (countries, zones)
}
use oca_protocol::admin::MaintenanceWindow;
pub use registrations::Reload;
use routes::{best_routes, served_mut};
pub use routes::{heard_route, local_route, BgpHeard, Served};
