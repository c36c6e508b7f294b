//! What an operator does before and after a start, on the real binary: the example
//! configuration starts a control plane, `--check-config` says what would run or exits 78
//! (EX_CONFIG) with the reason, `--print-config` reads back as the same configuration,
//! every scrape says which build runs and what the process holds, and the admin listener
//! serves `/metrics` without the token, every API request timed by route.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn control_plane() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_control-plane"));
    c.env_remove("JOURNAL_STREAM");
    c
}

fn run(args: &[&str]) -> Output {
    control_plane().args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The repository's example configuration with its paths moved into `dir`, listening on a
/// free loopback port; the file's path.
fn example_in(dir: &Path) -> String {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/control-plane.example.toml");
    let (cert, key) = (dir.join("cp.pem"), dir.join("cp.key"));
    test_support::write_self_signed(&cert, &key, &["localhost".into()]).unwrap();
    let text = std::fs::read_to_string(example).unwrap();
    let moved = text
        .replace("0.0.0.0:7443", "127.0.0.1:0")
        .replace(
            "admin_listen = \"127.0.0.1:9182\"",
            "admin_listen = \"127.0.0.1:0\"",
        )
        .replace("/etc/oca/tls/control-plane.pem", cert.to_str().unwrap())
        .replace("/etc/oca/tls/control-plane.key", key.to_str().unwrap())
        .replace("/var/lib/oca-control", dir.to_str().unwrap());
    for (from, what) in [
        ("127.0.0.1:0", "listen"),
        ("admin_listen = \"127.0.0.1:0\"", "admin_listen"),
        ("cp.pem", "tls_cert"),
        ("cp.key", "tls_key"),
        ("control-plane.db\"", "db"),
    ] {
        assert!(moved.contains(from), "the example lost its {what} line");
    }
    let path = dir.join("control-plane.toml");
    std::fs::write(&path, moved).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn the_example_configuration_checks_out_and_starts_a_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_in(dir.path());
    let out = run(&["--config", &file, "--check-config"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains("configuration ok: HTTPS on 127.0.0.1:0, admin on 127.0.0.1:0,")
            && said.contains("SQLite")
            && said.contains("generated at first start"),
        "{said}"
    );
    assert!(
        !dir.path().join("control-plane.db").exists(),
        "a check opens no database"
    );

    let mut cmd = control_plane();
    cmd.args(["--config", &file]);
    let mut p = test_support::proc::Proc::spawn(cmd);
    let listening = p.wait_log(" listening ", Duration::from_secs(30));
    assert!(listening.contains("scheme=\"https\""), "{listening}");
    // The example's admin listener: the metrics on plain HTTP, no token.
    let admin = test_support::addr_field(&listening, "admin");
    let m = test_support::metrics(&admin.to_string()).unwrap();
    assert!(m.starts_with("HTTP/1.1 200"), "{m}");
    test_support::assert_describes_its_process(&m, "cp");
    // SIGHUP: the certificate reread, the edited file compared with the running settings.
    p.assert_reload(
        Path::new(&file),
        "# fill_copies = 2",
        "fill_copies = 3",
        "\"fill_copies\"",
    );
}

#[test]
fn a_configuration_only_an_edit_fixes_exits_78_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_in(dir.path());
    let example = std::fs::read_to_string(&file).unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let cert = dir.path().join("cp.pem");
    for (edit, why) in [
        (format!("{example}\nlisten_adress = \"127.0.0.1:1\"\n"), "listen_adress"),
        (
            example.replace(cert.to_str().unwrap(), garbage.to_str().unwrap()),
            "garbage.pem",
        ),
        (
            example.replace("# fill_window = \"02:00-08:00\"", "fill_window = \"02:00-28:00\""),
            "28:00",
        ),
        (
            example.replace(
                "admin_listen = \"127.0.0.1:0\"",
                "admin_listen = \"localhost:9182\"",
            ),
            "admin_listen",
        ),
        (
            example.replace(
                "db = \"",
                "admin_token_file = \"/t\"\norigin_dir = \"/o\"\ndb = \"postgres://h/db?sslmode=bogus\"\n# was \"",
            ),
            "sslmode",
        ),
        (
            example.replace(
                &format!("{}/control-plane.db", dir.path().display()),
                "/nonexistent/dir/control-plane.db",
            ),
            "/nonexistent/dir",
        ),
    ] {
        std::fs::write(&file, &edit).unwrap();
        let out = run(&["--config", &file, "--check-config"]);
        assert_eq!(out.status.code(), Some(78), "{why}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(why), "{why}: {}", text(&out.stderr));
        // The start refuses the same way, before opening anything.
        if why != "/nonexistent/dir" {
            let out = run(&["--config", &file]);
            assert_eq!(out.status.code(), Some(78), "{why}: {}", text(&out.stderr));
        }
    }
}

#[test]
fn the_printed_configuration_reads_back_as_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let file = example_in(dir.path());
    let out = run(&[
        "--config",
        &file,
        "--report-interval",
        "7",
        "--print-config",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    for line in [
        "report_interval = 7",
        "max_connections = 16384",
        "probe_interval = 7.0",
        "admin_token_file = ",
    ] {
        assert!(printed.contains(line), "{line}: {printed}");
    }
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    let out = run(&["--config", again.to_str().unwrap(), "--print-config"]);
    assert_eq!(text(&out.stdout), printed);
}

#[test]
fn every_scrape_says_which_build_and_what_the_process_holds_and_how_the_fleet_reports() {
    let dir = tempfile::tempdir().unwrap();
    let cp = common::start(dir.path());
    let m = common::metrics(&cp);
    test_support::assert_describes_its_process(&m, "cp");
    // Every state is written at each scrape, zeros included.
    assert!(
        m.lines().any(|l| l == "cp_appliances{state=\"never\"} 0"),
        "{m}"
    );

    // Two appliances in one site: one reports (twice), the other never does.
    let (s, r) = cp.admin(
        "POST",
        "/v1/admin/sites",
        Some(serde_json::json!({"id": "s1", "kind": "isp", "region": "eu", "allowed_prefixes": ["198.51.100.0/24"]})),
    );
    assert_eq!(s, 201, "{r}");
    let credential = common::register_reporting(&cp, "a1", "s1", &["198.51.100.0/24"], &[]);
    let (s, r) = cp.admin(
        "POST",
        "/v1/admin/appliances",
        Some(serde_json::json!({"id": "a2", "site": "s1", "url": "http://a2.example:8080/", "capacity_bps": 1_000_000_000u64})),
    );
    assert_eq!(s, 201, "{r}");
    std::thread::sleep(Duration::from_millis(1100));
    let again = serde_json::json!({
        "oca_id": "a1", "site": "s1", "version": "t", "status": "warning",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [], "prefixes": ["198.51.100.0/24"],
        "inventory": {"kind": "delta", "base_seq": 1, "seq": 1, "added": [], "removed": []}
    });
    let (s, r) = cp.req(
        "POST",
        "/v1/appliances/a1/health",
        Some(again),
        Some(&credential),
    );
    assert_eq!(s, 200, "{r}");
    let m = common::metrics(&cp);
    for (series, want) in [
        ("cp_appliances{state=\"warning\"} ", 1.0),
        ("cp_appliances{state=\"never\"} ", 1.0),
        ("cp_appliances{state=\"ok\"} ", 0.0),
        // The first report has no previous one; the second came a second after it.
        ("cp_report_age_seconds_count ", 1.0),
        ("cp_report_age_seconds_bucket{le=\"5.0\"} ", 1.0),
    ] {
        assert_eq!(test_support::metric(&m, series), want, "{series}: {m}");
    }
}

/// The labels and value of each `cp_http_request_duration_seconds_<suffix>` series.
fn latency_series(m: &str, suffix: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let prefix = format!("cp_http_request_duration_seconds_{suffix}{{");
    m.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            let (labels, value) = rest.split_once("} ").expect("labels then a value");
            let labels = labels
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").expect("name=\"value\"");
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (labels, value.trim().parse().unwrap())
        })
        .collect()
}

