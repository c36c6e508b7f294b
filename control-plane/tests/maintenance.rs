//! Maintenance windows and drain against the real binary.
//!
//! ```text
//! isp-a (isp, eu)  a1, a2: 198.51.100.0/24, both hold c1
//! isp-b (isp, eu)  b1: 203.0.113.0/24, holds c1
//! ```

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

struct World {
    cp: Cp,
    creds: HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

const FLEET: [(&str, &str, &str); 3] = [
    ("a1", "isp-a", "198.51.100.0/24"),
    ("a2", "isp-a", "198.51.100.0/24"),
    ("b1", "isp-b", "203.0.113.0/24"),
];

const ISP_A_CLIENT: &str = "198.51.100.7";
const ISP_B_CLIENT: &str = "203.0.113.7";

fn world() -> World {
    world_with(&[])
}

/// The topology on a control plane started with `extra` flags (`{dir}` stands for its
/// directory).
fn world_with(extra: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let at = dir.path().display().to_string();
    let extra: Vec<String> = extra.iter().map(|a| a.replace("{dir}", &at)).collect();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    let cp = start_with(dir.path(), &extra);
    for id in ["isp-a", "isp-b"] {
        let site =
            json!({"id": id, "kind": "isp", "region": "eu", "allowed_prefixes": ["0.0.0.0/0"]});
        assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    }
    let mut creds = HashMap::new();
    for (id, site, _) in FLEET {
        let a = json!({"id": id, "site": site, "url": format!("http://{id}.example"), "capacity_bps": 10_000_000_000u64});
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
        w.report(id, 0, 0);
    }
    w
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Sleeps until `at` (unix seconds) and a little more, so the control plane's clock is past it.
fn sleep_until(at: i64) {
    let target = UNIX_EPOCH + Duration::from_secs(at as u64) + Duration::from_millis(300);
    if let Ok(d) = target.duration_since(SystemTime::now()) {
        std::thread::sleep(d);
    }
}

impl World {
    /// A health report of `id` serving `connections` clients at `bytes_per_sec`.
    fn report(&self, id: &str, connections: u64, bytes_per_sec: u64) {
        let (_, site, prefix) = FLEET.iter().find(|f| f.0 == id).unwrap();
        let body = json!({
            "oca_id": id, "site": site, "version": "t", "status": "ok",
            "serving": {"active_connections": connections, "bytes_per_sec": bytes_per_sec,
                        "requests_per_sec": 0, "capacity_bps": 10_000_000_000u64},
            "disks": [], "prefixes": [prefix],
            "inventory": {"kind": "full", "seq": 1, "content": ["c1"]}
        });
        let (s, r) = self.cp.req(
            "POST",
            &format!("/v1/appliances/{id}/health"),
            Some(body),
            Some(&self.creds[id]),
        );
        assert_eq!(s, 200, "{r}");
    }

    /// The appliances steering offers `ip` for c1, sorted, with the explained answer.
    fn steer(&self, ip: &str) -> (Vec<String>, Value) {
        let (mut ids, ans) = self.cp.steer(ip, "c1");
        ids.sort();
        (ids, ans)
    }

    /// An appliance as `GET /v1/admin/appliances` lists it.
    fn appliance(&self, id: &str) -> Value {
        let (s, list) = self.cp.admin("GET", "/v1/admin/appliances", None);
        assert_eq!(s, 200, "{list}");
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id)
            .unwrap()
            .clone()
    }

    fn disable(&self, body: Value) -> (u16, Value) {
        self.cp.admin("POST", "/v1/admin/maintenance", Some(body))
    }
}

#[test]
fn a_disabled_appliance_is_not_steered_to_drains_and_comes_back_when_ended() {
    let w = world();
    w.report("a1", 250, 50_000_000);
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"]);
    assert_eq!(w.appliance("a1")["serving"], "serving");

    let (s, win) =
        w.disable(json!({"appliance": "a1", "reason": "swap disk 3", "duration_secs": 3600}));
    assert_eq!(s, 201, "{win}");
    assert_eq!(
        (&win["target_kind"], &win["target"], &win["phase"]),
        (&json!("appliance"), &json!("a1"), &json!("active"))
    );
    assert_eq!(
        win["end"].as_i64().unwrap() - win["start"].as_i64().unwrap(),
        3600
    );
    let id = win["id"].as_i64().unwrap();

    // New plays go to its site's other appliance; the explanation says why and until when.
    let (ids, ans) = w.steer(ISP_A_CLIENT);
    assert_eq!(ids, ["a2"], "{ans}");
    let why = reason(&ans, "a1");
    assert!(
        why.starts_with("maintenance until ") && why.ends_with(": swap disk 3"),
        "{why}"
    );

    // Draining while its reports show clients, drained once they are gone.
    let a1 = w.appliance("a1");
    assert_eq!(a1["serving"], "draining", "{a1}");
    assert_eq!(a1["maintenance"]["id"], id);
    assert_eq!(w.appliance("a2")["serving"], "serving");
    w.report("a1", 3, 1_000);
    assert_eq!(w.appliance("a1")["serving"], "drained");

    // Ending early re-enables it at once.
    let (s, ended) = w.cp.admin(
        "POST",
        &format!("/v1/admin/maintenance/{id}/end"),
        Some(json!({"reason": "disk swapped"})),
    );
    assert_eq!(s, 200, "{ended}");
    assert_eq!(ended["phase"], "ended");
    assert_eq!(ended["ended_by"], "admin-token");
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"]);
    let a1 = w.appliance("a1");
    assert_eq!(a1["serving"], "serving");
    assert!(a1.get("maintenance").is_none(), "{a1}");
    let (s, again) = w.cp.admin(
        "POST",
        &format!("/v1/admin/maintenance/{id}/end"),
        Some(json!({"reason": "twice"})),
    );
    assert_eq!(s, 409, "{again}");

    // Listed while open; with all=1 afterwards.
    assert_eq!(
        w.cp.admin("GET", "/v1/admin/maintenance", None).1,
        json!([])
    );
    let (_, all) = w.cp.admin("GET", "/v1/admin/maintenance?all=1", None);
    assert_eq!(all[0]["id"], id);
    assert_eq!(all[0]["end_reason"], "disk swapped");

    // The audit log: who, when, why, newest first.
    let (s, log) = w.cp.admin("GET", "/v1/admin/audit?target=a1", None);
    assert_eq!(s, 200, "{log}");
    let log = log.as_array().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(
        (
            &log[0]["action"],
            &log[0]["actor"],
            &log[0]["target"],
            &log[0]["details"]["reason"]
        ),
        (
            &json!("maintenance.end"),
            &json!("admin-token"),
            &json!("appliance:a1"),
            &json!("disk swapped")
        )
    );
    assert_eq!(
        (
            &log[1]["action"],
            &log[1]["actor"],
            &log[1]["details"]["reason"]
        ),
        (
            &json!("maintenance.start"),
            &json!("admin-token"),
            &json!("swap disk 3")
        )
    );
    assert!(log[1]["at"].as_i64().unwrap() >= win["created"].as_i64().unwrap());
    assert_eq!(
        w.cp.admin("GET", "/v1/admin/audit?target=b1", None).1,
        json!([])
    );
}

#[test]
fn windows_and_zones_reach_steering_at_once_without_reloading_the_fleet_view() {
    let w = world();
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"]);
    let reloads = counter(&w.cp, "cp_fleet_reloads_total");
    let (s, win) = w.disable(json!({"appliance": "a1", "reason": "disk", "duration_secs": 600}));
    assert_eq!(s, 201, "{win}");
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a2"]);
    let (s, r) = w.cp.admin(
        "POST",
        &format!("/v1/admin/maintenance/{}/end", win["id"]),
        Some(json!({"reason": "done"})),
    );
    assert_eq!(s, 200, "{r}");
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"]);
    // A zone gives a prefix nobody announces to a site: its clients are steered there.
    assert!(w.steer("192.0.2.7").0.is_empty());
    let zone = json!({"prefix": "192.0.2.0/24", "site": "isp-b", "country": "NL"});
    assert_eq!(w.cp.admin("POST", "/v1/admin/zones", Some(zone)).0, 201);
    assert_eq!(w.steer("192.0.2.7").0, ["b1"]);
    // Moved to the other site: the old site's entry goes with it.
    let zone = json!({"prefix": "192.0.2.0/24", "site": "isp-a", "country": "NL"});
    assert_eq!(w.cp.admin("POST", "/v1/admin/zones", Some(zone)).0, 201);
    assert_eq!(w.steer("192.0.2.7").0, ["a1", "a2"]);
    assert_eq!(counter(&w.cp, "cp_fleet_reloads_total"), reloads);
}

#[test]
fn a_scheduled_window_starts_and_ends_by_itself() {
    let w = world();
    w.report("a1", 100, 10_000_000);
    let start = unix_now() + 2;
    let (s, win) = w.disable(
        json!({"appliance": "a1", "reason": "firmware", "start": start, "end": start + 2}),
    );
    assert_eq!(s, 201, "{win}");
    assert_eq!(win["phase"], "scheduled");
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"]);
    assert_eq!(w.appliance("a1")["serving"], "serving");
    let (_, log) = w.cp.admin("GET", "/v1/admin/audit", None);
    assert_eq!(log[0]["action"], "maintenance.schedule");

    sleep_until(start);
    assert_eq!(
        w.steer(ISP_A_CLIENT).0,
        ["a2"],
        "the window started by itself"
    );
    assert_eq!(w.appliance("a1")["serving"], "draining");
    let (_, open) = w.cp.admin("GET", "/v1/admin/maintenance", None);
    assert_eq!(open[0]["phase"], "active");

    sleep_until(start + 2);
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"], "and ended by itself");
    assert_eq!(w.appliance("a1")["serving"], "serving");
    assert_eq!(
        w.cp.admin("GET", "/v1/admin/maintenance", None).1,
        json!([])
    );
}

#[test]
fn a_site_window_disables_every_appliance_of_the_site_only() {
    let w = world();
    let (s, win) = w.disable(json!({"site": "isp-a", "reason": "power work in the rack"}));
    assert_eq!(s, 201, "{win}");
    assert_eq!(
        win["end"].as_i64().unwrap() - win["start"].as_i64().unwrap(),
        7200,
        "two hours by default"
    );
    let (ids, ans) = w.steer(ISP_A_CLIENT);
    assert!(ids.is_empty(), "{ans}");
    for a in ["a1", "a2"] {
        assert!(
            reason(&ans, a).ends_with(": power work in the rack"),
            "{ans}"
        );
        let state = w.appliance(a);
        assert_eq!(state["serving"], "drained", "{state}");
        assert_eq!(state["maintenance"]["target"], "isp-a");
    }
    assert_eq!(w.steer(ISP_B_CLIENT).0, ["b1"]);
    assert_eq!(w.appliance("b1")["serving"], "serving");

    // Cancelling a scheduled window is recorded as such.
    let start = unix_now() + 600;
    let (_, later) =
        w.disable(json!({"site": "isp-b", "reason": "x", "start": start, "end": start + 60}));
    let (s, cancelled) = w.cp.admin(
        "POST",
        &format!("/v1/admin/maintenance/{}/end", later["id"]),
        Some(json!({"reason": "not needed"})),
    );
    assert_eq!(s, 200, "{cancelled}");
    assert_eq!(cancelled["phase"], "cancelled");
    let (_, log) = w.cp.admin("GET", "/v1/admin/audit?target=site:isp-b", None);
    assert_eq!(log[0]["action"], "maintenance.cancel");
}

#[test]
fn bad_windows_are_refused_with_clear_errors() {
    let w = world();
    let refused = |body: Value, status: u16, says: &str| {
        let (s, e) = w.disable(body.clone());
        assert_eq!(s, status, "{body}: {e}");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{body}: {e}");
    };
    refused(
        json!({"appliance": "a1", "reason": "r", "duration_secs": 48 * 3600 + 1}),
        400,
        "at most 48 hours",
    );
    let now = unix_now();
    refused(
        json!({"appliance": "a1", "reason": "r", "start": now + 60, "end": now + 60 + 49 * 3600}),
        400,
        "at most 48 hours",
    );
    refused(
        json!({"appliance": "a1", "duration_secs": 60}),
        400,
        "reason: required",
    );
    refused(
        json!({"appliance": "a1", "reason": "  "}),
        400,
        "reason: required",
    );
    refused(
        json!({"appliance": "a1", "reason": "x".repeat(501)}),
        400,
        "at most 500 characters",
    );
    refused(
        json!({"appliance": "a1", "site": "isp-a", "reason": "r"}),
        400,
        "either",
    );
    refused(json!({"reason": "r"}), 400, "either");
    refused(
        json!({"appliance": "a1", "reason": "r", "start": now + 60}),
        400,
        "duration_secs",
    );
    refused(
        json!({"appliance": "a1", "reason": "r", "start": now + 60, "end": now + 30}),
        400,
        "must be after start",
    );
    refused(
        json!({"appliance": "a1", "reason": "r", "colour": 1}),
        400,
        "colour",
    );
    refused(
        json!({"appliance": "nope", "reason": "r"}),
        404,
        "appliance nope",
    );
    refused(json!({"site": "nope", "reason": "r"}), 404, "site nope");
    assert_eq!(
        w.cp.req(
            "POST",
            "/v1/admin/maintenance",
            Some(json!({"appliance": "a1", "reason": "r"})),
            None
        )
        .0,
        401
    );
    assert_eq!(
        w.cp.req("GET", "/v1/admin/audit", None, Some("wrong")).0,
        401
    );
    let (s, e) = w.cp.admin(
        "POST",
        "/v1/admin/maintenance/99/end",
        Some(json!({"reason": "r"})),
    );
    assert_eq!(s, 404, "{e}");
    let (s, e) = w.cp.admin(
        "POST",
        "/v1/admin/maintenance/x/end",
        Some(json!({"reason": "r"})),
    );
    assert_eq!(s, 400, "{e}");
    assert_eq!(w.cp.admin("GET", "/v1/admin/audit?limit=0", None).0, 400);
    assert_eq!(
        w.cp.admin("GET", "/v1/admin/maintenance?limit=100000", None)
            .0,
        400
    );
    // Nothing refused was recorded, and nothing was disabled.
    assert_eq!(w.cp.admin("GET", "/v1/admin/audit", None).1, json!([]));
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"]);
}

#[test]
fn ocactl_disables_lists_ends_and_reads_the_audit_log() {
    let w = world();
    let ok = |args: &[&str]| {
        let (ok, out, err) = ocactl(&w.cp, args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    let out = ok(&[
        "maintenance",
        "start",
        "--appliance",
        "a1",
        "--reason",
        "replace PSU",
        "--for",
        "1h30m",
    ]);
    assert!(
        out.contains("window 1: appliance a1 disabled from "),
        "{out}"
    );
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a2"]);
    let table = ok(&["maintenance", "list"]);
    assert!(table.starts_with("ID"), "{table}");
    let row = table.lines().nth(1).unwrap();
    for cell in ["appliance:a1", "active", "admin-token", "replace PSU"] {
        assert!(row.contains(cell), "{table}");
    }
    let listed: Value = serde_json::from_str(&ok(&["maintenance", "list", "--json"])).unwrap();
    assert_eq!(
        listed[0]["end"].as_i64().unwrap() - listed[0]["start"].as_i64().unwrap(),
        5400
    );

    let (ok49, _, err) = ocactl(
        &w.cp,
        &[
            "maintenance",
            "start",
            "--site",
            "isp-b",
            "--reason",
            "r",
            "--for",
            "49h",
        ],
    );
    assert!(!ok49 && err.contains("48 hours"), "{err}");
    let (ok_both, _, err) = ocactl(
        &w.cp,
        &[
            "maintenance",
            "start",
            "--site",
            "isp-b",
            "--appliance",
            "a1",
            "--reason",
            "r",
        ],
    );
    assert!(!ok_both, "{err}");

    let out = ok(&["maintenance", "end", "1", "--reason", "PSU replaced"]);
    assert!(
        out.contains("ended") && out.contains("PSU replaced"),
        "{out}"
    );
    assert_eq!(w.steer(ISP_A_CLIENT).0, ["a1", "a2"]);

    let audit = ok(&["audit", "--target", "a1"]);
    let lines: Vec<&str> = audit.lines().collect();
    assert_eq!(lines.len(), 3, "{audit}");
    assert!(
        lines[1].contains("maintenance.end") && lines[1].contains("PSU replaced"),
        "{audit}"
    );
    assert!(
        lines[2].contains("admin-token") && lines[2].contains("replace PSU"),
        "{audit}"
    );
    let json: Value = serde_json::from_str(&ok(&["audit", "--json", "--limit", "1"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);

    // A scheduled window with absolute times, then cancelled.
    let out = ok(&[
        "maintenance",
        "start",
        "--site",
        "isp-b",
        "--reason",
        "fibre move",
        "--from",
        "+1h",
        "--until",
        "+3h",
    ]);
    assert!(out.contains("(scheduled)"), "{out}");
    assert_eq!(w.steer(ISP_B_CLIENT).0, ["b1"]);
    let out = ok(&["maintenance", "end", "2", "--reason", "postponed"]);
    assert!(out.contains("cancelled"), "{out}");
    assert!(ok(&["maintenance", "list", "--all"]).lines().count() == 3);
}

#[test]
fn the_drain_thresholds_are_settings() {
    // One from a flag, one from the TOML file, so both paths are read.
    let toml = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(toml.path(), "drained_below_bps = 1000000000\n").unwrap();
    let config = toml.path().display().to_string();
    let w = world_with(&["--drained-below-connections", "300", "--config", &config]);
    // 250 connections and 400 Mb/s: under 300 and 1 Gb/s.
    w.report("a1", 250, 50_000_000);
    let (s, _) = w.disable(json!({"appliance": "a1", "reason": "r"}));
    assert_eq!(s, 201);
    assert_eq!(w.appliance("a1")["serving"], "drained");
    w.report("a1", 300, 0);
    assert_eq!(w.appliance("a1")["serving"], "draining");
    w.report("a1", 0, 125_000_000);
    assert_eq!(w.appliance("a1")["serving"], "draining");
}

#[test]
fn a_disabled_appliance_is_no_fill_source_for_its_peers() {
    let w = world();
    let sha = "1".repeat(64);
    let title = json!({"id": "t1", "name": "t1", "countries": ["NL"]});
    assert_eq!(w.cp.admin("POST", "/v1/admin/titles", Some(title)).0, 201);
    let c = json!({"id": "f1", "title": "t1", "resolution": 1080, "bitrate_kbps": 1, "size": 1000,
                   "sha256": sha, "content_type": "video/mp4", "origin": "embedded"});
    assert_eq!(w.cp.admin("POST", "/v1/admin/content", Some(c)).0, 201);
    // a1 holds f1 but has no room for it in the plan; a2 has room, so f1 is planned on a2
    // with a1 as its peer source.
    for (id, held, room) in [("a1", vec!["f1"], 500u64), ("a2", vec![], 1u64 << 30)] {
        let body = json!({
            "oca_id": id, "site": "isp-a", "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0,
                        "capacity_bps": 10_000_000_000u64},
            "disks": [{"path": "/d0", "state": "ok", "capacity_bytes": room, "used_bytes": 0}],
            "prefixes": ["198.51.100.0/24"],
            "inventory": {"kind": "full", "seq": 2, "content": held}
        });
        let (s, r) = w.cp.req(
            "POST",
            &format!("/v1/appliances/{id}/health"),
            Some(body),
            Some(&w.creds[id]),
        );
        assert_eq!(s, 200, "{r}");
    }
    let sources = || -> Vec<String> {
        let resp = reqwest::blocking::Client::new()
            .get(format!("http://{}/v1/appliances/a2/manifest", w.cp.addr))
            .bearer_auth(&w.creds["a2"])
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let m: Value = resp.json().unwrap();
        m["entries"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["sources"].as_array().unwrap().clone())
            .map(|s| s["oca_id"].as_str().unwrap_or("origin").to_string())
            .collect()
    };
    assert_eq!(sources(), ["a1", "origin"]);
    let (s, win) = w.disable(json!({"appliance": "a1", "reason": "r"}));
    assert_eq!(s, 201);
    assert_eq!(
        sources(),
        ["origin"],
        "a disabled appliance is no fill source"
    );
    let (s, _) = w.cp.admin(
        "POST",
        &format!("/v1/admin/maintenance/{}/end", win["id"]),
        Some(json!({"reason": "back"})),
    );
    assert_eq!(s, 200);
    assert_eq!(sources(), ["a1", "origin"]);
}
