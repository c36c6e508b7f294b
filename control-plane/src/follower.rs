//! The follower: keeps this replica's in-memory views (catalog, fleet, keys) following what the
//! other replicas sharing its database commit, by reading the change feed
//! ([`crate::storage::changes`]) on a thread of its own.
//!
//! What each change costs here:
//! - a catalog change: the titles or subscribers its row names are reread (one query per kind)
//!   and patched in under the catalog's write lock; a row that names none (a statement that
//!   touched more than [`crate::storage::changes::KEYS_CARRIED`] rows) rereads the whole
//!   catalog outside the lock and swaps it in, unless this replica wrote to the catalog
//!   meanwhile (then it is reread again).
//!   Fill plans are recomputed after a title change, not after a subscriber's;
//! - a change of coverage zones or maintenance windows: that table is reread (it is small) and
//!   set in the fleet view, as after this replica's own writes to it;
//! - sites or appliances registered: those rows are reread and applied to the fleet view in
//!   place ([`crate::fleet::Snapshot::put_site`], `put_appliance`), as this replica's own
//!   registrations are; what cannot be placed so (a new IXP site, an appliance moved) marks the
//!   view stale, and its next reader reloads it whole;
//! - a key change: the keys are reloaded;
//! - another replica's health report: the appliance's status and load are applied at once, as
//!   is an inventory the feed carries (a full one, or a delta when the view holds its base);
//!   when the report changed
//!   the appliance's routes, or its inventory otherwise, those are reread from the database
//!   (one appliance's rows). Both happen under the appliance's report lock
//!   ([`crate::app::ReportLocks`]), so a report this replica records at the same moment is
//!   applied before or after, never lost.
//!
//! Several changes read at once are applied together: each row named is reread once, and each
//! view reloaded whole at most once. A replica whose feed cannot be
//! read for [`crate::server::readiness::FEED_BEHIND`] says so on `/readyz`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{unix_now, App};
use crate::domain::catalog::{CatalogView, Content, Subscriber, Title};
use crate::fleet::Snapshot;
use crate::metrics::Metrics;
use crate::storage::changes::{
    ApplianceRecord, CatalogChange, Change, ChangeFeed, Feed, FleetChange, ReportChange,
    KEYS_CARRIED, POLL_EVERY,
};
use crate::storage::{Storage, StorageError};

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
                    pending.catalog.len(),
                    pending.fleet,
                    pending.keys,
                    pending.reports.len(),
                );
                let mut times = ReportTimes::default();
                pending = apply(app, feed.as_mut(), pending, &mut times);
                if t0.elapsed() > SLOW_APPLY {
                    let (catalog, fleet, keys, reports) = held;
                    tracing::warn!(
                        changes = n,
                        catalog,
                        fleet,
                        keys,
                        reports,
                        secs = t0.elapsed().as_secs_f64(),
                        report_locks_secs = times.locks.as_secs_f64(),
                        report_reads_secs = times.reads.as_secs_f64(),
                        report_view_secs = times.view.as_secs_f64(),
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
                let mut times = ReportTimes::default();
                pending = apply(app, feed.as_mut(), Pending::everything(), &mut times);
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
    catalog: CatalogPending,
    /// The whole fleet view (a fleet change that names no rows, or too many).
    fleet: bool,
    zones: bool,
    windows: bool,
    /// Sites and appliances registered or changed, by id.
    sites: BTreeSet<String>,
    appliances: BTreeSet<String>,
    keys: bool,
    reports: Vec<ReportChange>,
}

impl Pending {
    fn everything() -> Pending {
        Pending {
            catalog: CatalogPending::whole(),
            fleet: true,
            keys: true,
            ..Pending::default()
        }
    }

    fn add(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Catalog(c) => self.catalog.add(c),
                Change::Fleet(FleetChange::Structure) => self.fleet = true,
                Change::Fleet(FleetChange::Zones) => self.zones = true,
                Change::Fleet(FleetChange::Windows) => self.windows = true,
                Change::Fleet(FleetChange::Sites(ids)) => self.sites.extend(ids),
                Change::Fleet(FleetChange::Appliances(ids)) => self.appliances.extend(ids),
                Change::Keys => self.keys = true,
                Change::Report(r) => self.reports.push(r),
            }
        }
        // Past this many rows one at a time, one reload of the view is cheaper.
        if self.sites.len() + self.appliances.len() > KEYS_CARRIED * 10 {
            self.fleet = true;
        }
        if self.fleet {
            self.sites.clear();
            self.appliances.clear();
        }
    }
}

/// Catalog rows to reread: the titles and subscribers named, or the whole catalog.
#[derive(Default)]
struct CatalogPending {
    whole: bool,
    titles: BTreeSet<String>,
    subscribers: BTreeSet<String>,
}

