//! BGP sessions and routes appliances report, in PostgreSQL (tables `appliance_bgp`,
//! `bgp_routes`), as the SQLite engine keeps them: the route set's SHA-256 beside the sessions
//! so an unchanged set costs one row read, and a changed one diffed against the rows on record.

use std::collections::HashMap;

use oca_protocol::health::{BgpRoute, BgpSession, HealthReport, Origin};
use oca_protocol::prefix::Prefix;
use postgres::{Row, Transaction};
use sha2::{Digest, Sha256};

use crate::storage::postgres::pool::Batch;
use crate::storage::postgres::{limit as sql_limit, PgStorage};
use crate::storage::Result;

const ROUTE_COLUMNS: &str =
    "prefix, neighbor, as_path, origin, med, local_pref, communities, large_communities, stale";

fn origin_from(s: &str) -> Origin {
    match s {
        "egp" => Origin::Egp,
        "incomplete" => Origin::Incomplete,
        _ => Origin::Igp,
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain lists serialise")
}

/// A route from the columns of [`ROUTE_COLUMNS`], starting at `at`; none when a column does not
/// parse (written by this module, so only a hand-edited database has such rows).
fn route_at(r: &Row, at: usize) -> Option<BgpRoute> {
    let prefix: &str = r.get(at);
    let neighbor: &str = r.get(at + 1);
    let as_path: &str = r.get(at + 2);
    let origin: &str = r.get(at + 3);
    let communities: &str = r.get(at + 6);
    let large: &str = r.get(at + 7);
    Some(BgpRoute {
        prefix: prefix.parse::<Prefix>().ok()?,
        neighbor: neighbor.parse().ok()?,
        as_path: serde_json::from_str(as_path).ok()?,
        origin: origin_from(origin),
        med: r.get::<_, Option<i64>>(at + 4).map(|v| v as u32),
        local_pref: r.get::<_, Option<i64>>(at + 5).map(|v| v as u32),
        communities: serde_json::from_str(communities).ok()?,
        large_communities: serde_json::from_str(large).ok()?,
        stale: r.get(at + 8),
    })
}

/// Replaces the BGP sessions and routes of the report's appliance inside its transaction; a
/// report without `bgp` removes them (the appliance no longer runs a speaker). Returns whether
/// its routes on record changed.
pub(super) fn replace(tx: &mut Transaction<'_>, r: &HealthReport) -> Result<bool> {
    let Some(bgp) = &r.bgp else {
        tx.execute("DELETE FROM bgp_routes WHERE oca_id = $1", &[&r.oca_id])?;
        let had = tx.execute("DELETE FROM appliance_bgp WHERE oca_id = $1", &[&r.oca_id])?;
        return Ok(had > 0);
    };
    let digest = Sha256::digest(json(&bgp.routes)).to_vec();
    let on_record: Option<Vec<u8>> = tx
        .query_opt(
            "SELECT routes_sha256 FROM appliance_bgp WHERE oca_id = $1",
            &[&r.oca_id],
        )?
        .map(|row| row.get(0));
    let changed = on_record.as_ref() != Some(&digest);
    if changed {
        write_changes(tx, &r.oca_id, &bgp.routes)?;
    }
    tx.execute(
        "INSERT INTO appliance_bgp (oca_id, sessions_json, routes_sha256) VALUES ($1, $2, $3)
         ON CONFLICT (oca_id) DO UPDATE SET sessions_json = excluded.sessions_json,
           routes_sha256 = excluded.routes_sha256",
        &[&r.oca_id, &json(&bgp.sessions), &digest],
    )?;
    Ok(changed)
}

/// Writes the routes that differ from the rows on record and deletes those withdrawn.
fn write_changes(tx: &mut Transaction<'_>, oca_id: &str, routes: &[BgpRoute]) -> Result<()> {
    // None: a row that does not parse, rewritten below like a changed route.
    let mut old: HashMap<(String, String), Option<BgpRoute>> = HashMap::new();
    let sql = format!("SELECT {ROUTE_COLUMNS} FROM bgp_routes WHERE oca_id = $1");
    for row in tx.query(&sql, &[&oca_id])? {
        old.insert((row.get(0), row.get(1)), route_at(&row, 0));
    }
    let put = tx.prepare(&format!(
        "INSERT INTO bgp_routes (oca_id, {ROUTE_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (oca_id, prefix, neighbor) DO UPDATE SET as_path = excluded.as_path,
           origin = excluded.origin, med = excluded.med, local_pref = excluded.local_pref,
           communities = excluded.communities, large_communities = excluded.large_communities,
           stale = excluded.stale"
    ))?;
    for route in routes {
        let key = (route.prefix.to_string(), route.neighbor.to_string());
        if old.remove(&key).flatten().as_ref() == Some(route) {
            continue;
        }
        tx.execute(
            &put,
            &[
                &oca_id,
                &key.0,
                &key.1,
                &json(&route.as_path),
                &route.origin.as_str(),
                &route.med.map(i64::from),
                &route.local_pref.map(i64::from),
                &json(&route.communities),
                &json(&route.large_communities),
                &route.stale,
            ],
        )?;
    }
    if !old.is_empty() {
        let (prefixes, neighbors): (Vec<String>, Vec<String>) = old.into_keys().unzip();
        tx.execute(
            "DELETE FROM bgp_routes WHERE oca_id = $1 AND (prefix, neighbor) IN
               (SELECT * FROM unnest($2::text[], $3::text[]))",
            &[&oca_id, &prefixes, &neighbors],
        )?;
    }
    Ok(())
}

/// Every appliance's sessions and routes, one appliance at a time.
pub(super) fn each_appliance(
    db: &PgStorage,
    each: &mut dyn FnMut(String, Vec<BgpSession>, Vec<BgpRoute>),
) -> Result<()> {
    type One = (String, Vec<BgpSession>, Vec<BgpRoute>);
    db.pool.stream(
        |c, tx: &std::sync::mpsc::SyncSender<Batch<One>>| {
            let listed: Vec<(String, String)> = c
                .query("SELECT oca_id, sessions_json FROM appliance_bgp", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let stmt = c.prepare(&format!(
                "SELECT {ROUTE_COLUMNS} FROM bgp_routes WHERE oca_id = $1"
            ))?;
            for (oca_id, sessions) in listed {
                let mut routes: Vec<BgpRoute> = c
                    .query(&stmt, &[&oca_id])?
                    .iter()
                    .filter_map(|r| route_at(r, 0))
                    .collect();
                routes.sort_by_key(|a| (a.prefix, a.neighbor));
                let one = (
                    oca_id,
                    serde_json::from_str(&sessions).unwrap_or_default(),
                    routes,
                );
                if tx.send(Batch::Rows(vec![one])).is_err() {
                    break;
                }
            }
            Ok(())
        },
        &mut |batch| {
            for (oca, sessions, routes) in batch {
                each(oca, sessions, routes);
            }
        },
    )
}

/// Routes of an appliance (of one prefix, or all), or of every appliance, at most `limit`.
pub(super) fn routes(
    db: &PgStorage,
    oca_id: Option<&str>,
    prefix: Option<&Prefix>,
    limit: usize,
) -> Result<Vec<(String, BgpRoute)>> {
    let filter = match (oca_id, prefix) {
        (Some(_), Some(_)) => "WHERE oca_id = $1 AND prefix = $2",
        (Some(_), None) => "WHERE oca_id = $1 AND $2::text IS NULL",
        (None, Some(_)) => "WHERE $1::text IS NULL AND prefix = $2",
        (None, None) => "WHERE $1::text IS NULL AND $2::text IS NULL",
    };
    let sql = format!(
        "SELECT oca_id, {ROUTE_COLUMNS} FROM bgp_routes {filter}
         ORDER BY oca_id, prefix, neighbor LIMIT $3"
    );
    let oca_id = oca_id.map(String::from);
    let prefix = prefix.map(|p| p.to_string());
    let limit = sql_limit(limit);
    db.call(move |c| {
        Ok(c.query(&sql, &[&oca_id, &prefix, &limit])?
            .iter()
            .filter_map(|r| Some((r.get(0), route_at(r, 1)?)))
            .collect())
    })
}

/// The BGP routes on record of one appliance, by prefix and neighbour (rows that do not parse
/// are left out, as everywhere).
/// The BGP routes of each of `oca_ids` that has any, each appliance's in a stable order.
pub(super) fn routes_of_all(
    c: &mut impl postgres::GenericClient,
    oca_ids: &[String],
) -> Result<HashMap<String, Vec<BgpRoute>>> {
    let sql = format!(
        "SELECT oca_id, {ROUTE_COLUMNS} FROM bgp_routes WHERE oca_id = ANY($1)
         ORDER BY oca_id, prefix, neighbor"
    );
    let mut all: HashMap<String, Vec<BgpRoute>> = HashMap::new();
    for row in c.query(&sql, &[&oca_ids])? {
        if let Some(route) = route_at(&row, 1) {
            all.entry(row.get(0)).or_default().push(route);
        }
    }
    Ok(all)
}
