//! Steering on a built topology, against the real binary.
//!
//! ```text
//! ixp-1 (ixp, eu)  x1: 198.51.0.0/16, holds c1 c2 c3
//!  ├─ isp-a (isp)  a1, a2: 198.51.100.0/24 + 2001:db8:a::/48; a1 holds c1 c2, a2 holds c1
//!  └─ isp-b (isp)  b1: 203.0.113.0/24 + zone 100.64.0.0/10; holds c1
//! isp-us (isp, us) u1: 192.0.2.0/24, holds c1
//! ```

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

struct World {
    cp: Cp,
    creds: HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

const FLEET: [(&str, &str, &[&str], &[&str]); 5] = [
    (
        "a1",
        "isp-a",
        &["198.51.100.0/24", "2001:db8:a::/48"],
        &["c1", "c2"],
    ),
    (
        "a2",
        "isp-a",
        &["198.51.100.0/24", "2001:db8:a::/48"],
        &["c1"],
    ),
    ("x1", "ixp-1", &["198.51.0.0/16"], &["c1", "c2", "c3"]),
    ("b1", "isp-b", &["203.0.113.0/24"], &["c1"]),
    ("u1", "isp-us", &["192.0.2.0/24"], &["c1"]),
];

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(dir.path(), &["--report-interval", "1"]);
    for site in [
        json!({"id": "ixp-1", "kind": "ixp", "region": "eu", "allowed_prefixes": ["0.0.0.0/0", "::/0"]}),
        json!({"id": "isp-a", "kind": "isp", "region": "eu", "parent": "ixp-1", "allowed_prefixes": ["0.0.0.0/0", "::/0"]}),
        json!({"id": "isp-b", "kind": "isp", "region": "eu", "parent": "ixp-1", "allowed_prefixes": ["0.0.0.0/0", "::/0"]}),
        json!({"id": "isp-us", "kind": "isp", "region": "us", "allowed_prefixes": ["0.0.0.0/0", "::/0"]}),
    ] {
        assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    }
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/zones",
            Some(json!({"prefix": "100.64.0.0/10", "site": "isp-b", "country": "NL"}))
        )
        .0,
        201
    );
    let mut creds = HashMap::new();
    for (id, site, _, _) in FLEET {
        let a = json!({"id": id, "site": site, "url": format!("http://{id}.example"), "capacity_bps": 1_000_000_000u64});
        let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201);
        creds.insert(id, reg["credential"].as_str().unwrap().to_string());
    }
    let w = World {
        cp,
        creds,
        _dir: dir,
    };
    for (id, ..) in FLEET {
        w.report(id, "ok", 0);
    }
    w
}

impl World {
    fn report(&self, id: &str, status: &str, bytes_per_sec: u64) {
        let (_, site, prefixes, content) = FLEET.iter().find(|f| f.0 == id).unwrap();
        let body = json!({
            "oca_id": id, "site": site, "version": "t", "status": status,
            "serving": {"active_connections": 0, "bytes_per_sec": bytes_per_sec, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
            "disks": [], "prefixes": prefixes,
            "inventory": {"kind": "full", "seq": 1, "content": content}
        });
        let (s, r) = self.cp.req(
            "POST",
            &format!("/v1/appliances/{id}/health"),
            Some(body),
            Some(&self.creds[id]),
        );
        assert_eq!(s, 200, "{r}");
    }

    fn steer(&self, ip: &str, content: &str) -> (Vec<String>, Value) {
        self.cp.steer(ip, content)
    }
}

/// An appliance's status as the admin API lists it.
fn status(cp: &Cp, id: &str) -> Value {
    let (_, list) = cp.admin("GET", "/v1/admin/appliances", None);
    list.as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == id)
        .unwrap()["status"]
        .clone()
}

#[test]
fn isp_first_then_tier_never_another_isp_or_region() {
    let w = world();
    let (ids, ans) = w.steer("198.51.100.7", "c1");
    assert_eq!(ids.len(), 3, "{ans}");
    let mut isp: Vec<_> = ids[..2].to_vec();
    isp.sort();
    assert_eq!(isp, ["a1", "a2"], "client's ISP site first: {ans}");
    assert_eq!(ids[2], "x1", "then its IXP (tier) site");
    // b1's ISP does not carry this client (docs/bgp.md), and u1 is in another region.
    assert!(
        !ids.contains(&"b1".to_string()) && !ids.contains(&"u1".to_string()),
        "another ISP's appliance is not offered, nor another region: {ans}"
    );
    assert!(reason(&ans, "a1").contains("198.51.100.0/24"), "{ans}");
    // Content held only by some.
    assert_eq!(w.steer("198.51.100.7", "c2").0, ["a1", "x1"]);
    assert_eq!(w.steer("198.51.100.7", "c3").0, ["x1"]);
    let (_, ans) = w.steer("198.51.100.7", "c3");
    assert_eq!(reason(&ans, "a2"), "does not hold the content");
    // The same file lands on the same appliances every time.
    assert_eq!(w.steer("198.51.100.9", "c1").0, ids);
}

