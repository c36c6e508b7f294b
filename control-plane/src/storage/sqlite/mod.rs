//! The SQLite engine: one writer connection and a few read-only ones over a WAL database,
//! versioned migrations (`migrations`), every statement parameterised. Each area of
//! [`Storage`] is implemented in its own file, beside the SQL of its tables.

mod accounts;
mod bgp;
mod catalog;
mod fleet;
mod history;
mod inventory;
mod issues;
mod keys;
mod leases;
mod maintenance;
mod migrations;
mod scoped;
mod scoped_issues;

use std::path::Path;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};

use crate::storage::{Downtime, HistorySettings, Result, Storage, StorageError};

/// Read-only connections kept open next to the writer.
const READERS: usize = 4;

impl From<rusqlite::Error> for StorageError {
    fn from(e: rusqlite::Error) -> StorageError {
        StorageError::Engine(Box::new(e))
    }
}

/// The control plane's state in one SQLite file.
pub struct SqliteStorage {
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
    /// How reports are bucketed into the traffic history.
    history: HistorySettings,
}

impl SqliteStorage {
    /// Opens (or creates) the database at `now` and brings its schema up to date.
    pub fn open(path: &Path, now: i64) -> anyhow::Result<SqliteStorage> {
        let mut conn = Connection::open(path)?;
        // WAL: readers never wait for the writer; synchronous=FULL: an acknowledged write survives
        // a crash of the process or of the machine.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::migrate(&mut conn)?;
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
        let downtime = Downtime {
            started: now,
            secs: newest.map_or(0, |n| (now - n).max(0)),
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
        Ok(SqliteStorage {
            conn: parking_lot::FairMutex::new(conn),
            readers,
            next_reader: std::sync::atomic::AtomicUsize::new(0),
            last_gen: std::sync::atomic::AtomicI64::new(last_gen),
            downtime,
            history: HistorySettings::default(),
        })
    }

    /// A fresh inventory generation.
    fn new_inventory_gen(&self) -> i64 {
        self.last_gen
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// A read-only connection: a free one if any, else the next in turn.
    fn reader(&self) -> parking_lot::MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Some(guard) = r.try_lock() {
                return guard;
            }
        }
        let i = self
            .next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.readers.len();
        self.readers[i].lock()
    }

    /// The writing connection.
    fn conn(&self) -> parking_lot::FairMutexGuard<'_, Connection> {
        self.conn.lock()
    }
}

impl Storage for SqliteStorage {
    fn schema_version(&self) -> Result<i64> {
        Ok(self
            .reader()
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn downtime(&self) -> Downtime {
        self.downtime
    }

    /// Takes the database's write lock and lets it go: through our own writer (so a writer
    /// wedged in this process shows) and SQLite's lock (so another process holding the file,
    /// or a file that cannot be locked, shows); nothing is written, nothing is synced.
    fn ping(&self) -> Result<()> {
        let conn = self.conn();
        let tried = conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK");
        if !conn.is_autocommit() {
            // The ROLLBACK failed: the writer must not stay inside our transaction.
            let _ = conn.execute_batch("ROLLBACK");
        }
        Ok(tried?)
    }
}

/// Whether `sql` (selecting by one key) finds a row.
fn exists(conn: &Connection, sql: &str, key: &str) -> rusqlite::Result<bool> {
    Ok(conn.query_row(sql, [key], |_| Ok(())).optional()?.is_some())
}

/// A constraint violation as "`what` already exists"; any other failure as itself.
fn conflict(e: rusqlite::Error, what: String) -> StorageError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StorageError::Exists(what)
        }
        other => other.into(),
    }
}

/// The storage tests' common start: a database in a temporary folder with site `s` (an ISP
/// site in region `eu`, no allowed prefixes) and in it the appliances `ids` (URL `http://<id>`,
/// 1,000 b/s, registered at 1,000).
#[cfg(test)]
pub(crate) fn test_db(ids: &[&str]) -> (tempfile::TempDir, SqliteStorage) {
    use crate::storage::{Appliance, FleetStore, Site, SiteKind};
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
    db.create_site(&Site {
        id: "s".into(),
        kind: SiteKind::Isp,
        region: "eu".into(),
        parent: None,
        allowed_prefixes: Vec::new(),
        org: None,
    })
    .unwrap();
    for id in ids {
        let a = Appliance {
            id: (*id).into(),
            site: "s".into(),
            url: format!("http://{id}"),
            capacity_bps: 1_000,
        };
        db.create_appliance(&a, &[0; 32], 1_000).unwrap();
    }
    (dir, db)
}

