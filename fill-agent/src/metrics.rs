//! The agent's counters, served as Prometheus text on `/metrics` when `metrics_listen` is set.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

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
    /// Fill sources that failed, by reason.
    pub source_failures: Family<Vec<(String, String)>, Counter>,
    /// Bytes received from fill sources.
    pub fill_bytes: Counter,
    /// Files published.
    pub files_filled: Counter,
    /// Fills in flight.
    pub fills_in_flight: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
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
        let fill_bytes = counter("oca_fill_bytes", "Bytes received from fill sources");
        let files_filled = counter("oca_fill_files", "Files filled and published");
        let source_failures = Family::<Vec<(String, String)>, Counter>::default();
        registry.register(
            "oca_fill_source_failures",
            "Fill sources that failed, by reason",
            source_failures.clone(),
        );
        let fills_in_flight = Gauge::default();
        registry.register(
            "oca_fill_in_flight",
            "Fills in flight",
            fills_in_flight.clone(),
        );
        Metrics {
            registry,
            evictions_planned,
            evictions_done,
            evictions_deferred,
            manifests_refused,
            source_failures,
            fill_bytes,
            files_filled,
            fills_in_flight,
        }
    }
}

impl Metrics {
    /// Counts a failed source.
    pub fn source_failed(&self, reason: &str) {
        self.source_failures
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
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
