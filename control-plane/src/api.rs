//! The HTTP API: admin endpoints (admin bearer token), appliance endpoints (each appliance's
//! credential), plays (a subscriber's token), the embedded origin (signed URLs).
//!
//! Every caller is authenticated from its headers before its body is read: a body is read only
//! for a caller who may send it, within its route's size limit and the body deadline.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use oca_protocol::health::{HealthReply, HealthReport};
use oca_protocol::playback::{ApiError, ErrorCode};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::catalog::{Content, Subscriber, Title};
use crate::db::{Appliance, Db, DbError, Site, Zone};
use crate::{intake, play, steering, url_keys};

/// Largest admin request body (a site, a title with its renditions, a subscriber).
pub const ADMIN_BODY_LIMIT: usize = 1 << 20;

/// Largest health report, read only from an authenticated appliance: a full inventory of a
/// large appliance (a million content ids) fits.
pub const HEALTH_BODY_LIMIT: usize = 64 << 20;

/// Largest play request.
pub const PLAY_BODY_LIMIT: usize = 16 << 10;

/// Health reports announcing more than this are read a few at a time ([`App::large_reports`]).
pub const LARGE_REPORT: usize = 1 << 20;

/// Large health reports read at once: their memory is bounded by this times the limit.
pub const LARGE_REPORTS_AT_ONCE: usize = 4;

/// Shared state of the handlers.
pub struct App {
    /// The database.
    pub db: Arc<Db>,
    /// Titles, renditions and subscribers in memory (written through by the admin API).
    pub catalog: std::sync::RwLock<crate::catalog::CatalogView>,
    /// Concurrent-stream leases.
    pub streams: crate::streams::Streams,
    /// Title popularity from plays.
    pub popularity: crate::popularity::Popularity,
    /// Fill plans and what the planner remembers.
    pub planner: crate::fill::Planner,
    /// Fill settings.
    pub fill: crate::fill::FillConfig,
    /// Counters.
    pub metrics: crate::metrics::Metrics,
    /// Seconds between health reports asked of appliances.
    pub report_interval_secs: u64,
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front of the control plane).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// The embedded origin's directory.
    pub origin_dir: std::path::PathBuf,
    /// SHA-256 of the admin bearer token.
    pub admin_token_sha256: [u8; 32],
    /// Steering's in-memory view of the fleet.
    pub fleet: parking_lot::RwLock<steering::Snapshot>,
    /// Set by admin changes; the next reader of the fleet view reloads it.
    pub fleet_stale: std::sync::atomic::AtomicBool,
    /// The URL-signing keys in force (the database holds them; this avoids a read per request).
    pub keys: std::sync::RwLock<Arc<url_keys::Keys>>,
    /// Signs and verifies player tokens.
    pub player_tokens: crate::player_tokens::TokenKey,
    /// Total time a request body may take to arrive.
    pub body_timeout: std::time::Duration,
    /// Permits to read a large health report ([`LARGE_REPORTS_AT_ONCE`]).
    pub large_reports: tokio::sync::Semaphore,
}

