//! S3 origins against a real S3-compatible server (`s3s-fs`, test_support::s3; skipped with a
//! message when it is not installed, failed when `OCA_REQUIRE_S3=1`): `ocactl content add --s3`
//! uploads (one PUT, multipart) and registers; the manifest hands out the presigned URL
//! verbatim, which the server honours with ranges; an expired one is refused and the next
//! manifest's works; unknown buckets are refused at registration.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_support::s3::S3Server;

fn report(id: &str) -> Value {
    json!({"oca_id": id, "site": "isp", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [{"path": "/d0", "state": "ok", "capacity_bytes": 1u64 << 40, "used_bytes": 0}],
        "prefixes": [], "inventory": {"kind": "full", "seq": 1, "content": []}})
}

/// A site with one appliance that has reported its disks; its credential.
fn appliance(cp: &Cp) -> String {
    let site = json!({"id": "isp", "kind": "isp", "region": "eu"});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    let (s, reg) = cp.admin(
        "POST",
        "/v1/admin/appliances",
        Some(json!({"id": "o1", "site": "isp", "url": "http://o1", "capacity_bps": 1})),
    );
    assert_eq!(s, 201, "{reg}");
    let cred = reg["credential"].as_str().unwrap().to_string();
    let (s, r) = cp.req(
        "POST",
        "/v1/appliances/o1/health",
        Some(report("o1")),
        Some(&cred),
    );
    assert_eq!(s, 200, "{r}");
    cred
}

