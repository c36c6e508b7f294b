//! Traffic history in SQLite: `history_appliance` (one row per appliance and bucket, added to
//! by each report inside the report's transaction) and `history_misses` (one row per site and
//! bucket, added to by the miss flush). Sums are read back with `TOTAL`, which never fails on
//! overflow, and as floating point, so a hostile figure can make a bucket wrong but never
//! make a read fail.

use oca_protocol::health::HealthReport;
use oca_protocol::history::HistoryBucket;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

use crate::storage::sqlite::SqliteStorage;
use crate::storage::{HistorySettings, HistoryStore, Result, SiteMisses, StorageError, Traffic};

/// Reported figures above this are taken as this (8 Pb/s, a million times a large appliance),
/// so a bucket's sums stay integers for years of reports.
const MAX_FIGURE: u64 = 1 << 50;

impl SqliteStorage {
    /// The same storage, bucketing reports by `settings` (default: 300 s buckets, 10 s
    /// reports).
    pub fn with_history(mut self, settings: HistorySettings) -> SqliteStorage {
        self.history = settings;
        self
    }
}

/// Adds report `r`, received at `now`, to its appliance's bucket: one upsert, in the report's
/// transaction, before its health row is replaced. The bytes it accounts for are its bytes per
/// second times the seconds since the appliance's previous report (the span the appliance
/// measured its rate over), at most one report interval: after a silence, the rate of the
/// last interval says nothing about the ones before.
pub(super) fn add_report(
    tx: &Transaction<'_>,
    settings: &HistorySettings,
    r: &HealthReport,
    now: i64,
) -> Result<()> {
    let figure = |v: u64| v.min(MAX_FIGURE) as i64;
    let mut upsert = tx.prepare_cached(
        "INSERT INTO history_appliance (oca_id, bucket, reports, bytes_per_sec_sum,
             bytes_per_sec_max, connections_sum, connections_max, requests_per_sec_sum, bytes)
         VALUES (?1, ?2, 1, ?3, ?3, ?4, ?4, ?5, ?3 * MAX(0, MIN(?7, ?6 - COALESCE(
             (SELECT last_report FROM appliance_health WHERE oca_id = ?1), ?6 - ?7))))
         ON CONFLICT (oca_id, bucket) DO UPDATE SET
             reports = reports + 1,
             bytes_per_sec_sum = bytes_per_sec_sum + excluded.bytes_per_sec_sum,
             bytes_per_sec_max = MAX(bytes_per_sec_max, excluded.bytes_per_sec_max),
             connections_sum = connections_sum + excluded.connections_sum,
             connections_max = MAX(connections_max, excluded.connections_max),
             requests_per_sec_sum = requests_per_sec_sum + excluded.requests_per_sec_sum,
             bytes = bytes + excluded.bytes",
    )?;
    upsert.execute(params![
        r.oca_id,
        settings.bucket_of(now),
        figure(r.serving.bytes_per_sec),
        figure(r.serving.active_connections),
        figure(r.serving.requests_per_sec),
        now,
        settings.report_interval_secs,
    ])?;
    Ok(())
}

impl HistoryStore for SqliteStorage {
    fn appliance_traffic(&self, oca_id: &str, from: i64, to: i64) -> Result<Traffic> {
        let conn = self.reader();
        let capacity: Option<i64> = conn
            .query_row(
                "SELECT capacity_bps FROM appliances WHERE id = ?1",
                [oca_id],
                |r| r.get(0),
            )
            .optional()?;
        let Some(capacity) = capacity else {
            return Err(StorageError::Missing(format!("appliance {oca_id}")));
        };
        let buckets = read_buckets(
            &conn,
            "SELECT bucket, reports, bytes_per_sec_sum * 1.0 / reports, bytes_per_sec_max,
                    connections_sum * 1.0 / reports, connections_max,
                    requests_per_sec_sum * 1.0 / reports, bytes
             FROM history_appliance WHERE oca_id = ?1 AND bucket >= ?2 AND bucket < ?3
             ORDER BY bucket",
            oca_id,
            from,
            to,
        )?;
        Ok(Traffic {
            capacity_bps: capacity.max(0) as u64,
            buckets,
        })
    }

