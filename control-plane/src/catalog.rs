//! Titles, their renditions (content files), and subscribers with their plans.

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::db::{Db, DbError};

/// A title and the countries it is licensed in.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Title {
    /// Title id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// ISO 3166-1 alpha-2 countries where it may be played.
    pub countries: Vec<String>,
}

/// One content file: a rendition of a title.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// Content id (the file's name on appliances).
    pub id: String,
    /// Title it belongs to.
    pub title: String,
    /// Picture height in lines.
    pub resolution: u32,
    /// Average bitrate, kilobits per second.
    pub bitrate_kbps: u32,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, 64 hex digits.
    pub sha256: String,
    /// Media type.
    pub content_type: String,
    /// Where the origin copy lives (`embedded` or a URL).
    pub origin: String,
}

/// A subscriber and their plan.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Subscriber {
    /// Subscriber id.
    pub id: String,
    /// Whether the account may play.
    pub active: bool,
    /// Tallest picture the plan allows, in lines.
    pub max_resolution: u32,
    /// Streams the plan allows at once.
    pub max_streams: u32,
}

impl Db {
    /// Adds a title (its countries replace any recorded before).
    pub fn create_title(&self, t: &Title) -> Result<(), DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT INTO titles (id, name) VALUES (?1, ?2)",
            params![t.id, t.name],
        )
        .map_err(|e| crate::db::conflict(e, format!("title {}", t.id)))?;
        for c in &t.countries {
            tx.execute(
                "INSERT OR IGNORE INTO title_countries (title, country) VALUES (?1, ?2)",
                params![t.id, c],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Removes a title, its licences and its content files; returns the content ids removed.
    pub fn delete_title(&self, id: &str) -> Result<Vec<String>, DbError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if tx
            .query_row("SELECT 1 FROM titles WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_none()
        {
            return Err(DbError::Missing(format!("title {id}")));
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

    /// All titles, by id.
    pub fn titles(&self) -> Result<Vec<Title>, DbError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT t.id, t.name, COALESCE(group_concat(c.country, ','), '')
             FROM titles t LEFT JOIN title_countries c ON c.title = t.id GROUP BY t.id ORDER BY t.id",
        )?;
        let rows = stmt.query_map([], |r| {
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
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a content file to the catalog.
    pub fn create_content(&self, c: &Content) -> Result<(), DbError> {
        let conn = self.conn();
        if conn
            .query_row("SELECT 1 FROM titles WHERE id = ?1", [&c.title], |_| Ok(()))
            .optional()?
            .is_none()
        {
            return Err(DbError::Missing(format!("title {}", c.title)));
        }
        conn.execute(
            "INSERT INTO content (id, title, resolution, bitrate_kbps, size, sha256, content_type, origin)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![c.id, c.title, c.resolution, c.bitrate_kbps, c.size as i64, c.sha256, c.content_type, c.origin],
        )
        .map_err(|e| crate::db::conflict(e, format!("content {}", c.id)))?;
        Ok(())
    }

    /// Renditions of a title (all of them when `title` is none), highest resolution first.
    pub fn content(&self, title: Option<&str>) -> Result<Vec<Content>, DbError> {
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

    /// Adds or replaces a subscriber.
    pub fn put_subscriber(&self, s: &Subscriber) -> Result<(), DbError> {
        self.conn().execute(
            "INSERT INTO subscribers (id, active, max_resolution, max_streams) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET active = excluded.active, max_resolution = excluded.max_resolution,
               max_streams = excluded.max_streams",
            params![s.id, s.active, s.max_resolution, s.max_streams],
        )?;
        Ok(())
    }

    /// All subscribers, by id.
    pub fn subscribers(&self) -> Result<Vec<Subscriber>, DbError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT id, active, max_resolution, max_streams FROM subscribers ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Subscriber {
                id: r.get(0)?,
                active: r.get(1)?,
                max_resolution: r.get(2)?,
                max_streams: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The catalog and the subscribers in memory, so a play request reads no database: loaded at
/// start, then written through by the admin API after each committed change.
#[derive(Default)]
pub struct CatalogView {
    /// Licensed countries by title id.
    titles: HashMap<String, Vec<String>>,
    /// Renditions by title id, highest resolution first.
    renditions: HashMap<String, Vec<Content>>,
    /// Subscribers by id.
    subscribers: HashMap<String, Subscriber>,
    /// Content by id.
    by_id: HashMap<String, Content>,
}

impl CatalogView {
    /// Reads titles, content and subscribers.
    pub fn load(db: &Db) -> Result<CatalogView, DbError> {
        let mut view = CatalogView::default();
        for t in db.titles()? {
            view.add_title(t);
        }
        for c in db.content(None)? {
            view.add_content(c);
        }
        for s in db.subscribers()? {
            view.put_subscriber(s);
        }
        Ok(view)
    }

    /// Records a committed title.
    pub fn add_title(&mut self, t: Title) {
        self.titles.insert(t.id, t.countries);
    }

    /// Records a committed content file.
    pub fn add_content(&mut self, c: Content) {
        self.by_id.insert(c.id.clone(), c.clone());
        let list = self.renditions.entry(c.title.clone()).or_default();
        list.push(c);
        list.sort_by(|x, y| {
            y.resolution
                .cmp(&x.resolution)
                .then(y.bitrate_kbps.cmp(&x.bitrate_kbps))
                .then(x.id.cmp(&y.id))
        });
    }

    /// Records a committed subscriber.
    pub fn put_subscriber(&mut self, s: Subscriber) {
        self.subscribers.insert(s.id.clone(), s);
    }

    /// One subscriber.
    pub fn subscriber(&self, id: &str) -> Option<&Subscriber> {
        self.subscribers.get(id)
    }

    /// Whether the title exists.
    pub fn title_exists(&self, title: &str) -> bool {
        self.titles.contains_key(title)
    }

    /// Whether `title` may be played in `country`.
    pub fn licensed(&self, title: &str, country: &str) -> bool {
        self.titles
            .get(title)
            .is_some_and(|cs| cs.iter().any(|c| c == country))
    }

    /// Forgets a title removed from the catalog, with its renditions.
    pub fn remove_title(&mut self, title: &str) {
        self.titles.remove(title);
        for c in self.renditions.remove(title).unwrap_or_default() {
            self.by_id.remove(&c.id);
        }
    }

    /// One content file.
    pub fn content(&self, id: &str) -> Option<&Content> {
        self.by_id.get(id)
    }

    /// Every content file.
    pub fn all_content(&self) -> impl Iterator<Item = &Content> {
        self.by_id.values()
    }

    /// The title's renditions, highest resolution first.
    pub fn renditions(&self, title: &str) -> &[Content] {
        self.renditions.get(title).map_or(&[], Vec::as_slice)
    }
}
