//! The load balancer's and the service manager's probes, without credentials: `/healthz` (the
//! process answers) and `/readyz` (it takes new requests: started, not draining, storage
//! answering; [`crate::server::readiness`]). Both answer from memory, never from storage.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;

use crate::app::App;

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 `ready`, or 503 with the reason (`draining`, `storage failing`, ...).
pub async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, String) {
    match app.readiness.check(std::time::Instant::now()) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", why.reason()),
        ),
    }
}
