//! Operational issues and qualifications in PostgreSQL.

use std::collections::HashMap;

use oca_protocol::live::{Issue, IssueKind, Qualification, Severity};
use postgres::Row;

use crate::storage::live::{IssueFilter, IssueStore, Observed, QualificationStore, Reconciled};
use crate::storage::postgres::PgStorage;
use crate::storage::{Result, StorageError};

pub(super) use crate::storage::live::MAX_LISTED;

/// The columns [`issue`] reads, in its order.
pub(super) const ISSUE_COLUMNS: &str =
    "id, kind, severity, oca_id, site, first_seen, last_seen, cleared_at, message";

/// An issue from a row of [`ISSUE_COLUMNS`].
pub(super) fn issue(r: &Row) -> Issue {
    let kind: &str = r.get(1);
    let severity: &str = r.get(2);
    Issue {
        id: r.get(0),
        // Written by this module only; an unknown name is a newer binary's kind.
        kind: IssueKind::parse(kind).unwrap_or(IssueKind::Unreachable),
        severity: Severity::parse(severity).unwrap_or(Severity::Warning),
        oca_id: r.get(3),
        site: r.get(4),
        first_seen: r.get(5),
        last_seen: r.get(6),
        cleared_at: r.get(7),
        message: r.get(8),
    }
}

impl IssueStore for PgStorage {
    fn reconcile_issues(
        &self,
        current: &[Observed],
        now: i64,
        forget_before: i64,
    ) -> Result<Reconciled> {
        let current = current.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let mut done = Reconciled::default();
            // Locked: two replicas reconciling at once take turns, so an issue is raised once.
            let mut open: HashMap<(String, String), i64> = tx
                .query(
                    "SELECT id, kind, oca_id FROM issues WHERE cleared_at IS NULL FOR UPDATE",
                    &[],
                )?
                .iter()
                .map(|r| ((r.get(1), r.get(2)), r.get(0)))
                .collect();
            let seen = tx.prepare(
                "UPDATE issues SET last_seen = $2, severity = $3, message = $4, site = $5
                 WHERE id = $1",
            )?;
            let raise = tx.prepare(
                "INSERT INTO issues (kind, severity, oca_id, site, first_seen, last_seen, message)
                 VALUES ($1, $2, $3, $4, $5, $5, $6)",
            )?;
            for o in &current {
                let key = (o.kind.as_str().to_string(), o.oca_id.clone());
                match open.remove(&key) {
                    Some(id) => {
                        tx.execute(
                            &seen,
                            &[&id, &now, &o.severity.as_str(), &o.message, &o.site],
                        )?;
                        done.kept += 1;
                    }
                    None => {
                        tx.execute(
                            &raise,
                            &[
                                &o.kind.as_str(),
                                &o.severity.as_str(),
                                &o.oca_id,
                                &o.site,
                                &now,
                                &o.message,
                            ],
                        )?;
                        done.opened += 1;
                    }
                }
            }
            let cleared: Vec<i64> = open.into_values().collect();
            done.cleared = cleared.len();
            tx.execute(
                "UPDATE issues SET cleared_at = $2 WHERE id = ANY($1)",
                &[&cleared, &now],
            )?;
            tx.execute(
                "DELETE FROM issues WHERE cleared_at IS NOT NULL AND cleared_at < $1",
                &[&forget_before],
            )?;
            tx.commit()?;
            Ok(done)
        })
    }

    fn issues(&self, f: &IssueFilter) -> Result<Vec<Issue>> {
        let (open_only, oca_id, site) = (f.open_only, f.oca_id.clone(), f.site.clone());
        let limit = f.limit.min(MAX_LISTED) as i64;
        self.call(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {ISSUE_COLUMNS} FROM issues
                     WHERE (NOT $1 OR cleared_at IS NULL) AND ($2::text IS NULL OR oca_id = $2)
                       AND ($3::text IS NULL OR site = $3)
                     ORDER BY id DESC LIMIT $4"
                ),
                &[&open_only, &oca_id, &site, &limit],
            )?
            .iter()
            .map(issue)
            .collect())
        })
    }
}

impl QualificationStore for PgStorage {
    fn put_qualification(&self, q: &Qualification) -> Result<()> {
        let json = serde_json::to_string(&q.report).map_err(|e| StorageError::Engine(e.into()))?;
        let (oca_id, passed, uploaded_at) = (q.oca_id.clone(), q.passed, q.uploaded_at);
        self.call(move |c| {
            c.execute(
                "INSERT INTO qualifications (oca_id, passed, uploaded_at, report_json)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (oca_id) DO UPDATE SET passed = excluded.passed,
                   uploaded_at = excluded.uploaded_at, report_json = excluded.report_json",
                &[&oca_id, &passed, &uploaded_at, &json],
            )
            .map_err(|e| {
                if e.code().is_some_and(|c| c.code().starts_with("23")) {
                    StorageError::Missing(format!("appliance {oca_id}"))
                } else {
                    e.into()
                }
            })?;
            Ok(())
        })
    }

    fn qualifications(&self) -> Result<Vec<Qualification>> {
        self.call(|c| {
            let rows = c.query(
                "SELECT oca_id, passed, uploaded_at, report_json FROM qualifications ORDER BY oca_id",
                &[],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let report = serde_json::from_str(r.get(3))
                    .map_err(|e| StorageError::Engine(e.into()))?;
                out.push(Qualification {
                    oca_id: r.get(0),
                    passed: r.get(1),
                    uploaded_at: r.get(2),
                    report,
                });
            }
            Ok(out)
        })
    }
}
