//! The SQLite side of the schema: the migrations of [`crate::storage::migrations`] applied in
//! order at start. The database records how many it has applied (`PRAGMA user_version`); a
//! database newer than this binary is refused.

use rusqlite::Connection;

use crate::storage::migrations::MIGRATIONS;

/// Applies the migrations the database has not seen yet, each in its own transaction.
pub(crate) fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {current} is newer than this control plane knows ({}); refusing to run",
            MIGRATIONS.len()
        );
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(m.sqlite)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}
