//! The topology file: which sites the lab runs, how many appliances each holds, how fast each
//! site's link to the players is, which client prefixes an ISP site's appliances serve, and how
//! much sample content to generate.

use anyhow::{bail, Context, Result};
use oca_protocol::prefix::Prefix;
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
    /// The clients this site's appliances serve: the ISP's router (BIRD in the site's
    /// namespace) announces them to each appliance over BGP, or, without BGP, each appliance
    /// is configured with them as static prefixes. They are the site's allowed prefixes too.
    #[serde(default)]
    pub client_prefixes: Vec<Prefix>,
}

impl Topology {
    /// Parses and checks a topology.
    pub fn parse(text: &str) -> Result<Topology> {
        let t: Topology = toml::from_str(text).context("topology")?;
        if t.site.is_empty() || t.site.iter().all(|s| s.appliances == 0) {
            bail!("topology: no appliances");
        }
        for s in &t.site {
            for p in &s.client_prefixes {
                // The appliance's BGP import filter refuses these (docs/bgp.md), so a lab
                // announcing them would steer nobody and not say why.
                let longest = if p.addr().is_ipv4() { 24 } else { 48 };
                if p.is_default() || p.bits() > longest {
                    bail!(
                        "topology: site {}: client prefix {p} is a default route or longer than /{longest}",
                        s.id
                    );
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_topology_gives_the_isp_site_its_players_prefix() {
        let t = Topology::parse(DEFAULT_TOPOLOGY).unwrap();
        let isp = t.site.iter().find(|s| s.kind == "isp").unwrap();
        assert_eq!(isp.client_prefixes, vec!["100.64.0.0/16".parse().unwrap()]);
        assert!(t
            .site
            .iter()
            .filter(|s| s.kind == "ixp")
            .all(|s| s.client_prefixes.is_empty()));
    }

    #[test]
    fn client_prefixes_an_appliance_would_refuse_are_refused_here() {
        let site = |prefixes: &str| {
            format!(
                "[content]\ntitles = 1\nsize_1080p_mib = 1\nsize_480p_mib = 1\n\
                 [[site]]\nid = \"isp\"\nkind = \"isp\"\nregion = \"eu\"\nappliances = 1\n\
                 link_mbit = 10\nclient_prefixes = [{prefixes}]\n"
            )
        };
        assert!(Topology::parse(&site("\"10.200.0.0/16\", \"2001:db8::/48\"")).is_ok());
        for bad in ["\"10.200.0.0/25\"", "\"0.0.0.0/0\"", "\"2001:db8::/64\""] {
            let e = Topology::parse(&site(bad)).unwrap_err().to_string();
            assert!(e.contains("client prefix"), "{bad}: {e}");
        }
        assert!(Topology::parse(&site("\"10.200.0.0/33\"")).is_err());
    }
}
