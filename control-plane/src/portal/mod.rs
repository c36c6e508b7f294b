//! The partner portal: server-rendered pages at the control plane's root URL for the people of
//! the ISPs hosting appliances (partners) and for operators, and a JSON API scoped the same way.
//!
//! Lowest first (a module uses only those above it):
//!
//! - [`chart`]: the traffic charts, drawn as SVG on the server (pure); [`forms`]: form fields
//!   read and checked;
//! - [`view`]: what a user may see, built once for pages and API (the scoping rule itself is
//!   [`crate::domain::accounts::may_see_site`]);
//! - [`maintenance`], [`issues`], [`traffic`]: each feature's data for the pages, scoped;
//! - [`templates`]: the askama templates the pages render;
//! - [`auth`]: sign in and out, the session cookie, the [`auth::SignedIn`] extractor, CSRF
//!   checks on every form ([`auth::CsrfForm`]);
//! - the handlers: [`pages`] (overview, site, appliance and their API), [`actions`]
//!   (maintenance forms and API), [`issue_pages`] (`/issues` and its API), [`history_api`]
//!   (scoped history, CSV, charts), [`reports`] (`/reports`).
//!
//! Every portal answer carries `Content-Security-Policy: default-src 'self'` (no inline script
//! or style, no framing, forms post only here), `X-Frame-Options: DENY`,
//! `Referrer-Policy: same-origin` and `X-Content-Type-Options: nosniff`; pages are
//! `Cache-Control: no-store`, as they show a user's data. Accounts, sessions and the decisions
//! behind them: docs/portal.md.

pub mod actions;
pub mod auth;
pub mod chart;
pub mod forms;
pub mod history_api;
pub mod issue_pages;
pub mod issues;
pub mod maintenance;
pub mod pages;
pub mod reports;
pub mod templates;
pub mod traffic;
pub mod view;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::App;

/// The stylesheet, compiled in.
const CSS: &str = include_str!("../../static/portal.css");

/// The policy every portal answer carries.
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

/// `/static/portal.css`.
async fn css() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

/// Adds the portal's security headers to an answer.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The portal's routes (merged into the control plane's router).
pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/sites/{id}", get(pages::site))
        .route("/appliances/{id}", get(pages::appliance))
        .route("/static/portal.css", get(css))
        .route("/v1/portal/sites", get(pages::api_sites))
        .route("/v1/portal/sites/{id}", get(pages::api_site))
        .route("/v1/portal/appliances/{id}", get(pages::api_appliance))
        .route("/sites/{id}/maintenance", post(actions::disable_site))
        .route(
            "/appliances/{id}/maintenance",
            post(actions::disable_appliance),
        )
        .route("/maintenance/{id}/end", post(actions::end))
        .route("/audit", get(actions::audit_page))
        .route("/v1/portal/session", get(actions::api_session))
        .route(
            "/v1/portal/maintenance",
            get(actions::api_windows).post(actions::api_disable),
        )
        .route("/v1/portal/maintenance/{id}/end", post(actions::api_end))
        .route("/v1/portal/audit", get(actions::api_audit))
        .route(
            "/v1/portal/history/appliances/{id}",
            get(history_api::appliance),
        )
        .route(
            "/v1/portal/history/appliances/{id}/chart.svg",
            get(history_api::appliance_chart),
        )
        .route("/v1/portal/history/sites/{id}", get(history_api::site))
        .route(
            "/v1/portal/history/sites/{id}/chart.svg",
            get(history_api::site_chart),
        )
        .route("/issues", get(issue_pages::issues_page))
        .route("/v1/portal/issues", get(issue_pages::api_issues))
        .route("/reports", get(reports::reports_page))
        .layer(DefaultBodyLimit::max(auth::FORM_BODY_LIMIT))
        .layer(axum::middleware::from_fn(security_headers))
}
