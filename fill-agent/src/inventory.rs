//! What the appliance holds, and the changes not yet acknowledged by the control plane.

use std::collections::{BTreeMap, BTreeSet};

use oca_protocol::health::Inventory as Wire;
use oca_store::{ContentId, Store};

/// Where a held file is, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// The disk's index in the store.
    pub disk: usize,
    /// Bytes.
    pub size: u64,
}

/// The held content ids (with their disk and size) and the pending delta.
#[derive(Debug, Default)]
pub struct Inventory {
    held: BTreeMap<String, Held>,
    held_bytes: u64,
    added: BTreeSet<String>,
    removed: BTreeSet<String>,
    acked_seq: u64,
    need_full: bool,
}

impl Inventory {
    /// Scans every disk's `objects/` tree; the first report sends it whole.
    pub fn scan(store: &Store) -> Inventory {
        let mut held = BTreeMap::new();
        for (i, disk) in store.disks().iter().enumerate() {
            let objects = disk.root().join(oca_store::OBJECTS_DIR);
            let Ok(shards) = std::fs::read_dir(&objects) else {
                continue;
            };
            for shard in shards.flatten() {
                // A symlink in place of a shard directory names nothing (file_type does not
                // follow it): what it points at is not the store's.
                if !shard.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(files) = std::fs::read_dir(shard.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    let in_place =
                        ContentId::parse(&name).is_ok_and(|id| disk.object_path(id) == f.path());
                    let Ok(meta) = f.metadata() else {
                        continue;
                    };
                    if in_place && meta.is_file() {
                        held.insert(
                            name,
                            Held {
                                disk: i,
                                size: meta.len(),
                            },
                        );
                    }
                }
            }
        }
        Inventory {
            held_bytes: held.values().map(|h| h.size).sum(),
            held,
            need_full: true,
            ..Inventory::default()
        }
    }

    /// Whether `id` is held.
    pub fn holds(&self, id: &str) -> bool {
        self.held.contains_key(id)
    }

    /// Held ids with their disk and size, in id order.
    pub fn held(&self) -> impl Iterator<Item = (&String, &Held)> {
        self.held.iter()
    }

    /// Bytes held, all disks together.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// A file of `size` bytes was published on `disk`.
    pub fn add(&mut self, id: &str, disk: usize, size: u64) {
        if let Some(old) = self.held.insert(id.to_string(), Held { disk, size }) {
            self.held_bytes -= old.size;
        }
        self.held_bytes += size;
        self.removed.remove(id);
        self.added.insert(id.to_string());
    }

    /// A file was deleted.
    pub fn remove(&mut self, id: &str) {
        if let Some(old) = self.held.remove(id) {
            self.held_bytes -= old.size;
            self.added.remove(id);
            self.removed.insert(id.to_string());
        }
    }

    /// Every file on `disk` leaves the inventory (the disk failed); returns how many.
    pub fn drop_disk(&mut self, disk: usize) -> usize {
        let ids: Vec<String> = self
            .held
            .iter()
            .filter(|(_, h)| h.disk == disk)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.remove(id);
        }
        ids.len()
    }

    /// What the next report carries.
    pub fn to_wire(&self) -> Wire {
        if self.need_full {
            Wire::Full {
                seq: self.acked_seq + 1,
                content: self.held.keys().cloned().collect(),
            }
        } else {
            Wire::Delta {
                base_seq: self.acked_seq,
                seq: self.acked_seq + 1,
                added: self.added.iter().cloned().collect(),
                removed: self.removed.iter().cloned().collect(),
            }
        }
    }

    /// The control plane took `sent`, now holds `seq`, and may want everything next time.
    pub fn acknowledged(&mut self, sent: &Wire, seq: u64, send_full: bool) {
        if send_full {
            self.need_full = true;
            self.acked_seq = seq;
            return;
        }
        match sent {
            Wire::Full { seq: s, content } if *s == seq => {
                // Changes made after the list was taken stay pending.
                let sent: BTreeSet<&String> = content.iter().collect();
                self.need_full = false;
                self.added.retain(|a| !sent.contains(a));
                self.removed.retain(|r| sent.contains(r));
            }
            Wire::Delta {
                seq: s,
                added,
                removed,
                ..
            } if *s == seq => {
                for a in added {
                    self.added.remove(a);
                }
                for r in removed {
                    self.removed.remove(r);
                }
            }
            _ => {}
        }
        self.acked_seq = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_follow_acknowledgements_and_changes_during_a_report_stay_pending() {
        let mut inv = Inventory {
            need_full: true,
            ..Inventory::default()
        };
        inv.add("a", 0, 10);
        let full = inv.to_wire();
        assert!(matches!(&full, Wire::Full { seq: 1, content } if content == &["a"]));
        // A fill lands while the full report is in flight: it must go in the next delta.
        inv.add("b", 0, 5);
        assert_eq!(inv.held_bytes(), 15);
        inv.acknowledged(&full, 1, false);
        let delta = inv.to_wire();
        assert!(
            matches!(&delta, Wire::Delta { base_seq: 1, seq: 2, added, removed } if added == &["b"] && removed.is_empty()),
            "{delta:?}"
        );
        inv.remove("a");
        assert_eq!(inv.held_bytes(), 5);
        inv.acknowledged(&delta, 2, false);
        assert!(
            matches!(inv.to_wire(), Wire::Delta { base_seq: 2, added, removed, .. } if added.is_empty() && removed == ["a"])
        );
        // The control plane lost track: everything again.
        inv.acknowledged(&inv.to_wire(), 2, true);
        assert!(matches!(inv.to_wire(), Wire::Full { seq: 3, content } if content == ["b"]));
    }
}
