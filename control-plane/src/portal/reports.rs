//! `/reports`: a site's traffic totals over the last 24 hours (one row a history bucket), 7
//! days or 30 days (one row a UTC day): bytes served, peak Gb/s, content misses and health
//! misses, with links to the CSV downloads of the site and of each of its appliances.
//!
//! The page is a GET form (it changes nothing, so it carries no CSRF token): a select of the
//! sites the user may see ([`view::sites`], the one scoping rule; at most
//! [`MAX_SITES_LISTED`], then a text field with suggestions) and a range. The figures are the
//! traffic history's ([`history::history`], as the history API and the pages' charts read it),
//! summed here per row; the CSV links ask the scoped history API for exactly the same range.
//! Another organisation's site is 404, as one that does not exist.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use oca_protocol::history::{History, HistoryOf};
use serde::Deserialize;

use crate::app::{unix_now, App};
use crate::domain::history::{self, HistoryConfig, HistoryError, Range};
use crate::domain::maintenance as rules;
use crate::http::error::{internal, Failure};
use crate::portal::auth::SignedIn;
use crate::portal::pages::{failed, not_found_page};
use crate::portal::templates::{html, ErrorPage, Nav};
use crate::portal::view;
use crate::portal::view::bytes;

/// Most sites the form's select lists; past it the form takes a typed site id.
pub const MAX_SITES_LISTED: usize = 500;

/// Most appliances of a site given a CSV link.
pub const MAX_APPLIANCE_LINKS: usize = 200;

const DAY: i64 = 86_400;

/// `?site=&range=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    site: Option<String>,
    range: Option<String>,
}

/// The ranges a report covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Span {
    /// The last 24 hours, one row a history bucket.
    Day,
    /// Today and the 6 UTC days before, one row a day.
    Week,
    /// Today and the 29 UTC days before, one row a day.
    Month,
}

impl Span {
    /// Every range, as the form offers them.
    pub const ALL: [Span; 3] = [Span::Day, Span::Week, Span::Month];

    /// The range named in a query (`24h`, `7d`, `30d`; none: `24h`).
    pub fn parse(s: Option<&str>) -> Option<Span> {
        match s {
            None | Some("") | Some("24h") => Some(Span::Day),
            Some("7d") => Some(Span::Week),
            Some("30d") => Some(Span::Month),
            Some(_) => None,
        }
    }

    /// Its name in queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Span::Day => "24h",
            Span::Week => "7d",
            Span::Month => "30d",
        }
    }

    /// Its name for people.
    pub fn label(self) -> &'static str {
        match self {
            Span::Day => "Last 24 hours",
            Span::Week => "Last 7 days",
            Span::Month => "Last 30 days",
        }
    }

    /// UTC days covered; none for the last 24 hours (rows are buckets).
    fn days(self) -> Option<i64> {
        match self {
            Span::Day => None,
            Span::Week => Some(7),
            Span::Month => Some(30),
        }
    }
}

/// One row of a report: the sums over a day or a bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReportRow {
    /// Its first second, unix seconds.
    pub start: i64,
    /// Bytes served.
    pub total_bytes: u64,
    /// Highest bytes per second of its buckets (a site's: the sum of its appliances' peaks).
    pub peak_bytes_per_sec: u64,
    /// Plays for which no appliance held the file.
    pub content_misses: u64,
    /// Plays whose holders were all unusable.
    pub health_misses: u64,
}

impl ReportRow {
    fn add(&mut self, b: &oca_protocol::history::HistoryBucket) {
        self.total_bytes = self.total_bytes.saturating_add(b.total_bytes);
        self.peak_bytes_per_sec = self.peak_bytes_per_sec.max(b.bytes_per_sec_peak);
        self.content_misses = self
            .content_misses
            .saturating_add(b.content_misses.unwrap_or(0));
        self.health_misses = self
            .health_misses
            .saturating_add(b.health_misses.unwrap_or(0));
    }

    fn merge(&mut self, r: &ReportRow) {
        self.total_bytes = self.total_bytes.saturating_add(r.total_bytes);
        self.peak_bytes_per_sec = self.peak_bytes_per_sec.max(r.peak_bytes_per_sec);
        self.content_misses = self.content_misses.saturating_add(r.content_misses);
        self.health_misses = self.health_misses.saturating_add(r.health_misses);
    }

    /// Bytes served, for people.
    pub fn bytes(&self) -> String {
        bytes(self.total_bytes)
    }

    /// The peak in Gb/s, for people.
    pub fn peak_gbps(&self) -> String {
        format!("{:.2}", self.peak_bytes_per_sec as f64 * 8.0 / 1e9)
    }
}

