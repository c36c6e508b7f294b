//! The partner portal's accounts against the real control plane over HTTP: organisations and
//! users made with ocactl, logins, the session cookie, logout, CSRF and cross-site refusals,
//! login rate limiting, and what partners and operators may see, by page and by API.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::portal::*;
use common::*;
use reqwest::header::LOCATION;
use serde_json::{json, Value};

const ALICE: (&str, &str) = ("alice@isp-a.example", "alice's long password");
const BOB: (&str, &str) = ("bob@isp-b.example", "bob's long password!");
const OP: (&str, &str) = ("op@netflix.example", "operator password 1");

fn ok(cp: &Cp, args: &[&str]) -> String {
    let (ok, out, err) = ocactl(cp, args);
    assert!(ok, "ocactl {args:?}: {err}");
    out
}

/// Two organisations, each with a site, an appliance and a partner user (made with ocactl,
/// one password from a file, one from standard input), and an operator; isp-a's appliance
/// has reported.
fn populate(cp: &Cp, dir: &std::path::Path) {
    ok(cp, &["org", "add", "isp-a", "--name", "ISP A"]);
    ok(cp, &["org", "add", "isp-b", "--name", "ISP B"]);
    assert!(ok(cp, &["org", "list"]).contains("ISP B"));
    ok(
        cp,
        &[
            "site",
            "add",
            "site-a",
            "--kind",
            "isp",
            "--region",
            "eu",
            "--org",
            "isp-a",
            "--allowed-prefix",
            "192.0.2.0/24",
        ],
    );
    ok(
        cp,
        &["site", "add", "site-b", "--kind", "isp", "--region", "eu"],
    );
    ok(cp, &["site", "set-org", "site-b", "isp-b"]);
    let sites = ok(cp, &["site", "list", "--json"]);
    assert!(sites.contains("\"org\": \"isp-b\""), "{sites}");
    let mut creds = Vec::new();
    for (id, site) in [("oca-a1", "site-a"), ("oca-b1", "site-b")] {
        let a = json!({"id": id, "site": site, "url": "http://127.0.0.1:1", "capacity_bps": 10_000_000_000u64});
        let (s, reg) = cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201);
        creds.push(reg["credential"].as_str().unwrap().to_string());
    }
    let report = json!({
        "oca_id": "oca-a1", "site": "site-a", "version": "0.1.0", "status": "ok",
        "serving": {"active_connections": 42, "bytes_per_sec": 250_000_000u64, "requests_per_sec": 3, "capacity_bps": 10_000_000_000u64},
        "disks": [{"path": "/srv/oca/disk0", "state": "ok", "capacity_bytes": 4_000_000_000_000u64, "used_bytes": 1_000_000_000_000u64},
                  {"path": "/srv/oca/disk1", "state": "failed", "capacity_bytes": 4_000_000_000_000u64, "used_bytes": 0}],
        "prefixes": ["192.0.2.0/24"],
        "inventory": {"kind": "full", "seq": 1, "content": []}
    });
    let (s, _) = cp.req(
        "POST",
        "/v1/appliances/oca-a1/health",
        Some(report),
        Some(&creds[0]),
    );
    assert_eq!(s, 200);

    let file = dir.join("alice.pw");
    std::fs::write(&file, format!("{}\n", ALICE.1)).unwrap();
    ok(
        cp,
        &[
            "user",
            "add",
            ALICE.0,
            "--org",
            "isp-a",
            "--password-file",
            file.to_str().unwrap(),
        ],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ocactl"))
        .args([
            "--url",
            &url(cp, ""),
            "--token",
            &cp.token,
            "user",
            "add",
            BOB.0,
            "--org",
            "isp-b",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", BOB.1).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "password from standard input"
    );
    let (s, _) = cp.admin(
        "POST",
        "/v1/admin/users",
        Some(json!({"login": OP.0, "role": "operator", "password": OP.1})),
    );
    assert_eq!(s, 201);
    let users = ok(cp, &["user", "list", "--json"]);
    assert!(
        users.contains(ALICE.0) && users.contains("\"role\": \"operator\""),
        "{users}"
    );
    assert!(
        !users.contains("argon2"),
        "hashes are never listed: {users}"
    );
}

#[test]
fn accounts_sessions_csrf_and_scoping() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    populate(&cp, dir.path());

    // Signed out: / leads to the login page; pages and API need a session.
    let r = client().get(url(&cp, "/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()[LOCATION], "/login");
    let r = client().get(url(&cp, "/login")).send().unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
    let body = r.text().unwrap();
    assert!(
        body.contains("<html lang=\"en\">") && body.contains("<label for=\"password\">"),
        "{body}"
    );
    assert_eq!(
        client()
            .get(url(&cp, "/sites/site-a"))
            .send()
            .unwrap()
            .status(),
        303
    );
    assert_eq!(
        client()
            .get(url(&cp, "/v1/portal/sites"))
            .send()
            .unwrap()
            .status(),
        401
    );

    // Wrong password and unknown login: one answer, no cookie.
    for (user, pw) in [(ALICE.0, "not the password"), ("nobody@example", ALICE.1)] {
        let r = login_response(&cp, user, pw);
        assert_eq!(r.status().as_u16(), 401);
        assert!(session_cookie(&r).is_none());
        assert!(r.text().unwrap().contains("Wrong login or password."));
    }

    // The session cookie's attributes.
    let r = login_response(&cp, ALICE.0, ALICE.1);
    assert_eq!(r.status().as_u16(), 303);
    let set = session_cookie(&r).unwrap();
    assert!(set.starts_with("__Host-oca_session="), "{set}");
    for attr in ["; Secure", "; HttpOnly", "; SameSite=Strict", "; Path=/"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }
    assert!(!set.contains("Domain="), "{set}");

    // Partner A sees its site and appliance only, by page and by API.
    let alice = login(&cp, ALICE);
    let (s, overview) = alice.page(&cp, "/");
    assert_eq!(s, 200);
    assert!(
        overview.contains("site-a") && !overview.contains("site-b"),
        "{overview}"
    );
    assert!(overview.contains("Open issues"));
    let (s, site) = alice.page(&cp, "/sites/site-a");
    assert_eq!(s, 200);
    assert!(
        site.contains("oca-a1") && site.contains(">2.00<") && site.contains("42"),
        "{site}"
    );
    assert!(site.contains("1 of 2 working"), "{site}");
    let (s, page) = alice.page(&cp, "/appliances/oca-a1");
    assert_eq!(s, 200);
    for part in [
        "/srv/oca/disk1",
        "failed",
        "Traffic",
        "Maintenance",
        "Issues",
    ] {
        assert!(page.contains(part), "{part} in {page}");
    }
    assert_eq!(alice.page(&cp, "/sites/site-b").0, 404);
    assert_eq!(alice.page(&cp, "/appliances/oca-b1").0, 404);
    let (s, sites) = alice.api(&cp, "/v1/portal/sites");
    assert_eq!(s, 200);
    let ids: Vec<&str> = sites
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["site-a"]);
    assert_eq!(sites[0]["appliances"]["ok"], 1);
    let (s, a) = alice.api(&cp, "/v1/portal/appliances/oca-a1");
    assert_eq!((s, a["appliance"]["connections"].as_u64()), (200, Some(42)));
    // Another organisation's objects are 404, exactly as missing ones.
    let (s, b) = alice.api(&cp, "/v1/portal/sites/site-b");
    let (_, missing) = alice.api(&cp, "/v1/portal/sites/no-such-site");
    assert_eq!(s, 404);
    assert_eq!(b["code"], missing["code"]);
    assert_eq!(alice.api(&cp, "/v1/portal/appliances/oca-b1").0, 404);

    // Partner B the other way round.
    let bob = login(&cp, BOB);
    assert_eq!(bob.api(&cp, "/v1/portal/sites/site-b").0, 200);
    assert_eq!(bob.api(&cp, "/v1/portal/sites/site-a").0, 404);
    assert_eq!(bob.page(&cp, "/appliances/oca-a1").0, 404);

    // The operator sees all.
    let op = login(&cp, OP);
    let (_, sites) = op.api(&cp, "/v1/portal/sites");
    assert_eq!(sites.as_array().unwrap().len(), 2);
    assert_eq!(op.page(&cp, "/appliances/oca-b1").0, 200);
    assert_eq!(op.api(&cp, "/v1/portal/sites/site-a").0, 200);

    // Logout needs the session's CSRF token and a same-site origin.
    let csrf = alice.csrf(&cp);
    assert_eq!(alice.post(&cp, "/logout", &[], &[]), 403, "no token");
    assert_eq!(alice.post(&cp, "/logout", &[("csrf", "wrong")], &[]), 403);
    assert_eq!(
        alice.post(&cp, "/logout", &[("csrf", &bob.csrf(&cp))], &[]),
        403,
        "another session's token"
    );
    assert_eq!(
        alice.post(
            &cp,
            "/logout",
            &[("csrf", &csrf)],
            &[("origin", "https://evil.example")]
        ),
        403,
        "cross-site origin"
    );
    assert_eq!(
        alice.post(
            &cp,
            "/logout",
            &[("csrf", &csrf)],
            &[("sec-fetch-site", "cross-site")]
        ),
        403
    );
    assert_eq!(alice.page(&cp, "/").0, 200, "still signed in");
    let origin = url(&cp, "");
    assert_eq!(
        alice.post(&cp, "/logout", &[("csrf", &csrf)], &[("origin", &origin)]),
        303
    );
    assert_eq!(alice.page(&cp, "/").0, 303, "the session ended");
    assert_eq!(alice.api(&cp, "/v1/portal/sites").0, 401);
    assert_eq!(
        bob.api(&cp, "/v1/portal/sites").0,
        200,
        "other sessions go on"
    );

    // A cross-site login is refused too.
    let r = client()
        .post(url(&cp, "/login"))
        .header("origin", "https://evil.example")
        .form(&[("login", ALICE.0), ("password", ALICE.1)])
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);

    let m = metrics(&cp);
    assert!(
        test_support::metric(&m, "cp_portal_logins_total") >= 4.0,
        "{m}"
    );
    assert_eq!(
        test_support::metric(&m, "cp_portal_login_failures_total"),
        2.0
    );
}

