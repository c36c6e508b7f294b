//! The access log: one `tracing` event per response under the `access` target, when
//! `access_log` is on. The request line is taken when the request is answered (the input buffer
//! is reused after) and written when the response's last byte is handed to the kernel.

use std::net::SocketAddr;
use std::time::Duration;

use crate::http::request::{Method, Request};

/// The request's method and target, as logged.
pub(crate) fn request_line(req: &Request<'_>) -> String {
    let m = match req.method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Other => "OTHER",
    };
    format!("{m} {}", String::from_utf8_lossy(req.target))
}

/// Logs one finished response.
pub(crate) fn write(
    line: &str,
    peer: Option<SocketAddr>,
    status: u16,
    bytes: u64,
    latency: Duration,
) {
    let peer = peer.map_or_else(|| "-".to_string(), |a| a.to_string());
    tracing::info!(
        target: "access",
        %peer,
        status,
        bytes,
        ms = latency.as_secs_f64() * 1e3,
        "{line}"
    );
}