    fn site_traffic(&self, site: &str, from: i64, to: i64) -> Result<Traffic> {
        let conn = self.reader();
        if !super::exists(&conn, "SELECT 1 FROM sites WHERE id = ?1", site)? {
            return Err(StorageError::Missing(format!("site {site}")));
        }
        let capacity: f64 = conn.query_row(
            "SELECT TOTAL(capacity_bps) FROM appliances WHERE site = ?1",
            [site],
            |r| r.get(0),
        )?;
        // Appliances first (CROSS JOIN keeps that order), so each one's buckets are a range of
        // the primary key.
        let buckets = read_buckets(
            &conn,
            "SELECT h.bucket, TOTAL(h.reports), TOTAL(h.bytes_per_sec_sum * 1.0 / h.reports),
                    TOTAL(h.bytes_per_sec_max), TOTAL(h.connections_sum * 1.0 / h.reports),
                    TOTAL(h.connections_max), TOTAL(h.requests_per_sec_sum * 1.0 / h.reports),
                    TOTAL(h.bytes)
             FROM appliances a CROSS JOIN history_appliance h
               ON h.oca_id = a.id AND h.bucket >= ?2 AND h.bucket < ?3
             WHERE a.site = ?1 GROUP BY h.bucket ORDER BY h.bucket",
            site,
            from,
            to,
        )?;
        Ok(Traffic {
            capacity_bps: capacity as u64,
            buckets,
        })
    }

