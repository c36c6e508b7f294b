//! The embedded origin: content files in a directory, served at `/origin/<id>` to `fill`-scoped
//! signed URLs only, with byte ranges so an interrupted fill resumes where it stopped.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use oca_protocol::signing::{verify, Scope};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::app::{unix_now, App};

/// Where the embedded origin keeps the files of a content id.
pub fn path(dir: &std::path::Path, id: oca_store::ContentId<'_>) -> PathBuf {
    dir.join(id.as_str())
}

/// `GET /origin/<id>?e=&k=&s=`.
pub async fn serve(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    req: Request<Body>,
) -> Response {
    let forbidden = || (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    let Ok(content) = oca_store::ContentId::parse(&id) else {
        app.metrics.origin_refusals.inc();
        return forbidden();
    };
    let keys = app.keys();
    if let Err(why) = verify(
        &keys.origin,
        content.as_str(),
        query.as_deref().unwrap_or(""),
        Scope::Fill,
        unix_now() as u64,
    ) {
        // Counted by reason; the client learns nothing about which check failed.
        tracing::debug!(reason = why.as_str(), id = %content, "origin request refused");
        app.metrics.origin_refusals.inc();
        return forbidden();
    }
    app.metrics.origin_requests.inc();
    tracing::info!(id = %content, range = ?req.headers().get(axum::http::header::RANGE), "origin fill");
    let file = path(&app.origin_dir, content);
    match ServeFile::new(file).oneshot(req).await {
        Ok(resp) => resp.map(Body::new).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "origin read failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "read error\n").into_response()
        }
    }
}
