//! What the agent reads from oca-daemon on the same appliance: its admin listener's typed
//! `GET /status` ([`DaemonStatus`]), giving the load for the report's serving figures and the
//! disks the daemon found failing, which the agent then takes out of service too.

use std::path::PathBuf;
use std::time::Instant;

use oca_protocol::health::Serving;
use oca_protocol::status::{DaemonStatus, STATUS_PATH};

use crate::disks::DiskHealth;
use crate::shared::Shared;

/// Bound on reading oca-daemon's status: it is on this host and answers at once, or is stuck.
pub const ADMIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// oca-daemon's counters at one moment, for rates between two reports.
#[derive(Clone, Copy, Debug)]
pub struct LoadSample {
    at: Instant,
    bytes: f64,
    requests: f64,
    active: f64,
}

/// Reads oca-daemon's admin `/status`: the load, and the store disks it found failing.
pub async fn sample_load(
    client: &reqwest::Client,
    admin: &str,
) -> Option<(LoadSample, Vec<PathBuf>)> {
    let body = client
        .get(format!("http://{admin}{STATUS_PATH}"))
        .timeout(ADMIN_TIMEOUT)
        .send()
        .await
        .ok()?
        .bytes()
        .await
        .ok()?;
    let status: DaemonStatus = serde_json::from_slice(&body).ok()?;
    let sample = LoadSample {
        at: Instant::now(),
        bytes: status.sent_bytes_total as f64,
        requests: status.requests_total as f64,
        active: status.active_connections as f64,
    };
    Some((sample, failed_disks(&status)))
}

/// The disks oca-daemon marked failed.
fn failed_disks(status: &DaemonStatus) -> Vec<PathBuf> {
    status
        .disks
        .iter()
        .filter(|d| d.failed)
        .map(|d| PathBuf::from(&d.path))
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
        let mut health = shared.disks.lock();
        if health[i] == DiskHealth::Unreadable {
            continue;
        }
        health[i] = DiskHealth::Unreadable;
        let dropped = shared.inventory.lock().drop_disk(i);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::TokenBucket;
    use crate::inventory::Inventory;
    use oca_protocol::status::DiskStatus;
    use parking_lot::Mutex;

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
        let status = DaemonStatus {
            disks: vec![
                DiskStatus {
                    path: d0.path().display().to_string(),
                    failed: false,
                },
                DiskStatus {
                    path: format!("{}/", d1.path().display()),
                    failed: true,
                },
            ],
            ..DaemonStatus::default()
        };
        let failed = failed_disks(&status);
        assert_eq!(failed.len(), 1);
        apply_failed_disks(&shared, &failed);
        assert_eq!(
            *shared.disks.lock(),
            vec![DiskHealth::Ok, DiskHealth::Unreadable]
        );
        let inv = shared.inventory.lock();
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
        assert_eq!(shared.inventory.lock().held().count(), 2 - lost.len());
    }
}
