//! Traffic history in PostgreSQL: `history_appliance` (one row per appliance and bucket, added
//! to by each report inside the report's transaction) and `history_misses` (one row per site and
//! bucket, added to by the miss flush). Sums are added as NUMERIC and capped at BIGINT's
//! largest value, and read back as floating point, so a hostile figure can make a bucket wrong
//! but never make a report or a read fail (PostgreSQL raises on BIGINT overflow where SQLite
//! would turn the sum into a float).

use oca_protocol::health::HealthReport;
use oca_protocol::history::HistoryBucket;
use postgres::{Row, Transaction};

use crate::storage::postgres::{exists, Params, PgStorage};
use crate::storage::{HistorySettings, HistoryStore, Result, SiteMisses, StorageError, Traffic};

/// Reported figures above this are taken as this (8 Pb/s), as on SQLite.
const MAX_FIGURE: u64 = 1 << 50;

/// `a + b` for BIGINT columns, capped instead of failing.
macro_rules! capped_sum {
    ($col:literal) => {
        concat!(
            $col,
            " = LEAST(t.",
            $col,
            "::numeric + excluded.",
            $col,
            ", 9223372036854775807)::bigint"
        )
    };
}

/// Adds report `r`, received at `now`, to its appliance's bucket: one upsert, in the report's
/// transaction, before its health row is replaced (see the SQLite engine for the accounting).
pub(super) fn add_report(
    tx: &mut Transaction<'_>,
    settings: &HistorySettings,
    r: &HealthReport,
    now: i64,
) -> Result<()> {
    let figure = |v: u64| v.min(MAX_FIGURE) as i64;
    tx.execute(
        concat!(
            "INSERT INTO history_appliance AS t (oca_id, bucket, reports, bytes_per_sec_sum,
                 bytes_per_sec_max, connections_sum, connections_max, requests_per_sec_sum, bytes)
             VALUES ($1, $2, 1, $3, $3, $4, $4, $5, $3 * GREATEST(0, LEAST($7::bigint, $6::bigint - COALESCE(
                 (SELECT last_report FROM appliance_health WHERE oca_id = $1), $6::bigint - $7::bigint))))
             ON CONFLICT (oca_id, bucket) DO UPDATE SET
                 reports = t.reports + 1, ",
            capped_sum!("bytes_per_sec_sum"),
            ",
                 bytes_per_sec_max = GREATEST(t.bytes_per_sec_max, excluded.bytes_per_sec_max), ",
            capped_sum!("connections_sum"),
            ",
                 connections_max = GREATEST(t.connections_max, excluded.connections_max), ",
            capped_sum!("requests_per_sec_sum"),
            ", ",
            capped_sum!("bytes")
        ),
        &[
            &r.oca_id,
            &settings.bucket_of(now),
            &figure(r.serving.bytes_per_sec),
            &figure(r.serving.active_connections),
            &figure(r.serving.requests_per_sec),
            &now,
            &settings.report_interval_secs,
        ],
    )?;
    Ok(())
}

impl PgStorage {
    /// Site `site`'s or appliance `oca_id`'s buckets: `sql` takes (key, from, to).
    fn buckets(
        &self,
        sql: &'static str,
        key: String,
        from: i64,
        to: i64,
    ) -> Result<Vec<HistoryBucket>> {
        self.call(move |c| {
            let params: &Params<'_> = &[&key, &from, &to];
            Ok(c.query(sql, params)?.iter().map(bucket).collect())
        })
    }
}

impl HistoryStore for PgStorage {
    fn appliance_traffic(&self, oca_id: &str, from: i64, to: i64) -> Result<Traffic> {
        let id = oca_id.to_string();
        let capacity: Option<i64> = self.call(move |c| {
            Ok(
                c.query_opt("SELECT capacity_bps FROM appliances WHERE id = $1", &[&id])?
                    .map(|r| r.get(0)),
            )
        })?;
        let Some(capacity) = capacity else {
            return Err(StorageError::Missing(format!("appliance {oca_id}")));
        };
        let buckets = self.buckets(
            "SELECT bucket, reports::float8, bytes_per_sec_sum::float8 / reports,
                    bytes_per_sec_max::float8, connections_sum::float8 / reports,
                    connections_max::float8, requests_per_sec_sum::float8 / reports, bytes::float8
             FROM history_appliance WHERE oca_id = $1 AND bucket >= $2 AND bucket < $3
             ORDER BY bucket",
            oca_id.to_string(),
            from,
            to,
        )?;
        Ok(Traffic {
            capacity_bps: capacity.max(0) as u64,
            buckets,
        })
    }

