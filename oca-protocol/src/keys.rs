//! The URL-signing keyring: the keys file appliances keep (`--keys FILE`) and the control plane
//! hands out with each health reply.
//!
//! Format (docs/architecture.md): `{"keys":[{"id":"k2","secret":"<base64url-nopad of 32 bytes>"},...]}`,
//! current key first; the HMAC key is the decoded bytes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Length of a key secret in bytes.
pub const SECRET_LEN: usize = 32;

/// Longest key id accepted.
pub const MAX_KEY_ID_LEN: usize = 64;

/// One signing key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    id: String,
    secret: [u8; SECRET_LEN],
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Key")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Why a keyring could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyringError {
    /// Not JSON of the expected shape.
    #[error("keys file is not valid: {0}")]
    Json(String),
    /// The file holds no key.
    #[error("keys file holds no key")]
    Empty,
    /// A key id is empty, too long or uses characters outside `[A-Za-z0-9._-]`.
    #[error("key id {0:?} is not valid (1-64 characters of [A-Za-z0-9._-])")]
    BadId(String),
    /// Two keys share an id.
    #[error("key id {0:?} appears twice")]
    DuplicateId(String),
    /// A secret is not base64url (no padding) of exactly 32 bytes.
    #[error("secret of key {0:?} is not base64url of 32 bytes")]
    BadSecret(String),
}

impl Key {
    /// A key from its id and raw secret.
    pub fn new(id: &str, secret: [u8; SECRET_LEN]) -> Result<Key, KeyringError> {
        if !valid_key_id(id) {
            return Err(KeyringError::BadId(id.to_string()));
        }
        Ok(Key {
            id: id.to_string(),
            secret,
        })
    }

    /// The key id, as carried in the `k` URL parameter.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The HMAC key bytes.
    pub fn secret(&self) -> &[u8; SECRET_LEN] {
        &self.secret
    }
}

/// Whether `id` can be a key id (it travels unescaped in URLs).
pub fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The current key and the ones still accepted, current first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: Vec<Key>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyJson>,
}

/// A key as it appears in JSON (keys file, health reply).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct KeyJson {
    /// Key id.
    pub id: String,
    /// base64url-nopad of the 32-byte secret.
    pub secret: String,
}

impl Keyring {
    /// A keyring from keys, current first.
    pub fn new(keys: Vec<Key>) -> Result<Keyring, KeyringError> {
        if keys.is_empty() {
            return Err(KeyringError::Empty);
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyringError::DuplicateId(k.id.clone()));
            }
        }
        Ok(Keyring { keys })
    }

    /// Reads the keys-file JSON.
    pub fn from_json(text: &str) -> Result<Keyring, KeyringError> {
        let file: KeysFile =
            serde_json::from_str(text).map_err(|e| KeyringError::Json(e.to_string()))?;
        Self::from_wire(&file.keys)
    }

    /// Builds a keyring from its JSON entries (as in a health reply).
    pub fn from_wire(entries: &[KeyJson]) -> Result<Keyring, KeyringError> {
        let keys = entries
            .iter()
            .map(decode_key)
            .collect::<Result<Vec<_>, _>>()?;
        Keyring::new(keys)
    }

    /// The keys as JSON entries, current first.
    pub fn to_wire(&self) -> Vec<KeyJson> {
        self.keys
            .iter()
            .map(|k| KeyJson {
                id: k.id.clone(),
                secret: URL_SAFE_NO_PAD.encode(k.secret),
            })
            .collect()
    }

    /// The keys-file JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&KeysFile {
            keys: self.to_wire(),
        })
        .expect("plain structs serialise")
    }

    /// The key new URLs are signed with.
    pub fn current(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with this id, if the keyring still accepts it.
    pub fn get(&self, id: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// All keys, current first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

fn decode_key(k: &KeyJson) -> Result<Key, KeyringError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(k.secret.as_bytes())
        .map_err(|_| KeyringError::BadSecret(k.id.clone()))?;
    let secret: [u8; SECRET_LEN] = bytes
        .try_into()
        .map_err(|_| KeyringError::BadSecret(k.id.clone()))?;
    Key::new(&k.id, secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"keys":[{"id":"k2","secret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"},{"id":"k1","secret":"__________________________________________8"}]}"#;

    #[test]
    fn reads_and_writes_the_design_format() {
        let ring = Keyring::from_json(FILE).unwrap();
        assert_eq!(ring.current().id(), "k2");
        let want: Vec<u8> = (0..32).collect();
        assert_eq!(&ring.current().secret()[..], &want[..]);
        assert_eq!(ring.get("k1").unwrap().secret(), &[0xffu8; 32]);
        assert!(ring.get("k3").is_none());
        assert_eq!(ring.to_json(), FILE);
        assert!(
            !format!("{:?}", ring).contains("AAEC"),
            "secrets are not printed"
        );
    }

    #[test]
    fn refuses_bad_keyrings() {
        assert_eq!(
            Keyring::from_json(r#"{"keys":[]}"#),
            Err(KeyringError::Empty)
        );
        let short = r#"{"keys":[{"id":"k","secret":"AAEC"}]}"#;
        assert_eq!(
            Keyring::from_json(short),
            Err(KeyringError::BadSecret("k".into()))
        );
        let padded =
            r#"{"keys":[{"id":"k","secret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}]}"#;
        assert_eq!(
            Keyring::from_json(padded),
            Err(KeyringError::BadSecret("k".into()))
        );
        let bad_id =
            r#"{"keys":[{"id":"a/b","secret":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}]}"#;
        assert_eq!(
            Keyring::from_json(bad_id),
            Err(KeyringError::BadId("a/b".into()))
        );
        let dup = FILE.replace("\"k1\"", "\"k2\"");
        assert_eq!(
            Keyring::from_json(&dup),
            Err(KeyringError::DuplicateId("k2".into()))
        );
        assert!(matches!(
            Keyring::from_json("{"),
            Err(KeyringError::Json(_))
        ));
        assert!(matches!(
            Keyring::from_json(r#"{"keys":[],"x":1}"#),
            Err(KeyringError::Json(_))
        ));
    }
}