impl App {
    /// Write access to the fleet view (parking_lot's lock does not poison: a panic elsewhere
    /// leaves it usable).
    pub fn fleet_mut(&self) -> parking_lot::RwLockWriteGuard<'_, steering::Snapshot> {
        self.fleet.write()
    }

    /// The URL-signing keys in force.
    pub fn keys(&self) -> Arc<url_keys::Keys> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Rereads the keys from the database (after a rotation or a new site).
    pub fn reload_keys(&self) -> Result<(), DbError> {
        let fresh = Arc::new(url_keys::load(&self.db)?);
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        Ok(())
    }

    /// Read access to the catalog view.
    pub fn catalog(&self) -> std::sync::RwLockReadGuard<'_, crate::catalog::CatalogView> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the catalog view; held across the database write it mirrors, so the view
    /// applies admin changes in the order they committed.
    pub fn catalog_mut(&self) -> std::sync::RwLockWriteGuard<'_, crate::catalog::CatalogView> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks the fleet view stale after an admin change to sites, appliances or zones; the next
    /// reader reloads it, so registering thousands of appliances costs one reload, not one each.
    pub fn fleet_changed(&self) {
        self.fleet_stale
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Read access to the fleet view, reloaded first when an admin change made it stale.
    pub fn fleet(&self) -> Result<parking_lot::RwLockReadGuard<'_, steering::Snapshot>, DbError> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.fleet_stale.load(SeqCst) {
            // The load runs under the write lock, so no reader acts on the view the admin
            // change made stale; a change committed during the load sets the flag again.
            let mut fleet = self.fleet_mut();
            if self.fleet_stale.swap(false, SeqCst) {
                match steering::Snapshot::load(&self.db) {
                    Ok(fresh) => *fleet = fresh,
                    Err(e) => {
                        self.fleet_stale.store(true, SeqCst);
                        return Err(e);
                    }
                }
            }
        }
        Ok(self.fleet.read())
    }
}

/// The router.
pub fn router(app: Arc<App>) -> Router {
    let body_timeout = app.body_timeout;
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .route("/v1/admin/sites", get(list_sites).post(create_site))
        .route(
            "/v1/admin/sites/{id}/allowed_prefixes",
            axum::routing::put(set_allowed_prefixes),
        )
        .route("/v1/admin/subscribers/{id}/tokens", post(issue_token))
        .route(
            "/v1/admin/appliances",
            get(list_appliances).post(create_appliance),
        )
        .route(
            "/v1/admin/appliances/{id}/inventory",
            get(appliance_inventory),
        )
        .route("/v1/admin/keys/rotate", post(rotate_keys))
        .route("/v1/admin/zones", get(list_zones).post(put_zone))
        .route("/v1/steer", get(steer))
        .route("/v1/admin/titles", get(list_titles).post(create_title))
        .route("/v1/admin/titles/{id}", axum::routing::delete(delete_title))
        .route("/v1/appliances/{id}/manifest", get(manifest_handler))
        .route("/v1/admin/content", get(list_content).post(create_content))
        .route(
            "/v1/admin/subscribers",
            get(list_subscribers).post(put_subscriber),
        )
        .route("/v1/play", post(play_handler))
        .route("/origin/{id}", get(crate::origin::serve))
        .route("/v1/appliances/{id}/health", post(health))
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
            crate::server::deadline::limit_body_time,
        ))
        .with_state(app)
}

/// An error answer: status plus the stable JSON error body.
pub struct Failure(StatusCode, ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

/// A failure with its status, code and message.
pub fn err(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure(
        status,
        ApiError {
            code,
            message: message.into(),
        },
    )
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Failure {
        match e {
            DbError::Exists(what) => err(
                StatusCode::CONFLICT,
                ErrorCode::BadRequest,
                format!("{what} already exists"),
            ),
            DbError::Missing(what) => err(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                format!("{what} does not exist"),
            ),
            DbError::Sqlite(e) => {
                tracing::error!(error = %e, "database error");
                err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error",
                )
            }
        }
    }
}

/// A JSON body (admin routes, after the admin check), or a 400/408/413 that says which field is
/// wrong and why.
fn body<T>(payload: Result<Json<T>, JsonRejection>) -> Result<T, Failure> {
    match payload {
        Ok(Json(v)) => Ok(v),
        Err(JsonRejection::BytesRejection(r)) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(too_large(ADMIN_BODY_LIMIT))
        }
        Err(r) if crate::server::deadline::is_timeout(&r) => Err(body_timeout()),
        Err(r) => Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            r.body_text(),
        )),
    }
}

fn too_large(limit: usize) -> Failure {
    err(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        format!("body over {limit} bytes"),
    )
}

