//! Storage: what the control plane keeps across restarts, behind one interface that each
//! database engine implements: [`sqlite`] (one file, the embedded default) and [`postgres`]
//! (a database any number of control-plane replicas share), from one ordered list of schema
//! migrations ([`migrations`]).
//!
//! # The interface
//! [`Storage`] is the whole of it: one trait per area ([`FleetStore`], [`InventoryStore`],
//! [`CatalogStore`], [`KeyStore`], [`LeaseStore`], [`HistoryStore`]), so an engine is written and reviewed area by
//! area. Methods take borrowed rows and return owned ones; nothing above this module sees SQL,
//! a connection or a transaction.
//!
//! # The clock comes in
//! No method reads the time: every write that records one takes `now` (unix seconds) from its
//! caller, so tests drive time and two replicas agree on what "now" meant. The one exception is
//! opening a database, which notes when this process started ([`Downtime`]); the engine's
//! `open` takes that time too.
//!
//! # `Arc<dyn Storage>`, not a generic parameter
//! The composition root holds `Arc<dyn Storage>`. Every call into storage does I/O (a SQLite
//! statement, a PostgreSQL round trip), beside which a virtual call is noise; the hot play
//! path reads in-memory views (catalog, fleet, keys) and never calls storage, so nothing there
//! pays for it. A generic `App<S>` would instead spread `S` through every handler and test
//! for no measurable gain.

pub mod accounts;
pub mod changes;
pub mod history;
pub mod leases;
pub mod live;
pub(crate) mod migrations;
pub mod postgres;
pub mod scoped;
pub mod scoped_issues;
pub mod sqlite;

use oca_protocol::health::{BgpRoute, BgpSession, DiskReport, HealthReport, Status};
use oca_protocol::prefix::Prefix;

pub use live::{IssueStore, QualificationStore};
pub use oca_protocol::admin::{
    Appliance, ApplianceState, Content, Site, SiteKind, Subscriber, Title, Zone,
};
pub use oca_protocol::admin::{AuditEntry, MaintenanceWindow, TargetKind};

pub use accounts::{AccountStore, HealthRow, SessionRow, UserRow};

pub use history::{HistorySettings, HistoryStore, SiteMisses, Traffic};
pub use scoped::{Scope, ScopedMaintenanceStore};
pub use scoped_issues::ScopedIssueStore;

/// Errors from storage.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A row with this key exists.
    #[error("{0} already exists")]
    Exists(String),
    /// A referenced row does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// The engine failed.
    #[error("database: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What storage calls return.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Full inventories longer than this are written in chunks of this many entries, each in its
/// own short transaction, so other writers (reports, stream leases) never queue behind one
/// large transaction; the fleet view applies them in chunks of the same size.
pub const INVENTORY_CHUNK: usize = 10_000;

/// Storage on the disks a report lists as usable (not failed).
pub fn usable_storage(disks: &[DiskReport]) -> u64 {
    disks
        .iter()
        .filter(|d| d.state != oca_protocol::health::DiskState::Failed)
        .map(|d| d.capacity_bytes)
        .sum()
}

/// A status as stored and as the fleet view shows it.
pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warning => "warning",
        Status::Error => "error",
    }
}

/// The control plane's own downtime before this start. Appliances report to it; while it was
/// away nobody listened, so that silence says nothing about them and is not counted when
/// judging whether a report is fresh: an appliance fresh when the control plane stopped stays
/// fresh for the rest of its 3 intervals after the restart, instead of every appliance looking
/// silent (and every play being refused) until the first reports arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downtime {
    /// When this process opened the database (Unix seconds).
    pub started: i64,
    /// Seconds from the newest report on record (about when the control plane stopped) to then.
    pub secs: i64,
}

impl Downtime {
    /// A report's time with the downtime not counted.
    pub fn heard(&self, last_report: i64) -> i64 {
        if last_report < self.started {
            last_report + self.secs
        } else {
            last_report
        }
    }
}

/// An appliance's place: its site and the prefixes it may report.
pub struct Standing {
    /// Its site (as registered, whatever the report says).
    pub site: String,
    /// The site's allowed prefixes.
    pub allowed: Vec<Prefix>,
}

/// What recording a report concluded about the inventory.
pub struct Accepted {
    /// The inventory sequence now on record.
    pub inventory_seq: u64,
    /// Whether the appliance must send a full inventory next time.
    pub send_full_inventory: bool,
}

