//! The composition root: [`App`] holds storage, the in-memory views (catalog, fleet, keys), the
//! planner, the stream leases, the counters and the settings, and runs the few operations that
//! span several of them (a play, a health report, a manifest). Handlers call these; the
//! modules below it never see `App`.
//!
//! # Locks
//! Wherever two are held at once, the catalog view is taken first, then the fleet view, then
//! the planner's locks (a play, a manifest, an admin catalog change): one order everywhere, so a
//! writer waiting on one view never closes a cycle of readers (parking_lot's locks are fair: a
//! waiting writer holds back new readers). parking_lot's locks do not poison: a panic in one
//! handler leaves the views usable by the others, as they are only changed by whole assignments
//! or single inserts.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;

use oca_protocol::health::HealthReport;
use oca_protocol::manifest::Manifest;
use oca_protocol::playback::{PlayAnswer, PlayRequest};
use oca_protocol::prefix::Prefix;
use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::domain::catalog::CatalogView;
use crate::domain::intake::{self, ReportError, RoutesKept};
use crate::domain::player_tokens::TokenKey;
use crate::domain::popularity::Popularity;
use crate::domain::streams::Streams;
use crate::domain::url_keys::{self, Keys};
use crate::fleet::{Candidate, Snapshot};
use crate::metrics::Metrics;
use crate::planning::config::FillConfig;
use crate::planning::manifest::{self, ManifestInputs, NoManifest};
use crate::planning::planner::{Demand, Planner};
use crate::play::{self, Granted, PlayError, PlayInputs};
use crate::storage::{Accepted, ReportedAppliance, Site, Storage, StorageError};

/// Seconds since the epoch: the clock, read here at the edge and passed down (the database
/// stores times as SQLite integers, i64).
pub fn unix_now() -> i64 {
    oca_service::unix_now() as i64
}

/// Shared state of the handlers.
pub struct App {
    /// Storage.
    pub store: Arc<dyn Storage>,
    /// Titles, renditions and subscribers in memory (written through by the admin API).
    pub catalog: RwLock<CatalogView>,
    /// Concurrent-stream leases.
    pub streams: Streams,
    /// Title popularity from plays.
    pub popularity: Popularity,
    /// Fill plans and what the planner remembers.
    pub planner: Planner,
    /// Fill settings.
    pub fill: FillConfig,
    /// Counters.
    pub metrics: Metrics,
    /// Seconds between health reports asked of appliances.
    pub report_interval_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front of the control plane).
    pub trusted_proxies: Vec<IpAddr>,
    /// The embedded origin's directory.
    pub origin_dir: std::path::PathBuf,
    /// SHA-256 of the admin bearer token.
    pub admin_token_sha256: [u8; 32],
    /// Steering's in-memory view of the fleet.
    pub fleet: RwLock<Snapshot>,
    /// Set by admin changes; the next reader of the fleet view reloads it.
    pub fleet_stale: AtomicBool,
    /// Held while zones or maintenance windows are reread and set in the fleet view, so a
    /// read cannot overwrite a newer one ([`App::reload_windows`], [`App::reload_zones`]).
    pub fleet_parts: parking_lot::Mutex<()>,
    /// The URL-signing keys in force (storage holds them; this avoids a read per request).
    pub keys: RwLock<Arc<Keys>>,
    /// Signs and verifies player tokens.
    pub player_tokens: TokenKey,
    /// Total time a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Permits to read a large health report.
    pub large_reports: tokio::sync::Semaphore,
    /// BGP routes one health report may carry; a report with more is refused whole.
    pub max_routes_per_appliance: usize,
    /// The portal's account settings and login limits.
    pub accounts: crate::domain::accounts::Accounts,
    /// Below these, an appliance in maintenance counts as drained.
    pub drain: crate::domain::maintenance::DrainThresholds,
    /// Traffic history: bucket width, retention.
    pub history: crate::domain::history::HistoryConfig,
    /// Probe results, qualifications and their settings (`live/`).
    pub live: crate::domain::live::LiveChecks,
    /// Whether a load balancer should send this replica new requests (`/readyz`).
    pub readiness: Arc<crate::server::readiness::Readiness>,
    /// Serialises, per appliance, recording a report and applying it to the fleet view with
    /// the change feed's rereading of that appliance (the follower), so neither
    /// overwrites the other's newer state.
    pub report_locks: ReportLocks,
    /// Bumped at every write access to the catalog view: the follower swaps in a catalog it
    /// reloaded only when no write came between its read and the swap.
    pub catalog_writes: std::sync::atomic::AtomicU64,
}