fn body_timeout() -> Failure {
    err(
        StatusCode::REQUEST_TIMEOUT,
        ErrorCode::RequestTimeout,
        "the request body did not arrive in time",
    )
}

/// Reads a JSON body of at most `limit` bytes (refused before reading when its length says it
/// is larger) within the body deadline; for callers already authenticated.
async fn read_json<T: serde::de::DeserializeOwned>(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<T, Failure> {
    if announced_length(headers).is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let e = e.into_inner();
        if crate::server::deadline::is_timeout(e.as_ref()) {
            body_timeout()
        } else if e.is::<http_body_util::LengthLimitError>() {
            too_large(limit)
        } else {
            err(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                "the request body could not be read",
            )
        }
    })?;
    // The path names the field, as axum's `Json` does for the admin routes.
    serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&bytes)).map_err(
        |e| {
            err(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                format!("{}: {}", e.path(), e.inner()),
            )
        },
    )
}

/// The body length a request announces (`Content-Length`).
fn announced_length(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// Proof that the request carried the admin bearer token.
pub struct Admin;

impl FromRequestParts<Arc<App>> for Admin {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Admin, Failure> {
        let presented = bearer(parts).map(|t| Sha256::digest(t.as_bytes()));
        match presented {
            Some(h) if constant_time_eq(&h, &app.admin_token_sha256) => Ok(Admin),
            // One answer for missing, malformed and wrong: no hint of which.
            _ => {
                app.metrics.auth_failures.inc();
                Err(unauthorized())
            }
        }
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    bearer_header(&parts.headers)
}

/// The token of an `Authorization: Bearer` header.
fn bearer_header(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    v.strip_prefix("Bearer ").map(str::trim)
}

/// Compares without an early exit, so timing says nothing about where two values differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Ids of sites and appliances travel in URLs and logs: the content-id alphabet, 1-64 long.
fn check_id(field: &str, id: &str) -> Result<(), Failure> {
    if id.len() <= 64 && oca_store::ContentId::parse(id).is_ok() {
        Ok(())
    } else {
        Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("{field}: {id:?} is not a valid id (1-64 characters of [A-Za-z0-9._-], not starting with '.')"),
        ))
    }
}

async fn list_sites(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Vec<Site>>, Failure> {
    Ok(Json(app.db.sites()?))
}

async fn create_site(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Site>, JsonRejection>,
) -> Result<(StatusCode, Json<Site>), Failure> {
    let site = body(payload)?;
    check_id("id", &site.id)?;
    app.db.create_site(&site)?;
    url_keys::ensure(&app.db, unix_now())?;
    app.reload_keys()?;
    app.fleet_changed();
    Ok((StatusCode::CREATED, Json(site)))
}

/// `PUT /v1/admin/sites/<id>/allowed_prefixes`: the routes the site's appliances may report.
async fn set_allowed_prefixes(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    payload: Result<Json<Vec<oca_protocol::prefix::Prefix>>, JsonRejection>,
) -> Result<Json<Vec<oca_protocol::prefix::Prefix>>, Failure> {
    let prefixes = body(payload)?;
    app.db.set_allowed_prefixes(&id, &prefixes)?;
    tracing::info!(site = %id, prefixes = prefixes.len(), "allowed prefixes set; they apply from each appliance's next report");
    Ok(Json(prefixes))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// Lifetime in seconds (default one day, at most 30 days).
    #[serde(default)]
    ttl_secs: Option<i64>,
}

#[derive(Serialize)]
struct IssuedToken {
    subscriber: String,
    token: String,
    expires: i64,
}

/// `POST /v1/admin/subscribers/<id>/tokens`: a player token for the subscriber.
async fn issue_token(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    payload: Result<Json<TokenRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<IssuedToken>), Failure> {
    let req = body(payload)?;
    let ttl = req
        .ttl_secs
        .unwrap_or(crate::player_tokens::DEFAULT_TTL_SECS);
    if !(1..=crate::player_tokens::MAX_TTL_SECS).contains(&ttl) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!(
                "ttl_secs: 1 to {} seconds",
                crate::player_tokens::MAX_TTL_SECS
            ),
        ));
    }
    if app.catalog().subscriber(&id).is_none() {
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

async fn list_appliances(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<crate::db::ApplianceState>>, Failure> {
    let stale_after = 3 * app.report_interval_secs as i64;
    Ok(Json(app.db.appliance_states(unix_now(), stale_after)?))
}

/// The answer to a registration: the credential is shown this once and stored only as a hash.
#[derive(Serialize)]
struct Registered {
    appliance: Appliance,
    credential: String,
}

async fn create_appliance(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Appliance>, JsonRejection>,
) -> Result<(StatusCode, Json<Registered>), Failure> {
    let a = body(payload)?;
    check_id("id", &a.id)?;
    if !(a.url.starts_with("http://") || a.url.starts_with("https://")) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "url: must start with http:// or https://",
        ));
    }
    let credential = new_secret();
    let hash: [u8; 32] = Sha256::digest(credential.as_bytes()).into();
    app.db.create_appliance(&a, &hash, unix_now())?;
    app.fleet_changed();
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            appliance: a,
            credential,
        }),
    ))
}

