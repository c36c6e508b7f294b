//! ocactl against a running control plane (and, for signed URLs, a real oca-daemon): the
//! catalog built with it, CA trust, tables and `--json` for every listing, `show` and `delete`,
//! `steer --explain`, `sign-url`, and `content add` from an HTTP origin.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::Command;
use std::time::Duration;

use common::*;
use oca_protocol::keys::{Key, Keyring};
use oca_protocol::signing::{verify, Scope};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_support::proc::Proc;

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
        titles
            .lines()
            .any(|l| l.starts_with("t1 ") && l.ends_with("BE,NL")),
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
    let (ok, err) = run(&empty, &["--ca-file", cert.to_str().unwrap()]);
    assert!(ok, "--ca-file is --ca: {err}");
}

/// Runs ocactl; its standard output, failing the test when it fails.
fn ok(cp: &Cp, args: &[&str]) -> String {
    let (ok, out, err) = ocactl(cp, args);
    assert!(ok, "ocactl {args:?}: {err}");
    out
}

/// A table's rows (the header's excluded), each as header → cell. Columns start where the
/// header's names do (names are two or more spaces apart); every row must have a cell starting
/// right there, after a blank: the columns are aligned.
fn table(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let head: Vec<char> = lines.next().expect("a header row").chars().collect();
    let mut starts = vec![0];
    for i in 2..head.len() {
        if head[i] != ' ' && head[i - 1] == ' ' && head[i - 2] == ' ' {
            starts.push(i);
        }
    }
    let names: Vec<String> = (0..starts.len())
        .map(|c| {
            let end = starts.get(c + 1).copied().unwrap_or(head.len());
            head[starts[c]..end]
                .iter()
                .collect::<String>()
                .trim()
                .to_string()
        })
        .collect();
    assert!(
        names.iter().all(|n| n == &n.to_uppercase()),
        "a header row: {text}"
    );
    lines
        .map(|line| {
            let row: Vec<char> = line.chars().collect();
            let mut cells = BTreeMap::new();
            for (c, name) in names.iter().enumerate() {
                let (start, end) = (starts[c], starts.get(c + 1).copied().unwrap_or(row.len()));
                assert!(
                    start < row.len() && row[start] != ' ' && (start == 0 || row[start - 1] == ' '),
                    "column {name} not aligned in {line:?}:\n{text}"
                );
                let cell: String = row[start..end.min(row.len())].iter().collect();
                cells.insert(name.clone(), cell.trim().to_string());
            }
            cells
        })
        .collect()
}

/// The row whose cells include every `want` (header, cell).
fn row_with<'t>(
    rows: &'t [BTreeMap<String, String>],
    want: &[(&str, &str)],
) -> Option<&'t BTreeMap<String, String>> {
    rows.iter().find(|r| {
        want.iter()
            .all(|(k, v)| r.get(*k).map(String::as_str) == Some(*v))
    })
}

