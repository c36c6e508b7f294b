//! Maintenance windows and audit entries read for a scope: what a portal user may see (every
//! record for an operator, an organisation's sites and their appliances for a partner), or
//! what one appliance or one site page shows. The records themselves are written by
//! [`crate::storage::MaintenanceStore`].
//!
//! A record's target is matched against the sites and appliances as registered now: the log
//! names targets by id, not by foreign key, so a record of an appliance moved to another
//! organisation's site follows the appliance.

use crate::storage::{AuditEntry, MaintenanceWindow, Result};

/// Whose maintenance records a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every record (operators).
    All,
    /// Records on the sites an organisation owns and on their appliances.
    Org(&'a str),
    /// Records on one site and on its appliances.
    Site(&'a str),
    /// Records on one appliance and on its site (a site's window disables it too).
    Appliance {
        /// The appliance.
        id: &'a str,
        /// Its site.
        site: &'a str,
    },
}

/// Maintenance windows and audit entries by scope, newest first and bounded.
pub trait ScopedMaintenanceStore {
    /// Windows on targets in `scope`, newest first, at most `limit`; with `open_at`, only those
    /// not over at that time (scheduled or in force).
    fn scoped_windows(
        &self,
        scope: Scope<'_>,
        open_at: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MaintenanceWindow>>;

    /// Audit entries on targets in `scope`, newest first, with ids below `before` (the next
    /// page of older entries), at most `limit`.
    fn scoped_audit(
        &self,
        scope: Scope<'_>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;
}
