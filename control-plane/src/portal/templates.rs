//! The portal's pages as askama templates (`control-plane/templates/`), checked when the crate
//! compiles; every value is HTML-escaped by askama. Each page has a `nav`: the signed-in user
//! and the token of the logout form, none on the login and error pages of a visitor.

use askama::Template;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::domain::accounts::PortalUser;
use crate::portal::view::{ApplianceDetail, SiteDetail, SiteSummary};
use oca_protocol::accounts::Role;

/// The page header's account part.
pub struct Nav {
    /// Login name.
    pub user: String,
    /// "operator" or the organisation's id.
    pub scope: String,
    /// The session's CSRF token, for the logout form.
    pub csrf: String,
}

impl Nav {
    /// The header of `user`'s pages.
    pub fn of(user: &PortalUser, csrf: &str) -> Nav {
        Nav {
            user: user.id.clone(),
            scope: match user.role {
                Role::Operator => "operator: every organisation".into(),
                Role::Partner => user.org.clone().unwrap_or_default(),
            },
            csrf: csrf.to_string(),
        }
    }
}

/// `/login`.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// None: signed out.
    pub nav: Option<Nav>,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The login name typed last.
    pub login: String,
}

/// A refusal or an error, for people.
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// The header, when signed in.
    pub nav: Option<Nav>,
    /// The heading.
    pub title: String,
    /// What happened and what to do.
    pub message: String,
}

/// `/`: the organisation overview.
#[derive(Template)]
#[template(path = "overview.html")]
pub struct OverviewPage {
    /// The header.
    pub nav: Option<Nav>,
    /// The sites the user may see.
    pub sites: Vec<SiteSummary>,
}

/// `/sites/<id>`.
#[derive(Template)]
#[template(path = "site.html")]
pub struct SitePage {
    /// The header.
    pub nav: Option<Nav>,
    /// The site.
    pub detail: SiteDetail,
}

/// `/appliances/<id>`.
#[derive(Template)]
#[template(path = "appliance.html")]
pub struct AppliancePage {
    /// The header.
    pub nav: Option<Nav>,
    /// The appliance.
    pub detail: ApplianceDetail,
}

/// Renders a page with `status` (500 when the template fails, which askama's checks make a bug).
pub fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a portal page");
            crate::http::error::internal().into_response()
        }
    }
}
