//! Operational issues in the portal against the real control plane over HTTP, cookies by hand:
//! the overview, the site and appliance pages, `/issues` and `GET /v1/portal/issues` show a
//! partner its own organisation's issues and nothing of another's (404 or absent), the operator
//! everything, and cleared issues as cleared.
//!
//! ```text
//! isp-a: site-a  a1 (reports a failed disk; its URL refuses: unreachable)   alice@isp-a
//!                a2 (reports once, then falls silent)
//! isp-b: site-b  b1 (reports a failed disk)                                 bob@isp-b
//!                                                                           op@netflix
//! ```

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::portal::*;
use common::*;
use serde_json::{json, Value};

const ALICE: (&str, &str) = ("alice@isp-a.example", "alice's long password");
const BOB: (&str, &str) = ("bob@isp-b.example", "bob's long password!");
const OP: (&str, &str) = ("op@netflix.example", "operator password 1");

/// A port nothing listens on: a probe of it is refused.
fn refusing_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

fn report(id: &str, site: &str, disk_failed: bool) -> Value {
    let mut disks = vec![json!({"path": "/d0", "state": "ok",
                                "capacity_bytes": 1u64 << 40, "used_bytes": 0})];
    if disk_failed {
        disks.push(json!({"path": "/d1", "state": "failed",
                          "capacity_bytes": 1u64 << 40, "used_bytes": 0}));
    }
    json!({
        "oca_id": id, "site": site, "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0,
                    "capacity_bps": 1_000_000_000u64},
        "disks": disks,
        "prefixes": [],
        "inventory": {"kind": "full", "seq": 1, "content": ["c1"]}
    })
}

