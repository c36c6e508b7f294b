//! The portal's maintenance, audit and traffic pages and their scoped JSON API against the real
//! control plane over HTTP, cookies by hand:
//!
//! ```text
//! isp-a: site-a  a1, a2 (198.51.100.0/24)   alice@isp-a (partner)
//! isp-b: site-b  b1     (203.0.113.0/24)    bob@isp-b (partner)
//!                                           op@netflix (operator)
//! catalog: t1 with f1, f2 (planned for site-a); every appliance holds c1 (steered) and f1
//! ```

mod common;

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use common::portal::*;
use common::*;
use serde_json::json;

const ALICE: (&str, &str) = ("alice@isp-a.example", "alice's long password");
const BOB: (&str, &str) = ("bob@isp-b.example", "bob's long password!");
const OP: (&str, &str) = ("op@netflix.example", "operator password 1");
const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const ISP_A_CLIENT: &str = "198.51.100.7";

const FLEET: [(&str, &str, &str); 3] = [
    ("a1", "site-a", "198.51.100.0/24"),
    ("a2", "site-a", "198.51.100.0/24"),
    ("b1", "site-b", "203.0.113.0/24"),
];

struct World {
    cp: Cp,
    creds: HashMap<&'static str, String>,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(dir.path(), &["--history-bucket-secs", "60"]);
    for (org, site) in [("isp-a", "site-a"), ("isp-b", "site-b")] {
        let o = json!({"id": org, "name": org});
        assert_eq!(cp.admin("POST", "/v1/admin/orgs", Some(o)).0, 201);
        let s = json!({"id": site, "kind": "isp", "region": "eu", "org": org,
                       "allowed_prefixes": ["0.0.0.0/0"]});
        assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(s)).0, 201);
    }
    let mut creds = HashMap::new();
    for (id, site, _) in FLEET {
        let a = json!({"id": id, "site": site, "url": format!("http://{id}.example"),
                       "capacity_bps": 10_000_000_000u64});
        let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201);
        creds.insert(id, reg["credential"].as_str().unwrap().to_string());
    }
    let t = json!({"id": "t1", "name": "t1", "countries": ["NL"]});
    assert_eq!(cp.admin("POST", "/v1/admin/titles", Some(t)).0, 201);
    for (id, size) in [("f1", 1000), ("f2", 2000)] {
        let c = json!({"id": id, "title": "t1", "resolution": 1080, "bitrate_kbps": 1,
                       "size": size, "sha256": SHA, "content_type": "video/mp4",
                       "origin": "embedded"});
        assert_eq!(cp.admin("POST", "/v1/admin/content", Some(c)).0, 201);
    }
    for (login, org) in [(ALICE, Some("isp-a")), (BOB, Some("isp-b")), (OP, None)] {
        let role = if org.is_some() { "partner" } else { "operator" };
        let u = json!({"login": login.0, "role": role, "org": org, "password": login.1});
        assert_eq!(cp.admin("POST", "/v1/admin/users", Some(u)).0, 201);
    }
    let w = World {
        cp,
        creds,
        _dir: dir,
    };
    for (id, ..) in FLEET {
        w.report(id, 42, 250_000_000);
    }
    w
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `YYYY-MM-DDTHH:MM` (UTC) of unix seconds, as a `datetime-local` input sends it.
fn local(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

impl World {
    /// A health report of `id` serving `connections` clients at `bytes_per_sec`, holding c1
    /// and f1 on a large disk.
    fn report(&self, id: &str, connections: u64, bytes_per_sec: u64) {
        self.report_holding(id, connections, bytes_per_sec, &["c1", "f1"]);
    }

    /// A health report as [`World::report`]'s, its inventory `content`.
    fn report_holding(&self, id: &str, connections: u64, bytes_per_sec: u64, content: &[&str]) {
        let (_, site, prefix) = FLEET.iter().find(|f| f.0 == id).unwrap();
        let body = json!({
            "oca_id": id, "site": site, "version": "t", "status": "ok",
            "serving": {"active_connections": connections, "bytes_per_sec": bytes_per_sec,
                        "requests_per_sec": 1, "capacity_bps": 10_000_000_000u64},
            "disks": [{"path": "/srv/oca/disk0", "state": "ok",
                       "capacity_bytes": 4_000_000_000_000u64, "used_bytes": 3000}],
            "prefixes": [prefix],
            "inventory": {"kind": "full", "seq": 1, "content": content}
        });
        let (s, r) = self.cp.req(
            "POST",
            &format!("/v1/appliances/{id}/health"),
            Some(body),
            Some(&self.creds[id]),
        );
        assert_eq!(s, 200, "{r}");
    }

    /// The appliances steering offers an isp-a client for c1, sorted.
    fn steered(&self) -> Vec<String> {
        let path = format!("/v1/steer?client_ip={ISP_A_CLIENT}&content_id=c1&explain=1");
        let (s, ans) = self.cp.admin("GET", &path, None);
        assert_eq!(s, 200, "{ans}");
        let mut ids: Vec<String> = ans["appliances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["oca_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

/// The text of a page's element with `id="serving"`.
fn serving(page: &str) -> &str {
    let at = page.find("id=\"serving\">").expect("a serving state") + 13;
    page[at..].split('<').next().unwrap()
}

/// The id of the newest window the browser's API lists for `target`.
fn window_id(b: &Browser, cp: &Cp, target: &str) -> i64 {
    let (s, list) = b.api(cp, "/v1/portal/maintenance?all=1");
    assert_eq!(s, 200);
    list.as_array()
        .unwrap()
        .iter()
        .find(|w| w["target"] == target)
        .unwrap_or_else(|| panic!("a window on {target}: {list}"))["id"]
        .as_i64()
        .unwrap()
}

#[test]
fn a_partner_disables_its_appliance_by_form_and_it_drains_then_serves_again() {
    let w = world();
    let cp = &w.cp;
    let alice = login(cp, ALICE);
    let csrf = alice.csrf(cp);
    assert_eq!(w.steered(), ["a1", "a2"]);
    let (s, page) = alice.page(cp, "/appliances/a1");
    assert_eq!(s, 200);
    assert_eq!(serving(&page), "Serving");
    assert!(
        page.contains("action=\"/appliances/a1/maintenance\""),
        "{page}"
    );

    // Without the CSRF token: refused, nothing changes.
    let form = [
        ("reason", "swap disk 3"),
        ("when", "now"),
        ("duration", "7200"),
    ];
    assert_eq!(
        alice.post(cp, "/appliances/a1/maintenance", &form, &[]),
        403
    );
    assert_eq!(w.steered(), ["a1", "a2"]);

    // Over 48 hours, and without a reason: 400, the message, the input kept.
    let (s, _, page) = alice.post_page(
        cp,
        "/appliances/a1/maintenance",
        &[
            ("csrf", &csrf),
            ("reason", "rack move"),
            ("when", "now"),
            ("hours", "49"),
        ],
    );
    assert_eq!(s, 400);
    assert!(page.contains("role=\"alert\""), "{page}");
    assert!(page.contains("at most 48 hours"), "{page}");
    assert!(page.contains("value=\"rack move\""), "the reason is kept");
    assert!(page.contains("value=\"49\""), "the hours are kept");
    let (s, _, page) = alice.post_page(
        cp,
        "/appliances/a1/maintenance",
        &[("csrf", &csrf), ("reason", "  "), ("duration", "86400")],
    );
    assert_eq!(s, 400);
    assert!(page.contains("reason: required"), "{page}");
    assert!(
        page.contains("<option value=\"86400\" selected>"),
        "the duration is kept"
    );
    assert_eq!(w.steered(), ["a1", "a2"], "refused forms change nothing");

    // Disabled: 303 back to the page, no new plays, draining while it serves 42 connections.
    let (s, location, _) = alice.post_page(
        cp,
        "/appliances/a1/maintenance",
        &[
            ("csrf", &csrf),
            ("reason", "swap disk 3"),
            ("when", "now"),
            ("duration", "7200"),
        ],
    );
    assert_eq!((s, location.as_str()), (303, "/appliances/a1"));
    assert_eq!(w.steered(), ["a2"]);
    let (_, page) = alice.page(cp, "/appliances/a1");
    assert_eq!(serving(&page), "Draining");
    assert!(page.contains("swap disk 3") && page.contains("user:alice@isp-a.example"));
    w.report("a1", 0, 0);
    let (_, page) = alice.page(cp, "/appliances/a1");
    assert_eq!(serving(&page), "Drained");
    let (_, site) = alice.page(cp, "/sites/site-a");
    assert!(site.contains("Drained</span> until"), "{site}");

    // The audit log names the user and the reason, in the API and on the page.
    let (s, audit) = alice.api(cp, "/v1/portal/audit");
    assert_eq!(s, 200);
    let e = &audit[0];
    assert_eq!(e["actor"], "user:alice@isp-a.example");
    assert_eq!(e["action"], "maintenance.start");
    assert_eq!(e["target"], "appliance:a1");
    assert_eq!(e["details"]["reason"], "swap disk 3");
    let (_, page) = alice.page(cp, "/audit");
    assert!(page.contains("user:alice@isp-a.example") && page.contains("swap disk 3"));

    // Ended from the page: serving again.
    let id = window_id(&alice, cp, "a1");
    let end = format!("/maintenance/{id}/end");
    assert_eq!(alice.post(cp, &end, &[("reason", "done")], &[]), 403);
    let (s, _, page) = alice.post_page(cp, &end, &[("csrf", &csrf)]);
    assert_eq!(s, 400, "a reason is required to end too");
    assert!(page.contains("Not ended: reason: required"), "{page}");
    let (s, location, _) = alice.post_page(cp, &end, &[("csrf", &csrf), ("reason", "done")]);
    assert_eq!((s, location.as_str()), (303, "/appliances/a1"));
    assert_eq!(w.steered(), ["a1", "a2"]);
    let (_, page) = alice.page(cp, "/appliances/a1");
    assert_eq!(serving(&page), "Serving");
    assert!(
        page.contains("Recent windows over") && page.contains("user:alice@isp-a.example: done")
    );
    let (_, audit) = alice.api(cp, "/v1/portal/audit?limit=1");
    assert_eq!(audit[0]["action"], "maintenance.end");
    assert_eq!(audit[0]["details"]["reason"], "done");
}

#[test]
fn scheduled_windows_show_as_scheduled_and_the_json_api_takes_a_csrf_header() {
    let w = world();
    let cp = &w.cp;
    let alice = login(cp, ALICE);
    let csrf = alice.csrf(cp);
    let start = unix_now() + 3600;
    let (from, until) = (local(start), local(start + 4 * 3600));
    let (s, location, _) = alice.post_page(
        cp,
        "/sites/site-a/maintenance",
        &[
            ("csrf", &csrf),
            ("reason", "rack power"),
            ("when", "scheduled"),
            ("start", &from),
            ("end", &until),
        ],
    );
    assert_eq!((s, location.as_str()), (303, "/sites/site-a"));
    assert_eq!(w.steered(), ["a1", "a2"], "not yet in force");
    let (_, page) = alice.page(cp, "/sites/site-a");
    assert!(page.contains("<td>Scheduled</td>"), "{page}");
    assert!(page.contains("rack power") && page.contains("Cancel window"));
    assert!(page.contains("Times are UTC"));
    let (_, page) = alice.page(cp, "/appliances/a2");
    assert!(
        page.contains("site site-a (every appliance)"),
        "the site's window shows on its appliances"
    );
    assert_eq!(serving(&page), "Serving");

    // The JSON API: the token from the session, in a header.
    let (s, session) = alice.api(cp, "/v1/portal/session");
    assert_eq!(s, 200);
    assert_eq!(session["csrf"], csrf.as_str());
    assert_eq!(session["org"], "isp-a");
    let (s, list) = alice.api(cp, "/v1/portal/maintenance");
    assert_eq!(s, 200);
    assert_eq!(list[0]["phase"], "scheduled");
    let body = json!({"appliance": "a1", "reason": "reseat cable", "duration_secs": 600});
    assert_eq!(
        alice.post_json(cp, "/v1/portal/maintenance", &body, None).0,
        403
    );
    assert_eq!(
        alice
            .post_json(cp, "/v1/portal/maintenance", &body, Some("wrong"))
            .0,
        403
    );
    let (s, win) = alice.post_json(cp, "/v1/portal/maintenance", &body, Some(&csrf));
    assert_eq!(s, 201, "{win}");
    assert_eq!(win["created_by"], "user:alice@isp-a.example");
    assert_eq!(w.steered(), ["a2"]);
    let too_long = json!({"appliance": "a1", "reason": "x", "duration_secs": 49 * 3600});
    let (s, e) = alice.post_json(cp, "/v1/portal/maintenance", &too_long, Some(&csrf));
    assert_eq!(s, 400);
    assert!(e["message"].as_str().unwrap().contains("at most 48 hours"));
    let end = format!("/v1/portal/maintenance/{}/end", win["id"]);
    let (s, ended) = alice.post_json(cp, &end, &json!({"reason": "done"}), Some(&csrf));
    assert_eq!((s, ended["phase"].as_str()), (200, Some("ended")));
    assert_eq!(w.steered(), ["a1", "a2"]);
    let site_window = list[0]["id"].as_i64().unwrap();
    let cancel = format!("/v1/portal/maintenance/{site_window}/end");
    let (s, c) = alice.post_json(cp, &cancel, &json!({"reason": "moved"}), Some(&csrf));
    assert_eq!((s, c["phase"].as_str()), (200, Some("cancelled")));
    let (_, audit) = alice.api(cp, "/v1/portal/audit?limit=1");
    assert_eq!(audit[0]["action"], "maintenance.cancel");
}

#[test]
fn a_partner_can_neither_see_nor_change_another_organisations_appliance() {
    let w = world();
    let cp = &w.cp;
    let (alice, bob, op) = (login(cp, ALICE), login(cp, BOB), login(cp, OP));
    let (alice_csrf, bob_csrf) = (alice.csrf(cp), bob.csrf(cp));
    let form = |csrf: &str| {
        [
            ("csrf", csrf.to_string()),
            ("reason", "x".into()),
            ("duration", "3600".into()),
        ]
    };
    let a_form = form(&alice_csrf);
    let a_form: Vec<(&str, &str)> = a_form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        alice.post_page(cp, "/appliances/a1/maintenance", &a_form).0,
        303
    );
    let id = window_id(&alice, cp, "a1");

    // Bob (isp-b): a1 and site-a are 404 by page, form, API, history; its window too.
    assert_eq!(bob.page(cp, "/appliances/a1").0, 404);
    assert_eq!(bob.page(cp, "/sites/site-a").0, 404);
    let b_form = form(&bob_csrf);
    let b_form: Vec<(&str, &str)> = b_form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        bob.post_page(cp, "/appliances/a1/maintenance", &b_form).0,
        404
    );
    assert_eq!(
        bob.post_page(cp, "/sites/site-a/maintenance", &b_form).0,
        404
    );
    assert_eq!(
        bob.post_page(cp, "/appliances/nope/maintenance", &b_form).0,
        404
    );
    let end = [("csrf", bob_csrf.as_str()), ("reason", "mine now")];
    assert_eq!(
        bob.post_page(cp, &format!("/maintenance/{id}/end"), &end).0,
        404
    );
    let body = json!({"appliance": "a1", "reason": "x"});
    let (s, e) = bob.post_json(cp, "/v1/portal/maintenance", &body, Some(&bob_csrf));
    assert_eq!((s, e["code"].as_str()), (404, Some("not_found")));
    let body = json!({"appliance": "a1", "reason": "x", "duration_secs": 999_999});
    assert_eq!(
        bob.post_json(cp, "/v1/portal/maintenance", &body, Some(&bob_csrf))
            .0,
        404,
        "404 before any other check"
    );
    let (s, _) = bob.post_json(
        cp,
        &format!("/v1/portal/maintenance/{id}/end"),
        &json!({"reason": "x"}),
        Some(&bob_csrf),
    );
    assert_eq!(s, 404);
    for path in [
        "/v1/portal/history/appliances/a1",
        "/v1/portal/history/appliances/a1?format=csv",
        "/v1/portal/history/appliances/a1/chart.svg",
        "/v1/portal/history/sites/site-a",
        "/v1/portal/history/sites/site-a/chart.svg",
    ] {
        assert_eq!(bob.get(cp, path).status().as_u16(), 404, "{path}");
    }
    let (_, list) = bob.api(cp, "/v1/portal/maintenance?all=1");
    assert_eq!(list, json!([]), "bob sees no window of isp-a");
    assert_eq!(w.steered(), ["a2"], "a1 still disabled");

    // The audit log is scoped: bob sees only isp-b's, the operator everything.
    let b_form = form(&bob_csrf);
    let b_form: Vec<(&str, &str)> = b_form.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        bob.post_page(cp, "/appliances/b1/maintenance", &b_form).0,
        303
    );
    let (_, audit) = bob.api(cp, "/v1/portal/audit");
    let targets: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["appliance:b1"]);
    let (_, page) = bob.page(cp, "/audit");
    assert!(
        page.contains("appliance:b1") && !page.contains("appliance:a1"),
        "{page}"
    );
    let (_, page) = op.page(cp, "/audit");
    assert!(
        page.contains("appliance:b1") && page.contains("appliance:a1"),
        "{page}"
    );
    let (_, list) = op.api(cp, "/v1/portal/maintenance");
    assert_eq!(list.as_array().unwrap().len(), 2);
    // The operator may end anyone's window.
    let op_csrf = op.csrf(cp);
    let end = [("csrf", op_csrf.as_str()), ("reason", "operator")];
    assert_eq!(
        op.post_page(cp, &format!("/maintenance/{id}/end"), &end).0,
        303
    );
    assert_eq!(w.steered(), ["a1", "a2"]);
}

