//! The control plane's counters, in Prometheus text at `/metrics`. BGP figures are gauges read
//! off the fleet view when scraped ([`Metrics::observe_bgp`]), so a report costs nothing more.

use oca_protocol::health::BgpState;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::domain::history::MissTally;
use crate::fleet::Snapshot;
use crate::routing;
use crate::steering::Decision;

/// Labels naming one appliance.
type ApplianceLabel = [(&'static str, String); 1];

/// The API's request-latency buckets, seconds: from a request answered from memory (half a
/// millisecond) to one near the body timeout, in steps of 2 to 2.5.
pub const HTTP_DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The route pattern of requests that matched no route: a path a client chose is never a label
/// value, so the series stay as many as the router's routes.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// One API request's labels, each from a bounded set: `route` is the router's pattern
/// (`/v1/admin/titles/{id}`) or [`UNMATCHED_ROUTE`], `method` one of the standard methods or
/// `other`, `status` the class (`2xx` .. `5xx`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route's pattern.
    pub route: String,
    /// The request's method.
    pub method: &'static str,
    /// The response's status class.
    pub status: &'static str,
}

impl HttpLabels {
    /// The labels of a `method` request on `route` (its pattern; none: unmatched) answered with
    /// `status`.
    pub fn new(route: Option<&str>, method: &axum::http::Method, status: u16) -> HttpLabels {
        use axum::http::Method;
        let method = match *method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::PATCH => "PATCH",
            Method::HEAD => "HEAD",
            Method::OPTIONS => "OPTIONS",
            _ => "other",
        };
        let status = match status {
            100..=199 => "1xx",
            200..=299 => "2xx",
            300..=399 => "3xx",
            400..=499 => "4xx",
            _ => "5xx",
        };
        HttpLabels {
            route: route.unwrap_or(UNMATCHED_ROUTE).to_string(),
            method,
            status,
        }
    }
}

/// A histogram with [`HTTP_DURATION_BUCKETS`].
fn http_duration_histogram() -> Histogram {
    Histogram::new(HTTP_DURATION_BUCKETS)
}

