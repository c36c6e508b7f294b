//! Operational issues by scope in SQLite: one `WHERE` fragment per scope over `oca_id`, which
//! the `issues_by_appliance (oca_id, id)` index serves; open ones through the partial index
//! of open issues.

use oca_protocol::live::{Issue, Severity};
use rusqlite::params_from_iter;
use rusqlite::types::Value;

use super::issues::{issue, ISSUE_COLUMNS, MAX_LISTED};
use super::SqliteStorage;
use crate::storage::scoped_issues::{IssueQuery, IssueState, ScopedIssueStore, SeverityCounts};
use crate::storage::{Result, Scope};

/// The condition selecting `scope`'s issues, and its parameters in order.
fn filter(scope: Scope<'_>) -> (&'static str, Vec<Value>) {
    let text = |s: &str| Value::Text(s.to_string());
    match scope {
        Scope::All => ("1", Vec::new()),
        Scope::Org(org) => (
            "oca_id IN (SELECT a.id FROM appliances a JOIN sites s ON s.id = a.site
                        WHERE s.org = ?)",
            vec![text(org)],
        ),
        Scope::Site(site) => (
            "oca_id IN (SELECT id FROM appliances WHERE site = ?)",
            vec![text(site)],
        ),
        Scope::Appliance { id, .. } => ("oca_id = ?", vec![text(id)]),
    }
}

fn state(s: IssueState) -> &'static str {
    match s {
        IssueState::Open => "cleared_at IS NULL",
        IssueState::Cleared => "cleared_at IS NOT NULL",
        IssueState::Any => "1",
    }
}

/// Critical (0) before warning (1) before info (2), whatever their names sort as.
const SEVERITY_RANK: &str = "CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END";

impl ScopedIssueStore for SqliteStorage {
    fn scoped_issues(&self, q: &IssueQuery<'_>) -> Result<Vec<Issue>> {
        let (condition, mut params) = filter(q.scope);
        // No `id < MAX` on the first page: without it an open listing reads the partial index
        // of open issues rather than walking every issue kept.
        let before = match q.before {
            Some(b) => {
                params.push(Value::Integer(b));
                "id < ?"
            }
            None => "1",
        };
        params.push(Value::Integer(q.limit.min(MAX_LISTED) as i64));
        let order = if q.most_severe_first {
            format!("{SEVERITY_RANK}, id DESC")
        } else {
            "id DESC".to_string()
        };
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {ISSUE_COLUMNS} FROM issues
             WHERE {condition} AND {} AND {before} ORDER BY {order} LIMIT ?",
            state(q.state)
        ))?;
        let rows = stmt.query_map(params_from_iter(params), issue)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn open_issue_counts(&self, scope: Scope<'_>) -> Result<SeverityCounts> {
        let (condition, params) = filter(scope);
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT severity, COUNT(*) FROM issues
             WHERE {condition} AND cleared_at IS NULL GROUP BY severity"
        ))?;
        let rows = stmt.query_map(params_from_iter(params), |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })?;
        let mut counts = SeverityCounts::default();
        for row in rows {
            let (severity, n) = row?;
            // The schema allows only the three names.
            if let Some(s) = Severity::parse(&severity) {
                counts.add(s, n.max(0) as u64);
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::live::Observed;
    use crate::storage::IssueStore;

    use oca_protocol::live::IssueKind;

    /// Sites s1 (org o1: a1, a2) and s2 (org o2: b1).
    fn db() -> (tempfile::TempDir, SqliteStorage) {
        super::super::test_two_orgs()
    }

    fn seen(kind: IssueKind, severity: Severity, oca: &str, site: &str) -> Observed {
        Observed {
            kind,
            severity,
            oca_id: oca.into(),
            site: site.into(),
            message: "m".into(),
        }
    }

    fn list(db: &SqliteStorage, q: IssueQuery<'_>) -> Vec<(String, &'static str)> {
        db.scoped_issues(&q)
            .unwrap()
            .into_iter()
            .map(|i| (i.oca_id, i.kind.as_str()))
            .collect()
    }

    fn query(scope: Scope<'_>, state: IssueState) -> IssueQuery<'_> {
        IssueQuery {
            scope,
            state,
            before: None,
            limit: 100,
            most_severe_first: false,
        }
    }

    #[test]
    fn issues_by_scope_state_severity_and_page() {
        let (_dir, db) = db();
        use IssueKind::*;
        let first = [
            seen(DiskFailed, Severity::Warning, "a1", "s1"),
            seen(Silent, Severity::Critical, "b1", "s2"),
        ];
        db.reconcile_issues(&first, 10, 0).unwrap();
        // a1's disk clears; a2 goes silent (info: never reported) and unreachable.
        let second = [
            seen(Silent, Severity::Critical, "b1", "s2"),
            seen(Silent, Severity::Info, "a2", "s1"),
            seen(Unreachable, Severity::Critical, "a2", "s1"),
        ];
        db.reconcile_issues(&second, 20, 0).unwrap();

        let o1 = Scope::Org("o1");
        assert_eq!(
            list(&db, query(o1, IssueState::Any)),
            [
                ("a2".into(), "unreachable"),
                ("a2".into(), "silent"),
                ("a1".into(), "disk_failed")
            ]
        );
        assert_eq!(
            list(&db, query(o1, IssueState::Cleared)),
            [("a1".into(), "disk_failed")]
        );
        let mut severe = query(o1, IssueState::Open);
        severe.most_severe_first = true;
        assert_eq!(
            list(&db, severe),
            [("a2".into(), "unreachable"), ("a2".into(), "silent")]
        );
        assert_eq!(
            list(&db, query(Scope::Org("o2"), IssueState::Any)),
            [("b1".into(), "silent")]
        );
        assert!(list(&db, query(Scope::Org("nobody"), IssueState::Any)).is_empty());
        let a1 = Scope::Appliance {
            id: "a1",
            site: "s1",
        };
        assert_eq!(list(&db, query(a1, IssueState::Open)), []);
        assert_eq!(
            list(&db, query(Scope::Site("s2"), IssueState::Any)).len(),
            1
        );
        assert_eq!(list(&db, query(Scope::All, IssueState::Any)).len(), 4);

        // Paging by id: two, then the rest.
        let mut page = query(Scope::All, IssueState::Any);
        page.limit = 2;
        let top = db.scoped_issues(&page).unwrap();
        assert_eq!(top.len(), 2);
        page.before = Some(top[1].id);
        let rest = db.scoped_issues(&page).unwrap();
        assert_eq!(rest.len(), 2);
        assert!(rest.iter().all(|i| i.id < top[1].id));

        let counts = db.open_issue_counts(o1).unwrap();
        assert_eq!((counts.critical, counts.warning, counts.info), (1, 0, 1));
        assert_eq!(db.open_issue_counts(Scope::All).unwrap().total(), 3);
        assert_eq!(db.open_issue_counts(Scope::Org("o2")).unwrap().critical, 1);
    }
}
