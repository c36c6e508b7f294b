//! The routes: every endpoint of the control plane and who may call it ([`router`]), and the
//! admin listener's few ([`admin_listener`]).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post, put};
use axum::Router;
use oca_protocol::playback::ErrorCode;

use crate::app::App;
use crate::http::error::err;
use crate::http::request::ADMIN_BODY_LIMIT;
use crate::http::{
    accounts, admin, appliance, history, latency, live, maintenance, origin, play, probes,
};
use crate::server::deadline;

/// The router of the API's listener, every request timed by route ([`latency`]).
pub fn router(app: Arc<App>) -> Router {
    let body_timeout = app.body_timeout;
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route("/metrics", get(admin::metrics))
        .route(
            "/v1/admin/sites",
            get(admin::list_sites).post(admin::create_site),
        )
        .route(
            "/v1/admin/sites/{id}/allowed_prefixes",
            put(admin::set_allowed_prefixes),
        )
        .route(
            "/v1/admin/subscribers/{id}/tokens",
            post(admin::issue_token),
        )
        .route(
            "/v1/admin/appliances",
            get(admin::list_appliances).post(admin::create_appliance),
        )
        .route(
            "/v1/admin/appliances/{id}/inventory",
            get(admin::appliance_inventory),
        )
        .route("/v1/admin/keys/rotate", post(admin::rotate_keys))
        .route(
            "/v1/admin/zones",
            get(admin::list_zones).post(admin::put_zone),
        )
        .route("/v1/steer", get(admin::steer))
        .route("/v1/admin/bgp/sessions", get(admin::bgp_sessions))
        .route("/v1/admin/bgp/routes", get(admin::bgp_routes))
        .route("/v1/admin/bgp/inconsistent", get(admin::bgp_inconsistent))
        .route(
            "/v1/admin/maintenance",
            get(maintenance::list).post(maintenance::create),
        )
        .route("/v1/admin/maintenance/{id}/end", post(maintenance::end))
        .route("/v1/admin/audit", get(maintenance::audit))
        .route(
            "/v1/admin/titles",
            get(admin::list_titles).post(admin::create_title),
        )
        .route("/v1/admin/titles/{id}", delete(admin::delete_title))
        .route("/v1/appliances/{id}/manifest", get(appliance::manifest))
        .route(
            "/v1/admin/content",
            get(admin::list_content).post(admin::create_content),
        )
        .route(
            "/v1/admin/subscribers",
            get(admin::list_subscribers).post(admin::put_subscriber),
        )
        .route("/v1/admin/history/appliances/{id}", get(history::appliance))
        .route("/v1/admin/history/sites/{id}", get(history::site))
        .route(
            "/v1/admin/history/appliances/{id}/chart.svg",
            get(history::appliance_chart),
        )
        .route(
            "/v1/admin/history/sites/{id}/chart.svg",
            get(history::site_chart),
        )
        .route("/v1/play", post(play::play))
        .route("/origin/{id}", get(origin::serve))
        .route("/v1/appliances/{id}/health", post(appliance::health))
        .route(
            "/v1/admin/orgs",
            get(accounts::list_orgs).post(accounts::create_org),
        )
        .route(
            "/v1/admin/users",
            get(accounts::list_users).post(accounts::create_user),
        )
        .route("/v1/admin/sites/{id}/org", put(accounts::set_site_org))
        .route(
            "/v1/appliances/{id}/qualification",
            post(live::upload_qualification),
        )
        .route("/v1/admin/issues", get(live::list_issues))
        .merge(crate::portal::routes())
        .fallback(|| async {
            Err::<(), _>(err(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint",
            ))
        })
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            body_timeout,
            deadline::limit_body_time,
        ))
        // Outermost: the time includes the body limits and deadline above.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            latency::observe,
        ))
        .with_state(app)
}

/// The admin listener's router (`admin_listen`): `/metrics` without the admin token, and the
/// probes, on plain HTTP for a scraper on loopback or a management network. Its requests are
/// not timed: the latency histogram is the API's.
pub fn admin_listener(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(probes::healthz))
        .route("/readyz", get(probes::readyz))
        .route(
            "/metrics",
            get(|State(app): State<Arc<App>>| async move { admin::scrape(&app) }),
        )
        .fallback(|| async {
            Err::<(), _>(err(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "no such endpoint: the admin listener serves /metrics, /healthz and /readyz",
            ))
        })
        .with_state(app)
}