/// Counters updated by the handlers.
pub struct Metrics {
    registry: Registry,
    /// Steering decisions made.
    pub steer_decisions: Counter,
    /// Decisions where no appliance held the content.
    pub content_misses: Counter,
    /// Decisions where holders existed but none was usable.
    pub health_misses: Counter,
    /// Health reports accepted.
    pub health_reports: Counter,
    /// Other replicas' changes applied to this replica's views from the change feed.
    pub feed_changes: Counter,
    /// Seconds between the oldest report of the last batch followed from the change feed and
    /// its application here: how far this replica's fleet view lags the other replicas'.
    pub feed_report_lag: Gauge,
    /// Whole-catalog rereads for the change feed, where a change named no rows.
    pub feed_catalog_reloads: Counter,
    /// Whole reloads of the fleet view (after a site or appliance was registered).
    pub fleet_reloads: Counter,
    /// Requests refused for bad credentials.
    pub auth_failures: Counter,
    /// Origin requests refused for a bad, expired or wrong-scope signature.
    pub origin_refusals: Counter,
    /// Fill sources appliances reported bad.
    pub fill_source_errors: Counter,
    /// Fill requests the embedded origin answered.
    pub origin_requests: Counter,
    /// Reported prefixes dropped for being outside their site's allowed set.
    pub prefixes_refused: Counter,
    /// BGP routes dropped for being outside their site's allowed set.
    pub bgp_routes_refused: Counter,
    /// Health reports refused whole for carrying too many BGP routes.
    pub bgp_reports_refused: Counter,
    /// BGP sessions of fresh appliances by state.
    pub bgp_sessions: Family<[(&'static str, &'static str); 1], Gauge>,
    /// Distinct prefixes each fresh appliance hears over BGP.
    pub bgp_prefixes: Family<ApplianceLabel, Gauge>,
    /// Session flaps each fresh appliance's speaker counted since it started.
    pub bgp_flaps: Family<ApplianceLabel, Gauge>,
    /// Sites whose fresh appliances hear different prefixes.
    pub bgp_inconsistent_sites: Gauge,
    /// 1 while `/readyz` answers 200 (set when scraped).
    pub ready: Gauge,
    /// When the HTTPS certificate in force stops being valid, Unix seconds (0: no HTTPS).
    pub tls_certificate_expiry: Gauge,
    /// Appliances by what the fleet view knows of them (set when scraped).
    pub appliances: Family<[(&'static str, &'static str); 1], Gauge>,
    /// Seconds since an appliance's previous report, observed as each report is taken: how
    /// stale the view of it had become.
    pub report_age: Histogram,
    /// Portal logins that opened a session.
    pub portal_logins: Counter,
    /// Portal logins refused (wrong login or password, or rate-limited).
    pub portal_login_failures: Counter,
    /// Seconds from a request's arrival at the API's router to its response's head, by route,
    /// method and status class (timed by the router's latency layer, `http/latency.rs`).
    pub http_duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    /// API requests in progress (arrived, response head not yet made).
    pub http_in_flight: Gauge,
    /// The listener's connections.
    pub conns: crate::server::ConnMetrics,
    /// Steering misses by the client's site, until the history task stores them.
    pub misses_by_site: MissTally,
    /// Open operational issues by kind and severity (set by the issue checker).
    pub open_issues: Family<[(&'static str, &'static str); 2], Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(
            oca_service::process_metrics::ProcessCollector::new("cp"),
        ));
        let m = |r: &mut Registry, name: &str, help: &str| {
            let c = Counter::default();
            r.register(name, help, c.clone());
            c
        };
        let steer_decisions = m(
            &mut registry,
            "cp_steer_decisions",
            "Steering decisions made",
        );
        let content_misses = m(
            &mut registry,
            "cp_steer_content_misses",
            "Steering decisions where no appliance held the content",
        );
        let health_misses = m(
            &mut registry,
            "cp_steer_health_misses",
            "Steering decisions where every holder was unusable",
        );
        let health_reports = m(
            &mut registry,
            "cp_health_reports",
            "Health reports accepted",
        );
        let feed_changes = m(
            &mut registry,
            "cp_feed_changes",
            "Other replicas' changes applied to this replica's views from the change feed",
        );
        let feed_report_lag = Gauge::default();
        registry.register(
            "cp_feed_report_lag_seconds",
            "Seconds between the oldest report of the last batch followed from the change feed and its application here",
            feed_report_lag.clone(),
        );
        let feed_catalog_reloads = m(
            &mut registry,
            "cp_feed_catalog_reloads",
            "Whole-catalog rereads for the change feed, where a change named no rows",
        );
        let fleet_reloads = m(
            &mut registry,
            "cp_fleet_reloads",
            "Whole reloads of the fleet view (after a site or appliance was registered)",
        );
        let ready = Gauge::default();
        registry.register(
            "cp_ready",
            "1 while /readyz answers 200 (storage reachable, change feed read, not draining)",
            ready.clone(),
        );
        let tls_certificate_expiry = Gauge::default();
        registry.register(
            "cp_tls_certificate_expiry_seconds",
            "When the HTTPS certificate in force stops being valid, Unix time (0: no HTTPS)",
            tls_certificate_expiry.clone(),
        );
        let appliances = Family::default();
        registry.register(
            "cp_appliances",
            "Appliances by state: ok, warning, error (their last report), stale (silent past the freshness bound), never (registered, never reported)",
            appliances.clone(),
        );
        // From a report on time (the interval, 10 s by default) to an appliance back after an
        // hour.
        let report_age = Histogram::new([5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0, 3600.0]);
        registry.register(
            "cp_report_age_seconds",
            "Seconds since an appliance's previous report, observed as each report is taken",
            report_age.clone(),
        );
        let auth_failures = m(
            &mut registry,
            "cp_auth_failures",
            "Requests refused for missing or wrong credentials",
        );
        let origin_refusals = m(
            &mut registry,
            "cp_origin_refusals",
            "Origin requests refused for their signature",
        );
        let fill_source_errors = m(
            &mut registry,
            "cp_fill_source_errors",
            "Fill sources appliances reported bad (hash mismatch, errors, stalls)",
        );
        let origin_requests = m(
            &mut registry,
            "cp_origin_requests",
            "Fill requests the embedded origin answered",
        );
        let prefixes_refused = m(
            &mut registry,
            "cp_report_prefixes_refused",
            "Reported prefixes dropped for being outside their site's allowed set",
        );
        let bgp_routes_refused = m(
            &mut registry,
            "cp_bgp_routes_refused",
            "BGP routes dropped for being outside their site's allowed set",
        );
        let bgp_reports_refused = m(
            &mut registry,
            "cp_bgp_reports_refused",
            "Health reports whose BGP routes were refused for being more than max_routes_per_appliance (the routes on record stayed in force)",
        );
        let bgp_sessions = Family::default();
        registry.register(
            "cp_bgp_sessions",
            "BGP sessions of appliances that reported within 3 intervals, by state",
            bgp_sessions.clone(),
        );
        let bgp_prefixes = Family::default();
        registry.register(
            "cp_bgp_prefixes",
            "Distinct prefixes an appliance hears over BGP (inside its site's allowed set)",
            bgp_prefixes.clone(),
        );
        let bgp_flaps = Family::default();
        registry.register(
            "cp_bgp_session_flaps",
            "Times an appliance's BGP sessions left established, as its speaker counts them since it started",
            bgp_flaps.clone(),
        );
        let bgp_inconsistent_sites = Gauge::default();
        registry.register(
            "cp_bgp_inconsistent_sites",
            "Sites whose appliances hear different prefixes over BGP",
            bgp_inconsistent_sites.clone(),
        );
        let portal_logins = m(
            &mut registry,
            "cp_portal_logins",
            "Portal logins that opened a session",
        );
        let portal_login_failures = m(
            &mut registry,
            "cp_portal_login_failures",
            "Portal logins refused (wrong login or password, or too many failures)",
        );
        let open_issues = Family::default();
        registry.register(
            "cp_open_issues",
            "Open operational issues by kind and severity (live checks)",
            open_issues.clone(),
        );
        let http_duration: Family<HttpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(http_duration_histogram);
        registry.register(
            "cp_http_request_duration_seconds",
            "Seconds from an API request's arrival at the router to its response's head, by route pattern (unmatched: no route), method and status class",
            http_duration.clone(),
        );
        let http_in_flight = Gauge::default();
        registry.register(
            "cp_http_requests_in_flight",
            "API requests in progress (arrived, response head not yet made)",
            http_in_flight.clone(),
        );
        let conns = crate::server::ConnMetrics::default();
        registry.register("cp_connections", "Connections open", conns.open.clone());
        registry.register(
            "cp_connections_refused",
            "Connections refused at accept (max_connections, per_client)",
            conns.refused.clone(),
        );
        registry.register(
            "cp_connections_closed",
            "Connections the server closed (header_timeout, idle_timeout, shed)",
            conns.closed.clone(),
        );
        registry.register(
            "cp_tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            conns.tls_failures.clone(),
        );
        Metrics {
            prefixes_refused,
            bgp_routes_refused,
            bgp_reports_refused,
            bgp_sessions,
            bgp_prefixes,
            bgp_flaps,
            bgp_inconsistent_sites,
            portal_logins,
            portal_login_failures,
            http_duration,
            http_in_flight,
            conns,
            misses_by_site: MissTally::default(),
            open_issues,
            registry,
            fill_source_errors,
            origin_requests,
            steer_decisions,
            content_misses,
            health_misses,
            health_reports,
            feed_changes,
            feed_report_lag,
            ready,
            tls_certificate_expiry,
            appliances,
            report_age,
            feed_catalog_reloads,
            fleet_reloads,
            auth_failures,
            origin_refusals,
        }
    }
}