#[test]
fn traffic_charts_csv_and_fill_progress_for_ones_own_appliances() {
    let w = world();
    let cp = &w.cp;
    let alice = login(cp, ALICE);
    let (_, page) = alice.page(cp, "/appliances/a1");
    assert!(
        page.contains("<svg") && page.contains("role=\"img\""),
        "the chart is inline"
    );
    assert!(page.contains("href=\"/v1/portal/history/appliances/a1?format=csv\""));
    let r = alice.get(cp, "/v1/portal/history/appliances/a1?format=csv");
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = r.text().unwrap();
    assert!(csv.starts_with("start,start_utc,reports,"), "{csv}");
    assert!(csv.lines().count() >= 2, "a bucket with the report: {csv}");
    let r = alice.get(cp, "/v1/portal/history/appliances/a1/chart.svg");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/svg+xml");
    let (s, h) = alice.api(cp, "/v1/portal/history/sites/site-a");
    assert_eq!(s, 200);
    assert_eq!(h["of"], "site");
    assert_eq!(h["capacity_bps"], 20_000_000_000u64);
    assert_eq!(
        alice
            .api(cp, "/v1/portal/history/appliances/a1?format=xml")
            .0,
        400
    );

    // The site page: serving state, its chart (peaks summed, said so), misses, fill progress.
    let (s, page) = alice.page(cp, "/sites/site-a");
    assert_eq!(s, 200);
    assert!(
        page.contains("<svg") && page.contains("sum of their peaks"),
        "{page}"
    );
    assert!(page.contains("content misses"));
    let (_, site) = alice.api(cp, "/v1/portal/sites/site-a");
    for a in site["appliances"].as_array().unwrap() {
        let (held, planned) = (&a["fill"]["held"], &a["fill"]["planned"]);
        assert!(planned.as_u64().unwrap() >= 1, "{site}");
        assert!(held.as_u64().unwrap() <= planned.as_u64().unwrap());
        assert!(page.contains(&format!("{held}/{planned}")), "{page}");
        assert_eq!(a["serving"], "serving");
    }
    let held: u64 = site["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["fill"]["held"].as_u64().unwrap())
        .sum();
    assert!(held >= 1, "f1 is held and planned: {site}");
}

/// The ids an appliance's fill queue lists (the scoped API's `fill_queue`).
fn fill_queue(b: &Browser, cp: &Cp, id: &str) -> Vec<String> {
    let (s, a) = b.api(cp, &format!("/v1/portal/appliances/{id}"));
    assert_eq!(s, 200, "{a}");
    let queue = a["fill_queue"].as_array().unwrap();
    assert_eq!(
        a["fill_queue_total"].as_u64().unwrap() as usize,
        queue.len()
    );
    queue
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_fill_queue_lists_planned_unheld_files_until_a_report_says_they_are_held() {
    let w = world();
    let cp = &w.cp;
    let alice = login(cp, ALICE);
    // f2 is planned for site-a and nobody holds it: some appliance of the site queues it.
    let (id, queue) = ["a1", "a2"]
        .into_iter()
        .map(|id| (id, fill_queue(&alice, cp, id)))
        .find(|(_, q)| q.contains(&"f2".to_string()))
        .expect("f2 queued on an appliance of site-a");
    assert!(!queue.contains(&"f1".to_string()), "f1 is held: {queue:?}");
    let (_, a) = alice.api(cp, &format!("/v1/portal/appliances/{id}"));
    let f2 = &a["fill_queue"].as_array().unwrap()[0];
    assert_eq!((&f2["title"], &f2["size"]), (&json!("t1"), &json!(2000)));
    let (_, page) = alice.page(cp, &format!("/appliances/{id}"));
    assert!(page.contains("id=\"fill-queue\""), "{page}");
    assert!(page.contains("<th scope=\"row\">f2</th>"), "{page}");
    assert!(page.contains("2 kB"), "its size: {page}");

    // Once its report says it holds f2, the queue drops it.
    w.report_holding(id, 1, 1000, &["c1", "f1", "f2"]);
    assert_eq!(fill_queue(&alice, cp, id), Vec::<String>::new());
    let (_, page) = alice.page(cp, &format!("/appliances/{id}"));
    assert!(page.contains("Nothing to fill"), "{page}");
    assert!(!page.contains("<th scope=\"row\">f2</th>"), "{page}");
    // Another organisation's appliance: 404, queue and all.
    assert_eq!(alice.api(cp, "/v1/portal/appliances/b1").0, 404);
}

/// The `href`s of a page's links under `prefix`, escaped `&` read back.
fn links(page: &str, prefix: &str) -> Vec<String> {
    page.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|h| h.starts_with(prefix))
        .map(|h| h.replace("&amp;", "&").replace("&#38;", "&"))
        .collect()
}

#[test]
fn reports_sum_a_sites_history_link_its_csv_and_keep_to_the_users_sites() {
    let w = world();
    let cp = &w.cp;
    // Reports a second apart, so they cover seconds and bytes are served.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    w.report("a1", 10, 300_000_000);
    w.report("a2", 10, 200_000_000);
    let alice = login(cp, ALICE);

    // The form: only her sites; the header links here.
    let (s, page) = alice.page(cp, "/reports");
    assert_eq!(s, 200);
    assert!(page.contains("<a href=\"/reports\">Reports</a>"), "{page}");
    assert!(page.contains("<option value=\"site-a\""), "{page}");
    assert!(!page.contains("site-b"), "{page}");
    assert!(!page.contains("id=\"report\""), "no site chosen: {page}");

    // Her site's totals: the history API's, over the same range.
    let (s, page) = alice.page(cp, "/reports?site=site-a&range=24h");
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("<option value=\"site-a\" selected"), "{page}");
    let csv = links(&page, "/v1/portal/history/");
    assert_eq!(csv.len(), 3, "the site and its two appliances: {csv:?}");
    assert!(
        csv[0].starts_with("/v1/portal/history/sites/site-a?format=csv&from="),
        "{csv:?}"
    );
    assert!(csv[1].starts_with("/v1/portal/history/appliances/a1?"));
    assert!(csv[2].starts_with("/v1/portal/history/appliances/a2?"));
    let json_url = csv[0].replace("format=csv&", "");
    let (s, h) = alice.api(cp, &json_url);
    assert_eq!(s, 200, "{h}");
    let total = h["total_bytes"].as_u64().unwrap();
    assert!(total > 0, "{h}");
    let peak = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bytes_per_sec_peak"].as_u64().unwrap())
        .max()
        .unwrap();
    let total_row = page
        .split("id=\"report-total\"")
        .nth(1)
        .expect("a total row");
    assert!(
        total_row.contains(&format!("<data value=\"{total}\">")),
        "{total}: {total_row}"
    );
    let peak = format!("{:.2}", peak as f64 * 8.0 / 1e9);
    assert!(total_row.contains(&peak), "{peak}: {total_row}");
    for url in &csv {
        let r = alice.get(cp, url);
        assert_eq!(r.status().as_u16(), 200, "{url}");
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv"));
        assert!(r.text().unwrap().starts_with("start,start_utc,"));
    }

    // Days: one row for today; 30 days of 60-second buckets are cut to one call's span.
    let (s, page) = alice.page(cp, "/reports?site=site-a&range=7d");
    assert_eq!(s, 200);
    assert!(page.contains("one row per UTC day"), "{page}");
    assert!(!page.contains("id=\"report-cut\""), "{page}");
    let (s, page) = alice.page(cp, "/reports?site=site-a&range=30d");
    assert_eq!(s, 200);
    assert!(page.contains("id=\"report-cut\""), "{page}");

    // Another organisation's site, an unknown one, a range not offered.
    assert_eq!(alice.page(cp, "/reports?site=site-b&range=24h").0, 404);
    assert_eq!(alice.page(cp, "/reports?site=nowhere").0, 404);
    assert_eq!(alice.page(cp, "/reports?site=site-a&range=1y").0, 400);
    assert_eq!(alice.page(cp, "/reports?site=site-a&x=1").0, 400);
    // The operator chooses among every site.
    let op = login(cp, OP);
    let (_, page) = op.page(cp, "/reports?site=site-b");
    assert!(page.contains("<option value=\"site-a\""), "{page}");
    assert!(page.contains("<option value=\"site-b\" selected"), "{page}");
    // Signed out: to the login page.
    let r = client().get(url(cp, "/reports")).send().unwrap();
    assert_ne!(r.status().as_u16(), 200);
}