/// The history's buckets summed into rows of `row_secs` (aligned to the unix epoch, so days are
/// UTC days), oldest first; rows without buckets are left out, as the history leaves gaps.
pub fn rows(h: &History, row_secs: i64) -> Vec<ReportRow> {
    let mut out: Vec<ReportRow> = Vec::new();
    for b in &h.buckets {
        let start = b.start - b.start.rem_euclid(row_secs.max(1));
        match out.last_mut() {
            Some(r) if r.start == start => r.add(b),
            _ => {
                let mut r = ReportRow {
                    start,
                    ..ReportRow::default()
                };
                r.add(b);
                out.push(r);
            }
        }
    }
    out
}

/// The range of `span` at `now`, and whether it was cut to what one history call may span
/// (short buckets): the last 24 hours as the history API's default, or whole UTC days up to
/// the end of the bucket filling now.
pub fn span_range(
    span: Span,
    now: i64,
    cfg: &HistoryConfig,
) -> Result<(Range, bool), HistoryError> {
    let last_day = history::range(None, None, now, cfg)?;
    let Some(days) = span.days() else {
        return Ok((last_day, last_day.to - last_day.from < DAY));
    };
    let wanted = now - now.rem_euclid(DAY) - (days - 1) * DAY;
    let from = wanted.max(last_day.to - cfg.max_range_secs());
    Ok((
        history::range(Some(from), Some(last_day.to), now, cfg)?,
        from > wanted,
    ))
}

/// A CSV download link.
pub struct CsvLink {
    /// What it is of, for people.
    pub what: String,
    /// The scoped history API's address for it.
    pub url: String,
}

/// A site's report.
pub struct Report {
    /// The site.
    pub site: String,
    /// Its range.
    pub span: Span,
    /// The range read.
    pub range: Range,
    /// Whether the range was cut to what the history may answer at once.
    pub cut: bool,
    /// The rows, oldest first.
    pub rows: Vec<ReportRow>,
    /// The sums over all rows.
    pub total: ReportRow,
    /// The site's CSV, then its appliances'.
    pub csv: Vec<CsvLink>,
    /// Appliances without a link (over [`MAX_APPLIANCE_LINKS`]).
    pub more_appliances: usize,
    /// The history's bucket length, seconds.
    pub bucket_secs: u64,
}

impl Report {
    /// A row's first second for people: the day, or the day and time of a bucket.
    pub fn when(&self, r: &ReportRow) -> String {
        let t = rules::utc(r.start);
        match self.span {
            Span::Day => format!("{} {} UTC", &t[..10], &t[11..16]),
            _ => t[..10].to_string(),
        }
    }

    /// The range read, for people.
    pub fn range_label(&self) -> String {
        let (from, to) = (rules::utc(self.range.from), rules::utc(self.range.to));
        format!(
            "{} {} to {} {} UTC",
            &from[..10],
            &from[11..16],
            &to[..10],
            &to[11..16]
        )
    }

    /// What one row covers, for people.
    pub fn row_label(&self) -> String {
        match self.span {
            Span::Day => format!("one row per {}-second bucket", self.bucket_secs),
            _ => "one row per UTC day".into(),
        }
    }
}

/// The report of site `id` (already checked visible) over `span` at `now`.
async fn report(app: &Arc<App>, id: &str, span: Span, now: i64) -> Result<Report, Failure> {
    let (range, cut) = span_range(span, now, &app.history)?;
    let h = {
        let (app, id) = (app.clone(), id.to_string());
        tokio::task::spawn_blocking(move || {
            history::history(
                app.store.as_ref(),
                HistoryOf::Site,
                &id,
                range,
                &app.history,
            )
        })
        .await
        .map_err(|_| internal())??
    };
    let row_secs = match span {
        Span::Day => h.bucket_secs as i64,
        _ => DAY,
    };
    let rows = rows(&h, row_secs);
    let mut total = ReportRow::default();
    for r in &rows {
        total.merge(r);
    }
    let query = format!("format=csv&from={}&to={}", range.from, range.to);
    let mut appliances: Vec<String> = app
        .fleet()?
        .site_appliances(id)
        .into_iter()
        .map(|a| a.id.clone())
        .collect();
    appliances.sort();
    let more_appliances = appliances.len().saturating_sub(MAX_APPLIANCE_LINKS);
    let mut csv = vec![CsvLink {
        what: format!("site {id}"),
        url: format!("/v1/portal/history/sites/{id}?{query}"),
    }];
    csv.extend(
        appliances
            .iter()
            .take(MAX_APPLIANCE_LINKS)
            .map(|a| CsvLink {
                what: format!("appliance {a}"),
                url: format!("/v1/portal/history/appliances/{a}?{query}"),
            }),
    );
    Ok(Report {
        site: id.to_string(),
        span,
        range,
        cut,
        rows,
        total,
        csv,
        more_appliances,
        bucket_secs: h.bucket_secs,
    })
}

