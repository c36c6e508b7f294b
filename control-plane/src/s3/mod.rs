//! S3-compatible origins (docs/control-plane.md, "S3 origins"): content whose origin is
//! `s3://bucket/key` is fetched by fill agents from that object store with a presigned GET URL
//! the manifest carries verbatim.
//!
//! - [`config`]: the `[[s3]]` tables of the configuration file, each a bucket on an endpoint with
//!   its credentials; the secret key is read from a file that others may not read.
//! - [`sigv4`]: AWS Signature Version 4, presigned (query) and in a header.
//! - this module: [`Origins`], the configured buckets; [`Location`], an `s3://` origin parsed;
//!   the presigned URL of an object at `now`.
//!
//! # Presigned URLs and the manifest's version
//! A manifest's version is a hash of its content, so a URL that changed at every request would
//! change the version at every poll and on every replica. `X-Amz-Date` is therefore `now`
//! rounded down to a step (a quarter of the URL's lifetime, at most a day) and `X-Amz-Expires` is
//! the lifetime (7 days by default, S3's maximum): every manifest computed within one step
//! carries the same URL, valid for at least three quarters of its lifetime after it was handed
//! out, and the version changes once a step, when the URL is re-presigned.

pub mod config;
pub mod sigv4;

use std::collections::BTreeMap;
use std::sync::Arc;

/// The longest step `X-Amz-Date` is rounded down to: a day, as our own fill URLs.
const MAX_DATE_STEP_SECS: u32 = 86_400;

/// Why an `s3://` origin cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OriginError {
    /// Not `s3://bucket/key`.
    #[error("origin {0:?}: expected s3://bucket/key")]
    Malformed(String),
    /// The bucket name breaks S3's rules.
    #[error("origin bucket {0:?}: 3 to 63 of a-z, 0-9, '.', '-', starting and ending with a letter or digit")]
    BadBucket(String),
    /// A key an HTTP client could rewrite (which would break its signature), or too long.
    #[error("origin key {0:?}: 1 to 1024 bytes, no control characters, no empty, '.' or '..' path segments")]
    BadKey(String),
    /// No `[[s3]]` table names the bucket.
    #[error("origin bucket {0:?} is not configured on this control plane (an [[s3]] table in its configuration file)")]
    UnknownBucket(String),
}

/// An `s3://bucket/key` origin, parsed and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location<'a> {
    /// Bucket name.
    pub bucket: &'a str,
    /// Object key (not encoded).
    pub key: &'a str,
}

impl<'a> Location<'a> {
    /// Whether `origin` names an S3 object (rather than `embedded` or an HTTP URL).
    pub fn is_s3(origin: &str) -> bool {
        origin.starts_with("s3://")
    }

    /// `s3://bucket/key`, checked.
    pub fn parse(origin: &'a str) -> Result<Location<'a>, OriginError> {
        let rest = origin
            .strip_prefix("s3://")
            .ok_or_else(|| OriginError::Malformed(origin.to_string()))?;
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| OriginError::Malformed(origin.to_string()))?;
        check_bucket(bucket)?;
        let bad_segment = key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
        if key.is_empty()
            || key.len() > 1024
            || bad_segment
            || key.bytes().any(|b| b < 0x20 || b == 0x7f)
        {
            return Err(OriginError::BadKey(key.to_string()));
        }
        Ok(Location { bucket, key })
    }
}

/// Checks a bucket name against S3's naming rules (so it is also a valid host label).
pub fn check_bucket(name: &str) -> Result<(), OriginError> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    let edge = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if (3..=63).contains(&name.len())
        && name.bytes().all(ok_char)
        && edge(name.as_bytes().first())
        && edge(name.as_bytes().last())
    {
        Ok(())
    } else {
        Err(OriginError::BadBucket(name.to_string()))
    }
}

