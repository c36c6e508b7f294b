//! ocactl against a running control plane.

mod common;

use std::process::Command;

use common::*;

#[test]
fn ocactl_builds_a_catalog_and_ingests_content() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let origin = dir.path().join("cp.db.origin");
    let ok = |args: &[&str]| {
        let (ok, out, err) = ocactl(&cp, args);
        assert!(ok, "{args:?}: {err}");
        out
    };
    ok(&[
        "site",
        "add",
        "isp-a",
        "--kind",
        "isp",
        "--region",
        "eu",
        "--allowed-prefix",
        "192.0.2.0/24",
    ]);
    ok(&["site", "allow", "isp-a", "192.0.2.0/24", "2001:db8::/32"]);
    assert!(ok(&["site", "list"]).contains("2001:db8::/32"));
    let reg = ok(&[
        "appliance",
        "add",
        "oca-1",
        "--site",
        "isp-a",
        "--url",
        "http://oca-1",
        "--capacity-bps",
        "1000",
    ]);
    assert!(reg.contains("\"credential\""), "{reg}");
    ok(&[
        "zone",
        "add",
        "192.0.2.0/24",
        "--site",
        "isp-a",
        "--country",
        "NL",
    ]);
    ok(&[
        "title",
        "add",
        "t1",
        "--name",
        "A film",
        "--countries",
        "NL,BE",
    ]);
    ok(&[
        "subscriber",
        "add",
        "s1",
        "--max-resolution",
        "1080",
        "--max-streams",
        "2",
    ]);
    let t = ok(&["subscriber", "token", "s1", "--ttl-secs", "60"]);
    assert!(
        t.contains("\"token\": \"v1.") && t.contains("\"expires\""),
        "{t}"
    );
    let src = dir.path().join("t1_1080p.mp4");
    std::fs::write(&src, b"hello video").unwrap();
    let c = ok(&[
        "content",
        "add",
        src.to_str().unwrap(),
        "--title",
        "t1",
        "--resolution",
        "1080",
        "--bitrate-kbps",
        "5800",
        "--origin-dir",
        origin.to_str().unwrap(),
    ]);
    // sha256("hello video"), computed independently with sha256sum.
    assert!(
        c.contains("ac8abc587fd48b3bb8d48c5b4e6d2650d231276d97c1d25054b3e8a8859817e1"),
        "{c}"
    );
    assert!(c.contains("\"size\": 11"), "{c}");
    assert_eq!(
        std::fs::read(origin.join("t1_1080p.mp4")).unwrap(),
        b"hello video"
    );
    let titles = ok(&["title", "list"]);
    assert!(
        titles.contains("\"BE\"") && titles.contains("\"NL\""),
        "{titles}"
    );
    assert!(ok(&["keys", "rotate"]).contains("\"current\": \"k"));
    // Refusals are clear and change nothing.
    let (ok2, _, err) = ocactl(
        &cp,
        &[
            "content",
            "add",
            src.to_str().unwrap(),
            "--id",
            "t1_480p.mp4",
            "--title",
            "nope",
            "--resolution",
            "480",
            "--bitrate-kbps",
            "1",
            "--origin-dir",
            origin.to_str().unwrap(),
        ],
    );
    assert!(!ok2 && err.contains("title nope"), "{err}");
    assert!(
        !origin.join("t1_480p.mp4").exists(),
        "a refused registration leaves no file behind"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ocactl"))
        .args([
            "--url",
            &format!("http://{}", cp.addr),
            "--token",
            "wrong",
            "site",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Over HTTPS ocactl trusts the system's CA store (here `SSL_CERT_FILE`, which the store's
/// loader reads first) as well as a CA file given with `--ca`; a certificate neither vouches for
/// is refused.
#[test]
fn ocactl_trusts_the_systems_ca_store_and_a_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cp, cert, _key) = start_tls(dir.path());
    let empty = dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let run = |store: &std::path::Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ocactl"))
            .env("SSL_CERT_FILE", store)
            .env_remove("SSL_CERT_DIR")
            .args([
                "--url",
                &format!("https://{}", cp.addr),
                "--token",
                &cp.token,
            ])
            .args(extra)
            .args(["site", "list"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&empty, &[]);
    assert!(!ok, "a certificate nobody vouches for is refused");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let (ok, err) = run(&cert, &[]);
    assert!(ok, "the system store's CA is trusted: {err}");
    let (ok, err) = run(&empty, &["--ca", cert.to_str().unwrap()]);
    assert!(ok, "--ca is trusted: {err}");
}
