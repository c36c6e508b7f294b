//! The lab's ISP router for real, without the rest of the lab: BIRD started in a network
//! namespace from the configuration the lab writes, and the appliance's BGP speaker
//! (`oca-bgp-probe`, which runs oca-bgp as the fill agent does) given the `[bgp]` table the lab
//! writes for each fill agent. Both appliances' sessions come up from their own addresses and
//! hear the site's prefixes (private and shared ranges, which a speaker refuses by default); one announcement is
//! withdrawn from one appliance and moved back with `birdc`, leaving the other untouched.
//! Needs root, iproute2 and BIRD (`bird2`); skips, saying so, without them.

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oca_lab::{Bird, SiteRouter};
use serde_json::Value;

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace whose interface holds the site's address (one end of a veth pair whose other
/// end is in the namespace too, as the lab's site link has its far end on the host), deleted on
/// drop.
struct Ns(String);

impl Ns {
    fn new(ns_ip: Ipv4Addr) -> Ns {
        let ns = Ns(format!("ocalab-rtr-{}", std::process::id()));
        let _ = Command::new("ip").args(["netns", "del", &ns.0]).output();
        sh(&["ip", "netns", "add", &ns.0]);
        sh(&["ip", "-n", &ns.0, "link", "set", "lo", "up"]);
        sh(&[
            "ip", "-n", &ns.0, "link", "add", "site0", "type", "veth", "peer", "name", "site1",
        ]);
        sh(&["ip", "-n", &ns.0, "link", "set", "site0", "up"]);
        sh(&["ip", "-n", &ns.0, "link", "set", "site1", "up"]);
        ns.add(ns_ip);
        ns
    }

    fn add(&self, ip: Ipv4Addr) {
        sh(&[
            "ip",
            "-n",
            &self.0,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "site0",
        ]);
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// oca-bgp-probe in the namespace: its latest snapshot.
struct Speaker {
    child: Child,
    latest: Arc<Mutex<Option<Value>>>,
    log: Arc<Mutex<String>>,
}

impl Speaker {
    fn start(probe: &std::path::Path, ns: &str, config: &std::path::Path) -> Speaker {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(probe)
            .arg("--config")
            .arg(config)
            .args(["--interval-ms", "200"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let latest = Arc::new(Mutex::new(None));
        let log = Arc::new(Mutex::new(String::new()));
        let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let l = latest.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    *l.lock().unwrap() = Some(v);
                }
            }
        });
        let g = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                g.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Speaker { child, latest, log }
    }

    /// Waits for the one session's accepted prefixes to be `want` (sorted) while established.
    fn wait_prefixes(&self, want: &[&str], what: &str) -> Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let session = self
                .latest
                .lock()
                .unwrap()
                .as_ref()
                .map(|v| v["sessions"][0].clone());
            if let Some(s) = &session {
                let mut heard: Vec<String> = s["routes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|r| r["prefix"].as_str().map(String::from))
                    .collect();
                heard.sort();
                if s["state"] == "established" && heard == want {
                    return s.clone();
                }
            }
            assert!(
                Instant::now() < end,
                "timed out waiting for {what}; last session: {session:?}\nspeaker log:\n{}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_labs_router_and_bgp_tables_bring_up_each_appliances_session_and_move_announcements() {
    if test_support::netns::skip_without("the lab router test", &["bird", "birdc"]) {
        return;
    }
    let probe = &test_support::cargo_bins(false, &[("oca-bgp", "oca-bgp-probe")])["oca-bgp-probe"];
    let ns_ip = Ipv4Addr::new(10, 199, 3, 2);
    let prefixes = ["10.200.0.0/16", "100.64.0.0/16"].map(|p| p.parse().unwrap());
    let router = SiteRouter::plan("isp-x", 2, ns_ip, 2, &prefixes).unwrap();
    let ns = Ns::new(ns_ip);
    // What the lab does: the router's and each appliance's own address in the namespace.
    ns.add(router.address);
    for (_, ip) in &router.peers {
        ns.add(*ip);
    }
    let dir = tempfile::tempdir().unwrap();
    let bird = Bird::start(
        router.clone(),
        &ns.0,
        &dir.path().join("bird"),
        dir.path().join("bird.log"),
    )
    .unwrap();
    let status = bird.birdc(&["show", "protocols"]).unwrap();
    for p in ["oca_1", "oca_2", "ann_1_0", "ann_2_1"] {
        assert!(status.contains(p), "{p} missing from\n{status}");
    }

    // Each speaker gets what the fill agent's file holds under [bgp].
    let speakers: Vec<Speaker> = ["isp-x-1", "isp-x-2"]
        .iter()
        .map(|id| {
            let config = router.agent_config(id).unwrap();
            let file = dir.path().join(format!("{id}.toml"));
            std::fs::write(&file, toml::to_string(&config).unwrap()).unwrap();
            Speaker::start(probe, &ns.0, &file)
        })
        .collect();
    let both = ["10.200.0.0/16", "100.64.0.0/16"];
    for (j, (s, (_, ip))) in speakers.iter().zip(&router.peers).enumerate() {
        let session = s.wait_prefixes(&both, "both prefixes");
        assert_eq!(session["neighbor"], router.address.to_string());
        assert_eq!(session["peer_as"], router.asn);
        let r = &session["routes"][0];
        assert_eq!(r["as_path"], serde_json::json!([router.asn]));
        assert_eq!(r["next_hop"], router.address.to_string());
        // Each session runs from its appliance's own address.
        let bgp = bird
            .birdc(&["show", "protocols", "all", &format!("oca_{}", j + 1)])
            .unwrap();
        assert!(bgp.contains("Established"), "{bgp}");
        assert!(bgp.contains(&format!("Neighbor address: {ip}")), "{bgp}");
    }

    // 100.64.0.0/16 withdrawn from the first appliance only, then announced again.
    bird.birdc(&["disable", &SiteRouter::announcement(1, 1)])
        .unwrap();
    speakers[0].wait_prefixes(&["10.200.0.0/16"], "the withdrawal");
    speakers[1].wait_prefixes(&both, "the other appliance untouched");
    bird.birdc(&["enable", &SiteRouter::announcement(1, 1)])
        .unwrap();
    speakers[0].wait_prefixes(&both, "the announcement back");
}
