//! Operational issues read for a [`Scope`]: what a portal user may see (every issue for an
//! operator, those of its organisation's appliances for a partner), or what one site page or
//! one appliance page shows. The issues themselves are raised and cleared by
//! [`crate::storage::IssueStore`].
//!
//! An issue belongs to its appliance as registered now, as maintenance records do
//! ([`crate::storage::scoped`]): an appliance moved to another organisation's site takes its
//! issues with it. Issues have no site of their own, so [`Scope::Site`] means the site's
//! appliances and [`Scope::Appliance`] the appliance alone.

use oca_protocol::live::{Issue, Severity};
use serde::Serialize;

use crate::storage::{Result, Scope};

/// Which issues by state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueState {
    /// Open ones.
    Open,
    /// Cleared ones.
    Cleared,
    /// Both.
    Any,
}

/// A scoped listing of issues.
#[derive(Debug, Clone, Copy)]
pub struct IssueQuery<'a> {
    /// Whose issues.
    pub scope: Scope<'a>,
    /// Open, cleared or both.
    pub state: IssueState,
    /// Only ids below this one (the next page of older issues).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: usize,
    /// Critical first, then warning, then info, each newest first; otherwise newest first.
    pub most_severe_first: bool,
}

/// Open issues by severity.
#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeverityCounts {
    /// Critical ones.
    pub critical: u64,
    /// Warnings.
    pub warning: u64,
    /// Informational ones.
    pub info: u64,
}

impl SeverityCounts {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.critical + self.warning + self.info
    }

    /// Counts `n` more of `severity`.
    pub fn add(&mut self, severity: Severity, n: u64) {
        match severity {
            Severity::Critical => self.critical += n,
            Severity::Warning => self.warning += n,
            Severity::Info => self.info += n,
        }
    }
}

/// Operational issues by scope, bounded.
pub trait ScopedIssueStore {
    /// Issues in `q.scope` in the state asked, newest first (or most severe first), at most
    /// `q.limit`.
    fn scoped_issues(&self, q: &IssueQuery<'_>) -> Result<Vec<Issue>>;

    /// How many issues in `scope` are open, by severity.
    fn open_issue_counts(&self, scope: Scope<'_>) -> Result<SeverityCounts>;
}
