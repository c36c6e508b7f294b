//! Maintenance windows and audit entries by scope in SQLite: one `WHERE` fragment per scope
//! over the `(target_kind, target)` columns both tables share, newest first by id.

use rusqlite::params_from_iter;
use rusqlite::types::Value;

use super::maintenance::{audit_entry_at, window_at, AUDIT_COLUMNS, WINDOW_COLUMNS};
use super::SqliteStorage;
use crate::storage::{AuditEntry, MaintenanceWindow, Result, Scope, ScopedMaintenanceStore};

/// The condition selecting `scope`'s targets, and its parameters in order.
fn filter(scope: Scope<'_>) -> (&'static str, Vec<Value>) {
    let text = |s: &str| Value::Text(s.to_string());
    match scope {
        Scope::All => ("1", Vec::new()),
        Scope::Org(org) => (
            "((target_kind = 'site' AND target IN (SELECT id FROM sites WHERE org = ?))
              OR (target_kind = 'appliance' AND target IN
                  (SELECT a.id FROM appliances a JOIN sites s ON s.id = a.site WHERE s.org = ?)))",
            vec![text(org), text(org)],
        ),
        Scope::Site(site) => (
            "((target_kind = 'site' AND target = ?)
              OR (target_kind = 'appliance' AND target IN (SELECT id FROM appliances WHERE site = ?)))",
            vec![text(site), text(site)],
        ),
        Scope::Appliance { id, site } => (
            "((target_kind = 'appliance' AND target = ?) OR (target_kind = 'site' AND target = ?))",
            vec![text(id), text(site)],
        ),
    }
}

impl ScopedMaintenanceStore for SqliteStorage {
    fn scoped_windows(
        &self,
        scope: Scope<'_>,
        open_at: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MaintenanceWindow>> {
        let (condition, mut params) = filter(scope);
        let open = match open_at {
            Some(now) => {
                params.push(Value::Integer(now));
                "ended_at IS NULL AND end_at > ?"
            }
            None => "1",
        };
        params.push(Value::Integer(limit.min(i64::MAX as usize) as i64));
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {WINDOW_COLUMNS} FROM maintenance_windows
             WHERE {condition} AND {open} ORDER BY id DESC LIMIT ?"
        ))?;
        let rows = stmt.query_map(params_from_iter(params), window_at)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn scoped_audit(
        &self,
        scope: Scope<'_>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let (condition, mut params) = filter(scope);
        params.push(Value::Integer(before.unwrap_or(i64::MAX)));
        params.push(Value::Integer(limit.min(i64::MAX as usize) as i64));
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log
             WHERE {condition} AND id < ? ORDER BY id DESC LIMIT ?"
        ))?;
        let rows = stmt.query_map(params_from_iter(params), audit_entry_at)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MaintenanceStore, NewWindow, TargetKind};

    /// Sites s1 (org o1: appliances a1, a2) and s2 (org o2: b1), a window on each of a1, a2,
    /// b1, s1 and s2, a2's ended.
    fn db() -> (tempfile::TempDir, SqliteStorage) {
        let (dir, db) = super::super::test_two_orgs();
        for (kind, target) in [
            (TargetKind::Appliance, "a1"),
            (TargetKind::Appliance, "a2"),
            (TargetKind::Appliance, "b1"),
            (TargetKind::Site, "s1"),
            (TargetKind::Site, "s2"),
        ] {
            let w = NewWindow {
                target_kind: kind,
                target,
                start: 2_000,
                end: 3_000,
                reason: "r",
                actor: "user:x",
                now: 1_000,
            };
            db.create_window(&w, "maintenance.schedule", &serde_json::json!({}))
                .unwrap();
        }
        let details = serde_json::json!({});
        db.end_window(2, "user:x", "done", 1_500, "maintenance.cancel", &details)
            .unwrap();
        (dir, db)
    }

    fn window_targets(db: &SqliteStorage, scope: Scope<'_>, open_at: Option<i64>) -> Vec<String> {
        db.scoped_windows(scope, open_at, 100)
            .unwrap()
            .into_iter()
            .map(|w| w.target)
            .collect()
    }

    #[test]
    fn windows_by_scope_newest_first() {
        let (_dir, db) = db();
        assert_eq!(
            window_targets(&db, Scope::All, None),
            ["s2", "s1", "b1", "a2", "a1"]
        );
        assert_eq!(
            window_targets(&db, Scope::Org("o1"), None),
            ["s1", "a2", "a1"]
        );
        assert_eq!(
            window_targets(&db, Scope::Org("o1"), Some(1_600)),
            ["s1", "a1"],
            "the cancelled one is over"
        );
        assert_eq!(window_targets(&db, Scope::Org("nobody"), None), [""; 0]);
        assert_eq!(window_targets(&db, Scope::Site("s2"), None), ["s2", "b1"]);
        let a1 = Scope::Appliance {
            id: "a1",
            site: "s1",
        };
        assert_eq!(window_targets(&db, a1, None), ["s1", "a1"]);
        assert_eq!(window_targets(&db, a1, Some(3_000)), [""; 0], "all over");
        assert_eq!(db.scoped_windows(Scope::All, None, 2).unwrap().len(), 2);
    }

    #[test]
    fn audit_by_scope_in_pages() {
        let (_dir, db) = db();
        let ids = |scope, before, limit| -> Vec<(i64, String)> {
            db.scoped_audit(scope, before, limit)
                .unwrap()
                .into_iter()
                .map(|e| (e.id, e.target))
                .collect()
        };
        let all = ids(Scope::All, None, 100);
        assert_eq!(all.len(), 6, "five windows and one cancel");
        assert_eq!(all[0].1, "appliance:a2", "the cancel is the newest");
        let o2 = ids(Scope::Org("o2"), None, 100);
        assert_eq!(
            o2.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
            ["site:s2", "appliance:b1"]
        );
        let first = ids(Scope::Org("o1"), None, 2);
        assert_eq!(first.len(), 2);
        let next = ids(Scope::Org("o1"), Some(first[1].0), 2);
        assert_eq!(
            next.iter().map(|e| e.1.as_str()).collect::<Vec<_>>(),
            ["appliance:a2", "appliance:a1"],
            "the page after holds the older entries"
        );
        assert!(ids(Scope::Org("o1"), Some(next[1].0), 2).is_empty());
    }
}
