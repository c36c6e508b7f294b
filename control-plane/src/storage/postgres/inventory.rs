//! Health reports and inventories in PostgreSQL. An appliance's inventory is a generation of
//! rows, as on SQLite. A large full inventory is written as a new generation (numbered by the
//! `inventory_gen_seq` sequence, so unique across replicas) with `COPY` inside the report's own
//! transaction, which also switches the appliance to it: MVCC lets readers and other writers go
//! on meanwhile (they see the old generation until the commit), and a crash rolls the whole of
//! it back. The generation switched out is listed in `inventory_unused` by that transaction and
//! deleted in chunks after it; only generations no appliance points at are ever listed there,
//! so any replica may delete them at any time.

use oca_protocol::health::{HealthReport, Inventory};
use std::io::Write;

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Transaction};

use crate::storage::changes::{InventoryDelta, ReportChange, DELTA_CARRIED};
use crate::storage::postgres::pool::Batch;
use crate::storage::postgres::{big, PgStorage};
use crate::storage::{
    status_str, Accepted, HistorySettings, InventoryStore, Result, INVENTORY_CHUNK,
};

impl InventoryStore for PgStorage {
    fn record_report(&self, r: &HealthReport, now: i64) -> Result<Accepted> {
        let (r, history) = (r.clone(), self.history);
        let statements = if is_large(&r) {
            LARGE_TIMEOUT
        } else {
            super::pool::STATEMENT_TIMEOUT
        };
        self.pool
            .call(statements, move |c| record(c, &history, &r, now))
    }