    fn site_misses(&self, site: &str, from: i64, to: i64) -> Result<Vec<SiteMisses>> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT bucket, content_misses, health_misses FROM history_misses
             WHERE site = ?1 AND bucket >= ?2 AND bucket < ?3 ORDER BY bucket",
        )?;
        let rows = stmt.query_map(params![site, from, to], |r| {
            Ok(SiteMisses {
                site: site.to_string(),
                bucket: r.get(0)?,
                content: r.get::<_, f64>(1)? as u64,
                health: r.get::<_, f64>(2)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_misses(&self, misses: &[SiteMisses]) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO history_misses (site, bucket, content_misses, health_misses)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (site, bucket) DO UPDATE SET
                   content_misses = content_misses + excluded.content_misses,
                   health_misses = health_misses + excluded.health_misses",
            )?;
            for m in misses {
                upsert.execute(params![
                    m.site,
                    m.bucket,
                    m.content.min(MAX_FIGURE) as i64,
                    m.health.min(MAX_FIGURE) as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn prune_history(&self, before: i64, batch: usize) -> Result<usize> {
        let mut deleted = 0;
        for sql in [
            "DELETE FROM history_appliance WHERE (oca_id, bucket) IN
               (SELECT oca_id, bucket FROM history_appliance WHERE bucket < ?1 LIMIT ?2)",
            "DELETE FROM history_misses WHERE (site, bucket) IN
               (SELECT site, bucket FROM history_misses WHERE bucket < ?1 LIMIT ?2)",
        ] {
            // Each its own short statement, the writer's lock let go between them.
            deleted += self.conn().execute(sql, params![before, batch as i64])?;
        }
        Ok(deleted)
    }
}

/// Runs a bucket query (`key`, from, to) whose columns are [`HistoryBucket`]'s figures in order.
fn read_buckets(
    conn: &Connection,
    sql: &str,
    key: &str,
    from: i64,
    to: i64,
) -> Result<Vec<HistoryBucket>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map(params![key, from, to], bucket)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// One bucket row; figures are read as floating point (`TOTAL`, means) and rounded.
fn bucket(r: &Row<'_>) -> rusqlite::Result<HistoryBucket> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, f64>(i)?.round() as u64) };
    Ok(HistoryBucket {
        start: r.get(0)?,
        reports: n(1)?,
        bytes_per_sec_mean: n(2)?,
        bytes_per_sec_peak: n(3)?,
        connections_mean: n(4)?,
        connections_peak: n(5)?,
        requests_per_sec_mean: n(6)?,
        total_bytes: n(7)?,
        content_misses: None,
        health_misses: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::InventoryStore;
    use oca_protocol::health::{Inventory, Serving, Status};

    fn db() -> (tempfile::TempDir, SqliteStorage) {
        let (dir, db) = super::super::test_db(&["a", "b"]);
        let db = db.with_history(HistorySettings {
            bucket_secs: 300,
            report_interval_secs: 10,
        });
        (dir, db)
    }

    fn report(db: &SqliteStorage, id: &str, bps: u64, conns: u64, now: i64) {
        let r = HealthReport {
            oca_id: id.into(),
            site: "s".into(),
            version: "t".into(),
            status: Status::Ok,
            serving: Serving {
                active_connections: conns,
                bytes_per_sec: bps,
                requests_per_sec: 1,
                capacity_bps: 1_000,
            },
            disks: Vec::new(),
            prefixes: Vec::new(),
            inventory: Inventory::Full {
                seq: 1,
                content: Vec::new(),
            },
            fill_errors: Vec::new(),
            bgp: None,
        };
        db.record_report(&r, now).unwrap();
    }

    #[test]
    fn reports_add_to_their_bucket_and_sites_sum_appliances() {
        let (_dir, db) = db();
        // Bucket 1200: a at 1200 (first report: one interval), 1210, 1230 (a 20 s gap counts 10).
        report(&db, "a", 100, 4, 1_200);
        report(&db, "a", 300, 2, 1_210);
        report(&db, "a", 200, 6, 1_230);
        report(&db, "b", 50, 1, 1_205);
        // The next bucket.
        report(&db, "a", 1_000, 1, 1_500);
        let a = db.appliance_traffic("a", 0, 10_000).unwrap();
        assert_eq!(a.capacity_bps, 1_000);
        assert_eq!(a.buckets.len(), 2);
        let b0 = &a.buckets[0];
        assert_eq!(
            (
                b0.start,
                b0.reports,
                b0.bytes_per_sec_mean,
                b0.bytes_per_sec_peak
            ),
            (1_200, 3, 200, 300)
        );
        assert_eq!((b0.connections_mean, b0.connections_peak), (4, 6));
        assert_eq!(b0.requests_per_sec_mean, 1);
        assert_eq!(b0.total_bytes, 100 * 10 + 300 * 10 + 200 * 10);
        // 270 s of silence before it: one interval counted.
        assert_eq!(a.buckets[1].total_bytes, 10_000);
        let s = db.site_traffic("s", 1_200, 1_500).unwrap();
        assert_eq!(s.capacity_bps, 2_000);
        assert_eq!(s.buckets.len(), 1, "to is excluded");
        let sb = &s.buckets[0];
        assert_eq!(
            (sb.reports, sb.bytes_per_sec_mean, sb.bytes_per_sec_peak),
            (4, 250, 350)
        );
        assert_eq!(sb.total_bytes, 6_000 + 500);
        assert!(matches!(
            db.appliance_traffic("nope", 0, 1),
            Err(StorageError::Missing(_))
        ));
        assert!(matches!(
            db.site_traffic("nope", 0, 1),
            Err(StorageError::Missing(_))
        ));
    }

    #[test]
    fn huge_figures_never_fail_a_report_or_a_read() {
        let (_dir, db) = db();
        for t in 0..50 {
            report(&db, "a", u64::MAX, u64::MAX, 1_200 + t);
        }
        let a = db.appliance_traffic("a", 0, 10_000).unwrap();
        assert_eq!(a.buckets[0].bytes_per_sec_peak, MAX_FIGURE);
        assert_eq!(a.buckets[0].reports, 50);
    }

    #[test]
    fn misses_add_up_and_pruning_goes_in_batches() {
        let (_dir, db) = db();
        let m = |site: &str, bucket, content, health| SiteMisses {
            site: site.into(),
            bucket,
            content,
            health,
        };
        db.add_misses(&[m("s", 0, 1, 0), m("-", 0, 0, 2)]).unwrap();
        db.add_misses(&[m("s", 0, 2, 5)]).unwrap();
        assert_eq!(db.site_misses("s", 0, 300).unwrap(), [m("s", 0, 3, 5)]);
        assert_eq!(db.site_misses("-", 0, 300).unwrap(), [m("-", 0, 0, 2)]);
        for t in 0..25 {
            report(&db, "a", 1, 1, t * 300);
        }
        // Before 7200: 24 report buckets and 2 miss rows, deleted 10 of each kind at a time.
        let mut rounds = 0;
        loop {
            rounds += 1;
            if db.prune_history(7_200, 10).unwrap() < 10 {
                break;
            }
        }
        assert_eq!(rounds, 3);
        let left = db.appliance_traffic("a", 0, i64::MAX).unwrap().buckets;
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].start, 7_200);
        assert!(db.site_misses("s", 0, 300).unwrap().is_empty());
    }
}
