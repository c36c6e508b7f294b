//! Traffic on the portal: the scoped history endpoints (`/v1/portal/history/...`: JSON, CSV,
//! SVG chart), which check who may see the appliance or site and then answer exactly as the
//! admin history API does ([`crate::http::history`]), and the traffic panel of the appliance
//! and site pages (the chart inline, the last 24 hours).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use oca_protocol::history::HistoryOf;
use serde::Serialize;

use crate::app::App;
use crate::domain::history::{self, HistoryError};
use crate::http::error::Failure;
use crate::http::history::{answer, draw, svg, HistoryQuery};
use crate::portal::auth::SignedIn;
use crate::portal::view;
use crate::storage::StorageError;

/// A page's traffic section.
#[derive(Serialize, Clone, Debug)]
pub struct TrafficPanel {
    /// The chart, an SVG document (no script; `role="img"` with a text description).
    pub svg: String,
    /// The same history as CSV (a download).
    pub csv_url: String,
    /// Bytes served over the range.
    pub total_bytes: u64,
    /// Plays of the site's clients for which no appliance held the file (sites only).
    pub content_misses: u64,
    /// Plays of the site's clients whose holders were all unusable (sites only).
    pub health_misses: u64,
}

impl TrafficPanel {
    /// Bytes served, for people.
    pub fn total(&self) -> String {
        bytes(self.total_bytes)
    }
}

/// Bytes for people: kB, MB, GB or TB (decimal, as disks and links are sold).
pub fn bytes(n: u64) -> String {
    let b = n as f64;
    match n {
        0..1_000_000 => format!("{} kB", (b / 1e3).round()),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        1_000_000_000..1_000_000_000_000 => format!("{:.1} GB", b / 1e9),
        _ => format!("{:.1} TB", b / 1e12),
    }
}

/// The last 24 hours of appliance or site `id` (already checked visible) as a page shows them.
pub fn panel(app: &App, of: HistoryOf, id: &str, now: i64) -> Result<TrafficPanel, HistoryError> {
    let range = history::range(None, None, now, &app.history)?;
    let h = history::history(app.store.as_ref(), of, id, range, &app.history)?;
    let sum = |f: fn(&oca_protocol::history::HistoryBucket) -> Option<u64>| {
        h.buckets.iter().filter_map(f).sum()
    };
    Ok(TrafficPanel {
        csv_url: format!("/v1/portal/history/{}s/{id}?format=csv", of.as_str()),
        total_bytes: h.total_bytes,
        content_misses: sum(|b| b.content_misses),
        health_misses: sum(|b| b.health_misses),
        svg: draw(&h),
    })
}

/// 404 unless `s` may see `of` `id`.
fn visible(app: &App, s: &SignedIn, of: HistoryOf, id: &str) -> Result<(), Failure> {
    let seen = match of {
        HistoryOf::Appliance => view::appliance_site(app, s.user(), id)?.is_some(),
        HistoryOf::Site => view::may_see_site_id(app, s.user(), id)?,
    };
    if seen {
        Ok(())
    } else {
        Err(StorageError::Missing(format!("{} {id}", of.as_str())).into())
    }
}

/// `GET /v1/portal/history/appliances/<id>[?from=&to=&format=csv]`.
pub async fn appliance(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Appliance, &id)?;
    answer(&app, HistoryOf::Appliance, &id, query).await
}

/// `GET /v1/portal/history/sites/<id>[?from=&to=&format=csv]`.
pub async fn site(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Site, &id)?;
    answer(&app, HistoryOf::Site, &id, query).await
}

/// `GET /v1/portal/history/appliances/<id>/chart.svg[?from=&to=]`.
pub async fn appliance_chart(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Appliance, &id)?;
    svg(&app, HistoryOf::Appliance, &id, query).await
}

/// `GET /v1/portal/history/sites/<id>/chart.svg[?from=&to=]`.
pub async fn site_chart(
    State(app): State<Arc<App>>,
    s: SignedIn,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    visible(&app, &s, HistoryOf::Site, &id)?;
    svg(&app, HistoryOf::Site, &id, query).await
}
