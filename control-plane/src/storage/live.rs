//! Live checks' storage: operational issues (raised, seen, cleared) and each appliance's latest
//! qualification. Part of [`crate::storage::Storage`].

use oca_protocol::live::{Issue, IssueKind, Qualification, Severity};

use crate::storage::Result;

/// Issues a listing returns at most, whatever its `limit` (either engine).
pub const MAX_LISTED: usize = 10_000;

/// An issue as a check sees it now: what reconciling with storage opens or keeps open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// What it is about.
    pub kind: IssueKind,
    /// How bad.
    pub severity: Severity,
    /// The appliance.
    pub oca_id: String,
    /// Its site.
    pub site: String,
    /// What was seen.
    pub message: String,
}

/// Which issues a listing returns.
#[derive(Clone, Debug, Default)]
pub struct IssueFilter {
    /// Open ones only.
    pub open_only: bool,
    /// Of this appliance only.
    pub oca_id: Option<String>,
    /// Of this site only.
    pub site: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// What one reconciliation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Issues raised.
    pub opened: usize,
    /// Issues still open, seen again.
    pub kept: usize,
    /// Issues cleared.
    pub cleared: usize,
}

/// Operational issues.
pub trait IssueStore {
    /// Makes the open issues those of `current` at `now`, in one transaction: one not open yet
    /// is raised (first and last seen `now`), one open is seen again (last seen, severity and
    /// message updated), an open one missing from `current` is cleared at `now`. At most one
    /// issue is open per (kind, appliance). Cleared issues older than `forget_before` are
    /// deleted.
    fn reconcile_issues(
        &self,
        current: &[Observed],
        now: i64,
        forget_before: i64,
    ) -> Result<Reconciled>;

    /// Issues, newest first.
    fn issues(&self, filter: &IssueFilter) -> Result<Vec<Issue>>;
}

/// Each appliance's latest qualification.
pub trait QualificationStore {
    /// Records `q` as appliance `q.oca_id`'s latest (replacing the one before).
    fn put_qualification(&self, q: &Qualification) -> Result<()>;

    /// Every appliance's latest qualification.
    fn qualifications(&self) -> Result<Vec<Qualification>>;
}
