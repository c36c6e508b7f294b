//! An ISP router for the BGP tests: BIRD 2 in its own network namespace, joined to this
//! (the root) namespace by a veth, so the fill agent runs as it does on an appliance, next to a
//! control plane on loopback, and dials the router across the veth.
//!
//! ```text
//!  root namespace: <host if>  10.251.<x>.2/30  fd00:251:<x>::2/64  ── veth ──  v0  .1  ::1 :<router ns>
//! ```
//! `<x>` and the names come from the process id, so runs in parallel do not meet. Dropped: BIRD
//! killed and the namespace deleted (which takes the veth, both ends).

use std::path::PathBuf;
use std::process::Command;

use test_support::netns::{self, run};
use test_support::proc::Proc;

/// BIRD in a namespace, with its configuration file and control socket.
pub struct Router {
    /// The namespace.
    pub ns: String,
    /// Its IPv4 and IPv6 addresses on the veth.
    pub rtr4: String,
    pub rtr6: String,
    /// The root namespace's end: the appliance's addresses.
    pub oca4: String,
    pub oca6: String,
    dir: tempfile::TempDir,
    bird: Option<Proc>,
}

/// Whether to skip a test needing root, `ip` and `tools` (see [`netns::skip_without`]).
pub fn skip_without(tools: &[&str]) -> bool {
    netns::skip_without("the fill agent's BGP test", tools)
}

impl Router {
    /// The namespace and the veth, BIRD not yet started.
    pub fn new(tag: &str) -> Router {
        let pid = std::process::id();
        let x = pid % 250 + 1;
        let ns = format!("ofa-{tag}-{pid}");
        // Interface names are at most 15 bytes.
        let host_if = format!("ofa{tag}{}", pid % 100_000_000);
        let r = Router {
            ns,
            rtr4: format!("10.251.{x}.1"),
            rtr6: format!("fd00:251:{x}::1"),
            oca4: format!("10.251.{x}.2"),
            oca6: format!("fd00:251:{x}::2"),
            dir: tempfile::tempdir().unwrap(),
            bird: None,
        };
        let _ = Command::new("ip").args(["netns", "del", &r.ns]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        run(&["ip", "netns", "add", &r.ns]);
        run(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", "v0", "netns", &r.ns,
        ]);
        run(&["ip", "-n", &r.ns, "link", "set", "lo", "up"]);
        run(&["ip", "-n", &r.ns, "link", "set", "v0", "up"]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&[
            "ip",
            "-n",
            &r.ns,
            "addr",
            "add",
            &format!("{}/30", r.rtr4),
            "dev",
            "v0",
        ]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/30", r.oca4),
            "dev",
            &host_if,
        ]);
        // nodad: otherwise the address is tentative for a second and the first dial fails.
        run(&[
            "ip",
            "-n",
            &r.ns,
            "addr",
            "add",
            &format!("{}/64", r.rtr6),
            "dev",
            "v0",
            "nodad",
        ]);
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/64", r.oca6),
            "dev",
            &host_if,
            "nodad",
        ]);
        r
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("bird.conf")
    }

    fn sock(&self) -> String {
        self.dir.path().join("bird.ctl").display().to_string()
    }

    /// Starts BIRD with configuration `conf`.
    pub fn start(&mut self, conf: &str) {
        std::fs::write(self.conf(), conf).unwrap();
        let (c, s) = (self.conf().display().to_string(), self.sock());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "bird", "-f", "-c", &c, "-s", &s]);
        self.bird = Some(Proc::spawn(cmd));
    }

    /// Replaces BIRD's configuration and has it reload (`birdc configure`): routes no longer
    /// in it are withdrawn.
    pub fn reconfigure(&self, conf: &str) {
        std::fs::write(self.conf(), conf).unwrap();
        let out = self.birdc(&["configure"]);
        assert!(out.contains("Reconfigured"), "{out}");
    }

    /// A `birdc` command's output.
    pub fn birdc(&self, args: &[&str]) -> String {
        let sock = self.sock();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "birdc", "-s", &sock])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "birdc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What BIRD logged.
    pub fn log(&self) -> String {
        self.bird.as_ref().map(Proc::log).unwrap_or_default()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        drop(self.bird.take());
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}
