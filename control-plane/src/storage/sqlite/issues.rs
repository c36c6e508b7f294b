//! Operational issues and qualifications in SQLite.

use std::collections::HashMap;

use oca_protocol::live::{Issue, IssueKind, Qualification, Severity};
use rusqlite::{params, Row};

use crate::storage::live::{IssueFilter, IssueStore, Observed, QualificationStore, Reconciled};
use crate::storage::sqlite::SqliteStorage;
use crate::storage::{Result, StorageError};

pub use crate::storage::live::MAX_LISTED;

/// The columns [`issue`] reads, in its order.
pub(super) const ISSUE_COLUMNS: &str =
    "id, kind, severity, oca_id, site, first_seen, last_seen, cleared_at, message";

/// An issue from a row of [`ISSUE_COLUMNS`].
pub(super) fn issue(r: &Row<'_>) -> rusqlite::Result<Issue> {
    let kind: String = r.get(1)?;
    let severity: String = r.get(2)?;
    Ok(Issue {
        id: r.get(0)?,
        // Written by this module only; an unknown name is a newer binary's kind.
        kind: IssueKind::parse(&kind).unwrap_or(IssueKind::Unreachable),
        severity: Severity::parse(&severity).unwrap_or(Severity::Warning),
        oca_id: r.get(3)?,
        site: r.get(4)?,
        first_seen: r.get(5)?,
        last_seen: r.get(6)?,
        cleared_at: r.get(7)?,
        message: r.get(8)?,
    })
}

impl IssueStore for SqliteStorage {
    fn reconcile_issues(
        &self,
        current: &[Observed],
        now: i64,
        forget_before: i64,
    ) -> Result<Reconciled> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut done = Reconciled::default();
        {
            let mut open: HashMap<(String, String), i64> = HashMap::new();
            let mut stmt =
                tx.prepare("SELECT id, kind, oca_id FROM issues WHERE cleared_at IS NULL")?;
            let rows = stmt.query_map([], |r| Ok(((r.get(1)?, r.get(2)?), r.get(0)?)))?;
            for row in rows {
                let (key, id) = row?;
                open.insert(key, id);
            }
            let mut seen = tx.prepare_cached(
                "UPDATE issues SET last_seen = ?2, severity = ?3, message = ?4, site = ?5
                 WHERE id = ?1",
            )?;
            let mut raise = tx.prepare_cached(
                "INSERT INTO issues (kind, severity, oca_id, site, first_seen, last_seen, message)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)",
            )?;
            for o in current {
                let key = (o.kind.as_str().to_string(), o.oca_id.clone());
                match open.remove(&key) {
                    Some(id) => {
                        seen.execute(params![id, now, o.severity.as_str(), o.message, o.site])?;
                        done.kept += 1;
                    }
                    None => {
                        raise.execute(params![
                            o.kind.as_str(),
                            o.severity.as_str(),
                            o.oca_id,
                            o.site,
                            now,
                            o.message
                        ])?;
                        done.opened += 1;
                    }
                }
            }
            let mut clear = tx.prepare_cached("UPDATE issues SET cleared_at = ?2 WHERE id = ?1")?;
            for id in open.into_values() {
                clear.execute(params![id, now])?;
                done.cleared += 1;
            }
        }
        tx.execute(
            "DELETE FROM issues WHERE cleared_at IS NOT NULL AND cleared_at < ?1",
            [forget_before],
        )?;
        tx.commit()?;
        Ok(done)
    }

    fn issues(&self, f: &IssueFilter) -> Result<Vec<Issue>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, severity, oca_id, site, first_seen, last_seen, cleared_at, message
             FROM issues
             WHERE (?1 = 0 OR cleared_at IS NULL) AND (?2 IS NULL OR oca_id = ?2)
               AND (?3 IS NULL OR site = ?3)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let limit = f.limit.min(MAX_LISTED) as i64;
        let rows = stmt.query_map(params![f.open_only as i64, f.oca_id, f.site, limit], issue)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl QualificationStore for SqliteStorage {
    fn put_qualification(&self, q: &Qualification) -> Result<()> {
        let json = serde_json::to_string(&q.report).map_err(|e| StorageError::Engine(e.into()))?;
        self.conn()
            .execute(
                "INSERT INTO qualifications (oca_id, passed, uploaded_at, report_json)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(oca_id) DO UPDATE SET passed = excluded.passed,
                   uploaded_at = excluded.uploaded_at, report_json = excluded.report_json",
                params![q.oca_id, q.passed, q.uploaded_at, json],
            )
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    StorageError::Missing(format!("appliance {}", q.oca_id))
                }
                other => other.into(),
            })?;
        Ok(())
    }

    fn qualifications(&self) -> Result<Vec<Qualification>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT oca_id, passed, uploaded_at, report_json FROM qualifications ORDER BY oca_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (oca_id, passed, uploaded_at, json) = row?;
            let report = serde_json::from_str(&json).map_err(|e| StorageError::Engine(e.into()))?;
            out.push(Qualification {
                oca_id,
                passed,
                uploaded_at,
                report,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(kind: IssueKind, oca: &str, msg: &str) -> Observed {
        Observed {
            kind,
            severity: Severity::Critical,
            oca_id: oca.into(),
            site: "s".into(),
            message: msg.into(),
        }
    }

    #[test]
    fn issues_open_stay_open_and_clear() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
        let a = observed(IssueKind::Unreachable, "a", "refused");
        let b = observed(IssueKind::Silent, "b", "silent");
        let r = db
            .reconcile_issues(&[a.clone(), b.clone()], 100, 0)
            .unwrap();
        assert_eq!((r.opened, r.kept, r.cleared), (2, 0, 0));
        let a2 = observed(IssueKind::Unreachable, "a", "timed out");
        let r = db
            .reconcile_issues(std::slice::from_ref(&a2), 110, 0)
            .unwrap();
        assert_eq!((r.opened, r.kept, r.cleared), (0, 1, 1));
        let all = db
            .issues(&IssueFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 2);
        let open = db
            .issues(&IssueFilter {
                open_only: true,
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].oca_id, "a");
        assert_eq!((open[0].first_seen, open[0].last_seen), (100, 110));
        assert_eq!(open[0].message, "timed out");
        let silent = &all.iter().find(|i| i.oca_id == "b").unwrap();
        assert_eq!(silent.cleared_at, Some(110));
        // Raised again after clearing: a new issue; the old one is forgotten past its time.
        db.reconcile_issues(&[a2, b], 120, 111).unwrap();
        let all = db
            .issues(&IssueFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all.iter().all(|i| i.cleared_at.is_none()));
    }

    #[test]
    fn a_qualification_replaces_the_last() {
        let (_dir, db) = super::super::test_db(&["a"]);
        let report: oca_protocol::live::QualificationReport =
            serde_json::from_str(r#"{"passed": false, "checks": []}"#).unwrap();
        let mut q = Qualification {
            oca_id: "a".into(),
            passed: false,
            uploaded_at: 5,
            report,
        };
        db.put_qualification(&q).unwrap();
        q.passed = true;
        q.uploaded_at = 6;
        db.put_qualification(&q).unwrap();
        assert_eq!(db.qualifications().unwrap(), vec![q.clone()]);
        q.oca_id = "nobody".into();
        assert!(matches!(
            db.put_qualification(&q),
            Err(StorageError::Missing(_))
        ));
    }
}
