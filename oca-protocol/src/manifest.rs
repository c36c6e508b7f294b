//! The fill manifest an appliance fetches (docs/architecture.md, "Fill manifest").

use serde::{Deserialize, Serialize};

/// `GET /v1/appliances/<oca_id>/manifest` answer (304 when `version` is unchanged).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Changes whenever the entries, window or rate change.
    pub version: u64,
    /// When fills may run; none means any time.
    pub fill_window: Option<FillWindow>,
    /// Fill bandwidth cap, bits per second; 0 means no cap.
    pub rate_limit_bps: u64,
    /// Everything the appliance should hold.
    pub entries: Vec<ManifestEntry>,
    /// Set when an empty `entries` is meant (the appliance is to hold nothing): an agent that
    /// holds content refuses an empty manifest without it, since a control plane that lost its
    /// catalog would otherwise have every appliance delete everything.
    #[serde(default)]
    pub intended_empty: bool,
}

/// A daily window, in minutes after midnight UTC; `start > end` wraps past midnight.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillWindow {
    /// First minute of the window (0-1439).
    pub start_minute: u16,
    /// Minute the window closes (0-1439).
    pub end_minute: u16,
}

impl FillWindow {
    /// Whether `minute` (after midnight UTC) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        if self.start_minute <= self.end_minute {
            (self.start_minute..self.end_minute).contains(&minute)
        } else {
            minute >= self.start_minute || minute < self.end_minute
        }
    }
}

/// One file to hold.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Content id.
    pub content_id: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex; a fill is published only when it matches.
    pub sha256: String,
    /// Where to fetch it from, best first.
    pub sources: Vec<Source>,
}

/// A place to fill from.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Peer, tier or origin.
    pub kind: SourceKind,
    /// The appliance, for peer and tier sources.
    pub oca_id: Option<String>,
    /// Signed (`fill` scope) URL of the file.
    pub url: String,
    /// Unix seconds before which this source is not to be used: a nearer copy is on its way
    /// (the escalation delay before going further out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
}

/// How far away a source is.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// An appliance in the same site.
    Peer,
    /// An appliance in another (parent) site.
    Tier,
    /// The origin.
    Origin,
}

/// Lower-case hex of a digest, as `sha256` fields carry it.
pub fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_wrap_past_midnight() {
        let night = FillWindow {
            start_minute: 22 * 60,
            end_minute: 6 * 60,
        };
        assert!(night.contains(23 * 60) && night.contains(0) && night.contains(5 * 60 + 59));
        assert!(!night.contains(6 * 60) && !night.contains(12 * 60));
        let day = FillWindow {
            start_minute: 60,
            end_minute: 120,
        };
        assert!(day.contains(60) && !day.contains(120) && !day.contains(0));
        assert!(SourceKind::Peer < SourceKind::Tier && SourceKind::Tier < SourceKind::Origin);
    }

    #[test]
    fn intended_empty_defaults_to_false() {
        let m: Manifest = serde_json::from_str(
            r#"{"version": 3, "fill_window": null, "rate_limit_bps": 0, "entries": []}"#,
        )
        .unwrap();
        assert!(!m.intended_empty);
    }
}
