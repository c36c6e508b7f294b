//! Player credentials: signed, expiring bearer tokens the admin API issues per subscriber
//! (`POST /v1/admin/subscribers/<id>/tokens`), sent by players as `Authorization: Bearer` on
//! `/v1/play`.
//!
//! A token is `v1.<expires>.<subscriber>.<mac>`: `expires` in unix seconds, `mac` the
//! base64url (no padding) HMAC-SHA256, under a secret that never leaves the control plane's
//! database, of `oca-player-token v1`, the expiry and the subscriber. Verifying it needs no
//! database read, so plays stay as cheap as before; a stolen token plays as its subscriber until
//! it expires or the subscriber is made inactive (docs/security.md).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Name of the signing secret in the database's `secrets` table.
pub const SECRET_NAME: &str = "player_token_key";

/// Longest lifetime a token may be issued with (30 days).
pub const MAX_TTL_SECS: i64 = 30 * 86_400;

/// Lifetime of a token when the admin gives none (1 day).
pub const DEFAULT_TTL_SECS: i64 = 86_400;

/// Longest token accepted (a subscriber id is at most 64 characters).
const MAX_TOKEN_LEN: usize = 160;

/// The secret tokens are signed with.
pub struct TokenKey(Hmac<Sha256>);

impl TokenKey {
    /// A key from the secret's bytes.
    pub fn new(secret: &[u8]) -> TokenKey {
        TokenKey(Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"))
    }

    fn mac(&self, expires: i64, subscriber: &str) -> Hmac<Sha256> {
        let mut m = self.0.clone();
        m.update(b"oca-player-token v1\0");
        m.update(expires.to_string().as_bytes());
        m.update(b"\0");
        m.update(subscriber.as_bytes());
        m
    }

    /// A token for `subscriber`, valid until `expires`.
    pub fn issue(&self, subscriber: &str, expires: i64) -> String {
        let tag = self.mac(expires, subscriber).finalize().into_bytes();
        format!("v1.{expires}.{subscriber}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The subscriber a token was issued for, when it is genuine and unexpired at `now`; one
    /// answer (None) for every reason it is not.
    pub fn verify<'t>(&self, token: &'t str, now: i64) -> Option<&'t str> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let rest = token.strip_prefix("v1.")?;
        let (expires, rest) = rest.split_once('.')?;
        let (subscriber, tag) = rest.rsplit_once('.')?;
        let expires: i64 = expires.parse().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Checked in constant time (hmac's verify), then the expiry.
        self.mac(expires, subscriber).verify_slice(&tag).ok()?;
        (now < expires && !subscriber.is_empty()).then_some(subscriber)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_genuine_unexpired_tokens_name_their_subscriber() {
        let k = TokenKey::new(b"secret");
        let t = k.issue("sub.1", 1_000);
        assert!(t.starts_with("v1.1000.sub.1."), "{t}");
        assert_eq!(k.verify(&t, 999), Some("sub.1"));
        assert_eq!(k.verify(&t, 1_000), None, "expired");
        assert_eq!(TokenKey::new(b"other").verify(&t, 0), None, "another key");
        assert_eq!(
            k.verify(&t.replace("sub.1", "sub.2"), 0),
            None,
            "another subscriber"
        );
        assert_eq!(
            k.verify(&t.replace("v1.1000", "v1.2000"), 0),
            None,
            "a later expiry"
        );
        for bad in ["", "v1", "v1.x.s.t", "v2.1000.s.AAAA", &"v1.1.".repeat(100)] {
            assert_eq!(k.verify(bad, 0), None, "{bad}");
        }
    }
}
