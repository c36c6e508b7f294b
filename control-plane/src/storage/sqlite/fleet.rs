//! Sites, appliances, coverage zones and appliance health in SQLite.

use oca_protocol::health::{BgpRoute, BgpSession};
use oca_protocol::prefix::Prefix;
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::storage::sqlite::{conflict, exists, SqliteStorage};
use crate::storage::{
    Appliance, ApplianceState, FleetStore, ReportedAppliance, Result, Site, SiteKind, Standing,
    StorageError, Zone,
};

fn prefixes_json(p: &[Prefix]) -> String {
    serde_json::to_string(p).expect("prefixes serialise")
}

/// Fails with "`what` does not exist" unless site `id` exists.
fn require_site(conn: &Connection, id: &str, what: &str) -> Result<()> {
    if exists(conn, "SELECT 1 FROM sites WHERE id = ?1", id)? {
        Ok(())
    } else {
        Err(StorageError::Missing(format!("{what} {id}")))
    }
}

/// An appliance from the first four columns: id, site, url, capacity_bps.
fn appliance_at(r: &Row<'_>) -> rusqlite::Result<Appliance> {
    Ok(Appliance {
        id: r.get(0)?,
        site: r.get(1)?,
        url: r.get(2)?,
        capacity_bps: r.get::<_, i64>(3)? as u64,
    })
}

/// Appliances with their last report, narrowed by `filter` (a WHERE clause or nothing).
fn reported_sql(filter: &str) -> String {
    format!(
        "SELECT a.id, a.site, a.url, a.capacity_bps, h.status, COALESCE(h.last_report, 0),
                COALESCE(h.bytes_per_sec, 0), COALESCE(h.disks_json, '[]')
         FROM appliances a LEFT JOIN appliance_health h ON h.oca_id = a.id {filter} ORDER BY a.id"
    )
}

/// A row of [`reported_sql`].
fn reported_row(r: &Row<'_>) -> rusqlite::Result<ReportedAppliance> {
    Ok(ReportedAppliance {
        appliance: appliance_at(r)?,
        status: r.get(4)?,
        last_report: r.get(5)?,
        bytes_per_sec: r.get::<_, i64>(6)? as u64,
        disks: serde_json::from_str(&r.get::<_, String>(7)?).unwrap_or_default(),
    })
}

impl FleetStore for SqliteStorage {
    fn create_site(&self, s: &Site) -> Result<()> {
        let conn = self.conn();
        if let Some(parent) = &s.parent {
            require_site(&conn, parent, "parent site")?;
        }
        if let Some(org) = &s.org {
            super::accounts::require_org(&conn, org)?;
        }
        conn.execute(
            "INSERT INTO sites (id, kind, region, parent, allowed_prefixes, org) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![s.id, s.kind.as_str(), s.region, s.parent, prefixes_json(&s.allowed_prefixes), s.org],
        )
        .map_err(|e| conflict(e, format!("site {}", s.id)))?;
        Ok(())
    }

