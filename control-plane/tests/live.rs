//! Live checks against the real binary: the prober fetches a signed range from appliance
//! stand-ins (real HTTP and HTTPS servers on loopback that verify the signature with the keys
//! the control plane hands their appliance), unreachable appliances leave steering and come
//! back, operational issues are raised and cleared, qualifications gate steering.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use oca_protocol::keys::Keyring;
use oca_protocol::signing::{verify, Scope};
use serde_json::{json, Value};
use tokio_rustls::rustls;

const PREFIX: &str = "198.51.100.0/24";
const CLIENT: &str = "198.51.100.7";

/// An appliance stand-in: answers a signed range request with 206, anything else with 403,
/// over plain HTTP or TLS; can be stopped (its port refuses) and started again on its port.
struct Standin {
    addr: SocketAddr,
    ring: Arc<Mutex<Option<Keyring>>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// Signed range requests answered.
    good: Arc<AtomicUsize>,
    /// Requests refused (bad signature, no range).
    bad: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Standin {
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Standin {
        let mut s = Standin {
            addr: "127.0.0.1:0".parse().unwrap(),
            ring: Arc::default(),
            tls,
            good: Arc::default(),
            bad: Arc::default(),
            stop: Arc::default(),
            thread: None,
        };
        s.listen();
        s
    }

    fn listen(&mut self) {
        let listener = TcpListener::bind(self.addr).unwrap();
        self.addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, SeqCst);
        let (ring, tls, good, bad, stop) = (
            self.ring.clone(),
            self.tls.clone(),
            self.good.clone(),
            self.bad.clone(),
            self.stop.clone(),
        );
        self.thread = Some(std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let ok = serve(conn, tls.clone(), &ring);
                        if ok { &good } else { &bad }.fetch_add(1, SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// Closes the listener: connections are refused until [`Standin::resume`].
    fn halt(&mut self) {
        self.stop.store(true, SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    fn resume(&mut self) {
        self.listen();
    }

    fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Answers one request; true when it was a correctly signed range request.
fn serve(
    conn: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    ring: &Mutex<Option<Keyring>>,
) -> bool {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    match tls {
        Some(cfg) => {
            let Ok(server) = rustls::ServerConnection::new(cfg) else {
                return false;
            };
            answer(&mut rustls::StreamOwned::new(server, conn), ring)
        }
        None => answer(&mut { conn }, ring),
    }
}

fn answer(s: &mut impl ReadWrite, ring: &Mutex<Option<Keyring>>) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.split_whitespace().nth(1).unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let id = path.strip_prefix("/c/").unwrap_or("");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = ring
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|r| verify(r, id, query, Scope::Play, now).is_ok());
    let ranged = head
        .to_ascii_lowercase()
        .contains("\r\nrange: bytes=0-1023\r\n");
    let ok = signed && ranged;
    let reply = if ok {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-1023/4096\r\nContent-Length: 1024\r\nConnection: close\r\n\r\n{}",
            "x".repeat(1024)
        )
    } else {
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
    };
    let _ = s.write_all(reply.as_bytes());
    let _ = s.flush();
    ok
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A stand-in's keys, learnt from its appliance's health replies.
type Ring = Arc<Mutex<Option<Keyring>>>;

/// A control plane, one ISP site, and a thread reporting for the appliances in `reports` every
/// 300 ms (each stand-in gets its appliance's keys from the replies).
struct World {
    cp: Cp,
    creds: Arc<Mutex<std::collections::HashMap<String, String>>>,
    reports: Arc<Mutex<std::collections::HashMap<String, Value>>>,
    rings: Arc<Mutex<std::collections::HashMap<String, Ring>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn world(extra: &[&str]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--report-interval",
        "1",
        "--probe-interval",
        "1",
        "--probe-timeout",
        "1",
    ];
    args.extend_from_slice(extra);
    let cp = start_with(dir.path(), &args);
    let site =
        json!({"id": "isp-a", "kind": "isp", "region": "eu", "allowed_prefixes": ["0.0.0.0/0"]});
    assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    let w = World {
        cp,
        creds: Arc::default(),
        reports: Arc::default(),
        rings: Arc::default(),
        stop: Arc::default(),
        _dir: dir,
    };
    let (addr, creds, reports, rings, stop) = (
        w.cp.addr,
        w.creds.clone(),
        w.reports.clone(),
        w.rings.clone(),
        w.stop.clone(),
    );
    std::thread::spawn(move || {
        let c = reqwest::blocking::Client::new();
        while !stop.load(SeqCst) {
            let now: Vec<(String, Value)> = reports
                .lock()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (id, body) in now {
                let cred = creds.lock().unwrap()[&id].clone();
                let r = c
                    .post(format!("http://{addr}/v1/appliances/{id}/health"))
                    .bearer_auth(cred)
                    .json(&body)
                    .send();
                let Ok(r) = r else { continue };
                let reply: Value = r.json().unwrap_or(Value::Null);
                if let Some(ring) = rings.lock().unwrap().get(&id) {
                    let keys: Vec<oca_protocol::keys::KeyJson> =
                        serde_json::from_value(reply["keys"].clone()).unwrap_or_default();
                    *ring.lock().unwrap() = Keyring::from_wire(&keys).ok();
                }
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    w
}

/// A health report holding `c1`, hearing [`PREFIX`], with `extra` fields set.
fn report(id: &str, extra: Value) -> Value {
    let mut r = json!({
        "oca_id": id, "site": "isp-a", "version": "t", "status": "ok",
        "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1_000_000_000u64},
        "disks": [{"path": "/d0", "state": "ok", "capacity_bytes": 1u64 << 40, "used_bytes": 0}],
        "prefixes": [PREFIX],
        "inventory": {"kind": "full", "seq": 1, "content": ["c1"]}
    });
    for (k, v) in extra.as_object().unwrap() {
        r[k] = v.clone();
    }
    r
}

impl World {
    /// Registers appliance `id` at `url`; reports for it from now on (when `report` is some);
    /// `standin`: the stand-in that learns its keys.
    fn add(&self, id: &str, url: &str, report: Option<Value>, standin: Option<&Standin>) {
        let a = json!({"id": id, "site": "isp-a", "url": url, "capacity_bps": 1_000_000_000u64});
        let (s, reg) = self.cp.admin("POST", "/v1/admin/appliances", Some(a));
        assert_eq!(s, 201, "{reg}");
        let cred = reg["credential"].as_str().unwrap().to_string();
        self.creds.lock().unwrap().insert(id.into(), cred);
        if let Some(s) = standin {
            self.rings.lock().unwrap().insert(id.into(), s.ring.clone());
        }
        if let Some(r) = report {
            self.reports.lock().unwrap().insert(id.into(), r);
        }
    }

    fn cred(&self, id: &str) -> String {
        self.creds.lock().unwrap()[id].clone()
    }

    /// Steering for [`CLIENT`] and `c1`: the appliances offered and the explanation.
    fn steer(&self) -> (Vec<String>, Value) {
        self.cp.steer(CLIENT, "c1")
    }

    /// Issues of `id` (open ones only when `open`).
    fn issues(&self, id: &str, open: bool) -> Vec<Value> {
        let q = if open { "&open=1" } else { "" };
        let (s, v) = self
            .cp
            .admin("GET", &format!("/v1/admin/issues?appliance={id}{q}"), None);
        assert_eq!(s, 200, "{v}");
        v.as_array().unwrap().clone()
    }

    /// The open issue of `kind` on `id`, waiting up to `within` for it.
    fn wait_issue(&self, id: &str, kind: &str, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let open = self.issues(id, true);
            if let Some(i) = open.iter().find(|i| i["kind"] == kind) {
                return i.clone();
            }
            assert!(
                Instant::now() < until,
                "no open {kind} issue on {id} within {within:?}: {open:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Waits up to `within` for `what` to hold.
fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn an_unreachable_appliance_leaves_steering_and_comes_back() {
    let mut a1 = Standin::start(None);
    let a2 = Standin::start(None);
    let w = world(&[]);
    w.add("a1", &a1.url(), Some(report("a1", json!({}))), Some(&a1));
    w.add("a2", &a2.url(), Some(report("a2", json!({}))), Some(&a2));
    // The probes are signed as playback signs: the stand-ins verify them with their keys.
    eventually(
        Duration::from_secs(10),
        "both stand-ins answer signed probes",
        || a1.good.load(SeqCst) > 0 && a2.good.load(SeqCst) > 0,
    );
    eventually(Duration::from_secs(5), "both steered", || {
        w.steer().0.len() == 2
    });
    assert_eq!(
        a1.bad.load(SeqCst) + a2.bad.load(SeqCst),
        0,
        "no probe refused"
    );

    // Its port refuses; reports still flow, so only the prober can tell.
    a1.halt();
    let refused_at = Instant::now();
    eventually(Duration::from_secs(8), "a1 out of steering", || {
        w.steer().0 == ["a2"]
    });
    let gone_after = refused_at.elapsed();
    assert!(
        gone_after >= Duration::from_millis(900),
        "one failed probe is not enough: {gone_after:?}"
    );
    let (_, ans) = w.steer();
    let why = reason(&ans, "a1");
    assert!(
        why.starts_with("unreachable from the control plane: ") && why.contains("onnect"),
        "{why}"
    );
    let issue = w.wait_issue("a1", "unreachable", Duration::from_secs(5));
    assert_eq!(issue["severity"], "critical");
    assert_eq!(issue["site"], "isp-a");
    assert!(issue["cleared_at"].is_null());
    assert!(
        issue["message"]
            .as_str()
            .unwrap()
            .contains("probes in a row failed"),
        "{issue}"
    );
    let m = metrics(&w.cp);
    assert!(
        m.contains(r#"cp_open_issues{kind="unreachable",severity="critical"} 1"#),
        "{m}"
    );
    let (ok, out, err) = ocactl(&w.cp, &["issues", "--appliance", "a1", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"unreachable\""), "{out}");

    // One good probe brings it back, and the issue is cleared.
    a1.resume();
    eventually(Duration::from_secs(6), "a1 back in steering", || {
        w.steer().0.len() == 2
    });
    eventually(Duration::from_secs(5), "the issue cleared", || {
        w.issues("a1", false)
            .iter()
            .any(|i| i["kind"] == "unreachable" && i["cleared_at"].is_i64())
    });
    assert!(!w
        .issues("a1", true)
        .iter()
        .any(|i| i["kind"] == "unreachable"));
    let (ok, open, _) = ocactl(&w.cp, &["issues", "--appliance", "a1", "--json"]);
    assert!(ok && !open.contains("\"unreachable\""), "{open}");
    let (ok, all, _) = ocactl(&w.cp, &["issues", "--all", "--appliance", "a1", "--json"]);
    assert!(ok && all.contains("\"unreachable\""), "{all}");
    assert!(w
        .issues("a2", false)
        .iter()
        .all(|i| i["kind"] != "unreachable"));
}

/// Days since 1970-01-01 to (year, month, day).
fn civil(days: i64) -> (i32, u8, u8) {
    let u = oca_protocol::utc::Utc::of(days * 86_400);
    (u.year as i32, u.month as u8, u.day as u8)
}

/// A TLS server config for 127.0.0.1 whose self-signed certificate expires in `days` days,
/// and the certificate's PEM (the prober's CA).
fn tls_expiring_in(days: i64) -> (Arc<rustls::ServerConfig>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let (y, m, d) = civil(today - 1);
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = civil(today + days);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.self_signed(&key).unwrap();
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der)
        .unwrap();
    (Arc::new(cfg), cert.pem())
}

#[test]
fn silence_a_failed_disk_bgp_down_and_an_expiring_certificate_raise_issues() {
    let (tls, ca) = tls_expiring_in(5);
    let t1 = Standin::start(Some(tls));
    let up = Standin::start(None);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("probe-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let w = world(&["--probe-ca", ca_file.to_str().unwrap()]);
    w.add("t1", &t1.url(), Some(report("t1", json!({}))), Some(&t1));
    let failed_disk = json!({"disks": [
        {"path": "/d0", "state": "ok", "capacity_bytes": 1u64 << 40, "used_bytes": 0},
        {"path": "/d1", "state": "failed", "capacity_bytes": 1u64 << 40, "used_bytes": 0}]});
    w.add("d1", &up.url(), Some(report("d1", failed_disk)), Some(&up));
    let bgp = json!({"bgp": {"sessions": [
        {"neighbor": "192.0.2.1", "peer_as": 64500, "state": "established", "since": 1,
         "prefixes_received": 1, "prefixes_accepted": 1, "flaps": 0},
        {"neighbor": "192.0.2.2", "peer_as": 64500, "state": "active", "since": 1,
         "prefixes_received": 0, "prefixes_accepted": 0, "flaps": 3, "last_error": "hold timer expired"}],
        "routes": [{"prefix": PREFIX, "neighbor": "192.0.2.1", "as_path": [64500], "origin": "igp"}]}});
    w.add("g1", &up.url(), Some(report("g1", bgp)), None);
    // s1 reports once, then falls silent.
    w.add("s1", &up.url(), None, None);
    let (s, r) = w.cp.req(
        "POST",
        "/v1/appliances/s1/health",
        Some(report("s1", json!({}))),
        Some(&w.cred("s1")),
    );
    assert_eq!(s, 200, "{r}");

    let cert = w.wait_issue("t1", "cert_expiring", Duration::from_secs(10));
    assert_eq!(cert["severity"], "warning");
    assert!(
        cert["message"].as_str().unwrap().contains("expires in"),
        "{cert}"
    );
    assert!(
        t1.good.load(SeqCst) > 0,
        "the HTTPS probe verified the certificate"
    );
    assert!(w
        .issues("t1", true)
        .iter()
        .all(|i| i["kind"] != "unreachable"));

    let disk = w.wait_issue("d1", "disk_failed", Duration::from_secs(5));
    assert_eq!(disk["severity"], "warning");
    assert!(disk["message"].as_str().unwrap().contains("/d1"), "{disk}");

    let down = w.wait_issue("g1", "bgp_down", Duration::from_secs(5));
    assert_eq!(down["severity"], "warning");
    let msg = down["message"].as_str().unwrap();
    assert!(
        msg.contains("192.0.2.2") && msg.contains("hold timer expired"),
        "{msg}"
    );

    let silent = w.wait_issue("s1", "silent", Duration::from_secs(8));
    assert_eq!(silent["severity"], "critical");

    // Every appliance lacks a qualification: a warning each, listed by site too.
    let (_, by_site) =
        w.cp.admin("GET", "/v1/admin/issues?open=1&site=isp-a", None);
    let quals = by_site
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["kind"] == "qualification")
        .count();
    assert_eq!(quals, 4, "{by_site}");

    // The disk comes back: the issue clears, with its time.
    w.reports
        .lock()
        .unwrap()
        .insert("d1".into(), report("d1", json!({})));
    eventually(Duration::from_secs(5), "disk_failed cleared", || {
        w.issues("d1", false)
            .iter()
            .any(|i| i["kind"] == "disk_failed" && i["cleared_at"].is_i64())
    });
}

fn qualification(passed: bool) -> Value {
    json!({"passed": passed, "host": "oca-1", "kernel": "6.12", "checks": [
        {"name": "disk.seq_read[/d0]", "status": if passed { "pass" } else { "fail" },
         "value": 900.0, "unit": "MB/s", "threshold": ">= 1000", "detail": ""}]})
}

#[test]
fn qualification_gates_steering_when_required() {
    let q1 = Standin::start(None);
    let w = world(&["--require-qualification"]);
    w.add("q1", &q1.url(), Some(report("q1", json!({}))), Some(&q1));
    let upload = |body: Value, cred: &str| {
        w.cp.req(
            "POST",
            "/v1/appliances/q1/qualification",
            Some(body),
            Some(cred),
        )
    };
    eventually(Duration::from_secs(5), "q1 reported and probed", || {
        q1.good.load(SeqCst) > 0
    });
    let (ids, ans) = w.steer();
    assert!(ids.is_empty(), "{ans}");
    assert_eq!(
        reason(&ans, "q1"),
        "not qualified: no qualification uploaded"
    );

    // Only its own credential uploads; the body is bounded and checked.
    assert_eq!(upload(qualification(true), "wrong").0, 401);
    let (s, e) = upload(json!({"passed": "yes"}), &w.cred("q1"));
    assert_eq!(s, 400, "{e}");
    let huge = json!({"passed": true, "checks": [], "host": "x".repeat(300 << 10)});
    assert_eq!(upload(huge, &w.cred("q1")).0, 413);

    let (s, r) = upload(qualification(false), &w.cred("q1"));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["passed"], false);
    let (ids, ans) = w.steer();
    assert!(ids.is_empty(), "{ans}");
    assert!(reason(&ans, "q1").contains("failed"), "{ans}");
    // Open since it had none; the next check names the failure.
    eventually(Duration::from_secs(5), "the issue says it failed", || {
        let issue = w.wait_issue("q1", "qualification", Duration::from_secs(5));
        issue["message"].as_str().unwrap().contains("failed")
    });

    let (s, r) = upload(qualification(true), &w.cred("q1"));
    assert_eq!((s, &r["passed"]), (200, &json!(true)), "{r}");
    assert_eq!(w.steer().0, ["q1"]);
    eventually(
        Duration::from_secs(5),
        "qualification issue cleared",
        || {
            !w.issues("q1", true)
                .iter()
                .any(|i| i["kind"] == "qualification")
        },
    );
}