    fn remove_unused_inventories(&self) -> Result<usize> {
        self.call(|c| {
            let unused: Vec<(i64, String)> = c
                .query("SELECT gen, oca_id FROM inventory_unused", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            for (gen, oca_id) in &unused {
                purge(c, oca_id, *gen)?;
            }
            Ok(unused.len())
        })
    }

    fn inventory(&self, oca_id: &str) -> Result<Vec<String>> {
        let id = oca_id.to_string();
        self.call(move |c| {
            Ok(c.query(
                "SELECT i.content_id FROM appliances a
                 JOIN inventory i ON i.oca_id = a.id AND i.gen = a.inventory_gen
                 WHERE a.id = $1 ORDER BY i.content_id",
                &[&id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn holdings(&self, each: &mut dyn FnMut(String, String)) -> Result<()> {
        self.pool.stream(
            |c, tx| {
                let mut rows = c.query_raw(
                    "SELECT i.content_id, a.id FROM appliances a
                     JOIN inventory i ON i.oca_id = a.id AND i.gen = a.inventory_gen",
                    std::iter::empty::<&str>(),
                )?;
                let mut batch = Vec::with_capacity(INVENTORY_CHUNK);
                while let Some(row) = rows.next()? {
                    batch.push((row.get(0), row.get(1)));
                    if batch.len() == INVENTORY_CHUNK {
                        let full =
                            std::mem::replace(&mut batch, Vec::with_capacity(INVENTORY_CHUNK));
                        if tx.send(Batch::Rows(full)).is_err() {
                            return Ok(());
                        }
                    }
                }
                if !batch.is_empty() {
                    let _ = tx.send(Batch::Rows(batch));
                }
                Ok(())
            },
            &mut |batch: Vec<(String, String)>| {
                for (content, oca) in batch {
                    each(content, oca);
                }
            },
        )
    }
}

/// How long the statements of a report carrying a large full inventory may take: a million-row
/// `COPY` takes seconds, more on a loaded server, and is no reason to refuse the report.
const LARGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Whether `r` carries a full inventory written as a new generation.
fn is_large(r: &HealthReport) -> bool {
    matches!(&r.inventory, Inventory::Full { content, .. } if content.len() > INVENTORY_CHUNK)
}

/// Records a report in one transaction; then deletes the generation it switched out, if any.
fn record(
    c: &mut Client,
    history: &HistorySettings,
    r: &HealthReport,
    now: i64,
) -> Result<Accepted> {
    let (accepted, replaced) = record_tx(c, history, r, now)?;
    if let Some(gen) = replaced {
        // Listed in inventory_unused by the report's transaction: a failure here leaves it for
        // the next start of any replica, and does not fail the report.
        if let Err(e) = purge(c, &r.oca_id, gen) {
            tracing::warn!(oca_id = %r.oca_id, gen, error = %e, "removing a replaced inventory");
        }
    }
    Ok(accepted)
}

/// The report's transaction; returns the generation it replaced when it wrote a new one.
fn record_tx(
    c: &mut Client,
    history: &HistorySettings,
    r: &HealthReport,
    now: i64,
) -> Result<(Accepted, Option<i64>)> {
    let mut tx = c.transaction()?;
    if is_large(r) {
        tx.batch_execute(&format!(
            "SET LOCAL statement_timeout = {}",
            LARGE_TIMEOUT.as_millis()
        ))?;
    }
    // The appliance's row locked first: two replicas' reports of one appliance take turns.
    let gen: i64 = tx
        .query_one(
            "SELECT inventory_gen FROM appliances WHERE id = $1 FOR UPDATE",
            &[&r.oca_id],
        )?
        .get(0);
    let held: Option<i64> = tx
        .query_opt(
            "SELECT inventory_seq FROM appliance_health WHERE oca_id = $1",
            &[&r.oca_id],
        )?
        .map(|row| row.get(0));
    let mut replaced = None;
    let (seq, send_full) = match &r.inventory {
        Inventory::Full { seq, content } if content.len() > INVENTORY_CHUNK => {
            let new_gen: i64 = tx
                .query_one("SELECT nextval('inventory_gen_seq')", &[])?
                .get(0);
            copy_generation(&mut tx, &r.oca_id, new_gen, content)?;
            tx.execute(
                "UPDATE appliances SET inventory_gen = $2 WHERE id = $1",
                &[&r.oca_id, &new_gen],
            )?;
            tx.execute(
                "INSERT INTO inventory_unused (gen, oca_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&gen, &r.oca_id],
            )?;
            replaced = Some(gen);
            (*seq, false)
        }
        inv => apply_inventory(&mut tx, &r.oca_id, gen, inv, held.map(|s| s as u64))?,
    };
    let inventory_changed = match &r.inventory {
        Inventory::Full { .. } => true,
        Inventory::Delta { added, removed, .. } => {
            !(send_full || added.is_empty() && removed.is_empty())
        }
    };
    let prefixes_changed = replace_prefixes(&mut tx, r)?;
    let routes_changed = super::bgp::replace(&mut tx, r)? || prefixes_changed;
    // Before the health row moves on: the rollup reads when the last report came.
    super::history::add_report(&mut tx, history, r, now)?;
    let disks = serde_json::to_string(&r.disks).expect("plain structs serialise");
    tx.execute(
        "INSERT INTO appliance_health (oca_id, status, last_report, version, active_connections,
                                       bytes_per_sec, capacity_bps, inventory_seq, disks_json)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (oca_id) DO UPDATE SET status = excluded.status, last_report = excluded.last_report,
           version = excluded.version, active_connections = excluded.active_connections,
           bytes_per_sec = excluded.bytes_per_sec, capacity_bps = excluded.capacity_bps,
           inventory_seq = excluded.inventory_seq, disks_json = excluded.disks_json",
        &[
            &r.oca_id,
            &status_str(r.status),
            &now,
            &r.version,
            &big(r.serving.active_connections),
            &big(r.serving.bytes_per_sec),
            &big(r.serving.capacity_bps),
            &(seq as i64),
            &disks,
        ],
    )?;
    super::changes::note_report(
        &mut tx,
        &ReportChange {
            oca_id: r.oca_id.clone(),
            at: now,
            status: r.status,
            bytes_per_sec: r.serving.bytes_per_sec,
            storage_bytes: crate::storage::usable_storage(&r.disks),
            bgp_sessions: r.bgp.as_ref().map(|b| b.sessions.clone()),
            inventory_changed,
            inventory_seq: seq,
            delta: match &r.inventory {
                Inventory::Delta {
                    base_seq,
                    added,
                    removed,
                    ..
                } if inventory_changed && added.len() + removed.len() <= DELTA_CARRIED => {
                    Some(InventoryDelta {
                        base_seq: *base_seq,
                        added: added.clone(),
                        removed: removed.clone(),
                    })
                }
                _ => None,
            },
            full: match &r.inventory {
                Inventory::Full { content, .. } if content.len() <= DELTA_CARRIED => {
                    Some(content.clone())
                }
                _ => None,
            },
            routes_changed,
        },
    )?;
    tx.commit()?;
    let accepted = Accepted {
        inventory_seq: seq,
        send_full_inventory: send_full,
    };
    Ok((accepted, replaced))
}

/// Writes `content` (duplicates dropped) as generation `gen` of `oca_id` with one binary COPY.
/// The rows are encoded here, in PostgreSQL's binary COPY format, and sent in large writes:
/// the driver's row-at-a-time writer costs a trip through its runtime per row (a million
/// rows took over 30 s in a debug build; this takes well under one).
fn copy_generation(
    tx: &mut Transaction<'_>,
    oca_id: &str,
    gen: i64,
    content: &[String],
) -> Result<()> {
    let mut ids: Vec<&String> = content.iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut sink = tx.copy_in("COPY inventory (oca_id, gen, content_id) FROM STDIN BINARY")?;
    let mut buf = Vec::with_capacity(COPY_BUFFER + 1024);
    // Signature, flags, header extension length.
    buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    buf.extend_from_slice(&0i32.to_be_bytes());
    buf.extend_from_slice(&0i32.to_be_bytes());
    let text = |buf: &mut Vec<u8>, s: &str| -> Result<()> {
        let len = i32::try_from(s.len())
            .map_err(|_| super::pool::engine("a content id longer than 2 GiB"))?;
        buf.extend_from_slice(&len.to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
        Ok(())
    };
    for id in ids {
        buf.extend_from_slice(&3i16.to_be_bytes());
        text(&mut buf, oca_id)?;
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&gen.to_be_bytes());
        text(&mut buf, id)?;
        if buf.len() >= COPY_BUFFER {
            sink.write_all(&buf).map_err(copy_error)?;
            buf.clear();
        }
    }
    buf.extend_from_slice(&(-1i16).to_be_bytes());
    sink.write_all(&buf).map_err(copy_error)?;
    sink.finish()?;
    Ok(())
}

/// Bytes of COPY data sent at once.
const COPY_BUFFER: usize = 1 << 20;

fn copy_error(e: std::io::Error) -> crate::storage::StorageError {
    crate::storage::StorageError::Engine(Box::new(e))
}

/// Deletes one unused inventory generation of `oca_id`, chunk by chunk, then its listing.
fn purge(c: &mut Client, oca_id: &str, gen: i64) -> Result<()> {
    let chunk = INVENTORY_CHUNK as i64;
    loop {
        let deleted = c.execute(
            "DELETE FROM inventory WHERE ctid = ANY(ARRAY(
               SELECT ctid FROM inventory WHERE oca_id = $1 AND gen = $2 LIMIT $3))",
            &[&oca_id, &gen, &chunk],
        )?;
        if deleted < chunk as u64 {
            break;
        }
    }
    c.execute(
        "DELETE FROM inventory_unused WHERE oca_id = $1 AND gen = $2",
        &[&oca_id, &gen],
    )?;
    Ok(())
}

/// Records the appliance's static prefixes, writing only when they changed; returns whether
/// they did.
fn replace_prefixes(tx: &mut Transaction<'_>, r: &HealthReport) -> Result<bool> {
    let mut new: Vec<String> = r.prefixes.iter().map(|p| p.to_string()).collect();
    new.sort();
    new.dedup();
    let old: Vec<String> = tx
        .query(
            "SELECT prefix FROM appliance_prefixes WHERE oca_id = $1 ORDER BY prefix",
            &[&r.oca_id],
        )?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if old == new {
        return Ok(false);
    }
    tx.execute(
        "DELETE FROM appliance_prefixes WHERE oca_id = $1",
        &[&r.oca_id],
    )?;
    tx.execute(
        "INSERT INTO appliance_prefixes (oca_id, prefix) SELECT $1, unnest($2::text[])",
        &[&r.oca_id, &new],
    )?;
    Ok(true)
}

/// Applies a full or delta inventory to generation `gen`; a delta against another base than
/// the one on record is not applied, and the appliance is asked for a full inventory instead.
fn apply_inventory(
    tx: &mut Transaction<'_>,
    oca_id: &str,
    gen: i64,
    inv: &Inventory,
    held: Option<u64>,
) -> Result<(u64, bool)> {
    const ADD: &str = "INSERT INTO inventory (oca_id, gen, content_id)
                       SELECT $1, $2, unnest($3::text[]) ON CONFLICT DO NOTHING";
    match inv {
        Inventory::Full { seq, content } => {
            tx.execute(
                "DELETE FROM inventory WHERE oca_id = $1 AND gen = $2",
                &[&oca_id, &gen],
            )?;
            tx.execute(ADD, &[&oca_id, &gen, content])?;
            Ok((*seq, false))
        }
        Inventory::Delta {
            base_seq,
            seq,
            added,
            removed,
        } if held == Some(*base_seq) => {
            tx.execute(
                "DELETE FROM inventory WHERE oca_id = $1 AND gen = $2 AND content_id = ANY($3)",
                &[&oca_id, &gen, removed],
            )?;
            tx.execute(ADD, &[&oca_id, &gen, added])?;
            Ok((*seq, false))
        }
        Inventory::Delta { .. } => Ok((held.unwrap_or(0), true)),
    }
}
