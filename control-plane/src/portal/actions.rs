//! What portal users change, and the audit log they read: the maintenance forms of the
//! appliance and site pages, the `/audit` page, and the same as a scoped JSON API
//! (`/v1/portal/maintenance`, `/v1/portal/audit`, `/v1/portal/session`). Both go through
//! [`crate::portal::maintenance`], so pages and API apply one scoping rule and record the same
//! actor, `user:<login>`.
//!
//! # CSRF
//! Forms carry the session's token in a hidden `csrf` field ([`CsrfForm`]). JSON callers send
//! it in an `X-CSRF-Token` header ([`CsrfHeader`]), read from `GET /v1/portal/session`: a
//! header cannot be set by a cross-site form, and the token ties the call to the session.
//! Both also refuse a request the browser says is cross-site. Refused: 403.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use oca_protocol::accounts::Role;
use oca_protocol::admin::{
    AuditEntry, EndMaintenance, MaintenanceRequest, MaintenanceWindow, TargetKind,
};
use oca_protocol::playback::ErrorCode;
use serde::{Deserialize, Serialize};

use crate::app::{unix_now, App};
use crate::domain::accounts;
use crate::domain::maintenance as rules;
use crate::http::error::{bad_request, err, Failure};
use crate::http::maintenance::{limit, ListQuery};
use crate::http::request::{body, check_id};
use crate::portal::auth::{same_origin, CsrfForm, SignedIn};
use crate::portal::forms::{self, DisableForm, EndForm};
use crate::portal::maintenance as scoped;
use crate::portal::pages::{appliance_page, failed, not_found_page, site_page, FormState};
use crate::portal::templates::{html, AuditPage, ErrorPage, Nav};
use crate::services::maintenance::MaintenanceFailure;
use crate::storage::StorageError;

/// Audit entries a page of `/audit` lists.
pub const AUDIT_PAGE: usize = 100;

/// The page of a target.
fn page_path((kind, id): (TargetKind, &str)) -> String {
    match kind {
        TargetKind::Appliance => format!("/appliances/{id}"),
        TargetKind::Site => format!("/sites/{id}"),
    }
}

/// The page of a target again, with its forms in `state`.
fn page_of(
    app: &App,
    s: &SignedIn,
    (kind, id): (TargetKind, &str),
    state: FormState,
    status: StatusCode,
) -> Response {
    match kind {
        TargetKind::Appliance => appliance_page(app, s, id, state, status),
        TargetKind::Site => site_page(app, s, id, state, status),
    }
}

/// A maintenance failure of a form: the page again with the message (400, or 409 for a window
/// already over), 404 for what the user may not see.
fn refused(
    app: &App,
    s: &SignedIn,
    target: (TargetKind, &str),
    e: MaintenanceFailure,
    state: impl FnOnce(String) -> FormState,
) -> Response {
    match e {
        MaintenanceFailure::Refused(e) => {
            let status = match e {
                rules::MaintenanceError::Over(_) => StatusCode::CONFLICT,
                _ => StatusCode::BAD_REQUEST,
            };
            page_of(app, s, target, state(e.to_string()), status)
        }
        MaintenanceFailure::Storage(StorageError::Missing(what)) => not_found_page(s, &what),
        MaintenanceFailure::Storage(e) => failed(e),
    }
}

/// `POST /appliances/<id>/maintenance`: the disable form of an appliance page.
pub async fn disable_appliance(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    form: CsrfForm<DisableForm>,
) -> Response {
    disable(&app, (TargetKind::Appliance, &id), form)
}

/// `POST /sites/<id>/maintenance`: the disable form of a site page.
pub async fn disable_site(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    form: CsrfForm<DisableForm>,
) -> Response {
    disable(&app, (TargetKind::Site, &id), form)
}

fn disable(app: &App, target: (TargetKind, &str), posted: CsrfForm<DisableForm>) -> Response {
    let CsrfForm { signed_in: s, form } = posted;
    let now = unix_now();
    // Who may see it first: another organisation's target is 404 whatever the form says.
    if let Err(e) = scoped::check_target(app, s.user(), target) {
        return refused(app, &s, target, e.into(), |_| FormState::default());
    }
    let kept = |error: String| FormState {
        form: form.clone(),
        error: Some(error),
        end_error: None,
    };
    let span = match forms::span(&form, now) {
        Ok(span) => span,
        Err(message) => return page_of(app, &s, target, kept(message), StatusCode::BAD_REQUEST),
    };
    match scoped::disable(app, s.user(), target, span, Some(&form.reason), now) {
        Ok(_) => Redirect::to(&page_path(target)).into_response(),
        Err(e) => refused(app, &s, target, e, kept),
    }
}

/// `POST /maintenance/<id>/end`: ends (or cancels) a window from a page's list; back to its
/// target's page.
pub async fn end(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    posted: CsrfForm<EndForm>,
) -> Response {
    let CsrfForm { signed_in: s, form } = posted;
    let Ok(id) = id.parse::<i64>() else {
        return not_found_page(&s, "such maintenance window");
    };
    let w = match app.store.window(id) {
        Ok(w) => w,
        Err(StorageError::Missing(_)) => return not_found_page(&s, "such maintenance window"),
        Err(e) => return failed(e),
    };
    let target = (w.target_kind, w.target.as_str());
    match scoped::end(&app, s.user(), id, Some(&form.reason), unix_now()) {
        Ok(_) => Redirect::to(&page_path(target)).into_response(),
        Err(e) => refused(&app, &s, target, e, |error| FormState {
            end_error: Some(error),
            ..FormState::default()
        }),
    }
}

