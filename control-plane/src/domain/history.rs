//! Traffic history: which range a caller may ask for, a history put together from storage's
//! buckets and the misses, the misses steering counts in memory until they are added to
//! storage, and the periodic task that adds them and deletes buckets past retention.
//!
//! Reports are rolled up by storage itself, inside each report's transaction
//! ([`crate::storage::HistoryStore`] says why); everything here runs beside that.

use std::collections::HashMap;

use oca_protocol::history::{History, HistoryBucket, HistoryOf};
use parking_lot::Mutex;

use crate::storage::{HistorySettings, SiteMisses, Storage, StorageError, Traffic};

/// Default seconds a bucket spans (`history_bucket_secs`).
pub const DEFAULT_BUCKET_SECS: i64 = 300;

/// Default days buckets are kept (`history_retention_days`): a month and its first days, so
/// this month can be compared with the last.
pub const DEFAULT_RETENTION_DAYS: f64 = 35.0;

/// Most buckets one call may span: 35 days of 5-minute buckets. Bounds a site's answer (its
/// appliances' rows are summed per bucket) and the CSV built from it.
pub const MAX_BUCKETS_PER_CALL: i64 = 10_080;

/// The default range: the last day (or [`MAX_BUCKETS_PER_CALL`] buckets, when fewer).
pub const DEFAULT_RANGE_SECS: i64 = 86_400;

/// The site misses of clients in no site are counted under.
pub const NO_SITE: &str = "-";

/// Rows deleted by one statement of the retention task.
pub const PRUNE_BATCH: usize = 1_000;

/// Batches the retention task runs per tick at most, so a backlog (after a long stop) is
/// worked off over several ticks rather than in one long run.
const PRUNE_BATCHES_PER_TICK: usize = 100;

/// Distinct (site, second) miss counts kept in memory at most; past it (storage failing for a
/// long time) further misses are dropped and logged.
const MAX_TALLY_ENTRIES: usize = 100_000;

/// Traffic history settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistoryConfig {
    /// How reports are bucketed (storage writes the rollup).
    pub buckets: HistorySettings,
    /// Seconds buckets are kept.
    pub retention_secs: i64,
}

impl HistoryConfig {
    /// Settings from the configuration's `history_bucket_secs` and `history_retention_days`.
    pub fn new(
        bucket_secs: i64,
        retention_days: f64,
        report_interval_secs: u64,
    ) -> Result<HistoryConfig, HistoryError> {
        if !(1..=86_400).contains(&bucket_secs) {
            return Err(HistoryError::Config(format!(
                "history_bucket_secs must be 1 to 86400, got {bucket_secs}"
            )));
        }
        if !(retention_days.is_finite() && retention_days > 0.0 && retention_days <= 3_650.0) {
            return Err(HistoryError::Config(format!(
                "history_retention_days must be above 0 and at most 3650, got {retention_days}"
            )));
        }
        Ok(HistoryConfig {
            buckets: HistorySettings {
                bucket_secs,
                report_interval_secs: report_interval_secs as i64,
            },
            retention_secs: ((retention_days * 86_400.0) as i64).max(1),
        })
    }

    /// Seconds between runs of the history task: often enough that misses reach storage well
    /// within their bucket.
    pub fn tick_secs(&self) -> u64 {
        self.buckets.bucket_secs.clamp(1, 10) as u64
    }

    /// The widest range one call may ask for.
    pub fn max_range_secs(&self) -> i64 {
        MAX_BUCKETS_PER_CALL * self.buckets.bucket_secs
    }
}

/// Why a history could not be given.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The range asked for is backwards or too wide.
    #[error("{0}")]
    Range(String),
    /// A setting is out of bounds.
    #[error("{0}")]
    Config(String),
    /// Storage failed, or the appliance or site is unknown.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A range of unix seconds, `[from, to)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// First second.
    pub from: i64,
    /// End, excluded.
    pub to: i64,
}

/// The range a caller asked for at `now`: `to` defaults to the end of the bucket holding `now`
/// (so the bucket filling now is in), `from` to a day before `to` (less when that is over the
/// per-call bound); backwards or over the bound is refused.
pub fn range(
    from: Option<i64>,
    to: Option<i64>,
    now: i64,
    cfg: &HistoryConfig,
) -> Result<Range, HistoryError> {
    let max = cfg.max_range_secs();
    let to = to.unwrap_or_else(|| cfg.buckets.bucket_of(now) + cfg.buckets.bucket_secs);
    let from = from.unwrap_or_else(|| to.saturating_sub(DEFAULT_RANGE_SECS.min(max)));
    if from > to {
        return Err(HistoryError::Range(format!(
            "from ({from}) is after to ({to})"
        )));
    }
    if to.saturating_sub(from) > max {
        return Err(HistoryError::Range(format!(
            "from..to spans {} s; at most {max} s ({MAX_BUCKETS_PER_CALL} buckets of {} s) per call",
            to.saturating_sub(from),
            cfg.buckets.bucket_secs
        )));
    }
    Ok(Range { from, to })
}

