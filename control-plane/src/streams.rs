//! Concurrent-stream leases: decided in memory, made durable by group commit.
//!
//! Every play takes (or renews) a lease on one of its subscriber's stream slots. The decision
//! is made under one mutex over the live leases, so two plays never both take the last slot;
//! the lease is then queued to a writer thread that commits everything queued in one SQLite
//! transaction (one fsync for many plays). A play is answered only after its lease committed,
//! so a crash loses no lease a player was told about.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusqlite::params;

use crate::db::{Db, DbError};

/// Most leases written in one transaction.
const MAX_BATCH: usize = 4096;

/// How often expired leases are deleted from the database.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// One subscriber's live leases: (title, expiry).
type Held = Vec<(String, i64)>;

/// The outcome of asking for a stream slot.
pub enum Lease {
    /// Granted; resolves once the lease is durable.
    Granted(tokio::sync::oneshot::Receiver<Result<(), String>>),
    /// The plan's other streams fill every slot.
    Refused,
}

struct Write {
    subscriber: String,
    title: String,
    expires: i64,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// The live leases and the queue to their writer.
pub struct Streams {
    live: Mutex<HashMap<String, Held>>,
    queue: Mutex<mpsc::Sender<Write>>,
}

impl Streams {
    /// Loads the unexpired leases and starts the writer thread.
    pub fn start(db: Arc<Db>, now: i64) -> Result<Streams, DbError> {
        let mut live: HashMap<String, Held> = HashMap::new();
        {
            let conn = db.reader();
            let mut stmt =
                conn.prepare("SELECT subscriber, title, expires FROM streams WHERE expires > ?1")?;
            let rows = stmt.query_map([now], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })?;
            for row in rows {
                let (sub, title, expires) = row?;
                live.entry(sub).or_default().push((title, expires));
            }
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("stream-leases".into())
            .spawn(move || writer(&db, &rx))
            .expect("spawning a thread");
        Ok(Streams {
            live: Mutex::new(live),
            queue: Mutex::new(tx),
        })
    }

    /// Takes (or renews) `subscriber`'s stream of `title` until `expires`, unless the other live
    /// streams already fill `max_streams`.
    pub fn take(
        &self,
        subscriber: &str,
        title: &str,
        max_streams: u32,
        now: i64,
        expires: i64,
    ) -> Lease {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let held = live.entry(subscriber.to_string()).or_default();
        held.retain(|(_, e)| *e > now);
        let others = held.iter().filter(|(t, _)| t != title).count();
        if others >= max_streams as usize {
            return Lease::Refused;
        }
        match held.iter_mut().find(|(t, _)| t == title) {
            Some(lease) => lease.1 = lease.1.max(expires),
            None => held.push((title.to_string(), expires)),
        }
        let (done, wait) = tokio::sync::oneshot::channel();
        let write = Write {
            subscriber: subscriber.to_string(),
            title: title.to_string(),
            expires,
            done,
        };
        // Queued under the lock, so writes of one lease reach the database in decision order.
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(mpsc::SendError(w)) = queue.send(write) {
            let _ = w.done.send(Err("the lease writer stopped".into()));
        }
        Lease::Granted(wait)
    }

    /// Gives back a lease whose write failed, so the player can retry.
    pub fn release(&self, subscriber: &str, title: &str, expires: i64) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = live.get_mut(subscriber) {
            held.retain(|(t, e)| !(t == title && *e == expires));
        }
    }
}

/// Commits queued leases in batches until every sender is gone.
fn writer(db: &Db, rx: &mpsc::Receiver<Write>) {
    let mut last_purge = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let purge = last_purge.elapsed() >= PURGE_EVERY;
        let result = commit(db, &batch, purge).map_err(|e| {
            tracing::error!(error = %e, leases = batch.len(), "writing stream leases");
            e.to_string()
        });
        if purge && result.is_ok() {
            last_purge = Instant::now();
        }
        for w in batch {
            let _ = w.done.send(result.clone());
        }
    }
}

fn commit(db: &Db, batch: &[Write], purge: bool) -> Result<(), DbError> {
    let mut conn = db.conn();
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO streams (subscriber, title, expires) VALUES (?1, ?2, ?3)
             ON CONFLICT(subscriber, title) DO UPDATE SET expires = max(expires, excluded.expires)",
        )?;
        for w in batch {
            upsert.execute(params![w.subscriber, w.title, w.expires])?;
        }
    }
    if purge {
        tx.execute(
            "DELETE FROM streams WHERE expires <= ?1",
            [crate::api::unix_now()],
        )?;
    }
    tx.commit()?;
    Ok(())
}
