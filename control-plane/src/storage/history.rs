//! Traffic history storage: 5-minute buckets (by default) of each appliance's reported figures,
//! and steering misses by the client's site.
//!
//! # Written through, additively
//! A health report adds its figures to its appliance's bucket (sums and counts added, peaks
//! kept) with one upsert inside the report's own transaction
//! ([`crate::storage::InventoryStore::record_report`]), so a bucket is right whichever replica
//! took each report, and a crash loses no report that was answered. Misses are counted in
//! memory and added the same way every few seconds ([`HistoryStore::add_misses`]): steering
//! answers from memory and must not write per decision.
//!
//! # Sites are read, not kept
//! A site's bucket is summed from its appliances' buckets when asked for, so a report writes one
//! row, not two; an appliance counts for the site it is registered in now.

use oca_protocol::history::HistoryBucket;

use crate::storage::Result;

/// How reports are bucketed: the engine writes the rollup inside the report's transaction, so
/// it is told these when opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistorySettings {
    /// Seconds a bucket spans.
    pub bucket_secs: i64,
    /// Seconds between reports asked of appliances: the most one report's bytes per second
    /// counts for (a report after a silence says nothing of the silence).
    pub report_interval_secs: i64,
}

impl Default for HistorySettings {
    fn default() -> Self {
        HistorySettings {
            bucket_secs: 300,
            report_interval_secs: 10,
        }
    }
}

impl HistorySettings {
    /// The first second of the bucket holding `t`.
    pub fn bucket_of(&self, t: i64) -> i64 {
        t - t.rem_euclid(self.bucket_secs)
    }
}

/// An appliance's or a site's buckets over a range, with its registered capacity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traffic {
    /// Registered capacity in bits per second (a site: the sum of its appliances').
    pub capacity_bps: u64,
    /// Buckets with reports, oldest first, misses not filled in.
    pub buckets: Vec<HistoryBucket>,
}

/// Steering misses of one site (`-`: clients with no site) in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteMisses {
    /// The client's own site, or `-`.
    pub site: String,
    /// First second of the bucket.
    pub bucket: i64,
    /// Decisions where no appliance held the content.
    pub content: u64,
    /// Decisions where holders existed but none was usable.
    pub health: u64,
}

/// Traffic history: buckets of reports (written by `record_report`) and of misses.
pub trait HistoryStore {
    /// Appliance `oca_id`'s buckets starting in `[from, to)`; `Missing` when it is unknown.
    fn appliance_traffic(&self, oca_id: &str, from: i64, to: i64) -> Result<Traffic>;

    /// Site `site`'s buckets starting in `[from, to)`, summed over its appliances; `Missing`
    /// when it is unknown.
    fn site_traffic(&self, site: &str, from: i64, to: i64) -> Result<Traffic>;

    /// Site `site`'s miss buckets starting in `[from, to)` (`-`: clients with no site).
    fn site_misses(&self, site: &str, from: i64, to: i64) -> Result<Vec<SiteMisses>>;

    /// Adds misses to their buckets, all in one transaction.
    fn add_misses(&self, misses: &[SiteMisses]) -> Result<()>;

    /// Deletes at most `batch` buckets of each kind that start before `before`, in short
    /// statements of their own; returns how many went. Call again while it returns `batch`
    /// or more.
    fn prune_history(&self, before: i64, batch: usize) -> Result<usize>;
}