    fn sites(&self) -> Result<Vec<Site>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT id, kind, region, parent, allowed_prefixes, org FROM sites ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(1)?;
            let allowed: String = r.get(4)?;
            Ok(Site {
                id: r.get(0)?,
                kind: if kind == "ixp" {
                    SiteKind::Ixp
                } else {
                    SiteKind::Isp
                },
                region: r.get(2)?,
                parent: r.get(3)?,
                allowed_prefixes: serde_json::from_str(&allowed).unwrap_or_default(),
                org: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn set_allowed_prefixes(&self, id: &str, prefixes: &[Prefix]) -> Result<()> {
        let n = self.conn().execute(
            "UPDATE sites SET allowed_prefixes = ?2 WHERE id = ?1",
            params![id, prefixes_json(prefixes)],
        )?;
        if n == 0 {
            return Err(StorageError::Missing(format!("site {id}")));
        }
        Ok(())
    }

    fn create_appliance(
        &self,
        a: &Appliance,
        credential_sha256: &[u8; 32],
        now: i64,
    ) -> Result<()> {
        let conn = self.conn();
        require_site(&conn, &a.site, "site")?;
        conn.execute(
            "INSERT INTO appliances (id, site, url, capacity_bps, credential_sha256, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                a.id,
                a.site,
                a.url,
                a.capacity_bps as i64,
                &credential_sha256[..],
                now
            ],
        )
        .map_err(|e| conflict(e, format!("appliance {}", a.id)))?;
        Ok(())
    }

    fn credential_sha256(&self, oca_id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self
            .reader()
            .query_row(
                "SELECT credential_sha256 FROM appliances WHERE id = ?1",
                [oca_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn standing(&self, oca_id: &str) -> Result<Standing> {
        let (site, allowed): (String, String) = self
            .reader()
            .query_row(
                "SELECT s.id, s.allowed_prefixes FROM appliances a JOIN sites s ON s.id = a.site
                 WHERE a.id = ?1",
                [oca_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .ok_or_else(|| StorageError::Missing(format!("appliance {oca_id}")))?;
        Ok(Standing {
            site,
            allowed: serde_json::from_str(&allowed).unwrap_or_default(),
        })
    }

    fn appliance_states(&self, now: i64, stale_after: i64) -> Result<Vec<ApplianceState>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT a.id, a.site, a.url, a.capacity_bps, h.status, h.last_report
             FROM appliances a LEFT JOIN appliance_health h ON h.oca_id = a.id ORDER BY a.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let status: Option<String> = r.get(4)?;
            let last_report: Option<i64> = r.get(5)?;
            let fresh = last_report.is_some_and(|t| now - self.downtime.heard(t) <= stale_after);
            Ok(ApplianceState {
                appliance: appliance_at(r)?,
                status: if fresh {
                    status.unwrap_or_else(|| "unknown".into())
                } else {
                    "unknown".into()
                },
                last_report,
                serving: Default::default(),
                maintenance: None,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn reported_appliances(&self) -> Result<Vec<ReportedAppliance>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&reported_sql(""))?;
        let rows = stmt.query_map([], reported_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn reported_appliance(&self, id: &str) -> Result<Option<ReportedAppliance>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&reported_sql("WHERE a.id = ?1"))?;
        Ok(stmt.query_row([id], reported_row).optional()?)
    }

    fn reported_prefixes(&self) -> Result<Vec<(String, Prefix)>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT oca_id, prefix FROM appliance_prefixes")?;
        let mut out = Vec::new();
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (oca, p) = row?;
            if let Ok(prefix) = p.parse::<Prefix>() {
                out.push((oca, prefix));
            }
        }
        Ok(out)
    }

    fn reported_bgp(
        &self,
        each: &mut dyn FnMut(String, Vec<BgpSession>, Vec<BgpRoute>),
    ) -> Result<()> {
        super::bgp::each_appliance(self, each)
    }

    fn bgp_routes(
        &self,
        oca_id: Option<&str>,
        prefix: Option<&Prefix>,
        limit: usize,
    ) -> Result<Vec<(String, BgpRoute)>> {
        super::bgp::routes(self, oca_id, prefix, limit)
    }

    fn put_zone(&self, z: &Zone) -> Result<()> {
        let conn = self.conn();
        if let Some(site) = &z.site {
            require_site(&conn, site, "site")?;
        }
        conn.execute(
            "INSERT INTO coverage_zones (prefix, site, country) VALUES (?1, ?2, ?3)
             ON CONFLICT(prefix) DO UPDATE SET site = excluded.site, country = excluded.country",
            params![z.prefix.to_string(), z.site, z.country],
        )?;
        Ok(())
    }

    fn zones(&self) -> Result<Vec<Zone>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT prefix, site, country FROM coverage_zones ORDER BY prefix")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (p, site, country) = row?;
            if let Ok(prefix) = p.parse() {
                out.push(Zone {
                    prefix,
                    site,
                    country,
                });
            }
        }
        Ok(out)
    }
}