/// The history of appliance or site `id` over `range`: the buckets starting from the one
/// holding `range.from` up to `range.to`; a site's with its misses (site [`NO_SITE`]: only the
/// misses of clients in no site).
pub fn history(
    store: &dyn Storage,
    of: HistoryOf,
    id: &str,
    range: Range,
    cfg: &HistoryConfig,
) -> Result<History, HistoryError> {
    let first = cfg.buckets.bucket_of(range.from);
    let traffic = match of {
        HistoryOf::Appliance => store.appliance_traffic(id, first, range.to)?,
        HistoryOf::Site if id == NO_SITE => Traffic {
            capacity_bps: 0,
            buckets: Vec::new(),
        },
        HistoryOf::Site => store.site_traffic(id, first, range.to)?,
    };
    let buckets = match of {
        HistoryOf::Appliance => traffic.buckets,
        HistoryOf::Site => with_misses(traffic.buckets, store.site_misses(id, first, range.to)?),
    };
    Ok(History {
        of,
        id: id.to_string(),
        from: range.from,
        to: range.to,
        bucket_secs: cfg.buckets.bucket_secs as u64,
        capacity_bps: traffic.capacity_bps,
        total_bytes: buckets
            .iter()
            .fold(0u64, |sum, b| sum.saturating_add(b.total_bytes)),
        buckets,
    })
}

/// A site's traffic buckets and miss buckets merged by start, every bucket with both miss
/// counts (zero when none); a bucket with misses and no reports is kept.
fn with_misses(traffic: Vec<HistoryBucket>, misses: Vec<SiteMisses>) -> Vec<HistoryBucket> {
    let mut merged: Vec<HistoryBucket> = Vec::with_capacity(traffic.len() + misses.len());
    let mut misses = misses.into_iter().peekable();
    for mut b in traffic {
        while let Some(m) = misses.next_if(|m| m.bucket < b.start) {
            merged.push(miss_only(m));
        }
        let m = misses.next_if(|m| m.bucket == b.start);
        b.content_misses = Some(m.as_ref().map_or(0, |m| m.content));
        b.health_misses = Some(m.as_ref().map_or(0, |m| m.health));
        merged.push(b);
    }
    merged.extend(misses.map(miss_only));
    merged
}

/// A bucket with misses and no reports.
fn miss_only(m: SiteMisses) -> HistoryBucket {
    HistoryBucket {
        start: m.bucket,
        content_misses: Some(m.content),
        health_misses: Some(m.health),
        ..HistoryBucket::default()
    }
}

/// Steering misses by the client's site and second, counted in memory (steering must not
/// write per decision) until the history task adds them to storage.
#[derive(Default)]
pub struct MissTally {
    counts: Mutex<HashMap<(String, i64), [u64; 2]>>,
}

impl MissTally {
    /// Counts a decision at `now` for a client whose own site is `site` (none: [`NO_SITE`]).
    pub fn count(&self, site: Option<&str>, content_miss: bool, health_miss: bool, now: i64) {
        if !(content_miss || health_miss) {
            return;
        }
        let site = site.unwrap_or(NO_SITE);
        self.add(site, now, [content_miss as u64, health_miss as u64]);
    }

    fn add(&self, site: &str, at: i64, n: [u64; 2]) {
        let mut counts = self.counts.lock();
        let key = (site.to_string(), at);
        if counts.len() >= MAX_TALLY_ENTRIES && !counts.contains_key(&key) {
            tracing::warn!(
                site,
                "steering misses dropped: too many waiting for storage"
            );
            return;
        }
        let c = counts.entry(key).or_default();
        c[0] = c[0].saturating_add(n[0]);
        c[1] = c[1].saturating_add(n[1]);
    }

    /// Takes what was counted, by site and bucket.
    pub fn take(&self, buckets: &HistorySettings) -> Vec<SiteMisses> {
        let counts = std::mem::take(&mut *self.counts.lock());
        let mut by_bucket: HashMap<(String, i64), [u64; 2]> = HashMap::new();
        for ((site, at), n) in counts {
            let c = by_bucket.entry((site, buckets.bucket_of(at))).or_default();
            c[0] = c[0].saturating_add(n[0]);
            c[1] = c[1].saturating_add(n[1]);
        }
        by_bucket
            .into_iter()
            .map(|((site, bucket), [content, health])| SiteMisses {
                site,
                bucket,
                content,
                health,
            })
            .collect()
    }

