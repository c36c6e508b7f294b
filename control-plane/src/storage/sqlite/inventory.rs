//! Health reports and inventories in SQLite. An appliance's inventory is a generation of rows;
//! a large full inventory is staged as a new generation in short transactions beside the one in
//! force and switched in by the report's transaction, so readers and a crash see the old
//! inventory or the new one, never a part.

use oca_protocol::health::{HealthReport, Inventory};
use rusqlite::{params, OptionalExtension, Transaction};

use crate::storage::sqlite::SqliteStorage;
use crate::storage::{status_str, Accepted, InventoryStore, Result, INVENTORY_CHUNK};

impl InventoryStore for SqliteStorage {
    fn record_report(&self, r: &HealthReport, now: i64) -> Result<Accepted> {
        record(self, r, now)
    }

    fn remove_unused_inventories(&self) -> Result<usize> {
        remove_unused(self)
    }

    fn inventory(&self, oca_id: &str) -> Result<Vec<String>> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT i.content_id FROM appliances a CROSS JOIN inventory i ON i.oca_id = a.id AND i.gen = a.inventory_gen
                          WHERE a.id = ?1 ORDER BY i.content_id")?;
        let rows = stmt.query_map([oca_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn holdings(&self, each: &mut dyn FnMut(String, String)) -> Result<()> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            // CROSS JOIN keeps appliances the outer loop, so each one's current generation is
            // a range of the key and generations being written are never scanned.
            "SELECT i.content_id, a.id FROM appliances a
             CROSS JOIN inventory i ON i.oca_id = a.id AND i.gen = a.inventory_gen",
        )?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
            let (content, oca) = row?;
            each(content, oca);
        }
        Ok(())
    }
}

/// Records a report: one transaction, after a large full inventory was staged in chunks beside
/// the one in force. The report's transaction switches the appliance to the staged generation,
/// so readers and a crash see the old inventory or the new one, never a part.
fn record(db: &SqliteStorage, r: &HealthReport, now: i64) -> Result<Accepted> {
    let staged = match &r.inventory {
        Inventory::Full { content, .. } if content.len() > INVENTORY_CHUNK => {
            Some(stage(db, &r.oca_id, content)?)
        }
        _ => None,
    };
    let outcome = record_staged(db, r, now, staged);
    // Leftovers of a failed purge are harmless (no appliance points at them) and the next
    // start removes them, so a failure here does not fail the report.
    let leftover = match (&outcome, staged) {
        (Ok((_, Some(old))), _) => Some(*old),
        (Err(_), Some(gen)) => Some(gen),
        _ => None,
    };
    if let Some(gen) = leftover {
        if let Err(e) = purge(db, &r.oca_id, gen) {
            tracing::warn!(oca_id = %r.oca_id, gen, error = %e, "removing a replaced inventory");
        }
    }
    outcome.map(|(accepted, _)| accepted)
}

/// Writes `content` as a new inventory generation of `oca_id`, chunk by chunk; returns it.
/// Until the report switches it in, the generation is listed as unused, so a crash leaves
/// nothing that [`remove_unused`] does not clear.
fn stage(db: &SqliteStorage, oca_id: &str, content: &[String]) -> Result<i64> {
    let gen = db.new_inventory_gen();
    db.conn().execute(
        "INSERT INTO inventory_unused (gen, oca_id) VALUES (?1, ?2)",
        params![gen, oca_id],
    )?;
    for chunk in content.chunks(INVENTORY_CHUNK) {
        let written = (|| {
            let mut conn = db.conn();
            let tx = conn.transaction()?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR IGNORE INTO inventory (oca_id, gen, content_id) VALUES (?1, ?2, ?3)",
                )?;
                for id in chunk {
                    ins.execute(params![oca_id, gen, id])?;
                }
            }
            tx.commit()
        })();
        if let Err(e) = written {
            purge(db, oca_id, gen)?;
            return Err(e.into());
        }
    }
    Ok(gen)
}

/// Deletes one unused inventory generation of `oca_id`, chunk by chunk.
fn purge(db: &SqliteStorage, oca_id: &str, gen: i64) -> Result<()> {
    loop {
        let deleted = db.conn().execute(
            "DELETE FROM inventory WHERE oca_id = ?1 AND gen = ?2 AND content_id IN
               (SELECT content_id FROM inventory WHERE oca_id = ?1 AND gen = ?2 LIMIT ?3)",
            params![oca_id, gen, INVENTORY_CHUNK as i64],
        )?;
        if deleted < INVENTORY_CHUNK {
            break;
        }
    }
    db.conn()
        .execute("DELETE FROM inventory_unused WHERE gen = ?1", [gen])?;
    Ok(())
}

