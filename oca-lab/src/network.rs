//! The lab's network: per site a network namespace joined to the host by a veth pair, with
//! addresses `10.X.<site>.1` (host) / .2 (site), a default route through the host, and both
//! directions shaped to the site's link with tc. Needs root and iproute2.
//!
//! `X` is the first of 100 to 199 whose `10.X.0.0/16` no address, route or lab namespace on the
//! host uses, chosen under a lock file (`/run/oca-lab.lock`) so that labs started at once, in one
//! process or several, never share one. A lab killed before it could remove its namespaces
//! (SIGKILL) leaves them holding their `X`: the next lab takes another and says which are left.

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
    output(args).map(drop)
}

impl Net {
    /// One namespace per site: veth pair 10.X.<k>.1 (host) / .2 (site), default route
    /// through the host, both directions shaped to the site's link.
    pub(crate) fn create(topo: &Topology) -> Result<Net> {
        let _lock = HostLock::take()?;
        let second = free_second_octet()?;
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
            let ns = format!("{NS_PREFIX}{second}-{k}");
            let (host_if, ns_if) = (format!("oh{second}k{k}"), format!("on{second}k{k}"));
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

/// The lab's namespaces are `oca<X>-<site number>`.
const NS_PREFIX: &str = "oca";

/// The `X` of the first `10.X.0.0/16` (100 to 199) nothing on this host uses; says which lab
/// namespaces an earlier run left.
fn free_second_octet() -> Result<u8> {
    let addrs = output(&["ip", "-o", "-4", "addr", "show"])?;
    let routes = output(&["ip", "-4", "route", "show", "table", "all"])?;
    let namespaces = output(&["ip", "netns", "list"])?;
    let left: Vec<&str> = namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(NS_PREFIX))
        .collect();
    let taken = |x: u8| {
        let net = format!("10.{x}.");
        addrs.split_whitespace().any(|w| w.starts_with(&net))
            || routes.split_whitespace().any(|w| w.starts_with(&net))
            || left.iter().any(|n| {
                n.strip_prefix(NS_PREFIX).and_then(|r| r.split('-').next()) == Some(&x.to_string())
            })
    };
    let Some(x) = (100..=199).find(|&x| !taken(x)) else {
        bail!(
            "no free 10.X.0.0/16 (X from 100 to 199) for the lab's sites; namespaces left by \
             earlier labs: {left:?} (`ip netns del NAME` removes one)"
        );
    };
    if !left.is_empty() {
        eprintln!(
            "note: namespaces left by earlier labs: {} (`ip netns del NAME` removes one); this lab \
             uses 10.{x}.0.0/16",
            left.join(" ")
        );
    }
    Ok(x)
}

/// What a command prints; its stderr is the error when it fails.
fn output(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// An exclusive lock on `/run/oca-lab.lock` while a lab chooses and takes its addresses.
struct HostLock {
    _held: std::fs::File,
}

impl HostLock {
    /// Waits at most a minute: another lab holds it only while it makes its namespaces.
    fn take() -> Result<HostLock> {
        use std::os::fd::AsRawFd;
        let path = "/run/oca-lab.lock";
        let f = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
        let end = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            // SAFETY: flock on a descriptor this File owns; the lock goes with the File.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(HostLock { _held: f });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(e).context(format!("locking {path}"));
            }
            if std::time::Instant::now() > end {
                bail!("{path} still locked after a minute: another lab is stuck making its namespaces");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A lab killed with SIGKILL leaves its namespaces and their host addresses behind; the next
    /// lab must take other addresses, or its sites' traffic to the host goes to the dead lab's
    /// link (what failed CI once: every health report timed out).
    #[test]
    fn a_lab_left_behind_does_not_take_the_next_labs_addresses() {
        if test_support::netns::skip_without("the lab's address choice", &["tc"]) {
            return;
        }
        let x = {
            let _lock = HostLock::take().unwrap();
            free_second_octet().unwrap()
        };
        // What a killed lab leaves: its namespace and a veth whose host end has 10.X.1.1.
        let (ns, host_if, ns_if) = (
            format!("{NS_PREFIX}{x}-1"),
            format!("oh{x}k1"),
            format!("on{x}k1"),
        );
        /// Removes the left lab's namespace and link, also when the test fails.
        struct Left<'a>(&'a str, &'a str);
        impl Drop for Left<'_> {
            fn drop(&mut self) {
                let _ = sh(&["ip", "netns", "del", self.0]);
                let _ = sh(&["ip", "link", "del", self.1]);
            }
        }
        drop(Left(&ns, &host_if));
        let left = Left(&ns, &host_if);
        sh(&["ip", "netns", "add", &ns]).unwrap();
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])
        .unwrap();
        sh(&["ip", "link", "set", &ns_if, "netns", &ns]).unwrap();
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("10.{x}.1.1/24"),
            "dev",
            &host_if,
        ])
        .unwrap();
        sh(&["ip", "link", "set", &host_if, "up"]).unwrap();

        let topo = Topology::parse(
            "[content]\ntitles = 1\nsize_1080p_mib = 1\nsize_480p_mib = 1\n[[site]]\nid = \"s\"\nkind = \"ixp\"\nregion = \"eu\"\n\
             appliances = 1\nlink_mbit = 100\n",
        )
        .unwrap();
        let net = Net::create(&topo);
        let reached = net.as_ref().map(|net| {
            let site = net.of("s");
            let listener = std::net::TcpListener::bind((site.host_ip.as_str(), 0)).unwrap();
            let port = listener.local_addr().unwrap().port();
            let connect = format!("exec 3<>/dev/tcp/{}/{port}", site.host_ip);
            let ok = Command::new("timeout")
                .args(["5", "ip", "netns", "exec", &site.ns, "bash", "-c", &connect])
                .status()
                .unwrap()
                .success();
            (site.host_ip.clone(), ok)
        });
        drop(left);
        let (host_ip, ok) = reached.unwrap();
        assert_ne!(
            host_ip,
            format!("10.{x}.1.1"),
            "took the left lab's address"
        );
        assert!(ok, "the site could not reach the host at {host_ip}");
    }
}
