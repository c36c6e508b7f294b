//! The lab's ISP routers: in each ISP site's namespace a BIRD 2 announcing the site's client
//! prefixes to every appliance of the site over BGP, and each appliance's fill agent given the
//! `[bgp]` table that peers with it.
//!
//! Addresses, all in the site's /24 (the namespace's own is .2, the host's .1): the router .254,
//! appliance `j` (1-based within the site) .(10 + j), each added to the namespace's interface so
//! every session has its own source address, as separate machines would. The router is AS
//! 65000 + the site's position in the topology; every appliance is AS [`APPLIANCE_AS`] (Open
//! Connect's appliances share one AS too). The appliances dial out (`listen_addresses = []`:
//! port 179 is the router's within the namespace) and take the private ranges the lab uses
//! (`refuse_bogons = false`); the router is passive. Router and appliances share the site's
//! network stack, so to BIRD each neighbour's address is one of its own: it would not start a
//! direct (single-hop) session with it, hence `multihop` in its configuration.
//!
//! BIRD's configuration gives every appliance its own table fed by one static protocol per
//! (appliance, prefix), `ann_<j>_<n>`, so an announcement moves between appliances with
//! `birdc disable ann_1_0; birdc enable ann_2_0` and nothing else changes ([`Lab::announce`]).
//!
//! [`Lab::announce`]: crate::Lab::announce

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use oca_bgp::{Config, ImportFilter, Neighbor};
use oca_protocol::prefix::Prefix;

use crate::process::Proc;

/// The AS every lab appliance speaks BGP as.
pub const APPLIANCE_AS: u32 = 64512;
/// The router's host number in its site's /24.
pub const ROUTER_HOST: u8 = 254;
/// Appliance `j`'s host number is this plus `j`.
const APPLIANCE_HOST_BASE: u8 = 10;
/// Most appliances one site's router can peer with (their hosts stay below the router's).
pub const MAX_PEERS: usize = (ROUTER_HOST - APPLIANCE_HOST_BASE - 1) as usize;

/// One ISP site's router and the sessions it holds: everything the configurations are written
/// from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteRouter {
    /// The site.
    pub site: String,
    /// The router's address (its BGP identifier too).
    pub address: Ipv4Addr,
    /// The router's AS.
    pub asn: u32,
    /// What it announces to every appliance.
    pub prefixes: Vec<Prefix>,
    /// Its appliances, in order (`j` = position + 1), each with its session's address.
    pub peers: Vec<(String, Ipv4Addr)>,
}

impl SiteRouter {
    /// The router of the site at `position` (0-based) in the topology, whose namespace address
    /// is `ns_ip`, for `appliances` appliances named `<site>-<j>`.
    pub fn plan(
        site: &str,
        position: usize,
        ns_ip: Ipv4Addr,
        appliances: usize,
        prefixes: &[Prefix],
    ) -> Result<SiteRouter> {
        if appliances > MAX_PEERS {
            bail!("site {site}: at most {MAX_PEERS} appliances can peer with the lab's router");
        }
        let host = |h: u8| Ipv4Addr::from(u32::from(ns_ip) & 0xffff_ff00 | u32::from(h));
        Ok(SiteRouter {
            site: site.to_string(),
            address: host(ROUTER_HOST),
            asn: 65_000 + position as u32 + 1,
            prefixes: prefixes.to_vec(),
            peers: (1..=appliances)
                .map(|j| (format!("{site}-{j}"), host(APPLIANCE_HOST_BASE + j as u8)))
                .collect(),
        })
    }

    /// The session address of appliance `oca_id`, with its 1-based position.
    pub fn peer(&self, oca_id: &str) -> Option<(usize, Ipv4Addr)> {
        let i = self.peers.iter().position(|(id, _)| id == oca_id)?;
        Some((i + 1, self.peers[i].1))
    }

