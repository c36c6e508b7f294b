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

//!
//! The modules, in the order a fill runs: this one schedules fills and places each on a disk,
//! [`mod@fetch`] downloads from one source, [`pace`] holds the source to a minimum rate and a
//! deadline.

pub mod fetch;
pub mod pace;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oca_protocol::health::FillError;
use oca_protocol::manifest::{Manifest, ManifestEntry, Source, SourceKind};
use oca_store::ContentId;
use tokio::task::{AbortHandle, JoinError, JoinSet};

use crate::disks::DiskHealth;
use crate::fill::fetch::{fetch, host, Failure};
use crate::fill::pace::Limits;
use crate::shared::{Reservation, Shared};

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

pub use oca_service::unix_now;

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
            let inv = shared.inventory.lock();
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
        shared
            .in_flight
            .lock()
            .insert(id.clone(), Reservation::default());
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
        shared.in_flight.lock().remove(&id);
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
    let disks = shared.disks.lock().clone();
    let mut in_flight = shared.in_flight.lock();
    let reserved = |d: usize| -> u64 {
        in_flight
            .iter()
            .filter(|(other, r)| other.as_str() != id.as_str() && r.disk == Some(d))
            .map(|(_, r)| r.bytes)
            .sum()
    };
    let disk = shared.store.placement(id).into_iter().find(|&d| {
        disks[d] == DiskHealth::Ok
            && crate::disks::free_bytes(shared.store.disks()[d].root()).saturating_sub(reserved(d))
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
                if source.kind == SourceKind::Origin && reason == "http_403" {
                    // An S3 origin's presigned URL past its lifetime (or clocks apart): the
                    // control plane re-presigns, and the next manifest brings the new URL.
                    tracing::warn!(id = %id, url_host = host(&source.url), "the origin refused its URL (expired?); the file is tried again with the next manifest's");
                }
                if discard {
                    let _ = store_disk.remove_part(id);
                }
                shared.metrics.source_failed(source.kind, &reason);
                shared.errors.lock().push(FillError {
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
            shared.inventory.lock().add(id.as_str(), disk, bytes);
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
    let mut disks = shared.disks.lock();
    if disks[disk] == DiskHealth::Ok {
        disks[disk] = health;
    }
    outcome
}