#[test]
fn logins_are_rate_limited_and_recover() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start_with(
        dir.path(),
        &[
            "--portal-insecure-cookies",
            "--portal-login-failures",
            "3",
            "--portal-login-window",
            "3",
        ],
    );
    populate(&cp, dir.path());
    for _ in 0..3 {
        assert_eq!(
            login_response(&cp, ALICE.0, "wrong password!")
                .status()
                .as_u16(),
            401
        );
    }
    // Blocked now, even with the right password, until the window passes.
    let r = login_response(&cp, ALICE.0, ALICE.1);
    assert_eq!(r.status().as_u16(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3).contains(&retry), "{retry}");
    assert!(session_cookie(&r).is_none());
    std::thread::sleep(std::time::Duration::from_secs(retry + 1));
    let r = login_response(&cp, ALICE.0, ALICE.1);
    assert_eq!(r.status().as_u16(), 303, "recovered");
    // Insecure cookies (labs on plain HTTP): no Secure, no __Host- prefix, the rest kept.
    let set = session_cookie(&r).unwrap();
    assert!(
        set.starts_with("oca_session=") && !set.contains("Secure"),
        "{set}"
    );
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let m = metrics(&cp);
    assert_eq!(
        test_support::metric(&m, "cp_portal_login_failures_total"),
        4.0
    );
}