/// The scoped storage tests' common start: sites s1 (organisation o1: appliances a1, a2) and
/// s2 (organisation o2: b1).
#[cfg(test)]
pub(crate) fn test_two_orgs() -> (tempfile::TempDir, SqliteStorage) {
    use crate::storage::{AccountStore, Appliance, FleetStore, Site, SiteKind};
    use oca_protocol::accounts::Organisation;
    let dir = tempfile::tempdir().unwrap();
    let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
    for (site, org) in [("s1", "o1"), ("s2", "o2")] {
        db.create_org(&Organisation {
            id: org.into(),
            name: org.into(),
        })
        .unwrap();
        db.create_site(&Site {
            id: site.into(),
            kind: SiteKind::Isp,
            region: "eu".into(),
            parent: None,
            allowed_prefixes: Vec::new(),
            org: Some(org.into()),
        })
        .unwrap();
    }
    for (id, site) in [("a1", "s1"), ("a2", "s1"), ("b1", "s2")] {
        let a = Appliance {
            id: id.into(),
            site: site.into(),
            url: "http://x".into(),
            capacity_bps: 1,
        };
        db.create_appliance(&a, &[0; 32], 1_000).unwrap();
    }
    (dir, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::migrations::MIGRATIONS;
    use crate::storage::{FleetStore, InventoryStore, Site, SiteKind};

    #[test]
    fn a_version_4_database_keeps_its_inventories_and_leases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        {
            let c = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..4] {
                c.execute_batch(m.sqlite).unwrap();
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
        let db = SqliteStorage::open(&path, 1_000).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(db.inventory("a").unwrap(), ["c1", "c2"]);
        let leases: i64 = db
            .reader()
            .query_row("SELECT COUNT(*) FROM streams", [], |r| r.get(0))
            .unwrap();
        assert_eq!(leases, 1);
    }

    #[test]
    fn one_title_reads_as_the_list_gives_it() {
        use crate::storage::CatalogStore;
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStorage::open(&dir.path().join("cp.db"), 1_000).unwrap();
        let t = crate::storage::Title {
            id: "t1".into(),
            name: "One".into(),
            countries: vec!["NL".into(), "BE".into()],
        };
        db.create_title(&t).unwrap();
        let listed = db.titles().unwrap();
        assert_eq!(listed[0].countries, ["BE", "NL"]);
        assert_eq!(db.title("t1").unwrap().as_ref(), Some(&listed[0]));
        assert_eq!(db.title("t2").unwrap(), None);
    }

    #[test]
    fn migrates_once_and_keeps_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.db");
        {
            let db = SqliteStorage::open(&path, 1_000).unwrap();
            assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as i64);
            let ixp = Site {
                id: "ixp-1".into(),
                kind: SiteKind::Ixp,
                region: "eu".into(),
                parent: None,
                allowed_prefixes: Vec::new(),
                org: None,
            };
            db.create_site(&ixp).unwrap();
            let isp = Site {
                id: "isp-1".into(),
                kind: SiteKind::Isp,
                region: "eu".into(),
                parent: Some("ixp-1".into()),
                allowed_prefixes: Vec::new(),
                org: None,
            };
            db.create_site(&isp).unwrap();
            assert!(matches!(db.create_site(&isp), Err(StorageError::Exists(_))));
            let orphan = Site {
                parent: Some("nope".into()),
                id: "x".into(),
                ..isp.clone()
            };
            assert!(matches!(
                db.create_site(&orphan),
                Err(StorageError::Missing(_))
            ));
        }
        let db = SqliteStorage::open(&path, 1_000).unwrap();
        assert_eq!(db.sites().unwrap().len(), 2, "state survives reopening");
        // Injection-shaped ids are data, not SQL.
        let evil = Site {
            id: "x'); DROP TABLE sites; --".into(),
            kind: SiteKind::Isp,
            region: "r".into(),
            parent: None,
            allowed_prefixes: Vec::new(),
            org: None,
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
        let e = SqliteStorage::open(&path, 1_000).err().unwrap().to_string();
        assert!(e.contains("999"), "{e}");
    }
}
