//! Concurrent-stream leases in PostgreSQL: a batch decided under row locks on its subscribers
//! and written in one statement, so a plan's limit holds across replicas (research
//! docs/research/issue18.md §2.1).

use crate::storage::leases::{decide, Held};
use crate::storage::postgres::PgStorage;
use crate::storage::{LeaseRequest, LeaseRow, LeaseStore, Result};

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

    fn take_leases(
        &self,
        requests: &[LeaseRequest],
        purge_before: Option<i64>,
    ) -> Result<Vec<bool>> {
        let requests = requests.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let mut subscribers: Vec<&str> = requests
                .iter()
                .map(|r| r.lease.subscriber.as_str())
                .collect();
            subscribers.sort_unstable();
            subscribers.dedup();
            // The batch's subscribers locked, in id order (two replicas' batches never
            // deadlock): every replica's decisions for one subscriber take turns, and each
            // reads the leases the one before it committed (READ COMMITTED: a statement sees
            // what committed before it began, and this one begins after the lock is granted).
            tx.execute(
                "SELECT 1 FROM subscribers WHERE id = ANY($1) ORDER BY id FOR UPDATE",
                &[&subscribers],
            )?;
            let mut held = Held::new();
            for row in tx.query(
                "SELECT subscriber, title, expires FROM streams WHERE subscriber = ANY($1)",
                &[&subscribers],
            )? {
                held.entry(row.get(0))
                    .or_default()
                    .push((row.get(1), row.get(2)));
            }
            let (granted, rows) = decide(&requests, &mut held);
            if !rows.is_empty() {
                let (mut s, mut t, mut e) = (Vec::new(), Vec::new(), Vec::new());
                for r in rows {
                    s.push(r.subscriber);
                    t.push(r.title);
                    e.push(r.expires);
                }
                tx.execute(
                    "INSERT INTO streams (subscriber, title, expires)
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
                     ON CONFLICT (subscriber, title)
                     DO UPDATE SET expires = GREATEST(streams.expires, excluded.expires)",
                    &[&s, &t, &e],
                )?;
            }
            if let Some(before) = purge_before {
                tx.execute("DELETE FROM streams WHERE expires <= $1", &[&before])?;
            }
            tx.commit()?;
            Ok(granted)
        })
    }
}
