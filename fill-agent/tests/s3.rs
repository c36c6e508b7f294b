//! Filling from an S3-compatible origin: the lab of `fill.rs` (a real control plane, oca-daemons
//! and fill agents on loopback) with its titles in a real S3 server (`s3s-fs`,
//! test_support::s3; skipped with a message when it is not installed, failed when
//! `OCA_REQUIRE_S3=1`). The agents fetch the manifest's presigned URLs as they are.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::lab::*;
use common::{sha, wait_until};
use serde_json::json;
use test_support::content_bytes;
use test_support::s3::S3Server;

/// Writes the control plane's configuration file with `table` into `dir`; its path.
fn cp_config(dir: &Path, table: &str) -> String {
    let path = dir.join("cp.toml");
    std::fs::write(&path, table).unwrap();
    path.display().to_string()
}

fn add_title(cp: &Cp, id: &str) {
    let t = json!({"id": id, "name": id, "countries": ["NL"]});
    assert_eq!(cp.admin("POST", "/v1/admin/titles", Some(t)).0, 201);
}

#[test]
fn ocactl_uploads_and_the_ixp_appliance_fills_byte_exact_resuming_with_range_after_kill() {
    let Some(s3) = S3Server::start(&["titles"]) else {
        return;
    };
    let cfg_dir = tempfile::tempdir().unwrap();
    let config = cp_config(
        cfg_dir.path(),
        &s3.config_table("titles", cfg_dir.path(), ""),
    );
    let ocactl = test_support::cargo_bins(false, &[("control-plane", "ocactl")])["ocactl"].clone();
    let big = content_bytes("s3-fill", 40 << 20);
    let file = cfg_dir.path().join("big_1080p.mp4");
    std::fs::write(&file, &big).unwrap();
    // 160 Mbit/s: the file takes about two seconds, long enough to interrupt. Two copies in the
    // ISP site, which waits for its parent's copy rather than going to the origin.
    let mut lab = lab(
        &[
            "--config",
            &config,
            "--fill-rate-mbps",
            "160",
            "--fill-escalation",
            "600",
            "--fill-copies",
            "2",
            "--fill-hot-fraction",
            "1",
        ],
        &["--fill-now"],
        |lab| {
            add_title(&lab.cp, "t1");
            let out = std::process::Command::new(&ocactl)
                .args(["--url", &lab.cp.url, "--token", &lab.cp.token])
                .args(["content", "add"])
                .arg(&file)
                .args([
                    "--title",
                    "t1",
                    "--resolution",
                    "1080",
                    "--bitrate-kbps",
                    "5000",
                ])
                .args(["--s3", "s3://titles/films/", "--s3-config", &config])
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "ocactl: {err}");
            // Played, so the ISP site plans it too.
            lab.cp.demand(&["t1"]);
        },
    );
    assert_eq!(
        std::fs::read(s3.object("titles", "films/big_1080p.mp4")).unwrap(),
        big
    );

    let part = lab.app("x1").store().join("tmp/big_1080p.mp4.part");
    wait_until(
        "x1 is part way through the file",
        Duration::from_secs(60),
        || std::fs::metadata(&part).is_ok_and(|m| m.len() > (8 << 20)),
    );
    let x1 = lab.app_mut("x1");
    x1.agent.as_mut().unwrap().child.kill().unwrap(); // SIGKILL
    x1.agent.as_mut().unwrap().child.wait().unwrap();
    let left = std::fs::metadata(&part).unwrap().len();
    assert!(
        left > 0 && left < big.len() as u64,
        "a partial file: {left}"
    );
    let bin = lab.bins["fill-agent"].clone();
    let started = Instant::now();
    lab.app_mut("x1").start_agent(&bin);
    wait_until("x1 finishes the file", Duration::from_secs(60), || {
        lab.app("x1").holds("big_1080p.mp4")
    });
    let resumed_in = started.elapsed();
    assert_eq!(
        std::fs::read(lab.app("x1").object("big_1080p.mp4")).unwrap(),
        big
    );
    assert!(
        lab.app("x1").agent_log().contains("resuming with Range"),
        "{}",
        lab.app("x1").agent_log()
    );
    // The store saw the same presigned URL with the rest asked for by Range: the bytes already
    // there were kept.
    assert!(
        s3.log().contains(&format!("\"range\": \"bytes={left}-\"")),
        "{}",
        s3.log()
    );
    let rest = (big.len() as u64 - left) as f64;
    assert!(
        resumed_in.as_secs_f64() >= rest / 20e6 * 0.7,
        "{rest} bytes in {resumed_in:?} under a 160 Mbit/s cap: more than the rest was fetched?"
    );
    // The ISP site fills from the IXP appliance and from each other, not from the bucket:
    // x1's two requests are the only ones the store saw.
    for a in ["a1", "a2"] {
        let end = Instant::now() + Duration::from_secs(60);
        while !lab.app(a).holds("big_1080p.mp4") {
            assert!(
                Instant::now() < end,
                "{a} does not hold the file:\n{}\ncontrol plane:\n{}",
                lab.app(a).agent_log(),
                lab.cp.proc.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let gets = s3
        .log()
        .matches("method: GET, uri: /titles/films/big_1080p.mp4?")
        .count();
    assert_eq!(gets, 2, "{}", s3.log());
}

#[test]
fn an_expired_presigned_url_is_refused_by_the_store_and_renewed_through_a_new_manifest() {
    // The store's address is fixed up front: it starts only once the agent's URL has expired.
    let port = test_support::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cfg_dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    // Four seconds: X-Amz-Date moves every second; a URL lives three to four.
    let table =
        test_support::s3::table(&endpoint, "titles", cfg_dir.path(), "url_lifetime_secs = 4");
    let config = cp_config(cfg_dir.path(), &table);
    let body = content_bytes("s3-expiry", 3 << 20);
    std::fs::create_dir_all(root.path().join("titles")).unwrap();
    std::fs::write(root.path().join("titles/e.mp4"), &body).unwrap();
    if test_support::s3::binary().is_none() {
        return;
    }
    let cp_extra = ["--config", config.as_str()];
    let mut lab = lab(&cp_extra, &["--fill-now"], |lab| {
        add_title(&lab.cp, "t1");
        let c = json!({"id": "e_480p.mp4", "title": "t1", "resolution": 480, "bitrate_kbps": 900,
            "size": body.len(), "sha256": sha(&body), "content_type": "video/mp4",
            "origin": "s3://titles/e.mp4"});
        let (s, r) = lab.cp.admin("POST", "/v1/admin/content", Some(c));
        assert_eq!(s, 201, "{r}");
    });
    // x1 has its manifest and tries the store, which is not up yet.
    wait_until("x1 tried the store", Duration::from_secs(30), || {
        lab.app("x1")
            .agent_log()
            .contains("cannot reach the fill source")
    });
    // The control plane goes away: x1 keeps filling from the manifest it holds, whose URL
    // expires meanwhile; then the store comes up and refuses it.
    let cp = &mut lab.cp.proc.child;
    cp.kill().unwrap();
    cp.wait().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let s3 = S3Server::start_in(root.path(), &["titles"], port).expect("the binary was found");
    wait_until(
        "the store refused the expired URL",
        Duration::from_secs(30),
        || {
            s3.log().contains("Request has expired")
                && lab.app("x1").agent_log().contains("http_403")
        },
    );
    assert!(!lab.app("x1").holds("e_480p.mp4"));
    // Back at the same address, the control plane re-presigns: the version changed, x1
    // fetches the new manifest at its next report and fills with the fresh URL.
    let bin = lab.bins["control-plane"].clone();
    lab.cp = start_cp_at(&bin, lab.dir.path(), port_of(&lab.cp.url), &cp_extra);
    wait_until("x1 holds the file", Duration::from_secs(60), || {
        lab.app("x1").holds("e_480p.mp4")
    });
    assert_eq!(
        std::fs::read(lab.app("x1").object("e_480p.mp4")).unwrap(),
        body
    );
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().unwrap().parse().unwrap()
}
