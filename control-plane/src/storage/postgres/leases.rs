//! Concurrent-stream leases in PostgreSQL: a batch written in one statement, the later expiry
//! kept for a lease already held.

use std::collections::BTreeMap;

use crate::storage::postgres::PgStorage;
use crate::storage::{LeaseRow, LeaseStore, Result};

impl LeaseStore for PgStorage {
    fn live_leases(&self, now: i64) -> Result<Vec<LeaseRow>> {
        self.call(move |c| {
            Ok(c.query(
                "SELECT subscriber, title, expires FROM streams WHERE expires > $1",
                &[&now],
            )?
            .iter()
            .map(|r| LeaseRow {
                subscriber: r.get(0),
                title: r.get(1),
                expires: r.get(2),
            })
            .collect())
        })
    }

    fn commit_leases(&self, leases: &[LeaseRow], purge_before: Option<i64>) -> Result<()> {
        // One row per (subscriber, title), the latest expiry: an upsert may not touch a row
        // twice in one statement. In key order, so two replicas' batches lock rows in one order and
        // never deadlock.
        let mut latest: BTreeMap<(&str, &str), i64> = BTreeMap::new();
        for l in leases {
            let e = latest
                .entry((l.subscriber.as_str(), l.title.as_str()))
                .or_insert(l.expires);
            *e = (*e).max(l.expires);
        }
        let mut subscribers = Vec::with_capacity(latest.len());
        let mut titles = Vec::with_capacity(latest.len());
        let mut expires = Vec::with_capacity(latest.len());
        for ((s, t), e) in latest {
            subscribers.push(s.to_string());
            titles.push(t.to_string());
            expires.push(e);
        }
        self.call(move |c| {
            let mut tx = c.transaction()?;
            if !subscribers.is_empty() {
                tx.execute(
                    "INSERT INTO streams (subscriber, title, expires)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
                     ON CONFLICT (subscriber, title)
                     DO UPDATE SET expires = GREATEST(streams.expires, excluded.expires)",
                    &[&subscribers, &titles, &expires],
                )?;
            }
            if let Some(before) = purge_before {
                tx.execute("DELETE FROM streams WHERE expires <= $1", &[&before])?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}
