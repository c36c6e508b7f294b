//! The live checks' API: an appliance uploads its qualification (its own credential, as its
//! health reports), an admin lists operational issues.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use oca_protocol::live::{Issue, QualificationAccepted, QualificationReport};

use crate::app::{unix_now, App};
use crate::http::admin::Admin;
use crate::http::appliance::appliance_auth;
use crate::http::error::{bad_request, internal, Failure};
use crate::http::request::read_json;
use crate::storage::live::IssueFilter;

/// Largest qualification report taken (`oca-qualify --json` writes a few KiB).
pub const QUALIFICATION_BODY_LIMIT: usize = 256 << 10;

/// Issues listed when no `limit` is given.
pub const DEFAULT_ISSUE_LIMIT: usize = 1_000;

/// `POST /v1/appliances/<id>/qualification`: the appliance's latest `oca-qualify --json`
/// report; the credential is checked before the body is read.
pub async fn upload_qualification(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    payload: axum::body::Body,
) -> Result<Json<QualificationAccepted>, Failure> {
    appliance_auth(&app, &id, &headers)?;
    let report: QualificationReport =
        read_json(&headers, payload, QUALIFICATION_BODY_LIMIT).await?;
    let now = unix_now();
    let app2 = app.clone();
    let passed = tokio::task::spawn_blocking(move || app2.accept_qualification(&id, report, now))
        .await
        .map_err(|_| internal())??;
    Ok(Json(QualificationAccepted {
        passed,
        uploaded_at: now,
    }))
}

/// `GET /v1/admin/issues` query.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuesQuery {
    /// `1`: open issues only.
    #[serde(default)]
    open: Option<u8>,
    #[serde(default)]
    appliance: Option<String>,
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/admin/issues[?open=1][&appliance=A][&site=S][&limit=N]`: newest first.
pub async fn list_issues(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<IssuesQuery>, QueryRejection>,
) -> Result<Json<Vec<Issue>>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let open_only = match q.open {
        None | Some(0) => false,
        Some(1) => true,
        Some(_) => return Err(bad_request("open: must be 0 or 1")),
    };
    let filter = IssueFilter {
        open_only,
        oca_id: q.appliance,
        site: q.site,
        limit: q.limit.unwrap_or(DEFAULT_ISSUE_LIMIT),
    };
    Ok(Json(app.store.issues(&filter)?))
}
