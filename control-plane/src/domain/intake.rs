//! Health intake: appliances report status, load, disks, routes and inventory; the reply carries
//! the URL keys (docs/architecture.md, "Health report"). Here: who may report, and which of its routes are
//! kept; storage records the report ([`crate::storage::InventoryStore`]) and the fleet view
//! applies it (`fleet::Snapshot::apply`).

use oca_protocol::health::HealthReport;
use oca_protocol::prefix::Prefix;

use crate::domain::credentials;
use crate::storage::{Storage, StorageError};

/// Default seconds between reports asked of appliances (docs/architecture.md); three missed intervals make
/// an appliance `unknown`.
pub const DEFAULT_REPORT_INTERVAL_SECS: u64 = 10;

/// Whether `credential` is the one issued to appliance `oca_id`.
pub fn authenticate(
    store: &dyn Storage,
    oca_id: &str,
    credential: &str,
) -> Result<bool, StorageError> {
    // Hash even for unknown ids, so timing does not tell which appliances exist.
    let stored = store
        .credential_sha256(oca_id)?
        .unwrap_or_else(|| vec![0u8; 32]);
    Ok(credentials::matches(credential, &stored))
}

/// Keeps the reported prefixes that fall inside one of `allowed`; returns the report so
/// screened and the prefixes dropped. A stolen appliance credential can then pull no more
/// traffic than its site was granted.
pub fn screen_prefixes(mut r: HealthReport, allowed: &[Prefix]) -> (HealthReport, Vec<Prefix>) {
    let (kept, refused) = r
        .prefixes
        .into_iter()
        .partition(|p| allowed.iter().any(|a| a.covers(p)));
    r.prefixes = kept;
    (r, refused)
}
