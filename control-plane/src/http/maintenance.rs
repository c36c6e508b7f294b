//! Maintenance windows and the audit log over the admin API (the admin bearer token, recorded
//! as the actor `admin-token`): `POST/GET /v1/admin/maintenance`,
//! `POST /v1/admin/maintenance/<id>/end`, `GET /v1/admin/audit`. The work is
//! [`crate::services::maintenance`]'s, which the portal calls too.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use oca_protocol::admin::{AuditEntry, EndMaintenance, MaintenanceRequest, MaintenanceWindow};

use crate::app::{unix_now, App};
use crate::domain::maintenance as rules;
use crate::http::admin::Admin;
use crate::http::error::{bad_request, Failure};
use crate::http::request::{body, check_id};
use crate::services::maintenance::{self as service, ADMIN_ACTOR, DEFAULT_LIMIT, MAX_LIMIT};

/// `POST /v1/admin/maintenance`: disables an appliance or a site now for `duration_secs`
/// (default two hours) or from `start` to `end`; 201 with the window.
pub async fn create(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<MaintenanceRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<MaintenanceWindow>), Failure> {
    let req = body(payload)?;
    let now = unix_now();
    let target = rules::target(req.appliance.as_deref(), req.site.as_deref())
        .map_err(service::MaintenanceFailure::from)?;
    check_id(target.0.as_str(), target.1)?;
    let span = rules::span(req.duration_secs, req.start, req.end, now)
        .map_err(service::MaintenanceFailure::from)?;
    let w = service::disable(&app, target, span, req.reason.as_deref(), ADMIN_ACTOR, now)?;
    Ok((StatusCode::CREATED, Json(w)))
}

/// `GET /v1/admin/maintenance` query.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `1`: every window, not only those scheduled or in force.
    #[serde(default)]
    pub all: Option<u8>,
    /// At most this many.
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /v1/admin/maintenance[?all=1][&limit=N]`: windows scheduled or in force (with `all=1`,
/// every window, newest first).
pub async fn list(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<MaintenanceWindow>>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let limit = limit(q.limit)?;
    Ok(Json(service::list(
        &app,
        q.all == Some(1),
        limit,
        unix_now(),
    )?))
}

/// `POST /v1/admin/maintenance/<id>/end`: ends a window in force, or cancels a scheduled one,
/// with a reason; 409 when it is already over.
pub async fn end(
    _: Admin,
    State(app): State<Arc<App>>,
    id: Result<Path<i64>, PathRejection>,
    payload: Result<Json<EndMaintenance>, JsonRejection>,
) -> Result<Json<MaintenanceWindow>, Failure> {
    let Path(id) = id.map_err(|_| bad_request("id: a window id (a number)"))?;
    let req = body(payload)?;
    let w = service::end(&app, id, req.reason.as_deref(), ADMIN_ACTOR, unix_now())?;
    Ok(Json(w))
}

/// `GET /v1/admin/audit` query.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/admin/audit[?target=ID][&limit=N]`: who changed what, when and why, newest first.
pub async fn audit(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let limit = limit(q.limit)?;
    if let Some(t) = &q.target {
        check_id("target", t.split_once(':').map_or(t, |(_, id)| id))?;
    }
    Ok(Json(service::audit(&app, q.target.as_deref(), limit)?))
}

/// A list's `limit`: [`DEFAULT_LIMIT`] when absent, 1 to [`MAX_LIMIT`].
pub fn limit(asked: Option<usize>) -> Result<usize, Failure> {
    let limit = asked.unwrap_or(DEFAULT_LIMIT);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(bad_request(format!("limit: 1 to {MAX_LIMIT}")))
    }
}
