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

/// The client's address: the peer, or the last `X-Forwarded-For` hop when the peer is a trusted
/// proxy.
pub fn client_ip(app: &App, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !app.trusted_proxies.contains(&peer) {
        return peer;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}
