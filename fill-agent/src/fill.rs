//! Filling: what the manifest lists and the stores lack is downloaded, verified and published;
//! what left the manifest is deleted once the cycle's fills are done.
//!
//! A download goes to `<disk>/tmp/<id>.part` (never servable: oca-daemon only opens
//! `objects/`), hashed as it streams; a resumed download hashes the part it already has first.
//! Only a whole file whose SHA-256 and size match the manifest is fsynced and renamed into
//! `objects/`. A source that errs or stalls is left for the next one (the part is kept, so the
//! next source resumes it with `Range`); one whose bytes fail the check is reported, and the part
//! discarded.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oca_protocol::health::FillError;
use oca_protocol::manifest::{Manifest, ManifestEntry, Source, SourceKind};
use oca_store::{ContentId, Store};
use sha2::{Digest, Sha256};

use crate::inventory::Inventory;

/// What a disk can do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskHealth {
    /// Filling and serving.
    Ok,
    /// Out of space (ENOSPC or below the free-space floor): serving, not filling.
    Full,
    /// I/O errors while filling, or no tmp/ directory: serving what it holds, not filling.
    Failed,
    /// oca-daemon found read errors: its files are not served, not held, not filled.
    Unreadable,
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
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.2 = bits_per_sec as f64 / 8.0;
    }

    /// Waits until `n` bytes may pass.
    pub async fn take(&self, n: usize) {
        let wait = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
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

/// Fills everything missing (bounded by `concurrency`), then deletes what left the manifest;
/// returns how many files were filled and whether some wait for a later cycle.
pub async fn cycle(
    shared: &Arc<Shared>,
    client: &reqwest::Client,
    manifest: &Manifest,
    concurrency: usize,
    stall: Duration,
) -> (usize, bool) {
    shared.bucket.set_rate(manifest.rate_limit_bps);
    let missing: Vec<ManifestEntry> = {
        let inv = shared.inventory.lock().unwrap_or_else(|p| p.into_inner());
        manifest
            .entries
            .iter()
            .filter(|e| !inv.holds(&e.content_id))
            .cloned()
            .collect()
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for entry in missing {
        let (shared, client, gate) = (shared.clone(), client.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire().await;
            fill_one(&shared, &client, &entry, stall).await
        });
    }
    let (mut filled, mut waiting) = (0, false);
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Outcome::Filled(_)) => filled += 1,
            Ok(Outcome::Waiting) => waiting = true,
            _ => {}
        }
    }
    // Replacements are in place (or could not be had); now what left the manifest goes.
    evict(shared, manifest);
    (filled, waiting)
}

