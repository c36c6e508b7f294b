//! Titles, renditions, subscribers and popularity in SQLite.

use rusqlite::{params, OptionalExtension};

use crate::storage::sqlite::{conflict, SqliteStorage};
use crate::storage::{
    decayed, CatalogStore, Content, Result, SavedScore, StorageError, Subscriber, Title,
};

impl CatalogStore for SqliteStorage {
    fn create_title(&self, t: &Title) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO titles (id, name) VALUES (?1, ?2)",
            params![t.id, t.name],
        )
        .map_err(|e| conflict(e, format!("title {}", t.id)))?;
        for c in &t.countries {
            tx.execute(
                "INSERT OR IGNORE INTO title_countries (title, country) VALUES (?1, ?2)",
                params![t.id, c],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_title(&self, id: &str) -> Result<Vec<String>> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx
            .query_row("SELECT 1 FROM titles WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_none()
        {
            return Err(StorageError::Missing(format!("title {id}")));
        }
        let removed: Vec<String> = {
            let mut stmt = tx.prepare("SELECT id FROM content WHERE title = ?1")?;
            let rows = stmt.query_map([id], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        tx.execute("DELETE FROM content WHERE title = ?1", [id])?;
        tx.execute("DELETE FROM title_countries WHERE title = ?1", [id])?;
        tx.execute("DELETE FROM popularity WHERE title = ?1", [id])?;
        tx.execute("DELETE FROM titles WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(removed)
    }

    fn titles(&self) -> Result<Vec<Title>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&titles_sql(""))?;
        let rows = stmt.query_map([], title_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn title(&self, id: &str) -> Result<Option<Title>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&titles_sql("WHERE t.id = ?1"))?;
        Ok(stmt.query_row([id], title_row).optional()?)
    }

    fn create_content(&self, c: &Content) -> Result<()> {
        let conn = self.conn();
        if conn
            .query_row("SELECT 1 FROM titles WHERE id = ?1", [&c.title], |_| Ok(()))
            .optional()?
            .is_none()
        {
            return Err(StorageError::Missing(format!("title {}", c.title)));
        }
        conn.execute(
            "INSERT INTO content (id, title, resolution, bitrate_kbps, size, sha256, content_type, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![c.id, c.title, c.resolution, c.bitrate_kbps, c.size as i64, c.sha256, c.content_type, c.origin],
        )
        .map_err(|e| conflict(e, format!("content {}", c.id)))?;
        Ok(())
    }

    fn content(&self, title: Option<&str>) -> Result<Vec<Content>> {
        let conn = self.reader();
        // Two statements: `?1 IS NULL OR title = ?1` would keep SQLite from using the title index.
        let sql = if title.is_some() {
            "SELECT id, title, resolution, bitrate_kbps, size, sha256, content_type, origin FROM content
             WHERE title = ?1 ORDER BY resolution DESC, bitrate_kbps DESC, id"
        } else {
            "SELECT id, title, resolution, bitrate_kbps, size, sha256, content_type, origin FROM content
             WHERE ?1 IS NULL ORDER BY resolution DESC, bitrate_kbps DESC, id"
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([title], |r| {
            Ok(Content {
                id: r.get(0)?,
                title: r.get(1)?,
                resolution: r.get(2)?,
                bitrate_kbps: r.get(3)?,
                size: r.get::<_, i64>(4)? as u64,
                sha256: r.get(5)?,
                content_type: r.get(6)?,
                origin: r.get(7)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_subscriber(&self, s: &Subscriber) -> Result<()> {
        self.conn().execute(
            "INSERT INTO subscribers (id, active, max_resolution, max_streams) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET active = excluded.active, max_resolution = excluded.max_resolution,
               max_streams = excluded.max_streams",
            params![s.id, s.active, s.max_resolution, s.max_streams],
        )?;
        Ok(())
    }

    fn subscribers(&self) -> Result<Vec<Subscriber>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!("{SUBSCRIBER_COLUMNS} ORDER BY id"))?;
        let rows = stmt.query_map([], subscriber_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn subscriber(&self, id: &str) -> Result<Option<Subscriber>> {
        let conn = self.reader();
        let mut stmt = conn.prepare(&format!("{SUBSCRIBER_COLUMNS} WHERE id = ?1"))?;
        Ok(stmt.query_row([id], subscriber_row).optional()?)
    }

    fn popularity(&self) -> Result<Vec<SavedScore>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT title, score, updated FROM popularity")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_popularity(
        &self,
        deltas: &[(String, f64)],
        half_life_secs: f64,
        now: i64,
    ) -> Result<()> {
        let mut conn = self.conn();
        // IMMEDIATE: the write lock before the first read, so another process's flush cannot
        // slip between this read and this write (SQLite has no row locks; the file lock is it).
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut title = tx.prepare_cached("SELECT 1 FROM titles WHERE id = ?1")?;
            let mut stored =
                tx.prepare_cached("SELECT score, updated FROM popularity WHERE title = ?1")?;
            let mut up = tx.prepare_cached(
                "INSERT INTO popularity (title, score, updated) VALUES (?1, ?2, ?3)
                 ON CONFLICT(title) DO UPDATE SET score = excluded.score, updated = excluded.updated",
            )?;
            for (t, delta) in deltas {
                if !title.exists([t])? {
                    continue;
                }
                let was: Option<(f64, i64)> = stored
                    .query_row([t], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let (score, updated) = match was {
                    Some((s, at)) => (decayed(s, at, now, half_life_secs) + delta, at.max(now)),
                    None => (*delta, now),
                };
                up.execute(params![t, score, updated])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// The subscriber columns [`subscriber_row`] reads.
const SUBSCRIBER_COLUMNS: &str = "SELECT id, active, max_resolution, max_streams FROM subscribers";

/// A subscriber from a row of [`SUBSCRIBER_COLUMNS`].
fn subscriber_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscriber> {
    Ok(Subscriber {
        id: r.get(0)?,
        active: r.get(1)?,
        max_resolution: r.get(2)?,
        max_streams: r.get(3)?,
    })
}

/// Titles with their licensed countries, narrowed by `filter` (a WHERE clause or nothing).
fn titles_sql(filter: &str) -> String {
    format!(
        "SELECT t.id, t.name, COALESCE(group_concat(c.country, ','), '')
         FROM titles t LEFT JOIN title_countries c ON c.title = t.id {filter}
         GROUP BY t.id ORDER BY t.id"
    )
}

/// A row of [`titles_sql`], countries sorted.
fn title_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Title> {
    let countries: String = r.get(2)?;
    let mut countries: Vec<String> = countries
        .split(',')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect();
    countries.sort();
    Ok(Title {
        id: r.get(0)?,
        name: r.get(1)?,
        countries,
    })
}
