//! BGP-learned routes against the real binary: steering follows them, prefers the better route,
//! stops at a withdrawal, offers ISP appliances only to the clients they hear, flags sites whose appliances disagree, refuses what a site may not
//! announce and the routes of reports with too many, keeps the routes on record while a speaker
//! converges; old-style reports keep working.
//!
//! ```text
//! ixp-1 (ixp, eu)  x1: static 198.51.0.0/16
//!  ├─ isp-a (isp)  a1, a2: BGP only; allowed 198.51.100.0/22 and 2001:db8:a::/48
//!  └─ isp-b (isp)  b1: static 203.0.113.0/24 (an appliance without a BGP speaker)
//! every appliance holds c0 .. c19
//! ```

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

const CONTENT: usize = 20;

struct World {
    cp: Cp,
    creds: HashMap<&'static str, String>,
    dir: tempfile::TempDir,
}

const SITES: [(&str, &str); 3] = [("x1", "ixp-1"), ("a1", "isp-a"), ("a2", "isp-a")];

fn world_with(extra: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--report-interval", "5"];
    args.extend_from_slice(extra);
    let cp = start_with(dir.path(), &args);
    for site in [
        json!({"id": "ixp-1", "kind": "ixp", "region": "eu", "allowed_prefixes": ["198.51.0.0/16"]}),
        json!({"id": "isp-a", "kind": "isp", "region": "eu", "parent": "ixp-1",
               "allowed_prefixes": ["198.51.100.0/22", "2001:db8:a::/48"]}),
        json!({"id": "isp-b", "kind": "isp", "region": "eu", "parent": "ixp-1", "allowed_prefixes": ["203.0.113.0/24"]}),
    ] {
        assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    }
    let mut creds = HashMap::new();
    for (id, site) in SITES.into_iter().chain([("b1", "isp-b")]) {
        let a = json!({"id": id, "site": site, "url": format!("http://{id}.example"), "capacity_bps": 1_000_000_000u64});
        let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201);
        creds.insert(id, reg["credential"].as_str().unwrap().to_string());
    }
    let w = World { cp, creds, dir };
    w.ok("x1", &["198.51.0.0/16"], None);
    w.ok("b1", &["203.0.113.0/24"], None);
    w
}

fn world() -> World {
    world_with(&[])
}

/// A BGP route as the fill agent sends it.
fn route(prefix: &str, as_path: &[u32], origin: &str, med: Option<u32>) -> Value {
    let mut r =
        json!({"prefix": prefix, "neighbor": "192.0.2.1", "as_path": as_path, "origin": origin});
    if let Some(m) = med {
        r["med"] = json!(m);
    }
    r
}

/// The BGP part of a report: one established session (3 flaps so far) and `routes`.
fn bgp(routes: Vec<Value>) -> Value {
    json!({
        "sessions": [{"neighbor": "192.0.2.1", "peer_as": 64500, "state": "established",
                      "since": 1_764_547_200u64, "prefixes_received": routes.len(),
                      "prefixes_accepted": routes.len(), "flaps": 3}],
        "routes": routes
    })
}

impl World {
    /// Sends a report; returns the status and body.
    fn report(&self, id: &str, prefixes: &[&str], bgp: Option<Value>) -> (u16, Value) {
        let site = SITES.iter().find(|s| s.0 == id).map_or("isp-b", |s| s.1);
        let content: Vec<String> = (0..CONTENT).map(|c| format!("c{c}")).collect();
        let mut body = json!({
            "oca_id": id, "site": site, "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
            "disks": [], "prefixes": prefixes,
            "inventory": {"kind": "full", "seq": 1, "content": content}
        });
        if let Some(b) = bgp {
            body["bgp"] = b;
        }
        self.cp.req(
            "POST",
            &format!("/v1/appliances/{id}/health"),
            Some(body),
            Some(&self.creds[id]),
        )
    }

    fn ok(&self, id: &str, prefixes: &[&str], bgp: Option<Value>) -> Value {
        let (s, r) = self.report(id, prefixes, bgp);
        assert_eq!(s, 200, "{r}");
        r
    }

