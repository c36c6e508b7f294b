//! Maintenance windows and audit entries by scope in PostgreSQL: one `WHERE` fragment per scope
//! over the `(target_kind, target)` columns both tables share, newest first by id.

use postgres::types::ToSql;

use super::maintenance::{audit_entry_at, window_at, AUDIT_COLUMNS, WINDOW_COLUMNS};
use super::{limit as sql_limit, PgStorage};
use crate::storage::{AuditEntry, MaintenanceWindow, Result, Scope, ScopedMaintenanceStore};

/// A parameter owned by the closure that binds it.
pub(super) enum Value {
    /// TEXT.
    Text(String),
    /// BIGINT.
    Int(i64),
}

impl Value {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Value::Text(s) => s,
            Value::Int(i) => i,
        }
    }
}

/// Runs `sql` with `params` ($1, $2, ... in order) and maps each row.
pub(super) fn query<T: Send + 'static>(
    db: &PgStorage,
    sql: String,
    params: Vec<Value>,
    map: fn(&postgres::Row) -> T,
) -> Result<Vec<T>> {
    db.call(move |c| {
        let bound: Vec<&(dyn ToSql + Sync)> = params.iter().map(Value::sql).collect();
        Ok(c.query(&sql, &bound)?.iter().map(map).collect())
    })
}

/// `?` placeholders numbered `$1`, `$2`, ... in order.
pub(super) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(ch);
        }
    }
    out
}

/// The condition selecting `scope`'s targets, and its parameters in order (`?` placeholders).
fn filter(scope: Scope<'_>) -> (&'static str, Vec<Value>) {
    let text = |s: &str| Value::Text(s.to_string());
    match scope {
        Scope::All => ("TRUE", Vec::new()),
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

impl ScopedMaintenanceStore for PgStorage {
    fn scoped_windows(
        &self,
        scope: Scope<'_>,
        open_at: Option<i64>,
        limit: usize,
    ) -> Result<Vec<MaintenanceWindow>> {
        let (condition, mut params) = filter(scope);
        let open = match open_at {
            Some(now) => {
                params.push(Value::Int(now));
                "ended_at IS NULL AND end_at > ?"
            }
            None => "TRUE",
        };
        params.push(Value::Int(sql_limit(limit)));
        let sql = numbered(&format!(
            "SELECT {WINDOW_COLUMNS} FROM maintenance_windows
             WHERE {condition} AND {open} ORDER BY id DESC LIMIT ?"
        ));
        query(self, sql, params, window_at)
    }

    fn scoped_audit(
        &self,
        scope: Scope<'_>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let (condition, mut params) = filter(scope);
        params.push(Value::Int(before.unwrap_or(i64::MAX)));
        params.push(Value::Int(sql_limit(limit)));
        let sql = numbered(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log
             WHERE {condition} AND id < ? ORDER BY id DESC LIMIT ?"
        ));
        query(self, sql, params, audit_entry_at)
    }
}
