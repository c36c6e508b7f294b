//! Readiness: whether a load balancer should send this replica new requests, as `GET /readyz`
//! answers it (docs/control-plane.md, "Replicas behind HAProxy").
//!
//! Ready means: started (the database is open and migrated and the in-memory views are loaded
//! before the listener takes its first connection, so a replica that answers at all has them),
//! not draining, storage answered its last check, and, on an engine shared by replicas, the
//! change feed was read within [`FEED_BEHIND`] (its views follow the other replicas'). The check runs in the background, one at
//! a time, every [`CHECK_EVERY`], each under [`PING_DEADLINE`]: `/readyz` reads two words and
//! never waits on storage, however many load balancers ask and however often, and a storage
//! that hangs cannot pile up blocked threads (the next check waits for the hung one to end).
//!
//! Draining starts at the first SIGTERM and never ends: from then on `/readyz` is 503 while the
//! listener keeps serving for the drain period, long enough for the load balancer's health
//! checks to take the replica out (`inter × fall`) before it stops accepting.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How often storage is checked.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// How long one storage check may take before it counts as failed.
pub const PING_DEADLINE: Duration = Duration::from_secs(1);

/// A verdict older than this counts as failed: the checking task itself is not running.
const STALE_AFTER: Duration = Duration::from_secs(3);

/// A replica that follows a change feed is not ready when it has not read the feed, nor made
/// progress applying what it read, for this long: a few polls
/// ([`crate::storage::changes::POLL_EVERY`]) missed, the feed's session down or the follower
/// stuck.
pub const FEED_BEHIND: Duration = Duration::from_secs(5);

/// Why the replica is not ready (the body of a 503 from `/readyz`; no detail for the Internet,
/// the log has it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// SIGTERM: finishing what it has, taking nothing new from the load balancer.
    Draining,
    /// Storage has not been checked yet (the first second after the start).
    StorageUnchecked,
    /// Storage failed its last check, or did not answer it within the deadline.
    StorageFailing,
    /// The last check is too old: the checker is stuck.
    StorageStale,
    /// The change feed has not been read for [`FEED_BEHIND`]: this replica's views may miss
    /// other replicas' writes.
    FeedBehind,
}

impl NotReady {
    /// One line saying why.
    pub fn reason(self) -> &'static str {
        match self {
            NotReady::Draining => "draining",
            NotReady::StorageUnchecked => "storage not checked yet",
            NotReady::StorageFailing => "storage failing",
            NotReady::StorageStale => "storage check stuck",
            NotReady::FeedBehind => "change feed behind",
        }
    }
}

/// The replica's readiness, shared by the handlers, the storage checker and the signal handler.
#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
    /// The last storage check: whether it passed, and when it ended.
    storage: Mutex<Option<(bool, Instant)>>,
    /// When the change feed was last read, on an engine that has one.
    feed: Mutex<Option<Instant>>,
}

impl Readiness {
    /// Not ready until storage passes its first check.
    pub fn new() -> Readiness {
        Readiness::default()
    }

    /// From now on, not ready (for good).
    pub fn start_draining(&self) {
        self.draining.store(true, SeqCst);
    }

    /// Whether draining has started.
    pub fn draining(&self) -> bool {
        self.draining.load(SeqCst)
    }

    /// Records a storage check that ended at `now`.
    pub fn record(&self, passed: bool, now: Instant) {
        *self.storage.lock() = Some((passed, now));
    }

    /// Records a read of the change feed that ended at `now` (the first one starts watching
    /// it).
    pub fn feed_read(&self, now: Instant) {
        *self.feed.lock() = Some(now);
    }

    /// Whether the replica takes new requests at `now`, or why not.
    pub fn check(&self, now: Instant) -> Result<(), NotReady> {
        if self.draining() {
            return Err(NotReady::Draining);
        }
        if let Some(at) = *self.feed.lock() {
            if now.saturating_duration_since(at) > FEED_BEHIND {
                return Err(NotReady::FeedBehind);
            }
        }
        match *self.storage.lock() {
            None => Err(NotReady::StorageUnchecked),
            Some((false, _)) => Err(NotReady::StorageFailing),
            Some((true, at)) if now.saturating_duration_since(at) > STALE_AFTER => {
                Err(NotReady::StorageStale)
            }
            Some((true, _)) => Ok(()),
        }
    }
}

