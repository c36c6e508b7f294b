//! Two network namespaces joined by a veth pair: the ISP router's and the appliance's.
//!
//! ```text
//!  <name>-r: v0  10.250.0.1/30  fd00:250::1/64   ── veth ──   v1  10.250.0.2/30  fd00:250::2/64 :<name>-o
//! ```
//! The names carry the process id, so parallel tests and other runs do not meet; the veth is
//! created inside the namespaces, so its ends' names never clash either. Dropped: both
//! namespaces deleted (which takes the veth and anything left in them).

use std::process::Command;

use test_support::netns::{self, run};

/// The router's addresses and the appliance's.
pub const RTR4: &str = "10.250.0.1";
pub const OCA4: &str = "10.250.0.2";
pub const RTR6: &str = "fd00:250::1";
pub const OCA6: &str = "fd00:250::2";

pub struct Net {
    pub rtr: String,
    pub oca: String,
}

/// Whether to skip an interoperability test needing `tools` (see [`netns::skip_without`]).
pub fn skip_without(tools: &[&str]) -> bool {
    netns::skip_without("the BGP interoperability tests", tools)
}

impl Net {
    pub fn new(tag: &str) -> Net {
        let base = format!("obgp-{tag}-{}", std::process::id());
        let net = Net {
            rtr: format!("{base}-r"),
            oca: format!("{base}-o"),
        };
        let _ = Command::new("ip").args(["netns", "del", &net.rtr]).output();
        let _ = Command::new("ip").args(["netns", "del", &net.oca]).output();
        run(&["ip", "netns", "add", &net.rtr]);
        run(&["ip", "netns", "add", &net.oca]);
        run(&[
            "ip", "link", "add", "v0", "netns", &net.rtr, "type", "veth", "peer", "name", "v1",
            "netns", &net.oca,
        ]);
        for (ns, dev, v4, v6) in [(&net.rtr, "v0", RTR4, RTR6), (&net.oca, "v1", OCA4, OCA6)] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v4}/30"),
                "dev",
                dev,
            ]);
            // nodad: otherwise the address is tentative for a second and the first dial fails.
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        net
    }

    /// A command run inside namespace `ns`.
    pub fn exec(&self, ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    /// Runs a command inside `ns` to completion; its stdout (panics on failure).
    pub fn run_in(&self, ns: &str, args: &[&str]) -> String {
        let out = self.exec(ns, args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} in {ns}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The router falls silent to the appliance: every TCP segment carrying data from it (a
    /// BGP message makes it at least 71 bytes) is dropped, while bare ACKs still pass (52 bytes
    /// with timestamps, 64 with a SACK block, which the router sends when our retransmission
    /// arrives twice), so the router keeps hearing the appliance and only the appliance's hold
    /// timer runs out.
    pub fn silence_router(&self) {
        self.run_in(
            &self.oca,
            &[
                "iptables", "-A", "INPUT", "-p", "tcp", "-m", "length", "--length", "65:65535",
                "-j", "DROP",
            ],
        );
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.rtr])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.oca])
            .output();
    }
}
