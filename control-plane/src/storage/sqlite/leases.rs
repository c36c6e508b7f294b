//! Concurrent-stream leases in SQLite: decided and written in the one writer's transaction.

use rusqlite::params;

use crate::storage::leases::{decide, Held};
use crate::storage::sqlite::SqliteStorage;
use crate::storage::{LeaseRequest, LeaseRow, LeaseStore, Result};

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

    fn take_leases(
        &self,
        requests: &[LeaseRequest],
        purge_before: Option<i64>,
    ) -> Result<Vec<bool>> {
        // IMMEDIATE: the write lock before the first read, so every decision on this file, of
        // this process or another, reads the leases the one before it committed (a deferred
        // transaction would fail to upgrade its read lock when another process wrote meanwhile).
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut held = Held::new();
        {
            let mut stmt =
                tx.prepare_cached("SELECT title, expires FROM streams WHERE subscriber = ?1")?;
            for r in requests {
                let s = &r.lease.subscriber;
                if held.contains_key(s) {
                    continue;
                }
                let rows = stmt.query_map([s], |row| Ok((row.get(0)?, row.get(1)?)))?;
                held.insert(s.clone(), rows.collect::<Result<_, _>>()?);
            }
        }
        let (granted, rows) = decide(requests, &mut held);
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO streams (subscriber, title, expires) VALUES (?1, ?2, ?3)
                 ON CONFLICT(subscriber, title) DO UPDATE SET expires = max(expires, excluded.expires)",
            )?;
            for w in &rows {
                upsert.execute(params![w.subscriber, w.title, w.expires])?;
            }
        }
        if let Some(before) = purge_before {
            tx.execute("DELETE FROM streams WHERE expires <= ?1", [before])?;
        }
        tx.commit()?;
        Ok(granted)
    }
}