impl CatalogPending {
    fn whole() -> CatalogPending {
        CatalogPending {
            whole: true,
            ..CatalogPending::default()
        }
    }

    fn is_empty(&self) -> bool {
        !self.whole && self.titles.is_empty() && self.subscribers.is_empty()
    }

    /// Rows named; the whole catalog counts as one.
    fn len(&self) -> usize {
        if self.whole {
            1
        } else {
            self.titles.len() + self.subscribers.len()
        }
    }

    fn add(&mut self, c: CatalogChange) {
        match c {
            CatalogChange::Titles(ids) => self.titles.extend(ids),
            CatalogChange::Subscribers(ids) => self.subscribers.extend(ids),
            CatalogChange::Whole => self.whole = true,
        }
        // Past this many rows one at a time, one read of everything is cheaper.
        if self.whole || self.titles.len() + self.subscribers.len() > KEYS_CARRIED * 10 {
            *self = CatalogPending::whole();
        }
    }
}

/// Applies what is pending; returns what could not be applied yet.
fn apply(app: &App, feed: &mut dyn ChangeFeed, p: Pending, times: &mut ReportTimes) -> Pending {
    let mut left = Pending::default();
    let n = p.reports.len() as u64
        + p.catalog.len() as u64
        + (p.sites.len() + p.appliances.len()) as u64
        + [p.fleet, p.zones, p.windows, p.keys]
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
    if !p.catalog.is_empty() {
        match follow_catalog(app, &p.catalog) {
            Ok(true) => {
                if p.catalog.whole || !p.catalog.titles.is_empty() {
                    app.planner.invalidate();
                }
            }
            Ok(false) => left.catalog = p.catalog,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: rereading the catalog");
                left.catalog = p.catalog;
            }
        }
    }
    if p.fleet {
        // The reload reads every report, zone and window committed before it, these included.
        app.fleet_changed();
        return left;
    }
    if p.zones {
        if let Err(e) = app.reload_zones() {
            tracing::warn!(error = %e, "change feed: rereading coverage zones");
            left.zones = true;
        }
    }
    if p.windows {
        if let Err(e) = app.reload_windows() {
            tracing::warn!(error = %e, "change feed: rereading maintenance windows");
            left.windows = true;
        }
    }
    if !p.sites.is_empty() || !p.appliances.is_empty() {
        if let Err(e) = follow_registrations(app, &p.sites, &p.appliances) {
            tracing::warn!(error = %e, "change feed: rereading sites and appliances");
            left.sites = p.sites;
            left.appliances = p.appliances;
        }
    }
    for chunk in p.reports.chunks(REPORTS_AT_ONCE) {
        if let Err(e) = follow_reports(app, feed, chunk, times) {
            tracing::warn!(error = %e, "change feed: rereading an appliance; reloading the fleet view");
            app.fleet_changed();
            break;
        }
        // Still following, only busy: not "behind" for readiness.
        app.readiness.feed_read(Instant::now());
        let oldest = chunk.iter().map(|r| r.at).min().unwrap_or(i64::MAX);
        app.metrics
            .feed_report_lag
            .set((unix_now() - oldest).max(0));
    }
    left
}

/// Rereads what `p` names and applies it to the catalog view.
///
/// Rows named are read under the view's write lock: this replica's own writes hold that lock
/// across their storage write, so none can come between the read and the apply, and the read
/// is one query per kind (milliseconds, during which plays wait). Reading outside the lock and
/// retrying when this replica wrote meanwhile starved: while both replicas took new titles (the
/// fleet benchmark's setup) every try met an own write, and the keys left over grew to
/// thousands. The whole catalog, which takes seconds to read, is still read outside the lock;
/// false when this replica wrote to the view every time meanwhile.
fn follow_catalog(app: &App, p: &CatalogPending) -> Result<bool, StorageError> {
    use std::sync::atomic::Ordering::SeqCst;
    if !p.whole {
        let mut view = app.catalog.write();
        CatalogRead::of(app.store.as_ref(), &app.metrics, p)?.apply(&mut view);
        return Ok(true);
    }
    for _ in 0..CATALOG_TRIES {
        let before = app.catalog_writes.load(SeqCst);
        let read = CatalogRead::of(app.store.as_ref(), &app.metrics, p)?;
        let mut view = app.catalog.write();
        if app.catalog_writes.load(SeqCst) == before {
            read.apply(&mut view);
            return Ok(true);
        }
    }
    Ok(false)
}

/// A title's row and its renditions.
type TitleRows = (Title, Vec<Content>);

/// Catalog rows as committed, read for [`follow_catalog`].
enum CatalogRead {
    Whole(CatalogView),
    Rows {
        /// Each title named: its row and renditions, or none when it is gone.
        titles: Vec<(String, Option<TitleRows>)>,
        /// Each subscriber named, or none when it is gone.
        subscribers: Vec<(String, Option<Subscriber>)>,
    },
}