#[test]
fn the_admin_listener_serves_metrics_without_the_token_and_every_api_route_is_timed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = control_plane();
    cmd.args(["--db", dir.path().join("cp.db").to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--probe-interval", "0"]);
    let p = test_support::proc::Proc::spawn(cmd);
    let listening = p.wait_log(" listening ", Duration::from_secs(30));
    let (api, admin) = (
        test_support::addr_field(&listening, "addr"),
        test_support::addr_field(&listening, "admin"),
    );
    assert_ne!(api, admin);
    let token = std::fs::read_to_string(dir.path().join("cp.db.admin-token")).unwrap();
    let token = token.trim();
    let client = reqwest::blocking::Client::new();
    let send = |at: std::net::SocketAddr, method: &str, path: &str, token: Option<&str>| {
        let mut r = client.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("http://{at}{path}"),
        );
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let resp = r.send().unwrap();
        (resp.status().as_u16(), resp.text().unwrap())
    };

    // The API: routes with and without parameters, a 404 on a matched route, a path no route
    // matches, a method outside the standard ones.
    for (method, path, auth, want) in [
        ("GET", "/healthz", None, 200),
        ("GET", "/v1/admin/appliances/a1/inventory", Some(token), 200),
        ("DELETE", "/v1/admin/titles/no-such-title", Some(token), 404),
        ("GET", "/no/such/path/7f3a", None, 404),
        ("PURGE", "/healthz", None, 405),
        // The API's own /metrics still wants the token.
        ("GET", "/metrics", None, 401),
        ("GET", "/metrics", Some(token), 200),
    ] {
        assert_eq!(send(api, method, path, auth).0, want, "{method} {path}");
    }

    // The admin listener: no token, probes, nothing else.
    assert_eq!(send(admin, "GET", "/readyz", None), (200, "ready\n".into()));
    assert_eq!(send(admin, "GET", "/healthz", None), (200, "ok\n".into()));
    assert_eq!(send(admin, "GET", "/v1/admin/sites", Some(token)).0, 404);
    let (status, m) = send(admin, "GET", "/metrics", None);
    assert_eq!(status, 200, "{m}");
    test_support::assert_describes_its_process(&m, "cp");

    let counts: BTreeMap<(String, String, String), f64> = latency_series(&m, "count")
        .into_iter()
        .map(|(l, v)| {
            (
                (l["route"].clone(), l["method"].clone(), l["status"].clone()),
                v,
            )
        })
        .collect();
    let key = |r: &str, m: &str, s: &str| (r.to_string(), m.to_string(), s.to_string());
    let want = BTreeMap::from([
        (key("/healthz", "GET", "2xx"), 1.0),
        (key("/healthz", "other", "4xx"), 1.0),
        (
            key("/v1/admin/appliances/{id}/inventory", "GET", "2xx"),
            1.0,
        ),
        (key("/v1/admin/titles/{id}", "DELETE", "4xx"), 1.0),
        (key("unmatched", "GET", "4xx"), 1.0),
        (key("/metrics", "GET", "4xx"), 1.0),
        (key("/metrics", "GET", "2xx"), 1.0),
    ]);
    // Exactly these: the admin listener's requests are not the API's, and no path a client
    // chose (a1, no-such-title, /no/such/path) is a label value.
    assert_eq!(counts, want, "{m}");
    let buckets = latency_series(&m, "bucket");
    let bucket = |route: &str, le: &str| {
        buckets
            .iter()
            .find(|(l, _)| l["route"] == route && l["le"] == le)
            .map(|(_, v)| *v)
    };
    for route in [
        "/v1/admin/appliances/{id}/inventory",
        "/v1/admin/titles/{id}",
        "unmatched",
    ] {
        assert_eq!(bucket(route, "+Inf"), Some(1.0), "{route}: {m}");
        assert_eq!(bucket(route, "10.0"), Some(1.0), "{route}: {m}");
    }
    assert_eq!(
        buckets
            .iter()
            .filter(|(l, _)| l["route"] == "/healthz" && l["method"] == "GET")
            .count(),
        15,
        "14 bounds and +Inf: {m}"
    );
    assert!(
        m.lines().any(|l| l == "cp_http_requests_in_flight 0"),
        "{m}"
    );
}