/// Every listing prints a table (a header, aligned columns, the cells an operator scans) and,
/// with `--json` (before or after the subcommand), the API's answer as it came.
#[test]
fn listings_print_aligned_tables_and_the_apis_json_with_json() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    licensed_world(&cp);
    ok(&cp, &["org", "add", "isp-a", "--name", "ISP A"]);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "a long operator password\n").unwrap();
    ok(
        &cp,
        &[
            "user",
            "add",
            "op@example",
            "--operator",
            "--password-file",
            pw.to_str().unwrap(),
        ],
    );
    type Want<'a> = &'a [(&'a str, &'a str)];
    let cases: &[(&[&str], &str, Want)] = &[
        (
            &["site", "list"],
            "/v1/admin/sites",
            &[
                ("ID", "isp-a"),
                ("KIND", "isp"),
                ("REGION", "eu"),
                ("PARENT", "-"),
            ],
        ),
        (
            &["appliances", "list"],
            "/v1/admin/appliances",
            &[
                ("ID", "a1"),
                ("SITE", "isp-a"),
                ("STATUS", "ok"),
                ("SERVING", "serving"),
                ("CAPACITY", "1.0 Gbit/s"),
            ],
        ),
        (
            &["zone", "list"],
            "/v1/admin/zones",
            &[
                ("PREFIX", "198.51.100.0/24"),
                ("SITE", "isp-a"),
                ("COUNTRY", "NL"),
            ],
        ),
        (
            &["title", "list"],
            "/v1/admin/titles",
            &[("ID", "t1"), ("NAME", "t1"), ("COUNTRIES", "NL")],
        ),
        (
            &["content", "list"],
            "/v1/admin/content",
            &[
                ("ID", "t1_480p.mp4"),
                ("TITLE", "t1"),
                ("RES", "480p"),
                ("BITRATE", "2400 kbit/s"),
                ("SIZE", "1000 B"),
                ("ORIGIN", "embedded"),
            ],
        ),
        (
            &["subscriber", "list"],
            "/v1/admin/subscribers",
            &[
                ("ID", "s1"),
                ("ACTIVE", "yes"),
                ("MAX RES", "1080p"),
                ("MAX STREAMS", "4"),
            ],
        ),
        (
            &["org", "list"],
            "/v1/admin/orgs",
            &[("ID", "isp-a"), ("NAME", "ISP A")],
        ),
        (
            &["user", "list"],
            "/v1/admin/users",
            &[("LOGIN", "op@example"), ("ROLE", "operator"), ("ORG", "-")],
        ),
    ];
    for (args, path, want) in cases {
        let text = ok(&cp, args);
        let rows = table(&text);
        assert!(
            row_with(&rows, want).is_some(),
            "{args:?}: no row {want:?} in\n{text}"
        );
        let (s, api) = cp.admin("GET", path, None);
        assert_eq!(s, 200);
        let after: Value = serde_json::from_str(&ok(&cp, &[*args, &["--json"]].concat())).unwrap();
        assert_eq!(after, api, "{args:?} --json is the API's answer");
        let before: Value = serde_json::from_str(&ok(&cp, &[&["--json"], *args].concat())).unwrap();
        assert_eq!(before, api, "--json {args:?}");
    }
    let apps = table(&ok(&cp, &["appliance", "list"]));
    let a1 = row_with(&apps, &[("ID", "a1")]).unwrap();
    assert!(
        a1["LAST REPORT"].ends_with("s ago"),
        "reported a moment ago: {a1:?}"
    );
    // Listings with nothing in them yet: the header alone, and `[]` as JSON.
    for (args, head) in [
        (
            &["bgp", "sessions"][..],
            "APPLIANCE  SITE  NEIGHBOR  PEER AS  STATE",
        ),
        (
            &["bgp", "inconsistent"][..],
            "SITE  PREFIX  HEARD BY  NOT HEARD BY",
        ),
        (
            &["issues", "--all"][..],
            "ID  SEVERITY  KIND  APPLIANCE  SITE",
        ),
        (&["maintenance", "list"][..], "ID  TARGET  PHASE"),
    ] {
        let text = ok(&cp, args);
        assert!(
            text.starts_with(head) && text.lines().count() == 1,
            "{args:?}: {text}"
        );
        let v: Value = serde_json::from_str(&ok(&cp, &[args, &["--json"]].concat())).unwrap();
        assert_eq!(v, json!([]), "{args:?}");
    }
    let routes = ok(&cp, &["bgp", "routes"]);
    assert!(
        routes.starts_with("PREFIX  APPLIANCE  SITE  BEST  SOURCE"),
        "{routes}"
    );
    let v: Value = serde_json::from_str(&ok(&cp, &["bgp", "routes", "--json"])).unwrap();
    assert_eq!(v, json!({"routes": [], "more": false}));
    // The traffic history: a bucket for a1's report.
    let history = table(&ok(&cp, &["history", "--appliance", "a1"]));
    assert_eq!(history.len(), 1, "{history:?}");
    assert_eq!(history[0]["REPORTS"], "1");
    let v: Value =
        serde_json::from_str(&ok(&cp, &["history", "--appliance", "a1", "--json"])).unwrap();
    assert_eq!(v["buckets"].as_array().unwrap().len(), 1, "{v}");
    // Commands that change something still answer with the API's JSON.
    let added: Value = serde_json::from_str(&ok(
        &cp,
        &["zone", "add", "203.0.113.0/24", "--country", "BE"],
    ))
    .unwrap();
    assert_eq!(added["country"], "BE");
}

