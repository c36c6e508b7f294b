//! BGP sessions and routes appliances report, in SQLite (tables `appliance_bgp`, `bgp_routes`).
//!
//! Each report replaces the appliance's routes. Most reports repeat the last one's routes, so
//! the route set's SHA-256 is kept beside the sessions and compared first: an unchanged set
//! costs one row read. A changed one is diffed against the rows on record, so a route that
//! moved writes one row, not the appliance's thousands.

use std::collections::HashMap;

use oca_protocol::health::{BgpRoute, BgpSession, HealthReport, Origin};
use oca_protocol::prefix::Prefix;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use sha2::{Digest, Sha256};

use crate::storage::sqlite::SqliteStorage;
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
fn route_at(r: &Row<'_>, at: usize) -> rusqlite::Result<Option<BgpRoute>> {
    let prefix: String = r.get(at)?;
    let neighbor: String = r.get(at + 1)?;
    let as_path: String = r.get(at + 2)?;
    let origin: String = r.get(at + 3)?;
    let communities: String = r.get(at + 6)?;
    let large: String = r.get(at + 7)?;
    let (Ok(prefix), Ok(neighbor), Ok(as_path), Ok(communities), Ok(large_communities)) = (
        prefix.parse::<Prefix>(),
        neighbor.parse(),
        serde_json::from_str(&as_path),
        serde_json::from_str(&communities),
        serde_json::from_str(&large),
    ) else {
        return Ok(None);
    };
    Ok(Some(BgpRoute {
        prefix,
        neighbor,
        as_path,
        origin: origin_from(&origin),
        med: r.get::<_, Option<i64>>(at + 4)?.map(|v| v as u32),
        local_pref: r.get::<_, Option<i64>>(at + 5)?.map(|v| v as u32),
        communities,
        large_communities,
        stale: r.get::<_, i64>(at + 8)? != 0,
    }))
}

/// Replaces the BGP sessions and routes of the report's appliance inside its transaction; a
/// report without `bgp` removes them (the appliance no longer runs a speaker).
pub(super) fn replace(tx: &Transaction<'_>, r: &HealthReport) -> Result<()> {
    let Some(bgp) = &r.bgp else {
        tx.execute("DELETE FROM bgp_routes WHERE oca_id = ?1", [&r.oca_id])?;
        tx.execute("DELETE FROM appliance_bgp WHERE oca_id = ?1", [&r.oca_id])?;
        return Ok(());
    };
    let digest = Sha256::digest(json(&bgp.routes)).to_vec();
    let on_record: Option<Vec<u8>> = tx
        .query_row(
            "SELECT routes_sha256 FROM appliance_bgp WHERE oca_id = ?1",
            [&r.oca_id],
            |row| row.get(0),
        )
        .optional()?;
    if on_record.as_ref() != Some(&digest) {
        write_changes(tx, &r.oca_id, &bgp.routes)?;
    }
    tx.execute(
        "INSERT INTO appliance_bgp (oca_id, sessions_json, routes_sha256) VALUES (?1, ?2, ?3)
         ON CONFLICT(oca_id) DO UPDATE SET sessions_json = excluded.sessions_json,
           routes_sha256 = excluded.routes_sha256",
        params![r.oca_id, json(&bgp.sessions), digest],
    )?;
    Ok(())
}

/// Writes the routes that differ from the rows on record and deletes those withdrawn.
fn write_changes(tx: &Transaction<'_>, oca_id: &str, routes: &[BgpRoute]) -> Result<()> {
    // None: a row that does not parse, rewritten below like a changed route.
    let mut old: HashMap<(String, String), Option<BgpRoute>> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT {ROUTE_COLUMNS} FROM bgp_routes WHERE oca_id = ?1"
        ))?;
        let rows = stmt.query_map([oca_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                route_at(row, 0)?,
            ))
        })?;
        for row in rows {
            let (prefix, neighbor, route) = row?;
            old.insert((prefix, neighbor), route);
        }
    }
    let mut put = tx.prepare_cached(&format!(
        "INSERT OR REPLACE INTO bgp_routes (oca_id, {ROUTE_COLUMNS})
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    ))?;
    for route in routes {
        let key = (route.prefix.to_string(), route.neighbor.to_string());
        if old.remove(&key).flatten().as_ref() == Some(route) {
            continue;
        }
        put.execute(params![
            oca_id,
            key.0,
            key.1,
            json(&route.as_path),
            route.origin.as_str(),
            route.med.map(i64::from),
            route.local_pref.map(i64::from),
            json(&route.communities),
            json(&route.large_communities),
            route.stale as i64,
        ])?;
    }
    let mut del = tx.prepare_cached(
        "DELETE FROM bgp_routes WHERE oca_id = ?1 AND prefix = ?2 AND neighbor = ?3",
    )?;
    for (prefix, neighbor) in old.keys() {
        del.execute(params![oca_id, prefix, neighbor])?;
    }
    Ok(())
}

/// Every appliance's sessions and routes, one appliance at a time.
pub(super) fn each_appliance(
    db: &SqliteStorage,
    each: &mut dyn FnMut(String, Vec<BgpSession>, Vec<BgpRoute>),
) -> Result<()> {
    let conn = db.reader();
    let mut appliances = conn.prepare("SELECT oca_id, sessions_json FROM appliance_bgp")?;
    let rows =
        appliances.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let listed: Vec<(String, String)> = rows.collect::<Result<_, _>>()?;
    for (oca_id, sessions) in listed {
        let routes = routes_of(&conn, &oca_id)?;
        each(
            oca_id,
            serde_json::from_str(&sessions).unwrap_or_default(),
            routes,
        );
    }
    Ok(())
}

/// One appliance's routes, sorted by (prefix, neighbour) as the intake sorts them.
fn routes_of(conn: &Connection, oca_id: &str) -> Result<Vec<BgpRoute>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {ROUTE_COLUMNS} FROM bgp_routes WHERE oca_id = ?1"
    ))?;
    let mut routes: Vec<BgpRoute> = stmt
        .query_map([oca_id], |r| route_at(r, 0))?
        .filter_map(|r| r.transpose())
        .collect::<Result<_, _>>()?;
    // Stored prefixes are text; the fleet view wants them in address order.
    routes.sort_by_key(|a| (a.prefix, a.neighbor));
    Ok(routes)
}

/// Routes of a prefix and/or an appliance, at most `limit`.
pub(super) fn routes(
    db: &SqliteStorage,
    prefix: Option<&Prefix>,
    oca_id: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, BgpRoute)>> {
    let conn = db.reader();
    // One statement per filter, each able to use its index (an `?1 IS NULL OR` condition
    // would make SQLite scan every route).
    let filter = match (prefix, oca_id) {
        (Some(_), Some(_)) => "WHERE prefix = ?1 AND oca_id = ?2",
        (Some(_), None) => "WHERE prefix = ?1 AND ?2 IS NULL",
        (None, Some(_)) => "WHERE ?1 IS NULL AND oca_id = ?2",
        (None, None) => "WHERE ?1 IS NULL AND ?2 IS NULL",
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT oca_id, {ROUTE_COLUMNS} FROM bgp_routes {filter}
         ORDER BY prefix, oca_id, neighbor LIMIT ?3"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![prefix.map(|p| p.to_string()), oca_id, limit], |r| {
        Ok(route_at(r, 1)?.map(|route| (r.get::<_, String>(0), route)))
    })?;
    let mut out = Vec::new();
    for row in rows {
        if let Some((oca, route)) = row? {
            out.push((oca?, route));
        }
    }
    Ok(out)
}
