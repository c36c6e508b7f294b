//! The appliance API, each appliance with its own credential: health reports in, fill
//! manifests out. A credential opens only its own appliance's URLs, so one appliance cannot
//! report or fetch a manifest for another.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use oca_protocol::health::{HealthReply, HealthReport};

use crate::app::{unix_now, App};
use crate::domain::intake;
use crate::http::error::{bad_request, body_timeout, internal, unauthorized, Failure};
use crate::http::request::{announced_length, bearer, read_json, HEALTH_BODY_LIMIT, LARGE_REPORT};

/// Checks the appliance's own credential for the appliance named in the URL.
pub(crate) fn appliance_auth(app: &App, id: &str, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(token) = bearer(headers) else {
        app.metrics.auth_failures.inc();
        return Err(unauthorized());
    };
    if !intake::authenticate(app.store.as_ref(), id, token)? {
        app.metrics.auth_failures.inc();
        return Err(unauthorized());
    }
    Ok(())
}

/// `GET /v1/appliances/<id>/manifest`: 304 when `If-None-Match` names the current version.
pub async fn manifest(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    appliance_auth(&app, &id, &headers)?;
    let app2 = app.clone();
    let m = tokio::task::spawn_blocking(move || app2.manifest(&id, unix_now()))
        .await
        .map_err(|_| internal())??;
    let etag = format!("\"{}\"", m.version);
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    Ok(([(header::ETAG, etag)], Json(m)).into_response())
}

/// `POST /v1/appliances/<id>/health`: the credential is checked before the body is read; a large
/// report waits for one of [`LARGE_REPORTS_AT_ONCE`](crate::http::request::LARGE_REPORTS_AT_ONCE) permits (within the body deadline).
pub async fn health(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    payload: axum::body::Body,
) -> Result<Json<HealthReply>, Failure> {
    appliance_auth(&app, &id, &headers)?;
    let _large = match announced_length(&headers) {
        Some(n) if n <= LARGE_REPORT as u64 => None,
        _ => Some(
            tokio::time::timeout(app.body_timeout, app.large_reports.acquire())
                .await
                .map_err(|_| body_timeout())?
                .map_err(|_| internal())?,
        ),
    };
    let report: HealthReport = read_json(&headers, payload, HEALTH_BODY_LIMIT).await?;
    if report.oca_id != id {
        return Err(bad_request("oca_id: must match the URL"));
    }
    let app2 = app.clone();
    let outcome = tokio::task::spawn_blocking(move || app2.accept_report(report, unix_now))
        .await
        .map_err(|_| internal())??;
    app.metrics.health_reports.inc();
    let keys = app.keys();
    Ok(Json(HealthReply {
        keys: keys.site(&outcome.site)?.to_wire(),
        manifest_version: outcome.manifest_version,
        report_interval_secs: app.report_interval_secs,
        inventory_seq: outcome.accepted.inventory_seq,
        send_full_inventory: outcome.accepted.send_full_inventory,
        refused_prefixes: outcome.refused,
        routes_refused: outcome.routes_refused,
    }))
}
