//! AWS Signature Version 4 for S3, the two forms we use: a presigned GET (the signature in the
//! query string, for fill agents) and a signed `Authorization` header (ocactl's uploads).
//!
//! Written by hand on our `hmac`/`sha2` rather than with `aws-sigv4` (docs/research/issue18.md,
//! §5): it is about a hundred lines, adds no crate and no MSRV pressure, and is pinned by the
//! example AWS documents (the test below) and by a real S3-compatible server in the tests.
//!
//! A presigned URL signs only the `host` header and `UNSIGNED-PAYLOAD`, so the fill agent may
//! add any `Range` header (a signed `Range` would make every other range a
//! `SignatureDoesNotMatch`). The clock is passed in.

use hmac::{Hmac, KeyInit, Mac};
use oca_protocol::manifest::hex;
use sha2::{Digest, Sha256};

/// The longest `X-Amz-Expires` S3 accepts: 7 days.
pub const MAX_EXPIRES_SECS: u32 = 604_800;

/// The payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Who signs, and for which region.
#[derive(Clone, Copy)]
pub struct Signer<'a> {
    /// Access key id (public).
    pub access_key_id: &'a str,
    /// Secret access key.
    pub secret_key: &'a str,
    /// Region (`us-east-1` for most self-hosted servers).
    pub region: &'a str,
    /// The signing key of one day (`YYYYMMDD`, [`day_key`]) when the caller keeps it: a
    /// signature then costs one HMAC instead of five.
    pub day_key: Option<(&'a str, [u8; 32])>,
}

/// One request to sign: `path` is already URI-encoded (as sent), `host` as the `Host` header
/// carries it (with a port other than the scheme's default).
pub struct Request<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// `Host` header value.
    pub host: &'a str,
    /// Encoded path, starting with `/`.
    pub path: &'a str,
    /// Query parameters, not encoded (signing encodes and sorts them).
    pub query: &'a [(&'a str, &'a str)],
}

/// `20130524T000000Z` for unix seconds.
pub fn amz_date(now: i64) -> String {
    let t = oca_protocol::utc::Utc::of(now);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Percent-encodes everything but RFC 3986's unreserved characters, and `/` when `keep_slash`
/// (S3 object keys in a path keep their slashes; query values do not).
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The query string of a presigned GET, `X-Amz-Signature` last, valid `expires` seconds from
/// `now` (at most [`MAX_EXPIRES_SECS`], at least 1).
pub fn presign(signer: &Signer<'_>, req: &Request<'_>, now: i64, expires: u32) -> String {
    let date = amz_date(now);
    let credential = format!("{}/{}", signer.access_key_id, scope(signer, &date));
    let expires = expires.clamp(1, MAX_EXPIRES_SECS).to_string();
    let mut params: Vec<(&str, &str)> = req.query.to_vec();
    params.extend([
        ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
        ("X-Amz-Credential", credential.as_str()),
        ("X-Amz-Date", date.as_str()),
        ("X-Amz-Expires", expires.as_str()),
        ("X-Amz-SignedHeaders", "host"),
    ]);
    let query = canonical_query(&params);
    let headers = format!("host:{}\n", req.host);
    let canonical = canonical_request(req, &query, &headers, "host", UNSIGNED_PAYLOAD);
    let signature = signature(signer, &date, &canonical);
    format!("{query}&X-Amz-Signature={signature}")
}

/// The headers of a request signed in its `Authorization` header: `x-amz-date`,
/// `x-amz-content-sha256` (`payload_sha256`, hex, or [`UNSIGNED_PAYLOAD`]) and `authorization`.
/// `Host` is signed too (the HTTP client sends it), and `extra` headers (lower-case names,
/// values as sent) the caller sends.
pub fn sign_headers(
    signer: &Signer<'_>,
    req: &Request<'_>,
    extra: &[(&str, &str)],
    payload_sha256: &str,
    now: i64,
) -> Vec<(&'static str, String)> {
    let date = amz_date(now);
    let query = canonical_query(req.query);
    let mut all: Vec<(&str, &str)> = vec![
        ("host", req.host),
        ("x-amz-content-sha256", payload_sha256),
        ("x-amz-date", &date),
    ];
    all.extend_from_slice(extra);
    all.sort();
    let headers: String = all
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed = all.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let canonical = canonical_request(req, &query, &headers, &signed, payload_sha256);
    let signature = signature(signer, &date, &canonical);
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{},SignedHeaders={signed},Signature={signature}",
        signer.access_key_id,
        scope(signer, &date)
    );
    vec![
        ("x-amz-date", date),
        ("x-amz-content-sha256", payload_sha256.to_string()),
        ("authorization", authorization),
    ]
}

