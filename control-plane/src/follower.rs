//! The follower: keeps this replica's in-memory views (catalog, fleet, keys) following what the
//! other replicas sharing its database commit, by reading the change feed
//! ([`crate::storage::changes`]) on a thread of its own.
//!
//! What each change costs here:
//! - a catalog change: the catalog is reloaded outside its lock and swapped in, unless this
//!   replica wrote to it meanwhile (then it is reloaded again), and fill plans are recomputed;
//! - a fleet change (sites, appliances, zones, maintenance windows): the fleet view is marked
//!   stale and its next reader reloads it, as after this replica's own admin changes;
//! - a key change: the keys are reloaded;
//! - another replica's health report: the appliance's status and load are applied at once, as
//!   is an inventory the feed carries (a full one, or a delta when the view holds its base);
//!   when the report changed
//!   the appliance's routes, or its inventory otherwise, those are reread from the database
//!   (one appliance's rows). Both happen under the appliance's report lock
//!   ([`crate::app::ReportLocks`]), so a report this replica records at the same moment is
//!   applied before or after, never lost.
//!
//! Several changes read at once cost one reload of each view. A replica whose feed cannot be
//! read for [`crate::server::readiness::FEED_BEHIND`] says so on `/readyz`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{unix_now, App};
use crate::domain::catalog::CatalogView;
use crate::fleet::Snapshot;
use crate::storage::changes::{Change, ChangeFeed, Feed, ReportChange, POLL_EVERY};
use crate::storage::StorageError;

/// How often rows past the feed's retention are deleted (by every replica; deleting twice is
/// harmless).
const TRIM_EVERY: Duration = Duration::from_secs(60);

/// A batch taking longer than this to apply is logged: the views lag the feed by as much.
const SLOW_APPLY: Duration = Duration::from_secs(1);

/// Reports applied under one write lock of the fleet view.
const REPORTS_AT_ONCE: usize = 100;

/// Times a catalog reload is retried when this replica's own writes keep coming between its
/// read and its swap; then it waits for the next read of the feed.
const CATALOG_TRIES: usize = 3;

/// Starts following `feed` on a thread of its own (the feed's session is a blocking client).
pub fn spawn(app: Arc<App>, feed: Box<dyn ChangeFeed>) -> std::io::Result<()> {
    app.readiness.feed_read(Instant::now());
    std::thread::Builder::new()
        .name("change-feed".into())
        .spawn(move || run(&app, feed))?;
    Ok(())
}

fn run(app: &App, mut feed: Box<dyn ChangeFeed>) {
    let mut trimmed = Instant::now();
    let mut failing = false;
    let mut pending = Pending::default();
    loop {
        match feed.next(POLL_EVERY) {
            Ok(Feed::Changes(changes)) => {
                app.readiness.feed_read(Instant::now());
                let (n, t0) = (changes.len(), Instant::now());
                pending.add(changes);
                // What the batch held, for the warning below: a whole-view reload and a
                // hundred reports are both slow, for different reasons.
                let held = (
                    pending.catalog,
                    pending.fleet,
                    pending.keys,
                    pending.reports.len(),
                );
                pending = apply(app, feed.as_mut(), pending);
                if t0.elapsed() > SLOW_APPLY {
                    let (catalog, fleet, keys, reports) = held;
                    tracing::warn!(
                        changes = n,
                        catalog,
                        fleet,
                        keys,
                        reports,
                        secs = t0.elapsed().as_secs_f64(),
                        "change feed: applying a batch was slow"
                    );
                }
                if failing {
                    tracing::info!("change feed read again");
                    failing = false;
                }
            }
            Ok(Feed::Resync) => {
                tracing::warn!("change feed: away longer than its retention; reloading every view");
                pending = apply(app, feed.as_mut(), Pending::everything());
                app.readiness.feed_read(Instant::now());
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "change feed unreadable: not ready until it is read again");
                    failing = true;
                }
                std::thread::sleep(POLL_EVERY);
            }
        }
        if trimmed.elapsed() >= TRIM_EVERY {
            trimmed = Instant::now();
            if let Err(e) = feed.trim(unix_now()) {
                tracing::warn!(error = %e, "change feed: deleting old rows");
            }
        }
    }
}

/// What is left to apply.
#[derive(Default)]
struct Pending {
    catalog: bool,
    fleet: bool,
    keys: bool,
    reports: Vec<ReportChange>,
}

impl Pending {
    fn everything() -> Pending {
        Pending {
            catalog: true,
            fleet: true,
            keys: true,
            reports: Vec::new(),
        }
    }

    fn add(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Catalog => self.catalog = true,
                Change::Fleet => self.fleet = true,
                Change::Keys => self.keys = true,
                Change::Report(r) => self.reports.push(r),
            }
        }
    }
}

/// Applies what is pending; returns what could not be applied yet.
fn apply(app: &App, feed: &mut dyn ChangeFeed, p: Pending) -> Pending {
    let mut left = Pending::default();
    let n = p.reports.len() as u64
        + [p.catalog, p.fleet, p.keys]
            .map(u64::from)
            .iter()
            .sum::<u64>();
    app.metrics.feed_changes.inc_by(n);
    if p.keys {
        if let Err(e) = app.reload_keys() {
            tracing::warn!(error = %e, "change feed: reloading the URL-signing keys");
            left.keys = true;
        }
    }
    if p.catalog {
        match reload_catalog(app) {
            Ok(true) => app.planner.invalidate(),
            Ok(false) => left.catalog = true,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: reloading the catalog");
                left.catalog = true;
            }
        }
    }
    if p.fleet {
        // The reload reads every report committed before it, these included.
        app.fleet_changed();
        return left;
    }
    for chunk in p.reports.chunks(REPORTS_AT_ONCE) {
        if let Err(e) = follow_reports(app, feed, chunk) {
            tracing::warn!(error = %e, "change feed: rereading an appliance; reloading the fleet view");
            app.fleet_changed();
            break;
        }
        // Still following, only busy: not "behind" for readiness.
        app.readiness.feed_read(Instant::now());
    }
    left
}

/// Reloads the catalog and swaps it in; false when this replica wrote to it every time
/// meanwhile.
fn reload_catalog(app: &App) -> Result<bool, StorageError> {
    use std::sync::atomic::Ordering::SeqCst;
    for _ in 0..CATALOG_TRIES {
        let before = app.catalog_writes.load(SeqCst);
        let fresh = CatalogView::load(app.store.as_ref())?;
        let mut view = app.catalog.write();
        if app.catalog_writes.load(SeqCst) == before {
            *view = fresh;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Applies other replicas' reports to the fleet view, holding their appliances' report
/// locks: the rows of those that need them are reread first, then all are applied under one
/// write lock of the view (a lock per report made steering wait behind hundreds of writers on
/// a busy replica).
fn follow_reports(
    app: &App,
    feed: &mut dyn ChangeFeed,
    reports: &[ReportChange],
) -> Result<(), StorageError> {
    let ids: Vec<&str> = reports.iter().map(|r| r.oca_id.as_str()).collect();
    app.report_locks.with_all(&ids, || {
        let needs: Vec<bool> = {
            let fleet = app.fleet.read();
            reports.iter().map(|r| fleet.needs_record(r)).collect()
        };
        let mut records = Vec::with_capacity(reports.len());
        for (r, needs) in reports.iter().zip(needs) {
            records.push(if needs {
                feed.appliance(&r.oca_id)?
            } else {
                None
            });
        }
        Snapshot::follow_all(&app.fleet, reports, &records);
        Ok(())
    })
}
