//! Maintenance windows and the audit log in SQLite: a change to a window and its audit entry
//! commit in one transaction.

use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::storage::sqlite::{exists, SqliteStorage};
use crate::storage::{
    AuditEntry, MaintenanceStore, MaintenanceWindow, NewWindow, Result, ServingFigures,
    StorageError, TargetKind,
};

pub(super) const WINDOW_COLUMNS: &str =
    "id, target_kind, target, start_at, end_at, reason, created_by, \
                              created, ended_by, ended_at, end_reason";

fn kind_of(text: &str) -> TargetKind {
    if text == "site" {
        TargetKind::Site
    } else {
        TargetKind::Appliance
    }
}

/// A window from [`WINDOW_COLUMNS`].
pub(super) fn window_at(r: &Row<'_>) -> rusqlite::Result<MaintenanceWindow> {
    Ok(MaintenanceWindow {
        id: r.get(0)?,
        target_kind: kind_of(&r.get::<_, String>(1)?),
        target: r.get(2)?,
        start: r.get(3)?,
        end: r.get(4)?,
        reason: r.get(5)?,
        created_by: r.get(6)?,
        created: r.get(7)?,
        ended_by: r.get(8)?,
        ended_at: r.get(9)?,
        end_reason: r.get(10)?,
        phase: None,
    })
}

fn select_window(conn: &Connection, id: i64) -> Result<MaintenanceWindow> {
    conn.query_row(
        &format!("SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE id = ?1"),
        [id],
        window_at,
    )
    .optional()?
    .ok_or_else(|| StorageError::Missing(format!("maintenance window {id}")))
}

/// Appends an audit entry (inside the caller's transaction).
fn audit(
    conn: &Connection,
    at: i64,
    actor: &str,
    action: &str,
    (kind, target): (TargetKind, &str),
    details: &serde_json::Value,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, target_kind, target, details)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            at,
            actor,
            action,
            kind.as_str(),
            target,
            details.to_string()
        ],
    )?;
    Ok(())
}

pub(super) const AUDIT_COLUMNS: &str = "id, at, actor, action, target_kind, target, details";

/// An audit entry from [`AUDIT_COLUMNS`].
pub(super) fn audit_entry_at(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    let kind: String = r.get(4)?;
    let target: String = r.get(5)?;
    let details: String = r.get(6)?;
    Ok(AuditEntry {
        id: r.get(0)?,
        at: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: format!("{kind}:{target}"),
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::Null),
    })
}

