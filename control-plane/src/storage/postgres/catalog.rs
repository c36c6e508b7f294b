//! Titles, renditions, subscribers and popularity in PostgreSQL.

use crate::storage::postgres::{big, conflict, exists, small, unsigned, PgStorage};
use crate::storage::{
    decayed, CatalogStore, Content, Result, SavedScore, StorageError, Subscriber, Title,
};

const CONTENT_COLUMNS: &str =
    "id, title, resolution, bitrate_kbps, size, sha256, content_type, origin";

impl CatalogStore for PgStorage {
    fn create_title(&self, t: &Title) -> Result<()> {
        let t = t.clone();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO titles (id, name) VALUES ($1, $2)",
                &[&t.id, &t.name],
            )
            .map_err(|e| conflict(e, format!("title {}", t.id)))?;
            tx.execute(
                "INSERT INTO title_countries (title, country) SELECT $1, unnest($2::text[])
                 ON CONFLICT DO NOTHING",
                &[&t.id, &t.countries],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    fn delete_title(&self, id: &str) -> Result<Vec<String>> {
        let id = id.to_string();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            if !exists(
                &mut tx,
                "SELECT 1 FROM titles WHERE id = $1 FOR UPDATE",
                &id,
            )? {
                return Err(StorageError::Missing(format!("title {id}")));
            }
            let removed: Vec<String> = tx
                .query("DELETE FROM content WHERE title = $1 RETURNING id", &[&id])?
                .iter()
                .map(|r| r.get(0))
                .collect();
            tx.execute("DELETE FROM title_countries WHERE title = $1", &[&id])?;
            tx.execute("DELETE FROM popularity WHERE title = $1", &[&id])?;
            tx.execute("DELETE FROM titles WHERE id = $1", &[&id])?;
            tx.commit()?;
            Ok(removed)
        })
    }

    fn titles(&self) -> Result<Vec<Title>> {
        self.call(|c| {
            Ok(c.query(&titles_sql(""), &[])?
                .iter()
                .map(title_row)
                .collect())
        })
    }

    fn title(&self, id: &str) -> Result<Option<Title>> {
        let id = id.to_string();
        self.call(move |c| {
            let sql = titles_sql("WHERE t.id = $1");
            Ok(c.query_opt(&sql, &[&id])?.as_ref().map(title_row))
        })
    }

    fn titles_among(&self, ids: &[String]) -> Result<Vec<Title>> {
        let ids = ids.to_vec();
        self.call(move |c| {
            let sql = titles_sql("WHERE t.id = ANY($1)");
            Ok(c.query(&sql, &[&ids])?.iter().map(title_row).collect())
        })
    }

    fn content_of_titles(&self, ids: &[String]) -> Result<Vec<Content>> {
        let ids = ids.to_vec();
        self.call(move |c| {
            let sql = format!(
                "SELECT {CONTENT_COLUMNS} FROM content
                 WHERE title = ANY($1) ORDER BY resolution DESC, bitrate_kbps DESC, id"
            );
            Ok(c.query(&sql, &[&ids])?.iter().map(content_row).collect())
        })
    }

    fn subscribers_among(&self, ids: &[String]) -> Result<Vec<Subscriber>> {
        let ids = ids.to_vec();
        self.call(move |c| {
            let sql = format!("{SUBSCRIBER_COLUMNS} WHERE id = ANY($1)");
            Ok(c.query(&sql, &[&ids])?.iter().map(subscriber_row).collect())
        })
    }

    fn create_content(&self, ct: &Content) -> Result<()> {
        let ct = ct.clone();
        self.call(move |c| {
            if !exists(c, "SELECT 1 FROM titles WHERE id = $1", &ct.title)? {
                return Err(StorageError::Missing(format!("title {}", ct.title)));
            }
            c.execute(
                &format!(
                    "INSERT INTO content ({CONTENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
                ),
                &[
                    &ct.id,
                    &ct.title,
                    &i64::from(ct.resolution),
                    &i64::from(ct.bitrate_kbps),
                    &big(ct.size),
                    &ct.sha256,
                    &ct.content_type,
                    &ct.origin,
                ],
            )
            .map_err(|e| conflict(e, format!("content {}", ct.id)))?;
            Ok(())
        })
    }

    fn content(&self, title: Option<&str>) -> Result<Vec<Content>> {
        let title = title.map(String::from);
        self.call(move |c| {
            let sql = if title.is_some() {
                format!(
                    "SELECT {CONTENT_COLUMNS} FROM content
                     WHERE title = $1 ORDER BY resolution DESC, bitrate_kbps DESC, id"
                )
            } else {
                format!(
                    "SELECT {CONTENT_COLUMNS} FROM content
                     WHERE $1::text IS NULL ORDER BY resolution DESC, bitrate_kbps DESC, id"
                )
            };
            Ok(c.query(&sql, &[&title])?.iter().map(content_row).collect())
        })
    }

    fn put_subscriber(&self, s: &Subscriber) -> Result<()> {
        let s = s.clone();
        self.call(move |c| {
            c.execute(
                "INSERT INTO subscribers (id, active, max_resolution, max_streams)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET active = excluded.active,
                   max_resolution = excluded.max_resolution, max_streams = excluded.max_streams",
                &[
                    &s.id,
                    &s.active,
                    &i64::from(s.max_resolution),
                    &i64::from(s.max_streams),
                ],
            )?;
            Ok(())
        })
    }

    fn subscribers(&self) -> Result<Vec<Subscriber>> {
        self.call(|c| {
            let sql = format!("{SUBSCRIBER_COLUMNS} ORDER BY id");
            Ok(c.query(&sql, &[])?.iter().map(subscriber_row).collect())
        })
    }

    fn subscriber(&self, id: &str) -> Result<Option<Subscriber>> {
        let id = id.to_string();
        self.call(move |c| {
            let sql = format!("{SUBSCRIBER_COLUMNS} WHERE id = $1");
            Ok(c.query_opt(&sql, &[&id])?.as_ref().map(subscriber_row))
        })
    }

    fn popularity(&self) -> Result<Vec<SavedScore>> {
        self.call(|c| {
            Ok(
                c.query("SELECT title, score, updated FROM popularity", &[])?
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect(),
            )
        })
    }

    fn add_popularity(
        &self,
        deltas: &[(String, f64)],
        half_life_secs: f64,
        now: i64,
    ) -> Result<()> {
        // One row per title (deltas of one title summed), in title order: two replicas
        // flushing at once lock rows in one order and never deadlock.
        let mut summed: std::collections::BTreeMap<&str, f64> = std::collections::BTreeMap::new();
        for (t, d) in deltas {
            *summed.entry(t.as_str()).or_default() += d;
        }
        let deltas: Vec<(String, f64)> = summed
            .into_iter()
            .map(|(t, d)| (t.to_string(), d))
            .collect();
        self.call(move |c| {
            let mut tx = c.transaction()?;
            let stored = tx.prepare(
                "SELECT p.score, p.updated FROM titles t LEFT JOIN popularity p ON p.title = t.id
                 WHERE t.id = $1 FOR UPDATE OF t",
            )?;
            let up = tx.prepare(
                "INSERT INTO popularity (title, score, updated) VALUES ($1, $2, $3)
                 ON CONFLICT (title) DO UPDATE SET score = excluded.score, updated = excluded.updated",
            )?;
            for (t, delta) in &deltas {
                // The title's row locked: another replica's flush of it waits, then reads this one's.
                let Some(row) = tx.query_opt(&stored, &[t])? else {
                    continue;
                };
                let was: (Option<f64>, Option<i64>) = (row.get(0), row.get(1));
                let (score, updated) = match was {
                    (Some(s), Some(at)) => (decayed(s, at, now, half_life_secs) + delta, at.max(now)),
                    _ => (*delta, now),
                };
                tx.execute(&up, &[t, &score, &updated])?;
            }
            tx.commit()?;
            Ok(())
        })
    }
}

