//! The health report (DESIGN.md "Health report") and what comes back: URL keys for oca-daemon,
//! the manifest version, the report interval.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use oca_protocol::health::{DiskReport, DiskState, HealthReply, HealthReport, Serving, Status};
use oca_protocol::keys::Keyring;

use crate::config::Config;
use crate::disk_space::{free_bytes, statvfs, FREE_FLOOR};
use crate::fill::{DiskHealth, Shared};

/// Bound on reading oca-daemon's metrics: it is on this host and answers at once, or is stuck.
pub const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Marks full disks that have room again (at least [`FREE_FLOOR`] free, after evictions or
/// another writer letting go) fit for fills: a disk that once hit ENOSPC is not full forever.
pub fn reevaluate_full(shared: &Shared) {
    let mut health = shared.disks.lock().unwrap_or_else(|p| p.into_inner());
    for (i, d) in shared.store.disks().iter().enumerate() {
        if health[i] == DiskHealth::Full && free_bytes(d.root()) >= FREE_FLOOR {
            tracing::info!(disk = %d.root().display(), free = free_bytes(d.root()), "disk has room again; filling onto it");
            health[i] = DiskHealth::Ok;
        }
    }
}

/// oca-daemon's counters at one moment, for rates between two reports.
#[derive(Clone, Copy, Debug)]
pub struct LoadSample {
    at: Instant,
    bytes: f64,
    requests: f64,
    active: f64,
}

/// Reads oca-daemon's admin `/metrics`: the load, and the store disks it found failing.
pub async fn sample_load(
    client: &reqwest::Client,
    admin: &str,
) -> Option<(LoadSample, Vec<PathBuf>)> {
    let text = client
        .get(format!("http://{admin}/metrics"))
        .timeout(ADMIN_TIMEOUT)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let sample = LoadSample {
        at: Instant::now(),
        bytes: sum("oca_sent_bytes_total "),
        requests: sum("oca_requests_total{"),
        active: sum("oca_active_connections "),
    };
    Some((sample, failed_disks(&text)))
}

/// The disks oca-daemon marked failed: `oca_disk_failed{disk="<path>"} 1`.
fn failed_disks(metrics: &str) -> Vec<PathBuf> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("oca_disk_failed{disk=\""))
        .filter_map(|rest| {
            let (path, value) = rest.split_once("\"} ")?;
            (value.trim() == "1").then(|| PathBuf::from(path))
        })
        .collect()
}

/// Takes the disks oca-daemon found failing out of service here too: reported failed, their
/// files out of the inventory (so the control plane stops steering them to this appliance),
/// and no fills onto them; what the manifest still wants is refilled onto the healthy disks.
pub fn apply_failed_disks(shared: &Shared, failed: &[PathBuf]) {
    if failed.is_empty() {
        return;
    }
    let failed: Vec<PathBuf> = failed
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    for (i, d) in shared.store.disks().iter().enumerate() {
        let root = std::fs::canonicalize(d.root()).unwrap_or_else(|_| d.root().to_path_buf());
        if !failed.contains(&root) {
            continue;
        }
        let mut health = shared.disks.lock().unwrap_or_else(|p| p.into_inner());
        if health[i] == DiskHealth::Unreadable {
            continue;
        }
        health[i] = DiskHealth::Unreadable;
        let dropped = shared
            .inventory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drop_disk(i);
        tracing::warn!(disk = %d.root().display(), files = dropped, "oca-daemon found this disk failing: reported failed, its files leave the inventory");
    }
}

/// Load figures from two samples.
pub fn serving(prev: Option<LoadSample>, now: Option<LoadSample>, capacity_bps: u64) -> Serving {
    let mut s = Serving {
        capacity_bps,
        ..Serving::default()
    };
    if let Some(n) = now {
        s.active_connections = n.active as u64;
        if let Some(p) = prev {
            let dt = n.at.duration_since(p.at).as_secs_f64().max(1e-3);
            s.bytes_per_sec = ((n.bytes - p.bytes).max(0.0) / dt) as u64;
            s.requests_per_sec = ((n.requests - p.requests).max(0.0) / dt) as u64;
        }
    }
    s
}

