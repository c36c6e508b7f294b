//! Concurrent-stream leases in SQLite.

use rusqlite::params;

use crate::storage::sqlite::SqliteStorage;
use crate::storage::{LeaseRow, LeaseStore, Result};

impl LeaseStore for SqliteStorage {
    fn live_leases(&self, now: i64) -> Result<Vec<LeaseRow>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT subscriber, title, expires FROM streams WHERE expires > ?1")?;
        let rows = stmt.query_map([now], |r| {
            Ok(LeaseRow {
                subscriber: r.get(0)?,
                title: r.get(1)?,
                expires: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn commit_leases(&self, leases: &[LeaseRow], purge_before: Option<i64>) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO streams (subscriber, title, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT(subscriber, title) DO UPDATE SET expires = max(expires, excluded.expires)",
            )?;
            for w in leases {
                upsert.execute(params![w.subscriber, w.title, w.expires])?;
            }
        }
        if let Some(before) = purge_before {
            tx.execute("DELETE FROM streams WHERE expires <= ?1", [before])?;
        }
        tx.commit()?;
        Ok(())
    }
}