/// A configured bucket: where it is, how it is addressed, who signs for it.
pub struct Bucket {
    /// Bucket name.
    pub name: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The endpoint's host, with its port when not the scheme's default.
    pub endpoint_host: String,
    /// Path-style (`endpoint/bucket/key`) rather than virtual-hosted (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Signing region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key (never logged: [`Bucket`]'s `Debug` leaves it out).
    pub secret_key: String,
    /// `X-Amz-Expires` of presigned URLs, seconds.
    pub url_lifetime_secs: u32,
    /// The signing key of the last day presigned for: manifests presign every S3 entry at
    /// every health report, and the key changes once a day.
    pub day_key: parking_lot::Mutex<Option<(String, [u8; 32])>>,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bucket")
            .field("name", &self.name)
            .field(
                "endpoint",
                &format_args!("{}://{}", self.scheme, self.endpoint_host),
            )
            .field("path_style", &self.path_style)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("url_lifetime_secs", &self.url_lifetime_secs)
            .finish_non_exhaustive()
    }
}

/// Where a request for an object goes: the `Host` header and the encoded path.
pub struct ObjectAddress {
    /// `Host` header value.
    pub host: String,
    /// Encoded path, starting with `/`.
    pub path: String,
    /// `scheme://host`, to which the path (and a query) is appended.
    pub base: String,
}

impl Bucket {
    /// Where requests for `key` go.
    pub fn address(&self, key: &str) -> ObjectAddress {
        let encoded = sigv4::uri_encode(key, true);
        let (host, path) = if self.path_style {
            (
                self.endpoint_host.clone(),
                format!("/{}/{encoded}", self.name),
            )
        } else {
            (
                format!("{}.{}", self.name, self.endpoint_host),
                format!("/{encoded}"),
            )
        };
        ObjectAddress {
            base: format!("{}://{host}", self.scheme),
            host,
            path,
        }
    }

    /// Who signs for this bucket.
    pub fn signer(&self) -> sigv4::Signer<'_> {
        sigv4::Signer {
            access_key_id: &self.access_key_id,
            secret_key: &self.secret_key,
            region: &self.region,
            day_key: None,
        }
    }

    /// The signing key of `day` (`YYYYMMDD`), derived once a day.
    fn key_of(&self, day: &str) -> [u8; 32] {
        let mut kept = self.day_key.lock();
        match kept.as_ref() {
            Some((d, k)) if d == day => *k,
            _ => {
                let k = sigv4::day_key(&self.secret_key, &self.region, day);
                *kept = Some((day.to_string(), k));
                k
            }
        }
    }

    /// The presigned GET URL of `key` at `now`, the same for every `now` within one step
    /// (module doc).
    pub fn presigned_get(&self, key: &str, now: i64) -> String {
        let step = i64::from((self.url_lifetime_secs / 4).clamp(1, MAX_DATE_STEP_SECS));
        let date = now - now.rem_euclid(step);
        let at = self.address(key);
        let day = sigv4::amz_date(date)[..8].to_string();
        let signer = sigv4::Signer {
            day_key: Some((&day, self.key_of(&day))),
            ..self.signer()
        };
        let query = sigv4::presign(
            &signer,
            &sigv4::Request {
                method: "GET",
                host: &at.host,
                path: &at.path,
                query: &[],
            },
            date,
            self.url_lifetime_secs,
        );
        format!("{}{}?{query}", at.base, at.path)
    }
}

/// The configured buckets, by name; cheap to clone.
#[derive(Clone, Default)]
pub struct Origins {
    buckets: Arc<BTreeMap<String, Bucket>>,
}

impl std::fmt::Debug for Origins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.buckets.values()).finish()
    }
}

impl Origins {
    /// These buckets (names already checked unique by [`config::load`]).
    pub fn new(buckets: Vec<Bucket>) -> Origins {
        Origins {
            buckets: Arc::new(buckets.into_iter().map(|b| (b.name.clone(), b)).collect()),
        }
    }

    /// The bucket named `name`, if configured.
    pub fn bucket(&self, name: &str) -> Option<&Bucket> {
        self.buckets.get(name)
    }