/// Builds the report from the shared state; returns it with the inventory it carries.
pub fn build(cfg: &Config, shared: &Shared, serving: Serving) -> HealthReport {
    let health = shared
        .disks
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut disks = Vec::new();
    for (i, d) in shared.store.disks().iter().enumerate() {
        let (capacity, used, avail) = statvfs(d.root()).unwrap_or((0, 0, 0));
        let state = match health[i] {
            DiskHealth::Failed | DiskHealth::Unreadable => DiskState::Failed,
            _ if capacity == 0 => DiskState::Failed,
            DiskHealth::Full => DiskState::Full,
            DiskHealth::Ok if avail < FREE_FLOOR => DiskState::Full,
            DiskHealth::Ok => DiskState::Ok,
        };
        disks.push(DiskReport {
            path: d.root().display().to_string(),
            state,
            capacity_bytes: capacity,
            used_bytes: used,
        });
    }
    let status = if disks.iter().all(|d| d.state == DiskState::Failed) {
        Status::Error
    } else if disks.iter().any(|d| d.state != DiskState::Ok) {
        Status::Warning
    } else {
        Status::Ok
    };
    let inventory = shared
        .inventory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .to_wire();
    let fill_errors = std::mem::take(&mut *shared.errors.lock().unwrap_or_else(|p| p.into_inner()));
    HealthReport {
        oca_id: cfg.oca_id.clone(),
        site: cfg.site.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        status,
        serving,
        disks,
        prefixes: cfg.prefixes.clone(),
        inventory,
        fill_errors,
    }
}

/// Sends the report; on success the inventory delta is acknowledged. On failure the caller
/// keeps the report's fill errors for the next one.
pub async fn send(
    cfg: &Config,
    shared: &Shared,
    client: &reqwest::Client,
    report: &HealthReport,
) -> Result<HealthReply> {
    let url = format!("{}/v1/appliances/{}/health", cfg.control_plane, cfg.oca_id);
    let resp = client
        .post(&url)
        .bearer_auth(&cfg.credential)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(report)?)
        .send()
        .await
        .with_context(|| format!("posting the health report to {url}"))?;
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "control plane answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let reply: HealthReply =
        serde_json::from_slice(&body).context("the control plane's health reply")?;
    shared
        .inventory
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .acknowledged(
            &report.inventory,
            reply.inventory_seq,
            reply.send_full_inventory,
        );
    Ok(reply)
}

/// Writes the keyring oca-daemon reads, when it changed: mode 0600, replaced by rename so the
/// daemon never reads half a file.
pub fn write_keys(path: &Path, reply: &HealthReply) -> Result<bool> {
    let ring = Keyring::from_wire(&reply.keys).context("keys in the health reply")?;
    let json = ring.to_json();
    if std::fs::read_to_string(path).is_ok_and(|old| old == json) {
        // Secrets: whoever made the file, it is the service's alone.
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777)?;
        if mode != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(true);
        }
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(json.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    // The rename is durable once the directory is: after a power cut the daemon must find the
    // new keys, not the old ones (or none).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fill::TokenBucket;
    use crate::inventory::Inventory;
    use std::sync::Mutex;

    #[test]
    fn a_disk_the_daemon_found_failing_leaves_service_and_inventory() {
        let (d0, d1) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let store = oca_store::Store::open(&[d0.path(), d1.path()]).unwrap();
        for (dir, id) in [(&d0, "aa_1080p.mp4"), (&d1, "bb_1080p.mp4")] {
            let shard = dir.path().join("objects").join(&id[..2]);
            std::fs::create_dir_all(&shard).unwrap();
            std::fs::write(shard.join(id), b"x").unwrap();
        }
        // Placement decides where a plain file is found; put each where the store looks first.
        let mut inventory = Inventory::scan(&store);
        let held: Vec<(String, usize)> =
            inventory.held().map(|(i, h)| (i.clone(), h.disk)).collect();
        assert_eq!(held.len(), 2);
        inventory.acknowledged(&inventory.to_wire(), 1, false);
        let shared = Shared {
            store,
            inventory: Mutex::new(inventory),
            errors: Mutex::new(Vec::new()),
            disks: Mutex::new(vec![DiskHealth::Ok; 2]),
            bucket: TokenBucket::new(),
            in_flight: Mutex::new(Default::default()),
            metrics: Default::default(),
        };
        let metrics = format!(
            "oca_disk_failed{{disk=\"{}\"}} 0\noca_disk_failed{{disk=\"{}/\"}} 1\n",
            d0.path().display(),
            d1.path().display()
        );
        let failed = failed_disks(&metrics);
        assert_eq!(failed.len(), 1);
        apply_failed_disks(&shared, &failed);
        assert_eq!(
            *shared.disks.lock().unwrap(),
            vec![DiskHealth::Ok, DiskHealth::Unreadable]
        );
        let inv = shared.inventory.lock().unwrap();
        let lost: Vec<&String> = held
            .iter()
            .filter(|(_, d)| *d == 1)
            .map(|(i, _)| i)
            .collect();
        for id in &lost {
            assert!(!inv.holds(id), "{id} left the inventory");
        }
        match inv.to_wire() {
            oca_protocol::health::Inventory::Delta { removed, added, .. } => {
                assert_eq!(removed.len(), lost.len());
                assert!(added.is_empty());
            }
            other => panic!("a delta is sent: {other:?}"),
        }
        drop(inv);
        // Once is enough: a second sample changes nothing.
        apply_failed_disks(&shared, &failed);
        assert_eq!(
            shared.inventory.lock().unwrap().held().count(),
            2 - lost.len()
        );
    }
}
