//! The change feed on PostgreSQL ([`crate::storage::changes`]): rows appended by the triggers of
//! migrations 14 and 15 and by [`note_report`], read by [`PgFeed`] on a session of its own that
//! `LISTEN`s for `oca_changes`.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Transaction};

use crate::storage::changes::{
    ApplianceRecord, CatalogChange, Change, ChangeFeed, Feed, FleetChange, ReportChange, HOLE_WAIT,
    RETENTION,
};
use crate::storage::postgres::pool::Connector;
use crate::storage::Result;

/// Rows read at most per call; a full batch is followed by the next read without waiting.
const BATCH: i64 = 10_000;

/// Sequence numbers below the end, when the feed starts, that may belong to transactions not
/// yet committed: asked for as holes. Writers of changes are few at a time (the pool's
/// connections of each replica), so this covers them with room to spare.
const START_WINDOW: i64 = 256;

/// Appends a health report's change inside its transaction (no notification: see
/// migration 14).
pub(super) fn note_report(tx: &mut Transaction<'_>, change: &ReportChange) -> Result<()> {
    let detail = serde_json::to_string(change).expect("plain structs serialise");
    tx.execute(
        "INSERT INTO changes (at, area, origin, detail)
         VALUES ($1, 'report', coalesce(current_setting('oca.replica', true), ''), $2)",
        &[&change.at, &detail],
    )?;
    Ok(())
}

/// What a catalog row names: its keys, or the whole catalog when it names none (too many
/// rows, or written by migration 14's triggers) or in a form this replica does not know.
fn catalog_change(detail: Option<&str>) -> CatalogChange {
    detail
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(CatalogChange::Whole)
}

/// What a fleet row names: zones or windows (plain words), the sites or appliances touched
/// (JSON keys), or, for anything else, the whole fleet view.
fn fleet_change(detail: Option<&str>) -> FleetChange {
    match detail {
        Some("zones") => FleetChange::Zones,
        Some("windows") => FleetChange::Windows,
        Some(d) => serde_json::from_str(d).unwrap_or(FleetChange::Structure),
        None => FleetChange::Structure,
    }
}

/// A row of `changes`: sequence number, area, origin, detail.
type Row = (i64, String, String, Option<String>);

/// A replica's position in the feed, on a session of its own.
pub(super) struct PgFeed {
    connector: Connector,
    /// This replica's id: its own rows are skipped.
    replica: String,
    client: Option<Client>,
    /// Where it is.
    at: Position,
    /// When a read last succeeded: a follower away longer than the retention resyncs.
    read_at: Instant,
    /// The last read was a full batch: read again without waiting.
    more: bool,
}

impl PgFeed {
    /// A position at the current end of the feed.
    pub(super) fn start(connector: Connector, replica: String) -> Result<PgFeed> {
        let mut feed = PgFeed {
            connector,
            replica,
            client: None,
            at: Position::default(),
            read_at: Instant::now(),
            more: false,
        };
        let c = feed.client()?;
        let end: i64 = c
            .query_one("SELECT coalesce(max(seq), 0) FROM changes", &[])?
            .get(0);
        let present: Vec<i64> = c
            .query(
                "SELECT seq FROM changes WHERE seq > $1",
                &[&(end - START_WINDOW)],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        feed.at = Position::starting(end, &present, Instant::now());
        Ok(feed)
    }

    /// The session, connecting (and listening) first when there is none.
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            self.client = None;
        }
        if self.client.is_none() {
            let mut c = self.connector.connect()?;
            // Named apart from the pool's sessions, so an operator (or a test) can tell it.
            c.batch_execute("SET application_name = 'control-plane-feed'; LISTEN oca_changes")?;
            // Whatever was committed while no session listened is read below, from `last`.
            self.more = true;
            self.client = Some(c);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs `f` on the session; a failure drops it, so the next call connects again.
    fn with<T>(&mut self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let r = f(self.client()?);
        if r.is_err() {
            self.client = None;
        }
        r
    }

    /// Waits up to `wait` for a notification; true when one came.
    fn wait(&mut self, wait: Duration) -> Result<bool> {
        self.with(|c| {
            let mut n = c.notifications();
            let woken = n.timeout_iter(wait).next()?.is_some();
            // Every notification pending now is answered by the one read that follows.
            while n.iter().next()?.is_some() {}
            Ok(woken)
        })
    }

    fn read(&mut self) -> Result<Vec<Row>> {
        let (last, holes): (i64, Vec<i64>) =
            (self.at.last, self.at.holes.keys().copied().collect());
        self.with(|c| {
            Ok(c.query(
                "SELECT seq, area, origin, detail FROM changes
                 WHERE seq > $1 OR seq = ANY($2) ORDER BY seq LIMIT $3",
                &[&last, &holes, &BATCH],
            )?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect())
        })
    }
}

/// A position in the feed: the highest sequence number seen, and the numbers below it not seen
/// yet (holes), each with when it was first missed.
#[derive(Debug, Default, PartialEq)]
struct Position {
    last: i64,
    holes: BTreeMap<i64, Instant>,
}

impl Position {
    /// At the end `end`, with the numbers of the [`START_WINDOW`] below it not in `present`
    /// (sorted) as holes: their transactions may not have committed yet.
    fn starting(end: i64, present: &[i64], now: Instant) -> Position {
        let holes = ((end - START_WINDOW).max(0) + 1..=end)
            .filter(|s| present.binary_search(s).is_err())
            .map(|s| (s, now))
            .collect();
        Position { last: end, holes }
    }