    /// The IPv6 next hop announced with IPv6 prefixes over the IPv4 session (a ULA built from
    /// the router's IPv4 address: unique in the lab, never loopback, which a speaker refuses).
    fn next_hop6(&self) -> Ipv6Addr {
        let v = u32::from(self.address);
        Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (v >> 16) as u16, v as u16)
    }

    /// The name of the static protocol announcing prefix `n` (0-based) to appliance `j`.
    pub fn announcement(j: usize, n: usize) -> String {
        format!("ann_{j}_{n}")
    }

    /// BIRD 2's configuration for this router, every announcement plain.
    pub fn bird_config(&self) -> String {
        self.bird_config_with(&AnnouncedAttrs::new())
    }

    /// BIRD 2's configuration for this router, announcements carrying `attrs`.
    pub fn bird_config_with(&self, attrs: &AnnouncedAttrs) -> String {
        let v6 = self.prefixes.iter().any(|p| p.addr().is_ipv6());
        let mut out = format!(
            "# Written by oca-lab: site {site}'s ISP router. It announces the site's client prefixes\n\
             # to each appliance; each appliance has its own table, fed by one static protocol per\n\
             # prefix (ann_<appliance>_<prefix>), so `birdc disable/enable` moves one announcement.\n\
             log stderr all;\n\
             router id {addr};\n\
             protocol device {{ }}\n",
            site = self.site,
            addr = self.address,
        );
        for (j0, (id, peer)) in self.peers.iter().enumerate() {
            let j = j0 + 1;
            out.push_str(&format!("\n# {id}\nipv4 table t4_{j};\n"));
            if v6 {
                out.push_str(&format!("ipv6 table t6_{j};\n"));
            }
            for (n, p) in self.prefixes.iter().enumerate() {
                let (family, table) = if p.addr().is_ipv4() {
                    ("ipv4", format!("t4_{j}"))
                } else {
                    ("ipv6", format!("t6_{j}"))
                };
                out.push_str(&format!(
                    "protocol static {} {{ {family} {{ table {table}; }}; route {p} blackhole{}; }}\n",
                    Self::announcement(j, n),
                    self.route_block(attrs.get(&(j, n)))
                ));
            }
            out.push_str(&format!(
                "protocol bgp oca_{j} {{\n\
                 \x20 description \"{id}\";\n\
                 \x20 local {addr} as {asn};\n\
                 \x20 neighbor {peer} as {APPLIANCE_AS};\n\
                 \x20 # The appliance dials: it does not listen (listen_addresses = []).\n\
                 \x20 passive on;\n\
                 \x20 # Router and appliances share the namespace's stack, so the neighbour's\n\
                 \x20 # address is also one of BIRD's own, for which it starts no direct session.\n\
                 \x20 multihop;\n\
                 \x20 graceful restart on;\n\
                 \x20 ipv4 {{ table t4_{j}; import none; export all; next hop self; }};\n",
                addr = self.address,
                asn = self.asn,
            ));
            if v6 {
                out.push_str(&format!(
                    "  ipv6 {{ table t6_{j}; import none; export all; next hop address {}; }};\n",
                    self.next_hop6()
                ));
            }
            out.push_str("}\n");
        }
        out
    }

    /// A static route's attribute block for `a` (empty for a plain announcement).
    fn route_block(&self, a: Option<&Announced>) -> String {
        let Some(a) = a.filter(|a| **a != Announced::default()) else {
            return String::new();
        };
        let mut block: String = (0..a.prepends)
            .map(|_| format!(" bgp_path.prepend({});", self.asn))
            .collect();
        if let Some(m) = a.med {
            block.push_str(&format!(" bgp_med = {m};"));
        }
        format!(" {{{block} }}")
    }

    /// The speaker's configuration for appliance `oca_id`: one neighbour, this router.
    pub fn agent_config(&self, oca_id: &str) -> Option<Config> {
        let (_, address) = self.peer(oca_id)?;
        let neighbor = Neighbor {
            local_address: Some(IpAddr::V4(address)),
            // A lab's router or agent restarts in a second: retry soon, and not much later.
            connect_retry: 1,
            connect_retry_max: 10,
            // The lab announces private and shared (RFC 6598) ranges.
            import: ImportFilter {
                refuse_bogons: false,
                ..ImportFilter::default()
            },
            ..Neighbor::new(IpAddr::V4(self.address), self.asn)
        };
        Some(Config {
            local_as: APPLIANCE_AS,
            router_id: address,
            // Dial out only: port 179 in the namespace is the router's.
            listen_addresses: Vec::new(),
            listen_port: 179,
            graceful_restart_time: 120,
            neighbors: vec![neighbor],
        })
    }
}

/// The fill agent's configuration file holding only `[bgp]` (every other setting is a flag).
pub fn agent_toml(bgp: &Config) -> Result<String> {
    #[derive(serde::Serialize)]
    struct File<'a> {
        bgp: &'a Config,
    }
    Ok(format!(
        "# Written by oca-lab: this appliance's BGP session with its site's router.\n{}",
        toml::to_string(&File { bgp }).context("writing the [bgp] table")?
    ))
}

