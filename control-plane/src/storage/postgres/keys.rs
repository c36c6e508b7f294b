//! URL-signing keys and named secrets in PostgreSQL.

use crate::storage::postgres::PgStorage;
use crate::storage::{KeyStore, Result, StoredKey};

impl KeyStore for PgStorage {
    fn keyless(&self) -> Result<Vec<Option<String>>> {
        self.call(|c| {
            Ok(c.query(
                "SELECT NULL::text WHERE NOT EXISTS (SELECT 1 FROM url_keys WHERE site IS NULL)
                 UNION ALL
                 SELECT s.id FROM sites s
                 WHERE NOT EXISTS (SELECT 1 FROM url_keys k WHERE k.site = s.id)",
                &[],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect())
        })
    }

    fn add_url_key(&self, site: Option<&str>, secret: &[u8], now: i64) -> Result<String> {
        let (site, secret) = (site.map(String::from), secret.to_vec());
        self.call(move |c| {
            // Ids are global (a URL's `k`) and drawn from the sequence, so two replicas adding
            // keys at once never choose the same one.
            let row = c.query_one(
                "INSERT INTO url_keys (seq, id, secret, created, site)
                 SELECT n, 'k' || n, $1, $2, $3 FROM (SELECT nextval('url_keys_seq') AS n) s
                 RETURNING id",
                &[&secret, &now, &site],
            )?;
            Ok(row.get(0))
        })
    }

    fn url_keys(&self) -> Result<Vec<StoredKey>> {
        self.call(|c| {
            Ok(c.query(
                "SELECT site, id, secret FROM url_keys ORDER BY seq DESC",
                &[],
            )?
            .iter()
            .map(|r| StoredKey {
                site: r.get(0),
                id: r.get(1),
                secret: r.get(2),
            })
            .collect())
        })
    }

    fn secret(&self, name: &str, make: &mut dyn FnMut() -> Vec<u8>) -> Result<Vec<u8>> {
        let name = name.to_string();
        let lookup = name.clone();
        let held: Option<Vec<u8>> = self.call(move |c| {
            Ok(
                c.query_opt("SELECT value FROM secrets WHERE name = $1", &[&lookup])?
                    .map(|r| r.get(0)),
            )
        })?;
        if let Some(v) = held {
            return Ok(v);
        }
        let v = make();
        // Two replicas making it at once: the first one stored wins, and both return it.
        self.call(move |c| {
            c.execute(
                "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&name, &v],
            )?;
            Ok(
                c.query_one("SELECT value FROM secrets WHERE name = $1", &[&name])?
                    .get(0),
            )
        })
    }
}
