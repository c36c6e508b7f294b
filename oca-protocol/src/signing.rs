//! Signed content URLs (docs/architecture.md, "Signed URLs").
//!
//! `/c/<content_id>?e=<expiry unix seconds>&k=<key id>&s=<signature>` where
//! `signature = base64url-nopad(HMAC-SHA256(key[k], "<content_id>\n<e>\n<scope>"))` and the scope
//! is `play` (players) or `fill` (appliance-to-appliance and origin fills). The comparison is
//! constant-time; every failure is a 403 to the client, with the reason kept for metrics only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::keys::{Key, Keyring};

type HmacSha256 = Hmac<Sha256>;

/// What a signed URL allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A player fetching content.
    Play,
    /// An appliance filling from a peer, a tier or the origin.
    Fill,
}

impl Scope {
    /// The scope as signed.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Play => "play",
            Scope::Fill => "fill",
        }
    }
}

/// Why a URL's signature was refused (for metrics and logs; clients only see 403).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No `e`, `k` or `s` parameter.
    #[error("missing")]
    Missing,
    /// A parameter is repeated or not of its form.
    #[error("malformed")]
    Malformed,
    /// The key id is not in the keyring (unknown or retired).
    #[error("unknown_key")]
    UnknownKey,
    /// The signature does not match (forged, truncated, other content or scope).
    #[error("bad_signature")]
    BadSignature,
    /// The signature matches but the expiry has passed.
    #[error("expired")]
    Expired,
}

impl Rejection {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
        }
    }
}

fn mac(key: &Key, content_id: &str, expires: u64, scope: Scope) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key.secret()).expect("HMAC takes keys of any length");
    mac.update(content_id.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac.update(b"\n");
    mac.update(scope.as_str().as_bytes());
    mac
}

/// The signature for `content_id` until `expires` (unix seconds) in `scope`.
pub fn signature(key: &Key, content_id: &str, expires: u64, scope: Scope) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, content_id, expires, scope).finalize().into_bytes())
}

/// The query string (`e=..&k=..&s=..`) that authorises `content_id`, signed with `key`.
pub fn signed_query(key: &Key, content_id: &str, expires: u64, scope: Scope) -> String {
    format!(
        "e={expires}&k={}&s={}",
        key.id(),
        signature(key, content_id, expires, scope)
    )
}

/// The signing parameters found in a query string.
#[derive(Debug, PartialEq, Eq)]
pub struct SignedParams<'q> {
    /// Expiry, unix seconds.
    pub expires: u64,
    /// Key id.
    pub key_id: &'q str,
    /// The signature as sent.
    pub signature: &'q str,
}

/// Finds `e`, `k` and `s` in a query string; other parameters are ignored.
pub fn parse_query(query: &str) -> Result<SignedParams<'_>, Rejection> {
    let (mut e, mut k, mut s) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match name {
            "e" => &mut e,
            "k" => &mut k,
            "s" => &mut s,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(Rejection::Malformed);
        }
    }
    let (Some(e), Some(k), Some(s)) = (e, k, s) else {
        return Err(Rejection::Missing);
    };
    if e.is_empty() || e.len() > 20 || !e.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Rejection::Malformed);
    }
    let expires = e.parse().map_err(|_| Rejection::Malformed)?;
    Ok(SignedParams {
        expires,
        key_id: k,
        signature: s,
    })
}

/// Checks that `query` authorises `content_id` in `scope` at `now` (unix seconds).
pub fn verify(
    ring: &Keyring,
    content_id: &str,
    query: &str,
    scope: Scope,
    now: u64,
) -> Result<(), Rejection> {
    let p = parse_query(query)?;
    let key = ring.get(p.key_id).ok_or(Rejection::UnknownKey)?;
    let sig = URL_SAFE_NO_PAD
        .decode(p.signature.as_bytes())
        .map_err(|_| Rejection::BadSignature)?;
    // verify_slice compares in constant time and refuses other lengths (a truncated signature).
    mac(key, content_id, p.expires, scope)
        .verify_slice(&sig)
        .map_err(|_| Rejection::BadSignature)?;
    if now > p.expires {
        return Err(Rejection::Expired);
    }
    Ok(())
}

