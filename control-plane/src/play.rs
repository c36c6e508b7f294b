//! Playback (DESIGN.md "Playback"): checks a play request and answers signed, ranked URLs per
//! allowed rendition.

use std::net::IpAddr;

use axum::http::StatusCode;
use oca_protocol::playback::{ErrorCode, PlayAnswer, PlayRequest, Rendition};
use oca_protocol::signing::{signed_query, Scope};

use crate::api::{err, App, Failure};
use crate::steering;
use crate::streams::Lease;

/// How long play URLs stay valid.
pub const URL_TTL_SECS: i64 = 6 * 3600;

/// How long one play request holds a stream slot (a player asking again for the same title
/// renews its slot instead of taking another).
pub const STREAM_LEASE_SECS: i64 = 15 * 60;

/// A play answer whose stream lease is being written.
pub struct Granted {
    answer: PlayAnswer,
    subscriber: String,
    lease_expires: i64,
    durable: tokio::sync::oneshot::Receiver<Result<(), String>>,
}

/// Answers a play request of `subscriber` (authenticated by its token) from `client` at `now`;
/// the answer may be sent once [`confirm`] says its lease is durable.
pub fn play(
    app: &App,
    subscriber: &str,
    req: &PlayRequest,
    client: IpAddr,
    now: i64,
) -> Result<Granted, Failure> {
    let catalog = app.catalog();
    let sub = catalog.subscriber(subscriber).ok_or_else(|| {
        // Removed between the token check and here: the answer an unknown one gets.
        err(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "unauthorized",
        )
    })?;
    if !sub.active {
        return Err(err(
            StatusCode::FORBIDDEN,
            ErrorCode::InactiveSubscriber,
            "subscriber is not active",
        ));
    }
    if !catalog.title_exists(&req.title) {
        return Err(err(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("title {} is unknown", req.title),
        ));
    }
    let snap = app.fleet()?;
    let country = snap.country(client).map(str::to_string);
    let licensed = match &country {
        Some(c) => catalog.licensed(&req.title, c),
        None => false,
    };
    if !licensed {
        let place = country.unwrap_or_else(|| "an unknown country".into());
        return Err(err(
            StatusCode::FORBIDDEN,
            ErrorCode::NotLicensed,
            format!("title not licensed in {place}"),
        ));
    }
    let limit = req
        .device
        .max_resolution
        .map_or(sub.max_resolution, |d| d.min(sub.max_resolution));
    let allowed: Vec<_> = catalog
        .renditions(&req.title)
        .iter()
        .filter(|c| c.resolution <= limit)
        .collect();
    if allowed.is_empty() {
        return Err(err(
            StatusCode::FORBIDDEN,
            ErrorCode::PlanLimit,
            format!("no rendition at or below {limit} lines"),
        ));
    }
    // Demand counts for popularity even when no appliance can serve it yet: that is exactly
    // what the fill planner should hear about.
    app.popularity.record(&req.title, now);
    let keys = app.keys();
    let expires = now + URL_TTL_SECS;
    let mut renditions = Vec::new();
    let near = snap.neighbourhood(client);
    for c in allowed {
        let d = steering::steer_near(app.report_interval_secs, &near, client, &c.id, now, false);
        app.metrics.steer_decisions.inc();
        if d.content_miss {
            app.metrics.content_misses.inc();
        }
        if d.health_miss {
            app.metrics.health_misses.inc();
        }
        if d.answer.appliances.is_empty() {
            continue;
        }
        // Each URL under its appliance's site key: only that site's appliances verify it. An
        // answer's appliances come from a few sites: one signature per site.
        let mut urls = Vec::with_capacity(d.answer.appliances.len());
        let mut signed: Vec<(&str, String)> = Vec::new();
        for a in &d.answer.appliances {
            let query = match signed.iter().find(|(s, _)| *s == a.site) {
                Some((_, q)) => q.clone(),
                None => {
                    let key = keys.site(&a.site)?.current();
                    let q = signed_query(key, &c.id, expires as u64, Scope::Play);
                    signed.push((&a.site, q.clone()));
                    q
                }
            };
            urls.push(format!(
                "{}/c/{}?{query}",
                a.url.trim_end_matches('/'),
                c.id
            ));
        }
        renditions.push(Rendition {
            content_id: c.id.clone(),
            resolution: c.resolution,
            bitrate_kbps: c.bitrate_kbps,
            size: c.size,
            sha256: c.sha256.clone(),
            content_type: c.content_type.clone(),
            urls,
        });
    }
    if renditions.is_empty() {
        return Err(err(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NoAppliance,
            "no appliance can serve this title now",
        ));
    }
    // The slot is taken last, so a refused request never holds one.
    let lease_expires = now + STREAM_LEASE_SECS;
    let durable = match app
        .streams
        .take(&sub.id, &req.title, sub.max_streams, now, lease_expires)
    {
        Lease::Granted(durable) => durable,
        Lease::Refused => {
            return Err(err(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyStreams,
                format!("the plan allows {} streams at once", sub.max_streams),
            ))
        }
    };
    Ok(Granted {
        answer: PlayAnswer {
            title: req.title.clone(),
            expires: expires as u64,
            renditions,
        },
        subscriber: sub.id.clone(),
        lease_expires,
        durable,
    })
}

/// Waits until the play's stream lease is committed; a lease that could not be written is given
/// back and the play fails (503), so no player holds a slot the database does not know of.
pub async fn confirm(app: &App, g: Granted) -> Result<PlayAnswer, Failure> {
    let outcome = g
        .durable
        .await
        .unwrap_or_else(|_| Err("the lease writer stopped".into()));
    match outcome {
        Ok(()) => Ok(g.answer),
        Err(e) => {
            app.streams
                .release(&g.subscriber, &g.answer.title, g.lease_expires);
            tracing::warn!(error = %e, "play refused: its stream lease was not recorded");
            Err(err(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                "the stream could not be recorded; retry",
            ))
        }
    }
}
