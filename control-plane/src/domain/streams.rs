//! Concurrent-stream leases: decided by storage in a group commit, after a check in memory.
//!
//! Every play takes (or renews) a lease on one of its subscriber's stream slots. This process's
//! own leases are kept in memory under one mutex: a subscriber they already fill is refused at
//! once (they only ever under-count the database's leases: other replicas' leases are missing
//! and no lease ends early). Otherwise the request is queued to a writer thread that hands
//! everything queued to storage in one transaction ([`crate::storage::LeaseStore::take_leases`]:
//! one fsync for many plays), which decides each request against the leases on record, of
//! every replica, and writes those granted. A play is answered only after its lease committed,
//! so a crash loses no lease a player was told about; one storage refused is given back here
//! and the play refused.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::storage::{LeaseRequest, LeaseRow, Storage, StorageError};

/// Most leases written in one transaction.
const MAX_BATCH: usize = 4096;

/// How often expired leases are deleted from the database.
const PURGE_EVERY: Duration = Duration::from_secs(60);

/// One subscriber's live leases: (title, expiry).
type Held = Vec<(String, i64)>;

/// The outcome of asking for a stream slot.
pub enum Lease {
    /// Not refused here; resolves once storage decided: granted and durable (`Ok(true)`),
    /// refused because other replicas' leases fill the plan (`Ok(false)`), or not recorded.
    Granted(tokio::sync::oneshot::Receiver<Result<bool, String>>),
    /// The plan's other streams fill every slot.
    Refused,
}

struct Write {
    request: LeaseRequest,
    done: tokio::sync::oneshot::Sender<Result<bool, String>>,
}

/// The clock the writer reads to purge expired leases (unix seconds).
pub type Clock = fn() -> i64;

/// The live leases and the queue to their writer.
pub struct Streams {
    live: Mutex<HashMap<String, Held>>,
    queue: Mutex<mpsc::Sender<Write>>,
}

impl Streams {
    /// Loads the leases unexpired at `now` and starts the writer thread, which purges expired
    /// leases by `clock`.
    pub fn start(store: Arc<dyn Storage>, now: i64, clock: Clock) -> Result<Streams, StorageError> {
        let mut live: HashMap<String, Held> = HashMap::new();
        for l in store.live_leases(now)? {
            live.entry(l.subscriber)
                .or_default()
                .push((l.title, l.expires));
        }
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("stream-leases".into())
            .spawn(move || writer(store.as_ref(), &rx, clock))
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
        let mut live = self.live.lock();
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
            request: LeaseRequest {
                lease: LeaseRow {
                    subscriber: subscriber.to_string(),
                    title: title.to_string(),
                    expires,
                },
                max_streams,
                now,
            },
            done,
        };
        // Queued under the lock, so writes of one lease reach the database in decision order.
        let queue = self.queue.lock();
        if let Err(mpsc::SendError(w)) = queue.send(write) {
            let _ = w.done.send(Err("the lease writer stopped".into()));
        }
        Lease::Granted(wait)
    }

    /// Gives back a lease whose write failed or that storage refused, so the player can retry.
    pub fn release(&self, subscriber: &str, title: &str, expires: i64) {
        let mut live = self.live.lock();
        if let Some(held) = live.get_mut(subscriber) {
            held.retain(|(t, e)| !(t == title && *e == expires));
        }
    }
}

/// Commits queued leases in batches until every sender is gone.
fn writer(store: &dyn Storage, rx: &mpsc::Receiver<Write>, clock: Clock) {
    let mut last_purge = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let (requests, waiting): (Vec<LeaseRequest>, Vec<_>) =
            batch.into_iter().map(|w| (w.request, w.done)).unzip();
        let purge = last_purge.elapsed() >= PURGE_EVERY;
        let result = store
            .take_leases(&requests, purge.then(clock))
            .map_err(|e| {
                tracing::error!(error = %e, leases = requests.len(), "writing stream leases");
                e.to_string()
            });
        if purge && result.is_ok() {
            last_purge = Instant::now();
        }
        match result {
            Ok(granted) => {
                for (done, granted) in waiting.into_iter().zip(granted) {
                    let _ = done.send(Ok(granted));
                }
            }
            Err(e) => {
                for done in waiting {
                    let _ = done.send(Err(e.clone()));
                }
            }
        }
    }
}
