//! Title popularity from play events, with exponential decay: each play adds 1, and a score
//! halves every `half_life`. A play only touches a map in memory; every minute (and at
//! shutdown) the plays counted since the last flush are *added* to the stored scores and the
//! stored scores read back, so with several replicas on one database the scores are every
//! replica's plays, and each replica plans fills from all of them (another replica's plays
//! reach this one's plans within a flush interval of both). A crash loses at most that
//! minute of this replica's plays, which only nudges a statistic.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::storage::{decayed, Storage, StorageError};

/// Default half-life of a play's weight.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 24.0 * 3600.0;

/// A score and the time it is of.
type Score = (f64, i64);

/// Decayed play counts by title.
pub struct Popularity {
    half_life_secs: f64,
    scores: Mutex<Scores>,
    /// One flush at a time (the minute's and the shutdown's may meet), so none sends another's
    /// plays twice.
    flush: Mutex<()>,
}

/// The three parts a title's score is the sum of.
#[derive(Default)]
struct Scores {
    /// As stored when last read: every replica's plays flushed until then.
    stored: HashMap<String, Score>,
    /// This replica's plays being flushed now (counted until the stored scores are read back).
    flushing: HashMap<String, Score>,
    /// This replica's plays since.
    unflushed: HashMap<String, Score>,
}

impl Popularity {
    /// Reads the stored scores.
    pub fn load(store: &dyn Storage, half_life_secs: f64) -> Result<Popularity, StorageError> {
        let p = Popularity {
            half_life_secs,
            scores: Mutex::default(),
            flush: Mutex::new(()),
        };
        p.scores.lock().stored = stored(store)?;
        Ok(p)
    }

    fn decayed(&self, (score, at): Score, now: i64) -> f64 {
        decayed(score, at, now, self.half_life_secs)
    }

    /// Counts one play of `title` at `now`.
    pub fn record(&self, title: &str, now: i64) {
        let mut scores = self.scores.lock();
        let e = scores
            .unflushed
            .entry(title.to_string())
            .or_insert((0.0, now));
        *e = (self.decayed(*e, now) + 1.0, now);
    }

    /// Every title's score as of `now`.
    pub fn scores(&self, now: i64) -> HashMap<String, f64> {
        let s = self.scores.lock();
        let mut out: HashMap<String, f64> = HashMap::with_capacity(s.stored.len());
        for part in [&s.stored, &s.flushing, &s.unflushed] {
            for (t, v) in part {
                *out.entry(t.clone()).or_default() += self.decayed(*v, now);
            }
        }
        out
    }

    /// Adds this replica's plays since the last flush to the stored scores at `now`, then reads
    /// the stored scores back (with other replicas' flushes). Plays that could not be stored
    /// are kept for the next flush.
    pub fn save(&self, store: &dyn Storage, now: i64) -> Result<(), StorageError> {
        let _one = self.flush.lock();
        let deltas: Vec<(String, f64)> = {
            let mut s = self.scores.lock();
            let taken = std::mem::take(&mut s.unflushed);
            for (t, v) in taken {
                let merged = s.flushing.get(&t).map_or(0.0, |f| self.decayed(*f, now));
                s.flushing.insert(t, (merged + self.decayed(v, now), now));
            }
            s.flushing
                .iter()
                .map(|(t, v)| (t.clone(), self.decayed(*v, now)))
                .collect()
        };
        // On failure `flushing` stays: still counted, sent again with the next flush.
        store.add_popularity(&deltas, self.half_life_secs, now)?;
        {
            // Stored now: part of `stored`, whether or not the read back below works.
            let mut s = self.scores.lock();
            for (t, v) in std::mem::take(&mut s.flushing) {
                let was = s.stored.get(&t).map_or(0.0, |x| self.decayed(*x, now));
                s.stored.insert(t, (was + self.decayed(v, now), now));
            }
        }
        let fresh = stored(store)?;
        self.scores.lock().stored = fresh;
        Ok(())
    }

    /// Forgets a title (removed from the catalog).
    pub fn forget(&self, title: &str) {
        let mut s = self.scores.lock();
        s.stored.remove(title);
        s.flushing.remove(title);
        s.unflushed.remove(title);
    }
}

