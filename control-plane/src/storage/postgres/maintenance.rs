//! Maintenance windows and the audit log in PostgreSQL: a change to a window and its audit entry
//! commit in one transaction.

use postgres::{GenericClient, Row};

use crate::storage::postgres::{exists, limit, unsigned, PgStorage};
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
pub(super) fn window_at(r: &Row) -> MaintenanceWindow {
    MaintenanceWindow {
        id: r.get(0),
        target_kind: kind_of(r.get(1)),
        target: r.get(2),
        start: r.get(3),
        end: r.get(4),
        reason: r.get(5),
        created_by: r.get(6),
        created: r.get(7),
        ended_by: r.get(8),
        ended_at: r.get(9),
        end_reason: r.get(10),
        phase: None,
    }
}

fn select_window(c: &mut impl GenericClient, id: i64) -> Result<MaintenanceWindow> {
    c.query_opt(
        &format!("SELECT {WINDOW_COLUMNS} FROM maintenance_windows WHERE id = $1"),
        &[&id],
    )?
    .map(|r| window_at(&r))
    .ok_or_else(|| StorageError::Missing(format!("maintenance window {id}")))
}

/// Appends an audit entry (inside the caller's transaction).
fn audit(
    c: &mut impl GenericClient,
    at: i64,
    actor: &str,
    action: &str,
    (kind, target): (TargetKind, &str),
    details: &serde_json::Value,
) -> Result<()> {
    c.execute(
        "INSERT INTO audit_log (at, actor, action, target_kind, target, details)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &at,
            &actor,
            &action,
            &kind.as_str(),
            &target,
            &details.to_string(),
        ],
    )?;
    Ok(())
}

pub(super) const AUDIT_COLUMNS: &str = "id, at, actor, action, target_kind, target, details";

/// An audit entry from [`AUDIT_COLUMNS`].
pub(super) fn audit_entry_at(r: &Row) -> AuditEntry {
    let kind: &str = r.get(4);
    let target: &str = r.get(5);
    let details: &str = r.get(6);
    AuditEntry {
        id: r.get(0),
        at: r.get(1),
        actor: r.get(2),
        action: r.get(3),
        target: format!("{kind}:{target}"),
        details: serde_json::from_str(details).unwrap_or(serde_json::Value::Null),
    }
}

impl MaintenanceStore for PgStorage {
    fn create_window(
        &self,
        w: &NewWindow<'_>,
        action: &str,
        details: &serde_json::Value,
    ) -> Result<MaintenanceWindow> {
        let (kind, target, start, end) = (w.target_kind, w.target.to_string(), w.start, w.end);
        let (reason, actor, now) = (w.reason.to_string(), w.actor.to_string(), w.now);
        let (action, details) = (action.to_string(), details.clone());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let table_sql = match kind {
                TargetKind::Appliance => "SELECT 1 FROM appliances WHERE id = $1",
                TargetKind::Site => "SELECT 1 FROM sites WHERE id = $1",
            };
            if !exists(&mut tx, table_sql, &target)? {
                return Err(StorageError::Missing(format!("{} {target}", kind.as_str())));
            }
            let id: i64 = tx
                .query_one(
                    "INSERT INTO maintenance_windows
                       (target_kind, target, start_at, end_at, reason, created_by, created)
                     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    &[&kind.as_str(), &target, &start, &end, &reason, &actor, &now],
                )?
                .get(0);
            let mut details = details;
            details["window"] = id.into();
            audit(&mut tx, now, &actor, &action, (kind, &target), &details)?;
            let window = select_window(&mut tx, id)?;
            tx.commit()?;
            Ok(window)
        })
    }

    fn window(&self, id: i64) -> Result<MaintenanceWindow> {
        self.call(move |c| select_window(c, id))
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
        let (actor, reason) = (actor.to_string(), reason.to_string());
        let (action, details) = (action.to_string(), details.clone());
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let changed = tx.execute(
                "UPDATE maintenance_windows SET ended_by = $2, ended_at = $3, end_reason = $4
                 WHERE id = $1 AND ended_at IS NULL AND end_at > $3",
                &[&id, &actor, &now, &reason],
            )?;
            if changed == 0 {
                // Missing is an error of its own; a window already over is the caller's to report.
                select_window(&mut tx, id)?;
                return Ok(None);
            }
            let window = select_window(&mut tx, id)?;
            audit(
                &mut tx,
                now,
                &actor,
                &action,
                (window.target_kind, &window.target),
                &details,
            )?;
            tx.commit()?;
            Ok(Some(window))
        })
    }

    fn open_windows(&self, now: i64) -> Result<Vec<MaintenanceWindow>> {
        self.call(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {WINDOW_COLUMNS} FROM maintenance_windows
                     WHERE ended_at IS NULL AND end_at > $1 ORDER BY start_at, id"
                ),
                &[&now],
            )?
            .iter()
            .map(window_at)
            .collect())
        })
    }

    fn all_windows(&self, n: usize) -> Result<Vec<MaintenanceWindow>> {
        let n = limit(n);
        self.call(move |c| {
            Ok(c.query(
                &format!(
                    "SELECT {WINDOW_COLUMNS} FROM maintenance_windows ORDER BY id DESC LIMIT $1"
                ),
                &[&n],
            )?
            .iter()
            .map(window_at)
            .collect())
        })
    }

    fn audit_log(&self, target: Option<&str>, n: usize) -> Result<Vec<AuditEntry>> {
        let n = limit(n);
        let target = target.map(|t| {
            // `appliance:a1` names one kind; a bare `a1` matches either.
            match t.split_once(':') {
                Some((k, id)) if k == "appliance" || k == "site" => {
                    (Some(k.to_string()), id.to_string())
                }
                _ => (None, t.to_string()),
            }
        });
        self.call(move |c| {
            let rows = match target {
                Some((kind, id)) => c.query(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit_log
                         WHERE target = $1 AND ($2::text IS NULL OR target_kind = $2)
                         ORDER BY id DESC LIMIT $3"
                    ),
                    &[&id, &kind, &n],
                )?,
                None => c.query(
                    &format!("SELECT {AUDIT_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1"),
                    &[&n],
                )?,
            };
            Ok(rows.iter().map(audit_entry_at).collect())
        })
    }

    fn serving_figures(&self) -> Result<Vec<ServingFigures>> {
        let downtime = self.downtime;
        self.call(move |c| {
            Ok(c.query(
                "SELECT oca_id, active_connections, bytes_per_sec, last_report FROM appliance_health",
                &[],
            )?
            .iter()
            .map(|r| ServingFigures {
                oca_id: r.get(0),
                active_connections: unsigned(r.get(1)),
                bytes_per_sec: unsigned(r.get(2)),
                last_report: downtime.heard(r.get(3)),
            })
            .collect())
        })
    }
}
