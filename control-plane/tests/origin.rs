//! The embedded origin: fill-scoped signed URLs only, byte ranges for resumed fills.

mod common;

use common::*;
use oca_protocol::keys::Keyring;
use oca_protocol::signing::{signed_query, Scope};
use serde_json::json;

#[test]
fn origin_serves_fill_urls_with_ranges_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path().join("cp.db.origin").join("t1_480p.mp4"), &body).unwrap();
    // Keys reach appliances in health replies; register one to read them.
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/sites",
            Some(json!({"id": "s", "kind": "isp", "region": "eu"}))
        )
        .0,
        201
    );
    let (_, reg) = cp.admin(
        "POST",
        "/v1/admin/appliances",
        Some(json!({"id": "o", "site": "s", "url": "http://o", "capacity_bps": 1})),
    );
    let report = json!({"oca_id": "o", "site": "s", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1},
        "disks": [], "prefixes": [], "inventory": {"kind": "full", "seq": 1, "content": []}});
    let (_, reply) = cp.req(
        "POST",
        "/v1/appliances/o/health",
        Some(report),
        reg["credential"].as_str(),
    );
    let site_keys =
        Keyring::from_wire(&serde_json::from_value::<Vec<_>>(reply["keys"].clone()).unwrap())
            .unwrap();
    // The origin has keys of its own, which no appliance receives: read them where the control
    // plane keeps them.
    let (id, secret) = db_of(dir.path()).origin_key();
    let origin_key = oca_protocol::keys::Key::new(&id, secret.try_into().unwrap()).unwrap();
    let key = &origin_key;
    let future = 4_000_000_000u64;
    let get = |id: &str, query: &str, range: Option<&str>| {
        let mut r =
            reqwest::blocking::Client::new().get(format!("http://{}/origin/{id}?{query}", cp.addr));
        if let Some(range) = range {
            r = r.header("range", range);
        }
        let resp = r.send().unwrap();
        (resp.status().as_u16(), resp.bytes().unwrap().to_vec())
    };
    let fill = signed_query(key, "t1_480p.mp4", future, Scope::Fill);
    assert_eq!(get("t1_480p.mp4", &fill, None), (200, body.clone()));
    assert_eq!(
        get("t1_480p.mp4", &fill, Some("bytes=50000-")),
        (206, body[50_000..].to_vec()),
        "resume"
    );
    let refused = [
        signed_query(key, "t1_480p.mp4", future, Scope::Play),
        signed_query(key, "t1_480p.mp4", 1, Scope::Fill),
        signed_query(key, "other.mp4", future, Scope::Fill),
        fill.replace("&s=", "&s=x"),
        String::new(),
        // A site's key (an appliance's keys file) opens nothing at the origin.
        signed_query(site_keys.current(), "t1_480p.mp4", future, Scope::Fill),
    ];
    for q in &refused {
        assert_eq!(get("t1_480p.mp4", q, None).0, 403, "{q}");
    }
    assert_eq!(
        get("..%2Fcp.db", &fill, None).0,
        403,
        "an invalid id is never a path"
    );
    let m = metrics(&cp);
    assert!(m.contains("cp_origin_refusals_total 7"), "{m}");
}