impl CatalogRead {
    fn of(
        store: &dyn Storage,
        metrics: &Metrics,
        p: &CatalogPending,
    ) -> Result<CatalogRead, StorageError> {
        if p.whole {
            metrics.feed_catalog_reloads.inc();
            return Ok(CatalogRead::Whole(CatalogView::load(store)?));
        }
        // One read per kind for all the rows named: at setup, thousands of titles come at once.
        let title_ids: Vec<String> = p.titles.iter().cloned().collect();
        let mut found: HashMap<String, TitleRows> = store
            .titles_among(&title_ids)?
            .into_iter()
            .map(|t| (t.id.clone(), (t, Vec::new())))
            .collect();
        for c in store.content_of_titles(&title_ids)? {
            if let Some((_, renditions)) = found.get_mut(&c.title) {
                renditions.push(c);
            }
        }
        let titles = title_ids
            .into_iter()
            .map(|id| {
                let row = found.remove(&id);
                (id, row)
            })
            .collect();
        let subscriber_ids: Vec<String> = p.subscribers.iter().cloned().collect();
        let mut found: HashMap<String, Subscriber> = store
            .subscribers_among(&subscriber_ids)?
            .into_iter()
            .map(|s| (s.id.clone(), s))
            .collect();
        let subscribers = subscriber_ids
            .into_iter()
            .map(|id| {
                let row = found.remove(&id);
                (id, row)
            })
            .collect();
        Ok(CatalogRead::Rows {
            titles,
            subscribers,
        })
    }

    fn apply(self, view: &mut CatalogView) {
        match self {
            CatalogRead::Whole(fresh) => *view = fresh,
            CatalogRead::Rows {
                titles,
                subscribers,
            } => {
                for (id, row) in titles {
                    view.put_title(&id, row);
                }
                for (id, row) in subscribers {
                    match row {
                        Some(s) => view.put_subscriber(s),
                        None => view.remove_subscriber(&id),
                    }
                }
            }
        }
    }
}

/// Rereads the sites and appliances named and applies them to the fleet view; one gone from
/// storage (nothing deletes them today) reloads the view whole.
fn follow_registrations(
    app: &App,
    sites: &BTreeSet<String>,
    appliances: &BTreeSet<String>,
) -> Result<(), StorageError> {
    let mut read_sites = Vec::new();
    if !sites.is_empty() {
        read_sites = app.store.sites()?;
        read_sites.retain(|s| sites.contains(&s.id));
    }
    let ids: Vec<String> = appliances.iter().cloned().collect();
    let read_appliances = app.store.reported_appliances_among(&ids)?;
    if read_appliances.len() < ids.len() {
        app.fleet_changed();
        return Ok(());
    }
    if read_sites.len() < sites.len() {
        app.fleet_changed();
        return Ok(());
    }
    app.registered(&read_sites, read_appliances);
    Ok(())
}

/// Where following reports spent its time, for the slow-batch warning.
#[derive(Default)]
struct ReportTimes {
    /// Waiting for the appliances' report locks (held by this replica's own reports).
    locks: Duration,
    /// Reading from storage: appliances missing from the view, and rows that need rereading.
    reads: Duration,
    /// Applying under the fleet view's write lock.
    view: Duration,
}

/// Applies other replicas' reports to the fleet view, holding their appliances' report
/// locks: the appliances the view lacks are placed and the rows of those that need them reread
/// (one query per table for the whole chunk), then all are applied under one write lock of the
/// view (a lock per report made steering wait behind hundreds of writers on a busy replica).
fn follow_reports(
    app: &App,
    feed: &mut dyn ChangeFeed,
    reports: &[ReportChange],
    times: &mut ReportTimes,
) -> Result<(), StorageError> {
    let ids: Vec<&str> = reports.iter().map(|r| r.oca_id.as_str()).collect();
    let asked = Instant::now();
    app.report_locks.with_all(&ids, || {
        let t = Instant::now();
        times.locks += t - asked;
        app.ensure_in_view(&ids)?;
        let needs: Vec<bool> = {
            let fleet = app.fleet.read();
            reports.iter().map(|r| fleet.needs_record(r)).collect()
        };
        let needing: Vec<&str> = ids
            .iter()
            .zip(&needs)
            .filter_map(|(id, &n)| n.then_some(*id))
            .collect();
        let mut read = Vec::new();
        if !needing.is_empty() {
            read = feed.appliances(&needing)?;
        }
        let mut read = read.into_iter();
        let records: Vec<Option<ApplianceRecord>> = needs
            .iter()
            .map(|&n| if n { read.next().flatten() } else { None })
            .collect();
        let t2 = Instant::now();
        times.reads += t2 - t;
        Snapshot::follow_all(&app.fleet, reports, &records);
        times.view += t2.elapsed();
        Ok(())
    })
}
