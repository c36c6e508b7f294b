//! Title popularity from play events, with exponential decay: each play adds 1, and a score
//! halves every `half_life`. Kept in memory (a play only touches a map) and written to the
//! database every minute; a crash loses at most that minute of plays, which only nudges a
//! statistic.

use std::collections::HashMap;
use std::sync::Mutex;

use rusqlite::params;

use crate::db::{Db, DbError};

/// Default half-life of a play's weight.
pub const DEFAULT_HALF_LIFE_SECS: f64 = 24.0 * 3600.0;

/// Decayed play counts by title.
pub struct Popularity {
    half_life_secs: f64,
    scores: Mutex<HashMap<String, (f64, i64)>>,
}

impl Popularity {
    /// Reads the scores saved last.
    pub fn load(db: &Db, half_life_secs: f64) -> Result<Popularity, DbError> {
        let conn = db.reader();
        let mut stmt = conn.prepare("SELECT title, score, updated FROM popularity")?;
        let scores = stmt
            .query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?
            .collect::<Result<_, _>>()?;
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
        let mut scores = self.scores.lock().unwrap_or_else(|p| p.into_inner());
        let e = scores.entry(title.to_string()).or_insert((0.0, now));
        *e = (self.decayed(*e, now) + 1.0, now);
    }

    /// Every title's score as of `now`.
    pub fn scores(&self, now: i64) -> HashMap<String, f64> {
        let scores = self.scores.lock().unwrap_or_else(|p| p.into_inner());
        scores
            .iter()
            .map(|(t, v)| (t.clone(), self.decayed(*v, now)))
            .collect()
    }

    /// Writes the scores to the database.
    pub fn save(&self, db: &Db) -> Result<(), DbError> {
        let snapshot: Vec<(String, f64, i64)> = {
            let scores = self.scores.lock().unwrap_or_else(|p| p.into_inner());
            scores
                .iter()
                .map(|(t, (s, a))| (t.clone(), *s, *a))
                .collect()
        };
        let mut conn = db.conn();
        let tx = conn.transaction()?;
        {
            let mut up = tx.prepare_cached(
                "INSERT INTO popularity (title, score, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT(title) DO UPDATE SET score = excluded.score, updated = excluded.updated",
            )?;
            for (t, s, a) in snapshot {
                up.execute(params![t, s, a])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets a title (removed from the catalog).
    pub fn forget(&self, title: &str) {
        let mut scores = self.scores.lock().unwrap_or_else(|p| p.into_inner());
        scores.remove(title);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plays_add_up_and_halve_every_half_life() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("cp.db")).unwrap();
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