/// A control plane with the fleet above, and a thread sending the reports in `reports` every
/// 300 ms.
struct World {
    cp: Cp,
    reports: Arc<Mutex<HashMap<String, (String, Value)>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn world() -> World {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--report-interval",
        "1",
        "--probe-interval",
        "1",
        "--probe-timeout",
        "1",
    ];
    let cp = start_with(dir.path(), &args);
    for (org, site) in [("isp-a", "site-a"), ("isp-b", "site-b")] {
        let o = json!({"id": org, "name": org});
        assert_eq!(cp.admin("POST", "/v1/admin/orgs", Some(o)).0, 201);
        let s = json!({"id": site, "kind": "isp", "region": "eu", "org": org,
                       "allowed_prefixes": ["0.0.0.0/0"]});
        assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(s)).0, 201);
    }
    for (login, org) in [(ALICE, Some("isp-a")), (BOB, Some("isp-b")), (OP, None)] {
        let role = if org.is_some() { "partner" } else { "operator" };
        let u = json!({"login": login.0, "role": role, "org": org, "password": login.1});
        assert_eq!(cp.admin("POST", "/v1/admin/users", Some(u)).0, 201);
    }
    let mut creds = HashMap::new();
    for (id, site) in [("a1", "site-a"), ("a2", "site-a"), ("b1", "site-b")] {
        let a = json!({"id": id, "site": site, "url": refusing_url(),
                       "capacity_bps": 1_000_000_000u64});
        let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201, "{reg}");
        creds.insert(
            id.to_string(),
            reg["credential"].as_str().unwrap().to_string(),
        );
    }
    // a2 reports once, then never again.
    let (s, r) = cp.req(
        "POST",
        "/v1/appliances/a2/health",
        Some(report("a2", "site-a", false)),
        Some(&creds["a2"]),
    );
    assert_eq!(s, 200, "{r}");
    let reports: HashMap<String, (String, Value)> = [
        ("a1", report("a1", "site-a", true)),
        ("b1", report("b1", "site-b", true)),
    ]
    .into_iter()
    .map(|(id, r)| (id.to_string(), (creds[id].clone(), r)))
    .collect();
    let w = World {
        cp,
        reports: Arc::new(Mutex::new(reports)),
        stop: Arc::default(),
        _dir: dir,
    };
    let (addr, reports, stop) = (w.cp.addr, w.reports.clone(), w.stop.clone());
    std::thread::spawn(move || {
        let c = reqwest::blocking::Client::new();
        while !stop.load(SeqCst) {
            let now: Vec<(String, (String, Value))> = reports
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (id, (cred, body)) in now {
                let _ = c
                    .post(format!("http://{addr}/v1/appliances/{id}/health"))
                    .bearer_auth(cred)
                    .json(&body)
                    .send();
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    w
}

impl World {
    /// Open issues by (appliance, kind), from the admin API.
    fn open(&self) -> Vec<(String, String)> {
        let (s, v) = self.cp.admin("GET", "/v1/admin/issues?open=1", None);
        assert_eq!(s, 200, "{v}");
        pairs(&v)
    }

    fn fix_disk(&self, id: &str) {
        let mut r = self.reports.lock().unwrap();
        let (_, body) = r.get_mut(id).unwrap();
        let site = body["site"].as_str().unwrap().to_string();
        *body = report(id, &site, false);
    }
}

fn pairs(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|i| {
            let s = |k: &str| i[k].as_str().unwrap().to_string();
            (s("oca_id"), s("kind"))
        })
        .collect()
}

fn has(list: &[(String, String)], id: &str, kind: &str) -> bool {
    list.iter().any(|(i, k)| i == id && k == kind)
}

fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The text of the element with `id="<id>"` up to the next `</section>`.
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no {id}"));
    let rest = &page[at..];
    &rest[..rest.find("</section>").unwrap_or(rest.len())]
}

#[test]
fn issues_are_shown_to_their_organisation_and_the_operator_only() {
    let w = world();
    let cp = &w.cp;
    eventually(Duration::from_secs(15), "the issues are raised", || {
        let open = w.open();
        has(&open, "a1", "unreachable")
            && has(&open, "a1", "disk_failed")
            && has(&open, "a2", "silent")
            && has(&open, "b1", "disk_failed")
    });
    let (alice, bob, op) = (login(cp, ALICE), login(cp, BOB), login(cp, OP));

    // The overview: the organisation's open issues, most severe first, counts by severity,
    // each linking to its appliance; severity in words and a shape.
    let (s, page) = alice.page(cp, "/");
    assert_eq!(s, 200);
    let issues = section(&page, "open-issues");
    assert!(issues.contains("href=\"/appliances/a1\""), "{issues}");
    assert!(issues.contains("href=\"/appliances/a2\""), "{issues}");
    assert!(!issues.contains("b1"), "another organisation's: {issues}");
    assert!(issues.contains("Unreachable") && issues.contains("Silent"));
    assert!(issues.contains("Disk failed"));
    assert!(
        issues.contains("<span aria-hidden=\"true\">✖</span> Critical")
            && issues.contains("<span aria-hidden=\"true\">▲</span> Warning"),
        "{issues}"
    );
    let first_warning = issues.find("Warning").unwrap();
    let last_critical = issues.rfind("Critical").unwrap();
    assert!(last_critical < first_warning, "critical first: {issues}");
    assert!(
        issues.contains(" critical, "),
        "counts by severity: {issues}"
    );
    let (_, page) = bob.page(cp, "/");
    let issues = section(&page, "open-issues");
    assert!(issues.contains("href=\"/appliances/b1\""), "{issues}");
    assert!(!issues.contains("/appliances/a1"), "{issues}");
    assert!(
        page.contains("<a href=\"/issues\">Issues</a>"),
        "every page links the list"
    );
    let (_, page) = op.page(cp, "/");
    let issues = section(&page, "open-issues");
    for id in ["a1", "a2", "b1"] {
        assert!(
            issues.contains(&format!("/appliances/{id}\"")),
            "{id}: {issues}"
        );
    }

    // The site page: its appliances' open issues; a1 is out of steering, and says so.
    let (s, page) = alice.page(cp, "/sites/site-a");
    assert_eq!(s, 200);
    let issues = section(&page, "issues");
    assert!(
        issues.contains("Unreachable") && issues.contains("Silent"),
        "{issues}"
    );
    let a1_row = &page[page.find("href=\"/appliances/a1\">a1</a></th>").unwrap()..];
    let a1_row = &a1_row[..a1_row.find("</tr>").unwrap()];
    assert!(
        a1_row.contains("unreachable from the control plane"),
        "{a1_row}"
    );
    assert_eq!(bob.page(cp, "/sites/site-a").0, 404);

    // The appliance page: its open issues; another organisation's is 404.
    let (s, page) = alice.page(cp, "/appliances/a1");
    assert_eq!(s, 200);
    let issues = section(&page, "issues");
    assert!(
        issues.contains("Disk failed") && issues.contains("/d1"),
        "{issues}"
    );
    assert!(page.contains("id=\"out-of-steering\""), "the gate is named");
    assert_eq!(bob.page(cp, "/appliances/a1").0, 404);
    assert_eq!(op.page(cp, "/appliances/a1").0, 200);

    // /issues: open ones by default, the user's own; filters of another organisation 404.
    let (s, page) = alice.page(cp, "/issues");
    assert_eq!(s, 200);
    assert!(page.contains("/appliances/a2") && !page.contains("/appliances/b1"));
    assert_eq!(bob.page(cp, "/issues?appliance=a1").0, 404);
    assert_eq!(bob.page(cp, "/issues?site=site-a").0, 404);
    assert_eq!(bob.page(cp, "/issues?appliance=nothing").0, 404);
    assert_eq!(alice.page(cp, "/issues?all=7").0, 400);
    let (s, page) = op.page(cp, "/issues?site=site-b");
    assert_eq!(s, 200);
    assert!(page.contains("/appliances/b1") && !page.contains("/appliances/a1"));

    // The API: the same scope.
    let (s, v) = alice.api(cp, "/v1/portal/issues?open=1");
    assert_eq!(s, 200, "{v}");
    let mine = pairs(&v);
    assert!(has(&mine, "a1", "disk_failed") && has(&mine, "a2", "silent"));
    assert!(mine.iter().all(|(id, _)| id != "b1"), "{v}");
    let (s, v) = bob.api(cp, "/v1/portal/issues?appliance=a1");
    assert_eq!(s, 404, "{v}");
    assert_eq!(v["code"], "not_found", "{v}");
    assert_eq!(bob.api(cp, "/v1/portal/issues?site=site-a").0, 404);
    let (_, v) = bob.api(cp, "/v1/portal/issues");
    assert!(pairs(&v).iter().all(|(id, _)| id == "b1"), "{v}");
    let (_, v) = op.api(cp, "/v1/portal/issues?open=1");
    assert!(has(&pairs(&v), "b1", "disk_failed") && has(&pairs(&v), "a1", "unreachable"));
    assert_eq!(alice.api(cp, "/v1/portal/issues?open=2").0, 400);
    assert_eq!(alice.api(cp, "/v1/portal/issues?limit=0").0, 400);
    assert_eq!(alice.api(cp, "/v1/portal/issues?what=1").0, 400);
    assert_eq!(
        client()
            .get(url(cp, "/v1/portal/issues"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        401,
        "signed out"
    );
    // Paged by id: one at a time, older each time, no repeats. Compared by id and kind, from
    // below the newest id: the checker goes on touching `last_seen` and may raise new issues
    // between the reads (under load it did, and the whole objects differed by a second).
    let (_, all) = alice.api(cp, "/v1/portal/issues");
    let key = |i: &Value| (i["id"].as_i64(), i["oca_id"].clone(), i["kind"].clone());
    let all: Vec<_> = all.as_array().unwrap().iter().map(key).collect();
    let (mut before, mut seen) = (all.first().and_then(|i| i.0).map(|id| id + 1), Vec::new());
    loop {
        let q = before.map_or(String::new(), |b| format!("&before={b}"));
        let (s, v) = alice.api(cp, &format!("/v1/portal/issues?limit=1{q}"));
        assert_eq!(s, 200);
        let Some(i) = v.as_array().unwrap().first() else {
            break;
        };
        seen.push(key(i));
        before = i["id"].as_i64();
    }
    assert_eq!(seen, all, "the pages hold every issue once, newest first");

    // a1's disk is replaced: the issue is cleared, and shown as cleared.
    w.fix_disk("a1");
    eventually(Duration::from_secs(10), "a1's disk_failed cleared", || {
        !has(&w.open(), "a1", "disk_failed")
    });
    let (_, page) = alice.page(cp, "/appliances/a1");
    let issues = section(&page, "issues");
    let cleared = &issues[issues.find("Recently cleared").expect("a cleared table")..];
    assert!(
        cleared.contains("Disk failed") && cleared.contains("Cleared</span> 2"),
        "{cleared}"
    );
    let (_, page) = alice.page(cp, "/issues");
    assert!(
        page.contains("/appliances/a1"),
        "a1's other issues are open"
    );
    assert!(!page.contains("Disk failed"), "open only by default");
    let (_, page) = alice.page(cp, "/issues?appliance=a1");
    assert!(!page.contains("Disk failed"), "open only by default");
    let (_, page) = alice.page(cp, "/issues?appliance=a1&all=1");
    assert!(
        page.contains("Disk failed") && page.contains("Cleared</span>"),
        "{page}"
    );
    let (_, v) = alice.api(cp, "/v1/portal/issues?appliance=a1");
    let disk = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["kind"] == "disk_failed")
        .expect("the cleared issue is listed");
    assert!(disk["cleared_at"].is_i64(), "{disk}");
    let (_, page) = bob.page(cp, "/issues?all=1");
    assert!(
        !page.contains("/appliances/a1"),
        "another organisation's cleared issue"
    );
}
