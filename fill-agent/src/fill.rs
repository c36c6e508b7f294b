//! Filling: what the manifest lists and the stores lack is downloaded, verified and published.
//!
//! Fills in flight are tracked by content id ([`Fills`]): the agent's loop starts fills for
//! missing entries up to the concurrency whenever a slot frees up, so one slow fill never holds
//! back the others, and a fill whose source keeps it pinned is bounded by the source's minimum
//! rate and a deadline.
//!
//! A download goes to `<disk>/tmp/<id>.part` (never servable: oca-daemon only opens
//! `objects/`), hashed as it streams; a resumed download hashes the part it already has first.
//! Only a whole file whose SHA-256 and size match the manifest is fsynced and renamed into
//! `objects/`. A source that errs, stalls or is too slow is left for the next one (the part is
//! kept, so the next source resumes it with `Range`); one whose bytes fail the check is reported,
//! and the part discarded.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oca_protocol::health::FillError;
use oca_protocol::manifest::{Manifest, ManifestEntry, Source, SourceKind};
use oca_store::{ContentId, Store};
use sha2::{Digest, Sha256};
use tokio::task::{AbortHandle, JoinError, JoinSet};

use crate::inventory::Inventory;
use crate::metrics::Metrics;

/// What a disk can do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskHealth {
    /// Filling and serving.
    Ok,
    /// Out of space (ENOSPC or EDQUOT): serving, not filling until a report finds room again.
    Full,
    /// Media errors while filling, or no tmp/ directory: serving what it holds, not filling.
    Failed,
    /// oca-daemon found read errors: its files are not served, not held, not filled.
    Unreadable,
}

/// Space a fill in flight holds on to: what pick_disk must not hand to another fill.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reservation {
    /// The disk chosen, once chosen.
    pub disk: Option<usize>,
    /// Bytes reserved there (the whole file: conservative while the part grows).
    pub bytes: u64,
}

/// State the fill tasks and the reporter share.
pub struct Shared {
    /// The stores.
    pub store: Store,
    /// What is held.
    pub inventory: Mutex<Inventory>,
    /// Sources that failed since the last report.
    pub errors: Mutex<Vec<FillError>>,
    /// Per-disk health.
    pub disks: Mutex<Vec<DiskHealth>>,
    /// The fill bandwidth cap.
    pub bucket: TokenBucket,
    /// Fills in flight by content id, with the space each reserves.
    pub in_flight: Mutex<HashMap<String, Reservation>>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

impl Shared {
    /// Whether a fill of `id` is in flight.
    pub fn filling(&self, id: &str) -> bool {
        lock(&self.in_flight).contains_key(id)
    }
}

/// Locks, going on with the data of a holder that panicked.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one file's fill ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Published.
    Filled(SourceKind),
    /// Every usable source failed.
    Failed,
    /// Only sources that may not be used yet (escalation delay): try again later.
    Waiting,
    /// No disk can take it.
    NoSpace,
}

/// How hard a fill pushes its sources.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// No byte for this long: the source stalled. Also the window the minimum rate is
    /// measured over.
    pub stall: Duration,
    /// Slowest acceptable source, bytes per second (0: any rate, no deadline).
    pub min_rate: u64,
}

/// Added to `size / min_rate` for a source's deadline: connection setup, slow start and short
/// pauses of a source that is otherwise fast enough.
pub const DEADLINE_ALLOWANCE: Duration = Duration::from_secs(60);

/// A token bucket over bytes: `rate` bytes per second, bursts up to a tenth of a second.
pub struct TokenBucket {
    state: Mutex<(f64, Instant, f64)>,
}

impl TokenBucket {
    /// Unlimited until [`TokenBucket::set_rate`].
    pub fn new() -> TokenBucket {
        TokenBucket {
            state: Mutex::new((0.0, Instant::now(), 0.0)),
        }
    }

    /// Sets the cap in bits per second (0: none).
    pub fn set_rate(&self, bits_per_sec: u64) {
        let mut s = lock(&self.state);
        s.2 = bits_per_sec as f64 / 8.0;
    }

