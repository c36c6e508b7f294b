//! What the portal shows, built once for both the pages and the scoped JSON API: the sites a
//! user may see with their appliances by status, a site's appliances, one appliance. Every
//! lookup goes through [`may_see_site`]; what the user may not see is `None`, which the
//! handlers answer with 404 (never 403, which would say the id exists).

use oca_protocol::admin::{BgpAppliance, Content, ServingState, SiteKind};
use oca_protocol::health::{BgpRoute, DiskReport, DiskState};
use serde::Serialize;

use crate::app::App;
use crate::domain::accounts::{may_see_site, PortalUser};
use crate::domain::catalog::CatalogView;
use crate::domain::maintenance::{self as rules, DrainThresholds, Figures};
use crate::fleet::{Candidate, Snapshot};
use crate::planning::planner::Demand;
use crate::planning::site_plan::SitePlan;
use crate::storage::{HealthRow, StorageError};
use crate::{routing, storage};

/// Most BGP routes an appliance page lists.
pub const MAX_ROUTES_SHOWN: usize = 200;

/// Most files of an appliance's fill queue listed (the rest are counted).
pub const MAX_FILL_QUEUE_SHOWN: usize = 50;

/// Appliance counts by status.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ByStatus {
    /// Reporting `ok`.
    pub ok: usize,
    /// Reporting `warning`.
    pub warning: usize,
    /// Reporting `error`.
    pub error: usize,
    /// Never heard from, or silent for 3 report intervals.
    pub unknown: usize,
}

impl ByStatus {
    fn count(&mut self, status: &str) {
        match status {
            "ok" => self.ok += 1,
            "warning" => self.warning += 1,
            "error" => self.error += 1,
            _ => self.unknown += 1,
        }
    }

    /// All appliances counted.
    pub fn total(&self) -> usize {
        self.ok + self.warning + self.error + self.unknown
    }
}

/// A site as the overview lists it.
#[derive(Serialize, Clone, Debug)]
pub struct SiteSummary {
    /// Site id.
    pub id: String,
    /// `isp` or `ixp`.
    pub kind: &'static str,
    /// Region.
    pub region: String,
    /// Owning organisation.
    pub org: Option<String>,
    /// Its appliances by status.
    pub appliances: ByStatus,
}

/// An appliance as a site page lists it.
#[derive(Serialize, Clone, Debug)]
pub struct ApplianceRow {
    /// Appliance id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// `ok`, `warning`, `error` or `unknown` (never reported, or silent for 3 intervals).
    pub status: String,
    /// Bits per second it sends now (last report).
    pub bits_per_sec: u64,
    /// What it can send, bits per second.
    pub capacity_bps: u64,
    /// Connections it serves (last report).
    pub connections: Option<u64>,
    /// Disks working (not failed).
    pub disks_working: usize,
    /// Disks reported.
    pub disks: usize,
    /// Bytes used on its disks.
    pub used_bytes: u64,
    /// Bytes its disks hold.
    pub capacity_bytes: u64,
    /// Unix seconds of its last report (none: never).
    pub last_report: Option<i64>,
    /// Seconds since then.
    pub report_age_secs: Option<i64>,
    /// Serving, or draining or drained during a maintenance window.
    pub serving: ServingState,
    /// When the maintenance window in force on it (or its site) ends, unix seconds.
    pub maintenance_until: Option<i64>,
    /// Files it holds of those its site's fill plan gives it (its manifest's entries); none
    /// before its first report of disks, when nothing is planned for it.
    pub fill: Option<Fill>,
    /// Why the live checks keep it out of steering (unreachable from the control plane, or not
    /// qualified when that is required), as steering's `explain=1` says; none when they do not.
    pub out_of_steering: Option<String>,
}

/// Fill progress: planned files held against files planned.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fill {
    /// Planned files it holds.
    pub held: usize,
    /// Files planned for it.
    pub planned: usize,
}

impl Fill {
    /// Planned files held, whole percent (100 when nothing is planned).
    pub fn percent(&self) -> usize {
        if self.planned == 0 {
            return 100;
        }
        self.held * 100 / self.planned
    }
}