impl MaintenanceStore for SqliteStorage {
    fn create_window(
        &self,
        w: &NewWindow<'_>,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<MaintenanceWindow> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let table_sql = match w.target_kind {
            TargetKind::Appliance => "SELECT 1 FROM appliances WHERE id = ?1",
            TargetKind::Site => "SELECT 1 FROM sites WHERE id = ?1",
        };
        if !exists(&tx, table_sql, w.target)? {
            return Err(StorageError::Missing(format!(
                "{} {}",
                w.target_kind.as_str(),
                w.target
            )));
        }
        tx.execute(
            "INSERT INTO maintenance_windows
               (target_kind, target, start_at, end_at, reason, created_by, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                w.target_kind.as_str(),
                w.target,
                w.start,
                w.end,
                w.reason,
                w.actor,
                w.now
            ],
        )?;
        let id = tx.last_insert_rowid();
        let mut details = details.clone();
        details["window"] = id.into();
        audit(
            &tx,
            w.now,
            w.actor,
            action,
            (w.target_kind, w.target),
            &details,
        )?;
        let window = select_window(&tx, id)?;
        tx.commit()?;
        Ok(window)
    }

    fn window(&self, id: i64) -> Result<MaintenanceWindow> {
        select_window(&self.reader(), id)
    }

    fn end_window(
        &self,
        id: i64,
        actor: &str,
        reason: &str,
        now: i64,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<Option<MaintenanceWindow>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let changed = tx.execute(
            "UPDATE maintenance_windows SET ended_by = ?2, ended_at = ?3, end_reason = ?4
             WHERE id = ?1 AND ended_at IS NULL AND end_at > ?3",
            params![id, actor, now, reason],
        )?;
        if changed == 0 {
            // Missing is an error of its own; a window already over is the caller's to report.
            select_window(&tx, id)?;
            return Ok(None);
        }
        let window = select_window(&tx, id)?;
        audit(
            &tx,
            now,
            actor,
            action,
            (window.target_kind, &window.target),
            details,
        )?;
        tx.commit()?;
        Ok(Some(window))
    }

    fn open_windows(&self, now: i64) -> Result<Vec<MaintenanceWindow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {WINDOW_COLUMNS} FROM maintenance_windows
             WHERE ended_at IS NULL AND end_at > ?1 ORDER BY start_at, id"
        ))?;
        let rows = stmt.query_map([now], window_at)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn all_windows(&self, limit: usize) -> Result<Vec<MaintenanceWindow>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!(
            "SELECT {WINDOW_COLUMNS} FROM maintenance_windows ORDER BY id DESC LIMIT ?1"
        ))?;
        let rows = stmt.query_map([limit as i64], window_at)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn audit_log(&self, target: Option<&str>, limit: usize) -> Result<Vec<AuditEntry>> {
        let conn = self.reader();
        let (entry, columns) = (audit_entry_at, AUDIT_COLUMNS);
        let rows = match target {
            Some(t) => {
                // `appliance:a1` names one kind; a bare `a1` matches either.
                let (kind, id) = match t.split_once(':') {
                    Some((k, id)) if k == "appliance" || k == "site" => (Some(k), id),
                    _ => (None, t),
                };
                let mut stmt = conn.prepare(&format!(
                    "SELECT {columns} FROM audit_log
                     WHERE target = ?1 AND (?2 IS NULL OR target_kind = ?2)
                     ORDER BY id DESC LIMIT ?3"
                ))?;
                let rows = stmt.query_map(params![id, kind, limit as i64], entry)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            None => {
                let mut stmt = conn.prepare(&format!(
                    "SELECT {columns} FROM audit_log ORDER BY id DESC LIMIT ?1"
                ))?;
                let rows = stmt.query_map([limit as i64], entry)?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
        };
        Ok(rows)
    }

    fn serving_figures(&self) -> Result<Vec<ServingFigures>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT oca_id, active_connections, bytes_per_sec, last_report FROM appliance_health",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(ServingFigures {
                oca_id: r.get(0)?,
                active_connections: r.get::<_, i64>(1)?.max(0) as u64,
                bytes_per_sec: r.get::<_, i64>(2)?.max(0) as u64,
                last_report: self.downtime.heard(r.get(3)?),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStorage;

    fn db() -> (tempfile::TempDir, SqliteStorage) {
        super::super::test_db(&["a"])
    }

    fn new(target_kind: TargetKind, target: &str, start: i64, end: i64) -> NewWindow<'_> {
        NewWindow {
            target_kind,
            target,
            start,
            end,
            reason: "swap a disk",
            actor: "admin-token",
            now: 1_000,
        }
    }

    #[test]
    fn a_window_and_its_audit_entry_are_written_together() {
        let (_dir, db) = db();
        let details = serde_json::json!({"reason": "swap a disk"});
        let w = db
            .create_window(
                &new(TargetKind::Appliance, "a", 1_000, 2_000),
                "maintenance.start",
                &details,
            )
            .unwrap();
        assert_eq!((w.target.as_str(), w.start, w.end), ("a", 1_000, 2_000));
        assert_eq!(db.window(w.id).unwrap(), w);
        let missing = db.create_window(
            &new(TargetKind::Site, "nope", 1_000, 2_000),
            "maintenance.start",
            &details,
        );
        assert!(matches!(missing, Err(StorageError::Missing(m)) if m == "site nope"));
        let log = db.audit_log(None, 10).unwrap();
        assert_eq!(log.len(), 1, "a refused window leaves no entry");
        assert_eq!(
            (log[0].actor.as_str(), log[0].target.as_str()),
            ("admin-token", "appliance:a")
        );
        assert_eq!(log[0].details["window"], w.id);
        assert_eq!(db.audit_log(Some("a"), 10).unwrap().len(), 1);
        assert_eq!(db.audit_log(Some("appliance:a"), 10).unwrap().len(), 1);
        assert_eq!(db.audit_log(Some("site:a"), 10).unwrap().len(), 0);
        assert_eq!(db.open_windows(1_999).unwrap().len(), 1);
        assert_eq!(db.open_windows(2_000).unwrap().len(), 0);
    }

    #[test]
    fn a_window_ends_once() {
        let (_dir, db) = db();
        let d = serde_json::json!({});
        let w = db
            .create_window(&new(TargetKind::Site, "s", 1_000, 2_000), "x", &d)
            .unwrap();
        let ended = db
            .end_window(w.id, "user:kim", "done", 1_500, "maintenance.end", &d)
            .unwrap()
            .unwrap();
        assert_eq!(
            (ended.ended_at, ended.ended_by.as_deref()),
            (Some(1_500), Some("user:kim"))
        );
        assert!(db
            .end_window(w.id, "admin-token", "again", 1_600, "maintenance.end", &d)
            .unwrap()
            .is_none());
        assert!(matches!(
            db.end_window(99, "admin-token", "?", 1_600, "maintenance.end", &d),
            Err(StorageError::Missing(_))
        ));
        assert!(db.open_windows(1_600).unwrap().is_empty());
        assert_eq!(db.all_windows(10).unwrap().len(), 1);
        let log = db.audit_log(Some("s"), 10).unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[0].action, "maintenance.end", "newest first");
    }
}