/// Checks storage with `ping` (a blocking call, run off the async workers) every
/// [`CHECK_EVERY`] under [`PING_DEADLINE`] and records each verdict; logs when it changes.
/// Runs until the runtime stops.
pub async fn watch_storage<F, E>(readiness: Arc<Readiness>, ping: F)
where
    F: Fn() -> Result<(), E> + Send + Sync + 'static,
    E: Display + Send + 'static,
{
    let ping = Arc::new(ping);
    let mut every = tokio::time::interval(CHECK_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<bool> = None;
    loop {
        every.tick().await;
        let p = ping.clone();
        let mut task = tokio::task::spawn_blocking(move || p().map_err(|e| e.to_string()));
        let (verdict, hung) = match tokio::time::timeout(PING_DEADLINE, &mut task).await {
            Ok(Ok(Ok(()))) => (Ok(()), false),
            Ok(Ok(Err(e))) => (Err(e), false),
            Ok(Err(e)) => (Err(format!("the check panicked: {e}")), false),
            Err(_) => (Err(format!("no answer within {PING_DEADLINE:?}")), true),
        };
        readiness.record(verdict.is_ok(), Instant::now());
        if last != Some(verdict.is_ok()) {
            match &verdict {
                Ok(()) => tracing::info!("storage check passed: ready"),
                Err(e) => tracing::warn!(error = %e, "storage check failed: not ready"),
            }
            last = Some(verdict.is_ok());
        }
        if hung {
            // One check at a time: a storage that hangs holds one blocking thread, not one a
            // second. Not ready meanwhile (recorded above).
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_after_a_passed_check_and_until_draining() {
        let r = Readiness::new();
        let t0 = Instant::now();
        assert_eq!(r.check(t0), Err(NotReady::StorageUnchecked));
        r.record(true, t0);
        assert_eq!(r.check(t0), Ok(()));
        r.record(false, t0);
        assert_eq!(r.check(t0), Err(NotReady::StorageFailing));
        r.record(true, t0);
        assert_eq!(
            r.check(t0 + STALE_AFTER + Duration::from_millis(1)),
            Err(NotReady::StorageStale)
        );
        r.record(true, t0 + FEED_BEHIND);
        r.feed_read(t0);
        assert_eq!(r.check(t0 + FEED_BEHIND), Ok(()));
        assert_eq!(
            r.check(t0 + FEED_BEHIND + Duration::from_millis(1)),
            Err(NotReady::FeedBehind),
            "a feed not read for {FEED_BEHIND:?}"
        );
        r.start_draining();
        assert_eq!(r.check(t0), Err(NotReady::Draining));
        r.record(true, t0);
        assert_eq!(r.check(t0), Err(NotReady::Draining), "draining is for good");
    }

    #[tokio::test]
    async fn a_hanging_check_fails_at_its_deadline_and_never_piles_up() {
        let r = Arc::new(Readiness::new());
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (run, top) = (running.clone(), most.clone());
        let watcher = tokio::spawn(watch_storage(r.clone(), move || {
            let n = run.fetch_add(1, SeqCst) + 1;
            top.fetch_max(n, SeqCst);
            std::thread::sleep(Duration::from_millis(2500));
            run.fetch_sub(1, SeqCst);
            Ok::<(), String>(())
        }));
        tokio::time::sleep(PING_DEADLINE + Duration::from_millis(300)).await;
        assert_eq!(r.check(Instant::now()), Err(NotReady::StorageFailing));
        tokio::time::sleep(Duration::from_secs(3)).await;
        watcher.abort();
        assert_eq!(most.load(SeqCst), 1, "one check at a time");
    }
}