impl ApplianceRow {
    /// The serving state, for people.
    pub fn serving_label(&self) -> &'static str {
        match self.serving {
            ServingState::Serving => "Serving",
            ServingState::Draining => "Draining",
            ServingState::Drained => "Drained",
        }
    }

    /// Gb/s now, for people.
    pub fn gbps(&self) -> String {
        format!("{:.2}", self.bits_per_sec as f64 / 1e9)
    }

    /// Capacity in Gb/s, for people.
    pub fn capacity_gbps(&self) -> String {
        format!("{:.1}", self.capacity_bps as f64 / 1e9)
    }

    /// Share of capacity in use, whole percent.
    pub fn load_percent(&self) -> u64 {
        if self.capacity_bps == 0 {
            return 0;
        }
        (self.bits_per_sec as u128 * 100 / self.capacity_bps as u128) as u64
    }

    /// Disk space used, whole percent.
    pub fn disk_percent(&self) -> u64 {
        if self.capacity_bytes == 0 {
            return 0;
        }
        (self.used_bytes as u128 * 100 / self.capacity_bytes as u128) as u64
    }

    /// Why it is out of steering, in short ("unreachable from the control plane", "not
    /// qualified"): the reason up to its details.
    pub fn gate_short(&self) -> Option<&str> {
        let reason = self.out_of_steering.as_deref()?;
        Some(reason.split_once(": ").map_or(reason, |(short, _)| short))
    }

    /// The last report's age, for people ("never", "12 s", "3 min", "2 h", "4 d").
    pub fn age(&self) -> String {
        match self.report_age_secs {
            None => "never".into(),
            Some(s) if s < 120 => format!("{} s", s.max(0)),
            Some(s) if s < 7200 => format!("{} min", s / 60),
            Some(s) if s < 172_800 => format!("{} h", s / 3600),
            Some(s) => format!("{} d", s / 86_400),
        }
    }
}

/// A site with its appliances.
#[derive(Serialize, Clone, Debug)]
pub struct SiteDetail {
    /// The site.
    pub site: SiteSummary,
    /// Its appliances, by id.
    pub appliances: Vec<ApplianceRow>,
}

/// One appliance with its disks and BGP.
#[derive(Serialize, Clone, Debug)]
pub struct ApplianceDetail {
    /// Its figures.
    pub appliance: ApplianceRow,
    /// Public base URL.
    pub url: String,
    /// Software version (last report).
    pub version: Option<String>,
    /// Its disks (last report).
    pub disk_list: Vec<DiskReport>,
    /// Its BGP sessions, when its last report carried BGP.
    pub bgp: Option<BgpAppliance>,
    /// Its BGP routes, at most [`MAX_ROUTES_SHOWN`], by prefix.
    pub routes: Vec<BgpRoute>,
    /// Whether it hears more routes than listed.
    pub more_routes: bool,
    /// Files its site plan gives it that it does not hold yet, in plan order, the first
    /// [`MAX_FILL_QUEUE_SHOWN`].
    pub fill_queue: Vec<QueuedFile>,
    /// Files it does not hold yet, listed or not.
    pub fill_queue_total: usize,
}

/// A file of a fill queue.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct QueuedFile {
    /// Content id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Size in bytes, from the catalog.
    pub size: u64,
}

impl QueuedFile {
    /// Its size, for people.
    pub fn size_label(&self) -> String {
        bytes(self.size)
    }
}

impl ApplianceDetail {
    /// Files queued and not listed.
    pub fn fill_queue_rest(&self) -> usize {
        self.fill_queue_total.saturating_sub(self.fill_queue.len())
    }
}

/// The status a person sees: the reported one while fresh, else `unknown`.
fn status_of(a: &Candidate, now: i64, stale_after: i64) -> String {
    match &a.status {
        Some(s) if routing::fresh(a, now, stale_after) => s.clone(),
        _ => "unknown".into(),
    }
}

fn kind_str(kind: SiteKind) -> &'static str {
    kind.as_str()
}

/// What every row of a page is computed against.
struct RowContext<'a> {
    snap: &'a Snapshot,
    catalog: &'a CatalogView,
    plan: Option<&'a SitePlan>,
    drain: &'a DrainThresholds,
    now: i64,
    stale_after: i64,
}

/// Planned files held: the site plan's files for the appliance that the catalog still has (the
/// entries of its manifest), and of them those its last inventory lists.
fn fill(cx: &RowContext<'_>, a: &Candidate) -> Option<Fill> {
    let (mut held, mut count) = (0, 0);
    for (id, _) in planned_files(cx, a) {
        count += 1;
        held += usize::from(cx.snap.holds(&a.id, id));
    }
    (a.storage_bytes > 0).then_some(Fill {
        held,
        planned: count,
    })
}