/// Why the lab cannot run BGP here, if it cannot: BIRD missing, or a fill agent that does not
/// take a `[bgp]` table (asked with `--check-config` on a sample configuration in `dir`).
pub fn unavailable(fill_agent: &Path, dir: &Path) -> Option<String> {
    for tool in ["bird", "birdc"] {
        if !test_support::on_path(tool) {
            return Some(format!("{tool} is not installed (apt-get install bird2)"));
        }
    }
    agent_refuses_bgp(fill_agent, dir).err()
}

fn agent_refuses_bgp(fill_agent: &Path, dir: &Path) -> Result<(), String> {
    let sample = SiteRouter::plan(
        "check",
        0,
        Ipv4Addr::new(10, 0, 0, 2),
        1,
        &["192.0.2.0/24".parse().expect("a prefix")],
    )
    .map_err(|e| e.to_string())?;
    let config = sample.agent_config("check-1").expect("its own peer");
    let write = || -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("credential"), "check\n")?;
        let file = dir.join("fill-agent.toml");
        std::fs::write(&file, agent_toml(&config)?)?;
        Ok(file)
    };
    let file = write().map_err(|e| format!("writing a sample configuration: {e:#}"))?;
    let out = Command::new(fill_agent)
        .arg("--check-config")
        .arg("--config")
        .arg(&file)
        .args([
            "--control-plane",
            "https://127.0.0.1:9",
            "--oca-id",
            "check-1",
        ])
        .arg("--credential-file")
        .arg(dir.join("credential"))
        .arg("--keys")
        .arg(dir.join("keys.json"))
        .arg("--store")
        .arg(dir.join("store"))
        .output()
        .map_err(|e| format!("running {}: {e}", fill_agent.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let why = err
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no reason given");
    Err(format!(
        "this fill-agent does not take a [bgp] table: {why}"
    ))
}

/// What an announcement carries besides the router's own AS, so tests can give two appliances
/// the same prefix by routes BGP ranks differently.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Announced {
    /// Times the router's AS is prepended to the path (beyond the once eBGP adds).
    pub prepends: u8,
    /// MULTI_EXIT_DISC, if any.
    pub med: Option<u32>,
}

/// Announcement attributes by (appliance `j`, prefix `n`); absent: plain.
pub type AnnouncedAttrs = BTreeMap<(usize, usize), Announced>;

/// A BIRD process in a site's namespace, killed when dropped.
pub struct Bird {
    /// What it was configured from.
    pub router: SiteRouter,
    conf: PathBuf,
    sock: PathBuf,
    attrs: Mutex<AnnouncedAttrs>,
    _proc: Proc,
}

impl Bird {
    /// Writes the router's configuration under `dir` and starts BIRD in namespace `ns`, its log
    /// in `log`; returns once BIRD says it started.
    pub fn start(router: SiteRouter, ns: &str, dir: &Path, log: PathBuf) -> Result<Bird> {
        std::fs::create_dir_all(dir)?;
        let conf = dir.join(format!("{}.conf", router.site));
        let sock = dir.join(format!("{}.ctl", router.site));
        let pid = dir.join(format!("{}.pid", router.site));
        std::fs::write(&conf, router.bird_config())?;
        let mut cmd = Command::new("ip");
        // -f: in the foreground, so the lab holds the process (its log, its end).
        cmd.args(["netns", "exec", ns, "bird", "-f", "-c"])
            .arg(&conf)
            .arg("-s")
            .arg(&sock)
            .arg("-P")
            .arg(&pid);
        let mut p = Proc::spawn(cmd, log)?;
        p.wait_for("Started", Duration::from_secs(10))
            .with_context(|| format!("BIRD for site {}", router.site))?;
        Ok(Bird {
            router,
            conf,
            sock,
            attrs: Mutex::new(AnnouncedAttrs::new()),
            _proc: p,
        })
    }

    /// Gives announcement `n` to appliance `j` these attributes: rewrites the configuration
    /// and has BIRD take it (`birdc configure`), which sends the changed route as an UPDATE.
    pub fn set_attributes(&self, j: usize, n: usize, a: Announced) -> Result<()> {
        let mut attrs = self.attrs.lock().unwrap_or_else(|p| p.into_inner());
        attrs.insert((j, n), a);
        std::fs::write(&self.conf, self.router.bird_config_with(&attrs))?;
        let out = self.birdc(&["configure"])?;
        if !out.contains("Reconfigured") {
            bail!("birdc configure on {}: {out}", self.router.site);
        }
        Ok(())
    }

