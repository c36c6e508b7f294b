//! Request latency by route: the API router's outermost layer times every request from its
//! arrival at the router to its response's head, into `cp_http_request_duration_seconds`
//! ([`crate::metrics::HttpLabels`]), and counts requests in progress.
//!
//! The route is axum's [`MatchedPath`] (the pattern, `/v1/admin/titles/{id}`), set by the router
//! before any layer runs; a request no route matched is `unmatched`, so a client sending random
//! paths adds no series. A streamed body (the embedded origin's files) is not part of the time:
//! it measures the work of answering, not the client's bandwidth. A request whose client left
//! before its answer was ready is not observed.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::gauge::Gauge;

use crate::app::App;
use crate::metrics::HttpLabels;

/// The middleware (`axum::middleware::from_fn_with_state`).
pub async fn observe(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let method = req.method().clone();
    let _in_flight = InFlight::enter(&app.metrics.http_in_flight);
    let started = Instant::now();
    let resp = next.run(req).await;
    let labels = HttpLabels::new(route.as_deref(), &method, resp.status().as_u16());
    app.metrics
        .http_duration
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// One request counted in progress until dropped (also when its client leaves first).
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(g: &'a Gauge) -> InFlight<'a> {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
