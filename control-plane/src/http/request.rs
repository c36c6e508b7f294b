//! Reading requests: bodies within their size limit and the body deadline, bearer credentials,
//! ids and country codes, the client's address.
//!
//! Every caller is authenticated from its headers before its body is read: a body is read only
//! for a caller who may send it.

use std::net::IpAddr;

use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use crate::app::App;
use crate::http::error::{bad_request, body_timeout, too_large, Failure};
use crate::server::deadline;

/// Largest admin request body (a site, a title with its renditions, a subscriber).
pub const ADMIN_BODY_LIMIT: usize = 1 << 20;

/// Largest health report, read only from an authenticated appliance: a full inventory of a
/// large appliance (a million content ids) fits.
pub const HEALTH_BODY_LIMIT: usize = 64 << 20;

/// Largest play request.
pub const PLAY_BODY_LIMIT: usize = 16 << 10;

/// Health reports announcing more than this are read a few at a time ([`App::large_reports`]).
pub const LARGE_REPORT: usize = 1 << 20;

/// Large health reports read at once: their memory is bounded by this times the limit.
pub const LARGE_REPORTS_AT_ONCE: usize = 4;

/// A JSON body (admin routes, after the admin check), or a 400/408/413 that says which field is
/// wrong and why.
pub fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, Failure> {
    match payload {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::BytesRejection(r)) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(too_large(ADMIN_BODY_LIMIT))
        }
        Err(r) if deadline::is_timeout(&r) => Err(body_timeout()),
        Err(r) => Err(bad_request(r.body_text())),
    }
}

/// Reads a JSON body of at most `limit` bytes (refused before reading when its length says it
/// is larger) within the body deadline; for callers already authenticated.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<T, Failure> {
    if announced_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if deadline::is_timeout(e.as_ref()) {
            body_timeout()
        } else if e.is::<http_body_util::LengthLimitError>() {
            too_large(limit)
        } else {
            bad_request("the request body could not be read")
        }
    })?;
    // The path names the field, as axum's `Json` does for the admin routes.
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes))
        .map_err(|e| bad_request(format!("{}: {}", e.path(), e.inner())))
}

/// The body length a request announces (`Content-Length`).
pub fn announced_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    v.strip_prefix("Bearer ").map(str::trim)
}

/// Ids of sites and appliances travel in URLs and logs: the content-id alphabet, 1-64 long.
pub fn check_id(field: &str, id: &str) -> Result<(), Failure> {
    if id.len() <= 64 && oca_store::ContentId::parse(id).is_ok() {
        Ok(())
    } else {
        Err(bad_request(format!(
            "{field}: {id:?} is not a valid id (1-64 characters of [A-Za-z0-9._-], not starting with '.')"
        )))
    }
}

/// An ISO 3166-1 alpha-2 country code.
pub fn check_country(c: &str) -> Result<(), Failure> {
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(bad_request(
            "country: two upper-case letters (ISO 3166-1 alpha-2)",
        ))
    }
}

/// Most `X-Forwarded-For` hops looked at, from the right: proxies in front of one another
/// are a handful (a CDN edge, HAProxy); the rest of a longer list is the client's to invent.
pub const MAX_FORWARDED_HOPS: usize = 8;

/// Longest hop taken for an address (`[IPv6]:port` with a zone fits).
const MAX_HOP_LEN: usize = 64;

/// The client's address: the peer, or, when the peer is a trusted proxy, what
/// [`forwarded_client`] finds in its `X-Forwarded-For`.
pub fn client_ip(app: &App, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    forwarded_client(peer, headers, |ip| app.trusted_proxies.contains(&ip))
}

