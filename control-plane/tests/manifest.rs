//! Fill manifests against the real binary: credentials, nothing before disks are known, 304 by
//! ETag, sources ranked with the origin's signed fill URL, eviction by title removal.

mod common;

use common::*;
use oca_protocol::manifest::{Manifest, SourceKind};
use serde_json::json;

const SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn report(id: &str, capacity: u64, content: &[&str]) -> serde_json::Value {
    json!({"oca_id": id, "site": "isp", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [{"path": "/d0", "state": "ok", "capacity_bytes": capacity, "used_bytes": 0}],
        "prefixes": [], "inventory": {"kind": "full", "seq": 1, "content": content}})
}

fn get_manifest(
    cp: &Cp,
    id: &str,
    cred: &str,
    etag: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut r = reqwest::blocking::Client::new()
        .get(format!("http://{}/v1/appliances/{id}/manifest", cp.addr))
        .bearer_auth(cred);
    if let Some(e) = etag {
        r = r.header("If-None-Match", e);
    }
    let resp = r.send().unwrap();
    let status = resp.status().as_u16();
    let etag = resp
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string());
    (status, etag, resp.text().unwrap())
}

#[test]
fn manifests_list_planned_files_with_ranked_sources_and_answer_304_when_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(dir.path(), &["--fill-escalation", "0"]);
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/sites",
            Some(json!({"id": "isp", "kind": "isp", "region": "eu"}))
        )
        .0,
        201
    );
    let mut creds = Vec::new();
    for id in ["a1", "a2"] {
        let a = json!({"id": id, "site": "isp", "url": format!("http://{id}.example"), "capacity_bps": 1_000_000_000u64});
        let (s, r) = cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201);
        creds.push(r["credential"].as_str().unwrap().to_string());
    }
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/titles",
            Some(json!({"id": "t1", "name": "t1", "countries": ["NL"]}))
        )
        .0,
        201
    );
    for (id, size) in [("c1.mp4", 1000), ("c2.mp4", 2000)] {
        let c = json!({"id": id, "title": "t1", "resolution": 1080, "bitrate_kbps": 1, "size": size, "sha256": SHA, "content_type": "video/mp4", "origin": "embedded"});
        assert_eq!(cp.admin("POST", "/v1/admin/content", Some(c)).0, 201);
    }
    // Not before the appliance has said what disks it has, not with another's credential.
    assert_eq!(get_manifest(&cp, "a1", &creds[0], None).0, 409);
    assert_eq!(get_manifest(&cp, "a1", &creds[1], None).0, 401);
    assert_eq!(get_manifest(&cp, "a9", &creds[1], None).0, 401);
    let (s, r) = cp.req(
        "POST",
        "/v1/appliances/a1/health",
        Some(report("a1", 1 << 30, &[])),
        Some(&creds[0]),
    );
    assert_eq!(s, 200, "{r}");
    let (s, r) = cp.req(
        "POST",
        "/v1/appliances/a2/health",
        Some(report("a2", 1 << 30, &["c1.mp4", "c2.mp4"])),
        Some(&creds[1]),
    );
    assert_eq!(s, 200, "{r}");
    let version = r["manifest_version"].as_u64().unwrap();
    assert_ne!(version, 0);
    let (s, etag, body) = get_manifest(&cp, "a2", &creds[1], None);
    assert_eq!(s, 200, "{body}");
    let m: Manifest = serde_json::from_str(&body).unwrap();
    assert_eq!(
        m.version, version,
        "the health reply names the manifest's version"
    );
    assert_eq!(etag.as_deref(), Some(format!("\"{version}\"").as_str()));
    let (s, _, body) = get_manifest(&cp, "a2", &creds[1], etag.as_deref());
    assert_eq!((s, body.as_str()), (304, ""));
    // a1 and a2 share the site's two files (one copy each: nothing has been played).
    let (_, _, body) = get_manifest(&cp, "a1", &creds[0], None);
    let m1: Manifest = serde_json::from_str(&body).unwrap();
    let mut all: Vec<&str> = m
        .entries
        .iter()
        .chain(&m1.entries)
        .map(|e| e.content_id.as_str())
        .collect();
    all.sort();
    assert_eq!(all, ["c1.mp4", "c2.mp4"]);
    for e in &m1.entries {
        // a2 holds everything: it is a1's peer source, the origin comes last with a fill URL.
        assert_eq!(e.sources[0].kind, SourceKind::Peer, "{e:?}");
        assert_eq!(e.sources[0].oca_id.as_deref(), Some("a2"));
        assert!(e.sources[0]
            .url
            .starts_with(&format!("http://a2.example/c/{}?e=", e.content_id)));
        let origin = e.sources.last().unwrap();
        assert_eq!(origin.kind, SourceKind::Origin);
        assert!(
            origin.url.contains(&format!("/origin/{}?e=", e.content_id)),
            "{}",
            origin.url
        );
        assert_eq!((e.size > 0, e.sha256.as_str()), (true, SHA));
    }
    // Removing the title empties the manifests (the agents then delete the files).
    let resp = reqwest::blocking::Client::new()
        .delete(format!("http://{}/v1/admin/titles/t1", cp.addr))
        .bearer_auth(&cp.token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 204);
    let (s, _, body) = get_manifest(&cp, "a2", &creds[1], etag.as_deref());
    assert_eq!(s, 200, "a new version");
    assert!(serde_json::from_str::<Manifest>(&body)
        .unwrap()
        .entries
        .is_empty());
    let resp = reqwest::blocking::Client::new()
        .delete(format!("http://{}/v1/admin/titles/t1", cp.addr))
        .bearer_auth(&cp.token)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}
