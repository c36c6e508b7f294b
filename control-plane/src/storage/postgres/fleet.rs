//! Sites, appliances, coverage zones and appliance health in PostgreSQL.

use oca_protocol::health::{BgpRoute, BgpSession};
use oca_protocol::prefix::Prefix;
use postgres::{GenericClient, Row};

use crate::storage::postgres::{big, conflict, exists, unsigned, PgStorage};
use crate::storage::{
    Appliance, ApplianceState, FleetStore, ReportedAppliance, Result, Site, SiteKind, Standing,
    StorageError, Zone,
};

fn prefixes_json(p: &[Prefix]) -> String {
    serde_json::to_string(p).expect("prefixes serialise")
}

/// Fails with "`what` does not exist" unless site `id` exists.
pub(super) fn require_site(c: &mut impl GenericClient, id: &str, what: &str) -> Result<()> {
    if exists(c, "SELECT 1 FROM sites WHERE id = $1", id)? {
        Ok(())
    } else {
        Err(StorageError::Missing(format!("{what} {id}")))
    }
}

/// An appliance from the first four columns: id, site, url, capacity_bps.
fn appliance_at(r: &Row) -> Appliance {
    Appliance {
        id: r.get(0),
        site: r.get(1),
        url: r.get(2),
        capacity_bps: unsigned(r.get(3)),
    }
}