/// The query string of `params` as sent and as signed: each key and value encoded, sorted.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (uri_encode(k, false), uri_encode(v, false)))
        .collect();
    encoded.sort();
    let pairs: Vec<String> = encoded.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.join("&")
}

fn scope(signer: &Signer<'_>, date: &str) -> String {
    format!("{}/{}/s3/aws4_request", &date[..8], signer.region)
}

fn canonical_request(
    req: &Request<'_>,
    query: &str,
    headers: &str,
    signed: &str,
    payload: &str,
) -> String {
    format!(
        "{}\n{}\n{query}\n{headers}\n{signed}\n{payload}",
        req.method, req.path
    )
}

fn signature(signer: &Signer<'_>, date: &str, canonical: &str) -> String {
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{}\n{}",
        scope(signer, date),
        hex(&Sha256::digest(canonical.as_bytes()))
    );
    let day = &date[..8];
    let k = match signer.day_key {
        Some((d, k)) if d == day => k,
        _ => day_key(signer.secret_key, signer.region, day),
    };
    hex(&hmac(&k, to_sign.as_bytes()))
}

/// The signing key of `secret` for `day` (`YYYYMMDD`) in `region`, for S3.
pub fn day_key(secret: &str, region: &str, day: &str) -> [u8; 32] {
    let mut k = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in [region, "s3", "aws4_request"] {
        k = hmac(&k, part.as_bytes());
    }
    k
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AWS_EXAMPLE: Signer<'static> = Signer {
        access_key_id: "AKIAIOSFODNN7EXAMPLE",
        secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region: "us-east-1",
        day_key: None,
    };

    /// 2013-05-24T00:00:00Z, the examples' moment.
    const EXAMPLE_NOW: i64 = 1_369_353_600;

    #[test]
    fn the_presigned_get_aws_documents() {
        // S3 docs, "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)".
        let q = presign(
            &AWS_EXAMPLE,
            &Request {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
            },
            EXAMPLE_NOW,
            86_400,
        );
        assert_eq!(
            q,
            "X-Amz-Algorithm=AWS4-HMAC-SHA256\
             &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request\
             &X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host\
             &X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
        );
    }

    #[test]
    fn the_header_signed_get_aws_documents() {
        // S3 docs, "Signature Calculations for the Authorization Header: Transferring Payload in
        // a Single Chunk", example GET Object (a range of test.txt).
        let h = sign_headers(
            &AWS_EXAMPLE,
            &Request {
                method: "GET",
                host: "examplebucket.s3.amazonaws.com",
                path: "/test.txt",
                query: &[],
            },
            &[("range", "bytes=0-9")],
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            EXAMPLE_NOW,
        );
        assert_eq!(h[0], ("x-amz-date", "20130524T000000Z".to_string()));
        assert_eq!(
            h[2].1,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,\
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,\
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn keys_keep_their_slashes_and_encode_the_rest() {
        assert_eq!(uri_encode("a b/c+d~é", true), "a%20b/c%2Bd~%C3%A9");
        assert_eq!(uri_encode("a/b", false), "a%2Fb");
        assert_eq!(canonical_query(&[("uploads", "")]), "uploads=");
        assert_eq!(
            canonical_query(&[("uploadId", "x/y"), ("partNumber", "2")]),
            "partNumber=2&uploadId=x%2Fy"
        );
    }
}
