//! Counters kept per worker (no shared cache line on the hot path) and summed when scraped.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::signed_urls::Admitted;
use oca_protocol::signing::{Rejection, Scope};

/// Upper bounds (seconds) of the response latency histogram buckets.
const LATENCY_BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Upper bounds (seconds) of the per-disk direct-read latency buckets.
const DISK_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// One store disk's health and cold-path counters (shared: direct reads are far fewer than
/// requests, so one cache line per disk does not contend).
#[derive(Debug)]
pub struct DiskStats {
    path: String,
    errors: AtomicU64,
    /// Operations that did not complete within `disk_timeout`.
    hangs: AtomicU64,
    failed: AtomicBool,
    reads: [AtomicU64; DISK_BOUNDS.len() + 1],
    read_ns: AtomicU64,
    read_bytes: AtomicU64,
    queued: AtomicU64,
}

impl DiskStats {
    fn new(path: String) -> DiskStats {
        DiskStats {
            path,
            errors: AtomicU64::new(0),
            hangs: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            reads: Default::default(),
            read_ns: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }
}

/// Why a connection was closed by a timeout.
#[derive(Clone, Copy, Debug)]
pub enum Timeout {
    /// The request head did not arrive in time (slowloris).
    Header = 0,
    /// An idle keep-alive connection expired.
    Idle = 1,
    /// The client stopped reading a response.
    Send = 2,
}

/// One worker's counters, on their own cache lines.
#[repr(align(128))]
#[derive(Default, Debug)]
pub struct WorkerStats {
    requests: [AtomicU64; 5],
    bytes_sent: AtomicU64,
    active: AtomicI64,
    accepted: AtomicU64,
    timeouts: [AtomicU64; 3],
    truncated: AtomicU64,
    dropped: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_ns: AtomicU64,
    heartbeat_ms: AtomicU64,
    /// The disk operation the worker's thread is blocked in, if any: (disk + 1) << 40 | its
    /// start in ms since the counters started (see [`Metrics::enter_disk`]).
    on_disk: AtomicU64,
    body_parts: [AtomicU64; crate::cold::Reason::ALL.len()],
    /// Cold-path sends: zero-copy, copied.
    cold_sends: [AtomicU64; 2],
    /// Cold reads ahead: adopted by the next chunk, given back unused.
    cold_ahead: [AtomicU64; 2],
    /// Parts moved off the cold path midway: slow reader, waited too long.
    cold_fallbacks: [AtomicU64; 2],
    admitted: [AtomicU64; 3],
    sig_rejected: [AtomicU64; 5],
    tls_handshakes: [AtomicU64; 2],
    tls_failures: [AtomicU64; TLS_FAILURES.len()],
    tls_sent: [AtomicU64; 2],
    key_updates: [AtomicU64; 2],
    fill_bytes: AtomicU64,
}

/// Where a TLS connection's records are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Kernel TLS.
    Kernel = 0,
    /// rustls in this process.
    User = 1,
}

const TLS_MODES: [&str; 2] = ["ktls", "userspace"];

/// Reasons a TLS handshake fails, as labelled.
const TLS_FAILURES: [&str; 11] = [
    "timeout",
    "eof",
    "not_tls",
    "plain_http",
    "protocol_version",
    "no_shared_cipher",
    "alpn",
    "peer_alert",
    "incompatible",
    "ktls_setup",
    "other",
];