    /// Waits until `n` bytes may pass.
    pub async fn take(&self, n: usize) {
        let wait = {
            let mut s = lock(&self.state);
            let rate = s.2;
            if rate <= 0.0 {
                return;
            }
            let now = Instant::now();
            let burst = (rate * 0.1).max(64.0 * 1024.0);
            s.0 = (s.0 + now.duration_since(s.1).as_secs_f64() * rate).min(burst);
            s.1 = now;
            s.0 -= n as f64;
            if s.0 >= 0.0 {
                return;
            }
            Duration::from_secs_f64(-s.0 / rate)
        };
        tokio::time::sleep(wait).await;
    }
}

impl Default for TokenBucket {
    fn default() -> Self {
        Self::new()
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The client towards fill sources (peers, tier sites, the origin): no redirect followed (a
/// source answers with the file or fails; a redirect could point the agent anywhere, such as
/// oca-daemon's admin port), no body decoding. An https source is checked against the
/// compiled-in web roots, the system's store, and `extra_roots`: the control plane's CA, since
/// the embedded origin is served under the control plane's certificate.
pub fn client(extra_roots: &[reqwest::Certificate]) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .no_gzip()
        .no_brotli()
        .no_deflate()
        .no_zstd();
    for c in extra_roots {
        b = b.add_root_certificate(c.clone());
    }
    b.build()
}

/// The fills in flight, by content id.
pub struct Fills {
    tasks: JoinSet<Outcome>,
    ids: HashMap<tokio::task::Id, String>,
    handles: HashMap<String, AbortHandle>,
    /// Entries whose fill failed, found no room or must wait this cycle: not retried before
    /// the next one (a failing source is not hammered).
    resting: HashSet<String>,
    client: reqwest::Client,
    limits: Limits,
}

impl Fills {
    /// No fill in flight yet.
    pub fn new(client: reqwest::Client, limits: Limits) -> Fills {
        Fills {
            tasks: JoinSet::new(),
            ids: HashMap::new(),
            handles: HashMap::new(),
            resting: HashSet::new(),
            client,
            limits,
        }
    }

    /// A new cycle: entries that failed in the last one may be tried again.
    pub fn new_cycle(&mut self) {
        self.resting.clear();
    }

    /// Starts fills for the entries not held, not in flight and not resting, up to
    /// `concurrency` in flight.
    pub fn start(&mut self, shared: &Arc<Shared>, manifest: &Manifest, concurrency: usize) {
        shared.bucket.set_rate(manifest.rate_limit_bps);
        let free = concurrency.saturating_sub(self.handles.len());
        if free == 0 {
            return;
        }
        let now = unix_now();
        let todo: Vec<ManifestEntry> = {
            let inv = lock(&shared.inventory);
            manifest
                .entries
                .iter()
                .filter(|e| !inv.holds(&e.content_id))
                .filter(|e| !self.handles.contains_key(&e.content_id))
                .filter(|e| !self.resting.contains(&e.content_id))
                .filter(|e| usable(e, now).next().is_some())
                .take(free)
                .cloned()
                .collect()
        };
        for entry in todo {
            self.spawn(shared, entry);
        }
        shared
            .metrics
            .fills_in_flight
            .set(self.handles.len() as i64);
    }

    fn spawn(&mut self, shared: &Arc<Shared>, entry: ManifestEntry) {
        let id = entry.content_id.clone();
        lock(&shared.in_flight).insert(id.clone(), Reservation::default());
        let (shared, client, limits) = (shared.clone(), self.client.clone(), self.limits);
        let handle = self
            .tasks
            .spawn(async move { fill_one(&shared, &client, &entry, limits).await });
        self.ids.insert(handle.id(), id.clone());
        self.handles.insert(id, handle);
    }

    /// Stops the fills of what `manifest` no longer lists (their parts are swept later).
    pub fn drop_unlisted(&mut self, manifest: &Manifest) {
        let listed: HashSet<&str> = manifest
            .entries
            .iter()
            .map(|e| e.content_id.as_str())
            .collect();
        for (id, h) in &self.handles {
            if !listed.contains(id.as_str()) {
                tracing::info!(id, "no longer in the manifest: fill stopped");
                h.abort();
            }
        }
    }

    /// The next fill to end; never resolves while none is in flight.
    pub async fn next(&mut self) -> Result<(tokio::task::Id, Outcome), JoinError> {
        match self.tasks.join_next_with_id().await {
            Some(done) => done,
            None => std::future::pending().await,
        }
    }

    /// Records how a fill ended (from [`Fills::next`]) and frees its slot and reservation.
    pub fn finished(
        &mut self,
        shared: &Shared,
        done: Result<(tokio::task::Id, Outcome), JoinError>,
    ) {
        let (task, outcome) = match done {
            Ok((task, outcome)) => (task, Some(outcome)),
            Err(e) => {
                if e.is_panic() {
                    tracing::error!(error = %e, "a fill task panicked");
                }
                (e.id(), None)
            }
        };
        let Some(id) = self.ids.remove(&task) else {
            return;
        };
        self.handles.remove(&id);
        lock(&shared.in_flight).remove(&id);
        shared
            .metrics
            .fills_in_flight
            .set(self.handles.len() as i64);
        if !matches!(outcome, Some(Outcome::Filled(_))) {
            self.resting.insert(id);
        }
    }
}

/// The sources of `entry` that may be used at `now` (their escalation delay is over).
fn usable(entry: &ManifestEntry, now: u64) -> impl Iterator<Item = &Source> {
    entry
        .sources
        .iter()
        .filter(move |s| s.not_before.is_none_or(|t| t <= now))
}

/// The disk a file goes to: the first in its placement order that is healthy and has room
/// beyond what fills in flight there have reserved; the reservation is taken at once.
fn pick_disk(shared: &Shared, id: ContentId<'_>, size: u64) -> Option<usize> {
    let disks = lock(&shared.disks).clone();
    let mut in_flight = lock(&shared.in_flight);
    let reserved = |d: usize| -> u64 {
        in_flight
            .iter()
            .filter(|(other, r)| other.as_str() != id.as_str() && r.disk == Some(d))
            .map(|(_, r)| r.bytes)
            .sum()
    };
    let disk = shared.store.placement(id).into_iter().find(|&d| {
        disks[d] == DiskHealth::Ok
            && crate::disk_space::free_bytes(shared.store.disks()[d].root())
                .saturating_sub(reserved(d))
                > size
    })?;
    in_flight.insert(
        id.as_str().to_string(),
        Reservation {
            disk: Some(disk),
            bytes: size,
        },
    );
    Some(disk)
}

/// Fills one file from the first source that delivers it whole and correct.
pub async fn fill_one(
    shared: &Shared,
    client: &reqwest::Client,
    entry: &ManifestEntry,
    limits: Limits,
) -> Outcome {
    let Ok(id) = ContentId::parse(&entry.content_id) else {
        tracing::warn!(id = %entry.content_id, "manifest entry with a bad content id; skipped");
        return Outcome::Failed;
    };
    let usable: Vec<&Source> = usable(entry, unix_now()).collect();
    if usable.is_empty() {
        return Outcome::Waiting;
    }
    let Some(disk) = pick_disk(shared, id, entry.size) else {
        tracing::warn!(id = %id, size = entry.size, "no disk has room for this file");
        return Outcome::NoSpace;
    };
    let store_disk = &shared.store.disks()[disk];
    for source in usable {
        let started = Instant::now();
        match fetch(shared, client, source, entry, store_disk, id, limits).await {
            Ok(bytes) => {
                return publish(shared, disk, id, source, bytes, started.elapsed());
            }
            Err(Failure::Disk(e)) => return disk_error(shared, disk, id, &e),
            Err(Failure::Source(reason, discard)) => {
                tracing::warn!(id = %id, source = ?source.kind, url_host = host(&source.url), reason, "fill source failed; trying the next");
                if discard {
                    let _ = store_disk.remove_part(id);
                }
                shared.metrics.source_failed(&reason);
                lock(&shared.errors).push(FillError {
                    content_id: id.as_str().to_string(),
                    source: source.oca_id.clone().unwrap_or_else(|| "origin".into()),
                    reason,
                });
            }
        }
    }
    Outcome::Failed
}

/// Moves a verified part into `objects/` and adds it to the inventory.
fn publish(
    shared: &Shared,
    disk: usize,
    id: ContentId<'_>,
    source: &Source,
    bytes: u64,
    took: Duration,
) -> Outcome {
    let store_disk = &shared.store.disks()[disk];
    match store_disk.publish(id) {
        Ok(()) => {
            let secs = took.as_secs_f64();
            tracing::info!(id = %id, source = ?source.kind, from = source.oca_id.as_deref().unwrap_or("origin"),
                bytes, mbit_per_s = bytes as f64 * 8.0 / secs.max(1e-6) / 1e6, "filled");
            lock(&shared.inventory).add(id.as_str(), disk, bytes);
            shared.metrics.files_filled.inc();
            Outcome::Filled(source.kind)
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // Someone put a symlink where the shard directory belongs: not a failing disk,
            // and nothing is written through it.
            tracing::warn!(id = %id, disk = %store_disk.root().display(), "the shard directory is a symlink; not publishing through it");
            let _ = store_disk.remove_part(id);
            Outcome::Failed
        }
        Err(e) => disk_error(shared, disk, id, &e),
    }
}

fn host(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

/// What an error of our own disk means: out of space marks the disk full until a report finds
/// room again, a media error marks it failed, anything else fails this fill only.
fn disk_error(shared: &Shared, disk: usize, id: ContentId<'_>, e: &std::io::Error) -> Outcome {
    let store_disk = &shared.store.disks()[disk];
    let root = store_disk.root().display();
    let errno = e.raw_os_error().unwrap_or(0);
    let (health, outcome) = match errno {
        libc::ENOSPC | libc::EDQUOT => {
            // The part only takes space another fill (or the next try) needs.
            let _ = store_disk.remove_part(id);
            (DiskHealth::Full, Outcome::NoSpace)
        }
        n if oca_store::is_media_error(n) => (DiskHealth::Failed, Outcome::Failed),
        _ => {
            tracing::warn!(id = %id, disk = %root, error = %e, "fill failed on this disk; the disk stays in service");
            return Outcome::Failed;
        }
    };
    tracing::warn!(id = %id, disk = %root, error = %e, ?health, "disk problem while filling");
    let mut disks = lock(&shared.disks);
    if disks[disk] == DiskHealth::Ok {
        disks[disk] = health;
    }
    outcome
}

enum Failure {
    /// The source failed: reason, and whether the part holds bad bytes.
    Source(String, bool),
    /// Our disk failed.
    Disk(std::io::Error),
}

fn refused(reason: &str) -> Failure {
    Failure::Source(reason.to_string(), false)
}

/// Downloads (or resumes) `entry` from `source` into `part`; returns the bytes in the part.
async fn fetch(
    shared: &Shared,
    client: &reqwest::Client,
    source: &Source,
    entry: &ManifestEntry,
    store_disk: &oca_store::Disk,
    id: ContentId<'_>,
    limits: Limits,
) -> Result<u64, Failure> {
    // tmp/<id>.part, resolved beneath the disk: a symlink planted as tmp/ names nothing.
    let mut file = store_disk.open_part(id).map_err(Failure::Disk)?;
    let mut have = file.metadata().map_err(Failure::Disk)?.len();
    if have > entry.size {
        file.set_len(0).map_err(Failure::Disk)?;
        have = 0;
    }
    let mut hasher = Sha256::new();
    if have > 0 {
        hash_prefix(&file, have, &mut hasher).map_err(Failure::Disk)?;
    }
    if have < entry.size {
        // Identity only: the bytes hashed and stored are the file's, never an encoding of it.
        let mut req = client
            .get(&source.url)
            .header(reqwest::header::ACCEPT_ENCODING, "identity");
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = tokio::time::timeout(limits.stall, req.send())
            .await
            .map_err(|_| refused("stall"))?
            .map_err(|e| {
                // The reason (refused, unreachable, a certificate not trusted) is the operator's
                // to see; the report carries only the short one.
                let chain = crate::control_plane::chain(&e);
                tracing::warn!(id = %entry.content_id, url_host = host(&source.url), error = chain, "cannot reach the fill source");
                refused("connect")
            })?;
        if check_head(&resp, have, entry.size)? == 0 && have > 0 {
            // The source ignored the range: start over with its whole answer.
            file.set_len(0).map_err(Failure::Disk)?;
            have = 0;
            hasher = Sha256::new();
        } else if have > 0 {
            tracing::info!(id = %entry.content_id, from = have, "resuming with Range");
        }
        // SHA-256 and the disk on their own thread: the network side only receives (the two
        // overlap on two cores). It hands over blocks of about 1 MiB: a thread wake-up per
        // socket-sized chunk cost more CPU than the copy that gathers them.
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let writer =
            tokio::task::spawn_blocking(move || -> std::io::Result<(std::fs::File, Sha256)> {
                let mut out = file;
                while let Some(block) = rx.blocking_recv() {
                    let block: bytes::Bytes = block;
                    hasher.update(&block);
                    out.write_all(&block)?;
                }
                Ok((out, hasher))
            });
        let received = receive(shared, resp, tx, entry.size, &mut have, limits).await;
        let (f, h) = writer
            .await
            .map_err(|_| Failure::Disk(std::io::Error::other("writer thread failed")))?
            .map_err(Failure::Disk)?;
        received?;
        file = f;
        hasher = h;
    }
    if have != entry.size {
        // Short: keep what arrived for the next source to resume.
        return Err(refused("short"));
    }
    let digest = oca_protocol::manifest::hex(&hasher.finalize());
    if !digest.eq_ignore_ascii_case(&entry.sha256) {
        return Err(Failure::Source("hash_mismatch".into(), true));
    }
    file.sync_all().map_err(Failure::Disk)?;
    Ok(have)
}

/// Checks a source's answer before a byte of its body is read; returns the offset its body
/// starts at. Refused: a redirect (`http_3xx`), another status than 200, or 206 to a resume
/// (`http_<status>`); a 206 whose Content-Range does not continue the part exactly
/// (`content_range`); a body in an encoding (`content_encoding`); a Content-Length other than
/// the bytes expected (`length_mismatch`).
fn check_head(resp: &reqwest::Response, have: u64, size: u64) -> Result<u64, Failure> {
    let status = resp.status().as_u16();
    let headers = resp.headers();
    let start = match status {
        300..=399 => return Err(refused("http_3xx")),
        206 if have > 0 => {
            let range = headers
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok());
            if range != Some(format!("bytes {have}-{}/{size}", size - 1).as_str()) {
                return Err(refused("content_range"));
            }
            have
        }
        200 => 0,
        s => return Err(Failure::Source(format!("http_{s}"), false)),
    };
    let encoded = headers
        .get_all(reqwest::header::CONTENT_ENCODING)
        .iter()
        .any(|v| {
            !v.to_str()
                .is_ok_and(|e| e.trim().eq_ignore_ascii_case("identity"))
        });
    if encoded {
        return Err(refused("content_encoding"));
    }
    let length = headers
        .get(reqwest::header::CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|l| l.trim().parse::<u64>().ok()));
    if length.is_some_and(|l| l != Some(size - start)) {
        return Err(refused("length_mismatch"));
    }
    Ok(start)
}

/// Whether a source keeps up: at least `min_rate` bytes per second over each window (the stall
/// timeout), and the whole body within [`DEADLINE_ALLOWANCE`] + bytes / `min_rate`. Time the fill
/// spends waiting on this side (the rate cap, the disk) is not held against the source.
struct Pace {
    min_rate: u64,
    window: Duration,
    deadline: Option<Duration>,
    started: Instant,
    ours: Duration,
    window_start: Instant,
    window_ours: Duration,
    window_bytes: u64,
}

impl Pace {
    fn new(limits: Limits, bytes: u64) -> Pace {
        let now = Instant::now();
        Pace {
            min_rate: limits.min_rate,
            window: limits.stall,
            deadline: (limits.min_rate > 0).then(|| {
                DEADLINE_ALLOWANCE + Duration::from_secs_f64(bytes as f64 / limits.min_rate as f64)
            }),
            started: now,
            ours: Duration::ZERO,
            window_start: now,
            window_ours: Duration::ZERO,
            window_bytes: 0,
        }
    }