impl FleetStore for PgStorage {
    fn create_site(&self, s: &Site) -> Result<()> {
        let s = s.clone();
        self.call(move |c| {
            if let Some(parent) = &s.parent {
                require_site(c, parent, "parent site")?;
            }
            if let Some(org) = &s.org {
                super::accounts::require_org(c, org)?;
            }
            c.execute(
                "INSERT INTO sites (id, kind, region, parent, allowed_prefixes, org)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &s.id,
                    &s.kind.as_str(),
                    &s.region,
                    &s.parent,
                    &prefixes_json(&s.allowed_prefixes),
                    &s.org,
                ],
            )
            .map_err(|e| conflict(e, format!("site {}", s.id)))?;
            Ok(())
        })
    }

    fn sites(&self) -> Result<Vec<Site>> {
        self.call(|c| {
            let rows = c.query(
                "SELECT id, kind, region, parent, allowed_prefixes, org FROM sites ORDER BY id",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| {
                    let kind: &str = r.get(1);
                    let allowed: &str = r.get(4);
                    Site {
                        id: r.get(0),
                        kind: if kind == "ixp" {
                            SiteKind::Ixp
                        } else {
                            SiteKind::Isp
                        },
                        region: r.get(2),
                        parent: r.get(3),
                        allowed_prefixes: serde_json::from_str(allowed).unwrap_or_default(),
                        org: r.get(5),
                    }
                })
                .collect())
        })
    }

    fn set_allowed_prefixes(&self, id: &str, prefixes: &[Prefix]) -> Result<()> {
        let (id, json) = (id.to_string(), prefixes_json(prefixes));
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sites SET allowed_prefixes = $2 WHERE id = $1",
                &[&id, &json],
            )?;
            if n == 0 {
                return Err(StorageError::Missing(format!("site {id}")));
            }
            Ok(())
        })
    }

    fn create_appliance(
        &self,
        a: &Appliance,
        credential_sha256: &[u8; 32],
        now: i64,
    ) -> Result<()> {
        let (a, hash) = (a.clone(), credential_sha256.to_vec());
        self.call(move |c| {
            require_site(c, &a.site, "site")?;
            c.execute(
                "INSERT INTO appliances (id, site, url, capacity_bps, credential_sha256, created)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[&a.id, &a.site, &a.url, &big(a.capacity_bps), &hash, &now],
            )
            .map_err(|e| conflict(e, format!("appliance {}", a.id)))?;
            Ok(())
        })
    }

    fn credential_sha256(&self, oca_id: &str) -> Result<Option<Vec<u8>>> {
        let id = oca_id.to_string();
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT credential_sha256 FROM appliances WHERE id = $1",
                &[&id],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn standing(&self, oca_id: &str) -> Result<Standing> {
        let id = oca_id.to_string();
        self.call(move |c| {
            let row = c
                .query_opt(
                    "SELECT s.id, s.allowed_prefixes FROM appliances a JOIN sites s ON s.id = a.site
                     WHERE a.id = $1",
                    &[&id],
                )?
                .ok_or_else(|| StorageError::Missing(format!("appliance {id}")))?;
            Ok(Standing {
                site: row.get(0),
                allowed: serde_json::from_str(row.get(1)).unwrap_or_default(),
            })
        })
    }

    fn appliance_states(&self, now: i64, stale_after: i64) -> Result<Vec<ApplianceState>> {
        let downtime = self.downtime;
        self.call(move |c| {
            let rows = c.query(
                "SELECT a.id, a.site, a.url, a.capacity_bps, h.status, h.last_report
                 FROM appliances a LEFT JOIN appliance_health h ON h.oca_id = a.id ORDER BY a.id",
                &[],
            )?;
            Ok(rows
                .iter()
                .map(|r| {
                    let status: Option<String> = r.get(4);
                    let last_report: Option<i64> = r.get(5);
                    let fresh = last_report.is_some_and(|t| now - downtime.heard(t) <= stale_after);
                    ApplianceState {
                        appliance: appliance_at(r),
                        status: if fresh {
                            status.unwrap_or_else(|| "unknown".into())
                        } else {
                            "unknown".into()
                        },
                        last_report,
                        serving: Default::default(),
                        maintenance: None,
                    }
                })
                .collect())
        })
    }

    fn reported_appliances(&self) -> Result<Vec<ReportedAppliance>> {
        self.call(|c| {
            Ok(c.query(&reported_sql(""), &[])?
                .iter()
                .map(reported_row)
                .collect())
        })
    }

    fn reported_appliances_among(&self, ids: &[String]) -> Result<Vec<ReportedAppliance>> {
        let ids = ids.to_vec();
        self.call(move |c| {
            let sql = reported_sql("WHERE a.id = ANY($1)");
            Ok(c.query(&sql, &[&ids])?.iter().map(reported_row).collect())
        })
    }

    fn reported_appliance(&self, id: &str) -> Result<Option<ReportedAppliance>> {
        let id = id.to_string();
        self.call(move |c| {
            let sql = reported_sql("WHERE a.id = $1");
            Ok(c.query_opt(&sql, &[&id])?.as_ref().map(reported_row))
        })
    }

    fn reported_prefixes(&self) -> Result<Vec<(String, Prefix)>> {
        self.call(|c| {
            let rows = c.query("SELECT oca_id, prefix FROM appliance_prefixes", &[])?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let p: &str = r.get(1);
                    Some((r.get(0), p.parse::<Prefix>().ok()?))
                })
                .collect())
        })
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
        let z = z.clone();
        self.call(move |c| {
            if let Some(site) = &z.site {
                require_site(c, site, "site")?;
            }
            c.execute(
                "INSERT INTO coverage_zones (prefix, site, country) VALUES ($1, $2, $3)
                 ON CONFLICT (prefix) DO UPDATE SET site = excluded.site, country = excluded.country",
                &[&z.prefix.to_string(), &z.site, &z.country],
            )?;
            Ok(())
        })
    }

    fn zones(&self) -> Result<Vec<Zone>> {
        self.call(|c| {
            let rows = c.query(
                "SELECT prefix, site, country FROM coverage_zones ORDER BY prefix",
                &[],
            )?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let p: &str = r.get(0);
                    Some(Zone {
                        prefix: p.parse().ok()?,
                        site: r.get(1),
                        country: r.get(2),
                    })
                })
                .collect())
        })
    }
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
fn reported_row(r: &postgres::Row) -> ReportedAppliance {
    ReportedAppliance {
        appliance: appliance_at(r),
        status: r.get(4),
        last_report: r.get(5),
        bytes_per_sec: unsigned(r.get(6)),
        disks: serde_json::from_str(r.get(7)).unwrap_or_default(),
    }
}
