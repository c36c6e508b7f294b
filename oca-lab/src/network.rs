//! The lab's network: per site a network namespace joined to the host by a veth pair, with
//! addresses `10.(100+n).<site>.1` (host) / .2 (site), a default route through the host, and both
//! directions shaped to the site's link with tc. Needs root and iproute2.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::topology::Topology;

/// The lab's network namespaces, removed on drop.
pub(crate) struct Net {
    /// One per site, in topology order.
    pub(crate) sites: Vec<SiteNet>,
    forwarding_was: String,
}

/// One site's namespace and its end of the veth pair.
pub(crate) struct SiteNet {
    /// The site's id.
    pub(crate) site: String,
    /// The namespace's name.
    pub(crate) ns: String,
    /// The host's address on the link (the site's gateway).
    pub(crate) host_ip: String,
    /// The namespace's address (where its appliances listen).
    pub(crate) ns_ip: String,
    /// The namespace's interface on the link.
    pub(crate) ns_if: String,
}

impl SiteNet {
    /// Adds `ip` to the namespace's interface (a secondary address in the site's /24).
    pub(crate) fn add_address(&self, ip: Ipv4Addr) -> Result<()> {
        sh(&[
            "ip",
            "-n",
            &self.ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            &self.ns_if,
        ])
    }
}

/// Runs a command; its stderr is the error when it fails.
pub(crate) fn sh(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Net {
    /// One namespace per site: veth pair 10.(100+n).<k>.1 (host) / .2 (site), default route
    /// through the host, both directions shaped to the site's link.
    pub(crate) fn create(topo: &Topology) -> Result<Net> {
        // Several labs may run in one process (tests): each gets its own names and 10.x net.
        let n = NETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) % 100;
        let tag = (std::process::id() % 10_000) * 100 + n;
        let second = 100 + n;
        let forwarding_was = {
            let mut fwd = FORWARDING.lock();
            if fwd.0 == 0 {
                fwd.1 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward")
                    .unwrap_or_else(|_| "0".into())
                    .trim()
                    .to_string();
            }
            fwd.0 += 1;
            fwd.1.clone()
        };
        let mut net = Net {
            sites: Vec::new(),
            forwarding_was,
        };
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("enabling IPv4 forwarding")?;
        for (k, site) in topo.site.iter().enumerate() {
            let k = k + 1;
            let ns = format!("oca{tag}-{k}");
            let (host_if, ns_if) = (format!("oh{tag}k{k}"), format!("on{tag}k{k}"));
            let (host_ip, ns_ip) = (format!("10.{second}.{k}.1"), format!("10.{second}.{k}.2"));
            sh(&["ip", "netns", "add", &ns])?;
            net.sites.push(SiteNet {
                site: site.id.clone(),
                ns: ns.clone(),
                host_ip: host_ip.clone(),
                ns_ip: ns_ip.clone(),
                ns_if: ns_if.clone(),
            });
            sh(&[
                "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ])?;
            sh(&["ip", "link", "set", &ns_if, "netns", &ns])?;
            sh(&[
                "ip",
                "addr",
                "add",
                &format!("{host_ip}/24"),
                "dev",
                &host_if,
            ])?;
            sh(&["ip", "link", "set", &host_if, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["ip", "netns", "exec", ns.as_str()];
                all.extend_from_slice(args);
                sh(&all)
            };
            inside(&["ip", "addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if])?;
            inside(&["ip", "link", "set", &ns_if, "up"])?;
            inside(&["ip", "link", "set", "lo", "up"])?;
            inside(&["ip", "route", "add", "default", "via", &host_ip])?;
            let rate = format!("{}mbit", site.link_mbit.max(1));
            // A 10 ms burst (at least 16 KB): small enough that a player's probe sees the
            // link's rate, not the bucket.
            let burst = format!(
                "{}kb",
                (site.link_mbit * 1_000_000 / 8 / 100 / 1000).max(16)
            );
            let tbf = [
                "root", "tbf", "rate", &rate, "burst", &burst, "latency", "50ms",
            ];
            let mut host_tc = vec!["tc", "qdisc", "add", "dev", host_if.as_str()];
            host_tc.extend_from_slice(&tbf);
            sh(&host_tc)?;
            let mut ns_tc = vec!["tc", "qdisc", "add", "dev", ns_if.as_str()];
            ns_tc.extend_from_slice(&tbf);
            inside(&ns_tc)?;
        }
        Ok(net)
    }

    /// The namespace of `site`.
    pub(crate) fn of(&self, site: &str) -> &SiteNet {
        self.sites
            .iter()
            .find(|s| s.site == site)
            .expect("every site has a namespace")
    }
}

/// Labs with namespaces made in this process (for distinct names and addresses).
static NETS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Labs with namespaces alive, and the forwarding setting before the first.
static FORWARDING: parking_lot::Mutex<(u32, String)> = parking_lot::Mutex::new((0, String::new()));

impl Drop for Net {
    fn drop(&mut self) {
        for s in &self.sites {
            let _ = sh(&["ip", "netns", "del", &s.ns]);
        }
        let mut fwd = FORWARDING.lock();
        fwd.0 = fwd.0.saturating_sub(1);
        if fwd.0 == 0 {
            let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", &self.forwarding_was);
        }
    }
}