#[test]
fn ipv6_overlapping_prefixes_and_zones() {
    let w = world();
    let (ids, _) = w.steer("2001:db8:a::5", "c1");
    assert!(
        ids[0].starts_with('a') && ids[1].starts_with('a'),
        "{ids:?}"
    );
    // Only x1's wider /16 covers this address: x1 is the client's closest site.
    let (ids, _) = w.steer("198.51.7.1", "c1");
    assert_eq!(ids[0], "x1");
    // A coverage zone an admin configured.
    let (ids, _) = w.steer("100.64.1.1", "c1");
    assert_eq!(ids[0], "b1");
    assert_eq!(ids[1], "x1", "b1's parent next");
    // Nobody covers this client: nothing to offer.
    assert!(w.steer("8.8.8.8", "c1").0.is_empty());
}

#[test]
fn unhealthy_overloaded_and_silent_appliances_are_dropped() {
    let w = world();
    w.report("a1", "error", 0);
    w.report("a2", "ok", 120_000_000); // 960 Mb/s of 1 Gb/s: over the 90% threshold
    let (ids, ans) = w.steer("198.51.100.7", "c1");
    assert_eq!(ids, ["x1"], "{ans}");
    assert_eq!(reason(&ans, "a1"), "status error");
    assert_eq!(reason(&ans, "a2"), "over load threshold");
    // Health miss: c2's holders near the client are a1 (error) and x1; drop x1 by silence.
    // Silence: everyone but x1 keeps reporting; after 3 intervals (3 s) x1 is unknown.
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        for id in ["a1", "a2", "b1", "u1"] {
            w.report(id, if id == "a1" { "error" } else { "ok" }, 0);
        }
    }
    let (ids, ans) = w.steer("198.51.100.7", "c2");
    assert!(ids.is_empty(), "{ans}");
    assert!(reason(&ans, "x1").starts_with("stale"), "{ans}");
    let status = |id: &str| status(&w.cp, id);
    assert_eq!(status("x1"), "unknown", "silent for 3 intervals");
    assert_eq!(status("a1"), "error");
    assert_eq!(status("b1"), "ok");
    let m = metrics(&w.cp);
    assert!(m.contains("cp_steer_health_misses_total 1"), "{m}");
    w.steer("198.51.100.7", "never-ingested");
    let m = metrics(&w.cp);
    assert!(m.contains("cp_steer_content_misses_total 1"), "{m}");
}

#[test]
fn the_live_view_matches_what_a_restart_reads_back() {
    let mut w = world();
    // Deltas, a status change and a prefix change, applied live.
    let delta = json!({"oca_id": "a2", "site": "isp-a", "version": "t", "status": "warning",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": ["198.51.100.0/24", "192.0.2.0/25"],
        "inventory": {"kind": "delta", "base_seq": 1, "seq": 2, "added": ["c3"], "removed": ["c1"]}});
    assert_eq!(
        w.cp.req(
            "POST",
            "/v1/appliances/a2/health",
            Some(delta),
            Some(&w.creds["a2"])
        )
        .0,
        200
    );
    let probes = [
        ("198.51.100.7", "c1"),
        ("198.51.100.7", "c3"),
        ("192.0.2.9", "c3"),
        ("2001:db8:a::1", "c2"),
    ];
    let live: Vec<_> = probes.iter().map(|(ip, c)| w.steer(ip, c).0).collect();
    assert_eq!(live[1][0], "a2", "a2 now holds c3 and is the client's site");
    assert_eq!(live[2][0], "a2", "a2's new prefix is matched");
    let dir = w._dir.path().to_path_buf();
    // A second control plane on the same database reads everything back from SQLite.
    w.cp = start_with(&dir, &["--report-interval", "1"]);
    let reread: Vec<_> = probes.iter().map(|(ip, c)| w.steer(ip, c).0).collect();
    assert_eq!(live, reread);
}

#[test]
fn a_restart_does_not_count_its_own_downtime_as_appliance_silence() {
    let mut w = world();
    // x1 falls silent while the others report: stale before the control plane stops.
    for _ in 0..8 {
        std::thread::sleep(std::time::Duration::from_millis(500));
        for id in ["a1", "a2", "b1", "u1"] {
            w.report(id, "ok", 0);
        }
    }
    // Away for longer than 3 intervals.
    let _ = w.cp.child.kill();
    let _ = w.cp.child.wait();
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let dir = w._dir.path().to_path_buf();
    w.cp = start_with(&dir, &["--report-interval", "1"]);
    // Before any report reaches the new process: those fresh when it stopped still serve, the
    // one already silent then does not.
    let (ids, ans) = w.steer("198.51.100.7", "c1");
    assert!(
        ids.contains(&"a1".to_string()) && ids.contains(&"a2".to_string()),
        "{ans}"
    );
    assert!(!ids.contains(&"x1".to_string()), "{ans}");
    assert!(reason(&ans, "x1").starts_with("stale"), "{ans}");
    assert_eq!(status(&w.cp, "a1"), "ok");
    assert_eq!(status(&w.cp, "x1"), "unknown");
    // Silence after the restart counts: 3 intervals later (and a second of rounding) nobody is
    // fresh.
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let (ids, ans) = w.steer("198.51.100.7", "c1");
    assert!(ids.is_empty(), "{ans}");
    assert_eq!(status(&w.cp, "a1"), "unknown");
}