    fn site_traffic(&self, site: &str, from: i64, to: i64) -> Result<Traffic> {
        let id = site.to_string();
        let capacity: Option<f64> = self.call(move |c| {
            if !exists(c, "SELECT 1 FROM sites WHERE id = $1", &id)? {
                return Ok(None);
            }
            Ok(Some(
                c.query_one(
                    "SELECT COALESCE(SUM(capacity_bps), 0)::float8 FROM appliances WHERE site = $1",
                    &[&id],
                )?
                .get(0),
            ))
        })?;
        let Some(capacity) = capacity else {
            return Err(StorageError::Missing(format!("site {site}")));
        };
        let buckets = self.buckets(
            "SELECT h.bucket, SUM(h.reports)::float8, SUM(h.bytes_per_sec_sum::float8 / h.reports),
                    SUM(h.bytes_per_sec_max)::float8, SUM(h.connections_sum::float8 / h.reports),
                    SUM(h.connections_max)::float8, SUM(h.requests_per_sec_sum::float8 / h.reports),
                    SUM(h.bytes)::float8
             FROM appliances a JOIN history_appliance h
               ON h.oca_id = a.id AND h.bucket >= $2 AND h.bucket < $3
             WHERE a.site = $1 GROUP BY h.bucket ORDER BY h.bucket",
            site.to_string(),
            from,
            to,
        )?;
        Ok(Traffic {
            capacity_bps: capacity as u64,
            buckets,
        })
    }

    fn site_misses(&self, site: &str, from: i64, to: i64) -> Result<Vec<SiteMisses>> {
        let site = site.to_string();
        self.call(move |c| {
            Ok(c.query(
                "SELECT bucket, content_misses, health_misses FROM history_misses
                 WHERE site = $1 AND bucket >= $2 AND bucket < $3 ORDER BY bucket",
                &[&site, &from, &to],
            )?
            .iter()
            .map(|r| SiteMisses {
                site: site.clone(),
                bucket: r.get(0),
                content: r.get::<_, i64>(1).max(0) as u64,
                health: r.get::<_, i64>(2).max(0) as u64,
            })
            .collect())
        })
    }

    fn add_misses(&self, misses: &[SiteMisses]) -> Result<()> {
        let misses = misses.to_vec();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let upsert = tx.prepare(concat!(
                "INSERT INTO history_misses AS t (site, bucket, content_misses, health_misses)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (site, bucket) DO UPDATE SET ",
                capped_sum!("content_misses"),
                ", ",
                capped_sum!("health_misses")
            ))?;
            for m in &misses {
                let content = m.content.min(MAX_FIGURE) as i64;
                let health = m.health.min(MAX_FIGURE) as i64;
                tx.execute(&upsert, &[&m.site, &m.bucket, &content, &health])?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn prune_history(&self, before: i64, batch: usize) -> Result<usize> {
        let batch = super::limit(batch);
        let mut deleted = 0;
        for sql in [
            "DELETE FROM history_appliance WHERE (oca_id, bucket) IN
               (SELECT oca_id, bucket FROM history_appliance WHERE bucket < $1 LIMIT $2)",
            "DELETE FROM history_misses WHERE (site, bucket) IN
               (SELECT site, bucket FROM history_misses WHERE bucket < $1 LIMIT $2)",
        ] {
            // Each its own short statement.
            deleted += self.call(move |c| Ok(c.execute(sql, &[&before, &batch])?))? as usize;
        }
        Ok(deleted)
    }
}

/// One bucket row; figures are read as floating point (sums, means) and rounded.
fn bucket(r: &Row) -> HistoryBucket {
    let n = |i: usize| -> u64 { r.get::<_, f64>(i).round() as u64 };
    HistoryBucket {
        start: r.get(0),
        reports: n(1),
        bytes_per_sec_mean: n(2),
        bytes_per_sec_peak: n(3),
        connections_mean: n(4),
        connections_peak: n(5),
        requests_per_sec_mean: n(6),
        total_bytes: n(7),
        content_misses: None,
        health_misses: None,
    }
}
