//! The change feed: how one replica's in-memory views (catalog, fleet, keys) follow what the
//! other replicas sharing its database write.
//!
//! # What is written
//! Every transaction that changes something a view mirrors appends a row to `changes` in the
//! same transaction, so a change is in the feed exactly when it is committed, never before and
//! never lost: on PostgreSQL, triggers on the admin tables append one row per writing statement
//! (area `catalog`, `fleet` or `keys`) and `NOTIFY oca_changes`; a catalog row names the titles
//! or subscribers the statement touched ([`CatalogChange`]), so a follower rereads only those; a health report appends one
//! row of area `report` whose detail ([`ReportChange`]) says what the report changed. Each row
//! carries the writing replica's id (`origin`), so a replica skips its own writes, which it
//! applied to its views as it committed them.
//!
//! # How it is read
//! A replica's follower reads the rows after the last one it saw, when woken by a notification
//! or every [`POLL_EVERY`] at the latest. Sequence numbers are drawn when a row is inserted,
//! not when its transaction commits, so a row may appear after a higher one: a number skipped
//! over is remembered as a hole and asked for again until it appears or [`HOLE_WAIT`] passes
//! (a rolled-back transaction leaves a hole for good). Rows older than [`RETENTION`] are
//! deleted; a replica whose position fell behind them (away longer than that) reloads its
//! views whole ([`Feed::Resync`]).
//!
//! # The bound
//! An admin change on one replica reaches the views of the others within [`POLL_EVERY`] plus
//! the time to apply it (usually milliseconds after its commit, by the notification); a health
//! report within [`POLL_EVERY`] plus its application. docs/control-plane.md states it with the
//! measurement.
//!
//! SQLite has no feed: one process owns its file, and every write goes through its views.

use std::time::Duration;

use oca_protocol::health::{BgpRoute, BgpSession, Status};
use oca_protocol::prefix::Prefix;
use serde::{Deserialize, Serialize};

use crate::storage::Result;

/// The longest a committed change waits for a follower that got no notification.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// How long a skipped sequence number is asked for again before it counts as rolled back:
/// longer than the longest transaction that appends a change (a large inventory's, 300 s).
pub const HOLE_WAIT: Duration = Duration::from_secs(330);

/// How long rows stay in `changes`.
pub const RETENTION: Duration = Duration::from_secs(900);

/// Which of a replica's views a change touches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Titles, renditions or subscribers.
    Catalog(CatalogChange),
    /// Sites, appliances, coverage zones or maintenance windows.
    Fleet(FleetChange),
    /// URL-signing keys.
    Keys,
    /// A health report another replica recorded.
    Report(ReportChange),
}

/// Which catalog rows one writing statement touched, as its row in the feed names them
/// (migration 15's triggers): the follower rereads those rows rather than the whole catalog,
/// which at 200,000 titles took 3.8 s per change (`bench/catalog_feed.sh`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatalogChange {
    /// Titles whose row, licensed countries or renditions changed (by title id).
    Titles(Vec<String>),
    /// Subscribers written or deleted (by id).
    Subscribers(Vec<String>),
    /// More rows than a feed row names ([`KEYS_CARRIED`]), or a row written before keys were
    /// carried: the whole catalog is reread.
    Whole,
}

/// Which part of the fleet view a fleet change touches.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetChange {
    /// Coverage zones: reread alone.
    Zones,
    /// Maintenance windows: reread alone.
    Windows,
    /// Sites registered or changed (by id): reread and applied to the fleet view in place
    /// where it can be.
    Sites(Vec<String>),
    /// Appliances registered (by id): reread and applied in place where the view can.
    Appliances(Vec<String>),
    /// More rows than a feed row names, an appliance's registration changed, or a row this
    /// replica does not understand: the view is reloaded whole.
    Structure,
}

/// Keys one feed row names at most; a statement touching more rows is noted as
/// [`CatalogChange::Whole`]. Migration 15's trigger function holds the same number.
pub const KEYS_CARRIED: usize = 1_000;

/// What a recorded health report changed, as another replica applies it to its fleet view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportChange {
    /// The appliance.
    pub oca_id: String,
    /// When the report was recorded (Unix seconds).
    pub at: i64,
    /// Its status.
    pub status: Status,
    /// Bytes per second it reported sending.
    pub bytes_per_sec: u64,
    /// Storage on its working disks.
    pub storage_bytes: u64,
    /// Its BGP sessions; none when the report had no BGP part.
    pub bgp_sessions: Option<Vec<BgpSession>>,
    /// Whether its inventory on record changed.
    pub inventory_changed: bool,
    /// The inventory sequence now on record.
    #[serde(default)]
    pub inventory_seq: u64,
    /// The change itself when it was a delta of at most [`DELTA_CARRIED`] entries: a follower
    /// whose view holds the delta's base applies it; any other change it rereads.
    #[serde(default)]
    pub delta: Option<InventoryDelta>,
    /// The whole inventory when the report carried a full one of at most [`DELTA_CARRIED`]
    /// entries: a follower swaps it in without rereading.
    #[serde(default)]
    pub full: Option<Vec<String>>,
    /// Whether its static prefixes or BGP routes on record changed (the follower rereads them).
    pub routes_changed: bool,
}

/// Inventories and deltas longer than this are not carried in the feed (the follower rereads).
pub const DELTA_CARRIED: usize = 10_000;

/// An inventory delta as the feed carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryDelta {
    /// The inventory sequence it applies to.
    pub base_seq: u64,
    /// Content added.
    pub added: Vec<String>,
    /// Content removed.
    pub removed: Vec<String>,
}

/// An appliance's routes and inventory as committed, for a follower to replace its own with.
#[derive(Clone, Default)]
pub struct ApplianceRecord {
    /// Its static prefixes.
    pub prefixes: Vec<Prefix>,
    /// Its BGP routes (empty without BGP).
    pub routes: Vec<BgpRoute>,
    /// The content it holds.
    pub inventory: Vec<String>,
    /// Its inventory sequence.
    pub inventory_seq: u64,
}

/// What one read of the feed found.
pub enum Feed {
    /// Other replicas' changes since the last read, in the order they were numbered.
    Changes(Vec<Change>),
    /// The feed lost track (this replica was away longer than [`RETENTION`]): reload every
    /// view.
    Resync,
}

/// A replica's position in the change feed, with a connection of its own.
pub trait ChangeFeed: Send {
    /// Waits up to `wait` for a notification (returning at once when changes are known to be
    /// waiting), then reads the changes other replicas committed since the last call.
    fn next(&mut self, wait: Duration) -> Result<Feed>;

    /// The routes and inventories of `oca_ids` as committed now, in one snapshot and in their
    /// order (an appliance named twice is given twice); none for an appliance not registered.
    fn appliances(&mut self, oca_ids: &[&str]) -> Result<Vec<Option<ApplianceRecord>>>;

    /// Deletes rows older than [`RETENTION`] before `now` (Unix seconds); returns how many.
    fn trim(&mut self, now: i64) -> Result<u64>;
}
