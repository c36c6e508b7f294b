//! The traffic history API (admin token): an appliance's or a site's buckets as JSON, as CSV
//! (`?format=csv`, a download) or drawn as an SVG chart (`.../chart.svg`) for the portal's pages
//! to embed. Ranges are `?from=&to=` in unix seconds (default the last 24 hours, bounded by
//! [`crate::domain::history::MAX_BUCKETS_PER_CALL`] buckets).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use oca_protocol::history::{History, HistoryOf};

use crate::app::{unix_now, App};
use crate::domain::history::{self, NO_SITE};
use crate::http::admin::Admin;
use crate::http::error::{bad_request, Failure};
use crate::http::request::check_id;
use crate::portal::chart::{self, Chart};

/// `?from=&to=&format=`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    from: Option<i64>,
    to: Option<i64>,
    format: Option<String>,
}

/// Chart size in pixels.
const CHART_SIZE: (u32, u32) = (720, 280);

/// `GET /v1/admin/history/appliances/<id>[?from=&to=&format=json|csv]`.
pub async fn appliance(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    answer(&app, HistoryOf::Appliance, &id, query).await
}

/// `GET /v1/admin/history/sites/<id>[?from=&to=&format=json|csv]` (`-`: misses of clients in
/// no site).
pub async fn site(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    answer(&app, HistoryOf::Site, &id, query).await
}

/// `GET /v1/admin/history/appliances/<id>/chart.svg[?from=&to=]`.
pub async fn appliance_chart(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    svg(&app, HistoryOf::Appliance, &id, query).await
}

/// `GET /v1/admin/history/sites/<id>/chart.svg[?from=&to=]`.
pub async fn site_chart(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    svg(&app, HistoryOf::Site, &id, query).await
}

/// Which answer a query asks for.
enum Format {
    Json,
    Csv,
}

/// The history asked for, read off the request thread (a site's buckets are summed by the
/// database).
async fn load(
    app: &Arc<App>,
    of: HistoryOf,
    id: &str,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<(History, Format), Failure> {
    let q = query.map_err(|r| bad_request(r.body_text()))?.0;
    if !(of == HistoryOf::Site && id == NO_SITE) {
        check_id("id", id)?;
    }
    let format = match q.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("csv") => Format::Csv,
        Some(other) => {
            return Err(bad_request(format!(
                "format: {other:?}; json (default) or csv"
            )))
        }
    };
    let range = history::range(q.from, q.to, unix_now(), &app.history)?;
    let (app, id) = (app.clone(), id.to_string());
    let h = tokio::task::spawn_blocking(move || {
        history::history(app.store.as_ref(), of, &id, range, &app.history)
    })
    .await
    .map_err(|_| crate::http::error::internal())??;
    Ok((h, format))
}

/// The history of `of` `id` as the query asks: JSON, or CSV as a download (shared by the
/// admin API and the portal's scoped API, which checks who may see it first).
pub async fn answer(
    app: &Arc<App>,
    of: HistoryOf,
    id: &str,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let (h, format) = load(app, of, id, query).await?;
    Ok(match format {
        Format::Json => Json(h).into_response(),
        Format::Csv => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", h.csv_file_name()),
                ),
            ],
            h.to_csv(),
        )
            .into_response(),
    })
}

/// The history of `of` `id` drawn as the traffic chart (shared like [`answer`]).
pub async fn svg(
    app: &Arc<App>,
    of: HistoryOf,
    id: &str,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, Failure> {
    let (h, _) = load(app, of, id, query).await?;
    let body = draw(&h);
    Ok((
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "private, max-age=60"),
        ],
        body,
    )
        .into_response())
}

/// Gigabits per second from bytes per second.
fn gbps(bytes_per_sec: u64) -> f64 {
    bytes_per_sec as f64 * 8.0 / 1e9
}

/// A history as the portal's traffic chart: Gb/s, each bucket at its middle, the registered
/// capacity as the capacity line.
pub fn draw(h: &History) -> String {
    let half = h.bucket_secs as i64 / 2;
    let with_reports = h.buckets.iter().filter(|b| b.reports > 0);
    let mean: Vec<(i64, f64)> = with_reports
        .clone()
        .map(|b| (b.start + half, gbps(b.bytes_per_sec_mean)))
        .collect();
    let peak: Vec<(i64, f64)> = with_reports
        .map(|b| (b.start + half, gbps(b.bytes_per_sec_peak)))
        .collect();
    let title = format!("Traffic of {} {}", h.of.as_str(), h.id);
    chart::render(&Chart {
        title: &title,
        units: "Gb/s",
        width: CHART_SIZE.0,
        height: CHART_SIZE.1,
        from: h.from,
        to: h.to,
        step: h.bucket_secs as i64,
        mean: &mean,
        peak: &peak,
        capacity: (h.capacity_bps > 0).then(|| h.capacity_bps as f64 / 1e9),
    })
}