async fn list_titles(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Vec<Title>>, Failure> {
    Ok(Json(app.db.titles()?))
}

async fn create_title(
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
    app.db.create_title(&t)?;
    view.add_title(t.clone());
    Ok((StatusCode::CREATED, Json(t)))
}

async fn delete_title(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, Failure> {
    let removed = {
        let mut view = app.catalog_mut();
        let removed = app.db.delete_title(&id)?;
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

async fn list_content(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<Content>>, Failure> {
    Ok(Json(app.db.content(None)?))
}

async fn create_content(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Content>, JsonRejection>,
) -> Result<(StatusCode, Json<Content>), Failure> {
    let c = body(payload)?;
    if oca_store::ContentId::parse(&c.id).is_err() {
        return Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            format!("id: {:?} is not a content id", c.id),
        ));
    }
    if c.sha256.len() != 64 || !c.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "sha256: 64 hex digits",
        ));
    }
    let mut view = app.catalog_mut();
    app.db.create_content(&c)?;
    view.add_content(c.clone());
    app.planner.invalidate();
    Ok((StatusCode::CREATED, Json(c)))
}

async fn list_subscribers(
    _: Admin,
    State(app): State<Arc<App>>,
) -> Result<Json<Vec<Subscriber>>, Failure> {
    Ok(Json(app.db.subscribers()?))
}

async fn put_subscriber(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Subscriber>, JsonRejection>,
) -> Result<(StatusCode, Json<Subscriber>), Failure> {
    let s = body(payload)?;
    check_id("id", &s.id)?;
    let mut view = app.catalog_mut();
    app.db.put_subscriber(&s)?;
    view.put_subscriber(s.clone());
    Ok((StatusCode::CREATED, Json(s)))
}

fn check_country(c: &str) -> Result<(), Failure> {
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "country: two upper-case letters (ISO 3166-1 alpha-2)",
        ))
    }
}

/// `POST /v1/play`: the token is checked before the body is read; every failure of it (missing,
/// malformed, forged, expired, another subscriber's, an unknown subscriber) is the same 401.
async fn play_handler(
    State(app): State<Arc<App>>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    payload: axum::body::Body,
) -> Result<Json<oca_protocol::playback::PlayAnswer>, Failure> {
    let subscriber = player(&app, &headers)?;
    let req: oca_protocol::playback::PlayRequest =
        read_json(&headers, payload, PLAY_BODY_LIMIT).await?;
    if req.subscriber.as_ref().is_some_and(|s| *s != subscriber) {
        app.metrics.auth_failures.inc();
        return Err(unauthorized());
    }
    let client = client_ip(&app, peer.ip(), &headers);
    // Everything a play reads is in memory, unless an admin change left the fleet view to be
    // reloaded from the database: that reload runs off the async workers.
    let granted = if app.fleet_stale.load(std::sync::atomic::Ordering::SeqCst) {
        let app2 = app.clone();
        tokio::task::spawn_blocking(move || {
            play::play(&app2, &subscriber, &req, client, unix_now())
        })
        .await
        .map_err(|_| internal())??
    } else {
        play::play(&app, &subscriber, &req, client, unix_now())?
    };
    play::confirm(&app, granted).await.map(Json)
}

