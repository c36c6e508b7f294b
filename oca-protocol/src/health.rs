//! The health report an appliance's fill agent sends every interval, and the control plane's
//! reply (docs/architecture.md, "Health report").
//!
//! Unknown fields are ignored rather than refused, so appliances and the control plane can be
//! upgraded one at a time.

use serde::{Deserialize, Serialize};

use crate::keys::KeyJson;
use crate::prefix::Prefix;

/// `POST /v1/appliances/<oca_id>/health` body.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    /// The reporting appliance; must match the URL and the credential.
    pub oca_id: String,
    /// The appliance's site.
    pub site: String,
    /// Software version.
    pub version: String,
    /// Worst component wins.
    pub status: Status,
    /// Load.
    pub serving: Serving,
    /// One entry per store disk.
    pub disks: Vec<DiskReport>,
    /// Routes this appliance serves (BGP-learned on real hardware, configured here).
    pub prefixes: Vec<Prefix>,
    /// What the appliance holds.
    pub inventory: Inventory,
    /// Fill sources that failed since the last report (the planner ranks them down).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fill_errors: Vec<FillError>,
}

/// A fill source that failed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct FillError {
    /// The file being filled.
    pub content_id: String,
    /// The appliance that served it, or `origin`.
    pub source: String,
    /// `hash_mismatch`, `size_mismatch`, `http_<status>`, `stall`, `connect` or `io`.
    pub reason: String,
}

/// An appliance's overall state as it reports it.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Serving normally.
    Ok,
    /// Serving, with a problem (a full or failed disk, for example).
    Warning,
    /// Not fit to serve.
    Error,
}

/// Load figures.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Serving {
    /// Open client connections.
    pub active_connections: u64,
    /// Bytes per second sent, recent average.
    pub bytes_per_sec: u64,
    /// Requests per second, recent average.
    pub requests_per_sec: u64,
    /// What the appliance can send, bits per second.
    pub capacity_bps: u64,
}

/// One store disk.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DiskReport {
    /// Its store directory.
    pub path: String,
    /// Its state.
    pub state: DiskState,
    /// Filesystem size in bytes.
    pub capacity_bytes: u64,
    /// Bytes used.
    pub used_bytes: u64,
}

/// A disk's state.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiskState {
    /// Reading and filling.
    Ok,
    /// Reading; no room for fills.
    Full,
    /// Returned I/O errors: neither read nor filled.
    Failed,
}

/// The appliance's content, whole or as changes since a report the control plane acknowledged.
///
/// Read through [`InventoryWire`], a plain struct: serde's internally tagged enums buffer the
/// whole value before they look at the tag, which for a full inventory of a million ids cost
/// several times the body's size in memory.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "lowercase", try_from = "InventoryWire")]
pub enum Inventory {
    /// Every content id held, as of `seq`.
    Full {
        /// Sequence number of this inventory.
        seq: u64,
        /// Content ids held.
        content: Vec<String>,
    },
    /// Changes from inventory `base_seq` to `seq`.
    Delta {
        /// The inventory these changes apply to.
        base_seq: u64,
        /// Sequence number after the changes.
        seq: u64,
        /// Content ids added since `base_seq`.
        added: Vec<String>,
        /// Content ids removed since `base_seq`.
        removed: Vec<String>,
    },
}

/// Longest content id an inventory may carry (oca-store's limit).
pub const MAX_CONTENT_ID_LEN: usize = 128;

/// An inventory as it arrives: every field of either kind, streamed into place.
#[derive(Deserialize)]
pub struct InventoryWire {
    kind: InventoryKind,
    seq: u64,
    #[serde(default)]
    base_seq: Option<u64>,
    #[serde(default)]
    content: Option<Vec<String>>,
    #[serde(default)]
    added: Option<Vec<String>>,
    #[serde(default)]
    removed: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum InventoryKind {
    Full,
    Delta,
}

impl TryFrom<InventoryWire> for Inventory {
    type Error = String;

    fn try_from(w: InventoryWire) -> Result<Inventory, String> {
        let long = [&w.content, &w.added, &w.removed]
            .into_iter()
            .flatten()
            .flatten()
            .find(|id| id.len() > MAX_CONTENT_ID_LEN);
        if let Some(id) = long {
            return Err(format!(
                "content id of {} bytes (at most {MAX_CONTENT_ID_LEN})",
                id.len()
            ));
        }
        match w.kind {
            InventoryKind::Full => Ok(Inventory::Full {
                seq: w.seq,
                content: w.content.ok_or("a full inventory needs `content`")?,
            }),
            InventoryKind::Delta => Ok(Inventory::Delta {
                base_seq: w.base_seq.ok_or("a delta inventory needs `base_seq`")?,
                seq: w.seq,
                added: w.added.ok_or("a delta inventory needs `added`")?,
                removed: w.removed.ok_or("a delta inventory needs `removed`")?,
            }),
        }
    }
}

/// The control plane's answer to a health report.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct HealthReply {
    /// URL-signing keys, current first (written to the appliance's keys file).
    pub keys: Vec<KeyJson>,
    /// Version of the appliance's fill manifest, to fetch when it changed.
    pub manifest_version: u64,
    /// Seconds until the next report.
    pub report_interval_secs: u64,
    /// The inventory sequence the control plane now holds.
    pub inventory_seq: u64,
    /// Set when the control plane wants a full inventory next time (it lost track).
    pub send_full_inventory: bool,
    /// Reported prefixes outside the site's allowed set, dropped (nothing is steered by them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_prefixes: Vec<Prefix>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_round_trips_in_the_documented_shape() {
        let json = r#"{
          "oca_id": "oca-1", "site": "isp-a", "version": "0.1.0", "status": "warning",
          "serving": {"active_connections": 3, "bytes_per_sec": 10, "requests_per_sec": 2, "capacity_bps": 10000000000},
          "disks": [{"path": "/srv/oca/disk0", "state": "full", "capacity_bytes": 100, "used_bytes": 99}],
          "prefixes": ["192.0.2.0/24", "2001:db8::/32"],
          "inventory": {"kind": "delta", "base_seq": 4, "seq": 5, "added": ["a"], "removed": []},
          "future_field": true
        }"#;
        let r: HealthReport = serde_json::from_str(json).unwrap();
        assert_eq!(r.status, Status::Warning);
        assert_eq!(r.disks[0].state, DiskState::Full);
        assert_eq!(r.prefixes[1].bits(), 32);
        assert!(matches!(
            r.inventory,
            Inventory::Delta {
                base_seq: 4,
                seq: 5,
                ..
            }
        ));
        let again: HealthReport =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(again, r);
        assert!(
            Status::Error > Status::Warning && Status::Warning > Status::Ok,
            "worst wins by max()"
        );
    }

    #[test]
    fn malformed_reports_name_the_field() {
        let bad = r#"{"oca_id":"o","site":"s","version":"v","status":"fine","serving":{"active_connections":0,"bytes_per_sec":0,"requests_per_sec":0,"capacity_bps":0},"disks":[],"prefixes":[],"inventory":{"kind":"full","seq":0,"content":[]}}"#;
        let e = serde_json::from_str::<HealthReport>(bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("fine") && e.contains("ok"), "{e}");
        let bad = bad
            .replace("\"fine\"", "\"ok\"")
            .replace("[],\"inventory\"", "[\"10.0.0.1/8\"],\"inventory\"");
        let e = serde_json::from_str::<HealthReport>(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("10.0.0.1/8"), "{e}");
    }
}
