//! The URL-signing keyring the control plane owns and hands to appliances with each health reply.
//! Appliances accept the current and the previous key, so a rotation never breaks URLs signed a
//! moment before it.

use oca_protocol::keys::{Key, Keyring, SECRET_LEN};
use rusqlite::params;

use crate::db::{Db, DbError};

/// Creates the first key when there is none.
pub fn ensure(db: &Db, now: i64) -> Result<(), DbError> {
    let count: i64 = db
        .conn()
        .query_row("SELECT COUNT(*) FROM url_keys", [], |r| r.get(0))?;
    if count == 0 {
        rotate(db, now)?;
    }
    Ok(())
}

/// Adds a new current key; returns its id.
pub fn rotate(db: &Db, now: i64) -> Result<String, DbError> {
    let mut secret = [0u8; SECRET_LEN];
    getrandom::fill(&mut secret).expect("the kernel's random source is available");
    let conn = db.conn();
    let next: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM url_keys", [], |r| {
        r.get(0)
    })?;
    let id = format!("k{next}");
    conn.execute(
        "INSERT INTO url_keys (seq, id, secret, created) VALUES (?1, ?2, ?3, ?4)",
        params![next, id, &secret[..], now],
    )?;
    Ok(id)
}

/// The current and previous keys, current first.
pub fn keyring(db: &Db) -> Result<Keyring, DbError> {
    let conn = db.reader();
    let mut stmt = conn.prepare("SELECT id, secret FROM url_keys ORDER BY seq DESC LIMIT 2")?;
    let keys = stmt
        .query_map([], |r| {
            let id: String = r.get(0)?;
            let secret: Vec<u8> = r.get(1)?;
            Ok((id, secret))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let keys = keys
        .into_iter()
        .filter_map(|(id, secret)| Key::new(&id, secret.try_into().ok()?).ok())
        .collect();
    Keyring::new(keys).map_err(|e| DbError::Missing(format!("URL-signing keys ({e})")))
}
