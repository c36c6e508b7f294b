//! The admin listener: `/metrics` (Prometheus), `/status` (JSON [`DaemonStatus`], what the fill
//! agent reads), `/healthz`, `/readyz`. It never serves content.
//!
//! It runs on `main`'s tokio runtime, apart from the workers, and reads the process's state
//! ([`Process`]) without taking part in it: a scrape costs the workers nothing but the atomic
//! loads it makes. It keeps answering while the workers drain (`/readyz` then says 503). Each
//! path is one arm of `route`; a new endpoint is a new arm and a function.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use oca_protocol::status::{DaemonStatus, DiskStatus, STATUS_PATH};

use crate::process::Process;

/// A worker whose loop has not ticked for this long counts as hung (healthz, watchdog).
pub const STALE_WORKER: Duration = Duration::from_secs(5);

/// Serves admin requests until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, process: Arc<Process>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let process = process.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(req, process.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
        });
    }
}

async fn handle(
    req: Request<Incoming>,
    p: Arc<Process>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET or HEAD only\n".into(),
        ));
    }
    Ok(route(req.uri().path(), &p))
}

/// The answer to a GET or HEAD of `path`.
fn route(path: &str, p: &Arc<Process>) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            p.render_metrics(),
        ),
        STATUS_PATH => reply(StatusCode::OK, "application/json", status_json(p)),
        "/healthz" if p.metrics.workers_alive(STALE_WORKER) => {
            reply(StatusCode::OK, "text/plain", "ok\n".into())
        }
        "/healthz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "a worker is stalled\n".into(),
        ),
        "/readyz" if p.ready() => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        "/readyz" => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// The body of `GET /status`.
fn status_json(p: &Process) -> String {
    let m = &p.metrics;
    let status = DaemonStatus {
        requests_total: m.responses_total(),
        sent_bytes_total: m.sent_bytes_total(),
        active_connections: m.active_connections().max(0) as u64,
        disks: p
            .disks
            .each()
            .map(|d| DiskStatus {
                path: d.path.to_string(),
                failed: d.failed,
            })
            .collect(),
    };
    serde_json::to_string(&status).expect("strings, numbers and booleans always serialize")
}

fn reply(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}
