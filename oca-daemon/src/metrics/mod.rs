//! The daemon's counters: kept per worker on the worker's own cache lines (nothing shared is
//! written on the hot path) and summed when `/metrics` is scraped.
//!
//! Every label is an enum ([`Timeout`], [`TlsMode`], [`TlsFailure`], `cold::Reason`, the URL
//! admission outcome): a counter is an array indexed by the enum, so a label that does not exist
//! cannot be counted. [`encode()`] writes the families in the OpenMetrics text format (the
//! `encode` module); process state (readiness, draining, disk health, admission) is not kept
//! here but read from its owners when encoding.

mod encode;

pub(crate) use encode::{counters, single};
pub use encode::{encode, render};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::cold::Reason;
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

/// The histogram bucket `took` falls in: the first whose upper bound (seconds) it does not
/// exceed, or the last (+Inf).
fn bucket(bounds: &[f64], took: Duration) -> usize {
    let secs = took.as_secs_f64();
    bounds
        .iter()
        .position(|&b| secs <= b)
        .unwrap_or(bounds.len())
}

/// One store disk's cold-path counters (shared: direct reads are far fewer than requests, so
/// one cache line per disk does not contend). Its health is `disk_health`'s.
#[derive(Debug)]
struct DiskStats {
    path: String,
    reads: [AtomicU64; DISK_BOUNDS.len() + 1],
    read_ns: AtomicU64,
    read_bytes: AtomicU64,
    queued: AtomicU64,
}

impl DiskStats {
    fn new(path: String) -> DiskStats {
        DiskStats {
            path,
            reads: Default::default(),
            read_ns: AtomicU64::new(0),
            read_bytes: AtomicU64::new(0),
            queued: AtomicU64::new(0),
        }
    }
}

/// Why a connection was closed by a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// The request head did not arrive in time (slowloris).
    Header = 0,
    /// An idle keep-alive connection expired.
    Idle = 1,
    /// The client stopped reading a response.
    Send = 2,
}

impl Timeout {
    const NAMES: [&'static str; 3] = ["header", "idle", "send"];
}

/// Where a TLS connection's records are encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Kernel TLS.
    Kernel = 0,
    /// rustls in this process.
    User = 1,
}

impl TlsMode {
    const NAMES: [&'static str; 2] = ["ktls", "userspace"];

    /// Its label value.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// Why a TLS handshake failed, as labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailure {
    /// The handshake did not finish within the header timeout.
    Timeout = 0,
    /// The peer closed during the handshake.
    Eof,
    /// The bytes were not TLS records.
    NotTls,
    /// Plain HTTP on the TLS port.
    PlainHttp,
    /// No protocol version in common.
    ProtocolVersion,
    /// No cipher suite in common.
    NoSharedCipher,
    /// No application protocol in common.
    Alpn,
    /// The peer sent an alert.
    PeerAlert,
    /// Another incompatibility.
    Incompatible,
    /// Handing the session to the kernel failed.
    KtlsSetup,
    /// Anything else.
    Other,
}

impl TlsFailure {
    const NAMES: [&'static str; 11] = [
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
}

const _: () = assert!(TlsFailure::Other as usize + 1 == TlsFailure::NAMES.len());

/// Labels of the status-class counter.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Labels of the admitted-request counter, by [`admitted_index`].
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
    match r {
        Rejection::Missing => 0,
        Rejection::Malformed => 1,
        Rejection::UnknownKey => 2,
        Rejection::BadSignature => 3,
        Rejection::Expired => 4,
    }
}

/// One worker's counters, on their own cache lines.
#[repr(align(128))]
#[derive(Default, Debug)]
pub struct WorkerStats {
    requests: [AtomicU64; STATUS_CLASSES.len()],
    bytes_sent: AtomicU64,
    active: AtomicI64,
    accepted: AtomicU64,
    timeouts: [AtomicU64; Timeout::NAMES.len()],
    truncated: AtomicU64,
    dropped: AtomicU64,
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_ns: AtomicU64,
    heartbeat_ms: AtomicU64,
    body_parts: [AtomicU64; Reason::ALL.len()],
    /// Cold-path sends: zero-copy, copied.
    cold_sends: [AtomicU64; 2],
    /// Cold reads ahead: adopted by the next chunk, given back unused.
    cold_ahead: [AtomicU64; 2],
    /// Parts moved off the cold path midway: slow reader, waited too long.
    cold_fallbacks: [AtomicU64; 2],
    admitted: [AtomicU64; ADMITTED.len()],
    sig_rejected: [AtomicU64; REJECTIONS.len()],
    tls_handshakes: [AtomicU64; TlsMode::NAMES.len()],
    tls_failures: [AtomicU64; TlsFailure::NAMES.len()],
    tls_sent: [AtomicU64; TlsMode::NAMES.len()],
    key_updates: [AtomicU64; 2],
    fill_bytes: AtomicU64,
}

impl WorkerStats {
    /// Counts a finished response.
    pub fn response(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[class].fetch_add(1, Relaxed);
        self.latency_buckets[bucket(&LATENCY_BOUNDS, latency)].fetch_add(1, Relaxed);
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
    pub fn tls_failure(&self, reason: TlsFailure) {
        self.tls_failures[reason as usize].fetch_add(1, Relaxed);
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
    pub fn body_part(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.body_parts[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a part moved off the cold path midway ([`Reason::Slow`] or [`Reason::Busy`]).
    pub fn cold_fallback(&self, reason: Reason) {
        let i = usize::from(reason != Reason::Slow);
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

/// All counters of the process.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<WorkerStats>,
    disks: Vec<DiskStats>,
    engine: &'static str,
    body_path: &'static str,
    started: Instant,
}

impl Metrics {
    /// Counters for `workers` workers and the given disks.
    pub fn new(
        workers: usize,
        disks: Vec<String>,
        engine: &'static str,
        body_path: &'static str,
    ) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerStats::default()).collect(),
            disks: disks.into_iter().map(DiskStats::new).collect(),
            engine,
            body_path,
            started: Instant::now(),
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

    /// Records one direct read on disk `i`.
    pub fn cold_read(&self, i: usize, took: Duration, bytes: u64) {
        let Some(d) = self.disks.get(i) else { return };
        d.reads[bucket(&DISK_BOUNDS, took)].fetch_add(1, Relaxed);
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

    /// Responses sent, every status class (the admin listener's `/status`).
    pub fn responses_total(&self) -> u64 {
        self.workers
            .iter()
            .flat_map(|w| w.requests.iter())
            .map(|r| r.load(Relaxed))
            .sum()
    }

    /// Bytes sent to clients (the admin listener's `/status`).
    pub fn sent_bytes_total(&self) -> u64 {
        self.sum(|w| &w.bytes_sent)
    }

    fn sum(&self, f: impl Fn(&WorkerStats) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// Each element of a per-worker counter array, summed over workers.
    fn sum_each<const N: usize>(&self, f: impl Fn(&WorkerStats) -> &[AtomicU64; N]) -> [u64; N] {
        let mut out = [0u64; N];
        for w in &self.workers {
            for (o, c) in out.iter_mut().zip(f(w)) {
                *o += c.load(Relaxed);
            }
        }
        out
    }
}
