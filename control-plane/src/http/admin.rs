//! The admin API (`/v1/admin/*`, `/v1/steer`, `/metrics`): for the admin bearer token only
//! (the admin listener serves `/metrics` without it, [`scrape`]).
//! Its bodies are [`oca_protocol::admin`]'s types; each change is written to storage first and
//! then to the in-memory view it mirrors.

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use oca_protocol::admin::{
    Appliance, ApplianceState, BgpAppliance, BgpRoutes, Content, InconsistentSite, IssuedToken,
    Registered, Rotated, Site, Subscriber, Title, TokenRequest, Zone,
};
use oca_protocol::prefix::Prefix;
use oca_protocol::steering::SteerAnswer;

use crate::app::{unix_now, App};
use crate::domain::{credentials, player_tokens, url_keys};
use crate::http::error::{bad_request, err, unauthorized, Failure};
use crate::http::request::{bearer, body, check_country, check_id};
use crate::storage::ReportedAppliance;
use crate::{routing, steering};
use oca_protocol::playback::ErrorCode;

/// Proof that the request carried the admin bearer token.
pub struct Admin;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, Failure> {
        match bearer(&parts.headers) {
            Some(t) if credentials::matches(t, &app.admin_token_sha256) => Ok(Admin),
            // One answer for missing, malformed and wrong: no hint of which.
            _ => {
                app.metrics.auth_failures.inc();
                Err(unauthorized())
            }
        }
    }
}

/// `GET /v1/admin/sites`.
pub async fn list_sites(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Vec<Site>>, Failure> {
    Ok(Json(app.store.sites()?))
}

/// `POST /v1/admin/sites`: the site gets its first URL-signing key.
pub async fn create_site(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Site>, JsonRejection>,
) -> Result<(StatusCode, Json<Site>), Failure> {
    let site = body(payload)?;
    check_id("id", &site.id)?;
    if site.id == crate::domain::history::NO_SITE {
        return Err(bad_request(
            "id: \"-\" stands for \"no site\" in the traffic history",
        ));
    }
    app.store.create_site(&site)?;
    url_keys::ensure(app.store.as_ref(), unix_now())?;
    app.reload_keys()?;
    app.registered(std::slice::from_ref(&site), Vec::new());
    Ok((StatusCode::CREATED, Json(site)))
}

/// `PUT /v1/admin/sites/<id>/allowed_prefixes`: the routes the site's appliances may report.
pub async fn set_allowed_prefixes(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    payload: Result<Json<Vec<Prefix>>, JsonRejection>,
) -> Result<Json<Vec<Prefix>>, Failure> {
    let prefixes = body(payload)?;
    app.store.set_allowed_prefixes(&id, &prefixes)?;
    tracing::info!(site = %id, prefixes = prefixes.len(), "allowed prefixes set; they apply from each appliance's next report");
    Ok(Json(prefixes))
}

/// `POST /v1/admin/subscribers/<id>/tokens`: a player token for the subscriber.
pub async fn issue_token(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    payload: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedToken>), Failure> {
    let req = body(payload)?;
    let ttl = req.ttl_secs.unwrap_or(player_tokens::DEFAULT_TTL_SECS);
    if !(1..=player_tokens::MAX_TTL_SECS).contains(&ttl) {
        return Err(bad_request(format!(
            "ttl_secs: 1 to {} seconds",
            player_tokens::MAX_TTL_SECS
        )));
    }
    if !app.subscriber_exists(&id)? {
        return Err(err(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("subscriber {id} does not exist"),
        ));
    }
    let expires = unix_now() + ttl;
    let token = app.player_tokens.issue(&id, expires);
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            subscriber: id,
            token,
            expires,
        }),
    ))
}

/// `GET /v1/admin/appliances`: each with its health and serving (maintenance) state.
pub async fn list_appliances(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<ApplianceState>>, Failure> {
    let stale_after = app.stale_after();
    let now = unix_now();
    let mut states = app.store.appliance_states(now, stale_after)?;
    crate::services::maintenance::annotate(&app, &mut states, now)?;
    Ok(Json(states))
}

/// `POST /v1/admin/appliances`: registers an appliance; its credential is in the answer only.
pub async fn create_appliance(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Appliance>, JsonRejection>,
) -> Result<(StatusCode, Json<Registered>), Failure> {
    let a = body(payload)?;
    check_id("id", &a.id)?;
    if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
        return Err(bad_request("url: must start with http:// or https://"));
    }
    let credential = credentials::new_secret();
    let hash = credentials::sha256(&credential);
    app.store.create_appliance(&a, &hash, unix_now())?;
    app.registered(&[], vec![ReportedAppliance::unreported(a.clone())]);
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            appliance: a,
            credential,
        }),
    ))
}