    fn steer(&self, ip: &str, content: &str) -> (Vec<String>, Value) {
        self.cp.steer(ip, content)
    }

    /// The first appliance for each content id.
    fn firsts(&self, ip: &str) -> Vec<String> {
        (0..CONTENT)
            .map(|c| {
                self.steer(ip, &format!("c{c}"))
                    .0
                    .first()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    fn admin_get(&self, path: &str) -> Value {
        let (s, v) = self.cp.admin("GET", path, None);
        assert_eq!(s, 200, "{path}: {v}");
        v
    }
}

/// An appliance's explanation in an answer.
fn explained<'a>(ans: &'a Value, id: &str) -> &'a Value {
    ans["explain"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["oca_id"] == id)
        .unwrap_or(&Value::Null)
}

/// A prefix in a query string.
fn enc(p: &str) -> String {
    p.replace('/', "%2F").replace(':', "%3A")
}

#[test]
fn steering_follows_the_longest_bgp_match() {
    let w = world();
    w.ok(
        "a1",
        &[],
        Some(bgp(vec![route("198.51.100.0/24", &[64500], "igp", None)])),
    );
    w.ok(
        "a2",
        &[],
        Some(bgp(vec![route("198.51.100.0/22", &[64500], "igp", None)])),
    );
    for c in 0..CONTENT {
        let (ids, ans) = w.steer("198.51.100.7", &format!("c{c}"));
        assert_eq!(ids[0], "a1", "the appliance hearing the /24: {ans}");
        // a2 hears a covering /22 and x1 a covering /16 (and is the tier site): both tier.
        // b1, an ISP appliance in the same region hearing nothing covering the client, is no
        // candidate.
        let mut tier = ids[1..].to_vec();
        tier.sort();
        assert_eq!(tier, ["a2", "x1"], "{ans}");
    }
    let (_, ans) = w.steer("198.51.100.7", "c0");
    let a1 = explained(&ans, "a1");
    assert_eq!(
        a1["route"],
        json!({"prefix": "198.51.100.0/24", "source": "bgp", "neighbor": "192.0.2.1",
               "as_path_len": 1, "origin": "igp"}),
        "{ans}"
    );
    assert!(
        reason(&ans, "a1").contains("hears the client's route 198.51.100.0/24"),
        "{ans}"
    );
    assert_eq!(explained(&ans, "a2")["route"]["prefix"], "198.51.100.0/22");
    assert_eq!(explained(&ans, "x1")["route"]["source"], "static");
    // Inside the /22 only: a2 is the client's own, x1 its tier; a1, whose route does not
    // cover the client, is no candidate.
    let (ids, ans) = w.steer("198.51.101.7", "c0");
    assert_eq!(ids, ["a2", "x1"], "{ans}");
    // IPv6 alike.
    w.ok(
        "a2",
        &[],
        Some(bgp(vec![
            route("198.51.100.0/22", &[64500], "igp", None),
            route("2001:db8:a::/48", &[64500], "igp", None),
        ])),
    );
    assert_eq!(w.steer("2001:db8:a::5", "c3").0[0], "a2");
}

#[test]
fn the_better_route_ranks_first() {
    let w = world();
    let p = "198.51.100.0/24";
    let both = |r1: Value, r2: Value| {
        w.ok("a1", &[], Some(bgp(vec![r1])));
        w.ok("a2", &[], Some(bgp(vec![r2])));
    };
    // Shorter AS path.
    both(
        route(p, &[64500, 64501, 64502], "igp", None),
        route(p, &[64500], "igp", None),
    );
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a2"));
    let (ids, ans) = w.steer("198.51.100.7", "c0");
    assert_eq!(ids[..2], ["a2", "a1"], "{ans}");
    assert!(
        reason(&ans, "a1").contains("after a2, whose route is better: shorter AS path (1 < 3)"),
        "{ans}"
    );
    assert_eq!(explained(&ans, "a1")["route"]["as_path_len"], 3);
    // Equal paths: lower MED.
    both(
        route(p, &[64500], "igp", Some(10)),
        route(p, &[64500], "igp", Some(50)),
    );
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a1"));
    let (_, ans) = w.steer("198.51.100.7", "c0");
    assert!(reason(&ans, "a2").contains("lower MED (10 < 50)"), "{ans}");
    assert_eq!(explained(&ans, "a2")["route"]["med"], 50);
    // ORIGIN is compared before MED (RFC 4271 §9.1.2.2).
    both(
        route(p, &[64500], "igp", Some(100)),
        route(p, &[64500], "incomplete", Some(0)),
    );
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a1"));
    let (_, ans) = w.steer("198.51.100.7", "c0");
    assert!(
        reason(&ans, "a2").contains("lower ORIGIN (igp < incomplete)"),
        "{ans}"
    );
    // LOCAL_PREF (iBGP) beats a shorter path.
    let mut preferred = route(p, &[64500, 64501], "igp", None);
    preferred["local_pref"] = json!(200);
    both(route(p, &[64500], "igp", None), preferred);
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a2"));
    let (_, ans) = w.steer("198.51.100.7", "c0");
    assert!(
        reason(&ans, "a1").contains("higher LOCAL_PREF (200 > 100)"),
        "{ans}"
    );
    assert_eq!(explained(&ans, "a2")["route"]["local_pref"], 200);
    // Equal routes: the rendezvous hash spreads files over both.
    both(
        route(p, &[64500], "igp", Some(5)),
        route(p, &[64500], "igp", Some(5)),
    );
    let firsts = w.firsts("198.51.100.7");
    assert!(
        firsts.iter().any(|f| f == "a1") && firsts.iter().any(|f| f == "a2"),
        "{firsts:?}"
    );
    let (ids, ans) = w.steer("198.51.100.7", "c0");
    assert!(
        reason(&ans, &ids[1]).contains("an equal route, the rendezvous hash"),
        "{ans}"
    );
    // An appliance hearing the prefix from two routers uses its better route.
    let mut second = route(p, &[64500], "igp", Some(1));
    second["neighbor"] = json!("192.0.2.2");
    w.ok(
        "a1",
        &[],
        Some(bgp(vec![route(p, &[64500], "igp", Some(5)), second])),
    );
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a1"));
    let (_, ans) = w.steer("198.51.100.7", "c0");
    assert_eq!(explained(&ans, "a1")["route"]["neighbor"], "192.0.2.2");
}

#[test]
fn a_withdrawn_route_stops_steering_there_at_the_next_report() {
    let w = world();
    let p = "198.51.100.0/24";
    w.ok("a1", &[], Some(bgp(vec![route(p, &[64500], "igp", None)])));
    w.ok("a2", &[], Some(bgp(vec![])));
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a1"));
    // a1's next report no longer carries it: clients fall back to the tier site, x1, alone;
    // a1, like a2 and b1, hears nothing covering them and is no candidate.
    w.ok("a1", &[], Some(bgp(vec![])));
    let (ids, ans) = w.steer("198.51.100.7", "c0");
    assert_eq!(ids, ["x1"], "{ans}");
    assert!(
        reason(&ans, "x1").contains("hears the client's route 198.51.0.0/16"),
        "{ans}"
    );
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "x1"));
    // The announcement moves to a2: steering follows at a2's report.
    w.ok("a2", &[], Some(bgp(vec![route(p, &[64500], "igp", None)])));
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a2"));
    // A report without `bgp` (the speaker removed) withdraws everything it heard.
    w.ok("a2", &[], None);
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "x1"));
    let sessions = w.admin_get("/v1/admin/bgp/sessions");
    let listed: Vec<&str> = sessions
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["oca_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["a1"], "a2 runs no speaker any more: {sessions}");
    // Withdrawn everywhere, x1's covering route too: nobody covers the client.
    w.ok("x1", &[], None);
    assert!(w.steer("198.51.100.7", "c0").0.is_empty());
}

