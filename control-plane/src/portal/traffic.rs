//! Traffic on the portal: the traffic panel of the appliance and site pages (the chart inline,
//! the last 24 hours); the scoped history endpoints are [`super::history_api`].

use oca_protocol::history::HistoryOf;
use serde::Serialize;

use crate::app::App;
use crate::domain::history::{self, HistoryError};
use crate::http::history::draw;
use crate::portal::view;

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
        view::bytes(self.total_bytes)
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