impl Metrics {
    /// Counts a steering decision made at `now` and the misses it found (also by the client's
    /// site, for the traffic history).
    pub fn count_steer(&self, d: &Decision, now: i64) {
        self.steer_decisions.inc();
        self.misses_by_site
            .count(d.client_site.as_deref(), d.content_miss, d.health_miss, now);
        if d.content_miss {
            self.content_misses.inc();
        }
        if d.health_miss {
            self.health_misses.inc();
        }
    }

    /// Sets the BGP gauges from the fleet view as of `now`, counting only appliances that
    /// reported within `stale_after` seconds (a silent appliance's last word is not its state).
    pub fn observe_bgp(&self, snap: &Snapshot, now: i64, stale_after: i64) {
        let mut by_state = [0i64; BgpState::ALL.len()];
        self.bgp_prefixes.clear();
        self.bgp_flaps.clear();
        for i in 0..snap.len() {
            let a = snap.at(i);
            let Some(bgp) = snap.bgp(i) else { continue };
            if !routing::fresh(a, now, stale_after) {
                continue;
            }
            for s in &bgp.sessions {
                by_state[s.state as usize] += 1;
            }
            let label = [("oca_id", a.id.clone())];
            self.bgp_prefixes
                .get_or_create(&label)
                .set(bgp.prefixes().count() as i64);
            let flaps: u64 = bgp.sessions.iter().map(|s| s.flaps).sum();
            self.bgp_flaps
                .get_or_create(&label)
                .set(i64::try_from(flaps).unwrap_or(i64::MAX));
        }
        for (state, n) in BgpState::ALL.iter().zip(by_state) {
            self.bgp_sessions
                .get_or_create(&[("state", state.as_str())])
                .set(n);
        }
        self.bgp_inconsistent_sites
            .set(routing::inconsistent_count(snap, now, stale_after) as i64);
    }

