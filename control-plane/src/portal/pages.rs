//! The portal's pages and its scoped JSON API (`/v1/portal/*`, the same session cookie): both
//! show what [`crate::portal::view`] builds for the signed-in user, so a page and its API call
//! can never disagree about who may see what. Another organisation's site or appliance is 404,
//! exactly as one that does not exist.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use oca_protocol::playback::ErrorCode;

use crate::app::{unix_now, App};
use crate::http::error::{err, Failure};
use crate::portal::auth::{NotSignedIn, SignedIn};
use crate::portal::forms::DisableForm;
use crate::portal::issues;
use crate::portal::maintenance::records;
use crate::portal::templates::{
    html, AppliancePage, ErrorPage, MaintenanceSection, Nav, OverviewPage, SitePage,
};
use crate::portal::traffic::{self, TrafficPanel};
use crate::portal::view::{self, ApplianceDetail, SiteDetail, SiteSummary};
use crate::storage::{Scope, StorageError};
use oca_protocol::history::HistoryOf;

fn nav(s: &SignedIn) -> Option<Nav> {
    Some(Nav::of(s.user(), &s.session.csrf))
}

/// 404 for people: the same for what does not exist and what the user may not see.
pub fn not_found_page(s: &SignedIn, what: &str) -> Response {
    html(
        StatusCode::NOT_FOUND,
        &ErrorPage {
            nav: nav(s),
            title: "Not found".into(),
            message: format!("There is no {what} here that your account may see."),
        },
    )
}

fn not_found_api(what: &str) -> Failure {
    err(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("{what} does not exist"),
    )
}

/// A storage failure as an answer.
pub fn failed(e: StorageError) -> Response {
    Failure::from(e).into_response()
}

/// `/`: the overview when signed in, the login page otherwise.
pub async fn overview(
    State(app): State<Arc<App>>,
    signed_in: Result<SignedIn, NotSignedIn>,
) -> Response {
    let s = match signed_in {
        Ok(s) => s,
        Err(NotSignedIn::Failed(f)) => return f.into_response(),
        Err(_) => return Redirect::to("/login").into_response(),
    };
    let page = view::sites(&app, s.user(), unix_now()).and_then(|sites| {
        Ok(OverviewPage {
            nav: nav(&s),
            sites,
            issues: issues::overview_panel(&app, s.user())?,
        })
    });
    match page {
        Ok(page) => html(StatusCode::OK, &page),
        Err(e) => failed(e),
    }
}

/// The state of a page's maintenance forms: what was typed and why it was refused.
#[derive(Default)]
pub struct FormState {
    /// The disable form as posted.
    pub form: DisableForm,
    /// Why the disable form was refused.
    pub error: Option<String>,
    /// Why an end form was refused.
    pub end_error: Option<String>,
}

fn section(
    s: &SignedIn,
    action: String,
    what: &'static str,
    state: FormState,
) -> MaintenanceSection {
    MaintenanceSection {
        action,
        what,
        csrf: s.session.csrf.clone(),
        form: state.form,
        error: state.error,
        end_error: state.end_error,
        records: Default::default(),
    }
}

/// The traffic panel, or none (logged) when the history cannot be read: the rest of the page
/// still helps.
fn traffic_panel(app: &App, of: HistoryOf, id: &str, now: i64) -> Option<TrafficPanel> {
    traffic::panel(app, of, id, now)
        .inspect_err(|e| tracing::warn!(error = %e, id, "traffic history for a portal page"))
        .ok()
}

/// `/sites/<id>`.
pub async fn site(State(app): State<Arc<App>>, s: SignedIn, Path(id): Path<String>) -> Response {
    site_page(&app, &s, &id, FormState::default(), StatusCode::OK)
}

/// The site page with its forms in `state`, answered with `status`.
pub fn site_page(
    app: &App,
    s: &SignedIn,
    id: &str,
    state: FormState,
    status: StatusCode,
) -> Response {
    let now = unix_now();
    let detail = match view::site(app, s.user(), id, now) {
        Ok(Some(detail)) => detail,
        Ok(None) => return not_found_page(s, "such site"),
        Err(e) => return failed(e),
    };
    let mut maintenance = section(
        s,
        format!("/sites/{id}/maintenance"),
        "every appliance of this site",
        state,
    );
    match records(app, Scope::Site(id), false, now) {
        Ok(r) => maintenance.records = r,
        Err(e) => return failed(e),
    }
    let issues = match issues::site_panel(app, s.user(), id) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    html(
        status,
        &SitePage {
            nav: nav(s),
            detail,
            maintenance,
            traffic: traffic_panel(app, HistoryOf::Site, id, now),
            issues,
        },
    )
}

/// `/appliances/<id>`.
pub async fn appliance(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
) -> Response {
    appliance_page(&app, &s, &id, FormState::default(), StatusCode::OK)
}

/// The appliance page with its forms in `state`, answered with `status`.
pub fn appliance_page(
    app: &App,
    s: &SignedIn,
    id: &str,
    state: FormState,
    status: StatusCode,
) -> Response {
    let now = unix_now();
    let detail = match view::appliance(app, s.user(), id, now) {
        Ok(Some(detail)) => detail,
        Ok(None) => return not_found_page(s, "such appliance"),
        Err(e) => return failed(e),
    };
    let mut maintenance = section(
        s,
        format!("/appliances/{id}/maintenance"),
        "this appliance",
        state,
    );
    let scope = Scope::Appliance {
        id,
        site: &detail.appliance.site,
    };
    match records(app, scope, true, now) {
        Ok(r) => maintenance.records = r,
        Err(e) => return failed(e),
    }
    let issues = match issues::appliance_panel(app, s.user(), id, &detail.appliance.site) {
        Ok(p) => p,
        Err(e) => return failed(e),
    };
    html(
        status,
        &AppliancePage {
            nav: nav(s),
            maintenance,
            traffic: traffic_panel(app, HistoryOf::Appliance, id, now),
            detail,
            issues,
        },
    )
}

/// `GET /v1/portal/sites`: the sites the user may see.
pub async fn api_sites(
    State(app): State<Arc<App>>,
    s: SignedIn,
) -> Result<Json<Vec<SiteSummary>>, Failure> {
    Ok(Json(view::sites(&app, s.user(), unix_now())?))
}

/// `GET /v1/portal/sites/<id>`: a site with its appliances; 404 unless the user may see it.
pub async fn api_site(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
) -> Result<Json<SiteDetail>, Failure> {
    view::site(&app, s.user(), &id, unix_now())?
        .map(Json)
        .ok_or_else(|| not_found_api(&format!("site {id}")))
}

/// `GET /v1/portal/appliances/<id>`: an appliance with its disks and BGP; 404 unless the user
/// may see its site.
pub async fn api_appliance(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
) -> Result<Json<ApplianceDetail>, Failure> {
    view::appliance(&app, s.user(), &id, unix_now())?
        .map(Json)
        .ok_or_else(|| not_found_api(&format!("appliance {id}")))
}
