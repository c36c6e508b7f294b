//! The control plane's counters, in Prometheus text at `/metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::steering::Decision;

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
    /// The listener's connections.
    pub conns: crate::server::ConnMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
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
            conns,
            registry,
            fill_source_errors,
            origin_requests,
            steer_decisions,
            content_misses,
            health_misses,
            health_reports,
            auth_failures,
            origin_refusals,
        }
    }
}

impl Metrics {
    /// Counts a steering decision and the misses it found.
    pub fn count_steer(&self, d: &Decision) {
        self.steer_decisions.inc();
        if d.content_miss {
            self.content_misses.inc();
        }
        if d.health_miss {
            self.health_misses.inc();
        }
    }

    /// The metrics in Prometheus/OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
