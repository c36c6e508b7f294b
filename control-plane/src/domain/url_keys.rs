//! The URL-signing keys the control plane owns. Each site has its own keyring, handed only to
//! that site's appliances with each health reply; play and fill URLs are signed with the key of
//! the site whose appliance serves them, so one site's appliance (or a stolen credential of
//! one) cannot mint or verify URLs for another's. The embedded origin has a keyring of its own
//! (the keys with no site), which no appliance ever receives. Appliances accept the current and
//! the previous key, so a rotation never breaks URLs signed a moment before it.

use std::collections::HashMap;

use oca_protocol::keys::{Key, Keyring, SECRET_LEN};

use crate::storage::{Storage, StorageError};

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
    pub fn site(&self, site: &str) -> Result<&Keyring, StorageError> {
        self.sites
            .get(site)
            .ok_or_else(|| StorageError::Missing(format!("URL-signing keys of site {site}")))
    }
}

/// Creates the first key of the origin and of every site that has none.
pub fn ensure(store: &dyn Storage, now: i64) -> Result<(), StorageError> {
    for site in store.keyless()? {
        rotate(store, site.as_deref(), now)?;
    }
    Ok(())
}

/// Adds a new current key to every keyring; returns the new ids.
pub fn rotate_all(store: &dyn Storage, now: i64) -> Result<Vec<String>, StorageError> {
    let sites = store.sites()?;
    let mut ids = vec![rotate(store, None, now)?];
    for s in &sites {
        ids.push(rotate(store, Some(&s.id), now)?);
    }
    Ok(ids)
}

/// Adds a new current key to the keyring of `site` (None: the origin's); returns its id.
pub fn rotate(store: &dyn Storage, site: Option<&str>, now: i64) -> Result<String, StorageError> {
    let mut secret = [0u8; SECRET_LEN];
    getrandom::fill(&mut secret).expect("the kernel's random source is available");
    store.add_url_key(site, &secret, now)
}

/// Every keyring, current key first in each.
pub fn load(store: &dyn Storage) -> Result<Keys, StorageError> {
    let mut by_site: HashMap<Option<String>, Vec<Key>> = HashMap::new();
    for k in store.url_keys()? {
        let ring = by_site.entry(k.site).or_default();
        if ring.len() < 2 {
            if let Some(key) = k
                .secret
                .try_into()
                .ok()
                .and_then(|s| Key::new(&k.id, s).ok())
            {
                ring.push(key);
            }
        }
    }
    let ring = |keys: Vec<Key>, whose: &str| {
        Keyring::new(keys)
            .map_err(|e| StorageError::Missing(format!("URL-signing keys of {whose} ({e})")))
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
