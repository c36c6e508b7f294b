//! Eviction: what the manifest no longer lists is deleted, a budget's worth per cycle, so a
//! wrong manifest cannot empty the appliance at once; and orphaned parts are swept.

use std::collections::HashSet;

use oca_protocol::manifest::Manifest;
use oca_store::ContentId;

use crate::shared::Shared;

/// Whether the agent may act on `manifest`: an empty one while content is held is taken only
/// when the control plane marks it intended (a control plane that lost its catalog or its
/// database must not have every appliance delete everything).
pub fn acceptable(shared: &Shared, manifest: &Manifest) -> bool {
    !manifest.entries.is_empty()
        || manifest.intended_empty
        || shared.inventory.lock().held().next().is_none()
}

/// Eviction across cycles: what was planned, and the budget not yet spent.
#[derive(Debug, Default)]
pub struct Evictions {
    planned: HashSet<String>,
    /// Budget carried over while a planned file is larger than one cycle's budget, so that
    /// it goes after enough cycles (and never faster than the budget allows).
    credit: f64,
}

impl Evictions {
    /// One cycle: deletes held files `manifest` does not list, in id order, while they fit in
    /// `budget` (a fraction of the bytes held) plus the credit carried over; the rest waits
    /// for the next cycle.
    pub fn cycle(&mut self, shared: &Shared, manifest: &Manifest, budget: f64) {
        let listed: HashSet<&str> = manifest
            .entries
            .iter()
            .map(|e| e.content_id.as_str())
            .collect();
        let (candidates, held_bytes) = {
            let inv = shared.inventory.lock();
            let c: Vec<(String, usize, u64)> = inv
                .held()
                .filter(|(id, _)| !listed.contains(id.as_str()))
                .map(|(id, h)| (id.clone(), h.disk, h.size))
                .collect();
            (c, inv.held_bytes())
        };
        let unlisted: HashSet<&str> = candidates.iter().map(|(id, _, _)| id.as_str()).collect();
        self.planned.retain(|id| unlisted.contains(id.as_str()));
        if candidates.is_empty() {
            self.credit = 0.0;
            return;
        }
        for (id, _, _) in &candidates {
            if self.planned.insert(id.clone()) {
                shared.metrics.evictions_planned.inc();
            }
        }
        let cycle_budget = budget * held_bytes as f64;
        let mut allowance = self.credit + cycle_budget;
        let (mut evicted, mut evicted_bytes, mut deferred) = (0usize, 0u64, 0usize);
        for (id, disk, size) in &candidates {
            if *size as f64 > allowance {
                deferred += 1;
                continue;
            }
            if remove(shared, id, *disk) {
                allowance -= *size as f64;
                evicted += 1;
                evicted_bytes += size;
                self.planned.remove(id);
                shared.metrics.evictions_done.inc();
            }
        }
        shared.metrics.evictions_deferred.inc_by(deferred as u64);
        // Credit builds only while something waits, and never beyond what the waiting files
        // need: the budget cannot be saved up in quiet times and spent all at once later.
        let waiting: u64 = candidates
            .iter()
            .filter(|(id, _, _)| self.planned.contains(id))
            .map(|(_, _, s)| *s)
            .sum();
        self.credit = if deferred > 0 {
            allowance.clamp(0.0, waiting as f64)
        } else {
            0.0
        };
        tracing::info!(
            evicted,
            evicted_bytes,
            deferred,
            budget_bytes = cycle_budget as u64,
            "eviction cycle"
        );
    }
}

/// Deletes one held file; false when it could not be.
fn remove(shared: &Shared, id: &str, disk: usize) -> bool {
    let Ok(cid) = ContentId::parse(id) else {
        return false;
    };
    match shared.store.disks()[disk].remove_object(cid) {
        Ok(()) => tracing::info!(id, "evicted: no longer in the manifest"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(id, error = %e, "evicting failed");
            return false;
        }
    }
    shared.inventory.lock().remove(id);
    true
}