/// `/audit` query.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Entries older than this id.
    #[serde(default)]
    pub before: Option<i64>,
    /// At most this many (API only; the page lists [`AUDIT_PAGE`]).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `GET /audit[?before=ID]`: the audit log the user may see, newest first, [`AUDIT_PAGE`] a
/// page.
pub async fn audit_page(
    State(app): State<Arc<App>>,
    s: SignedIn,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        let page = ErrorPage {
            nav: Some(Nav::of(s.user(), &s.session.csrf)),
            title: "Not understood".into(),
            message: "The address asks for a page of the audit log that does not exist.".into(),
        };
        return html(StatusCode::BAD_REQUEST, &page);
    };
    let mut entries = match scoped::audit(&app, s.user(), q.before, AUDIT_PAGE + 1) {
        Ok(e) => e,
        Err(e) => return failed(e),
    };
    let more = entries.len() > AUDIT_PAGE;
    entries.truncate(AUDIT_PAGE);
    let page = AuditPage {
        nav: Some(Nav::of(s.user(), &s.session.csrf)),
        older: more.then(|| entries.last().map(|e| e.id)).flatten(),
        paged: q.before.is_some(),
        entries,
    };
    html(StatusCode::OK, &page)
}

/// A JSON call of a signed-in user from this site with its session's CSRF token in
/// `X-CSRF-Token`.
pub struct CsrfHeader(pub SignedIn);

impl FromRequestParts<Arc<App>> for CsrfHeader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let s = SignedIn::from_request_parts(parts, app)
            .await
            .map_err(IntoResponse::into_response)?;
        let token = parts
            .headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok());
        if !same_origin(&parts.headers) || !accounts::csrf_matches(&s.session, token) {
            return Err(err(
                StatusCode::FORBIDDEN,
                ErrorCode::Unauthorized,
                "send the session's CSRF token (GET /v1/portal/session) in X-CSRF-Token, from this site",
            )
            .into_response());
        }
        Ok(CsrfHeader(s))
    }
}

/// `GET /v1/portal/session`: who is signed in, and the CSRF token its JSON calls send.
#[derive(Serialize)]
pub struct SessionInfo {
    /// Login name.
    pub login: String,
    /// `operator` or `partner`.
    pub role: Role,
    /// The organisation (partners).
    pub org: Option<String>,
    /// The token for `X-CSRF-Token`.
    pub csrf: String,
}

/// `GET /v1/portal/session`.
pub async fn api_session(s: SignedIn) -> Json<SessionInfo> {
    let u = s.user();
    Json(SessionInfo {
        login: u.id.clone(),
        role: u.role,
        org: u.org.clone(),
        csrf: s.session.csrf.clone(),
    })
}

/// `GET /v1/portal/maintenance[?all=1][&limit=N]`: the windows the user may see, scheduled or
/// in force by start (with `all=1`, every window, newest first).
pub async fn api_windows(
    State(app): State<Arc<App>>,
    s: SignedIn,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<MaintenanceWindow>>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let limit = limit(q.limit)?;
    let all = q.all == Some(1);
    Ok(Json(scoped::windows(
        &app,
        s.user(),
        all,
        limit,
        unix_now(),
    )?))
}

/// `POST /v1/portal/maintenance`: as `POST /v1/admin/maintenance`, for the user's own
/// appliances and sites (another organisation's: 404); 201 with the window.
pub async fn api_disable(
    State(app): State<Arc<App>>,
    CsrfHeader(s): CsrfHeader,
    payload: Result<Json<MaintenanceRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<MaintenanceWindow>), Failure> {
    let req = body(payload)?;
    let now = unix_now();
    let target = rules::target(req.appliance.as_deref(), req.site.as_deref())
        .map_err(MaintenanceFailure::from)?;
    check_id(target.0.as_str(), target.1)?;
    scoped::check_target(&app, s.user(), target)?;
    let span = rules::span(req.duration_secs, req.start, req.end, now)
        .map_err(MaintenanceFailure::from)?;
    let w = scoped::disable(&app, s.user(), target, span, req.reason.as_deref(), now)?;
    Ok((StatusCode::CREATED, Json(w)))
}

/// `POST /v1/portal/maintenance/<id>/end`: as the admin one, for the user's own windows.
pub async fn api_end(
    State(app): State<Arc<App>>,
    CsrfHeader(s): CsrfHeader,
    id: Result<Path<i64>, PathRejection>,
    payload: Result<Json<EndMaintenance>, JsonRejection>,
) -> Result<Json<MaintenanceWindow>, Failure> {
    let Path(id) = id.map_err(|_| bad_request("id: a window id (a number)"))?;
    let req = body(payload)?;
    let w = scoped::end(&app, s.user(), id, req.reason.as_deref(), unix_now())?;
    Ok(Json(w))
}

/// `GET /v1/portal/audit[?before=ID][&limit=N]`: the audit entries the user may see, newest
/// first.
pub async fn api_audit(
    State(app): State<Arc<App>>,
    s: SignedIn,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditEntry>>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let limit = limit(q.limit)?;
    Ok(Json(scoped::audit(&app, s.user(), q.before, limit)?))
}
