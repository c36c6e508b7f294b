//! Title popularity from play events, with exponential decay: each play adds 1, and a score
//! halves every `half_life`. Kept in memory (a play only touches a map) and written to the
//! database every minute; a crash loses at most that minute of plays, which only nudges a
//! statistic.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::storage::{SavedScore, Storage, StorageError};

/// Default half-life of a play's weight.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 24.0 * 3600.0;

/// Decayed play counts by title.
pub struct Popularity {
    half_life_secs: f64,
    scores: Mutex<HashMap<String, (f64, i64)>>,
}

impl Popularity {
    /// Reads the scores saved last.
    pub fn load(store: &dyn Storage, half_life_secs: f64) -> Result<Popularity, StorageError> {
        let scores = store
            .popularity()?
            .into_iter()
            .map(|(title, score, at)| (title, (score, at)))
            .collect();
        Ok(Popularity {
            half_life_secs,
            scores: Mutex::new(scores),
        })
    }

    fn decayed(&self, (score, at): (f64, i64), now: i64) -> f64 {
        let age = (now - at).max(0) as f64;
        score * 0.5f64.powf(age / self.half_life_secs)
    }

    /// Counts one play of `title` at `now`.
    pub fn record(&self, title: &str, now: i64) {
        let mut scores = self.scores.lock();
        let e = scores.entry(title.to_string()).or_insert((0.0, now));
        *e = (self.decayed(*e, now) + 1.0, now);
    }

    /// Every title's score as of `now`.
    pub fn scores(&self, now: i64) -> HashMap<String, f64> {
        let scores = self.scores.lock();
        scores
            .iter()
            .map(|(t, v)| (t.clone(), self.decayed(*v, now)))
            .collect()
    }

    /// Writes the scores to storage.
    pub fn save(&self, store: &dyn Storage) -> Result<(), StorageError> {
        let saved: Vec<SavedScore> = self
            .scores
            .lock()
            .iter()
            .map(|(t, (s, a))| (t.clone(), *s, *a))
            .collect();
        store.save_popularity(&saved)
    }

    /// Forgets a title (removed from the catalog).
    pub fn forget(&self, title: &str) {
        let mut scores = self.scores.lock();
        scores.remove(title);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::sqlite::SqliteStorage;

    #[test]
    fn plays_add_up_and_halve_every_half_life() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
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
        p.save(&db).unwrap();
        let again = Popularity::load(&db, 100.0).unwrap();
        assert!((again.scores(1200)["b"] - 0.75).abs() < 1e-9);
    }
}