/// The client's address behind a chain of proxies: starting from the peer, while the address
/// reached is a trusted proxy, step to the hop it appended to `X-Forwarded-For` (every header
/// line, in order, read from the right); the first address that is not a trusted proxy is
/// the client (nginx's `real_ip_recursive on`). So each proxy vouches only for the hop it
/// added itself: a client that sends its own `X-Forwarded-For` through HAProxy (which adds a
/// line with the real peer) is seen at its real address. A hop that is not an address
/// (`unknown`, garbage, too long), or more than [`MAX_FORWARDED_HOPS`] of them, ends the walk
/// at the last address reached; so does a list of nothing but trusted proxies. One trusted
/// proxy behaves as before: its last hop, when that is an address.
pub fn forwarded_client(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    let mut client = peer.to_canonical();
    if !trusted(client) {
        return client;
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|line| line.as_bytes().rsplit(|&b| b == b','))
        .take(MAX_FORWARDED_HOPS);
    for hop in hops {
        match parse_hop(hop) {
            Some(ip) => client = ip,
            None => break,
        }
        if !trusted(client) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` hop as an address: `192.0.2.1`, `2001:db8::1`, or with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`) as some proxies write it.
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    if hop.len() > MAX_HOP_LEN {
        return None;
    }
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The client for `peer` with these `X-Forwarded-For` lines, trusting 10.0.0.1 (HAProxy)
    /// and 10.0.0.2 (a proxy in front of it).
    fn client(peer: &str, lines: &[&str]) -> IpAddr {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", l.parse().unwrap());
        }
        forwarded_client(ip(peer), &h, |a| a == ip("10.0.0.1") || a == ip("10.0.0.2"))
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        assert_eq!(client("192.0.2.9", &["198.51.100.7"]), ip("192.0.2.9"));
        assert_eq!(client("192.0.2.9", &[]), ip("192.0.2.9"));
    }

    #[test]
    fn one_trusted_proxy_gives_its_last_hop() {
        assert_eq!(client("10.0.0.1", &["198.51.100.7"]), ip("198.51.100.7"));
        assert_eq!(
            client("10.0.0.1", &["203.0.113.5, 198.51.100.7"]),
            ip("198.51.100.7"),
            "what the client wrote left of its real address is not believed"
        );
        assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
        assert_eq!(client("10.0.0.1", &["garbage"]), ip("10.0.0.1"));
        assert_eq!(client("10.0.0.1", &["unknown"]), ip("10.0.0.1"));
    }

    #[test]
    fn haproxy_adds_a_line_and_a_spoofed_first_line_is_not_believed() {
        // An untrusted client sent its own header; HAProxy (10.0.0.1) added the real peer on
        // a line of its own.
        assert_eq!(
            client("10.0.0.1", &["203.0.113.5", "198.51.100.7"]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn trusted_hops_are_walked_over_from_the_right() {
        // A trusted proxy (10.0.0.2) sent the client's address; HAProxy appended 10.0.0.2.
        assert_eq!(
            client("10.0.0.1", &["203.0.113.5, 198.51.100.7", "10.0.0.2"]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.1", &["203.0.113.5, 198.51.100.7, 10.0.0.2"]),
            ip("198.51.100.7")
        );
        // Nothing but trusted proxies: the leftmost reached.
        assert_eq!(client("10.0.0.1", &["10.0.0.1, 10.0.0.2"]), ip("10.0.0.1"));
        // Garbage behind a trusted hop: stop at the trusted hop.
        assert_eq!(client("10.0.0.1", &["x, 10.0.0.2"]), ip("10.0.0.2"));
    }

    #[test]
    fn hops_with_ports_brackets_spaces_and_mapped_addresses() {
        assert_eq!(
            client("10.0.0.1", &[" 198.51.100.7:4711 "]),
            ip("198.51.100.7")
        );
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::7]:4711"]),
            ip("2001:db8::7")
        );
        assert_eq!(client("10.0.0.1", &["2001:db8::7"]), ip("2001:db8::7"));
        assert_eq!(
            client("::ffff:10.0.0.1", &["::ffff:198.51.100.7"]),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_walk_is_bounded() {
        let trusted_chain = vec!["10.0.0.2"; 100].join(", ");
        let line = format!("198.51.100.7, {trusted_chain}");
        assert_eq!(client("10.0.0.1", &[&line]), ip("10.0.0.2"));
        let long = format!("198.51.100.7, {}", "1".repeat(4000));
        assert_eq!(client("10.0.0.1", &[&long]), ip("10.0.0.1"));
    }
}