/// Checks `query` against each of `scopes` in turn (an appliance serves players and peers on the
/// same URLs, and the URL does not say which); returns the scope it was signed for. Only a bad
/// signature moves on to the next scope, so the other reasons are reported as they are.
pub fn verify_any(
    ring: &Keyring,
    content_id: &str,
    query: &str,
    scopes: &[Scope],
    now: u64,
) -> Result<Scope, Rejection> {
    let mut last = Rejection::Missing;
    for &scope in scopes {
        match verify(ring, content_id, query, scope, now) {
            Ok(()) => return Ok(scope),
            Err(Rejection::BadSignature) => last = Rejection::BadSignature,
            Err(other) => return Err(other),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        let k2 = Key::new("k2", std::array::from_fn(|i| i as u8)).unwrap();
        let k1 = Key::new("k1", [0xff; 32]).unwrap();
        Keyring::new(vec![k2, k1]).unwrap()
    }

    #[test]
    fn test_vectors_pin_the_format() {
        // Computed independently with Python's hmac/hashlib/base64 from docs/architecture.md's formula.
        let key = &ring().keys()[0].clone();
        let id = "80100172_1080p.mp4";
        assert_eq!(
            signature(key, id, 1_767_225_600, Scope::Play),
            "lbCCof1OH-UYrVBJsLCfFjJYt0URLZIlJu-ljtA9bI4"
        );
        assert_eq!(
            signature(key, id, 1_767_225_600, Scope::Fill),
            "OTG2kS22A_rJqQktZPvrhnDHfOY0qba8KfeuIkFmwqs"
        );
        assert_eq!(
            signature(key, "a", 0, Scope::Play),
            "YNJEf36zlmyRgn0zyUCO4BB4ZSmSlSs8ka_c7OugMr8"
        );
        assert_eq!(
            signed_query(key, id, 1_767_225_600, Scope::Play),
            "e=1767225600&k=k2&s=lbCCof1OH-UYrVBJsLCfFjJYt0URLZIlJu-ljtA9bI4"
        );
    }

    #[test]
    fn verify_any_names_the_scope_signed() {
        let r = ring();
        let key = &r.keys()[0];
        let both = [Scope::Play, Scope::Fill];
        let fill = signed_query(key, "x.mp4", 1000, Scope::Fill);
        assert_eq!(verify_any(&r, "x.mp4", &fill, &both, 5), Ok(Scope::Fill));
        let play = signed_query(key, "x.mp4", 1000, Scope::Play);
        assert_eq!(verify_any(&r, "x.mp4", &play, &both, 5), Ok(Scope::Play));
        assert_eq!(
            verify_any(&r, "x.mp4", &fill, &[Scope::Play], 5),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify_any(&r, "y.mp4", &play, &both, 5),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify_any(&r, "x.mp4", &play, &both, 1001),
            Err(Rejection::Expired)
        );
        assert_eq!(
            verify_any(&r, "x.mp4", "e=1", &both, 5),
            Err(Rejection::Missing)
        );
    }

    #[test]
    fn accepts_current_and_previous_keys_until_expiry() {
        let r = ring();
        for key in r.keys() {
            let q = signed_query(key, "x.mp4", 1000, Scope::Play);
            assert_eq!(verify(&r, "x.mp4", &q, Scope::Play, 999), Ok(()));
            assert_eq!(verify(&r, "x.mp4", &q, Scope::Play, 1000), Ok(()));
            assert_eq!(
                verify(&r, "x.mp4", &q, Scope::Play, 1001),
                Err(Rejection::Expired)
            );
            let with_extra = format!("foo=bar&{q}&cb=1");
            assert_eq!(verify(&r, "x.mp4", &with_extra, Scope::Play, 0), Ok(()));
        }
    }

    #[test]
    fn refuses_forged_truncated_wrong_scope_and_unknown_keys() {
        let r = ring();
        let key = r.current();
        let q = signed_query(key, "x.mp4", 1000, Scope::Play);
        let v = |q: &str, id: &str, scope| verify(&r, id, q, scope, 0);
        assert_eq!(
            v(&q, "y.mp4", Scope::Play),
            Err(Rejection::BadSignature),
            "other content"
        );
        assert_eq!(
            v(&q, "x.mp4", Scope::Fill),
            Err(Rejection::BadSignature),
            "other scope"
        );
        assert_eq!(
            v(&q.replace("e=1000", "e=2000"), "x.mp4", Scope::Play),
            Err(Rejection::BadSignature),
            "extended expiry"
        );
        assert_eq!(
            v(&q[..q.len() - 2], "x.mp4", Scope::Play),
            Err(Rejection::BadSignature),
            "truncated"
        );
        let mut forged = q.clone().into_bytes();
        let last = forged.len() - 3;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            v(std::str::from_utf8(&forged).unwrap(), "x.mp4", Scope::Play),
            Err(Rejection::BadSignature),
            "forged"
        );
        assert_eq!(
            v(&q.replace("k=k2", "k=k9"), "x.mp4", Scope::Play),
            Err(Rejection::UnknownKey)
        );
        assert_eq!(v("e=1&k=k2", "x.mp4", Scope::Play), Err(Rejection::Missing));
        assert_eq!(v("", "x.mp4", Scope::Play), Err(Rejection::Missing));
        assert_eq!(
            v(&format!("{q}&e=5"), "x.mp4", Scope::Play),
            Err(Rejection::Malformed),
            "repeated"
        );
        assert_eq!(
            v(&q.replace("e=1000", "e=-1"), "x.mp4", Scope::Play),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            v(
                &q.replace("e=1000", "e=99999999999999999999999"),
                "x.mp4",
                Scope::Play
            ),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            v(&q.replace("&s=", "&s=%%"), "x.mp4", Scope::Play),
            Err(Rejection::BadSignature)
        );
    }
}
