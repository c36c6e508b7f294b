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
use crate::portal::templates::{html, AppliancePage, ErrorPage, Nav, OverviewPage, SitePage};
use crate::portal::view::{self, ApplianceDetail, SiteDetail, SiteSummary};
use crate::storage::StorageError;

fn nav(s: &SignedIn) -> Option<Nav> {
    Some(Nav::of(s.user(), &s.session.csrf))
}

fn not_found_page(s: &SignedIn, what: &str) -> Response {
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

fn failed(e: StorageError) -> Response {
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
    match view::sites(&app, s.user(), unix_now()) {
        Ok(sites) => html(
            StatusCode::OK,
            &OverviewPage {
                nav: nav(&s),
                sites,
            },
        ),
        Err(e) => failed(e),
    }
}

/// `/sites/<id>`.
pub async fn site(State(app): State<Arc<App>>, s: SignedIn, Path(id): Path<String>) -> Response {
    match view::site(&app, s.user(), &id, unix_now()) {
        Ok(Some(detail)) => html(
            StatusCode::OK,
            &SitePage {
                nav: nav(&s),
                detail,
            },
        ),
        Ok(None) => not_found_page(&s, "such site"),
        Err(e) => failed(e),
    }
}

/// `/appliances/<id>`.
pub async fn appliance(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
) -> Response {
    match view::appliance(&app, s.user(), &id, unix_now()) {
        Ok(Some(detail)) => html(
            StatusCode::OK,
            &AppliancePage {
                nav: nav(&s),
                detail,
            },
        ),
        Ok(None) => not_found_page(&s, "such appliance"),
        Err(e) => failed(e),
    }
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