/// An appliance with what its last report said (none of it before its first report).
pub struct ReportedAppliance {
    /// The appliance as registered.
    pub appliance: Appliance,
    /// Last reported status (`ok|warning|error`).
    pub status: Option<String>,
    /// Unix seconds of the last report as recorded (0: never), downtime counted.
    pub last_report: i64,
    /// Last reported bytes per second.
    pub bytes_per_sec: u64,
    /// Last reported disks.
    pub disks: Vec<DiskReport>,
}

impl ReportedAppliance {
    /// An appliance just registered: no report yet.
    pub fn unreported(appliance: Appliance) -> ReportedAppliance {
        ReportedAppliance {
            appliance,
            status: None,
            last_report: 0,
            bytes_per_sec: 0,
            disks: Vec::new(),
        }
    }
}

/// One URL-signing key as stored.
pub struct StoredKey {
    /// The site whose keyring it belongs to; none: the embedded origin's.
    pub site: Option<String>,
    /// Key id (a URL's `k`).
    pub id: String,
    /// The secret.
    pub secret: Vec<u8>,
}

/// A title's popularity as saved: decayed score and when it was last updated (unix seconds).
pub type SavedScore = (String, f64, i64);

/// A popularity score of time `from` as of time `to`: it halves every `half_life_secs` (never
/// grows: a `to` before `from`, another replica's clock a little ahead, counts as no time).
/// The one formula the domain and every engine's merge use.
pub fn decayed(score: f64, from: i64, to: i64, half_life_secs: f64) -> f64 {
    score * 0.5f64.powf((to - from).max(0) as f64 / half_life_secs)
}

/// One stream lease: a subscriber's slot for a title until `expires` (unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// The subscriber.
    pub subscriber: String,
    /// The title.
    pub title: String,
    /// When the lease ends.
    pub expires: i64,
}

/// Everything the control plane keeps: a database engine implements each area's trait and this.
pub trait Storage:
    FleetStore
    + InventoryStore
    + CatalogStore
    + KeyStore
    + LeaseStore
    + AccountStore
    + MaintenanceStore
    + HistoryStore
    + IssueStore
    + QualificationStore
    + ScopedMaintenanceStore
    + ScopedIssueStore
    + Send
    + Sync
{
    /// The schema version in force.
    fn schema_version(&self) -> Result<i64>;

    /// How long the control plane was away before this start.
    fn downtime(&self) -> Downtime;

    /// One cheap round trip proving this replica can write now (`/readyz` calls it about once
    /// a second, off the async workers, under a deadline): an error, or no answer within the
    /// deadline, takes the replica out of its load balancer. It changes nothing.
    fn ping(&self) -> Result<()>;

    /// A position at the end of the change feed, with a connection of its own (see
    /// [`changes`]); none on an engine whose database this process alone writes (SQLite).
    fn change_feed(&self) -> Result<Option<Box<dyn changes::ChangeFeed>>> {
        Ok(None)
    }
}

/// Sites, appliances, coverage zones and what appliances last reported about themselves.
pub trait FleetStore {
    /// Adds a site (its parent must exist).
    fn create_site(&self, s: &Site) -> Result<()>;

    /// All sites, by id.
    fn sites(&self) -> Result<Vec<Site>>;

    /// Replaces the prefixes site `id` may report.
    fn set_allowed_prefixes(&self, id: &str, prefixes: &[Prefix]) -> Result<()>;

    /// Registers an appliance with the hash of its credential, at `now`.
    fn create_appliance(&self, a: &Appliance, credential_sha256: &[u8; 32], now: i64)
        -> Result<()>;

    /// The hash of appliance `oca_id`'s credential; none for an unknown appliance.
    fn credential_sha256(&self, oca_id: &str) -> Result<Option<Vec<u8>>>;

    /// The site and allowed prefixes of appliance `oca_id`.
    fn standing(&self, oca_id: &str) -> Result<Standing>;

    /// All appliances with their health as of `now`: `unknown` when never heard from or silent
    /// for more than `stale_after` seconds (3 report intervals).
    fn appliance_states(&self, now: i64, stale_after: i64) -> Result<Vec<ApplianceState>>;

    /// Every appliance with its last report, by id.
    fn reported_appliances(&self) -> Result<Vec<ReportedAppliance>>;

    /// One appliance with its last report; none when it is not registered.
    fn reported_appliance(&self, id: &str) -> Result<Option<ReportedAppliance>>;

