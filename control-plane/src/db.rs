//! State in SQLite: versioned schema migrations applied at start, WAL journal, every statement
//! parameterised.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// Schema migrations, in order; the database records how many it has applied. Append only.
const MIGRATIONS: &[&str] = &[
    // 1: sites and appliances.
    "CREATE TABLE sites (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('isp', 'ixp')),
        region TEXT NOT NULL,
        parent TEXT REFERENCES sites(id)
    );
    CREATE TABLE appliances (
        id TEXT PRIMARY KEY,
        site TEXT NOT NULL REFERENCES sites(id),
        url TEXT NOT NULL,
        capacity_bps INTEGER NOT NULL,
        credential_sha256 BLOB NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE INDEX appliances_by_site ON appliances(site);",
    // 2: URL-signing keys, appliance health, reported prefixes and inventories.
    "CREATE TABLE url_keys (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        secret BLOB NOT NULL,
        created INTEGER NOT NULL
    );
    CREATE TABLE appliance_health (
        oca_id TEXT PRIMARY KEY REFERENCES appliances(id),
        status TEXT NOT NULL,
        last_report INTEGER NOT NULL,
        version TEXT NOT NULL,
        active_connections INTEGER NOT NULL,
        bytes_per_sec INTEGER NOT NULL,
        capacity_bps INTEGER NOT NULL,
        inventory_seq INTEGER NOT NULL,
        disks_json TEXT NOT NULL
    );
    CREATE TABLE appliance_prefixes (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        prefix TEXT NOT NULL,
        PRIMARY KEY (oca_id, prefix)
    ) WITHOUT ROWID;
    CREATE TABLE inventory (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        content_id TEXT NOT NULL,
        PRIMARY KEY (oca_id, content_id)
    ) WITHOUT ROWID;",
    // 3: coverage zones: prefixes an admin maps to a site and/or a country.
    "CREATE TABLE coverage_zones (
        prefix TEXT PRIMARY KEY,
        site TEXT REFERENCES sites(id),
        country TEXT
    );",
    // 4: catalog, subscribers and their streams.
    "CREATE TABLE titles (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL
    );
    CREATE TABLE title_countries (
        title TEXT NOT NULL REFERENCES titles(id),
        country TEXT NOT NULL,
        PRIMARY KEY (title, country)
    ) WITHOUT ROWID;
    CREATE TABLE content (
        id TEXT PRIMARY KEY,
        title TEXT NOT NULL REFERENCES titles(id),
        resolution INTEGER NOT NULL,
        bitrate_kbps INTEGER NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        content_type TEXT NOT NULL,
        origin TEXT NOT NULL
    );
    CREATE INDEX content_by_title ON content(title);
    CREATE TABLE subscribers (
        id TEXT PRIMARY KEY,
        active INTEGER NOT NULL,
        max_resolution INTEGER NOT NULL,
        max_streams INTEGER NOT NULL
    );
    CREATE TABLE streams (
        subscriber TEXT NOT NULL REFERENCES subscribers(id),
        title TEXT NOT NULL,
        expires INTEGER NOT NULL,
        PRIMARY KEY (subscriber, title)
    ) WITHOUT ROWID;",
    // 5: inventories by generation, so a large full inventory is written in short transactions
    // beside the one in force and switched in at once; generations being written or replaced
    // (removed after a crash); expired stream leases found by expiry.
    "ALTER TABLE appliances ADD COLUMN inventory_gen INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE inventory_v5 (
        oca_id TEXT NOT NULL REFERENCES appliances(id),
        gen INTEGER NOT NULL,
        content_id TEXT NOT NULL,
        PRIMARY KEY (oca_id, gen, content_id)
    ) WITHOUT ROWID;
    INSERT INTO inventory_v5 (oca_id, gen, content_id) SELECT oca_id, 0, content_id FROM inventory;
    DROP TABLE inventory;
    ALTER TABLE inventory_v5 RENAME TO inventory;
    CREATE TABLE inventory_unused (
        gen INTEGER PRIMARY KEY,
        oca_id TEXT NOT NULL
    );
    CREATE INDEX streams_by_expiry ON streams(expires);",
    // 6: title popularity (decayed play counts) for the fill planner.
    "CREATE TABLE popularity (
        title TEXT PRIMARY KEY,
        score REAL NOT NULL,
        updated INTEGER NOT NULL
    );",
    // 7: per-site allowed prefixes (JSON list; a report outside them is dropped) and URL keys
    // (a key belongs to one site; the global keys of before are no longer handed out); the
    // secret that signs player tokens.
    "ALTER TABLE sites ADD COLUMN allowed_prefixes TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE url_keys ADD COLUMN site TEXT REFERENCES sites(id);
    CREATE INDEX url_keys_by_site ON url_keys(site, seq);
    CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        value BLOB NOT NULL
    );",
];

