//! The state the fill tasks, the evictions and the reporter share: the stores, what is held,
//! each disk's health, the fills in flight with the space they reserve, the fill errors not yet
//! reported, the bandwidth cap and the counters. Locks are held briefly and never across an
//! await.

use std::collections::HashMap;
use std::sync::Arc;

use oca_protocol::health::FillError;
use oca_store::Store;
use parking_lot::Mutex;

use crate::bucket::TokenBucket;
use crate::disks::DiskHealth;
use crate::inventory::Inventory;
use crate::metrics::Metrics;

/// Space a fill in flight holds on to: what pick_disk must not hand to another fill.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reservation {
    /// The disk chosen, once chosen.
    pub disk: Option<usize>,
    /// Bytes reserved there (the whole file: conservative while the part grows).
    pub bytes: u64,
}

/// State the fill tasks and the reporter share.
pub struct Shared {
    /// The stores.
    pub store: Store,
    /// What is held.
    pub inventory: Mutex<Inventory>,
    /// Sources that failed since the last report.
    pub errors: Mutex<Vec<FillError>>,
    /// Per-disk health.
    pub disks: Mutex<Vec<DiskHealth>>,
    /// The fill bandwidth cap.
    pub bucket: TokenBucket,
    /// Fills in flight by content id, with the space each reserves.
    pub in_flight: Mutex<HashMap<String, Reservation>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Whether a fill of `id` is in flight.
    pub fn filling(&self, id: &str) -> bool {
        self.in_flight.lock().contains_key(id)
    }
}