/// One lock per appliance ([`App::report_locks`]), made at its first report. Only
/// authenticated appliances report, so there are as many as registered appliances.
#[derive(Default)]
pub struct ReportLocks(
    parking_lot::Mutex<std::collections::HashMap<String, Arc<parking_lot::Mutex<()>>>>,
);

impl ReportLocks {
    /// Runs `f` holding appliance `oca_id`'s lock.
    pub fn with<T>(&self, oca_id: &str, f: impl FnOnce() -> T) -> T {
        let lock = self.of(oca_id);
        let _turn = lock.lock();
        f()
    }

    /// Runs `f` holding the locks of every appliance in `ids`, taken in id order. Whoever
    /// holds one lock takes no other (a report's recording holds its appliance's alone), so
    /// taking several in any order closes no cycle; the order keeps two such callers apart.
    pub fn with_all<T>(&self, ids: &[&str], f: impl FnOnce() -> T) -> T {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let locks: Vec<_> = ids.iter().map(|id| self.of(id)).collect();
        let _turns: Vec<_> = locks.iter().map(|l| l.lock()).collect();
        f()
    }

    fn of(&self, oca_id: &str) -> Arc<parking_lot::Mutex<()>> {
        self.0.lock().entry(oca_id.to_string()).or_default().clone()
    }
}

/// What a health report came to.
pub struct ReportOutcome {
    /// What storage concluded about the inventory.
    pub accepted: Accepted,
    /// The version of the appliance's manifest now (0: none yet).
    pub manifest_version: u64,
    /// The appliance's site (whose keys the reply carries).
    pub site: String,
    /// Static prefixes and BGP routes' prefixes dropped for being outside the site's allowed
    /// set, each once, sorted.
    pub refused: Vec<Prefix>,
    /// Why the report's BGP routes were refused (the routes on record stayed), if they were.
    pub routes_refused: Option<String>,
}

impl App {
    /// Write access to the fleet view.
    pub fn fleet_mut(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.fleet.write()
    }

    /// Seconds of silence after which an appliance is stale (3 report intervals).
    pub fn stale_after(&self) -> i64 {
        crate::fleet::stale_after(self.report_interval_secs)
    }

    /// The URL-signing keys in force.
    pub fn keys(&self) -> Arc<Keys> {
        self.keys.read().clone()
    }

    /// Rereads the keys from storage (after a rotation or a new site).
    pub fn reload_keys(&self) -> Result<(), StorageError> {
        let fresh = Arc::new(url_keys::load(self.store.as_ref())?);
        *self.keys.write() = fresh;
        Ok(())
    }