/// `/reports`.
#[derive(Template)]
#[template(path = "reports.html")]
pub struct ReportsPage {
    /// The header.
    pub nav: Option<Nav>,
    /// The sites the form offers, by id.
    pub sites: Vec<String>,
    /// Whether the user may see more sites than listed (the form then takes a typed id).
    pub more_sites: bool,
    /// The site chosen, if any.
    pub chosen: String,
    /// The range chosen.
    pub span: Span,
    /// The report, once a site is chosen.
    pub report: Option<Report>,
}

impl ReportsPage {
    /// The ranges offered.
    pub fn spans(&self) -> &'static [Span] {
        &Span::ALL
    }
}

/// `GET /reports[?site=ID&range=24h|7d|30d]`: the form, and the report of the site chosen.
pub async fn reports_page(
    State(app): State<Arc<App>>,
    s: SignedIn,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Response {
    let nav = Some(Nav::of(s.user(), &s.session.csrf));
    let (q, span) = match query {
        Ok(Query(q)) => match Span::parse(q.range.as_deref()) {
            Some(span) => (q, span),
            None => return not_understood(nav),
        },
        Err(_) => return not_understood(nav),
    };
    let now = unix_now();
    let sites = match view::sites(&app, s.user(), now) {
        Ok(sites) => sites,
        Err(e) => return failed(e),
    };
    let chosen = q.site.unwrap_or_default();
    let report = if chosen.is_empty() {
        None
    } else {
        match view::may_see_site_id(&app, s.user(), &chosen) {
            Ok(true) => {}
            Ok(false) => return not_found_page(&s, "such site"),
            Err(e) => return failed(e),
        }
        match report(&app, &chosen, span, now).await {
            Ok(r) => Some(r),
            Err(f) => return axum::response::IntoResponse::into_response(f),
        }
    };
    let page = ReportsPage {
        nav,
        more_sites: sites.len() > MAX_SITES_LISTED,
        sites: sites
            .into_iter()
            .take(MAX_SITES_LISTED)
            .map(|s| s.id)
            .collect(),
        chosen,
        span,
        report,
    };
    html(StatusCode::OK, &page)
}

fn not_understood(nav: Option<Nav>) -> Response {
    let page = ErrorPage {
        nav,
        title: "Not understood".into(),
        message: "The address asks for a report that does not exist: choose a site and a range \
                  of 24h, 7d or 30d."
            .into(),
    };
    html(StatusCode::BAD_REQUEST, &page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oca_protocol::history::HistoryBucket;

    fn bucket(start: i64, bytes: u64, peak: u64, content: u64) -> HistoryBucket {
        HistoryBucket {
            start,
            reports: 1,
            bytes_per_sec_mean: peak,
            bytes_per_sec_peak: peak,
            connections_mean: 0,
            connections_peak: 0,
            requests_per_sec_mean: 0,
            total_bytes: bytes,
            content_misses: Some(content),
            health_misses: Some(1),
        }
    }

    #[test]
    fn buckets_are_summed_per_utc_day_and_peaks_are_the_highest() {
        let h = History {
            of: HistoryOf::Site,
            id: "s".into(),
            from: 0,
            to: 3 * DAY,
            bucket_secs: 300,
            capacity_bps: 0,
            total_bytes: 0,
            buckets: vec![
                bucket(0, 10, 5, 1),
                bucket(300, 20, 9, 2),
                bucket(2 * DAY, 7, 3, 0),
            ],
        };
        let r = rows(&h, DAY);
        assert_eq!(r.len(), 2, "a day without buckets is a gap");
        assert_eq!((r[0].start, r[0].total_bytes), (0, 30));
        assert_eq!(r[0].peak_bytes_per_sec, 9);
        assert_eq!((r[0].content_misses, r[0].health_misses), (3, 2));
        assert_eq!((r[1].start, r[1].total_bytes), (2 * DAY, 7));
        assert_eq!(rows(&h, 300).len(), 3);
    }

    #[test]
    fn days_start_at_utc_midnight_and_are_cut_to_what_one_call_may_span() {
        let now = 100 * DAY + 3_600;
        let cfg = HistoryConfig::new(300, 35.0, 10).unwrap();
        let (r, cut) = span_range(Span::Week, now, &cfg).unwrap();
        assert_eq!((r.from, cut), (94 * DAY, false));
        assert_eq!(r.to, now + 300);
        // 60-second buckets: one call spans 7 days at most.
        let cfg = HistoryConfig::new(60, 35.0, 10).unwrap();
        let (r, cut) = span_range(Span::Month, now, &cfg).unwrap();
        assert!(cut);
        assert_eq!(r.to - r.from, cfg.max_range_secs());
        let (r, cut) = span_range(Span::Day, now, &cfg).unwrap();
        assert_eq!((r.to - r.from, cut), (DAY, false));
        assert_eq!(Span::parse(Some("1y")), None);
    }
}
