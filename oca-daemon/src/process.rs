//! The process's state, shared by the workers, the admin listener and `main`: its counters, the
//! health of its disks, admission under the connection caps, and whether it is ready or draining.
//!
//! `main` builds one [`Process`] before the workers start, marks it ready once every listener
//! is up, and starts draining on SIGTERM or SIGINT; the workers read [`Process::draining`] on
//! every tick, the admin listener answers `/readyz` from [`Process::ready`]. Everything here is
//! atomics (or the admission module's sharded locks, taken once per accept): nothing on a
//! worker's hot path waits for another thread.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};

use crate::access_log::{AccessLog, Dropped};

use crate::admission::Admission;
use crate::disk_health::DiskHealth;
use crate::metrics::{self, Metrics};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

/// What the whole process shares.
#[derive(Debug)]
pub struct Process {
    /// Counters, per worker and per disk.
    pub metrics: Metrics,
    /// Which disks have failed.
    pub disks: DiskHealth,
    /// The connection caps, and what they refused.
    pub admission: Arc<Admission>,
    /// Set once every listener is up; cleared when draining starts.
    ready: AtomicBool,
    /// Set when SIGTERM (or SIGINT) asks the workers to drain.
    draining: AtomicBool,
    /// When the HTTPS certificate in force stops being valid, Unix seconds (0: no HTTPS).
    cert_not_after: AtomicI64,
    /// The access log, for its counters.
    access_log: OnceLock<Arc<AccessLog>>,
}

impl Process {
    /// A process not yet ready, with these parts.
    pub fn new(metrics: Metrics, disks: DiskHealth, admission: Arc<Admission>) -> Process {
        Process {
            metrics,
            disks,
            admission,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            cert_not_after: AtomicI64::new(0),
            access_log: OnceLock::new(),
        }
    }

    /// Records when the certificate in force (at start, after a reload) stops being valid.
    pub fn set_cert_not_after(&self, not_after: Option<i64>) {
        self.cert_not_after.store(not_after.unwrap_or(0), Relaxed);
    }

    /// The access log whose counters are exported, when one is kept (set once, at start).
    pub fn set_access_log(&self, log: Option<Arc<AccessLog>>) {
        if let Some(log) = log {
            let _ = self.access_log.set(log);
        }
    }

    /// Every listener is up: the process takes traffic.
    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    /// Whether the process takes new traffic (`/readyz`).
    pub fn ready(&self) -> bool {
        self.ready.load(Relaxed) && !self.draining()
    }

    /// Asks the workers to finish what they have and stop; the process is no longer ready.
    pub fn start_draining(&self) {
        self.ready.store(false, Relaxed);
        self.draining.store(true, Relaxed);
    }

    /// Whether the workers are draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// The process's metrics in the OpenMetrics text format.
    pub fn render_metrics(self: &Arc<Self>) -> String {
        metrics::render(Scrape(self.clone()))
    }
}

/// What a scrape encodes: the process's counters, its disks' health and its admission.
#[derive(Debug)]
struct Scrape(Arc<Process>);

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        let p = &self.0;
        // For an alert on what /readyz says, without a prober beside Prometheus.
        let ready = prometheus_client::metrics::gauge::ConstGauge::new(i64::from(p.ready()));
        ready.encode(enc.encode_descriptor(
            "oca_ready",
            "1 while /readyz answers 200 (serving, not draining)",
            None,
            ready.metric_type(),
        )?)?;
        let not_after = p.cert_not_after.load(Relaxed);
        if not_after != 0 {
            let g = prometheus_client::metrics::gauge::ConstGauge::new(not_after);
            g.encode(enc.encode_descriptor(
                "oca_tls_certificate_expiry_seconds",
                "When the HTTPS certificate in force stops being valid, Unix time",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(log) = p.access_log.get() {
            encode_access_log(log, &mut enc)?;
        }
        metrics::encode(&p.metrics, &p.disks, &p.admission, enc)
    }
}

/// The access log's counters: lines written, and dropped by why.
fn encode_access_log(log: &AccessLog, enc: &mut DescriptorEncoder) -> std::fmt::Result {
    use prometheus_client::metrics::{counter::ConstCounter, MetricType};
    metrics::single(
        enc,
        "oca_access_log_lines",
        "Access-log lines written",
        MetricType::Counter,
        ConstCounter::new(log.written()),
    )?;
    metrics::counters(
        enc,
        "oca_access_log_dropped",
        "Access-log lines dropped: the worker's buffer was full, or writing failed",
        "reason",
        &Dropped::NAMES,
        log.dropped(),
    )
}