/// `show` gathers an item and what belongs to it; `title delete` asks (refuses without a
/// terminal or --yes), deletes, and a second delete is the API's 404.
#[test]
fn show_and_delete_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    licensed_world(&cp);

    let text = ok(&cp, &["appliance", "show", "a1"]);
    for line in [
        "site         isp-a",
        "status       ok",
        "serving      serving",
        "inventory: 1 file, 1000 B",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    let inventory = text.split("inventory: ").nth(1).unwrap();
    let inv = table(inventory.split_once('\n').unwrap().1);
    assert!(
        row_with(
            &inv,
            &[("CONTENT", "t1_480p.mp4"), ("TITLE", "t1"), ("RES", "480p")]
        )
        .is_some(),
        "{text}"
    );
    let v: Value = serde_json::from_str(&ok(&cp, &["appliance", "show", "a1", "--json"])).unwrap();
    assert_eq!(v["appliance"]["id"], "a1");
    assert_eq!(v["inventory"], json!(["t1_480p.mp4"]));
    let inv = table(&ok(&cp, &["appliances", "inventory", "a1"]));
    assert_eq!(inv.len(), 1);
    assert_eq!(inv[0]["SIZE"], "1000 B");
    let (ok_, _, err) = ocactl(&cp, &["appliance", "show", "nope"]);
    assert!(!ok_ && err.contains("no appliance nope"), "{err}");

    let text = ok(&cp, &["site", "show", "isp-a"]);
    assert!(
        text.starts_with("id                isp-a\nkind              isp\n"),
        "{text}"
    );
    assert!(
        text.contains("appliances: 1\n") && text.contains("198.51.100.0/24  NL"),
        "{text}"
    );
    let v: Value = serde_json::from_str(&ok(&cp, &["site", "show", "isp-a", "--json"])).unwrap();
    assert_eq!(v["zones"][0]["prefix"], "198.51.100.0/24");
    assert_eq!(v["appliances"][0]["id"], "a1");

    ok(
        &cp,
        &[
            "title",
            "add",
            "t2",
            "--name",
            "Second",
            "--countries",
            "NL",
        ],
    );
    let (s, _) = cp.admin(
        "POST",
        "/v1/admin/content",
        Some(json!({"id": "t2_720p.mp4", "title": "t2", "resolution": 720, "bitrate_kbps": 3000,
                    "size": 2048, "sha256": "1".repeat(64), "content_type": "video/mp4", "origin": "embedded"})),
    );
    assert_eq!(s, 201);
    let origin_copy = dir.path().join("cp.db.origin/t2_720p.mp4");
    std::fs::create_dir_all(origin_copy.parent().unwrap()).unwrap();
    std::fs::write(&origin_copy, [0u8; 2048]).unwrap();
    let text = ok(&cp, &["title", "show", "t2"]);
    assert!(
        text.starts_with("id         t2\nname       Second\n"),
        "{text}"
    );
    assert!(text.contains("content: 1 file, 2.0 KiB"), "{text}");
    let v: Value = serde_json::from_str(&ok(&cp, &["title", "show", "t2", "--json"])).unwrap();
    assert_eq!(v["title"]["name"], "Second");
    assert_eq!(v["content"][0]["id"], "t2_720p.mp4");

    // Without a terminal to ask on, nothing is deleted unless --yes says so.
    let (ok_, _, err) = ocactl(&cp, &["title", "delete", "t2"]);
    assert!(
        !ok_ && err.contains("1 content file") && err.contains("--yes"),
        "{err}"
    );
    assert!(ok(&cp, &["title", "list"]).contains("Second"));
    assert_eq!(
        ok(&cp, &["title", "delete", "t2", "--yes"]),
        "deleted title t2\n"
    );
    let (_, titles) = cp.admin("GET", "/v1/admin/titles", None);
    assert_eq!(titles.as_array().unwrap().len(), 1, "{titles}");
    let (_, content) = cp.admin("GET", "/v1/admin/content", None);
    assert!(!content.to_string().contains("t2_720p"), "{content}");
    assert!(!origin_copy.exists(), "the origin copy goes with it");
    let (ok_, _, err) = ocactl(&cp, &["title", "show", "t2"]);
    assert!(!ok_ && err.contains("no title t2"), "{err}");
    let (ok_, _, err) = ocactl(&cp, &["title", "delete", "t2", "-y"]);
    assert!(!ok_ && err.contains("404"), "{err}");
}

