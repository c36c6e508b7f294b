//! The topology file: which sites the lab runs, how many appliances each holds, how fast each
//! site's link to the players is, and how much sample content to generate.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The default topology (`oca-lab/topology.toml`).
pub const DEFAULT_TOPOLOGY: &str = include_str!("../topology.toml");

/// A topology file.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Generated content.
    pub content: ContentSpec,
    /// Sites.
    pub site: Vec<SiteSpec>,
}

/// What content to generate.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ContentSpec {
    /// Titles, each with a 1080p and a 480p rendition.
    pub titles: usize,
    /// Size of each 1080p file.
    pub size_1080p_mib: u64,
    /// Size of each 480p file.
    pub size_480p_mib: u64,
}

/// One site.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    /// Site id.
    pub id: String,
    /// `isp` or `ixp`.
    pub kind: String,
    /// Region.
    pub region: String,
    /// Tier site it fills from.
    #[serde(default)]
    pub parent: Option<String>,
    /// Appliances in it.
    pub appliances: usize,
    /// Link bandwidth to players, Mbit/s (shaped in network namespaces).
    pub link_mbit: u64,
}

impl Topology {
    /// Parses and checks a topology.
    pub fn parse(text: &str) -> Result<Topology> {
        let t: Topology = toml::from_str(text).context("topology")?;
        if t.site.is_empty() || t.site.iter().all(|s| s.appliances == 0) {
            bail!("topology: no appliances");
        }
        for s in &t.site {
            if let Some(p) = &s.parent {
                if !t.site.iter().any(|x| &x.id == p) {
                    bail!(
                        "topology: site {} names parent {p}, which is not a site",
                        s.id
                    );
                }
            }
        }
        Ok(t)
    }
}