fn prefixes_json(p: &[oca_protocol::prefix::Prefix]) -> String {
    serde_json::to_string(p).expect("prefixes serialise")
}

/// Read-only connections kept open next to the writer.
const READERS: usize = 4;

/// Errors from the state store.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A row with this key exists.
    #[error("{0} already exists")]
    Exists(String),
    /// A referenced row does not exist.
    #[error("{0} does not exist")]
    Missing(String),
    /// SQLite failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
}

/// A site: an ISP's rack or an internet exchange.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Site id.
    pub id: String,
    /// `isp` or `ixp`.
    pub kind: SiteKind,
    /// Region name.
    pub region: String,
    /// The tier site this one fills from, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// Routes this site's appliances may report (set by an admin); a reported prefix not
    /// inside one of these is dropped. None set: every reported prefix is dropped.
    #[serde(default)]
    pub allowed_prefixes: Vec<oca_protocol::prefix::Prefix>,
}

/// Kind of site.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SiteKind {
    /// Inside an ISP's network.
    Isp,
    /// At an internet exchange.
    Ixp,
}

impl SiteKind {
    fn as_str(self) -> &'static str {
        match self {
            SiteKind::Isp => "isp",
            SiteKind::Ixp => "ixp",
        }
    }
}

/// An appliance as the admin API shows it (never its credential).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Appliance {
    /// Appliance id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Public base URL players fetch from.
    pub url: String,
    /// What it can send, bits per second.
    pub capacity_bps: u64,
}

/// A coverage zone: a prefix an admin maps to a site (steering) and/or a country (licensing).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Zone {
    /// The prefix.
    pub prefix: oca_protocol::prefix::Prefix,
    /// Site that serves clients in it.
    #[serde(default)]
    pub site: Option<String>,
    /// ISO 3166-1 alpha-2 country of clients in it.
    #[serde(default)]
    pub country: Option<String>,
}

/// An appliance with its health, as the admin API lists it.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct ApplianceState {
    /// The appliance.
    #[serde(flatten)]
    pub appliance: Appliance,
    /// `ok`, `warning`, `error`, or `unknown` (never reported, or silent for 3 intervals).
    pub status: String,
    /// Unix seconds of its last report.
    pub last_report: Option<i64>,
}

/// The control plane's database.
pub struct Db {
    /// The writer. Fair: a writer looping over chunks (a large inventory) goes back in line
    /// after each one instead of taking the lock again ahead of those waiting. A panic while
    /// holding it leaves SQLite consistent (transactions roll back), so it has no poisoning.
    conn: parking_lot::FairMutex<Connection>,
    /// Read-only connections: in WAL mode readers never wait for the writer, so a large write
    /// (a million-entry inventory) does not stall lookups.
    readers: Vec<Mutex<Connection>>,
    next_reader: std::sync::atomic::AtomicUsize,
    /// The last inventory generation handed out (generations are unique across appliances).
    last_gen: std::sync::atomic::AtomicI64,
    /// How long the control plane was away before this start.
    downtime: Downtime,
}

/// The control plane's own downtime before this start. Appliances report to it; while it was
/// away nobody listened, so that silence says nothing about them and is not counted when
/// judging whether a report is fresh: an appliance fresh when the control plane stopped stays
/// fresh for the rest of its 3 intervals after the restart, instead of every appliance looking
/// silent (and every play being refused) until the first reports arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downtime {
    /// When this process opened the database (Unix seconds).
    pub started: i64,
    /// Seconds from the newest report on record (about when the control plane stopped) to then.
    pub secs: i64,
}

impl Downtime {
    /// A report's time with the downtime not counted.
    pub fn heard(&self, last_report: i64) -> i64 {
        if last_report < self.started {
            last_report + self.secs
        } else {
            last_report
        }
    }
}