    /// The configured bucket names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.buckets.keys().map(String::as_str)
    }

    /// Whether content may be registered with `origin`: anything that is not `s3://` as before;
    /// an `s3://` origin must parse and name a configured bucket.
    pub fn check(&self, origin: &str) -> Result<(), OriginError> {
        if !Location::is_s3(origin) {
            return Ok(());
        }
        let loc = Location::parse(origin)?;
        self.bucket(loc.bucket)
            .map(|_| ())
            .ok_or_else(|| OriginError::UnknownBucket(loc.bucket.to_string()))
    }

    /// The presigned GET URL of an `s3://` origin at `now`.
    pub fn presigned_get(&self, origin: &str, now: i64) -> Result<String, OriginError> {
        let loc = Location::parse(origin)?;
        let bucket = self
            .bucket(loc.bucket)
            .ok_or_else(|| OriginError::UnknownBucket(loc.bucket.to_string()))?;
        Ok(bucket.presigned_get(loc.key, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(path_style: bool, lifetime: u32) -> Bucket {
        Bucket {
            name: "examplebucket".into(),
            scheme: "https".into(),
            endpoint_host: "s3.amazonaws.com".into(),
            path_style,
            region: "us-east-1".into(),
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            url_lifetime_secs: lifetime,
            day_key: Default::default(),
        }
    }

    #[test]
    fn a_virtual_hosted_bucket_presigns_the_aws_example() {
        // A one-day lifetime rounds X-Amz-Date down to 6 hours: 03:00 on the example's day
        // signs as its midnight, so this is the URL AWS documents.
        let b = bucket(false, 86_400);
        // Another day's key kept first: the example's day derives its own.
        b.presigned_get("test.txt", 1_369_353_600 - 86_400);
        let url = b.presigned_get("test.txt", 1_369_353_600 + 3 * 3600);
        assert_eq!(
            url,
            "https://examplebucket.s3.amazonaws.com/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn the_url_is_stable_within_a_step_and_changes_after() {
        let b = bucket(true, 604_800);
        let day = 1_369_353_600;
        assert_eq!(
            b.presigned_get("a/b c", day + 5),
            b.presigned_get("a/b c", day + 86_399)
        );
        assert_ne!(
            b.presigned_get("a/b c", day),
            b.presigned_get("a/b c", day + 86_400)
        );
        assert!(b
            .presigned_get("a/b c", day)
            .starts_with("https://s3.amazonaws.com/examplebucket/a/b%20c?"));
        // A short lifetime rounds to a quarter of it.
        let short = bucket(true, 8);
        assert_eq!(
            short.presigned_get("k", day + 1),
            short.presigned_get("k", day)
        );
        assert_ne!(
            short.presigned_get("k", day + 2),
            short.presigned_get("k", day)
        );
    }

    #[test]
    fn origins_are_checked() {
        let o = Origins::new(vec![bucket(true, 60)]);
        assert_eq!(o.check("embedded"), Ok(()));
        assert_eq!(o.check("https://origin.example/x"), Ok(()));
        assert_eq!(o.check("s3://examplebucket/a/b.mp4"), Ok(()));
        assert_eq!(
            o.check("s3://other/a"),
            Err(OriginError::UnknownBucket("other".into()))
        );
        for bad in [
            "s3://examplebucket",
            "s3://examplebucket/",
            "s3://examplebucket/a//b",
            "s3://examplebucket/a/../b",
            "s3://examplebucket/./b",
            "s3://examplebucket/a\nb",
        ] {
            assert!(o.check(bad).is_err(), "{bad}");
        }
        for bad in ["s3://Ex/a", "s3://ab/a", "s3://-abc/a", "s3://a_b/c"] {
            assert!(
                matches!(o.check(bad), Err(OriginError::BadBucket(_))),
                "{bad}"
            );
        }
        assert!(!format!("{o:?}").contains("EXAMPLEKEY"), "{o:?}");
    }
}
