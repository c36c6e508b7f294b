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

/// Routes of an appliance (of one prefix, or all), or of every appliance, at most `limit`.
pub(super) fn routes(
    db: &SqliteStorage,
    oca_id: Option<&str>,
    prefix: Option<&Prefix>,
    limit: usize,
) -> Result<Vec<(String, BgpRoute)>> {
    let conn = db.reader();
    // One statement per filter, each a range of the primary key (an `?1 IS NULL OR` condition
    // would make SQLite scan every route); by prefix alone is a scan, which callers avoid.
    let filter = match (oca_id, prefix) {
        (Some(_), Some(_)) => "WHERE oca_id = ?1 AND prefix = ?2",
        (Some(_), None) => "WHERE oca_id = ?1 AND ?2 IS NULL",
        (None, Some(_)) => "WHERE ?1 IS NULL AND prefix = ?2",
        (None, None) => "WHERE ?1 IS NULL AND ?2 IS NULL",
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT oca_id, {ROUTE_COLUMNS} FROM bgp_routes {filter}
         ORDER BY oca_id, prefix, neighbor LIMIT ?3"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![oca_id, prefix.map(|p| p.to_string()), limit], |r| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FleetStore, InventoryStore};

    fn report(routes: &[(&str, Option<u32>)], with_bgp: bool) -> HealthReport {
        let mut r: HealthReport = serde_json::from_value(serde_json::json!({
            "oca_id": "a", "site": "s", "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 0},
            "disks": [], "prefixes": [],
            "inventory": {"kind": "delta", "base_seq": 0, "seq": 0, "added": [], "removed": []}
        }))
        .unwrap();
        if with_bgp {
            r.bgp = Some(oca_protocol::health::BgpReport {
                sessions: vec![],
                routes: routes
                    .iter()
                    .map(|(p, med)| BgpRoute {
                        prefix: p.parse().unwrap(),
                        neighbor: "192.0.2.1".parse().unwrap(),
                        as_path: vec![64500, 64501],
                        origin: Origin::Egp,
                        med: *med,
                        local_pref: None,
                        communities: vec!["64500:1".into()],
                        large_communities: vec![],
                        stale: false,
                    })
                    .collect(),
                converging: false,
            });
        }
        r
    }

    fn stored(db: &SqliteStorage) -> Vec<(String, Option<u32>)> {
        db.bgp_routes(Some("a"), None, 1000)
            .unwrap()
            .into_iter()
            .map(|(_, r)| (r.prefix.to_string(), r.med))
            .collect()
    }

    #[test]
    fn routes_are_replaced_by_each_report_writing_only_what_changed() {
        let (_dir, db) = super::super::test_db(&["a"]);
        let many: Vec<String> = (0..50).map(|i| format!("10.0.{i}.0/24")).collect();
        let many: Vec<(&str, Option<u32>)> = many.iter().map(|p| (p.as_str(), None)).collect();
        db.record_report(&report(&many, true), 1_001).unwrap();
        assert_eq!(stored(&db).len(), 50);
        // The same routes again: the digest matches and no route row is written.
        let before = db.conn().total_changes();
        db.record_report(&report(&many, true), 1_002).unwrap();
        let written = db.conn().total_changes() - before;
        assert!(written <= 3, "health and sessions rows only: {written}");
        // One changed, one withdrawn, one added: three rows written.
        let mut next = many.clone();
        next[0].1 = Some(7);
        next.remove(1);
        next.push(("10.1.0.0/16", None));
        let before = db.conn().total_changes();
        db.record_report(&report(&next, true), 1_003).unwrap();
        let written = db.conn().total_changes() - before;
        assert!(written <= 3 + 3, "{written} rows for three route changes");
        let now = stored(&db);
        assert_eq!(now.len(), 50);
        assert!(now.contains(&("10.0.0.0/24".into(), Some(7))));
        assert!(!now.iter().any(|(p, _)| p == "10.0.1.0/24"));
        assert!(now.contains(&("10.1.0.0/16".into(), None)));
        // Read back whole, sorted by address (not text), attributes intact.
        let mut seen = Vec::new();
        db.reported_bgp(&mut |oca, sessions, routes| seen.push((oca, sessions, routes)))
            .unwrap();
        assert_eq!(seen.len(), 1);
        let routes = &seen[0].2;
        assert_eq!(routes.len(), 50);
        assert!(routes.windows(2).all(|w| w[0].prefix < w[1].prefix));
        assert_eq!(routes[0].as_path, [64500, 64501]);
        assert_eq!(routes[0].origin, Origin::Egp);
        assert_eq!(routes[0].communities, ["64500:1"]);
        // A report without BGP: the appliance no longer runs a speaker.
        db.record_report(&report(&[], false), 1_004).unwrap();
        assert!(stored(&db).is_empty());
        let mut any = false;
        db.reported_bgp(&mut |_, _, _| any = true).unwrap();
        assert!(!any);
    }
}
