//! The agent's counters, served as Prometheus text on `/metrics` when `metrics_listen` is set.
//!
//! The BGP figures are read off the report's `bgp` part each time a report is built
//! ([`Metrics::observe_bgp`]), so what is scraped is what the control plane was last told.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use oca_protocol::health::{BgpReport, BgpState};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use oca_protocol::manifest::SourceKind;

/// Every reason `fill::fetch` gives for a failed source, but the open `http_<status>`
/// family: each starts at zero (so an alert's `rate()` has a series before the first failure).
pub const FAILURE_REASONS: &[&str] = &[
    "connect",
    "stall",
    "deadline",
    "slow",
    "io",
    "short",
    "http_3xx",
    "content_encoding",
    "content_range",
    "length_mismatch",
    "size_mismatch",
    "hash_mismatch",
];

/// A source kind as a label value.
fn kind_name(kind: SourceKind) -> &'static str {
    match kind {
        SourceKind::Peer => "peer",
        SourceKind::Tier => "tier",
        SourceKind::Origin => "origin",
    }
}

/// Counters the loop and the fills update.
pub struct Metrics {
    registry: Registry,
    /// Held files found unlisted and scheduled for eviction (once per file).
    pub evictions_planned: Counter,
    /// Files evicted.
    pub evictions_done: Counter,
    /// Planned evictions pushed to a later cycle by the budget (once per file and cycle).
    pub evictions_deferred: Counter,
    /// Manifests not acted on (empty while content is held, without `intended_empty`).
    pub manifests_refused: Counter,
    /// Fill sources that failed, by source kind and reason.
    pub source_failures: Family<[(&'static str, String); 2], Counter>,
    /// Bytes received from fill sources, by source kind.
    pub fill_bytes: Family<[(&'static str, &'static str); 1], Counter>,
    /// Files the manifest lists that the stores do not hold yet (as of the last cycle).
    pub files_pending: Gauge,
    /// The version of the manifest in force (0: none yet).
    pub manifest_version: Gauge,
    /// Unix seconds of the last health report the control plane took (0: none yet).
    pub last_report: Gauge,
    /// Bytes used on each store disk's filesystem, as the last report read them.
    pub disk_used: Family<[(&'static str, String); 1], Gauge>,
    /// Bytes free (available to the agent) on each store disk's filesystem.
    pub disk_free: Family<[(&'static str, String); 1], Gauge>,
    /// Files published.
    pub files_filled: Counter,
    /// Fills in flight.
    pub fills_in_flight: Gauge,
    /// BGP sessions by state.
    pub bgp_sessions: Family<[(&'static str, &'static str); 1], Gauge>,
    /// Prefixes per BGP session, received and accepted.
    pub bgp_prefixes: Family<[(&'static str, String); 2], Gauge>,
    /// Times each BGP session left established.
    pub bgp_flaps: Family<[(&'static str, String); 1], Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(
            oca_service::process_metrics::ProcessCollector::new("oca_fill"),
        ));
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let evictions_planned = counter(
            "oca_fill_evictions_planned",
            "Held files no longer listed, scheduled for eviction",
        );
        let evictions_done = counter("oca_fill_evictions_done", "Files evicted");
        let evictions_deferred = counter(
            "oca_fill_evictions_deferred",
            "Evictions pushed to a later cycle by the eviction budget (per file and cycle)",
        );
        let manifests_refused = counter(
            "oca_fill_manifests_refused",
            "Manifests refused: empty while content is held, not marked intended_empty",
        );
        let files_filled = counter("oca_fill_files", "Files filled and published");
        let fill_bytes = Family::default();
        registry.register(
            "oca_fill_bytes",
            "Bytes received from fill sources, by source kind (peer, tier, origin)",
            fill_bytes.clone(),
        );
        let source_failures = Family::default();
        registry.register(
            "oca_fill_source_failures",
            "Fill sources that failed, by source kind and reason",
            source_failures.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let files_pending = gauge(
            "oca_fill_files_pending",
            "Files the manifest lists that the stores do not hold yet, as of the last cycle",
        );
        let manifest_version = gauge(
            "oca_fill_manifest_version",
            "The version of the manifest in force (0: none yet)",
        );
        let last_report = gauge(
            "oca_fill_last_report_success_seconds",
            "Unix time of the last health report the control plane took (0: none yet)",
        );
        let disk_used = Family::default();
        registry.register(
            "oca_fill_disk_used_bytes",
            "Bytes used on each store disk's filesystem, as the last report read them",
            disk_used.clone(),
        );
        let disk_free = Family::default();
        registry.register(
            "oca_fill_disk_free_bytes",
            "Bytes available on each store disk's filesystem, as the last report read them",
            disk_free.clone(),
        );
        let fills_in_flight = Gauge::default();
        registry.register(
            "oca_fill_in_flight",
            "Fills in flight",
            fills_in_flight.clone(),
        );
        let bgp_sessions = Family::default();
        registry.register(
            "oca_bgp_sessions",
            "BGP sessions with the ISP's routers, by state",
            bgp_sessions.clone(),
        );
        let bgp_prefixes = Family::default();
        registry.register(
            "oca_bgp_prefixes",
            "Prefixes a BGP session holds: received from the router, and accepted by the import filter",
            bgp_prefixes.clone(),
        );
        let bgp_flaps = Family::default();
        registry.register(
            "oca_bgp_session_flaps",
            "Times a BGP session left established since the agent started",
            bgp_flaps.clone(),
        );
        // Every bounded series starts at zero, so rate() and increase() see the first event.
        for kind in [SourceKind::Peer, SourceKind::Tier, SourceKind::Origin] {
            let _ = fill_bytes.get_or_create(&[("source", kind_name(kind))]);
            for reason in FAILURE_REASONS {
                let labels = [
                    ("source", kind_name(kind).to_string()),
                    ("reason", reason.to_string()),
                ];
                let _ = source_failures.get_or_create(&labels);
            }
        }
        Metrics {
            registry,
            evictions_planned,
            evictions_done,
            evictions_deferred,
            manifests_refused,
            source_failures,
            fill_bytes,
            files_pending,
            manifest_version,
            last_report,
            disk_used,
            disk_free,
            files_filled,
            fills_in_flight,
            bgp_sessions,
            bgp_prefixes,
            bgp_flaps,
        }
    }
}

impl Metrics {
    /// Counts a failed source.
    pub fn source_failed(&self, kind: SourceKind, reason: &str) {
        debug_assert!(
            reason.starts_with("http_") || FAILURE_REASONS.contains(&reason),
            "{reason} is missing from FAILURE_REASONS"
        );
        self.source_failures
            .get_or_create(&[
                ("source", kind_name(kind).to_string()),
                ("reason", reason.to_string()),
            ])
            .inc();
    }

    /// The counter of bytes received from sources of `kind`.
    pub fn fill_bytes_from(&self, kind: SourceKind) -> Counter {
        self.fill_bytes
            .get_or_create(&[("source", kind_name(kind))])
            .clone()
    }

    /// Sets one store disk's figures, as a report reads them.
    pub fn observe_disk(&self, disk: &str, used: u64, free: u64) {
        let label = [("disk", disk.to_string())];
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.disk_used.get_or_create(&label).set(clamp(used));
        self.disk_free.get_or_create(&label).set(clamp(free));
    }

    /// Sets the BGP figures from the report's `bgp` part. Every state is written, zeros
    /// included, so `oca_bgp_sessions{state="established"} == 0` can raise an alert; the
    /// neighbours are the configured ones, so the label sets stay bounded.
    pub fn observe_bgp(&self, bgp: &BgpReport) {
        for st in BgpState::ALL {
            let n = bgp.sessions.iter().filter(|s| s.state == st).count();
            self.bgp_sessions
                .get_or_create(&[("state", st.as_str())])
                .set(n as i64);
        }
        for s in &bgp.sessions {
            let neighbor = s.neighbor.to_string();
            for (kind, n) in [
                ("received", s.prefixes_received),
                ("accepted", s.prefixes_accepted),
            ] {
                self.bgp_prefixes
                    .get_or_create(&[("neighbor", neighbor.clone()), ("kind", kind.to_string())])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            // The speaker counts flaps over its life, which is the agent's: the counter follows
            // it by the difference (never down).
            let flaps = self.bgp_flaps.get_or_create(&[("neighbor", neighbor)]);
            flaps.inc_by(s.flaps.saturating_sub(flaps.get()));
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

/// Binds `addr` (an error if it cannot) and serves `/metrics` there in the background.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics_listen {addr}"))?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move { m.render() }
        }),
    );
    tracing::info!(addr = %bound, "serving /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oca_protocol::health::BgpSession;

    fn session(neighbor: &str, state: BgpState, accepted: u64, flaps: u64) -> BgpSession {
        BgpSession {
            neighbor: neighbor.parse().unwrap(),
            peer_as: 64500,
            state,
            since: 0,
            prefixes_received: accepted + 1,
            prefixes_accepted: accepted,
            flaps,
            last_error: None,
        }
    }

    #[test]
    fn bgp_figures_follow_the_reports() {
        let m = Metrics::default();
        let mut bgp = BgpReport {
            sessions: vec![
                session("10.0.0.1", BgpState::Established, 2, 1),
                session("2001:db8::1", BgpState::Active, 0, 0),
            ],
            routes: vec![],
            converging: false,
        };
        m.observe_bgp(&bgp);
        let text = m.render();
        for line in [
            r#"oca_bgp_sessions{state="established"} 1"#,
            r#"oca_bgp_sessions{state="active"} 1"#,
            r#"oca_bgp_sessions{state="idle"} 0"#,
            r#"oca_bgp_prefixes{neighbor="10.0.0.1",kind="received"} 3"#,
            r#"oca_bgp_prefixes{neighbor="10.0.0.1",kind="accepted"} 2"#,
            r#"oca_bgp_prefixes{neighbor="2001:db8::1",kind="accepted"} 0"#,
            r#"oca_bgp_session_flaps_total{neighbor="10.0.0.1"} 1"#,
            r#"oca_bgp_session_flaps_total{neighbor="2001:db8::1"} 0"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        // The IPv4 session went down twice more and the IPv6 one came up: gauges are set, the
        // flap counter moves by the difference.
        bgp.sessions[0] = session("10.0.0.1", BgpState::Idle, 0, 3);
        bgp.sessions[1] = session("2001:db8::1", BgpState::Established, 5, 0);
        m.observe_bgp(&bgp);
        let text = m.render();
        for line in [
            r#"oca_bgp_sessions{state="established"} 1"#,
            r#"oca_bgp_sessions{state="idle"} 1"#,
            r#"oca_bgp_sessions{state="active"} 0"#,
            r#"oca_bgp_prefixes{neighbor="10.0.0.1",kind="accepted"} 0"#,
            r#"oca_bgp_prefixes{neighbor="2001:db8::1",kind="accepted"} 5"#,
            r#"oca_bgp_session_flaps_total{neighbor="10.0.0.1"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn without_bgp_no_series_is_written() {
        let text = Metrics::default().render();
        assert!(!text.lines().any(|l| l.starts_with("oca_bgp_")), "{text}");
    }
}
