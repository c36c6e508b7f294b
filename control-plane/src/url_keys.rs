//! The URL-signing keys the control plane owns. Each site has its own keyring, handed only to
//! that site's appliances with each health reply; play and fill URLs are signed with the key of
//! the site whose appliance serves them, so one site's appliance (or a stolen credential of
//! one) cannot mint or verify URLs for another's. The embedded origin has a keyring of its own
//! (the keys with no site), which no appliance ever receives. Appliances accept the current and
//! the previous key, so a rotation never breaks URLs signed a moment before it.

use std::collections::HashMap;

use oca_protocol::keys::{Key, Keyring, SECRET_LEN};
use rusqlite::params;

use crate::db::{Db, DbError};

/// Every keyring in force.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The embedded origin's (fill URLs to `/origin/`).
    pub origin: Keyring,
    /// Each site's, by site id.
    pub sites: HashMap<String, Keyring>,
}

impl Keys {
    /// The keyring of `site`.
    pub fn site(&self, site: &str) -> Result<&Keyring, DbError> {
        self.sites
            .get(site)
            .ok_or_else(|| DbError::Missing(format!("URL-signing keys of site {site}")))
    }
}

/// Creates the first key of the origin and of every site that has none.
pub fn ensure(db: &Db, now: i64) -> Result<(), DbError> {
    let bare: Vec<Option<String>> = {
        let conn = db.conn();
        let mut stmt = conn.prepare(
            "SELECT NULL WHERE NOT EXISTS (SELECT 1 FROM url_keys WHERE site IS NULL)
             UNION ALL
             SELECT s.id FROM sites s WHERE NOT EXISTS (SELECT 1 FROM url_keys k WHERE k.site = s.id)",
        )?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    for site in bare {
        rotate(db, site.as_deref(), now)?;
    }
    Ok(())
}

/// Adds a new current key to every keyring; returns the new ids.
pub fn rotate_all(db: &Db, now: i64) -> Result<Vec<String>, DbError> {
    let sites: Vec<String> = {
        let conn = db.reader();
        let mut stmt = conn.prepare("SELECT id FROM sites ORDER BY id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut ids = vec![rotate(db, None, now)?];
    for s in &sites {
        ids.push(rotate(db, Some(s), now)?);
    }
    Ok(ids)
}

/// Adds a new current key to the keyring of `site` (None: the origin's); returns its id.
pub fn rotate(db: &Db, site: Option<&str>, now: i64) -> Result<String, DbError> {
    let mut secret = [0u8; SECRET_LEN];
    getrandom::fill(&mut secret).expect("the kernel's random source is available");
    let conn = db.conn();
    let next: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM url_keys", [], |r| {
        r.get(0)
    })?;
    // Ids are global (a URL's `k`), so an appliance can never take one site's key for another's.
    let id = format!("k{next}");
    conn.execute(
        "INSERT INTO url_keys (seq, id, secret, created, site) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![next, id, &secret[..], now, site],
    )?;
    Ok(id)
}

/// Every keyring, current key first in each.
pub fn load(db: &Db) -> Result<Keys, DbError> {
    let conn = db.reader();
    let mut stmt = conn.prepare("SELECT site, id, secret FROM url_keys ORDER BY seq DESC")?;
    let rows = stmt.query_map([], |r| {
        let site: Option<String> = r.get(0)?;
        let id: String = r.get(1)?;
        let secret: Vec<u8> = r.get(2)?;
        Ok((site, id, secret))
    })?;
    let mut by_site: HashMap<Option<String>, Vec<Key>> = HashMap::new();
    for row in rows {
        let (site, id, secret) = row?;
        let ring = by_site.entry(site).or_default();
        if ring.len() < 2 {
            if let Some(k) = secret.try_into().ok().and_then(|s| Key::new(&id, s).ok()) {
                ring.push(k);
            }
        }
    }
    let ring = |keys: Vec<Key>, whose: &str| {
        Keyring::new(keys)
            .map_err(|e| DbError::Missing(format!("URL-signing keys of {whose} ({e})")))
    };
    let origin = ring(by_site.remove(&None).unwrap_or_default(), "the origin")?;
    let mut sites = HashMap::new();
    for (site, keys) in by_site {
        let site = site.expect("the origin's keys were taken out");
        let r = ring(keys, &format!("site {site}"))?;
        sites.insert(site, r);
    }
    Ok(Keys { origin, sites })
}