/// Deletes every part in `tmp/` that belongs neither to an entry of `manifest` nor to a fill
/// in flight: left by a run that was killed, or by content that left the manifest.
pub fn sweep_parts(shared: &Shared, manifest: &Manifest) {
    let listed: HashSet<&str> = manifest
        .entries
        .iter()
        .map(|e| e.content_id.as_str())
        .collect();
    let keep = |name: &str| listed.contains(name) || shared.filling(name);
    for disk in shared.store.disks() {
        match disk.sweep_parts(&keep) {
            Ok(swept) if swept.is_empty() => {}
            Ok(swept) => {
                tracing::info!(disk = %disk.root().display(), parts = ?swept, "orphaned parts removed")
            }
            Err(e) => {
                tracing::debug!(disk = %disk.root().display(), error = %e, "cannot sweep tmp/")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::TokenBucket;
    use crate::disks::DiskHealth;
    use crate::inventory::Inventory;
    use parking_lot::Mutex;

    fn store_with(dir: &std::path::Path, files: &[(&str, usize)]) -> Shared {
        let store = oca_store::Store::open(&[dir]).unwrap();
        for (id, len) in files {
            let p = store.disks()[0].object_path(ContentId::parse(id).unwrap());
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, vec![0u8; *len]).unwrap();
        }
        Shared {
            inventory: Mutex::new(Inventory::scan(&store)),
            store,
            errors: Mutex::new(Vec::new()),
            disks: Mutex::new(vec![DiskHealth::Ok]),
            bucket: TokenBucket::new(),
            in_flight: Mutex::new(Default::default()),
            metrics: Default::default(),
        }
    }

    fn manifest(ids: &[&str], intended_empty: bool) -> Manifest {
        Manifest {
            version: 1,
            fill_window: None,
            rate_limit_bps: 0,
            entries: ids
                .iter()
                .map(|id| oca_protocol::manifest::ManifestEntry {
                    content_id: id.to_string(),
                    size: 100,
                    sha256: String::new(),
                    sources: Vec::new(),
                })
                .collect(),
            intended_empty,
        }
    }

    fn held(shared: &Shared) -> usize {
        shared.inventory.lock().held().count()
    }

    #[test]
    fn a_budget_per_cycle_and_a_big_file_after_enough_cycles() {
        let d = tempfile::tempdir().unwrap();
        let shared = store_with(
            d.path(),
            &[("a1", 100), ("a2", 100), ("a3", 100), ("zz", 400)],
        );
        // 700 bytes held, a budget of 0.3: 210 bytes a cycle.
        let m = manifest(&[], true);
        let mut ev = Evictions::default();
        ev.cycle(&shared, &m, 0.3);
        assert_eq!(held(&shared), 2, "a1 and a2 (200 of 210)");
        // 500 held: 150 + 10 carried; a3 goes, zz (400) waits for its budget to add up.
        ev.cycle(&shared, &m, 0.3);
        assert_eq!(held(&shared), 1);
        let mut cycles = 0;
        while held(&shared) == 1 {
            ev.cycle(&shared, &m, 0.3);
            cycles += 1;
            assert!(cycles < 10);
        }
        // 60 carried, then 120 a cycle: 180, 300, 420.
        assert_eq!(cycles, 3);
        assert_eq!(shared.metrics.evictions_done.get(), 4);
        assert_eq!(shared.metrics.evictions_planned.get(), 4);
    }

    #[test]
    fn listed_files_stay_and_an_empty_manifest_needs_intent() {
        let d = tempfile::tempdir().unwrap();
        let shared = store_with(d.path(), &[("a1", 100), ("a2", 100)]);
        assert!(!acceptable(&shared, &manifest(&[], false)));
        assert!(acceptable(&shared, &manifest(&[], true)));
        assert!(acceptable(&shared, &manifest(&["a1"], false)));
        let mut ev = Evictions::default();
        ev.cycle(&shared, &manifest(&["a1"], false), 1.0);
        assert!(shared.inventory.lock().holds("a1"));
        assert!(!shared.inventory.lock().holds("a2"));
        // Nothing held: an empty manifest is simply true.
        ev.cycle(&shared, &manifest(&[], true), 1.0);
        assert!(acceptable(&shared, &manifest(&[], false)));
    }
}