    /// The source's time so far: since the body started, less our own waits.
    fn source_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.ours)
    }

    fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| self.source_time() >= d)
    }

    /// How long to wait for the next chunk: the stall timeout, or less when the deadline is
    /// nearer.
    fn patience(&self) -> Duration {
        match self.deadline {
            Some(d) => self
                .window
                .min(d.saturating_sub(self.source_time()))
                .max(Duration::from_millis(1)),
            None => self.window,
        }
    }

    /// Why waiting for a chunk ran out.
    fn timed_out(&self) -> &'static str {
        if self.past_deadline() {
            "deadline"
        } else {
            "stall"
        }
    }

    /// Time spent waiting on this side.
    fn ours(&mut self, d: Duration) {
        self.ours += d;
        self.window_ours += d;
    }

    /// `n` bytes arrived: an error when the source is past its deadline or was slower than
    /// the minimum over the window that just ended.
    fn arrived(&mut self, n: u64) -> Result<(), &'static str> {
        self.window_bytes += n;
        if self.past_deadline() {
            return Err("deadline");
        }
        if self.min_rate == 0 {
            return Ok(());
        }
        let elapsed = self.window_start.elapsed().saturating_sub(self.window_ours);
        if elapsed < self.window {
            return Ok(());
        }
        if (self.window_bytes as f64) < self.min_rate as f64 * elapsed.as_secs_f64() {
            return Err("slow");
        }
        self.window_start = Instant::now();
        self.window_ours = Duration::ZERO;
        self.window_bytes = 0;
        Ok(())
    }
}

