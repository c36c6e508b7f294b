//! The admin API against the real binary, a real SQLite file and a real HTTP client.

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn sites_and_appliances_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let ixp = json!({"id": "ixp-ams", "kind": "ixp", "region": "eu"});
    assert_eq!(
        cp.admin("POST", "/v1/admin/sites", Some(ixp.clone())).0,
        201
    );
    let isp = json!({"id": "isp-a", "kind": "isp", "region": "eu", "parent": "ixp-ams"});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(isp)).0, 201);
    let (s, e) = cp.admin("POST", "/v1/admin/sites", Some(ixp));
    assert_eq!((s, e["code"].as_str()), (409, Some("bad_request")));
    let orphan = json!({"id": "isp-b", "kind": "isp", "region": "eu", "parent": "nowhere"});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(orphan)).0, 404);

    let oca = json!({"id": "oca-1", "site": "isp-a", "url": "http://127.0.0.1:8080", "capacity_bps": 10_000_000_000u64});
    let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(oca));
    assert_eq!(s, 201);
    let credential = reg["credential"].as_str().unwrap().to_string();
    assert_eq!(credential.len(), 43, "32 random bytes, base64url");
    let (_, list) = cp.admin("GET", "/v1/admin/appliances", None);
    assert_eq!(list[0]["id"], "oca-1");
    assert!(
        !list.to_string().contains(&credential),
        "the credential is shown once only"
    );
    let wrong_site = json!({"id": "oca-2", "site": "nope", "url": "http://x", "capacity_bps": 1});
    assert_eq!(
        cp.admin("POST", "/v1/admin/appliances", Some(wrong_site)).0,
        404
    );

    // kill -9: nothing acknowledged is lost.
    drop(cp);
    let db_bytes = db_of(dir.path()).raw_bytes();
    assert!(
        !db_bytes
            .windows(credential.len())
            .any(|w| w == credential.as_bytes()),
        "stored only as a hash"
    );
    let cp = start(dir.path());
    let (_, sites) = cp.admin("GET", "/v1/admin/sites", None);
    assert_eq!(sites.as_array().unwrap().len(), 2);
    assert_eq!(sites[0]["id"], "isp-a", "listed by id");
    assert_eq!(sites[0]["parent"], "ixp-ams");
    assert_eq!(
        cp.admin("GET", "/v1/admin/appliances", None)
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn bad_credentials_and_bad_bodies_get_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let unauthorized = |token: Option<&str>| cp.req("GET", "/v1/admin/sites", None, token);
    let (s1, b1) = unauthorized(None);
    let (s2, b2) = unauthorized(Some("wrong"));
    let (s3, b3) = unauthorized(Some(""));
    assert_eq!((s1, s2, s3), (401, 401, 401));
    assert!(b1 == b2 && b2 == b3, "no hint of which part failed");
    assert_eq!(b1["code"], "unauthorized");

    let (s, e) = cp.admin(
        "POST",
        "/v1/admin/sites",
        Some(json!({"id": "a", "kind": "isp"})),
    );
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("region"), "{e}");
    let (s, e) = cp.admin(
        "POST",
        "/v1/admin/sites",
        Some(json!({"id": "a", "kind": "cdn", "region": "eu"})),
    );
    assert_eq!(s, 400);
    assert!(
        e["message"].as_str().unwrap().contains("kind")
            || e["message"].as_str().unwrap().contains("cdn"),
        "{e}"
    );
    let (s, e) = cp.admin(
        "POST",
        "/v1/admin/sites",
        Some(json!({"id": "../x", "kind": "isp", "region": "eu"})),
    );
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("id"), "{e}");
    let bad_url = json!({"id": "o", "site": "s", "url": "ftp://x", "capacity_bps": 1});
    assert_eq!(
        cp.admin("POST", "/v1/admin/appliances", Some(bad_url)).0,
        400
    );

    let raw = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/admin/sites", cp.addr))
        .bearer_auth(&cp.token)
        .header("content-type", "application/json")
        .body("{\"id\": ")
        .send()
        .unwrap();
    assert_eq!(raw.status(), 400);

    let huge = vec![b' '; (1 << 20) + 1];
    let big = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/admin/sites", cp.addr))
        .bearer_auth(&cp.token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .unwrap();
    assert_eq!(big.status(), 413);
    let e: Value = big.json().unwrap();
    assert_eq!(e["code"], "payload_too_large");

    let (s, e) = cp.admin("GET", "/v1/nothing", None);
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
}