    /// Runs `birdc` against this BIRD; its output. The control socket is a file, so this needs
    /// no namespace.
    pub fn birdc(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .context("running birdc")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "birdc {}: {text}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(prefixes: &[&str]) -> SiteRouter {
        let prefixes: Vec<Prefix> = prefixes.iter().map(|p| p.parse().unwrap()).collect();
        SiteRouter::plan("isp-nl", 1, Ipv4Addr::new(10, 100, 2, 2), 2, &prefixes).unwrap()
    }

    #[test]
    fn addresses_and_numbers_follow_the_site() {
        let r = router(&["100.64.0.0/16"]);
        assert_eq!(r.address, Ipv4Addr::new(10, 100, 2, 254));
        assert_eq!(r.asn, 65_002);
        assert_eq!(
            r.peers,
            vec![
                ("isp-nl-1".to_string(), Ipv4Addr::new(10, 100, 2, 11)),
                ("isp-nl-2".to_string(), Ipv4Addr::new(10, 100, 2, 12)),
            ]
        );
        assert_eq!(r.peer("isp-nl-2"), Some((2, Ipv4Addr::new(10, 100, 2, 12))));
        assert_eq!(r.peer("ixp-ams-1"), None);
        assert!(
            SiteRouter::plan("big", 0, Ipv4Addr::new(10, 0, 0, 2), MAX_PEERS + 1, &[]).is_err()
        );
    }

    #[test]
    fn each_appliance_gets_its_table_its_announcements_and_its_session() {
        let c = router(&["100.64.0.0/16", "10.200.0.0/16"]).bird_config();
        for line in [
            "router id 10.100.2.254;",
            "ipv4 table t4_1;",
            "ipv4 table t4_2;",
            "protocol static ann_1_0 { ipv4 { table t4_1; }; route 100.64.0.0/16 blackhole; }",
            "protocol static ann_1_1 { ipv4 { table t4_1; }; route 10.200.0.0/16 blackhole; }",
            "protocol static ann_2_1 { ipv4 { table t4_2; }; route 10.200.0.0/16 blackhole; }",
            "protocol bgp oca_2 {",
            "  description \"isp-nl-2\";",
            "  local 10.100.2.254 as 65002;",
            "  neighbor 10.100.2.12 as 64512;",
            "  passive on;",
            "  multihop;",
            "  ipv4 { table t4_2; import none; export all; next hop self; };",
        ] {
            assert!(c.contains(line), "missing {line:?} in\n{c}");
        }
        assert!(
            !c.contains("ipv6"),
            "no IPv6 channel without IPv6 prefixes:\n{c}"
        );
        let c = router(&["10.200.0.0/16", "2001:db8:200::/48"]).bird_config();
        for line in [
            "ipv6 table t6_1;",
            "protocol static ann_1_1 { ipv6 { table t6_1; }; route 2001:db8:200::/48 blackhole; }",
            "  ipv6 { table t6_1; import none; export all; next hop address fd00::a64:2fe; };",
        ] {
            assert!(c.contains(line), "missing {line:?} in\n{c}");
        }
    }

    /// BIRD parses what the lab writes (where BIRD is installed: `bird -p` only parses).
    #[test]
    fn bird_accepts_the_configuration() {
        if !test_support::on_path("bird") {
            eprintln!("skipped: bird is not installed (apt-get install bird2)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("bird.conf");
        std::fs::write(
            &conf,
            router(&["100.64.0.0/16", "2001:db8:200::/48"]).bird_config(),
        )
        .unwrap();
        let out = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_agent_table_is_the_documented_shape_and_reads_back() {
        let r = router(&["100.64.0.0/16"]);
        let c = r.agent_config("isp-nl-2").unwrap();
        let text = agent_toml(&c).unwrap();
        for line in [
            "[bgp]",
            "local_as = 64512",
            "router_id = \"10.100.2.12\"",
            "listen_addresses = []",
            "[[bgp.neighbors]]",
            "address = \"10.100.2.254\"",
            "peer_as = 65002",
            "local_address = \"10.100.2.12\"",
            "passive = false",
            "[bgp.neighbors.import]",
            "refuse_bogons = false",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // What the fill agent does with its file's [bgp] table: oca-bgp's Config, validated.
        let file: toml::Table = toml::from_str(&text).unwrap();
        let back = Config::from_toml(&toml::to_string(&file["bgp"]).unwrap()).unwrap();
        assert_eq!(back, c);
        assert_eq!(r.agent_config("isp-nl-3"), None);
    }
}
