//! Traffic history against the real binary: reports land in the bucket of the time they are
//! received with the right mean, peak and bytes; two processes on one SQLite file make one
//! right bucket; the CSV export says what the JSON says; retention deletes old buckets;
//! steering misses are counted by the client's site; bad ranges are refused.
//!
//! Buckets are a few seconds wide here (`--history-bucket-secs`), so several buckets pass in a
//! test; each test waits for a bucket to begin before it reports into it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::{json, Value};

/// Bucket width the tests run with.
const BUCKET: u64 = 5;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Sleeps until 0.2 s into the next bucket of `width` seconds; returns its start.
fn next_bucket(width: u64) -> i64 {
    let now = now_secs();
    let start = ((now / width as f64).floor() as u64 + 1) * width;
    std::thread::sleep(Duration::from_secs_f64(start as f64 + 0.2 - now));
    start as i64
}

/// A site `isp-a` (all prefixes allowed) with appliances `ids`; returns their credentials.
fn fleet(cp: &Cp, ids: &[&str]) -> Vec<String> {
    let site =
        json!({"id": "isp-a", "kind": "isp", "region": "eu", "allowed_prefixes": ["0.0.0.0/0"]});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    ids.iter()
        .map(|id| {
            let a = json!({"id": id, "site": "isp-a", "url": format!("http://{id}.example"), "capacity_bps": 10_000_000_000u64});
            let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
            assert_eq!(s, 201, "{reg}");
            reg["credential"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Sends a health report of `id` carrying these figures.
fn report(cp: &Cp, id: &str, cred: &str, status: &str, bytes_per_sec: u64, conns: u64) {
    let body = json!({
        "oca_id": id, "site": "isp-a", "version": "t", "status": status,
        "serving": {"active_connections": conns, "bytes_per_sec": bytes_per_sec, "requests_per_sec": conns * 10, "capacity_bps": 10_000_000_000u64},
        "disks": [], "prefixes": ["198.51.100.0/24"],
        "inventory": {"kind": "full", "seq": 1, "content": ["c1"]}
    });
    let (s, r) = cp.req(
        "POST",
        &format!("/v1/appliances/{id}/health"),
        Some(body),
        Some(cred),
    );
    assert_eq!(s, 200, "{r}");
}

/// `GET` of `path` with the admin token: status, headers, body text.
fn get_raw(cp: &Cp, path: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let resp = reqwest::blocking::Client::new()
        .get(format!("http://{}{path}", cp.addr))
        .bearer_auth(&cp.token)
        .send()
        .unwrap();
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    (status, headers, resp.text().unwrap())
}

/// The figures of a JSON bucket, in the CSV's column order (misses: -1 when absent).
fn figures(b: &Value) -> Vec<i64> {
    [
        "start",
        "reports",
        "bytes_per_sec_mean",
        "bytes_per_sec_peak",
        "connections_mean",
        "connections_peak",
        "requests_per_sec_mean",
        "total_bytes",
        "content_misses",
        "health_misses",
    ]
    .iter()
    .map(|k| b[*k].as_i64().unwrap_or(-1))
    .collect()
}

#[test]
fn reports_land_in_their_buckets_and_csv_matches_json() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(
        dir.path(),
        &["--report-interval", "1", "--history-bucket-secs", "5"],
    );
    let creds = fleet(&cp, &["a1", "a2"]);
    let b0 = next_bucket(BUCKET);
    // a1: three reports a second apart; a2: one. Each report counts its rate for the second
    // since the one before (the first, for one report interval).
    report(&cp, "a1", &creds[0], "ok", 100, 2);
    report(&cp, "a2", &creds[1], "ok", 50, 1);
    std::thread::sleep(Duration::from_secs(1));
    report(&cp, "a1", &creds[0], "ok", 300, 6);
    std::thread::sleep(Duration::from_secs(1));
    report(&cp, "a1", &creds[0], "ok", 200, 4);
    let b1 = next_bucket(BUCKET);
    assert_eq!(b1, b0 + BUCKET as i64);
    // After 3 s of silence: one interval's worth.
    report(&cp, "a1", &creds[0], "ok", 1_000, 1);
    let range = format!("?from={b0}&to={}", b1 + BUCKET as i64);

    let (s, a1) = cp.admin(
        "GET",
        &format!("/v1/admin/history/appliances/a1{range}"),
        None,
    );
    assert_eq!(s, 200, "{a1}");
    assert_eq!(a1["bucket_secs"], 5);
    assert_eq!(a1["capacity_bps"], 10_000_000_000u64);
    let buckets = a1["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 2, "{a1}");
    assert_eq!(
        figures(&buckets[0]),
        [b0, 3, 200, 300, 4, 6, 40, 600, -1, -1],
        "{a1}"
    );
    assert_eq!(
        figures(&buckets[1]),
        [b1, 1, 1_000, 1_000, 1, 1, 10, 1_000, -1, -1]
    );
    assert_eq!(a1["total_bytes"], 1_600);

    let (s, site) = cp.admin(
        "GET",
        &format!("/v1/admin/history/sites/isp-a{range}"),
        None,
    );
    assert_eq!(s, 200, "{site}");
    assert_eq!(site["capacity_bps"], 20_000_000_000u64);
    let buckets = site["buckets"].as_array().unwrap();
    // The site sums its appliances: means and peaks added, bytes added.
    assert_eq!(
        figures(&buckets[0]),
        [b0, 4, 250, 350, 5, 7, 50, 650, 0, 0],
        "{site}"
    );
    assert_eq!(site["total_bytes"], 1_650);

    // The CSV export: a download, a header row, the JSON's figures row by row.
    let (s, headers, csv) = get_raw(
        &cp,
        &format!("/v1/admin/history/sites/isp-a{range}&format=csv"),
    );
    assert_eq!(s, 200, "{csv}");
    assert_eq!(headers["content-type"], "text/csv; charset=utf-8");
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert_eq!(
        disposition,
        format!(
            "attachment; filename=\"site-isp-a-{b0}-{}.csv\"",
            b1 + BUCKET as i64
        )
    );
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header[0], "start");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), buckets.len());
    for (row, bucket) in rows.iter().zip(buckets) {
        assert_eq!(row.len(), header.len());
        for (name, cell) in header.iter().zip(row) {
            if *name == "start_utc" {
                assert!(cell.ends_with('Z') && cell.len() == 20, "{cell}");
                continue;
            }
            assert_eq!(
                cell.parse::<i64>().unwrap(),
                bucket[*name].as_i64().unwrap(),
                "{name}"
            );
        }
    }

    // ocactl prints the same CSV, and the JSON as the API's type.
    let (ok, out, err) = ocactl(
        &cp,
        &[
            "history",
            "--site",
            "isp-a",
            "--from",
            &b0.to_string(),
            "--to",
            &(b1 + BUCKET as i64).to_string(),
            "--csv",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, csv);
    let (ok, out, err) = ocactl(
        &cp,
        &[
            "history",
            "--appliance",
            "a1",
            "--from",
            &b0.to_string(),
            "--json",
        ],
    );
    assert!(ok, "{err}");
    let printed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(printed["buckets"].as_array().unwrap().len(), 2);
    assert!(
        !ocactl(&cp, &["history"]).0,
        "--appliance or --site is required"
    );

    // The chart, for the portal to embed.
    let (s, headers, svg) = get_raw(
        &cp,
        &format!("/v1/admin/history/sites/isp-a/chart.svg{range}"),
    );
    assert_eq!(s, 200, "{svg}");
    assert_eq!(headers["content-type"], "image/svg+xml");
    assert!(
        svg.starts_with("<svg") && svg.contains(r#"role="img""#),
        "{svg}"
    );
    assert!(svg.contains("<title>Traffic of site isp-a</title>"));
    assert!(svg.contains(r#"class="capacity""#));
}

#[test]
fn two_processes_on_one_database_make_one_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--report-interval", "1", "--history-bucket-secs", "5"];
    let cp1 = start_with(dir.path(), &args);
    let creds = fleet(&cp1, &["a1"]);
    let cp2 = start_with(dir.path(), &args);
    let b0 = next_bucket(BUCKET);
    for (i, bps) in [10u64, 20, 30, 40].into_iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        let cp = if i % 2 == 0 { &cp1 } else { &cp2 };
        report(cp, "a1", &creds[0], "ok", bps, i as u64 + 1);
    }
    for cp in [&cp1, &cp2] {
        let (s, h) = cp.admin(
            "GET",
            &format!("/v1/admin/history/appliances/a1?from={b0}&to={}", b0 + 5),
            None,
        );
        assert_eq!(s, 200, "{h}");
        let buckets = h["buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 1, "{h}");
        // Every report added once, whichever process took it; each counted for the second
        // since the report before it, which the other process recorded.
        assert_eq!(
            figures(&buckets[0]),
            [b0, 4, 25, 40, 3, 4, 25, 100, -1, -1],
            "{h}"
        );
    }
}

#[test]
fn retention_deletes_old_buckets_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    // 1-second buckets kept about 4 seconds (0.00005 days).
    let cp = start_with(
        dir.path(),
        &[
            "--report-interval",
            "1",
            "--history-bucket-secs",
            "1",
            "--history-retention-days",
            "0.00005",
        ],
    );
    let creds = fleet(&cp, &["a1"]);
    // Rows from long ago, more than one batch of them, written beside the running process.
    {
        db_of(dir.path()).exec(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
             INSERT INTO history_appliance SELECT 'a1', i, 1, 1, 1, 1, 1, 1, 1 FROM n;",
            "INSERT INTO history_appliance
             SELECT 'a1', i, 1, 1, 1, 1, 1, 1, 1 FROM generate_series(1, 2500) i;",
        );
    }
    report(&cp, "a1", &creds[0], "ok", 7, 1);
    let reported = now_secs() as i64;
    let count = |from: i64| {
        let (s, h) = cp.admin(
            "GET",
            &format!(
                "/v1/admin/history/appliances/a1?from={from}&to={}",
                from + 10_000
            ),
            None,
        );
        assert_eq!(s, 200, "{h}");
        h["buckets"].as_array().unwrap().len()
    };
    // The old rows go at the next tick of the history task; the fresh bucket stays a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while count(0) > 0 {
        assert!(std::time::Instant::now() < deadline, "old buckets deleted");
        std::thread::sleep(Duration::from_millis(200));
    }
    if (now_secs() as i64) < reported + 3 {
        assert_eq!(count(reported - 5), 1, "a fresh bucket is kept");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while count(reported - 5) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "buckets past retention deleted"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn misses_are_counted_by_the_clients_site() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(
        dir.path(),
        &["--report-interval", "1", "--history-bucket-secs", "2"],
    );
    let creds = fleet(&cp, &["a1"]);
    report(&cp, "a1", &creds[0], "ok", 0, 0);
    let from = now_secs() as i64 - 2;
    let steer = |ip: &str, content: &str| {
        let (s, r) = cp.admin(
            "GET",
            &format!("/v1/steer?client_ip={ip}&content_id={content}"),
            None,
        );
        assert_eq!(s, 200, "{r}");
    };
    // A client of isp-a (a1 hears its route): nobody holds c9, twice.
    steer("198.51.100.7", "c9");
    steer("198.51.100.8", "c9");
    // A client in no site.
    steer("203.0.113.9", "c9");
    // a1 holds c1 but is in error: a health miss for isp-a.
    report(&cp, "a1", &creds[0], "error", 0, 0);
    steer("198.51.100.7", "c1");
    let totals = |site: &str| {
        let (s, h) = cp.admin(
            "GET",
            &format!(
                "/v1/admin/history/sites/{site}?from={from}&to={}",
                from + 600
            ),
            None,
        );
        assert_eq!(s, 200, "{h}");
        h["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .fold((0, 0), |(c, m), b| {
                (
                    c + b["content_misses"].as_u64().unwrap(),
                    m + b["health_misses"].as_u64().unwrap(),
                )
            })
    };
    // Misses reach storage at the history task's next tick.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while totals("isp-a") != (2, 1) || totals("-") != (1, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "isp-a {:?}, - {:?}",
            totals("isp-a"),
            totals("-")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // "-" is not a site anyone can create.
    let site = json!({"id": "-", "kind": "isp", "region": "eu"});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 400);
}

#[test]
fn bad_ranges_and_unknown_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    fleet(&cp, &["a1"]);
    let max = 10_080 * 300;
    let cases = [
        (
            format!("/v1/admin/history/appliances/a1?from=0&to={}", max + 1),
            400,
        ),
        (
            format!("/v1/admin/history/sites/isp-a?from=0&to={}", max + 1),
            400,
        ),
        ("/v1/admin/history/appliances/a1?from=10&to=5".into(), 400),
        ("/v1/admin/history/appliances/a1?from=x".into(), 400),
        ("/v1/admin/history/appliances/a1?format=xml".into(), 400),
        ("/v1/admin/history/appliances/a1?color=red".into(), 400),
        (
            "/v1/admin/history/appliances/a1/chart.svg?from=0&to=99999999".into(),
            400,
        ),
        ("/v1/admin/history/appliances/nope".into(), 404),
        ("/v1/admin/history/sites/nope".into(), 404),
        ("/v1/admin/history/sites/nope/chart.svg".into(), 404),
        (
            format!("/v1/admin/history/appliances/a1?from=0&to={max}"),
            200,
        ),
        ("/v1/admin/history/appliances/a1".into(), 200),
    ];
    for (path, want) in cases {
        let (s, body) = cp.admin("GET", &path, None);
        assert_eq!(s, want, "{path}: {body}");
        if want == 400 {
            assert_eq!(body["code"], "bad_request", "{path}: {body}");
            assert!(!body["message"].as_str().unwrap().is_empty());
        }
    }
    let (s, body) = cp.admin("GET", "/v1/admin/history/appliances/a1", None);
    assert_eq!(s, 200);
    // The default range: the last day.
    let (from, to) = (body["from"].as_i64().unwrap(), body["to"].as_i64().unwrap());
    assert_eq!(to - from, 86_400);
    assert!(body["buckets"].as_array().unwrap().is_empty());
    assert_eq!(body["total_bytes"], 0);
    // Without the admin token: 401, before any work.
    for path in [
        "/v1/admin/history/appliances/a1",
        "/v1/admin/history/sites/isp-a?format=csv",
        "/v1/admin/history/sites/isp-a/chart.svg",
    ] {
        assert_eq!(cp.req("GET", path, None, None).0, 401, "{path}");
        assert_eq!(cp.req("GET", path, None, Some("wrong")).0, 401, "{path}");
    }
}