    /// The appliances among `ids` that are registered, with their last reports.
    fn reported_appliances_among(&self, ids: &[String]) -> Result<Vec<ReportedAppliance>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.reported_appliance(id)?);
        }
        Ok(out)
    }

    /// The static prefixes each appliance last reported: (appliance id, prefix).
    fn reported_prefixes(&self) -> Result<Vec<(String, Prefix)>>;

    /// Calls `each(appliance id, sessions, routes)` for every appliance whose last report
    /// carried BGP, its routes sorted by (prefix, neighbour). One appliance at a time, so a
    /// fleet's routes are never all in memory twice.
    fn reported_bgp(
        &self,
        each: &mut dyn FnMut(String, Vec<BgpSession>, Vec<BgpRoute>),
    ) -> Result<()>;

    /// BGP routes as last reported: appliance `oca_id`'s (of `prefix` only, when given), or
    /// every appliance's; at most `limit`, by appliance, prefix text and neighbour. By `prefix`
    /// alone it scans every route: ask the fleet view who hears a prefix, then each of them.
    fn bgp_routes(
        &self,
        oca_id: Option<&str>,
        prefix: Option<&Prefix>,
        limit: usize,
    ) -> Result<Vec<(String, BgpRoute)>>;

    /// Adds or replaces a coverage zone.
    fn put_zone(&self, z: &Zone) -> Result<()>;

    /// All coverage zones, by prefix text.
    fn zones(&self) -> Result<Vec<Zone>>;
}

/// Health reports and the inventories they carry.
pub trait InventoryStore {
    /// Records a report received at `now`: health, static prefixes, BGP sessions and routes
    /// (replacing the last report's: none when it has no `bgp`), and inventory, all or nothing
    /// (a large full inventory is staged first, in chunks, and switched in by the report).
    fn record_report(&self, r: &HealthReport, now: i64) -> Result<Accepted>;

    /// Deletes inventories a stopped process left half written or replaced; returns how many.
    fn remove_unused_inventories(&self) -> Result<usize>;

    /// Content ids an appliance holds, sorted.
    fn inventory(&self, oca_id: &str) -> Result<Vec<String>>;

    /// Calls `each(content id, appliance id)` for every file every appliance holds (a million
    /// and more: streamed, never collected).
    fn holdings(&self, each: &mut dyn FnMut(String, String)) -> Result<()>;
}

/// Titles, renditions, subscribers and title popularity.
pub trait CatalogStore {
    /// Adds a title (its countries replace any recorded before).
    fn create_title(&self, t: &Title) -> Result<()>;

    /// Removes a title, its licences, popularity and content files; returns the content ids
    /// removed.
    fn delete_title(&self, id: &str) -> Result<Vec<String>>;

    /// All titles, by id, countries sorted.
    fn titles(&self) -> Result<Vec<Title>>;

    /// One title with its licensed countries; none when it does not exist.
    fn title(&self, id: &str) -> Result<Option<Title>>;

    /// The titles among `ids` that exist, with their countries (what the change feed names).
    fn titles_among(&self, ids: &[String]) -> Result<Vec<Title>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.title(id)?);
        }
        Ok(out)
    }

    /// The renditions of the titles among `ids`.
    fn content_of_titles(&self, ids: &[String]) -> Result<Vec<Content>> {
        let mut out = Vec::new();
        for id in ids {
            out.extend(self.content(Some(id))?);
        }
        Ok(out)
    }

    /// The subscribers among `ids` that exist.
    fn subscribers_among(&self, ids: &[String]) -> Result<Vec<Subscriber>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.subscriber(id)?);
        }
        Ok(out)
    }

    /// Adds a content file (its title must exist).
    fn create_content(&self, c: &Content) -> Result<()>;

    /// Renditions of a title (all of them when `title` is none), highest resolution first.
    fn content(&self, title: Option<&str>) -> Result<Vec<Content>>;

    /// Adds or replaces a subscriber.
    fn put_subscriber(&self, s: &Subscriber) -> Result<()>;

    /// All subscribers, by id.
    fn subscribers(&self) -> Result<Vec<Subscriber>>;

    /// One subscriber; none when there is no such subscriber.
    fn subscriber(&self, id: &str) -> Result<Option<Subscriber>>;

    /// The popularity scores saved last.
    fn popularity(&self) -> Result<Vec<SavedScore>>;

    /// Adds plays counted by one replica since its last flush to the stored scores, at `now`,
    /// in one transaction: for each `(title, delta)` (the delta decayed to `now`), the stored
    /// score becomes `decayed(stored, updated, now, half_life_secs) + delta` and `updated`
    /// the later of `updated` and `now`; a title without a row gets one; a title no longer in
    /// the catalog is skipped. Replicas flushing at once must both count (a row lock, or the
    /// whole update as one statement), so the stored scores are every replica's plays.
    fn add_popularity(&self, deltas: &[(String, f64)], half_life_secs: f64, now: i64)
        -> Result<()>;
}