/// The files the site plan gives the appliance that the catalog still has (the entries of its
/// manifest), in plan order: what fill progress counts and the fill queue lists.
fn planned_files<'c>(
    cx: &'c RowContext<'_>,
    a: &Candidate,
) -> impl Iterator<Item = (&'c str, &'c Content)> {
    cx.plan
        .and_then(|p| p.by_appliance.get(&a.id))
        .into_iter()
        .flatten()
        .filter_map(|id| Some((id.as_str(), cx.catalog.content(id)?)))
}

/// The planned files the appliance does not hold yet: the first [`MAX_FILL_QUEUE_SHOWN`] and
/// how many in all.
fn fill_queue(cx: &RowContext<'_>, a: &Candidate) -> (Vec<QueuedFile>, usize) {
    let mut queue = Vec::new();
    let mut total = 0;
    for (id, c) in planned_files(cx, a).filter(|(id, _)| !cx.snap.holds(&a.id, id)) {
        total += 1;
        if queue.len() < MAX_FILL_QUEUE_SHOWN {
            queue.push(QueuedFile {
                id: id.to_string(),
                title: c.title.clone(),
                size: c.size,
            });
        }
    }
    (queue, total)
}

fn row(a: &Candidate, health: Option<&HealthRow>, cx: &RowContext<'_>) -> ApplianceRow {
    let (now, stale_after) = (cx.now, cx.stale_after);
    let disks = health.map(|h| h.disks.as_slice()).unwrap_or_default();
    let reported = a.status.is_some();
    let window = cx.snap.maintenance(a, now);
    let figures = reported.then(|| Figures {
        active_connections: health.map_or(0, |h| h.active_connections),
        bytes_per_sec: a.bytes_per_sec,
        at: a.last_report,
    });
    ApplianceRow {
        id: a.id.clone(),
        site: a.site.clone(),
        status: status_of(a, now, stale_after),
        bits_per_sec: a.bytes_per_sec.saturating_mul(8),
        capacity_bps: a.capacity_bps,
        connections: health.map(|h| h.active_connections),
        disks_working: disks
            .iter()
            .filter(|d| d.state != DiskState::Failed)
            .count(),
        disks: disks.len(),
        used_bytes: disks.iter().map(|d| d.used_bytes).sum(),
        capacity_bytes: disks.iter().map(|d| d.capacity_bytes).sum(),
        last_report: reported.then_some(a.last_report),
        report_age_secs: reported.then_some(now - a.last_report),
        serving: rules::serving_state(window, figures.as_ref(), cx.drain, now, stale_after),
        maintenance_until: window.map(rules::effective_end),
        fill: fill(cx, a),
        out_of_steering: cx
            .snap
            .index_of(&a.id)
            .and_then(|i| cx.snap.gate(i))
            .map(str::to_string),
    }
}

/// The site plan of `site` (cached by the planner), read with the catalog held by the caller.
fn site_plan(
    app: &App,
    catalog: &CatalogView,
    snap: &Snapshot,
    site: &str,
    now: i64,
) -> std::sync::Arc<SitePlan> {
    let demand = Demand {
        catalog,
        popularity: &app.popularity,
        config: &app.fill,
    };
    app.planner.site_plan(snap, site, &demand, now)
}

fn summary(snap: &Snapshot, s: storage::Site, now: i64, stale_after: i64) -> SiteSummary {
    let mut by = ByStatus::default();
    for a in snap.site_appliances(&s.id) {
        by.count(&status_of(a, now, stale_after));
    }
    SiteSummary {
        id: s.id,
        kind: kind_str(s.kind),
        region: s.region,
        org: s.org,
        appliances: by,
    }
}

/// The sites `user` may see, by id, with their appliances by status at `now`.
pub fn sites(app: &App, user: &PortalUser, now: i64) -> Result<Vec<SiteSummary>, StorageError> {
    let sites = app.store.sites()?;
    let snap = app.fleet()?;
    Ok(sites
        .into_iter()
        .filter(|s| may_see_site(user, s.org.as_deref()))
        .map(|s| summary(&snap, s, now, app.stale_after()))
        .collect())
}