/// Deletes held files the manifest no longer lists.
fn evict(shared: &Shared, manifest: &Manifest) {
    let wanted: std::collections::HashSet<&str> = manifest
        .entries
        .iter()
        .map(|e| e.content_id.as_str())
        .collect();
    let gone: Vec<(String, usize)> = {
        let inv = shared.inventory.lock().unwrap_or_else(|p| p.into_inner());
        inv.held()
            .filter(|(id, _)| !wanted.contains(id.as_str()))
            .map(|(id, d)| (id.clone(), *d))
            .collect()
    };
    for (id, disk) in gone {
        let Ok(cid) = ContentId::parse(&id) else {
            continue;
        };
        match shared.store.disks()[disk].remove_object(cid) {
            Ok(()) => tracing::info!(id, "evicted: no longer in the manifest"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(id, error = %e, "evicting failed");
                continue;
            }
        }
        shared
            .inventory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

/// The disk a file goes to: the first in its placement order that is healthy and has room.
fn pick_disk(shared: &Shared, id: ContentId<'_>, size: u64) -> Option<usize> {
    let disks = shared
        .disks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    shared.store.placement(id).into_iter().find(|&d| {
        disks[d] == DiskHealth::Ok
            && crate::report::free_bytes(shared.store.disks()[d].root()) > size
    })
}

/// Fills one file from the first source that delivers it whole and correct.
pub async fn fill_one(
    shared: &Shared,
    client: &reqwest::Client,
    entry: &ManifestEntry,
    stall: Duration,
) -> Outcome {
    let Ok(id) = ContentId::parse(&entry.content_id) else {
        tracing::warn!(id = %entry.content_id, "manifest entry with a bad content id; skipped");
        return Outcome::Failed;
    };
    let Some(disk) = pick_disk(shared, id, entry.size) else {
        tracing::warn!(id = %id, size = entry.size, "no disk has room for this file");
        return Outcome::NoSpace;
    };
    let store_disk = &shared.store.disks()[disk];
    let now = unix_now();
    let usable: Vec<&Source> = entry
        .sources
        .iter()
        .filter(|s| s.not_before.is_none_or(|t| t <= now))
        .collect();
    if usable.is_empty() {
        return Outcome::Waiting;
    }
    for source in usable {
        let started = Instant::now();
        match fetch(shared, client, source, entry, store_disk, id, stall).await {
            Ok(bytes) => match store_disk.publish(id) {
                Ok(()) => {
                    let secs = started.elapsed().as_secs_f64();
                    tracing::info!(id = %id, source = ?source.kind, from = source.oca_id.as_deref().unwrap_or("origin"),
                        bytes, mbit_per_s = bytes as f64 * 8.0 / secs.max(1e-6) / 1e6, "filled");
                    shared
                        .inventory
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(id.as_str(), disk);
                    return Outcome::Filled(source.kind);
                }
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    // Someone put a symlink where the shard directory belongs: not a failing
                    // disk, and nothing is written through it.
                    tracing::warn!(id = %id, disk = %store_disk.root().display(), "the shard directory is a symlink; not publishing through it");
                    let _ = store_disk.remove_part(id);
                    return Outcome::Failed;
                }
                Err(e) => {
                    disk_error(shared, disk, &e);
                    return Outcome::Failed;
                }
            },
            Err(Failure::Disk(e)) => {
                disk_error(shared, disk, &e);
                let _ = store_disk.remove_part(id);
                return if e.raw_os_error() == Some(libc::ENOSPC) {
                    Outcome::NoSpace
                } else {
                    Outcome::Failed
                };
            }
            Err(Failure::Source(reason, discard)) => {
                tracing::warn!(id = %id, source = ?source.kind, url_host = host(&source.url), reason, "fill source failed; trying the next");
                if discard {
                    let _ = store_disk.remove_part(id);
                }
                shared
                    .errors
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(FillError {
                        content_id: id.as_str().to_string(),
                        source: source.oca_id.clone().unwrap_or_else(|| "origin".into()),
                        reason,
                    });
            }
        }
    }
    Outcome::Failed
}

fn host(url: &str) -> &str {
    url.split("://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or("")
}

fn disk_error(shared: &Shared, disk: usize, e: &std::io::Error) {
    let health = if e.raw_os_error() == Some(libc::ENOSPC) {
        DiskHealth::Full
    } else {
        DiskHealth::Failed
    };
    tracing::warn!(disk = %shared.store.disks()[disk].root().display(), error = %e, ?health, "disk problem while filling");
    shared.disks.lock().unwrap_or_else(|p| p.into_inner())[disk] = health;
}

enum Failure {
    /// The source failed: reason, and whether the part holds bad bytes.
    Source(String, bool),
    /// Our disk failed.
    Disk(std::io::Error),
}

/// Downloads (or resumes) `entry` from `source` into `part`; returns the bytes in the part.
async fn fetch(
    shared: &Shared,
    client: &reqwest::Client,
    source: &Source,
    entry: &ManifestEntry,
    store_disk: &oca_store::Disk,
    id: ContentId<'_>,
    stall: Duration,
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
        let mut req = client.get(&source.url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = tokio::time::timeout(stall, req.send())
            .await
            .map_err(|_| Failure::Source("stall".into(), false))?
            .map_err(|_| Failure::Source("connect".into(), false))?;
        let status = resp.status().as_u16();
        match (status, have) {
            (206, h) if h > 0 => {
                tracing::info!(id = %entry.content_id, from = have, "resuming with Range");
            }
            (200, 0) => {}
            (200, _) => {
                // The source ignored the range: start over with its whole answer.
                file.set_len(0).map_err(Failure::Disk)?;
                have = 0;
                hasher = Sha256::new();
            }
            (s, _) => return Err(Failure::Source(format!("http_{s}"), false)),
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
        let received = receive(shared, resp, tx, entry.size, &mut have, stall).await;
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
        return Err(Failure::Source("short".into(), false));
    }
    let digest = oca_protocol::manifest::hex(&hasher.finalize());
    if !digest.eq_ignore_ascii_case(&entry.sha256) {
        return Err(Failure::Source("hash_mismatch".into(), true));
    }
    file.sync_all().map_err(Failure::Disk)?;
    Ok(have)
}

/// Bytes gathered before they go to the hashing and writing thread.
const BLOCK: usize = 1 << 20;

/// Receives the body into `tx` in blocks of about [`BLOCK`] (rate-capped, with the stall
/// timeout), counting into `have` what the writer was handed.
async fn receive(
    shared: &Shared,
    mut resp: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    size: u64,
    have: &mut u64,
    stall: Duration,
) -> Result<(), Failure> {
    let mut block = bytes::BytesMut::new();
    let mut received = *have;
    loop {
        let chunk = tokio::time::timeout(stall, resp.chunk())
            .await
            .map_err(|_| Failure::Source("stall".into(), false));
        let chunk = match chunk.and_then(|c| c.map_err(|_| Failure::Source("io".into(), false))) {
            Ok(c) => c,
            Err(e) => {
                // What did arrive is kept for the next source to resume from.
                hand_over(&tx, &mut block, have).await;
                return Err(e);
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
        shared.bucket.take(chunk.len()).await;
        if block.is_empty() && chunk.len() >= BLOCK / 4 {
            let n = chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                return Ok(()); // The writer stopped: its error is the one to report.
            }
            *have += n;
            continue;
        }
        if block.capacity() == 0 {
            block.reserve(BLOCK);
        }
        block.extend_from_slice(&chunk);
        if block.len() >= BLOCK && !hand_over(&tx, &mut block, have).await {
            return Ok(());
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
