//! oca-daemon's status, as its admin listener answers `GET /status` in JSON: what the fill agent
//! on the same appliance reads each report (the load, and the disks the daemon found failing).
//! `/metrics` stays for Prometheus; its names are for dashboards, not for other processes.

use serde::{Deserialize, Serialize};

/// The admin listener's path for [`DaemonStatus`].
pub const STATUS_PATH: &str = "/status";

/// oca-daemon at one moment. Counters count from the daemon's start.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct DaemonStatus {
    /// Responses sent, every status class.
    pub requests_total: u64,
    /// Bytes sent to clients (heads and bodies).
    pub sent_bytes_total: u64,
    /// Open client connections.
    pub active_connections: u64,
    /// The store disks, in the order the daemon was given them.
    pub disks: Vec<DiskStatus>,
}

/// One store disk as oca-daemon sees it.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskStatus {
    /// The disk's directory, as the daemon was given it.
    pub path: String,
    /// The disk returned I/O errors or hung: its files are no longer served.
    pub failed: bool,
}