impl WorkerStats {
    /// Counts a finished response.
    pub fn response(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Relaxed);
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BOUNDS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BOUNDS.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(latency.as_nanos() as u64, Relaxed);
    }

    /// Counts bytes handed to the kernel for a client.
    pub fn sent(&self, n: u64) {
        self.bytes_sent.fetch_add(n, Relaxed);
    }

    /// Counts an accepted connection.
    pub fn opened(&self) {
        self.accepted.fetch_add(1, Relaxed);
        self.active.fetch_add(1, Relaxed);
    }

    /// Counts a closed connection.
    pub fn closed(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    /// Counts a connection closed by a timeout.
    pub fn timeout(&self, kind: Timeout) {
        self.timeouts[kind as usize].fetch_add(1, Relaxed);
    }

    /// Counts a response cut short because its file shrank or could not be read.
    pub fn truncated(&self) {
        self.truncated.fetch_add(1, Relaxed);
    }

    /// Counts a connection dropped after an unexpected error in its handling.
    pub fn dropped(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }

    /// Counts how a content request's signature was judged.
    pub fn admission(&self, a: Result<Admitted, Rejection>) {
        match a {
            Ok(a) => self.admitted[admitted_index(a)].fetch_add(1, Relaxed),
            Err(r) => self.sig_rejected[rejection_index(r)].fetch_add(1, Relaxed),
        };
    }

    /// Counts bytes sent to peer appliances filling (`fill`-signed requests).
    pub fn fill_sent(&self, n: u64) {
        self.fill_bytes.fetch_add(n, Relaxed);
    }

    /// Counts a finished TLS handshake by where its records go.
    pub fn tls_handshake(&self, mode: TlsMode) {
        self.tls_handshakes[mode as usize].fetch_add(1, Relaxed);
    }

    /// Counts a failed TLS handshake.
    pub fn tls_failure(&self, reason: &'static str) {
        let i = TLS_FAILURES
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(TLS_FAILURES.len() - 1);
        self.tls_failures[i].fetch_add(1, Relaxed);
    }

    /// Counts application bytes sent on TLS connections.
    pub fn tls_sent(&self, mode: TlsMode, n: u64) {
        self.tls_sent[mode as usize].fetch_add(n, Relaxed);
    }

    /// Counts a peer's TLS 1.3 KeyUpdate on a kernel-TLS connection: applied, or the connection
    /// closed because the kernel cannot take new keys.
    pub fn key_update(&self, rekeyed: bool) {
        self.key_updates[usize::from(!rekeyed)].fetch_add(1, Relaxed);
    }

    /// Counts one file part's path decision.
    pub fn body_part(&self, reason: crate::cold::Reason) {
        if let Some(i) = crate::cold::Reason::ALL.iter().position(|r| *r == reason) {
            self.body_parts[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a part moved off the cold path midway ([`crate::cold::Reason::Slow`] or
    /// [`crate::cold::Reason::Busy`]).
    pub fn cold_fallback(&self, reason: crate::cold::Reason) {
        let i = usize::from(reason != crate::cold::Reason::Slow);
        self.cold_fallbacks[i].fetch_add(1, Relaxed);
    }

    /// Counts one cold-path send operation, zero-copy or copied.
    pub fn cold_send(&self, zero_copy: bool) {
        self.cold_sends[usize::from(!zero_copy)].fetch_add(1, Relaxed);
    }

    /// Counts a cold read ahead at the end of its life: adopted by the chunk after, or not.
    pub fn cold_ahead(&self, used: bool) {
        self.cold_ahead[usize::from(!used)].fetch_add(1, Relaxed);
    }

    /// Records that the worker's loop is alive.
    pub fn beat(&self, since_start: Duration) {
        self.heartbeat_ms
            .store(since_start.as_millis() as u64, Relaxed);
    }
}

/// Clears a worker's [`Metrics::enter_disk`] note when dropped.
pub struct OnDisk<'a>(&'a AtomicU64);

impl Drop for OnDisk<'_> {
    fn drop(&mut self) {
        self.0.store(0, Relaxed);
    }
}

const ADMITTED: [&str; 3] = ["play", "fill", "unsigned"];

fn admitted_index(a: Admitted) -> usize {
    match a {
        Admitted::Signed(Scope::Play) => 0,
        Admitted::Signed(Scope::Fill) => 1,
        Admitted::Unsigned => 2,
    }
}

const REJECTIONS: [Rejection; 5] = [
    Rejection::Missing,
    Rejection::Malformed,
    Rejection::UnknownKey,
    Rejection::BadSignature,
    Rejection::Expired,
];

fn rejection_index(r: Rejection) -> usize {
    REJECTIONS.iter().position(|x| *x == r).unwrap_or(0)
}

/// All counters of the process.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<WorkerStats>,
    disks: Vec<DiskStats>,
    /// The connection caps, and what they refused.
    pub admission: Arc<crate::admission::Admission>,
    engine: &'static str,
    body_path: &'static str,
    started: Instant,
    /// Set once every listener is up; cleared when draining starts.
    pub ready: AtomicBool,
    /// Set when SIGTERM (or SIGINT) asks the workers to drain.
    pub draining: AtomicBool,
}

impl Metrics {
    /// Counters for `workers` workers and the given disks.
    pub fn new(
        workers: usize,
        disks: Vec<String>,
        engine: &'static str,
        body_path: &'static str,
        admission: Arc<crate::admission::Admission>,
    ) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            disks: disks.into_iter().map(DiskStats::new).collect(),
            admission,
            engine,
            body_path,
            started: Instant::now(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    /// Worker `i`'s counters.
    pub fn worker(&self, i: usize) -> &WorkerStats {
        &self.workers[i]
    }

    /// Time since the process started its counters.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Counts a read error on disk `i` and marks the disk failed: from then on its files are
    /// answered 503 and the other disks keep serving (until the daemon restarts).
    pub fn disk_error(&self, i: usize) {
        if let Some(d) = self.disks.get(i) {
            d.errors.fetch_add(1, Relaxed);
            if !d.failed.swap(true, Relaxed) {
                tracing::error!(disk = i, path = %d.path, "disk returned an I/O error: marked failed, its files are no longer served");
            }
        }
    }

    /// An operation on disk `i` has not completed after `waited` (past `disk_timeout`): the
    /// disk is marked failed like one returning errors, so its files are no longer served and
    /// the other disks keep going.
    pub fn disk_hung(&self, i: usize, waited: Duration) {
        if let Some(d) = self.disks.get(i) {
            d.hangs.fetch_add(1, Relaxed);
            if !d.failed.swap(true, Relaxed) {
                tracing::error!(disk = i, path = %d.path, waited_ms = waited.as_millis() as u64, "disk operation did not complete: disk marked hung and failed, its files are no longer served");
            }
        }
    }

    /// Notes that worker `w`'s thread is about to block in an operation on disk `disk` (an
    /// open, a sendfile, a read); the returned guard clears the note. A watcher thread
    /// ([`Metrics::check_blocked`]) marks the disk hung when the note grows too old.
    pub fn enter_disk(&self, w: usize, disk: usize) -> OnDisk<'_> {
        let stats = &self.workers[w];
        let ms = self.uptime().as_millis() as u64 & ((1 << 40) - 1);
        stats.on_disk.store(((disk as u64 + 1) << 40) | ms, Relaxed);
        OnDisk(&stats.on_disk)
    }

    /// Marks hung every disk a worker's thread has been blocked on for longer than `timeout`.
    pub fn check_blocked(&self, timeout: Duration) {
        let now = self.uptime().as_millis() as u64;
        for w in &self.workers {
            let v = w.on_disk.load(Relaxed);
            if v == 0 {
                continue;
            }
            let (disk, since) = ((v >> 40) as usize - 1, v & ((1 << 40) - 1));
            let waited = Duration::from_millis(now.saturating_sub(since));
            if waited > timeout {
                self.disk_hung(disk, waited);
            }
        }
    }

    /// Whether disk `i` has been marked failed.
    pub fn disk_failed(&self, i: usize) -> bool {
        self.disks.get(i).is_some_and(|d| d.failed.load(Relaxed))
    }

    /// Records one direct read on disk `i`.
    pub fn cold_read(&self, i: usize, took: Duration, bytes: u64) {
        let Some(d) = self.disks.get(i) else { return };
        let secs = took.as_secs_f64();
        let b = DISK_BOUNDS
            .iter()
            .position(|&x| secs <= x)
            .unwrap_or(DISK_BOUNDS.len());
        d.reads[b].fetch_add(1, Relaxed);
        d.read_ns.fetch_add(took.as_nanos() as u64, Relaxed);
        d.read_bytes.fetch_add(bytes, Relaxed);
    }

    /// Counts a direct read that had to wait (disk queue full or no free buffer).
    pub fn cold_queued(&self, i: usize) {
        if let Some(d) = self.disks.get(i) {
            d.queued.fetch_add(1, Relaxed);
        }
    }

    /// Whether every worker's loop has run within `max_age`.
    pub fn workers_alive(&self, max_age: Duration) -> bool {
        let now = self.uptime().as_millis() as u64;
        self.workers
            .iter()
            .all(|w| now.saturating_sub(w.heartbeat_ms.load(Relaxed)) <= max_age.as_millis() as u64)
    }

    /// Sum of active connections over workers.
    pub fn active_connections(&self) -> i64 {
        self.workers.iter().map(|w| w.active.load(Relaxed)).sum()
    }

    fn sum(&self, f: impl Fn(&WorkerStats) -> u64) -> u64 {
        self.workers.iter().map(f).sum()
    }
}

/// What the admin listener's `/status` reads.
impl Metrics {
    /// Responses sent, every status class.
    pub fn responses_total(&self) -> u64 {
        self.sum(|w| w.requests.iter().map(|r| r.load(Relaxed)).sum())
    }

    /// Bytes sent to clients.
    pub fn sent_bytes_total(&self) -> u64 {
        self.sum(|w| w.bytes_sent.load(Relaxed))
    }

    /// Each disk's path and whether it has been marked failed, in the store's order.
    pub fn disks(&self) -> impl Iterator<Item = (&str, bool)> {
        self.disks
            .iter()
            .map(|d| (d.path.as_str(), d.failed.load(Relaxed)))
    }
}

/// Renders [`Metrics`] in the Prometheus/OpenMetrics text format.
pub fn render(metrics: &std::sync::Arc<Metrics>) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(metrics.clone())));
    let mut out = String::with_capacity(4096);
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Scrape(std::sync::Arc<Metrics>);

fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> std::fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let m = &self.0;
        {
            let mut fam = enc.encode_descriptor(
                "oca_requests",
                "Responses sent, by status class",
                None,
                MetricType::Counter,
            )?;
            for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let v = m.sum(|w| w.requests[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("class", *class)])?)?;
            }
        }
        counter(
            &mut enc,
            "oca_sent_bytes",
            "Bytes sent to clients (heads and bodies)",
            m.sum(|w| w.bytes_sent.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "oca_fill_sent_bytes",
            "Bytes sent to peer appliances filling from this one (fill-signed requests; also in oca_sent_bytes)",
            m.sum(|w| w.fill_bytes.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "oca_connections_accepted",
            "Connections accepted",
            m.sum(|w| w.accepted.load(Relaxed)),
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "oca_connections_rejected",
                "Connections refused before any state was made for them (503 on plain HTTP), by the cap they met",
                None,
                MetricType::Counter,
            )?;
            let rejected = m.admission.rejected();
            for (i, reason) in crate::admission::Refusal::NAMES.iter().enumerate() {
                ConstCounter::new(rejected[i])
                    .encode(fam.encode_family(&[("reason", *reason)])?)?;
            }
        }
        counter(
            &mut enc,
            "oca_responses_truncated",
            "Responses cut short: file shrank or could not be read",
            m.sum(|w| w.truncated.load(Relaxed)),
        )?;
        counter(
            &mut enc,
            "oca_connections_dropped",
            "Connections dropped after an unexpected internal error",
            m.sum(|w| w.dropped.load(Relaxed)),
        )?;
        {
            let mut fam = enc.encode_descriptor(
                "oca_timeouts",
                "Connections closed by a timeout",
                None,
                MetricType::Counter,
            )?;
            for (i, kind) in ["header", "idle", "send"].iter().enumerate() {
                let v = m.sum(|w| w.timeouts[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("kind", *kind)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_url_admitted",
                "Content requests let in, by the scope of their signature (unsigned: --allow-unsigned)",
                None,
                MetricType::Counter,
            )?;
            for (i, scope) in ADMITTED.iter().enumerate() {
                let v = m.sum(|w| w.admitted[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("scope", *scope)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_url_rejections",
                "Content requests refused with 403, by what was wrong with the signature",
                None,
                MetricType::Counter,
            )?;
            for (i, r) in REJECTIONS.iter().enumerate() {
                let v = m.sum(|w| w.sig_rejected[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("reason", r.as_str())])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_tls_handshakes",
                "TLS handshakes completed, by where the connection's records are then encrypted",
                None,
                MetricType::Counter,
            )?;
            for (i, mode) in TLS_MODES.iter().enumerate() {
                let v = m.sum(|w| w.tls_handshakes[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("mode", *mode)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_tls_handshake_failures",
                "TLS handshakes that failed, by reason",
                None,
                MetricType::Counter,
            )?;
            for (i, reason) in TLS_FAILURES.iter().enumerate() {
                let v = m.sum(|w| w.tls_failures[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("reason", *reason)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_tls_sent_bytes",
                "Application bytes sent on TLS connections, by where they were encrypted",
                None,
                MetricType::Counter,
            )?;
            for (i, mode) in TLS_MODES.iter().enumerate() {
                let v = m.sum(|w| w.tls_sent[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("mode", *mode)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_tls_key_updates",
                "Peer TLS 1.3 KeyUpdates on kernel-TLS connections: applied, or closed (kernel without rekey)",
                None,
                MetricType::Counter,
            )?;
            for (i, result) in ["rekeyed", "closed"].iter().enumerate() {
                let v = m.sum(|w| w.key_updates[i].load(Relaxed));
                ConstCounter::new(v).encode(fam.encode_family(&[("result", *result)])?)?;
            }
        }
        ConstGauge::new(m.active_connections()).encode(enc.encode_descriptor(
            "oca_active_connections",
            "Open client connections",
            None,
            MetricType::Gauge,
        )?)?;
        ConstGauge::new(m.admission.clients() as i64).encode(enc.encode_descriptor(
            "oca_connected_clients",
            "Clients (IPv4 addresses, IPv6 /64s) with open connections, when max_connections_per_client is on",
            None,
            MetricType::Gauge,
        )?)?;
        {
            let mut fam = enc.encode_descriptor(
                "oca_disk_read_errors",
                "Read errors per store disk",
                None,
                MetricType::Counter,
            )?;
            for d in &m.disks {
                ConstCounter::new(d.errors.load(Relaxed))
                    .encode(fam.encode_family(&[("disk", d.path.as_str())])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_disk_hangs",
                "Operations on the disk that did not complete within disk_timeout (the disk is then marked failed)",
                None,
                MetricType::Counter,
            )?;
            for d in &m.disks {
                ConstCounter::new(d.hangs.load(Relaxed))
                    .encode(fam.encode_family(&[("disk", d.path.as_str())])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_disk_failed",
                "1 when the disk returned I/O errors or hung and its files are no longer served",
                None,
                MetricType::Gauge,
            )?;
            for d in &m.disks {
                ConstGauge::new(i64::from(d.failed.load(Relaxed)))
                    .encode(fam.encode_family(&[("disk", d.path.as_str())])?)?;
            }
        }
        for (name, help, pick) in [
            (
                "oca_cold_read_bytes",
                "Bytes read from the disk with O_DIRECT by the cold path",
                (|d: &DiskStats| d.read_bytes.load(Relaxed)) as fn(&DiskStats) -> u64,
            ),
            (
                "oca_cold_queue_waits",
                "Direct reads that waited for the disk's queue or a free buffer",
                |d: &DiskStats| d.queued.load(Relaxed),
            ),
        ] {
            let mut fam = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for d in &m.disks {
                ConstCounter::new(pick(d))
                    .encode(fam.encode_family(&[("disk", d.path.as_str())])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_disk_read_seconds",
                "Latency of the cold path's direct reads, per disk",
                None,
                MetricType::Histogram,
            )?;
            for d in &m.disks {
                let mut cumulative = 0u64;
                let mut buckets = Vec::with_capacity(DISK_BOUNDS.len() + 1);
                for (i, bound) in DISK_BOUNDS.iter().chain([f64::INFINITY].iter()).enumerate() {
                    cumulative += d.reads[i].load(Relaxed);
                    buckets.push((*bound, cumulative));
                }
                let sum = d.read_ns.load(Relaxed) as f64 / 1e9;
                fam.encode_family(&[("disk", d.path.as_str())])?
                    .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                    sum, cumulative, &buckets, None,
                )?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_body_parts",
                "File parts of responses by path (page_cache or cold) and the reason it was chosen",
                None,
                MetricType::Counter,
            )?;
            for (i, r) in crate::cold::Reason::ALL.iter().enumerate() {
                let path = if r.is_cold() { "cold" } else { "page_cache" };
                ConstCounter::new(m.sum(|w| w.body_parts[i].load(Relaxed)))
                    .encode(fam.encode_family(&[("path", path), ("reason", r.name())])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_cold_sends",
                "Send operations of the cold path, zero-copy (SendZc) or copied",
                None,
                MetricType::Counter,
            )?;
            for (i, mode) in ["zero_copy", "copy"].iter().enumerate() {
                ConstCounter::new(m.sum(|w| w.cold_sends[i].load(Relaxed)))
                    .encode(fam.encode_family(&[("send", *mode)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_cold_reads_ahead",
                "Direct reads of a long part's next buffer made while the current one was sent, by whether the next chunk used them",
                None,
                MetricType::Counter,
            )?;
            for (i, used) in ["yes", "no"].iter().enumerate() {
                ConstCounter::new(m.sum(|w| w.cold_ahead[i].load(Relaxed)))
                    .encode(fam.encode_family(&[("used", *used)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_cold_fallbacks",
                "Parts moved from the cold path to the page cache midway: a reader too slow to keep a shared buffer (cold.min_send_kib), or a wait for a buffer or the disk past cold.wait_timeout",
                None,
                MetricType::Counter,
            )?;
            for (i, why) in ["slow_reader", "wait_timeout"].iter().enumerate() {
                ConstCounter::new(m.sum(|w| w.cold_fallbacks[i].load(Relaxed)))
                    .encode(fam.encode_family(&[("reason", *why)])?)?;
            }
        }
        {
            let mut fam = enc.encode_descriptor(
                "oca_engine",
                "The I/O engine and body path in use",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(1i64)
                .encode(fam.encode_family(&[("engine", m.engine), ("body_path", m.body_path)])?)?;
        }
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(LATENCY_BOUNDS.len() + 1);
        for (i, bound) in LATENCY_BOUNDS
            .iter()
            .chain([f64::INFINITY].iter())
            .enumerate()
        {
            cumulative += m.sum(|w| w.latency_buckets[i].load(Relaxed));
            buckets.push((*bound, cumulative));
        }
        let sum = m.sum(|w| w.latency_sum_ns.load(Relaxed)) as f64 / 1e9;
        let mut hist = enc.encode_descriptor(
            "oca_response_seconds",
            "Time from a complete request head to the last byte handed to the kernel",
            None,
            MetricType::Histogram,
        )?;
        hist.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum, cumulative, &buckets, None,
        )
    }
}