/// `GET /v1/admin/appliances/<id>/inventory`: the content ids it holds.
pub async fn appliance_inventory(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<String>>, Failure> {
    Ok(Json(app.store.inventory(&id)?))
}

/// `GET /v1/admin/titles`.
pub async fn list_titles(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<Title>>, Failure> {
    Ok(Json(app.store.titles()?))
}

/// `POST /v1/admin/titles`.
pub async fn create_title(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Title>, JsonRejection>,
) -> Result<(StatusCode, Json<Title>), Failure> {
    let t = body(payload)?;
    check_id("id", &t.id)?;
    for c in &t.countries {
        check_country(c)?;
    }
    let mut view = app.catalog_mut();
    app.store.create_title(&t)?;
    view.add_title(t.clone());
    Ok((StatusCode::CREATED, Json(t)))
}

/// `DELETE /v1/admin/titles/<id>`: with its renditions and their origin copies.
pub async fn delete_title(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    let removed = {
        let mut view = app.catalog_mut();
        let removed = app.store.delete_title(&id)?;
        view.remove_title(&id);
        removed
    };
    app.popularity.forget(&id);
    app.planner.invalidate();
    for c in &removed {
        // The origin copy goes too; appliances drop theirs when it leaves their manifests.
        let _ = std::fs::remove_file(app.origin_dir.join(c));
    }
    tracing::info!(title = %id, files = removed.len(), "title removed from the catalog");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/admin/content`.
pub async fn list_content(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<Content>>, Failure> {
    Ok(Json(app.store.content(None)?))
}

/// `POST /v1/admin/content`: a rendition of an existing title.
pub async fn create_content(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Content>, JsonRejection>,
) -> Result<(StatusCode, Json<Content>), Failure> {
    let c = body(payload)?;
    if oca_store::ContentId::parse(&c.id).is_err() {
        return Err(bad_request(format!("id: {:?} is not a content id", c.id)));
    }
    if c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad_request("sha256: 64 hex digits"));
    }
    app.fill
        .s3
        .check(&c.origin)
        .map_err(|e| bad_request(e.to_string()))?;
    let mut view = app.catalog_mut();
    app.store.create_content(&c)?;
    view.add_content(c.clone());
    app.planner.invalidate();
    Ok((StatusCode::CREATED, Json(c)))
}

/// `GET /v1/admin/subscribers`.
pub async fn list_subscribers(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<Subscriber>>, Failure> {
    Ok(Json(app.store.subscribers()?))
}

/// `POST /v1/admin/subscribers`: adds or replaces one.
pub async fn put_subscriber(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Subscriber>, JsonRejection>,
) -> Result<(StatusCode, Json<Subscriber>), Failure> {
    let s = body(payload)?;
    check_id("id", &s.id)?;
    let mut view = app.catalog_mut();
    app.store.put_subscriber(&s)?;
    view.put_subscriber(s.clone());
    Ok((StatusCode::CREATED, Json(s)))
}

/// `/metrics`, for the admin token only: figures about the fleet are not for the Internet.
/// The admin listener serves the same without the token ([`crate::http::router::admin_listener`]).
pub async fn metrics(_: Admin, State(app): State<Arc<App>>) -> Result<String, Failure> {
    scrape(&app)
}

/// The metrics as of now, the gauges read off the fleet view and readiness set first.
pub fn scrape(app: &App) -> Result<String, Failure> {
    {
        let snap = app.fleet()?;
        let now = unix_now();
        app.metrics.observe_bgp(&snap, now, app.stale_after());
        app.metrics.observe_fleet(&snap, now, app.stale_after());
    }
    let ready = app.readiness.check(std::time::Instant::now()).is_ok();
    app.metrics.ready.set(i64::from(ready));
    Ok(app.metrics.render())
}

/// `GET /v1/admin/bgp/sessions` query.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsQuery {
    #[serde(default)]
    oca_id: Option<String>,
}

/// `GET /v1/admin/bgp/sessions[?oca_id=A]`: each appliance's BGP sessions as last reported.
pub async fn bgp_sessions(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<SessionsQuery>, QueryRejection>,
) -> Result<Json<Vec<BgpAppliance>>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let snap = app.fleet()?;
    Ok(Json(routing::sessions(&snap, q.oca_id.as_deref())))
}

/// Routes the explorer lists when no `limit` is given.
pub const DEFAULT_ROUTE_LIMIT: usize = 1_000;

/// Most routes the explorer lists at once.
pub const MAX_ROUTE_LIMIT: usize = 100_000;

/// `GET /v1/admin/bgp/routes` query.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesQuery {
    #[serde(default)]
    prefix: Option<Prefix>,
    #[serde(default)]
    oca_id: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// `GET /v1/admin/bgp/routes[?prefix=P][&oca_id=A][&limit=N]`: the route explorer: who hears a
/// prefix, with its attributes, and which route steering prefers.
pub async fn bgp_routes(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<RoutesQuery>, QueryRejection>,
) -> Result<Json<BgpRoutes>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let limit = q.limit.unwrap_or(DEFAULT_ROUTE_LIMIT);
    if !(1..=MAX_ROUTE_LIMIT).contains(&limit) {
        return Err(bad_request(format!("limit: 1 to {MAX_ROUTE_LIMIT}")));
    }
    let app2 = app.clone();
    let answer = tokio::task::spawn_blocking(move || {
        // Who hears a prefix comes from the view; their routes' attributes from storage, by
        // appliance (storage has no index by prefix). A report between the two reads shows as
        // a route not yet, or no longer, best.
        let oca_ids: Option<Vec<String>> = match (&q.oca_id, &q.prefix) {
            (Some(id), _) => Some(vec![id.clone()]),
            (None, Some(p)) => Some(routing::hearing(&*app2.fleet()?, p)),
            (None, None) => None,
        };
        let mut stored = Vec::new();
        match oca_ids {
            Some(ids) => {
                for id in ids {
                    let left = (limit + 1).saturating_sub(stored.len());
                    if left == 0 {
                        break;
                    }
                    stored.extend(app2.store.bgp_routes(Some(&id), q.prefix.as_ref(), left)?);
                }
            }
            None => stored = app2.store.bgp_routes(None, None, limit + 1)?,
        }
        let snap = app2.fleet()?;
        Ok::<_, crate::storage::StorageError>(routing::explore(
            &snap,
            stored,
            q.prefix.as_ref(),
            q.oca_id.as_deref(),
            limit,
        ))
    })
    .await
    .map_err(|_| crate::http::error::internal())??;
    Ok(Json(answer))
}

/// `GET /v1/admin/bgp/inconsistent`: sites whose appliances hear different prefixes.
pub async fn bgp_inconsistent(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<InconsistentSite>>, Failure> {
    let snap = app.fleet()?;
    Ok(Json(routing::inconsistent(
        &snap,
        unix_now(),
        app.stale_after(),
    )))
}

/// `GET /v1/admin/zones`.
pub async fn list_zones(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Vec<Zone>>, Failure> {
    Ok(Json(app.store.zones()?))
}

/// `POST /v1/admin/zones`: adds or replaces one.
pub async fn put_zone(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Zone>, JsonRejection>,
) -> Result<(StatusCode, Json<Zone>), Failure> {
    let zone = body(payload)?;
    if let Some(c) = &zone.country {
        check_country(c)?;
    }
    app.store.put_zone(&zone)?;
    if let Err(e) = app.reload_zones() {
        tracing::warn!(error = %e, "rereading coverage zones; reloading the fleet view");
        app.fleet_changed();
    }
    Ok((StatusCode::CREATED, Json(zone)))
}

/// `GET /v1/steer` query.
#[derive(serde::Deserialize)]
pub struct SteerQuery {
    client_ip: std::net::IpAddr,
    content_id: String,
    #[serde(default)]
    explain: Option<u8>,
}

/// `GET /v1/steer?client_ip=&content_id=[&explain=1]`: one steering decision, explained if
/// asked.
pub async fn steer(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<SteerQuery>, QueryRejection>,
) -> Result<Json<SteerAnswer>, Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    let snap = app.fleet()?;
    let now = unix_now();
    let d = steering::steer(
        app.report_interval_secs,
        &snap,
        q.client_ip,
        &q.content_id,
        now,
        q.explain == Some(1),
    );
    app.metrics.count_steer(&d, now);
    Ok(Json(d.answer))
}

/// `POST /v1/admin/keys/rotate`: every keyring (the origin's and each site's) gets a new
/// current key.
pub async fn rotate_keys(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Rotated>, Failure> {
    let ids = url_keys::rotate_all(app.store.as_ref(), unix_now())?;
    app.reload_keys()?;
    tracing::info!(keys = ids.len(), "rotated the URL-signing keys");
    Ok(Json(Rotated {
        current: ids.join(","),
    }))
}