/// `steer --explain` prints the decision and, for every candidate, its rank or why it was left
/// out, with the route it matched; `--json` is the API's explained answer.
#[test]
fn steer_explain_prints_each_candidates_rank_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    licensed_world(&cp);
    // a2, in the same site, does not hold the file.
    register_reporting(&cp, "a2", "isp-a", &[], &[]);

    let text = ok(
        &cp,
        &[
            "steer",
            "--explain",
            "198.51.100.7",
            "--content",
            "t1_480p.mp4",
        ],
    );
    let (first, rest) = text.split_once('\n').unwrap();
    assert_eq!(first, "t1_480p.mp4 for 198.51.100.7: 1 appliance (a1)");
    let rows = table(rest);
    assert_eq!(rows.len(), 2, "{text}");
    assert_eq!(rows[0]["RANK"], "1");
    assert_eq!(rows[0]["APPLIANCE"], "a1");
    assert_eq!(rows[0]["ROUTE"], "198.51.100.0/24 zone");
    assert_eq!(
        rows[0]["REASON"],
        "kept: client's site: coverage zone 198.51.100.0/24, rank 1: first"
    );
    assert_eq!(
        (rows[1]["RANK"].as_str(), rows[1]["APPLIANCE"].as_str()),
        ("-", "a2")
    );
    assert_eq!(rows[1]["REASON"], "does not hold the content");

    let (_, api) = cp.steer("198.51.100.7", "t1_480p.mp4");
    let v: Value = serde_json::from_str(&ok(
        &cp,
        &[
            "steer",
            "--explain",
            "198.51.100.7",
            "--content",
            "t1_480p.mp4",
            "--json",
        ],
    ))
    .unwrap();
    assert_eq!(v, api);

    // Without --explain: the answer; by title: each rendition.
    let text = ok(&cp, &["steer", "198.51.100.7", "--title", "t1"]);
    let rows = table(text.split_once('\n').unwrap().1);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["URL"], "http://a1.example:8080/");
    // A client nothing covers.
    let text = ok(
        &cp,
        &[
            "steer",
            "--explain",
            "203.0.113.1",
            "--content",
            "t1_480p.mp4",
        ],
    );
    assert!(
        text.contains("no appliance") && text.contains("no candidates"),
        "{text}"
    );
    let (ok_, _, err) = ocactl(&cp, &["steer", "198.51.100.7", "--title", "nope"]);
    assert!(!ok_ && err.contains("no content files"), "{err}");
}

/// Starts an oca-daemon on loopback serving `store` with the keys in `keys`.
fn daemon(store: &std::path::Path, keys: &std::path::Path) -> (Proc, String) {
    let bins = test_support::cargo_bins(false, &[("oca-daemon", "oca-daemon")]);
    let mut cmd = Command::new(&bins["oca-daemon"]);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ])
    .arg("--store")
    .arg(store)
    .arg("--keys")
    .arg(keys);
    let proc = Proc::spawn(cmd);
    proc.wait_log("URL keys loaded", Duration::from_secs(20));
    let line = proc.wait_log(" listening ", Duration::from_secs(20));
    let addr = Proc::field(&line, "addr");
    (proc, format!("http://{addr}"))
}

