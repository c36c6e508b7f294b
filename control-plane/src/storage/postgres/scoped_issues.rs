//! Operational issues by scope in PostgreSQL: one `WHERE` fragment per scope over `oca_id`.

use oca_protocol::live::{Issue, Severity};

use super::issues::{issue, ISSUE_COLUMNS, MAX_LISTED};
use super::scoped::{numbered, query, Value};
use super::PgStorage;
use crate::storage::scoped_issues::{IssueQuery, IssueState, ScopedIssueStore, SeverityCounts};
use crate::storage::{Result, Scope};

/// The condition selecting `scope`'s issues, and its parameters in order.
fn filter(scope: Scope<'_>) -> (&'static str, Vec<Value>) {
    let text = |s: &str| Value::Text(s.to_string());
    match scope {
        Scope::All => ("TRUE", Vec::new()),
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
        IssueState::Any => "TRUE",
    }
}

/// Critical (0) before warning (1) before info (2), whatever their names sort as.
const SEVERITY_RANK: &str = "CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END";

impl ScopedIssueStore for PgStorage {
    fn scoped_issues(&self, q: &IssueQuery<'_>) -> Result<Vec<Issue>> {
        let (condition, mut params) = filter(q.scope);
        let before = match q.before {
            Some(b) => {
                params.push(Value::Int(b));
                "id < ?"
            }
            None => "TRUE",
        };
        params.push(Value::Int(q.limit.min(MAX_LISTED) as i64));
        let order = if q.most_severe_first {
            format!("{SEVERITY_RANK}, id DESC")
        } else {
            "id DESC".to_string()
        };
        let sql = numbered(&format!(
            "SELECT {ISSUE_COLUMNS} FROM issues
             WHERE {condition} AND {} AND {before} ORDER BY {order} LIMIT ?",
            state(q.state)
        ));
        query(self, sql, params, issue)
    }

    fn open_issue_counts(&self, scope: Scope<'_>) -> Result<SeverityCounts> {
        let (condition, params) = filter(scope);
        let sql = numbered(&format!(
            "SELECT severity, COUNT(*) FROM issues
             WHERE {condition} AND cleared_at IS NULL GROUP BY severity"
        ));
        let rows = query(self, sql, params, |r| {
            (r.get::<_, String>(0), r.get::<_, i64>(1))
        })?;
        let mut counts = SeverityCounts::default();
        for (severity, n) in rows {
            // The schema allows only the three names.
            if let Some(s) = Severity::parse(&severity) {
                counts.add(s, n.max(0) as u64);
            }
        }
        Ok(counts)
    }
}
