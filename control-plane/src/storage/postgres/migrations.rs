//! The PostgreSQL side of the schema: the migrations of [`crate::storage::migrations`] that have
//! a PostgreSQL side, applied in order at start. The version is kept in `schema_version` (one
//! row) and moves in the same transaction as the migration (PostgreSQL's DDL is
//! transactional). Replicas starting at once queue on a transaction-level advisory lock, so one
//! migrates and the others find the schema current; a database newer than this binary is
//! refused.

use postgres::Client;

use crate::storage::migrations::MIGRATIONS;

/// The advisory lock key migrations hold (any constant; "OCA-MIGR" in ASCII).
const MIGRATION_LOCK: i64 = 0x4f43_412d_4d49_4752;

/// The schema version this binary brings a database to.
pub(crate) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// Applies the migrations the database has not seen yet, in one transaction under the lock.
pub(super) fn migrate(client: &mut Client) -> anyhow::Result<()> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL);
         INSERT INTO schema_version (version)
           SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM schema_version);",
    )?;
    let current: i64 = tx
        .query_one("SELECT version FROM schema_version", &[])?
        .get(0);
    if current > latest() {
        anyhow::bail!(
            "database schema version {current} is newer than this control plane knows ({}); refusing to run",
            latest()
        );
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        if let Some(sql) = m.postgres {
            tx.batch_execute(sql)?;
            tracing::info!(version = i + 1, "applied schema migration");
        }
    }
    if current < latest() {
        tx.execute("UPDATE schema_version SET version = $1", &[&latest()])?;
    }
    tx.commit()?;
    Ok(())
}