/// A subscriber the view has not heard of (written by another replica, here straight into the
/// database) gets its token from storage; one that exists nowhere is 404.
#[test]
fn a_token_for_a_subscriber_only_storage_knows_is_issued_and_for_none_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let sql = "INSERT INTO subscribers (id, active, max_resolution, max_streams) \
               VALUES ('elsewhere', true, 1080, 2)";
    db_of(dir.path()).exec(sql, sql);
    let (s, t) = cp.admin(
        "POST",
        "/v1/admin/subscribers/elsewhere/tokens",
        Some(json!({"ttl_secs": 60})),
    );
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["subscriber"], "elsewhere");
    let (s, t) = cp.admin(
        "POST",
        "/v1/admin/subscribers/nobody/tokens",
        Some(json!({"ttl_secs": 60})),
    );
    assert_eq!(s, 404, "{t}");
}

/// A site and an appliance registered while the control plane steers join its fleet view in
/// place: the new appliance is steered to after its first report, and the view (every
/// appliance's routes and inventory) is not reloaded; a new IXP site, which renumbers its
/// region's sites, is the one registration that reloads it.
#[test]
fn registrations_join_the_fleet_view_without_reloading_it() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    licensed_world_keys(&cp);
    let steer = |ip: &str| cp.steer(ip, "t1_480p.mp4").0;
    assert_eq!(steer("198.51.100.7"), ["a1"]);
    let reloads = counter(&cp, "cp_fleet_reloads_total");

    let site =
        json!({"id": "isp-c", "kind": "isp", "region": "eu", "allowed_prefixes": ["192.0.2.0/24"]});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    register_reporting(&cp, "c1", "isp-c", &["192.0.2.0/24"], &["t1_480p.mp4"]);
    assert_eq!(steer("192.0.2.7"), ["c1"]);
    assert_eq!(steer("198.51.100.7"), ["a1"]);
    assert_eq!(counter(&cp, "cp_fleet_reloads_total"), reloads);

    let ixp = json!({"id": "ixp-x", "kind": "ixp", "region": "eu"});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(ixp)).0, 201);
    assert_eq!(steer("192.0.2.7"), ["c1"]);
    assert_eq!(counter(&cp, "cp_fleet_reloads_total"), reloads + 1);
}

/// An appliance registered behind this control plane's back (as another replica does, its
/// registration still on its way through the change feed) that reports here is placed in the
/// fleet view with that report, and steered to at once.
#[test]
fn a_report_from_an_appliance_the_view_has_not_heard_of_reaches_steering() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    licensed_world_keys(&cp);
    let credential = "registered-elsewhere-credential";
    let hash: String = sha2::Sha256::digest(credential.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let insert = |blob: String| {
        format!(
            "INSERT INTO appliances (id, site, url, capacity_bps, credential_sha256, created)
             VALUES ('a2', 'isp-a', 'http://a2.example:8080/', 1000000000, {blob}, 0);"
        )
    };
    db_of(dir.path()).exec(
        &insert(format!("X'{hash}'")),
        &insert(format!("decode('{hash}', 'hex')")),
    );
    let report = json!({
        "oca_id": "a2", "site": "isp-a", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": [],
        "inventory": {"kind": "full", "seq": 1, "content": ["t1_480p.mp4"]}
    });
    let (s, r) = cp.req(
        "POST",
        "/v1/appliances/a2/health",
        Some(report),
        Some(credential),
    );
    assert_eq!(s, 200, "{r}");
    let mut offered = cp.steer("198.51.100.7", "t1_480p.mp4").0;
    offered.sort();
    assert_eq!(offered, ["a1", "a2"]);
}