/// `sign-url` without a control plane or token: URLs signed with the keys an appliance got from
/// the control plane's health reply fetch from a real oca-daemon (current key and, after a
/// rotation, the previous one by --key-id); expired ones, ones signed with a key the appliance
/// does not have and a tampered one are refused; `--scope fill` signs the fill scope.
#[test]
fn sign_url_makes_urls_a_real_oca_daemon_accepts_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    let credential = licensed_world_keys(&cp).1;
    // Rotated, so the site's keyring has a current key and a previous one.
    ok(&cp, &["keys", "rotate"]);
    let report = json!({
        "oca_id": "a1", "site": "isp-a", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": [],
        "inventory": {"kind": "full", "seq": 2, "content": ["t1_480p.mp4"]}
    });
    let (s, reply) = cp.req(
        "POST",
        "/v1/appliances/a1/health",
        Some(report),
        Some(&credential),
    );
    assert_eq!(s, 200, "{reply}");
    let keys = dir.path().join("url-keys.json");
    std::fs::write(&keys, json!({"keys": reply["keys"]}).to_string()).unwrap();
    let ring = Keyring::from_json(&std::fs::read_to_string(&keys).unwrap()).unwrap();
    assert_eq!(ring.keys().len(), 2, "{reply}");
    let previous = ring.keys()[1].id().to_string();

    let body = test_support::content_bytes("t1_480p.mp4", 100_000);
    let store = dir.path().join("store");
    std::fs::create_dir_all(store.join("objects/t1")).unwrap();
    std::fs::write(store.join("objects/t1/t1_480p.mp4"), &body).unwrap();
    let (_daemon, base) = daemon(&store, &keys);

    // No token, and a control plane nobody listens at: sign-url asks nothing of it.
    let sign = |key_file: &std::path::Path, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ocactl"))
            .env_remove("OCA_CP_TOKEN")
            .env_remove("OCA_KEY_FILE")
            .args(["--url", "http://127.0.0.1:1", "sign-url", "--key-file"])
            .arg(key_file)
            .args(extra)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{extra:?}: {err}");
        let url = String::from_utf8(out.stdout).unwrap();
        assert_eq!(url.lines().count(), 1, "the URL alone: {url}");
        (url.trim().to_string(), err)
    };
    let get = |url: &str| {
        let r = reqwest::blocking::get(url).unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().unwrap().to_vec())
    };

    let (url, note) = sign(
        &keys,
        &["t1_480p.mp4", "--base", &base, "--expires-in", "10m"],
    );
    assert!(
        url.starts_with(&format!("{base}/c/t1_480p.mp4?e=")),
        "{url}"
    );
    assert!(
        url.contains(&format!("&k={}&", ring.current().id())),
        "{url}"
    );
    assert!(
        note.contains("scope play") && note.contains("(in 10m)"),
        "{note}"
    );
    assert_eq!(get(&url), (200, body.clone()));
    // A whole URL, its old signature replaced; signed with the previous key.
    let (url2, _) = sign(&keys, &[&format!("{url}&x=1"), "--key-id", &previous]);
    assert!(url2.contains(&format!("&k={previous}&")), "{url2}");
    assert_eq!(get(&url2), (200, body.clone()));

    // Refused: expired; a key the appliance does not have; the same id with another secret;
    // a signature for another file.
    let (expired, note) = sign(
        &keys,
        &["t1_480p.mp4", "--base", &base, "--expires-at", "1000"],
    );
    assert!(note.contains("appliances refuse it"), "{note}");
    assert_eq!(get(&expired).0, 403);
    let other = dir.path().join("other-keys.json");
    for id in ["k-elsewhere", ring.current().id()] {
        let foreign = Keyring::new(vec![Key::new(id, [7; 32]).unwrap()]).unwrap();
        std::fs::write(&other, foreign.to_json()).unwrap();
        let (url, _) = sign(&other, &["t1_480p.mp4", "--base", &base]);
        assert_eq!(get(&url).0, 403, "{url}");
    }
    let (for_other, _) = sign(&keys, &["t1_1080p.mp4", "--base", &base]);
    let query = for_other.split_once('?').unwrap().1;
    assert_eq!(get(&format!("{base}/c/t1_480p.mp4?{query}")).0, 403);

    // The fill scope: what appliances and the origin check for fills.
    let (fill, note) = sign(&keys, &["/origin/t1_480p.mp4", "--scope", "fill"]);
    assert!(
        fill.starts_with("/origin/t1_480p.mp4?") && note.contains("scope fill"),
        "{fill}"
    );
    let q = fill.split_once('?').unwrap().1;
    let now = oca_service::unix_now();
    assert_eq!(verify(&ring, "t1_480p.mp4", q, Scope::Fill, now), Ok(()));
    assert!(verify(&ring, "t1_480p.mp4", q, Scope::Play, now).is_err());

    // Mistakes are named.
    let out = Command::new(env!("CARGO_BIN_EXE_ocactl"))
        .args(["sign-url", "--key-file"])
        .arg(&keys)
        .args(["t1_480p.mp4", "--key-id", "nope"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no key \"nope\""),
        "{err}"
    );
}