/// The subscriber a play's token names, when the token is genuine, unexpired and its
/// subscriber exists.
fn player(app: &App, headers: &axum::http::HeaderMap) -> Result<String, Failure> {
    let known = bearer_header(headers)
        .and_then(|t| app.player_tokens.verify(t, unix_now()))
        .filter(|s| app.catalog().subscriber(s).is_some());
    match known {
        Some(s) => Ok(s.to_string()),
        None => {
            app.metrics.auth_failures.inc();
            Err(unauthorized())
        }
    }
}

fn internal() -> Failure {
    err(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Internal,
        "internal error",
    )
}

/// The client's address: the peer, or the last `X-Forwarded-For` hop when the peer is a trusted
/// proxy.
fn client_ip(
    app: &App,
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
) -> std::net::IpAddr {
    if !app.trusted_proxies.contains(&peer) {
        return peer;
    }
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(peer)
}

/// `/metrics`, for the admin token only: figures about the fleet are not for the Internet.
async fn metrics(_: Admin, State(app): State<Arc<App>>) -> String {
    app.metrics.render()
}

async fn list_zones(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Vec<Zone>>, Failure> {
    Ok(Json(app.db.zones()?))
}

async fn put_zone(
    _: Admin,
    State(app): State<Arc<App>>,
    payload: Result<Json<Zone>, JsonRejection>,
) -> Result<(StatusCode, Json<Zone>), Failure> {
    let zone = body(payload)?;
    if let Some(c) = &zone.country {
        check_country(c)?;
    }
    app.db.put_zone(&zone)?;
    app.fleet_changed();
    Ok((StatusCode::CREATED, Json(zone)))
}

#[derive(serde::Deserialize)]
struct SteerQuery {
    client_ip: std::net::IpAddr,
    content_id: String,
    #[serde(default)]
    explain: Option<u8>,
}

async fn steer(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<axum::extract::Query<SteerQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<oca_protocol::steering::SteerAnswer>, Failure> {
    let q = query
        .map_err(|r| {
            err(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadRequest,
                r.body_text(),
            )
        })?
        .0;
    let snap = app.fleet()?;
    let d = steering::steer(
        app.report_interval_secs,
        &snap,
        q.client_ip,
        &q.content_id,
        unix_now(),
        q.explain == Some(1),
    );
    app.metrics.steer_decisions.inc();
    if d.content_miss {
        app.metrics.content_misses.inc();
    }
    if d.health_miss {
        app.metrics.health_misses.inc();
    }
    Ok(Json(d.answer))
}

async fn appliance_inventory(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<Vec<String>>, Failure> {
    Ok(Json(intake::inventory(&app.db, &id)?))
}

#[derive(Serialize)]
struct Rotated {
    current: String,
}

/// Rotates every keyring (the origin's and each site's).
async fn rotate_keys(_: Admin, State(app): State<Arc<App>>) -> Result<Json<Rotated>, Failure> {
    let ids = url_keys::rotate_all(&app.db, unix_now())?;
    app.reload_keys()?;
    tracing::info!(keys = ids.len(), "rotated the URL-signing keys");
    Ok(Json(Rotated {
        current: ids.join(","),
    }))
}

fn unauthorized() -> Failure {
    err(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "unauthorized",
    )
}

/// Checks the appliance's own credential for the appliance named in the URL: it opens only that
/// appliance's URLs, so one appliance cannot report or fetch a manifest for another.
fn appliance_auth(app: &App, id: &str, headers: &axum::http::HeaderMap) -> Result<(), Failure> {
    let Some(token) = bearer_header(headers) else {
        app.metrics.auth_failures.inc();
        return Err(unauthorized());
    };
    if !intake::authenticate(&app.db, id, token)? {
        app.metrics.auth_failures.inc();
        return Err(unauthorized());
    }
    Ok(())
}

/// `GET /v1/appliances/<id>/manifest`: 304 when `If-None-Match` names the current version.
async fn manifest_handler(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
) -> Result<Response, Failure> {
    appliance_auth(&app, &id, &headers)?;
    let app2 = app.clone();
    let m = tokio::task::spawn_blocking(move || -> Result<_, DbError> {
        let snap = app2.fleet()?;
        Ok(crate::fill::manifest(&app2, &snap, &id, unix_now()))
    })
    .await
    .map_err(|_| internal())??
    .map_err(|why| match why {
        crate::fill::NoManifest::Unknown => err(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "unknown appliance",
        ),
        crate::fill::NoManifest::NoStorage => err(
            StatusCode::CONFLICT,
            ErrorCode::BadRequest,
            "no disks reported yet: nothing can be planned before the first health report",
        ),
    })?;
    let etag = format!("\"{}\"", m.version);
    let unchanged = headers
        .get(axum::http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, [(axum::http::header::ETAG, etag)]).into_response());
    }
    Ok(([(axum::http::header::ETAG, etag)], Json(m)).into_response())
}

/// `POST /v1/appliances/<id>/health`: the credential is checked before the body is read; a large
/// report waits for one of [`LARGE_REPORTS_AT_ONCE`] permits (within the body deadline).
async fn health(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
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
        return Err(err(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "oca_id: must match the URL",
        ));
    }
    let app2 = app.clone();
    let (accepted, manifest_version, site, refused) = tokio::task::spawn_blocking(move || -> Result<_, DbError> {
        let now = unix_now();
        let standing = intake::standing(&app2.db, &report.oca_id)?;
        let (report, refused) = intake::screen_prefixes(report, &standing.allowed);
        if !refused.is_empty() {
            tracing::warn!(oca_id = %report.oca_id, site = %standing.site, refused = ?refused, "reported prefixes outside the site's allowed set dropped");
            app2.metrics.prefixes_refused.inc_by(refused.len() as u64);
        }
        let accepted = intake::record(&app2.db, &report, now)?;
        // Memory follows the database only once the report is committed.
        steering::Snapshot::apply(&app2.fleet, &report, accepted.send_full_inventory, now);
        if !report.fill_errors.is_empty() {
            for e in &report.fill_errors {
                tracing::warn!(oca_id = %report.oca_id, content = %e.content_id, source = %e.source, reason = %e.reason, "fill source failed");
            }
            app2.metrics.fill_source_errors.inc_by(report.fill_errors.len() as u64);
            app2.planner.report_bad_sources(&report.fill_errors, now);
        }
        let snap = app2.fleet()?;
        let version = crate::fill::manifest(&app2, &snap, &report.oca_id, now).map_or(0, |m| m.version);
        Ok((accepted, version, standing.site, refused))
    })
    .await
    .map_err(|_| internal())??;
    app.metrics.health_reports.inc();
    let keys = app.keys();
    Ok(Json(HealthReply {
        keys: keys.site(&site)?.to_wire(),
        manifest_version,
        report_interval_secs: app.report_interval_secs,
        inventory_seq: accepted.inventory_seq,
        send_full_inventory: accepted.send_full_inventory,
        refused_prefixes: refused,
    }))
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// 32 random bytes, base64url without padding: credentials and tokens.
pub fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the kernel's random source is available");
    URL_SAFE_NO_PAD.encode(bytes)
}
