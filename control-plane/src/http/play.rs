//! `POST /v1/play`, for a subscriber's player token: the token is checked before the body is
//! read; every failure of it (missing, malformed, forged, expired, another subscriber's, an
//! unknown subscriber) is the same 401.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::Json;
use oca_protocol::playback::{PlayAnswer, PlayRequest};

use crate::app::{unix_now, App};
use crate::http::error::{internal, unauthorized, Failure};
use crate::http::request::{bearer, client_ip, read_json, PLAY_BODY_LIMIT};

/// `POST /v1/play`.
pub async fn play(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    payload: axum::body::Body,
) -> Result<Json<PlayAnswer>, Failure> {
    let subscriber = player(&app, &headers)?;
    let req: PlayRequest = read_json(&headers, payload, PLAY_BODY_LIMIT).await?;
    if req.subscriber.as_ref().is_some_and(|s| *s != subscriber) {
        app.metrics.auth_failures.inc();
        return Err(unauthorized());
    }
    let client = client_ip(&app, peer.ip(), &headers);
    // Everything a play reads is in memory, unless an admin change left the fleet view to be
    // reloaded from storage: that reload runs off the async workers.
    let granted = if app.fleet_stale.load(SeqCst) {
        let app2 = app.clone();
        tokio::task::spawn_blocking(move || app2.play(&subscriber, &req, client, unix_now()))
            .await
            .map_err(|_| internal())??
    } else {
        app.play(&subscriber, &req, client, unix_now())?
    };
    Ok(Json(app.confirm(granted).await?))
}

/// The subscriber a play's token names, when the token is genuine, unexpired and its
/// subscriber exists.
fn player(app: &App, headers: &HeaderMap) -> Result<String, Failure> {
    let known = bearer(headers)
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