/// Deletes the generations a stopped process left unused (staged and never switched in, or
/// replaced and not yet deleted); run at start.
fn remove_unused(db: &SqliteStorage) -> Result<usize> {
    let unused: Vec<(i64, String)> = {
        let conn = db.reader();
        let mut stmt = conn.prepare("SELECT gen, oca_id FROM inventory_unused")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (gen, oca_id) in &unused {
        purge(db, oca_id, *gen)?;
    }
    Ok(unused.len())
}

/// The report's transaction; returns the generation it replaced when it switched to `staged`.
fn record_staged(
    db: &SqliteStorage,
    r: &HealthReport,
    now: i64,
    staged: Option<i64>,
) -> Result<(Accepted, Option<i64>)> {
    let mut conn = db.conn();
    let tx = conn.transaction()?;
    let held: Option<i64> = tx
        .query_row(
            "SELECT inventory_seq FROM appliance_health WHERE oca_id = ?1",
            [&r.oca_id],
            |row| row.get(0),
        )
        .optional()?;
    let gen: i64 = tx.query_row(
        "SELECT inventory_gen FROM appliances WHERE id = ?1",
        [&r.oca_id],
        |row| row.get(0),
    )?;
    let (seq, send_full) = match (staged, &r.inventory) {
        (Some(new_gen), Inventory::Full { seq, .. }) => {
            tx.execute(
                "UPDATE appliances SET inventory_gen = ?2 WHERE id = ?1",
                params![r.oca_id, new_gen],
            )?;
            tx.execute("DELETE FROM inventory_unused WHERE gen = ?1", [new_gen])?;
            tx.execute(
                "INSERT INTO inventory_unused (gen, oca_id) VALUES (?1, ?2)",
                params![gen, r.oca_id],
            )?;
            (*seq, false)
        }
        _ => apply_inventory(&tx, &r.oca_id, gen, &r.inventory, held.map(|s| s as u64))?,
    };
    replace_prefixes(&tx, r)?;
    super::bgp::replace(&tx, r)?;
    // Before the health row moves on: the rollup reads when the last report came.
    super::history::add_report(&tx, &db.history, r, now)?;
    let disks = serde_json::to_string(&r.disks).expect("plain structs serialise");
    tx.execute(
        "INSERT INTO appliance_health (oca_id, status, last_report, version, active_connections,
                                       bytes_per_sec, capacity_bps, inventory_seq, disks_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(oca_id) DO UPDATE SET status = excluded.status, last_report = excluded.last_report,
           version = excluded.version, active_connections = excluded.active_connections,
           bytes_per_sec = excluded.bytes_per_sec, capacity_bps = excluded.capacity_bps,
           inventory_seq = excluded.inventory_seq, disks_json = excluded.disks_json",
        params![
            r.oca_id,
            status_str(r.status),
            now,
            r.version,
            r.serving.active_connections as i64,
            r.serving.bytes_per_sec as i64,
            r.serving.capacity_bps as i64,
            seq as i64,
            disks
        ],
    )?;
    tx.commit()?;
    let accepted = Accepted {
        inventory_seq: seq,
        send_full_inventory: send_full,
    };
    Ok((accepted, staged.map(|_| gen)))
}

/// Records the appliance's routes, writing only when they changed (they rarely do, and most
/// reports would otherwise rewrite a hundred rows each).
fn replace_prefixes(tx: &Transaction<'_>, r: &HealthReport) -> Result<()> {
    let mut new: Vec<String> = r.prefixes.iter().map(|p| p.to_string()).collect();
    new.sort();
    new.dedup();
    let mut stmt =
        tx.prepare("SELECT prefix FROM appliance_prefixes WHERE oca_id = ?1 ORDER BY prefix")?;
    let old: Vec<String> = stmt
        .query_map([&r.oca_id], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    if old == new {
        return Ok(());
    }
    tx.execute(
        "DELETE FROM appliance_prefixes WHERE oca_id = ?1",
        [&r.oca_id],
    )?;
    let mut ins = tx.prepare("INSERT INTO appliance_prefixes (oca_id, prefix) VALUES (?1, ?2)")?;
    for p in &new {
        ins.execute(params![r.oca_id, p])?;
    }
    Ok(())
}

/// Applies a full or delta inventory; a delta against another base than the one on record is
/// not applied, and the appliance is asked for a full inventory instead.
fn apply_inventory(
    tx: &Transaction<'_>,
    oca_id: &str,
    gen: i64,
    inv: &Inventory,
    held: Option<u64>,
) -> Result<(u64, bool)> {
    let mut ins = tx.prepare_cached(
        "INSERT OR IGNORE INTO inventory (oca_id, gen, content_id) VALUES (?1, ?2, ?3)",
    )?;
    match inv {
        Inventory::Full { seq, content } => {
            tx.execute(
                "DELETE FROM inventory WHERE oca_id = ?1 AND gen = ?2",
                params![oca_id, gen],
            )?;
            for id in content {
                ins.execute(params![oca_id, gen, id])?;
            }
            Ok((*seq, false))
        }
        Inventory::Delta {
            base_seq,
            seq,
            added,
            removed,
        } if held == Some(*base_seq) => {
            let mut del = tx.prepare_cached(
                "DELETE FROM inventory WHERE oca_id = ?1 AND gen = ?2 AND content_id = ?3",
            )?;
            for id in removed {
                del.execute(params![oca_id, gen, id])?;
            }
            for id in added {
                ins.execute(params![oca_id, gen, id])?;
            }
            Ok((*seq, false))
        }
        Inventory::Delta { .. } => Ok((held.unwrap_or(0), true)),
    }
}