    /// Sets the appliance counts by state from the fleet view as of `now` (an appliance silent
    /// for `stale_after` seconds counts as stale, whatever it last said).
    pub fn observe_fleet(&self, snap: &Snapshot, now: i64, stale_after: i64) {
        let mut n = [0i64; 5];
        for i in 0..snap.len() {
            let a = snap.at(i);
            let k = match a.status.as_deref() {
                None => 4,
                Some(_) if !routing::fresh(a, now, stale_after) => 3,
                Some("ok") => 0,
                Some("warning") => 1,
                Some(_) => 2,
            };
            n[k] += 1;
        }
        for (state, count) in ["ok", "warning", "error", "stale", "never"].iter().zip(n) {
            self.appliances
                .get_or_create(&[("state", state)])
                .set(count);
        }
    }

    /// The metrics in Prometheus/OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    #[test]
    fn request_labels_come_from_bounded_sets() {
        let l = HttpLabels::new(Some("/v1/admin/titles/{id}"), &Method::DELETE, 404);
        assert_eq!(
            (l.route.as_str(), l.method, l.status),
            ("/v1/admin/titles/{id}", "DELETE", "4xx")
        );
        let odd = Method::from_bytes(b"PURGE").unwrap();
        let l = HttpLabels::new(None, &odd, 503);
        assert_eq!(
            (l.route.as_str(), l.method, l.status),
            ("unmatched", "other", "5xx")
        );
        for (code, class) in [
            (200, "2xx"),
            (204, "2xx"),
            (302, "3xx"),
            (499, "4xx"),
            (500, "5xx"),
        ] {
            assert_eq!(HttpLabels::new(None, &Method::GET, code).status, class);
        }
    }

    #[test]
    fn a_request_shows_in_the_latency_histogram_by_route() {
        let m = Metrics::default();
        assert!(
            !m.render()
                .contains("cp_http_request_duration_seconds_bucket"),
            "no series before a request"
        );
        m.http_duration
            .get_or_create(&HttpLabels::new(Some("/healthz"), &Method::GET, 200))
            .observe(0.002);
        let text = m.render();
        for line in [
            "cp_http_request_duration_seconds_bucket{le=\"0.001\",route=\"/healthz\",method=\"GET\",status=\"2xx\"} 0",
            "cp_http_request_duration_seconds_bucket{le=\"0.0025\",route=\"/healthz\",method=\"GET\",status=\"2xx\"} 1",
            "cp_http_request_duration_seconds_count{route=\"/healthz\",method=\"GET\",status=\"2xx\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}: {text}");
        }
    }
}