/// The manifest's origin URL for `id`, and the manifest's ETag.
fn origin_url(cp: &Cp, cred: &str, id: &str) -> (String, String) {
    let resp = reqwest::blocking::Client::new()
        .get(format!("http://{}/v1/appliances/o1/manifest", cp.addr))
        .bearer_auth(cred)
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let etag = resp.headers()["etag"].to_str().unwrap().to_string();
    let m: Value = resp.json().unwrap();
    let entry = m["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["content_id"] == id)
        .unwrap_or_else(|| panic!("{id} not in {m}"));
    let origin = entry["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "origin")
        .unwrap_or_else(|| panic!("no origin source in {entry}"));
    (origin["url"].as_str().unwrap().to_string(), etag)
}

fn get(url: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let mut r = reqwest::blocking::Client::new().get(url);
    if let Some(range) = range {
        r = r.header("range", range);
    }
    let resp = r.send().unwrap();
    (resp.status().as_u16(), resp.bytes().unwrap().to_vec())
}

fn title(cp: &Cp, id: &str) {
    let t = json!({"id": id, "name": id, "countries": ["NL"]});
    assert_eq!(cp.admin("POST", "/v1/admin/titles", Some(t)).0, 201);
}

#[test]
fn ocactl_uploads_to_s3_and_the_manifest_carries_a_presigned_url_the_store_honours() {
    let Some(s3) = S3Server::start(&["titles"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cp.toml");
    std::fs::write(&config, s3.config_table("titles", dir.path(), "")).unwrap();
    let config_arg = config.display().to_string();
    let cp = start_with(dir.path(), &["--config", &config_arg]);
    title(&cp, "t1");
    let cred = appliance(&cp);

    // 12 MiB and a bit in 5 MiB parts: a multipart upload of three parts, under a key whose
    // path needs encoding (a space, a non-ASCII letter).
    let big = test_support::content_bytes("s3-big", (12 << 20) + 123);
    let big_file = dir.path().join("big_1080p.mp4");
    std::fs::write(&big_file, &big).unwrap();
    let add = |file: &std::path::Path, target: &str, title: &str| {
        ocactl(
            &cp,
            &[
                "content",
                "add",
                &file.display().to_string(),
                "--title",
                title,
                "--resolution",
                "1080",
                "--bitrate-kbps",
                "5000",
                "--s3",
                target,
                "--s3-config",
                &config_arg,
                "--s3-part-mib",
                "5",
            ],
        )
    };
    let (ok, out, err) = add(&big_file, "s3://titles/dir one/é/", "t1");
    assert!(ok, "{err}");
    let registered: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(registered["origin"], "s3://titles/dir one/é/big_1080p.mp4");
    assert_eq!(registered["size"], big.len());
    assert_eq!(
        registered["sha256"],
        oca_protocol::manifest::hex(&Sha256::digest(&big))
    );
    assert_eq!(
        std::fs::read(s3.object("titles", "dir one/é/big_1080p.mp4")).unwrap(),
        big
    );
    assert!(s3.log().contains("CompleteMultipartUpload"), "{}", s3.log());
    // A small file in one PUT, under a key of its own.
    let small = test_support::content_bytes("s3-small", 100_000);
    let small_file = dir.path().join("small_480p.mp4");
    std::fs::write(&small_file, &small).unwrap();
    let (ok, _, err) = add(&small_file, "s3://titles/small.mp4", "t1");
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(s3.object("titles", "small.mp4")).unwrap(),
        small
    );

    // An object already there is not overwritten; a refused registration deletes the upload.
    let (ok, _, err) = add(&small_file, "s3://titles/small.mp4", "t1");
    assert!(!ok && err.contains("already exists"), "{err}");
    let orphan = dir.path().join("orphan_480p.mp4");
    std::fs::write(&orphan, b"orphan").unwrap();
    let (ok, _, err) = add(&orphan, "s3://titles/orphan.mp4", "no-such-title");
    assert!(!ok, "{err}");
    assert!(!s3.object("titles", "orphan.mp4").exists());

    // The manifest's origin is the presigned URL, verbatim: nothing of ours appended.
    let (url, etag) = origin_url(&cp, &cred, "big_1080p.mp4");
    let prefix = format!(
        "{}/titles/dir%20one/%C3%A9/big_1080p.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&",
        s3.endpoint
    );
    assert!(url.starts_with(&prefix), "{url}");
    assert!(
        url.contains("&X-Amz-SignedHeaders=host&X-Amz-Signature="),
        "{url}"
    );
    assert!(!url.contains("&e=") && !url.contains("&s="), "{url}");
    // Stable: the same manifest version at the next poll.
    assert_eq!(origin_url(&cp, &cred, "big_1080p.mp4"), (url.clone(), etag));
    // The store serves it whole and by ranges (the Range header is not signed).
    assert_eq!(get(&url, None), (200, big.clone()));
    let from = 5_000_123;
    assert_eq!(
        get(&url, Some(&format!("bytes={from}-"))),
        (206, big[from..].to_vec())
    );
    // Anything appended (as the control plane used to do) breaks the signature.
    assert_eq!(get(&format!("{url}&e=1"), None).0, 403);
    let (small_url, _) = origin_url(&cp, &cred, "small_480p.mp4");
    assert_eq!(get(&small_url, None), (200, small));
}

#[test]
fn an_expired_presigned_url_is_refused_and_the_next_manifest_carries_a_fresh_one() {
    let Some(s3) = S3Server::start(&["titles"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cp.toml");
    // Two seconds: X-Amz-Date moves every second (a quarter, at least one).
    let table = s3.config_table("titles", dir.path(), "url_lifetime_secs = 2");
    std::fs::write(&config, table).unwrap();
    let cp = start_with(dir.path(), &["--config", &config.display().to_string()]);
    title(&cp, "t1");
    let cred = appliance(&cp);
    let body = test_support::content_bytes("exp", 50_000);
    std::fs::write(s3.object("titles", "exp.mp4"), &body).unwrap();
    let c = json!({"id": "exp_480p.mp4", "title": "t1", "resolution": 480, "bitrate_kbps": 900,
        "size": body.len(), "sha256": oca_protocol::manifest::hex(&Sha256::digest(&body)),
        "content_type": "video/mp4", "origin": "s3://titles/exp.mp4"});
    let (s, r) = cp.admin("POST", "/v1/admin/content", Some(c));
    assert_eq!(s, 201, "{r}");
    let (old, old_etag) = origin_url(&cp, &cred, "exp_480p.mp4");
    assert_eq!(get(&old, None), (200, body.clone()));
    std::thread::sleep(Duration::from_millis(3_100));
    let (status, answer) = get(&old, None);
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&answer));
    assert!(
        String::from_utf8_lossy(&answer).contains("expired"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
    let (fresh, etag) = origin_url(&cp, &cred, "exp_480p.mp4");
    assert_ne!(
        (&fresh, &etag),
        (&old, &old_etag),
        "re-presigned: a new version"
    );
    assert_eq!(get(&fresh, None), (200, body));
}

#[test]
fn content_naming_an_unconfigured_bucket_or_a_bad_s3_origin_is_refused() {
    // No server needed: the check is the control plane's own.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cp.toml");
    let table = test_support::s3::table("http://127.0.0.1:9", "titles", dir.path(), "");
    std::fs::write(&config, table).unwrap();
    let cp = start_with(dir.path(), &["--config", &config.display().to_string()]);
    title(&cp, "t1");
    let content = |origin: &str| {
        json!({"id": "c_480p.mp4", "title": "t1", "resolution": 480, "bitrate_kbps": 900,
            "size": 1, "sha256": "a".repeat(64), "content_type": "video/mp4", "origin": origin})
    };
    let (s, r) = cp.admin(
        "POST",
        "/v1/admin/content",
        Some(content("s3://other/c.mp4")),
    );
    assert_eq!(s, 400, "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("\"other\" is not configured"),
        "{r}"
    );
    for bad in ["s3://titles", "s3://titles/a/../b", "s3://Titles/a"] {
        let (s, r) = cp.admin("POST", "/v1/admin/content", Some(content(bad)));
        assert_eq!(s, 400, "{bad}: {r}");
    }
    let (s, r) = cp.admin(
        "POST",
        "/v1/admin/content",
        Some(content("s3://titles/c.mp4")),
    );
    assert_eq!(s, 201, "{r}");
    // ocactl refuses a bucket its file has no table for, before uploading anything.
    let file = dir.path().join("x_480p.mp4");
    std::fs::write(&file, b"x").unwrap();
    let (ok, _, err) = ocactl(
        &cp,
        &[
            "content",
            "add",
            &file.display().to_string(),
            "--title",
            "t1",
            "--resolution",
            "480",
            "--bitrate-kbps",
            "900",
            "--s3",
            "s3://other/x.mp4",
            "--s3-config",
            &config.display().to_string(),
        ],
    );
    assert!(
        !ok && err.contains("no [[s3]] table for bucket \"other\""),
        "{err}"
    );
    // A secret key file others may read stops the control plane at start, with the reason.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.path().join("titles.secret"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("other.db"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("others may read it"),
        "{err}"
    );
    assert!(!err.contains(test_support::s3::SECRET_KEY), "{err}");
}