    /// Read access to the catalog view.
    pub fn catalog(&self) -> RwLockReadGuard<'_, CatalogView> {
        self.catalog.read()
    }

    /// Write access to the catalog view; held across the storage write it mirrors, so the view
    /// applies admin changes in the order they committed.
    pub fn catalog_mut(&self) -> RwLockWriteGuard<'_, CatalogView> {
        let view = self.catalog.write();
        self.catalog_writes.fetch_add(1, SeqCst);
        view
    }

    /// Whether subscriber `id` exists, for admin requests: the catalog view, or storage when
    /// the view has not heard of it (another replica created it within the change feed's
    /// bound), which then tells the view. An admin who creates a subscriber through a load
    /// balancer and then asks another replica for its token must not be told it does not
    /// exist.
    pub fn subscriber_exists(&self, id: &str) -> Result<bool, StorageError> {
        if self.catalog().subscriber(id).is_some() {
            return Ok(true);
        }
        match self.store.subscriber(id)? {
            Some(s) => {
                self.catalog_mut().put_subscriber(s);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Marks the fleet view stale after an admin change to sites or appliances; the next
    /// reader reloads it, so registering thousands of appliances costs one reload, not one each.
    pub fn fleet_changed(&self) {
        self.fleet_stale.store(true, SeqCst);
    }

    /// Rereads the maintenance windows not over into the fleet view, after one was opened or
    /// ended (here or on another replica): a few rows, where a whole reload of the view reads
    /// every appliance's routes and inventory under its write lock.
    pub fn reload_windows(&self) -> Result<(), StorageError> {
        let _order = self.fleet_parts.lock();
        let open = self.store.open_windows(unix_now())?;
        self.fleet_mut().set_windows(open);
        Ok(())
    }

    /// Rereads the coverage zones into the fleet view, after one was written (here or on
    /// another replica).
    pub fn reload_zones(&self) -> Result<(), StorageError> {
        let _order = self.fleet_parts.lock();
        let zones = self.store.zones()?;
        self.fleet_mut().set_zones(zones);
        Ok(())
    }

    /// Applies registered sites and appliances (as committed, sites first) to the fleet view
    /// in place, or, when one cannot be placed so ([`crate::fleet::Reload`]), marks the view
    /// for a whole reload by its next reader.
    pub fn registered(&self, sites: &[Site], appliances: Vec<ReportedAppliance>) {
        let downtime = self.store.downtime();
        let mut fleet = self.fleet_mut();
        let placed = sites
            .iter()
            .try_for_each(|s| fleet.put_site(s))
            .and_then(|()| {
                appliances.into_iter().try_for_each(|a| {
                    let gate = self.live.gate(&a.appliance.id);
                    fleet.put_appliance(Candidate::of(a, downtime), gate)
                })
            });
        if let Err(why) = placed {
            drop(fleet);
            tracing::debug!(?why, "registration: reloading the fleet view");
            self.fleet_changed();
        }
    }

    /// Places registered appliances the fleet view does not hold yet, with their sites if
    /// those are new too: registered on another replica, their registrations still on their way
    /// through the change feed (which lags by as long as a batch takes to apply), while the
    /// appliances already report here. Without this their reports were lost to the view until
    /// the feed caught up, and steering left them out as "never reported" meanwhile.
    pub fn ensure_in_view(&self, oca_ids: &[&str]) -> Result<(), StorageError> {
        let missing: Vec<String> = {
            let fleet = self.fleet.read();
            oca_ids
                .iter()
                .filter(|id| fleet.index_of(id).is_none())
                .map(|id| id.to_string())
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let found = self.store.reported_appliances_among(&missing)?;
        let new_sites: BTreeSet<&str> = {
            let fleet = self.fleet.read();
            found
                .iter()
                .map(|a| a.appliance.site.as_str())
                .filter(|site| fleet.site(site).is_none())
                .collect()
        };
        let mut sites = Vec::new();
        if !new_sites.is_empty() {
            sites = self.store.sites()?;
            sites.retain(|s| new_sites.contains(s.id.as_str()));
        }
        self.registered(&sites, found);
        Ok(())
    }

    /// Read access to the fleet view, reloaded first when an admin change made it stale.
    pub fn fleet(&self) -> Result<RwLockReadGuard<'_, Snapshot>, StorageError> {
        if self.fleet_stale.load(SeqCst) {
            // The load runs under the write lock, so no reader acts on the view the admin
            // change made stale; a change committed during the load sets the flag again.
            let mut fleet = self.fleet_mut();
            if self.fleet_stale.swap(false, SeqCst) {
                self.metrics.fleet_reloads.inc();
                match Snapshot::load(self.store.as_ref(), unix_now()) {
                    Ok(fresh) => {
                        *fleet = fresh;
                        fleet.set_gates(&|id| self.live.gate(id));
                    }
                    Err(e) => {
                        self.fleet_stale.store(true, SeqCst);
                        return Err(e);
                    }
                }
            }
        }
        Ok(self.fleet.read())
    }

    /// Answers a play of `subscriber` (authenticated by its token) from `client` at `now`; the
    /// answer may be sent once [`App::confirm`] says its lease is durable.
    pub fn play(
        &self,
        subscriber: &str,
        req: &PlayRequest,
        client: IpAddr,
        now: i64,
    ) -> Result<Granted, PlayError> {
        let catalog = self.catalog();
        let sub = play::admit(&catalog, subscriber, req)?;
        let fleet = self.fleet()?;
        let keys = self.keys();
        let inputs = PlayInputs {
            catalog: &catalog,
            fleet: &fleet,
            keys: &keys,
            popularity: &self.popularity,
            streams: &self.streams,
            metrics: &self.metrics,
            report_interval_secs: self.report_interval_secs,
        };
        play::answer(&inputs, sub, req, client, now)
    }

    /// Waits until a play's stream lease is durable.
    pub async fn confirm(&self, granted: Granted) -> Result<PlayAnswer, PlayError> {
        play::confirm(&self.streams, granted).await
    }

    /// The manifest of appliance `oca_id` at `now`.
    pub fn manifest(&self, oca_id: &str, now: i64) -> Result<Manifest, NoManifest> {
        let catalog = self.catalog();
        let fleet = self.fleet()?;
        let keys = self.keys();
        let inputs = self.manifest_inputs(&catalog, &keys);
        manifest::manifest(&inputs, &fleet, oca_id, now)
    }

    /// The version of appliance `oca_id`'s manifest at `now`, without signing its URLs.
    pub fn manifest_version(&self, oca_id: &str, now: i64) -> Result<u64, NoManifest> {
        let catalog = self.catalog();
        let fleet = self.fleet()?;
        let keys = self.keys();
        let inputs = self.manifest_inputs(&catalog, &keys);
        manifest::version(&inputs, &fleet, oca_id, now)
    }

    fn manifest_inputs<'a>(
        &'a self,
        catalog: &'a CatalogView,
        keys: &'a Keys,
    ) -> ManifestInputs<'a> {
        ManifestInputs {
            planner: &self.planner,
            demand: Demand {
                catalog,
                popularity: &self.popularity,
                config: &self.fill,
            },
            keys,
            report_interval_secs: self.report_interval_secs,
        }
    }

    /// Takes a health report of an authenticated appliance, arrived at `clock()`: keeps the
    /// routes on record in place of its own while its speaker converges or when it has too
    /// many, drops the routes its site may not announce, records it, applies it to the fleet
    /// view once committed (a moved route steers from here on), notes the sources it found
    /// bad, and gives the version of its manifest now.
    ///
    /// The fleet view hears the appliance when the report is committed (`clock()` again), not
    /// when it arrived: a large inventory may take longer to record than the 3 intervals after
    /// which an appliance counts as silent.
    pub fn accept_report(
        &self,
        report: HealthReport,
        clock: impl Fn() -> i64,
    ) -> Result<ReportOutcome, ReportError> {
        let now = clock();
        let mut report = report;
        let cut = intake::bound_bgp(&mut report);
        if cut > 0 {
            tracing::warn!(oca_id = %report.oca_id, cut, "oversized BGP fields of a health report cut to their bounds");
        }
        let routes_kept = intake::routes_kept(&report, self.max_routes_per_appliance);
        if let Some(why) = &routes_kept {
            if let RoutesKept::TooMany { .. } = why {
                tracing::warn!(oca_id = %report.oca_id, error = %why, "BGP routes of a health report refused");
                self.metrics.bgp_reports_refused.inc();
            }
            self.keep_routes_on_record(&mut report)?;
        }
        let standing = self.store.standing(&report.oca_id)?;
        let screened = intake::screen_routes(report, &standing.allowed);
        let (report, refused) = (screened.report, screened.refused);
        if !refused.is_empty() {
            tracing::warn!(oca_id = %report.oca_id, site = %standing.site, refused = ?refused, "reported routes outside the site's allowed set dropped");
            self.metrics
                .prefixes_refused
                .inc_by(screened.statics_refused as u64);
            self.metrics
                .bgp_routes_refused
                .inc_by(screened.routes_refused as u64);
        }
        let accepted = self.report_locks.with(&report.oca_id, || {
            let accepted = self.store.record_report(&report, now)?;
            // Memory follows storage only once the report is committed.
            let heard = clock().max(now);
            let previous = match Snapshot::apply(&self.fleet, &report, &accepted, heard) {
                Some(p) => Some(p),
                None => {
                    self.ensure_in_view(&[&report.oca_id])?;
                    Snapshot::apply(&self.fleet, &report, &accepted, heard)
                }
            };
            if let Some(p) = previous.filter(|&p| p > 0) {
                self.metrics.report_age.observe((heard - p).max(0) as f64);
            }
            Ok::<_, StorageError>(accepted)
        })?;
        if !report.fill_errors.is_empty() {
            for e in &report.fill_errors {
                tracing::warn!(oca_id = %report.oca_id, content = %e.content_id, source = %e.source, reason = %e.reason, "fill source failed");
            }
            self.metrics
                .fill_source_errors
                .inc_by(report.fill_errors.len() as u64);
            self.planner.report_bad_sources(&report.fill_errors, now);
        }
        let manifest_version = match self.manifest_version(&report.oca_id, now) {
            Ok(v) => v,
            Err(NoManifest::Storage(e)) => return Err(e.into()),
            Err(NoManifest::Unknown | NoManifest::NoStorage) => 0,
        };
        Ok(ReportOutcome {
            accepted,
            manifest_version,
            site: standing.site,
            refused,
            routes_refused: routes_kept
                .filter(|k| matches!(k, RoutesKept::TooMany { .. }))
                .map(|k| k.to_string()),
        })
    }

    /// Puts the routes on record in place of the report's own (the sessions stay the
    /// report's), so recording it changes no route.
    fn keep_routes_on_record(&self, report: &mut HealthReport) -> Result<(), StorageError> {
        let on_record =
            self.store
                .bgp_routes(Some(&report.oca_id), None, self.max_routes_per_appliance)?;
        if let Some(bgp) = report.bgp.as_mut() {
            bgp.routes = on_record.into_iter().map(|(_, r)| r).collect();
        }
        Ok(())
    }
}