impl Db {
    /// Opens (or creates) the database and brings its schema up to date.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        let mut conn = Connection::open(path)?;
        // WAL: readers never wait for the writer; synchronous=FULL: an acknowledged write survives
        // a crash of the process or of the machine.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn)?;
        let last_gen: i64 = conn.query_row(
            "SELECT MAX(COALESCE((SELECT MAX(inventory_gen) FROM appliances), 0),
                        COALESCE((SELECT MAX(gen) FROM inventory_unused), 0))",
            [],
            |r| r.get(0),
        )?;
        let newest: Option<i64> =
            conn.query_row("SELECT MAX(last_report) FROM appliance_health", [], |r| {
                r.get(0)
            })?;
        let started = crate::api::unix_now();
        let downtime = Downtime {
            started,
            secs: newest.map_or(0, |n| (started - n).max(0)),
        };
        let readers = (0..READERS)
            .map(|_| {
                let r = Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                r.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(Mutex::new(r))
            })
            .collect::<rusqlite::Result<_>>()?;
        Ok(Db {
            conn: parking_lot::FairMutex::new(conn),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            last_gen: std::sync::atomic::AtomicI64::new(last_gen),
            downtime,
        })
    }

    /// A fresh inventory generation.
    pub(crate) fn new_inventory_gen(&self) -> i64 {
        self.last_gen
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// A read-only connection: a free one if any, else the next in turn.
    pub(crate) fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(guard) = r.try_lock() {
                return guard;
            }
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writing connection, for the modules that own their tables' SQL.
    pub(crate) fn conn(&self) -> parking_lot::FairMutexGuard<'_, Connection> {
        self.conn.lock()
    }

    /// How long the control plane was away before this start.
    pub fn downtime(&self) -> Downtime {
        self.downtime
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> rusqlite::Result<i64> {
        self.reader()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    /// Adds a site.
    pub fn create_site(&self, s: &Site) -> Result<(), DbError> {
        let conn = self.conn();
        if let Some(parent) = &s.parent {
            if !exists(&conn, "SELECT 1 FROM sites WHERE id = ?1", parent)? {
                return Err(DbError::Missing(format!("parent site {parent}")));
            }
        }
        conn.execute(
            "INSERT INTO sites (id, kind, region, parent, allowed_prefixes) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.id, s.kind.as_str(), s.region, s.parent, prefixes_json(&s.allowed_prefixes)],
        )
        .map_err(|e| conflict(e, format!("site {}", s.id)))?;
        Ok(())
    }

    /// All sites, by id.
    pub fn sites(&self) -> Result<Vec<Site>, DbError> {
        let conn = self.reader();
        let mut stmt = conn
            .prepare("SELECT id, kind, region, parent, allowed_prefixes FROM sites ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            let kind: String = r.get(1)?;
            let allowed: String = r.get(4)?;
            Ok(Site {
                id: r.get(0)?,
                kind: if kind == "ixp" {
                    SiteKind::Ixp
                } else {
                    SiteKind::Isp
                },
                region: r.get(2)?,
                parent: r.get(3)?,
                allowed_prefixes: serde_json::from_str(&allowed).unwrap_or_default(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Replaces the prefixes site `id` may report.
    pub fn set_allowed_prefixes(
        &self,
        id: &str,
        prefixes: &[oca_protocol::prefix::Prefix],
    ) -> Result<(), DbError> {
        let n = self.conn().execute(
            "UPDATE sites SET allowed_prefixes = ?2 WHERE id = ?1",
            params![id, prefixes_json(prefixes)],
        )?;
        if n == 0 {
            return Err(DbError::Missing(format!("site {id}")));
        }
        Ok(())
    }

    /// A named secret (created by `make` and stored on first use), the same for every replica
    /// on this database.
    pub fn secret(&self, name: &str, make: impl FnOnce() -> Vec<u8>) -> Result<Vec<u8>, DbError> {
        let conn = self.conn();
        let held: Option<Vec<u8>> = conn
            .query_row("SELECT value FROM secrets WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(v) = held {
            return Ok(v);
        }
        let v = make();
        conn.execute(
            "INSERT INTO secrets (name, value) VALUES (?1, ?2)",
            params![name, v],
        )?;
        Ok(v)
    }

    /// Registers an appliance with the hash of its credential.
    pub fn create_appliance(
        &self,
        a: &Appliance,
        credential_sha256: &[u8; 32],
        now: i64,
    ) -> Result<(), DbError> {
        let conn = self.conn();
        if !exists(&conn, "SELECT 1 FROM sites WHERE id = ?1", &a.site)? {
            return Err(DbError::Missing(format!("site {}", a.site)));
        }
        conn.execute(
            "INSERT INTO appliances (id, site, url, capacity_bps, credential_sha256, created)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                a.id,
                a.site,
                a.url,
                a.capacity_bps as i64,
                &credential_sha256[..],
                now
            ],
        )
        .map_err(|e| conflict(e, format!("appliance {}", a.id)))?;
        Ok(())
    }

    /// Adds or replaces a coverage zone.
    pub fn put_zone(&self, z: &Zone) -> Result<(), DbError> {
        let conn = self.conn();
        if let Some(site) = &z.site {
            if !exists(&conn, "SELECT 1 FROM sites WHERE id = ?1", site)? {
                return Err(DbError::Missing(format!("site {site}")));
            }
        }
        conn.execute(
            "INSERT INTO coverage_zones (prefix, site, country) VALUES (?1, ?2, ?3)
             ON CONFLICT(prefix) DO UPDATE SET site = excluded.site, country = excluded.country",
            params![z.prefix.to_string(), z.site, z.country],
        )?;
        Ok(())
    }

    /// All coverage zones, by prefix text.
    pub fn zones(&self) -> Result<Vec<Zone>, DbError> {
        let conn = self.reader();
        let mut stmt =
            conn.prepare("SELECT prefix, site, country FROM coverage_zones ORDER BY prefix")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (p, site, country) = row?;
            if let Ok(prefix) = p.parse() {
                out.push(Zone {
                    prefix,
                    site,
                    country,
                });
            }
        }
        Ok(out)
    }

    /// All appliances with their health as of `now`: `unknown` when never heard from or silent
    /// for more than `stale_after` seconds (3 report intervals).
    pub fn appliance_states(
        &self,
        now: i64,
        stale_after: i64,
    ) -> Result<Vec<ApplianceState>, DbError> {
        let conn = self.reader();
        let mut stmt = conn.prepare(
            "SELECT a.id, a.site, a.url, a.capacity_bps, h.status, h.last_report
             FROM appliances a LEFT JOIN appliance_health h ON h.oca_id = a.id ORDER BY a.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let status: Option<String> = r.get(4)?;
            let last_report: Option<i64> = r.get(5)?;
            let fresh = last_report.is_some_and(|t| now - self.downtime.heard(t) <= stale_after);
            Ok(ApplianceState {
                appliance: Appliance {
                    id: r.get(0)?,
                    site: r.get(1)?,
                    url: r.get(2)?,
                    capacity_bps: r.get::<_, i64>(3)? as u64,
                },
                status: if fresh {
                    status.unwrap_or_else(|| "unknown".into())
                } else {
                    "unknown".into()
                },
                last_report,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn exists(conn: &Connection, sql: &str, key: &str) -> rusqlite::Result<bool> {
    Ok(conn.query_row(sql, [key], |_| Ok(())).optional()?.is_some())
}

pub(crate) fn conflict(e: rusqlite::Error, what: String) -> DbError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            DbError::Exists(what)
        }
        other => DbError::Sqlite(other),
    }
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current as usize > MIGRATIONS.len() {
        anyhow::bail!(
            "database schema version {current} is newer than this control plane knows ({}); refusing to run",
            MIGRATIONS.len()
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_4_database_keeps_its_inventories_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        {
            let c = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..4] {
                c.execute_batch(sql).unwrap();
            }
            c.execute_batch(
                "PRAGMA user_version = 4;
                 INSERT INTO sites (id, kind, region) VALUES ('s', 'isp', 'eu');
                 INSERT INTO appliances (id, site, url, capacity_bps, credential_sha256, created)
                   VALUES ('a', 's', 'http://a', 1, x'00', 0);
                 INSERT INTO inventory (oca_id, content_id) VALUES ('a', 'c1'), ('a', 'c2');
                 INSERT INTO subscribers (id, active, max_resolution, max_streams) VALUES ('u', 1, 1080, 1);
                 INSERT INTO streams (subscriber, title, expires) VALUES ('u', 't', 99);",
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(crate::intake::inventory(&db, "a").unwrap(), ["c1", "c2"]);
        let leases: i64 = db
            .reader()
            .query_row("SELECT COUNT(*) FROM streams", [], |r| r.get(0))
            .unwrap();
        assert_eq!(leases, 1);
    }

    #[test]
    fn migrates_once_and_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        {
            let db = Db::open(&path).unwrap();
            assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
            let ixp = Site {
                id: "ixp-1".into(),
                kind: SiteKind::Ixp,
                region: "eu".into(),
                parent: None,
                allowed_prefixes: Vec::new(),
            };
            db.create_site(&ixp).unwrap();
            let isp = Site {
                id: "isp-1".into(),
                kind: SiteKind::Isp,
                region: "eu".into(),
                parent: Some("ixp-1".into()),
                allowed_prefixes: Vec::new(),
            };
            db.create_site(&isp).unwrap();
            assert!(matches!(db.create_site(&isp), Err(DbError::Exists(_))));
            let orphan = Site {
                parent: Some("nope".into()),
                id: "x".into(),
                ..isp.clone()
            };
            assert!(matches!(db.create_site(&orphan), Err(DbError::Missing(_))));
        }
        let db = Db::open(&path).unwrap();
        assert_eq!(db.sites().unwrap().len(), 2, "state survives reopening");
        // Injection-shaped ids are data, not SQL.
        let evil = Site {
            id: "x'); DROP TABLE sites; --".into(),
            kind: SiteKind::Isp,
            region: "r".into(),
            parent: None,
            allowed_prefixes: Vec::new(),
        };
        db.create_site(&evil).unwrap();
        assert_eq!(db.sites().unwrap().len(), 3);
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 999)
            .unwrap();
        let e = Db::open(&path).err().unwrap().to_string();
        assert!(e.contains("999"), "{e}");
    }
}