    /// Moves past `seq` (read now), remembering any number skipped as a hole.
    fn saw(&mut self, seq: i64, now: Instant) {
        if self.holes.remove(&seq).is_some() {
            return;
        }
        for skipped in self.last + 1..seq {
            self.holes.insert(skipped, now);
        }
        self.last = self.last.max(seq);
    }

    /// Forgets holes missed for [`HOLE_WAIT`]: rolled back.
    fn expire(&mut self, now: Instant) {
        self.holes
            .retain(|_, since| now.duration_since(*since) < HOLE_WAIT);
    }

    /// At the end `end`, with no holes.
    fn reset(&mut self, end: i64) {
        *self = Position {
            last: end,
            holes: BTreeMap::new(),
        };
    }
}

impl ChangeFeed for PgFeed {
    fn next(&mut self, wait: Duration) -> Result<Feed> {
        if !self.more {
            self.wait(wait)?;
        }
        if self.read_at.elapsed() > RETENTION - RETENTION / 3 {
            // Rows after our position may have been deleted: start again from the end.
            let end: i64 = self.with(|c| {
                Ok(
                    c.query_one("SELECT coalesce(max(seq), 0) FROM changes", &[])?
                        .get(0),
                )
            })?;
            self.at.reset(end);
            self.read_at = Instant::now();
            self.more = false;
            return Ok(Feed::Resync);
        }
        let rows = self.read()?;
        let now = Instant::now();
        self.read_at = now;
        self.more = rows.len() as i64 == BATCH;
        let mut changes = Vec::new();
        for (seq, area, origin, detail) in rows {
            self.at.saw(seq, now);
            if origin == self.replica {
                continue;
            }
            match (area.as_str(), detail) {
                ("catalog", d) => changes.push(Change::Catalog(catalog_change(d.as_deref()))),
                ("fleet", d) => changes.push(Change::Fleet(fleet_change(d.as_deref()))),
                ("keys", _) => changes.push(Change::Keys),
                ("report", Some(d)) => match serde_json::from_str(&d) {
                    Ok(r) => changes.push(Change::Report(r)),
                    // Written by a newer replica in a form this one does not know: reload the
                    // fleet view rather than miss what it says.
                    Err(_) => changes.push(Change::Fleet(FleetChange::Structure)),
                },
                _ => changes.push(Change::Fleet(FleetChange::Structure)),
            }
        }
        self.at.expire(now);
        Ok(Feed::Changes(changes))
    }

