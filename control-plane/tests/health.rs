//! Health intake against the real binary: credentials, inventories, keys.

mod common;

use common::*;
use oca_protocol::health::HealthReply;
use oca_protocol::keys::Keyring;
use serde_json::{json, Value};

fn report(oca_id: &str, inventory: Value) -> Value {
    json!({
        "oca_id": oca_id, "site": "isp-a", "version": "0.1.0", "status": "ok",
        "serving": {"active_connections": 1, "bytes_per_sec": 2, "requests_per_sec": 3, "capacity_bps": 10_000_000_000u64},
        "disks": [{"path": "/srv/oca/disk0", "state": "ok", "capacity_bytes": 1000, "used_bytes": 10}],
        "prefixes": ["192.0.2.0/24", "2001:db8::/32"],
        "inventory": inventory
    })
}

fn setup(cp: &Cp) -> (String, String) {
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/sites",
            Some(json!({"id": "isp-a", "kind": "isp", "region": "eu"}))
        )
        .0,
        201
    );
    let mut creds = Vec::new();
    for id in ["oca-1", "oca-2"] {
        let a = json!({"id": id, "site": "isp-a", "url": "http://127.0.0.1:1", "capacity_bps": 1});
        let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201);
        creds.push(reg["credential"].as_str().unwrap().to_string());
    }
    (creds[0].clone(), creds[1].clone())
}

fn inventory(cp: &Cp, id: &str) -> Vec<String> {
    serde_json::from_value(
        cp.admin("GET", &format!("/v1/admin/appliances/{id}/inventory"), None)
            .1,
    )
    .unwrap()
}

#[test]
fn reports_update_inventory_and_carry_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let (c1, _) = setup(&cp);
    let post = |body: Value, cred: &str| {
        cp.req(
            "POST",
            "/v1/appliances/oca-1/health",
            Some(body),
            Some(cred),
        )
    };

    let (s, reply) = post(
        report(
            "oca-1",
            json!({"kind": "full", "seq": 1, "content": ["a", "b", "c"]}),
        ),
        &c1,
    );
    assert_eq!(s, 200, "{reply}");
    let reply: HealthReply = serde_json::from_value(reply).unwrap();
    assert_eq!(
        (
            reply.inventory_seq,
            reply.send_full_inventory,
            reply.report_interval_secs
        ),
        (1, false, 10)
    );
    let ring = Keyring::from_wire(&reply.keys).unwrap();
    assert_eq!(ring.current().id(), "k1");
    assert_eq!(inventory(&cp, "oca-1"), ["a", "b", "c"]);

    let delta = json!({"kind": "delta", "base_seq": 1, "seq": 2, "added": ["d"], "removed": ["a"]});
    let (_, reply) = post(report("oca-1", delta), &c1);
    assert_eq!(
        (
            reply["inventory_seq"].as_u64(),
            reply["send_full_inventory"].as_bool()
        ),
        (Some(2), Some(false))
    );
    assert_eq!(inventory(&cp, "oca-1"), ["b", "c", "d"]);

    // A delta against a base we do not hold is not applied; a full inventory is asked for.
    let stale = json!({"kind": "delta", "base_seq": 7, "seq": 8, "added": ["x"], "removed": []});
    let (_, reply) = post(report("oca-1", stale), &c1);
    assert_eq!(
        (
            reply["inventory_seq"].as_u64(),
            reply["send_full_inventory"].as_bool()
        ),
        (Some(2), Some(true))
    );
    assert_eq!(inventory(&cp, "oca-1"), ["b", "c", "d"]);

    // Rotation: the reply carries the new key first and the previous one.
    assert_eq!(
        cp.admin("POST", "/v1/admin/keys/rotate", None).1["current"],
        "k2"
    );
    let (_, reply) = post(
        report("oca-1", json!({"kind": "full", "seq": 9, "content": []})),
        &c1,
    );
    let reply: HealthReply = serde_json::from_value(reply).unwrap();
    let ids: Vec<_> = reply.keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["k2", "k1"]);
    assert!(inventory(&cp, "oca-1").is_empty());
    let (_, list) = cp.admin("GET", "/v1/admin/appliances", None);
    assert_eq!(
        (list[0]["id"].as_str(), list[0]["status"].as_str()),
        (Some("oca-1"), Some("ok"))
    );
    assert_eq!(list[1]["status"], "unknown", "never reported");
}

#[test]
fn credentials_are_checked_per_appliance() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let (c1, c2) = setup(&cp);
    let full = json!({"kind": "full", "seq": 1, "content": []});
    let post = |id: &str, body: Value, cred: Option<&str>| {
        cp.req(
            "POST",
            &format!("/v1/appliances/{id}/health"),
            Some(body),
            cred,
        )
    };
    let (s_none, b_none) = post("oca-1", report("oca-1", full.clone()), None);
    let (s_other, b_other) = post("oca-1", report("oca-1", full.clone()), Some(&c2));
    let (s_wrong, b_wrong) = post("oca-1", report("oca-1", full.clone()), Some("forged"));
    let (s_unknown, b_unknown) = post("oca-9", report("oca-9", full.clone()), Some(&c1));
    assert_eq!((s_none, s_other, s_wrong, s_unknown), (401, 401, 401, 401));
    assert!(
        b_none == b_other && b_other == b_wrong && b_wrong == b_unknown,
        "no hint of which part failed"
    );
    let (s, e) = post("oca-1", report("oca-2", full.clone()), Some(&c1));
    assert_eq!(s, 400, "a report names the appliance of its URL: {e}");
    let mut bad = report("oca-1", full);
    bad["status"] = json!("fine");
    let (s, e) = post("oca-1", bad, Some(&c1));
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("fine"), "{e}");
    assert_eq!(
        post(
            "oca-2",
            report("oca-2", json!({"kind": "full", "seq": 1, "content": []})),
            Some(&c2)
        )
        .0,
        200
    );
}

#[test]
fn a_million_entry_inventory_is_taken_without_stalling_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let (c1, _) = setup(&cp);
    let content: Vec<String> = (0..1_000_000)
        .map(|i| format!("c{i:07}_1080p.mp4"))
        .collect();
    let big = report(
        "oca-1",
        json!({"kind": "full", "seq": 1, "content": content}),
    );
    let done = std::sync::atomic::AtomicBool::new(false);
    let (took, reads) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut worst = std::time::Duration::ZERO;
            let mut count = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let t = std::time::Instant::now();
                assert_eq!(cp.admin("GET", "/v1/admin/sites", None).0, 200);
                worst = worst.max(t.elapsed());
                count += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            (worst, count)
        });
        let t = std::time::Instant::now();
        let (s1, reply) = cp.req("POST", "/v1/appliances/oca-1/health", Some(big), Some(&c1));
        let took = t.elapsed();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(s1, 200, "{reply}");
        (took, reader.join().unwrap())
    });
    let (worst, count) = reads;
    assert!(
        count >= 3,
        "lookups kept being answered during a {took:?} intake ({count})"
    );
    assert!(
        worst < took / 2,
        "a lookup waited {worst:?} during a {took:?} intake"
    );
    let (_, n) = cp.admin("GET", "/v1/admin/appliances/oca-1/inventory", None);
    assert_eq!(n.as_array().unwrap().len(), 1_000_000);
}