/// Bytes gathered before they go to the hashing and writing thread.
const BLOCK: usize = 1 << 20;

/// Receives the body into `tx` in blocks of about [`BLOCK`] (rate-capped, held to the stall
/// timeout, the minimum rate and the deadline), counting into `have` what the writer was
/// handed.
async fn receive(
    shared: &Shared,
    mut resp: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    size: u64,
    have: &mut u64,
    limits: Limits,
) -> Result<(), Failure> {
    let mut block = bytes::BytesMut::new();
    let mut received = *have;
    let mut pace = Pace::new(limits, size - *have);
    loop {
        let chunk = match tokio::time::timeout(pace.patience(), resp.chunk()).await {
            Err(_) => Err(pace.timed_out()),
            Ok(Err(_)) => Err("io"),
            Ok(Ok(c)) => Ok(c),
        };
        let chunk = match chunk {
            Ok(c) => c,
            Err(reason) => {
                // What did arrive is kept for the next source to resume from.
                hand_over(&tx, &mut block, have).await;
                return Err(refused(reason));
            }
        };
        let Some(chunk) = chunk else {
            hand_over(&tx, &mut block, have).await;
            return Ok(());
        };
        received += chunk.len() as u64;
        if received > size {
            return Err(Failure::Source("size_mismatch".into(), true));
        }
        shared.metrics.fill_bytes.inc_by(chunk.len() as u64);
        if let Err(reason) = pace.arrived(chunk.len() as u64) {
            block.extend_from_slice(&chunk);
            hand_over(&tx, &mut block, have).await;
            return Err(refused(reason));
        }
        let waited = Instant::now();
        shared.bucket.take(chunk.len()).await;
        let handed = if block.is_empty() && chunk.len() >= BLOCK / 4 {
            let n = chunk.len() as u64;
            let sent = tx.send(chunk).await.is_ok();
            if sent {
                *have += n;
            }
            sent
        } else {
            if block.capacity() == 0 {
                block.reserve(BLOCK);
            }
            block.extend_from_slice(&chunk);
            block.len() < BLOCK || hand_over(&tx, &mut block, have).await
        };
        pace.ours(waited.elapsed());
        if !handed {
            return Ok(()); // The writer stopped: its error is the one to report.
        }
    }
}