    fn appliances(&mut self, oca_ids: &[&str]) -> Result<Vec<Option<ApplianceRecord>>> {
        let ids: Vec<String> = oca_ids.iter().map(|id| id.to_string()).collect();
        let mut found = self.with(move |c| {
            // One snapshot for every read, and one query per table for the whole batch: a
            // round trip per table per appliance made a batch of reports take seconds on a
            // busy machine.
            let mut tx = c
                .build_transaction()
                .isolation_level(postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let mut found: HashMap<String, ApplianceRecord> = tx
                .query("SELECT id FROM appliances WHERE id = ANY($1)", &[&ids])?
                .iter()
                .map(|r| (r.get(0), ApplianceRecord::default()))
                .collect();
            for r in tx.query(
                "SELECT oca_id, prefix FROM appliance_prefixes WHERE oca_id = ANY($1)
                 ORDER BY oca_id, prefix",
                &[&ids],
            )? {
                let prefix = r.get::<_, &str>(1).parse().ok();
                if let (Some(rec), Some(p)) = (found.get_mut(r.get::<_, &str>(0)), prefix) {
                    rec.prefixes.push(p);
                }
            }
            for (id, routes) in super::bgp::routes_of_all(&mut tx, &ids)? {
                if let Some(rec) = found.get_mut(&id) {
                    rec.routes = routes;
                }
            }
            for r in tx.query(
                "SELECT oca_id, inventory_seq FROM appliance_health WHERE oca_id = ANY($1)",
                &[&ids],
            )? {
                if let Some(rec) = found.get_mut(r.get::<_, &str>(0)) {
                    rec.inventory_seq = r.get::<_, i64>(1).max(0) as u64;
                }
            }
            for r in tx.query(
                "SELECT a.id, i.content_id FROM appliances a
                 JOIN inventory i ON i.oca_id = a.id AND i.gen = a.inventory_gen
                 WHERE a.id = ANY($1)",
                &[&ids],
            )? {
                if let Some(rec) = found.get_mut(r.get::<_, &str>(0)) {
                    rec.inventory.push(r.get(1));
                }
            }
            tx.commit()?;
            Ok(found)
        })?;
        // An appliance named twice (two of its reports in one batch) gets its record twice.
        let mut uses: HashMap<&str, usize> = HashMap::new();
        for id in oca_ids {
            *uses.entry(id).or_default() += 1;
        }
        Ok(oca_ids
            .iter()
            .map(|id| {
                let left = uses.get_mut(id).expect("counted above");
                *left -= 1;
                if *left == 0 {
                    found.remove(*id)
                } else {
                    found.get(*id).cloned()
                }
            })
            .collect())
    }

    fn trim(&mut self, now: i64) -> Result<u64> {
        let before = now - RETENTION.as_secs() as i64;
        self.with(|c| Ok(c.execute("DELETE FROM changes WHERE at < $1", &[&before])?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_skipped_is_a_hole_until_it_is_read_or_expires() {
        let t0 = Instant::now();
        let mut p = Position::default();
        p.saw(1, t0);
        p.saw(4, t0);
        assert_eq!(p.last, 4);
        assert_eq!(p.holes.keys().copied().collect::<Vec<_>>(), [2, 3]);
        // 3 commits late: read as a hole, not moving the position back.
        p.saw(3, t0);
        assert_eq!(
            (p.last, p.holes.keys().copied().collect::<Vec<_>>()),
            (4, vec![2])
        );
        // 2 never commits (rolled back): forgotten after HOLE_WAIT, not before.
        p.expire(t0 + HOLE_WAIT - Duration::from_secs(1));
        assert_eq!(p.holes.len(), 1);
        p.expire(t0 + HOLE_WAIT);
        assert!(p.holes.is_empty());
        p.reset(9);
        assert_eq!(
            p,
            Position {
                last: 9,
                holes: BTreeMap::new()
            }
        );
    }

    #[test]
    fn a_feed_starting_asks_again_for_the_numbers_missing_just_below_the_end() {
        let t0 = Instant::now();
        let p = Position::starting(1000, &[998, 1000], t0);
        assert_eq!(p.last, 1000);
        assert_eq!(p.holes.len() as i64, START_WINDOW - 2);
        assert!(p.holes.contains_key(&999) && p.holes.contains_key(&(1001 - START_WINDOW)));
        assert!(!p.holes.contains_key(&(1000 - START_WINDOW)));
        assert_eq!(Position::starting(3, &[1, 2, 3], t0).holes.len(), 0);
    }
}