#[test]
fn sites_whose_appliances_hear_different_prefixes_are_flagged() {
    let w = world();
    let (p1, p2) = ("198.51.100.0/24", "198.51.101.0/24");
    w.ok(
        "a1",
        &[],
        Some(bgp(vec![
            route(p1, &[64500], "igp", Some(5)),
            route(p2, &[64500], "igp", None),
        ])),
    );
    let mut tagged = route(p1, &[64500, 64510], "egp", None);
    tagged["communities"] = json!(["64500:100"]);
    tagged["large_communities"] = json!(["64500:1:2"]);
    w.ok("a2", &[], Some(bgp(vec![tagged])));
    let flagged = w.admin_get("/v1/admin/bgp/inconsistent");
    assert_eq!(
        flagged,
        json!([{"site": "isp-a",
                "appliances": [{"oca_id": "a1", "prefixes": 2}, {"oca_id": "a2", "prefixes": 1}],
                "differing": [{"prefix": p2, "heard_by": ["a1"], "not_heard_by": ["a2"]}],
                "differing_total": 1}])
    );
    let m = metrics(&w.cp);
    assert!(m.contains("cp_bgp_inconsistent_sites 1"), "{m}");
    assert!(
        m.contains(r#"cp_bgp_sessions{state="established"} 2"#),
        "{m}"
    );
    assert!(m.contains(r#"cp_bgp_sessions{state="idle"} 0"#), "{m}");
    assert!(m.contains(r#"cp_bgp_prefixes{oca_id="a1"} 2"#), "{m}");
    assert!(m.contains(r#"cp_bgp_session_flaps{oca_id="a2"} 3"#), "{m}");
    assert!(
        !m.contains(r#"oca_id="b1""#),
        "b1 runs no speaker: nothing to show"
    );
    // The route explorer: who hears p1, with attributes, the preferred route first.
    let heard = w.admin_get(&format!("/v1/admin/bgp/routes?prefix={}", enc(p1)));
    assert_eq!(
        heard,
        json!({"routes": [
            {"prefix": p1, "oca_id": "a1", "site": "isp-a", "source": "bgp", "neighbor": "192.0.2.1",
             "as_path": [64500], "origin": "igp", "med": 5, "best": true},
            {"prefix": p1, "oca_id": "a2", "site": "isp-a", "source": "bgp", "neighbor": "192.0.2.1",
             "as_path": [64500, 64510], "origin": "egp", "communities": ["64500:100"],
             "large_communities": ["64500:1:2"], "best": false}],
          "more": false})
    );
    let all = w.admin_get("/v1/admin/bgp/routes?limit=3");
    assert_eq!(all["routes"].as_array().unwrap().len(), 3);
    assert_eq!(
        all["more"], true,
        "three BGP routes and x1's and b1's static ones: {all}"
    );
    let x1 = w.admin_get("/v1/admin/bgp/routes?oca_id=x1");
    assert_eq!(
        x1["routes"],
        json!([{"prefix": "198.51.0.0/16", "oca_id": "x1", "site": "ixp-1", "source": "static",
                "best": true}])
    );
    // The same through ocactl (its JSON: tables are for people).
    let run = |args: &[&str]| {
        let args = [args, &["--json"]].concat();
        let (ok, out, err) = ocactl(&w.cp, &args);
        assert!(ok, "{args:?}: {err}");
        serde_json::from_str::<Value>(&out).unwrap()
    };
    assert_eq!(run(&["bgp", "inconsistent"]), flagged);
    assert_eq!(run(&["bgp", "routes", p1]), heard);
    assert_eq!(
        run(&["bgp", "routes", "--appliance", "x1"])["routes"],
        x1["routes"]
    );
    let sessions = run(&["bgp", "sessions", "--appliance", "a1"]);
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    assert_eq!(sessions[0]["sessions"][0]["state"], "established");
    assert_eq!(sessions[0]["sessions"][0]["peer_as"], 64500);
    assert_eq!(
        (
            sessions[0]["routes"].as_u64(),
            sessions[0]["prefixes"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(run(&["bgp", "sessions"]).as_array().unwrap().len(), 2);
    // Once both hear the same prefixes, the site is consistent again.
    w.ok(
        "a2",
        &[],
        Some(bgp(vec![
            route(p1, &[64500], "igp", None),
            route(p2, &[64500], "igp", None),
        ])),
    );
    assert_eq!(w.admin_get("/v1/admin/bgp/inconsistent"), json!([]));
    assert_eq!(run(&["bgp", "inconsistent"]), json!([]));
    assert!(metrics(&w.cp).contains("cp_bgp_inconsistent_sites 0"));
    // A bad prefix is refused before it is sent.
    let (ok, _, err) = ocactl(&w.cp, &["bgp", "routes", "198.51.100.1/24"]);
    assert!(!ok && err.contains("bits set past its length"), "{err}");
}

#[test]
fn isp_appliances_serve_only_the_clients_their_isp_announces() {
    let w = world();
    // A second IXP site in the region, neither a tier of isp-a/isp-b nor hearing their routes.
    let site =
        json!({"id": "ixp-2", "kind": "ixp", "region": "eu", "allowed_prefixes": ["192.0.2.0/24"]});
    assert_eq!(w.cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    let a = json!({"id": "x2", "site": "ixp-2", "url": "http://x2.example", "capacity_bps": 1_000_000_000u64});
    let (s, reg) = w.cp.admin("POST", "/v1/admin/appliances", Some(a));
    assert_eq!(s, 201, "{reg}");
    let body = json!({
        "oca_id": "x2", "site": "ixp-2", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": ["192.0.2.0/24"],
        "inventory": {"kind": "full", "seq": 1, "content": ["c0"]}
    });
    let cred = reg["credential"].as_str().unwrap();
    let (s, r) =
        w.cp.req("POST", "/v1/appliances/x2/health", Some(body), Some(cred));
    assert_eq!(s, 200, "{r}");
    w.ok(
        "a1",
        &[],
        Some(bgp(vec![route("198.51.100.0/24", &[64500], "igp", None)])),
    );
    // isp-b's client: its own appliance, its tier, then the region's other IXP site. a1, an
    // ISP appliance of the same region that does not hear the client, is not offered: its
    // ISP would carry another network's clients.
    let (ids, ans) = w.steer("203.0.113.9", "c0");
    assert_eq!(ids, ["b1", "x1", "x2"], "{ans}");
    assert!(reason(&ans, "x2").contains("same region"), "{ans}");
    // b1 fails: the IXP sites only, never a1 or a2.
    let body = json!({
        "oca_id": "b1", "site": "isp-b", "version": "t", "status": "error",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": ["203.0.113.0/24"],
        "inventory": {"kind": "full", "seq": 2, "content": ["c0"]}
    });
    let (s, r) = w.cp.req(
        "POST",
        "/v1/appliances/b1/health",
        Some(body),
        Some(&w.creds["b1"]),
    );
    assert_eq!(s, 200, "{r}");
    let (ids, ans) = w.steer("203.0.113.9", "c0");
    assert_eq!(ids, ["x1", "x2"], "{ans}");
}

#[test]
fn an_old_style_report_without_bgp_still_steers() {
    let w = world();
    // b1 and x1 report as appliances without a speaker do: static prefixes, no `bgp` key.
    let (ids, ans) = w.steer("203.0.113.9", "c1");
    assert_eq!(ids[..2], ["b1", "x1"], "{ans}");
    assert_eq!(
        explained(&ans, "b1")["route"],
        json!({"prefix": "203.0.113.0/24", "source": "static", "as_path_len": 0, "origin": "igp"})
    );
    // Static prefixes and BGP routes side by side: the static one is locally originated, so
    // it is preferred at equal LOCAL_PREF.
    w.ok("a1", &["198.51.100.0/24"], None);
    w.ok(
        "a2",
        &[],
        Some(bgp(vec![route("198.51.100.0/24", &[64500], "igp", None)])),
    );
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a1"));
    let (_, ans) = w.steer("198.51.100.7", "c0");
    assert!(
        reason(&ans, "a2").contains("shorter AS path (0 < 1)"),
        "{ans}"
    );
}

#[test]
fn routes_outside_the_allowed_prefixes_are_refused_and_reported_back() {
    let w = world();
    let reply = w.ok(
        "a1",
        &["10.0.0.0/8"],
        Some(bgp(vec![
            route("198.51.100.0/24", &[64500], "igp", None),
            route("192.0.2.0/24", &[64500], "igp", None),
            route("0.0.0.0/0", &[64500], "igp", None),
        ])),
    );
    assert_eq!(
        reply["refused_prefixes"],
        json!(["0.0.0.0/0", "10.0.0.0/8", "192.0.2.0/24"])
    );
    let m = metrics(&w.cp);
    assert!(m.contains("cp_bgp_routes_refused_total 2"), "{m}");
    assert!(m.contains("cp_report_prefixes_refused_total 1"), "{m}");
    // Nothing steers by them; the allowed route does.
    assert!(w.steer("192.0.2.1", "c0").0.is_empty());
    assert!(w.steer("10.1.2.3", "c0").0.is_empty());
    assert_eq!(w.steer("198.51.100.7", "c0").0[0], "a1");
    let heard = w.admin_get(&format!(
        "/v1/admin/bgp/routes?prefix={}",
        enc("192.0.2.0/24")
    ));
    assert_eq!(heard["routes"], json!([]));
    let sessions = w.admin_get("/v1/admin/bgp/sessions?oca_id=a1");
    assert_eq!(sessions[0]["routes"], 1, "{sessions}");
}

#[test]
fn too_many_routes_are_refused_and_the_routes_on_record_stay() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cp.toml");
    std::fs::write(&config, "max_routes_per_appliance = 10\n").unwrap();
    let w = world_with(&["--config", config.to_str().unwrap()]);
    let routes = |n: u32| -> Vec<Value> {
        (0..n)
            .map(|i| route(&format!("198.51.100.{}/32", i), &[64500], "igp", None))
            .collect()
    };
    // At the limit it is taken.
    w.ok("a1", &[], Some(bgp(routes(10))));
    assert_eq!(w.steer("198.51.100.9", "c0").0[0], "a1");
    // One more: the routes are refused, the reply says why, the rest of the report is taken
    // (a1 stays fresh and serving) and the 10 routes on record stay in force.
    let r = w.ok("a1", &[], Some(bgp(routes(11))));
    let msg = r["routes_refused"].as_str().unwrap_or_default();
    assert!(
        msg.contains("11 routes")
            && msg.contains("max_routes_per_appliance = 10")
            && msg.contains("routes on record stay"),
        "{r}"
    );
    assert_eq!(w.steer("198.51.100.9", "c0").0[0], "a1");
    assert!(w.steer("198.51.100.10", "c0").0.first() != Some(&"a1".to_string()));
    let (_, list) = w.cp.admin("GET", "/v1/admin/appliances", None);
    let a1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "a1")
        .unwrap();
    assert_eq!(a1["status"], "ok", "{list}");
    assert!(metrics(&w.cp).contains("cp_bgp_reports_refused_total 1"));
    // Back under the limit: taken again.
    let r = w.ok("a1", &[], Some(bgp(routes(3))));
    assert!(r.get("routes_refused").is_none(), "{r}");
    assert!(w.steer("198.51.100.9", "c0").0.first() != Some(&"a1".to_string()));
}

#[test]
fn a_converging_speaker_keeps_the_routes_on_record() {
    let w = world();
    let p = "198.51.100.0/24";
    w.ok("a1", &[], Some(bgp(vec![route(p, &[64500], "igp", None)])));
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a1"));
    // The fill agent restarted: its sessions are coming up and have heard nothing yet. Its
    // report says it is converging, so a1 keeps its clients and the sessions show as they are.
    let mut converging = bgp(vec![]);
    converging["converging"] = json!(true);
    converging["sessions"][0]["state"] = json!("open_sent");
    w.ok("a1", &[], Some(converging));
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "a1"));
    let sessions = w.admin_get("/v1/admin/bgp/sessions");
    assert!(sessions.to_string().contains("open_sent"), "{sessions}");
    // Converged with the table complete: the report is the truth again, withdrawals included.
    w.ok("a1", &[], Some(bgp(vec![])));
    assert!(w.firsts("198.51.100.7").iter().all(|f| f == "x1"));
}

#[test]
fn routes_and_sessions_read_back_after_a_restart() {
    let mut w = world();
    let p = "198.51.100.0/24";
    w.ok(
        "a1",
        &[],
        Some(bgp(vec![route(p, &[64500, 64501], "igp", None)])),
    );
    w.ok(
        "a2",
        &[],
        Some(bgp(vec![route(p, &[64500], "igp", Some(7))])),
    );
    // A change and a withdrawal, applied live.
    w.ok(
        "a1",
        &[],
        Some(bgp(vec![route("198.51.101.0/24", &[64500], "igp", None)])),
    );
    let probes = ["198.51.100.7", "198.51.101.7", "198.51.102.7"];
    let live: Vec<Vec<String>> = probes.iter().map(|ip| w.firsts(ip)).collect();
    let explorer = w.admin_get("/v1/admin/bgp/routes");
    // The report times a restart reads back carry its downtime (not counted against the
    // appliances), so they are left out of the comparison.
    let without_times = |mut v: Value| {
        for s in v.as_array_mut().unwrap() {
            s.as_object_mut().unwrap().remove("last_report");
        }
        v
    };
    let sessions = without_times(w.admin_get("/v1/admin/bgp/sessions"));
    let dir = w.dir.path().to_path_buf();
    w.cp = start_with(&dir, &["--report-interval", "5"]);
    let reread: Vec<Vec<String>> = probes.iter().map(|ip| w.firsts(ip)).collect();
    assert_eq!(live, reread);
    assert!(live[0].iter().all(|f| f == "a2") && live[1].iter().all(|f| f == "a1"));
    assert_eq!(w.admin_get("/v1/admin/bgp/routes"), explorer);
    assert_eq!(
        without_times(w.admin_get("/v1/admin/bgp/sessions")),
        sessions
    );
}

/// The appliance image's case (hwtests/tests/image_boot.rs): an ISP site with no parent, one
/// appliance that reports its static prefix with BGP sessions that never come up, first holding
/// nothing and then, by a delta, the file. Steering must offer it to a client inside the prefix.
#[test]
fn a_file_added_by_a_delta_steers_at_a_parentless_site() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(dir.path(), &["--report-interval", "5"]);
    let site =
        json!({"id": "isp", "kind": "isp", "region": "eu", "allowed_prefixes": ["127.0.0.0/8"]});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    let zone = json!({"prefix": "127.0.0.0/8", "country": "NL"});
    assert_eq!(cp.admin("POST", "/v1/admin/zones", Some(zone)).0, 201);
    let a = json!({"id": "vm1", "site": "isp", "url": "https://vm1.example", "capacity_bps": 1_000_000_000u64});
    let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
    assert_eq!(s, 201);
    let cred = reg["credential"].as_str().unwrap().to_string();
    let down = json!({
        "sessions": [{"neighbor": "10.0.2.2", "peer_as": 64500, "state": "connect", "since": 1_764_547_200u64,
                      "prefixes_received": 0, "prefixes_accepted": 0, "flaps": 0}],
        "routes": []
    });
    let report = |inventory: Value| {
        let body = json!({
            "oca_id": "vm1", "site": "isp", "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
            "disks": [], "prefixes": ["127.0.0.0/8"], "bgp": down, "inventory": inventory
        });
        let (s, r) = cp.req("POST", "/v1/appliances/vm1/health", Some(body), Some(&cred));
        assert_eq!(s, 200, "{r}");
    };
    report(json!({"kind": "full", "seq": 1, "content": []}));
    report(json!({"kind": "delta", "base_seq": 1, "seq": 2, "added": ["f1"], "removed": []}));
    let (ids, ans) = cp.steer("127.0.0.1", "f1");
    assert_eq!(ids, ["vm1"], "{ans}");
}
