//! Playback (docs/architecture.md, "Playback"): checks a play request and answers signed, ranked URLs per
//! allowed rendition. A refusal is a [`PlayError`], whose [`PlayError::code`] is the stable code
//! the player sees; the HTTP layer gives each its status.

use std::net::IpAddr;

use oca_protocol::playback::{ErrorCode, PlayAnswer, PlayRequest, Rendition};
use oca_protocol::signing::{signed_query, Scope};

use crate::domain::catalog::{CatalogView, Subscriber};
use crate::domain::popularity::Popularity;
use crate::domain::streams::{Lease, Streams};
use crate::domain::url_keys::Keys;
use crate::fleet::Snapshot;
use crate::metrics::Metrics;
use crate::steering::{self, Neighbourhood};
use crate::storage::StorageError;

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
    max_streams: u32,
    durable: tokio::sync::oneshot::Receiver<Result<bool, String>>,
}

impl Granted {
    /// The answer the player gets once the lease is durable.
    pub fn answer(&self) -> &PlayAnswer {
        &self.answer
    }
}

/// Why a play is refused.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    /// The token's subscriber is gone (removed between the token check and the play).
    #[error("unauthorized")]
    Unauthorized,
    /// The subscriber exists but is not active.
    #[error("subscriber is not active")]
    Inactive,
    /// No such title.
    #[error("title {0} is unknown")]
    UnknownTitle(String),
    /// The title is not licensed where the client is (the country, or "an unknown country").
    #[error("title not licensed in {0}")]
    NotLicensed(String),
    /// Every rendition is taller than the plan or the device allows (the limit, in lines).
    #[error("no rendition at or below {0} lines")]
    PlanLimit(u32),
    /// No appliance can serve any allowed rendition.
    #[error("no appliance can serve this title now")]
    NoAppliance,
    /// The plan's other streams fill every slot (the plan's limit).
    #[error("the plan allows {0} streams at once")]
    TooManyStreams(u32),
    /// The stream lease could not be recorded.
    #[error("the stream could not be recorded; retry")]
    NotRecorded,
    /// Storage failed, or a site's keys are missing.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl PlayError {
    /// The stable code a player switches on.
    pub fn code(&self) -> ErrorCode {
        match self {
            PlayError::Unauthorized => ErrorCode::Unauthorized,
            PlayError::Inactive => ErrorCode::InactiveSubscriber,
            PlayError::UnknownTitle(_) => ErrorCode::NotFound,
            PlayError::NotLicensed(_) => ErrorCode::NotLicensed,
            PlayError::PlanLimit(_) => ErrorCode::PlanLimit,
            PlayError::NoAppliance => ErrorCode::NoAppliance,
            PlayError::TooManyStreams(_) => ErrorCode::TooManyStreams,
            PlayError::NotRecorded | PlayError::Storage(_) => ErrorCode::Internal,
        }
    }
}

/// What a play reads, borrowed from the composition root: all of it in memory.
pub struct PlayInputs<'a> {
    /// The catalog and subscribers.
    pub catalog: &'a CatalogView,
    /// The fleet.
    pub fleet: &'a Snapshot,
    /// The URL-signing keys in force.
    pub keys: &'a Keys,
    /// Title popularity, which each play adds to.
    pub popularity: &'a Popularity,
    /// Stream leases.
    pub streams: &'a Streams,
    /// Steering counters.
    pub metrics: &'a Metrics,
    /// Seconds between health reports (an appliance silent for 3 is not steered to).
    pub report_interval_secs: u64,
}

/// The subscriber (authenticated by its token) when it may play the title at all: it exists,
/// is active, and the title exists. Checked before the fleet is read.
pub fn admit<'c>(
    catalog: &'c CatalogView,
    subscriber: &str,
    req: &PlayRequest,
) -> Result<&'c Subscriber, PlayError> {
    // Removed between the token check and here: the answer an unknown one gets.
    let sub = catalog
        .subscriber(subscriber)
        .ok_or(PlayError::Unauthorized)?;
    if !sub.active {
        return Err(PlayError::Inactive);
    }
    if !catalog.title_exists(&req.title) {
        return Err(PlayError::UnknownTitle(req.title.clone()));
    }
    Ok(sub)
}

/// Answers the play request of an admitted subscriber from `client` at `now`; the answer may
/// be sent once [`confirm`] says its lease is durable.
pub fn answer(
    inputs: &PlayInputs<'_>,
    sub: &Subscriber,
    req: &PlayRequest,
    client: IpAddr,
    now: i64,
) -> Result<Granted, PlayError> {
    let PlayInputs {
        catalog,
        fleet: snap,
        keys,
        popularity,
        streams,
        metrics,
        report_interval_secs,
    } = inputs;
    let country = snap.country(client).map(str::to_string);
    let licensed = match &country {
        Some(c) => catalog.licensed(&req.title, c),
        None => false,
    };
    if !licensed {
        let place = country.unwrap_or_else(|| "an unknown country".into());
        return Err(PlayError::NotLicensed(place));
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
        return Err(PlayError::PlanLimit(limit));
    }
    // Demand counts for popularity even when no appliance can serve it yet: that is exactly
    // what the fill planner should hear about.
    popularity.record(&req.title, now);
    let expires = now + URL_TTL_SECS;
    let mut renditions = Vec::new();
    let near = Neighbourhood::of(snap, client);
    for c in allowed {
        let d = steering::steer_near(*report_interval_secs, &near, client, &c.id, now, false);
        metrics.count_steer(&d, now);
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
        return Err(PlayError::NoAppliance);
    }
    // The slot is taken last, so a refused request never holds one.
    let lease_expires = now + STREAM_LEASE_SECS;
    let durable = match streams.take(&sub.id, &req.title, sub.max_streams, now, lease_expires) {
        Lease::Granted(durable) => durable,
        Lease::Refused => return Err(PlayError::TooManyStreams(sub.max_streams)),
    };
    Ok(Granted {
        answer: PlayAnswer {
            title: req.title.clone(),
            expires: expires as u64,
            renditions,
        },
        subscriber: sub.id.clone(),
        lease_expires,
        max_streams: sub.max_streams,
        durable,
    })
}

/// Waits until the play's stream lease is committed; a lease that could not be written is given
/// back and the play fails (503), so no player holds a slot the database does not know of; one
/// storage refused (other replicas' leases fill the plan) is given back and the play is 429.
pub async fn confirm(streams: &Streams, g: Granted) -> Result<PlayAnswer, PlayError> {
    let outcome = g
        .durable
        .await
        .unwrap_or_else(|_| Err("the lease writer stopped".into()));
    match outcome {
        Ok(true) => Ok(g.answer),
        // Other replicas' leases fill the plan.
        Ok(false) => {
            streams.release(&g.subscriber, &g.answer.title, g.lease_expires);
            Err(PlayError::TooManyStreams(g.max_streams))
        }
        Err(e) => {
            streams.release(&g.subscriber, &g.answer.title, g.lease_expires);
            tracing::warn!(error = %e, "play refused: its stream lease was not recorded");
            Err(PlayError::NotRecorded)
        }
    }
}