/// Sends the gathered block to the writer; false when the writer has stopped.
async fn hand_over(
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
    block: &mut bytes::BytesMut,
    have: &mut u64,
) -> bool {
    if block.is_empty() {
        return true;
    }
    let b = block.split().freeze();
    let n = b.len() as u64;
    if tx.send(b).await.is_err() {
        return false;
    }
    *have += n;
    true
}

fn hash_prefix(part: &std::fs::File, len: u64, hasher: &mut Sha256) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0;
    while at < len {
        let want = buf.len().min((len - at) as usize);
        let n = part.read_at(&mut buf[..want], at)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        reqwest::Response::from(b.body(Vec::<u8>::new()).unwrap())
    }

    fn reason(r: Result<u64, Failure>) -> String {
        match r {
            Ok(start) => format!("ok {start}"),
            Err(Failure::Source(reason, _)) => reason,
            Err(Failure::Disk(e)) => format!("disk {e}"),
        }
    }

    /// Status, headers, bytes already in the part, and the verdict.
    type Case<'a> = (u16, &'a [(&'a str, &'a str)], u64, &'a str);

    #[test]
    fn answers_that_do_not_continue_the_part_are_refused_before_the_body() {
        let cases: &[Case] = &[
            (200, &[("content-length", "100")], 0, "ok 0"),
            (200, &[("content-length", "100")], 40, "ok 0"),
            (200, &[], 0, "ok 0"),
            (
                206,
                &[
                    ("content-range", "bytes 40-99/100"),
                    ("content-length", "60"),
                ],
                40,
                "ok 40",
            ),
            (
                206,
                &[("content-range", "bytes 0-99/100")],
                40,
                "content_range",
            ),
            (
                206,
                &[("content-range", "bytes 40-99/101")],
                40,
                "content_range",
            ),
            (
                206,
                &[("content-range", "bytes 40-98/100")],
                40,
                "content_range",
            ),
            (206, &[], 40, "content_range"),
            (206, &[("content-range", "bytes 0-99/100")], 0, "http_206"),
            (200, &[("content-length", "101")], 0, "length_mismatch"),
            (
                206,
                &[
                    ("content-range", "bytes 40-99/100"),
                    ("content-length", "100"),
                ],
                40,
                "length_mismatch",
            ),
            (200, &[("content-encoding", "gzip")], 0, "content_encoding"),
            (200, &[("content-encoding", "identity")], 0, "ok 0"),
            (
                302,
                &[("location", "http://127.0.0.1:9180/metrics")],
                0,
                "http_3xx",
            ),
            (404, &[], 0, "http_404"),
        ];
        for (status, headers, have, want) in cases {
            let got = reason(check_head(&head(*status, headers), *have, 100));
            assert_eq!(&got, want, "{status} {headers:?} at {have}");
        }
    }

    #[test]
    fn a_slow_source_fails_its_window_and_our_own_waits_do_not_count() {
        let limits = Limits {
            stall: Duration::from_millis(100),
            min_rate: 10_000,
        };
        let mut pace = Pace::new(limits, 1 << 20);
        assert_eq!(
            pace.deadline,
            Some(DEADLINE_ALLOWANCE + Duration::from_secs_f64(104.8576))
        );
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(
            pace.arrived(100),
            Err("slow"),
            "100 B in 120 ms is under 10 kB/s"
        );
        let mut pace = Pace::new(limits, 1 << 20);
        std::thread::sleep(Duration::from_millis(120));
        pace.ours(Duration::from_millis(115));
        assert_eq!(
            pace.arrived(100),
            Ok(()),
            "the window is not over: we were waiting"
        );
        let mut pace = Pace::new(limits, 1 << 20);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(pace.arrived(5_000), Ok(()), "fast enough");
        let none = Limits {
            stall: Duration::from_millis(100),
            min_rate: 0,
        };
        let mut pace = Pace::new(none, 1 << 20);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(pace.arrived(1), Ok(()));
        assert_eq!(pace.deadline, None);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_token_bucket_holds_the_rate() {
        let b = TokenBucket::new();
        b.set_rate(8 * 1_000_000); // 1 MB/s
        let t = Instant::now();
        for _ in 0..40 {
            b.take(64 * 1024).await;
        }
        // 2.6 MB at 1 MB/s, less the first burst (0.1 s worth).
        let secs = t.elapsed().as_secs_f64();
        assert!((2.3..3.2).contains(&secs), "{secs}");
        b.set_rate(0);
        let t = Instant::now();
        b.take(1 << 30).await;
        assert!(t.elapsed() < Duration::from_millis(10));
    }
}

#[cfg(test)]
mod speed {
    /// `cargo test --release -p fill-agent sha256_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn sha256_speed() {
        use sha2::Digest;
        let b = vec![7u8; 256 << 20];
        let t = std::time::Instant::now();
        let d = sha2::Sha256::digest(&b);
        println!(
            "sha2 crate: {:.0} MB/s {:x?}",
            256.0 / t.elapsed().as_secs_f64(),
            &d[..2]
        );
    }
}
