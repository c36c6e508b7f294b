//! Health intake: appliances report status, load, disks, routes and inventory; the reply carries
//! the URL keys (DESIGN.md "Health report").

use oca_protocol::health::{HealthReport, Inventory, Status};
use oca_protocol::prefix::Prefix;
use rusqlite::{params, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};

use crate::api::constant_time_eq;
use crate::db::{Db, DbError};

/// Default seconds between reports asked of appliances (DESIGN.md); three missed intervals make
/// an appliance `unknown`.
pub const DEFAULT_REPORT_INTERVAL_SECS: u64 = 10;

/// Whether `credential` is the one issued to appliance `oca_id`.
pub fn authenticate(db: &Db, oca_id: &str, credential: &str) -> Result<bool, DbError> {
    let stored: Option<Vec<u8>> = db
        .reader()
        .query_row(
            "SELECT credential_sha256 FROM appliances WHERE id = ?1",
            [oca_id],
            |r| r.get(0),
        )
        .optional()?;
    let presented = Sha256::digest(credential.as_bytes());
    // Hash even for unknown ids, so timing does not tell which appliances exist.
    let stored = stored.unwrap_or_else(|| vec![0u8; 32]);
    Ok(constant_time_eq(&presented, &stored))
}

/// An appliance's place: its site and the prefixes it may report.
pub struct Standing {
    /// Its site (as registered, whatever the report says).
    pub site: String,
    /// The site's allowed prefixes.
    pub allowed: Vec<Prefix>,
}

/// The site and allowed prefixes of appliance `oca_id`.
pub fn standing(db: &Db, oca_id: &str) -> Result<Standing, DbError> {
    let (site, allowed): (String, String) = db
        .reader()
        .query_row(
            "SELECT s.id, s.allowed_prefixes FROM appliances a JOIN sites s ON s.id = a.site
             WHERE a.id = ?1",
            [oca_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| DbError::Missing(format!("appliance {oca_id}")))?;
    Ok(Standing {
        site,
        allowed: serde_json::from_str(&allowed).unwrap_or_default(),
    })
}

/// Keeps the reported prefixes that fall inside one of `allowed`; returns the report so
/// screened and the prefixes dropped. A stolen appliance credential can then pull no more
/// traffic than its site was granted.
pub fn screen_prefixes(mut r: HealthReport, allowed: &[Prefix]) -> (HealthReport, Vec<Prefix>) {
    let (kept, refused) = r
        .prefixes
        .into_iter()
        .partition(|p| allowed.iter().any(|a| a.covers(p)));
    r.prefixes = kept;
    (r, refused)
}

/// What the intake concluded about the inventory.
pub struct Accepted {
    /// The inventory sequence now on record.
    pub inventory_seq: u64,
    /// Whether the appliance must send a full inventory next time.
    pub send_full_inventory: bool,
}

/// Full inventories longer than this are written in chunks of this many entries, each in its
/// own short transaction, so other writers (reports, stream leases) never queue behind one
/// large transaction.
pub const INVENTORY_CHUNK: usize = 10_000;

/// Records a report: one transaction, after a large full inventory was staged in chunks beside
/// the one in force. The report's transaction switches the appliance to the staged generation,
/// so readers and a crash see the old inventory or the new one, never a part.
pub fn record(db: &Db, r: &HealthReport, now: i64) -> Result<Accepted, DbError> {
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
fn stage(db: &Db, oca_id: &str, content: &[String]) -> Result<i64, DbError> {
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
fn purge(db: &Db, oca_id: &str, gen: i64) -> Result<(), DbError> {
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
pub fn remove_unused(db: &Db) -> Result<usize, DbError> {
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
    db: &Db,
    r: &HealthReport,
    now: i64,
    staged: Option<i64>,
) -> Result<(Accepted, Option<i64>), DbError> {
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
fn replace_prefixes(tx: &Transaction<'_>, r: &HealthReport) -> Result<(), DbError> {
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
) -> Result<(u64, bool), DbError> {
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

/// The status as stored.
pub fn status_str(s: Status) -> &'static str {
    match s {
        Status::Ok => "ok",
        Status::Warning => "warning",
        Status::Error => "error",
    }
}

/// Content ids an appliance holds, sorted (for tests and the admin API).
pub fn inventory(db: &Db, oca_id: &str) -> Result<Vec<String>, DbError> {
    let conn = db.reader();
    let mut stmt =
        conn.prepare("SELECT i.content_id FROM appliances a CROSS JOIN inventory i ON i.oca_id = a.id AND i.gen = a.inventory_gen
                      WHERE a.id = ?1 ORDER BY i.content_id")?;
    let rows = stmt.query_map([oca_id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}