/// The subscriber columns [`subscriber_row`] reads.
const SUBSCRIBER_COLUMNS: &str = "SELECT id, active, max_resolution, max_streams FROM subscribers";

/// A subscriber from a row of [`SUBSCRIBER_COLUMNS`].
fn subscriber_row(r: &postgres::Row) -> Subscriber {
    Subscriber {
        id: r.get(0),
        active: r.get(1),
        max_resolution: small(r.get(2)),
        max_streams: small(r.get(3)),
    }
}

/// Titles with their licensed countries, narrowed by `filter` (a WHERE clause or nothing).
fn titles_sql(filter: &str) -> String {
    format!(
        "SELECT t.id, t.name, COALESCE(array_agg(c.country ORDER BY c.country)
                                         FILTER (WHERE c.country IS NOT NULL), '{{}}')
         FROM titles t LEFT JOIN title_countries c ON c.title = t.id {filter}
         GROUP BY t.id ORDER BY t.id"
    )
}

/// A row of [`titles_sql`].
fn title_row(r: &postgres::Row) -> Title {
    Title {
        id: r.get(0),
        name: r.get(1),
        countries: r.get(2),
    }
}

/// A row of `CONTENT_COLUMNS`.
fn content_row(r: &postgres::Row) -> Content {
    Content {
        id: r.get(0),
        title: r.get(1),
        resolution: small(r.get(2)),
        bitrate_kbps: small(r.get(3)),
        size: unsigned(r.get(4)),
        sha256: r.get(5),
        content_type: r.get(6),
        origin: r.get(7),
    }
}