    /// Puts back what storage could not take (a bucket's start lies in its own bucket).
    pub fn give_back(&self, misses: Vec<SiteMisses>) {
        for m in misses {
            self.add(&m.site, m.bucket, [m.content, m.health]);
        }
    }
}

/// One run of the history task at `now`: adds the misses counted since the last run, then
/// deletes buckets older than the retention, [`PRUNE_BATCH`] rows a statement, at most
/// `PRUNE_BATCHES_PER_TICK` statements; returns the rows deleted.
pub fn tick(
    store: &dyn Storage,
    tally: &MissTally,
    cfg: &HistoryConfig,
    now: i64,
) -> Result<usize, StorageError> {
    let misses = tally.take(&cfg.buckets);
    if !misses.is_empty() {
        if let Err(e) = store.add_misses(&misses) {
            tally.give_back(misses);
            return Err(e);
        }
    }
    let before = cfg
        .buckets
        .bucket_of(now.saturating_sub(cfg.retention_secs));
    let mut deleted = 0;
    for _ in 0..PRUNE_BATCHES_PER_TICK {
        let n = store.prune_history(before, PRUNE_BATCH)?;
        deleted += n;
        if n < PRUNE_BATCH {
            break;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(bucket_secs: i64) -> HistoryConfig {
        HistoryConfig::new(bucket_secs, 35.0, 10).unwrap()
    }

    #[test]
    fn ranges_default_to_a_day_and_are_bounded() {
        let c = cfg(300);
        assert_eq!(
            range(None, None, 100_000, &c).unwrap(),
            Range {
                from: 13_800,
                to: 100_200
            }
        );
        assert!(range(Some(10), Some(5), 100, &c).is_err());
        assert!(range(Some(0), Some(c.max_range_secs()), 0, &c).is_ok());
        let e = range(Some(0), Some(c.max_range_secs() + 1), 0, &c).unwrap_err();
        assert!(e.to_string().contains("at most 3024000 s"), "{e}");
        assert!(range(Some(i64::MIN), Some(i64::MAX), 0, &c).is_err());
        // One-second buckets: the default shrinks to fit the bound.
        let r = range(None, None, 100_000, &cfg(1)).unwrap();
        assert_eq!(r.to - r.from, MAX_BUCKETS_PER_CALL);
    }

    #[test]
    fn settings_are_checked() {
        assert!(HistoryConfig::new(0, 35.0, 10).is_err());
        assert!(HistoryConfig::new(300, 0.0, 10).is_err());
        assert!(HistoryConfig::new(300, f64::NAN, 10).is_err());
        assert_eq!(cfg(300).retention_secs, 35 * 86_400);
    }

    #[test]
    fn misses_merge_into_traffic_buckets() {
        let t = |start| HistoryBucket {
            start,
            reports: 1,
            ..HistoryBucket::default()
        };
        let m = |bucket, content| SiteMisses {
            site: "s".into(),
            bucket,
            content,
            health: 1,
        };
        let merged = with_misses(vec![t(300), t(900)], vec![m(0, 1), m(300, 2), m(1_200, 3)]);
        let got: Vec<_> = merged
            .iter()
            .map(|b| (b.start, b.reports, b.content_misses, b.health_misses))
            .collect();
        assert_eq!(
            got,
            [
                (0, 0, Some(1), Some(1)),
                (300, 1, Some(2), Some(1)),
                (900, 1, Some(0), Some(0)),
                (1_200, 0, Some(3), Some(1)),
            ]
        );
    }

    #[test]
    fn the_tally_buckets_misses_and_takes_them_back() {
        let tally = MissTally::default();
        let b = cfg(300).buckets;
        tally.count(Some("s"), true, false, 301);
        tally.count(Some("s"), false, true, 599);
        tally.count(None, true, false, 600);
        tally.count(Some("s"), false, false, 600);
        let mut got = tally.take(&b);
        got.sort_by(|a, b| (&a.site, a.bucket).cmp(&(&b.site, b.bucket)));
        let want = [
            SiteMisses {
                site: "-".into(),
                bucket: 600,
                content: 1,
                health: 0,
            },
            SiteMisses {
                site: "s".into(),
                bucket: 300,
                content: 1,
                health: 1,
            },
        ];
        assert_eq!(got, want);
        assert!(tally.take(&b).is_empty());
        tally.give_back(got);
        let mut again = tally.take(&b);
        again.sort_by(|a, b| (&a.site, a.bucket).cmp(&(&b.site, b.bucket)));
        assert_eq!(again, want);
    }
}