/// The stored scores by title.
fn stored(store: &dyn Storage) -> Result<HashMap<String, Score>, StorageError> {
    Ok(store
        .popularity()?
        .into_iter()
        .map(|(title, score, at)| (title, (score, at)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStorage;
    use crate::storage::{CatalogStore, Title};

    fn with_titles(path: &std::path::Path, ids: &[&str]) -> SqliteStorage {
        let db = SqliteStorage::open(path, 1_000).unwrap();
        for id in ids {
            let t = Title {
                id: id.to_string(),
                name: id.to_string(),
                countries: vec![],
            };
            let _ = db.create_title(&t);
        }
        db
    }

    fn close(a: &HashMap<String, f64>, b: &HashMap<String, f64>) -> bool {
        a.len() == b.len() && a.iter().all(|(t, v)| (b[t] - v).abs() < 1e-9)
    }

    #[test]
    fn plays_add_up_and_halve_every_half_life() {
        let dir = tempfile::tempdir().unwrap();
        let db = with_titles(&dir.path().join("cp.db"), &["a", "b"]);
        let p = Popularity::load(&db, 100.0).unwrap();
        p.record("a", 1000);
        p.record("a", 1000);
        p.record("b", 1000);
        let s = p.scores(1100);
        assert!(
            (s["a"] - 1.0).abs() < 1e-9 && (s["b"] - 0.5).abs() < 1e-9,
            "{s:?}"
        );
        p.record("b", 1100);
        assert!((p.scores(1100)["b"] - 1.5).abs() < 1e-9);
        p.save(&db, 1100).unwrap();
        assert!(
            (p.scores(1100)["b"] - 1.5).abs() < 1e-9,
            "a flush counts nothing twice"
        );
        p.save(&db, 1150).unwrap();
        assert!((p.scores(1200)["b"] - 0.75).abs() < 1e-9);
        let again = Popularity::load(&db, 100.0).unwrap();
        assert!((again.scores(1200)["b"] - 0.75).abs() < 1e-9);
    }

    #[test]
    fn plays_split_across_two_replicas_score_as_on_one() {
        let dir = tempfile::tempdir().unwrap();
        let titles = ["a", "b", "c"];
        let shared = dir.path().join("shared.db");
        let (db1, db2) = (with_titles(&shared, &titles), with_titles(&shared, &titles));
        let alone = with_titles(&dir.path().join("alone.db"), &titles);
        let hl = 600.0;
        let (r1, r2) = (
            Popularity::load(&db1, hl).unwrap(),
            Popularity::load(&db2, hl).unwrap(),
        );
        let one = Popularity::load(&alone, hl).unwrap();
        // Plays at varied times, each to one replica or the other, flushed at their own times.
        for i in 0..300i64 {
            let now = 1_000 + i * 7;
            let title = titles[(i * i % 3) as usize];
            if i % 3 == 0 { &r1 } else { &r2 }.record(title, now);
            one.record(title, now);
            if i % 40 == 0 {
                r1.save(&db1, now).unwrap();
            }
            if i % 55 == 0 {
                r2.save(&db2, now).unwrap();
            }
        }
        let end = 1_000 + 300 * 7;
        r1.save(&db1, end).unwrap();
        r2.save(&db2, end + 3).unwrap();
        r1.save(&db1, end + 5).unwrap();
        let want = one.scores(end + 10);
        for (name, r) in [("r1", &r1), ("r2", &r2)] {
            let have = r.scores(end + 10);
            assert!(
                close(&have, &want),
                "{name}: {have:?}, one replica: {want:?}"
            );
        }
        let stored = Popularity::load(&db1, hl).unwrap().scores(end + 10);
        assert!(
            close(&stored, &want),
            "stored {stored:?}, one replica: {want:?}"
        );
    }

    #[test]
    fn a_deleted_title_is_not_brought_back_by_another_replicas_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        let (db1, db2) = (with_titles(&path, &["a"]), with_titles(&path, &["a"]));
        let r2 = Popularity::load(&db2, 100.0).unwrap();
        r2.record("a", 1000);
        db1.delete_title("a").unwrap();
        r2.save(&db2, 1000).unwrap();
        assert!(db1.popularity().unwrap().is_empty());
    }
}
