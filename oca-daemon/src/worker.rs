//! A worker's state: what every worker shares ([`Shared`]: the store, limits, counters, the TLS
//! set-up, the cold path's settings) and what each keeps to itself ([`WorkerCtx`]: its clock,
//! `Date` cache, open files, scratch buffer, and what its engine does for its connections).
//!
//! `main` builds the one [`Shared`]; the engine module builds one [`WorkerCtx`] per worker
//! thread, on that thread, and lends it to a connection (`&mut WorkerCtx`) with every event it
//! delivers. The loop refreshes [`WorkerCtx::now`] once per batch of events, so connections
//! read the clock without a syscall.
//!
//! Invariant: a `WorkerCtx` never leaves its thread (it holds `Rc`s), so nothing in it is
//! locked; what is shared between workers sits in [`Shared`], read-only but for atomics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use oca_store::Store;

use crate::access_log::{AccessLog, Outcome, Pending};
use crate::cold::{self, ColdConfig};
use crate::config::Limits;
use crate::engine::contract::Capabilities;
use crate::http::cors::Cors;
use crate::http::request::Request;
use crate::http::response::DateCache;
use crate::http::serve::ServeCtx;
use crate::metrics::{Metrics, WorkerStats};
use crate::open_files::OpenFiles;
use crate::process::Process;
use crate::signed_urls::UrlAuth;
use crate::tls::TlsSetup;

/// What is shared by every worker.
pub struct Shared {
    /// The content store.
    pub store: Store,
    /// Limits and timeouts.
    pub limits: Limits,
    /// The process's state: counters, disk health, admission, readiness and draining.
    pub process: Arc<Process>,
    /// The access log, when one is kept.
    pub access_log: Option<Arc<AccessLog>>,
    /// Which pages' origins may read content (browser players).
    pub cors: Cors,
    /// Who may fetch content.
    pub auth: Arc<UrlAuth>,
    /// HTTPS, when a TLS listener is configured.
    pub tls: Option<Arc<TlsSetup>>,
    /// The cold-read path's settings (used by the io_uring engine).
    pub cold: ColdConfig,
    /// Recent requests per file, for the cold path's `auto` policy.
    pub sketch: cold::Sketch,
}

impl Shared {
    /// The process's counters.
    pub fn metrics(&self) -> &Metrics {
        &self.process.metrics
    }
}

/// Per-worker state the connections use.
pub struct WorkerCtx {
    /// Process-wide state.
    pub shared: Arc<Shared>,
    /// This worker's index.
    pub index: usize,
    /// The loop's clock, refreshed once per batch of events.
    pub now: Instant,
    /// What the worker's engine does for its connections (default: nothing but waiting).
    pub caps: Capabilities,
    date: DateCache,
    boundary_state: u64,
    files: OpenFiles,
    /// File bytes on their way through rustls (userspace TLS only); allocated on first use.
    pub scratch: Vec<u8>,
    /// Responses below 400 answered, for the access log's sampling.
    access_seq: u32,
}

impl WorkerCtx {
    /// A context for worker `index`.
    pub fn new(shared: Arc<Shared>, index: usize) -> WorkerCtx {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        WorkerCtx {
            shared,
            index,
            now: Instant::now(),
            caps: Capabilities::default(),
            date: DateCache::default(),
            files: OpenFiles::default(),
            scratch: Vec::new(),
            access_seq: 0,
            boundary_state: seed ^ ((index as u64 + 1) << 32) | 1,
        }
    }

    /// This worker's counters.
    pub fn stats(&self) -> &WorkerStats {
        self.shared.metrics().worker(self.index)
    }

    /// The worker's cached `Date` header value.
    pub fn date_cache(&mut self) -> &mut DateCache {
        &mut self.date
    }

    /// The worker's open files (the engine adds the files it opened off the thread).
    pub fn files_mut(&mut self) -> &mut OpenFiles {
        &mut self.files
    }

    /// Whether the server is draining.
    pub fn draining(&self) -> bool {
        self.shared.process.draining()
    }

    /// What the access log keeps of `req`, answered `status`, when it is to be logged.
    pub fn access_pending(&mut self, req: &Request<'_>, status: u16) -> Option<Pending> {
        let log = self.shared.access_log.as_ref()?;
        if status < 400 {
            self.access_seq = self.access_seq.wrapping_add(1);
            if !log.sampled(self.access_seq) {
                return None;
            }
        }
        Some(Pending::capture(req))
    }

    /// Logs a one-shot reply on a connection about to close (`Outcome::closing`); errors are
    /// never sampled out. `request` is only made when a log is kept.
    pub fn log_closing(
        &self,
        peer: Option<SocketAddr>,
        request: impl FnOnce() -> Pending,
        outcome: &Outcome,
    ) {
        if let Some(log) = &self.shared.access_log {
            log.record(self.index, peer, &request(), outcome);
        }
    }

    /// What the sans-IO request handler needs to answer one request on this worker.
    pub fn serve_ctx(&mut self) -> ServeCtx<'_> {
        let shared = &*self.shared;
        ServeCtx {
            store: &shared.store,
            auth: &shared.auth,
            cors: &shared.cors,
            files: &mut self.files,
            now: self.now,
            max_ranges: shared.limits.max_ranges,
            date: &mut self.date,
            boundary_state: &mut self.boundary_state,
            draining: shared.process.draining(),
            disks: &shared.process.disks,
            defer_opens: self.caps.off_thread_io,
            worker: self.index,
        }
    }
}