#[test]
fn admin_account_requests_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path());
    ok(&cp, &["org", "add", "isp-a", "--name", "ISP A"]);
    let user = |body: Value| cp.admin("POST", "/v1/admin/users", Some(body));
    let short =
        user(json!({"login": "a@x", "role": "partner", "org": "isp-a", "password": "short"}));
    assert_eq!(short.0, 400);
    assert!(
        short.1["message"].as_str().unwrap().contains("12"),
        "{short:?}"
    );
    let long = "x".repeat(1025);
    assert_eq!(
        user(json!({"login": "a@x", "role": "partner", "org": "isp-a", "password": long})).0,
        400
    );
    assert_eq!(
        user(json!({"login": "a@x", "role": "partner", "password": "twelve chars"})).0,
        400
    );
    assert_eq!(
        user(
            json!({"login": "a@x", "role": "operator", "org": "isp-a", "password": "twelve chars"})
        )
        .0,
        400
    );
    assert_eq!(
        user(json!({"login": "a@x", "role": "partner", "org": "nope", "password": "twelve chars"}))
            .0,
        404
    );
    assert_eq!(
        user(json!({"login": "a x", "role": "operator", "password": "twelve chars"})).0,
        400
    );
    assert_eq!(
        user(
            json!({"login": "a@x", "role": "partner", "org": "isp-a", "password": "twelve chars"})
        )
        .0,
        201
    );
    assert_eq!(
        user(
            json!({"login": "a@x", "role": "partner", "org": "isp-a", "password": "twelve chars"})
        )
        .0,
        409
    );
    // Without the admin token: nothing.
    let (s, _) = cp.req(
        "POST",
        "/v1/admin/orgs",
        Some(json!({"id": "x", "name": "X"})),
        None,
    );
    assert_eq!(s, 401);
    let (s, _) = cp.req("GET", "/v1/admin/users", None, None);
    assert_eq!(s, 401);
    // A password is never taken from the command line.
    let (ok_, _, err) = ocactl(
        &cp,
        &[
            "user",
            "add",
            "b@x",
            "--org",
            "isp-a",
            "--password",
            "twelve chars",
        ],
    );
    assert!(!ok_, "{err}");
    // Site owners: the organisation must exist, and so must the site.
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/sites",
            Some(json!({"id": "s", "kind": "isp", "region": "eu", "org": "nope"}))
        )
        .0,
        404
    );
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/sites",
            Some(json!({"id": "s", "kind": "isp", "region": "eu"}))
        )
        .0,
        201
    );
    let (ok_, _, err) = ocactl(&cp, &["site", "set-org", "s", "nope"]);
    assert!(!ok_ && err.contains("404"), "{err}");
    let (ok_, _, err) = ocactl(&cp, &["site", "set-org", "t", "isp-a"]);
    assert!(!ok_ && err.contains("404"), "{err}");
}