/// A one-file HTTP origin on loopback: `GET /<name>` answers `body`, anything else 404. Its
/// base URL.
fn http_origin(name: &'static str, body: Vec<u8>) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut request = String::new();
            let _ = reader.read_line(&mut request);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request.split_whitespace().nth(1).unwrap_or_default();
            let (status, body) = if path == format!("/{name}") {
                ("200 OK", &body[..])
            } else {
                ("404 Not Found", &b""[..])
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(body);
        }
    });
    format!("http://{addr}")
}

/// `content add --origin-url`: a file an HTTP origin serves is registered from anywhere, hashed
/// from the URL (no file here, none on the control plane's machine) or from a local copy.
#[test]
fn content_add_registers_a_file_an_http_origin_serves() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    ok(
        &cp,
        &[
            "title",
            "add",
            "t1",
            "--name",
            "A film",
            "--countries",
            "NL",
        ],
    );
    let body = test_support::content_bytes("t1_1080p.mp4", 3_000_000);
    let sha = oca_protocol::manifest::hex(&Sha256::digest(&body));
    let base = http_origin("t1_1080p.mp4", body.clone());
    let add = |extra: &[&str]| {
        ocactl(
            &cp,
            &[
                &[
                    "content",
                    "add",
                    "--title",
                    "t1",
                    "--resolution",
                    "1080",
                    "--bitrate-kbps",
                    "5800",
                ],
                extra,
            ]
            .concat(),
        )
    };
    let url = format!("{base}/t1_1080p.mp4");
    let (ok_, out, err) = add(&["--origin-url", &url]);
    assert!(ok_, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            c["id"].as_str(),
            c["size"].as_u64(),
            c["sha256"].as_str(),
            c["origin"].as_str()
        ),
        (
            Some("t1_1080p.mp4"),
            Some(3_000_000),
            Some(sha.as_str()),
            Some(url.as_str())
        )
    );
    // With a local copy: hashed here, the URL not read (this one would 404).
    let copy = dir.path().join("copy.mp4");
    std::fs::write(&copy, &body).unwrap();
    let url720 = format!("{base}/t1_720p.mp4");
    let (ok_, out, err) = add(&[
        copy.to_str().unwrap(),
        "--id",
        "t1_720p.mp4",
        "--origin-url",
        &url720,
    ]);
    assert!(ok_, "{err}");
    let c: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (c["sha256"].as_str(), c["origin"].as_str()),
        (Some(sha.as_str()), Some(url720.as_str()))
    );
    // Refused, nothing registered: a URL the origin does not serve; one with a query (the
    // control plane appends its own).
    let (ok_, _, err) = add(&["--origin-url", &format!("{base}/t1_480p.mp4")]);
    assert!(!ok_ && err.contains("404"), "{err}");
    let (ok_, _, err) = add(&["--origin-url", &format!("{url}?v=2"), "--id", "t1_360p.mp4"]);
    assert!(!ok_ && err.contains("no query"), "{err}");
    let listed = table(&ok(&cp, &["content", "list", "--title", "t1"]));
    let ids: Vec<&str> = listed.iter().map(|r| r["ID"].as_str()).collect();
    assert_eq!(ids, ["t1_1080p.mp4", "t1_720p.mp4"]);
    assert_eq!(listed[0]["SIZE"], "2.9 MiB");
    assert_eq!(listed[0]["SHA256"], sha[..12]);
}
