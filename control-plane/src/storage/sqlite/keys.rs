//! URL-signing keys and named secrets in SQLite.

use rusqlite::{params, OptionalExtension};

use crate::storage::sqlite::SqliteStorage;
use crate::storage::{KeyStore, Result, StoredKey};

impl KeyStore for SqliteStorage {
    fn keyless(&self) -> Result<Vec<Option<String>>> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM url_keys WHERE site IS NULL)
             UNION ALL
             SELECT s.id FROM sites s WHERE NOT EXISTS (SELECT 1 FROM url_keys k WHERE k.site = s.id)",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn add_url_key(&self, site: Option<&str>, secret: &[u8], now: i64) -> Result<String> {
        let conn = self.conn();
        let next: i64 =
            conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM url_keys", [], |r| {
                r.get(0)
            })?;
        // Ids are global (a URL's `k`), so an appliance can never take one site's key for another's.
        let id = format!("k{next}");
        conn.execute(
            "INSERT INTO url_keys (seq, id, secret, created, site) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![next, id, secret, now, site],
        )?;
        Ok(id)
    }

    fn url_keys(&self) -> Result<Vec<StoredKey>> {
        let conn = self.reader();
        let mut stmt = conn.prepare("SELECT site, id, secret FROM url_keys ORDER BY seq DESC")?;
        let rows = stmt.query_map([], |r| {
            Ok(StoredKey {
                site: r.get(0)?,
                id: r.get(1)?,
                secret: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn secret(&self, name: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Result<Vec<u8>> {
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
}
