//! Steering: which appliances a client should use for a file (docs/architecture.md, "Steering").

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `GET /v1/steer?client_ip=..&content_id=..[&explain=1]` answer.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SteerAnswer {
    /// The client address steered for.
    pub client_ip: IpAddr,
    /// The content asked for.
    pub content_id: String,
    /// Up to 10 appliances, best first, each on a distinct appliance.
    pub appliances: Vec<Steered>,
    /// Why each candidate was kept or dropped (only with `explain=1`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explain: Vec<Explanation>,
}

/// One chosen appliance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Steered {
    /// Appliance id.
    pub oca_id: String,
    /// Its site.
    pub site: String,
    /// Base URL content is fetched from (`<url>/c/<id>?...`).
    pub url: String,
}

/// The steering decision for one candidate appliance.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// Appliance id.
    pub oca_id: String,
    /// Its site.
    pub site: String,
    /// Whether it is in the answer.
    pub kept: bool,
    /// Why: the matched prefix and proximity when kept; the failed filter when dropped
    /// (`stale`, `status error`, `over load threshold`, `does not hold the content`, ...).
    pub reason: String,
}