/// URL-signing keys and the control plane's own secrets.
pub trait KeyStore {
    /// Keyrings with no key yet: none stands for the embedded origin's, then site ids.
    fn keyless(&self) -> Result<Vec<Option<String>>>;

    /// Adds `secret` as the newest key of `site`'s keyring (none: the origin's), made at `now`;
    /// returns its id, unique across keyrings.
    fn add_url_key(&self, site: Option<&str>, secret: &[u8], now: i64) -> Result<String>;

    /// Every URL-signing key, newest first.
    fn url_keys(&self) -> Result<Vec<StoredKey>>;

    /// A named secret (created by `make` and stored on first use), the same for every replica
    /// on this database.
    fn secret(&self, name: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Result<Vec<u8>>;
}

/// A play's request for one of its subscriber's stream slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The lease wanted.
    pub lease: LeaseRow,
    /// The subscriber's plan's limit.
    pub max_streams: u32,
    /// When the play asked (unix seconds): leases expired by then hold no slot.
    pub now: i64,
}

/// Concurrent-stream leases.
pub trait LeaseStore {
    /// The leases unexpired at `now`.
    fn live_leases(&self, now: i64) -> Result<Vec<LeaseRow>>;

    /// Decides and writes `requests` in one transaction, in order, by [`leases::decide`]
    /// against the leases on record (whichever replica wrote them) and the requests granted
    /// before it in the batch; returns whether each was granted. The engine serialises the
    /// decisions of one subscriber across replicas, so a plan's limit holds whichever replicas
    /// its plays reach. With `purge_before`, also deletes the leases expired by then.
    fn take_leases(
        &self,
        requests: &[LeaseRequest],
        purge_before: Option<i64>,
    ) -> Result<Vec<bool>>;
}

/// A maintenance window to record (its id is given by storage).
pub struct NewWindow<'a> {
    /// What it disables.
    pub target_kind: TargetKind,
    /// The appliance or site id (must exist).
    pub target: &'a str,
    /// Start, unix seconds.
    pub start: i64,
    /// End, unix seconds.
    pub end: i64,
    /// Why.
    pub reason: &'a str,
    /// Who (`admin-token`, `user:<login>`).
    pub actor: &'a str,
    /// When it is recorded, unix seconds.
    pub now: i64,
}

/// What an appliance last reported about its serving (for the drain state).
pub struct ServingFigures {
    /// Appliance id.
    pub oca_id: String,
    /// Open client connections.
    pub active_connections: u64,
    /// Bytes per second sent.
    pub bytes_per_sec: u64,
    /// When, unix seconds, downtime not counted ([`Downtime::heard`]).
    pub last_report: i64,
}

/// Maintenance windows and the audit log: each change to a window is written with its audit
/// entry in one transaction, so the log never misses a change nor records one that failed.
pub trait MaintenanceStore {
    /// Records a window on an existing appliance or site, and its audit entry (`action`,
    /// `details`, target and actor from the window); returns the window with its id.
    fn create_window(
        &self,
        w: &NewWindow<'_>,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<MaintenanceWindow>;

    /// A window by id.
    fn window(&self, id: i64) -> Result<MaintenanceWindow>;

    /// Ends window `id` early at `now`, by `actor` for `reason`, with its audit entry; returns
    /// the window as it now stands, or none when it was not open any more (ended meanwhile).
    fn end_window(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: i64,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<Option<MaintenanceWindow>>;

    /// Windows neither ended early nor past their end at `now` (scheduled or in force), by
    /// start.
    fn open_windows(&self, now: i64) -> Result<Vec<MaintenanceWindow>>;

    /// Every window, newest first, at most `limit`.
    fn all_windows(&self, limit: usize) -> Result<Vec<MaintenanceWindow>>;

    /// Audit entries, newest first, at most `limit`; with `target`, only those on it (an id,
    /// or `<kind>:<id>`).
    fn audit_log(&self, target: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Every appliance's last reported connections and traffic (appliances that reported).
    fn serving_figures(&self) -> Result<Vec<ServingFigures>>;
}