/// Site `id` with its appliances, if `user` may see it.
pub fn site(
    app: &App,
    user: &PortalUser,
    id: &str,
    now: i64,
) -> Result<Option<SiteDetail>, StorageError> {
    let Some(org) = app.store.site_org(id)? else {
        return Ok(None);
    };
    if !may_see_site(user, org.as_deref()) {
        return Ok(None);
    }
    let health = app.store.site_health(id)?;
    // The catalog before the fleet view: the lock order of `App`.
    let catalog = app.catalog();
    let snap = app.fleet()?;
    // The fleet view has the site's kind and region: no scan of every site.
    let Some((_, info)) = snap.site(id) else {
        return Ok(None);
    };
    let s = storage::Site {
        id: id.to_string(),
        kind: info.kind,
        region: info.region.clone(),
        parent: info.parent.clone(),
        allowed_prefixes: Vec::new(),
        org,
    };
    let stale_after = app.stale_after();
    let plan = site_plan(app, &catalog, &snap, id, now);
    let cx = RowContext {
        snap: &snap,
        catalog: &catalog,
        plan: Some(&plan),
        drain: &app.drain,
        now,
        stale_after,
    };
    let mut appliances: Vec<ApplianceRow> = snap
        .site_appliances(id)
        .into_iter()
        .map(|a| {
            let h = health.iter().find(|h| h.oca_id == a.id);
            row(a, h, &cx)
        })
        .collect();
    appliances.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Some(SiteDetail {
        site: summary(&snap, s, now, stale_after),
        appliances,
    }))
}

/// Appliance `id` with its disks and BGP, if `user` may see its site.
pub fn appliance(
    app: &App,
    user: &PortalUser,
    id: &str,
    now: i64,
) -> Result<Option<ApplianceDetail>, StorageError> {
    let Some(site) = appliance_site(app, user, id)? else {
        return Ok(None);
    };
    let (candidate, bgp) = {
        let snap = app.fleet()?;
        let Some(a) = snap.appliance(id) else {
            return Ok(None);
        };
        let bgp = routing::sessions(&snap, Some(id)).into_iter().next();
        (a.clone(), bgp)
    };
    let health = app
        .store
        .site_health(&candidate.site)?
        .into_iter()
        .find(|h| h.oca_id == id);
    let mut routes: Vec<BgpRoute> = if bgp.is_some() {
        app.store
            .bgp_routes(Some(id), None, MAX_ROUTES_SHOWN + 1)?
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    } else {
        Vec::new()
    };
    let more_routes = routes.len() > MAX_ROUTES_SHOWN;
    routes.truncate(MAX_ROUTES_SHOWN);
    let (row, (fill_queue, fill_queue_total)) = {
        let catalog = app.catalog();
        let snap = app.fleet()?;
        let plan = site_plan(app, &catalog, &snap, &site, now);
        let cx = RowContext {
            snap: &snap,
            catalog: &catalog,
            plan: Some(&plan),
            drain: &app.drain,
            now,
            stale_after: app.stale_after(),
        };
        let queue = fill_queue(&cx, &candidate);
        (row(&candidate, health.as_ref(), &cx), queue)
    };
    Ok(Some(ApplianceDetail {
        appliance: row,
        url: candidate.url,
        version: health.as_ref().map(|h| h.version.clone()),
        disk_list: health.map(|h| h.disks).unwrap_or_default(),
        bgp,
        routes,
        more_routes,
        fill_queue,
        fill_queue_total,
    }))
}

/// Whether `user` may see site `id` (false when there is none).
pub fn may_see_site_id(app: &App, user: &PortalUser, id: &str) -> Result<bool, StorageError> {
    Ok(match app.store.site_org(id)? {
        Some(org) => may_see_site(user, org.as_deref()),
        None => false,
    })
}

/// The site of appliance `id`, if there is one and `user` may see it.
pub fn appliance_site(
    app: &App,
    user: &PortalUser,
    id: &str,
) -> Result<Option<String>, StorageError> {
    let site = match app.fleet()?.appliance(id) {
        Some(a) => a.site.clone(),
        None => return Ok(None),
    };
    Ok(may_see_site_id(app, user, &site)?.then_some(site))
}

/// Bytes for people: kB, MB, GB or TB (decimal, as disks and links are sold).
pub fn bytes(n: u64) -> String {
    let b = n as f64;
    match n {
        0..1_000_000 => format!("{} kB", (b / 1e3).round()),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        1_000_000_000..1_000_000_000_000 => format!("{:.1} GB", b / 1e9),
        _ => format!("{:.1} TB", b / 1e12),
    }
}
