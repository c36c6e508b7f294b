//! Control-plane replicas behind a real HAProxy (Debian's `haproxy`, installed by `.ci/run`):
//! `/readyz`, the drain on SIGTERM, `kill -9` under load, and the client's address through the
//! proxy. Each replica has its own SQLite file (these tests need two backends, not shared
//! state); they share one admin token file, as every replica is given one.
//!
//! HAProxy connects to the replicas from 127.0.0.2 (their `--trusted-proxy`); test clients
//! connect from other loopback addresses, so a client is never mistaken for the proxy.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{db_of, licensed_world, start_with, Cp};
use serde_json::{json, Value};
use test_support::haproxy::skip_without_haproxy;
use test_support::haproxy::Haproxy;

/// HAProxy's address towards the replicas.
const PROXY: &str = "127.0.0.2";

/// HAProxy's check interval × fall, as `Haproxy::start` configures it.
const INTER_TIMES_FALL: Duration = Duration::from_millis(500 * 2);

/// A replica with its own database in `dir/<name>`, the shared token file and `extra` flags.
fn replica(dir: &Path, name: &str, extra: &[&str]) -> Cp {
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    let token = dir.join("admin-token");
    let token = token.to_str().unwrap();
    let mut args = vec!["--admin-token-file", token, "--trusted-proxy", PROXY];
    args.extend_from_slice(extra);
    let cp = start_with(&own, &args);
    wait_ready(cp.addr);
    cp
}

/// `GET /readyz` straight from the replica: (status, body).
fn readyz(addr: SocketAddr) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .get(format!("http://{addr}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn wait_ready(addr: SocketAddr) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, body) = readyz(addr);
        if s == 200 {
            assert_eq!(body, "ready\n");
            return;
        }
        assert!(Instant::now() < end, "not ready after 10 s: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// HAProxy in front of `replicas`, once it has every one of them UP.
fn haproxy(dir: &Path, replicas: &[(&str, &Cp)]) -> Haproxy {
    let servers: Vec<(&str, SocketAddr)> = replicas.iter().map(|(n, cp)| (*n, cp.addr)).collect();
    let h = Haproxy::start(dir, &servers, Some(PROXY.parse().unwrap()));
    for (name, _) in replicas {
        assert!(
            h.wait_status(name, "UP", Duration::from_secs(10)).is_some(),
            "{name} never UP: {:?}\n{}",
            h.servers(),
            h.proc.log()
        );
    }
    h
}

/// What a bounded request loop saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// What a request loop sends.
#[derive(Clone, Copy)]
enum Requests {
    /// An admin list: a GET, which HAProxy may replay on another replica.
    Reads,
    /// Admin writes (a new site each): HAProxy never replays them, so only a replica that
    /// finishes what it was sent keeps them from failing.
    Writes,
}

/// `threads` loops of `requests` through HAProxy until `stop`, at most 20 s or 20,000
/// requests each; every request has a 10 s deadline.
fn load(
    addr: SocketAddr,
    token: &str,
    threads: usize,
    requests: Requests,
    stop: &Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<std::thread::JoinHandle<()>>) {
    let tally = Arc::new(Tally::default());
    let handles = (0..threads)
        .map(|t| {
            let (tally, stop, token) = (tally.clone(), stop.clone(), token.to_string());
            std::thread::spawn(move || {
                let c = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .unwrap();
                let start = Instant::now();
                for i in 0..20_000 {
                    if stop.load(SeqCst) || start.elapsed() > Duration::from_secs(20) {
                        break;
                    }
                    let url = format!("http://{addr}/v1/admin/sites");
                    let r = match requests {
                        Requests::Reads => c.get(url),
                        Requests::Writes => c.post(url).json(
                            &json!({"id": format!("s{t}-{i}"), "kind": "isp", "region": "eu"}),
                        ),
                    };
                    match r.bearer_auth(&token).send() {
                        Ok(r) if r.status().is_success() => {
                            tally.ok.fetch_add(1, SeqCst);
                        }
                        other => {
                            tally.failed.fetch_add(1, SeqCst);
                            let what = match other {
                                Ok(r) => format!("{} {:?}", r.status(), r.text()),
                                Err(e) => format!("{e:?}"),
                            };
                            tally.failures.lock().unwrap().push(what);
                        }
                    }
                }
            })
        })
        .collect();
    (tally, handles)
}

fn finish(stop: &AtomicBool, handles: Vec<std::thread::JoinHandle<()>>) {
    stop.store(true, SeqCst);
    for h in handles {
        h.join().unwrap();
    }
}

fn sigterm(cp: &Cp) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(cp.child.id() as i32, libc::SIGTERM) };
}

/// The child's exit, waiting up to `within`.
fn exit_within(cp: &mut Cp, within: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Some(s) = cp.child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_draining_replica_leaves_haproxy_without_a_failed_request() {
    if skip_without_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The default drain period (3 s) against HAProxy's 500 ms × 2.
    let mut r1 = replica(dir.path(), "r1", &[]);
    let r2 = replica(dir.path(), "r2", &[]);
    let h = haproxy(dir.path(), &[("r1", &r1), ("r2", &r2)]);
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, loops) = load(h.addr, &r1.token, 2, Requests::Writes, &stop);
    std::thread::sleep(Duration::from_millis(700));

    let t0 = Instant::now();
    sigterm(&r1);
    // 503 at once, the reason in the body; the replica still serves meanwhile.
    let end = t0 + Duration::from_millis(500);
    let body = loop {
        let (s, body) = readyz(r1.addr);
        if s == 503 {
            break body;
        }
        assert!(
            Instant::now() < end,
            "/readyz still {s} 500 ms after SIGTERM"
        );
    };
    assert_eq!(body, "not ready: draining\n");
    let down = h
        .wait_status("r1", "DOWN", Duration::from_secs(5))
        .map(|_| t0.elapsed())
        .unwrap_or_else(|| panic!("r1 never DOWN: {:?}", h.servers()));
    let sent_to_r1 = h.servers()["r1"].sessions;
    eprintln!("r1 DOWN {} ms after SIGTERM", down.as_millis());
    assert!(
        down <= INTER_TIMES_FALL + Duration::from_millis(500),
        "DOWN after {down:?}, checks every 500 ms, fall 2"
    );
    let (s, _) = r1.admin("GET", "/v1/admin/sites", None);
    assert_eq!(
        s, 200,
        "a draining replica still serves during its drain period"
    );
    assert_eq!(readyz(r2.addr).0, 200);

    let status = exit_within(&mut r1, Duration::from_secs(15)).expect("r1 exits");
    let stopped = t0.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        stopped >= Duration::from_secs(3) && stopped < Duration::from_secs(8),
        "exited {stopped:?} after SIGTERM (drain period 3 s, nothing in flight)"
    );
    std::thread::sleep(Duration::from_millis(300));
    finish(&stop, loops);
    let stats = h.servers();
    eprintln!(
        "{} requests answered, {} failed; HAProxy: {stats:?}",
        tally.ok.load(SeqCst),
        tally.failed.load(SeqCst)
    );
    assert_eq!(
        tally.failed.load(SeqCst),
        0,
        "{:?}",
        tally.failures.lock().unwrap()
    );
    assert!(tally.ok.load(SeqCst) >= 100, "the loop ran");
    assert_eq!(
        stats["r1"].sessions, sent_to_r1,
        "nothing sent to r1 once it was DOWN"
    );
    // What the drain period is for: HAProxy never found r1 gone. (With `--drain-period 0`,
    // HAProxy redispatched 54-72 connections of this loop after finding r1's port closed: its
    // retries hid it here, but a load balancer without them, or a client straight to the
    // replica, would have seen the failures.)
    assert_eq!(
        (stats["r1"].retries, stats["r1"].redispatches),
        (0, 0),
        "HAProxy had to retry away from r1"
    );
    assert!(stats["r2"].sessions > 0);
}

/// Every replica failing its check at once (here both draining with a long drain period; in
/// the full-size fleet benchmark, both behind on the change feed under the same load) leaves
/// HAProxy sending to them anyway through the fallback lines, rather than answering 503 itself.
#[test]
fn when_no_replica_passes_its_check_haproxy_still_sends_to_them() {
    if skip_without_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--drain-period", "30"];
    let r1 = replica(dir.path(), "r1", &flags);
    let r2 = replica(dir.path(), "r2", &flags);
    let h = haproxy(dir.path(), &[("r1", &r1), ("r2", &r2)]);
    sigterm(&r1);
    sigterm(&r2);
    for name in ["r1", "r2"] {
        assert!(
            h.wait_status(name, "DOWN", Duration::from_secs(5))
                .is_some(),
            "{name} never DOWN: {:?}",
            h.servers()
        );
    }
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..10 {
        let r = c
            .get(format!("http://{}/v1/admin/sites", h.addr))
            .bearer_auth(&r1.token)
            .send()
            .unwrap();
        let status = r.status();
        assert_eq!(status, 200, "{:?}", r.text());
    }
    let stats = h.servers();
    assert!(
        stats["r1-fallback"].sessions + stats["r2-fallback"].sessions >= 10,
        "{stats:?}"
    );
}

#[test]
fn kill_9_of_a_replica_under_load_fails_no_request() {
    if skip_without_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut r1 = replica(dir.path(), "r1", &[]);
    let r2 = replica(dir.path(), "r2", &[]);
    let h = haproxy(dir.path(), &[("r1", &r1), ("r2", &r2)]);
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, loops) = load(h.addr, &r1.token, 4, Requests::Reads, &stop);
    std::thread::sleep(Duration::from_millis(1000));
    let before = tally.ok.load(SeqCst);

    let t0 = Instant::now();
    r1.child.kill().unwrap();
    r1.child.wait().unwrap();
    let down = h
        .wait_status("r1", "DOWN", Duration::from_secs(5))
        .map(|_| t0.elapsed())
        .unwrap_or_else(|| panic!("r1 never DOWN: {:?}", h.servers()));
    eprintln!("r1 DOWN {} ms after kill -9", down.as_millis());
    assert!(
        down <= INTER_TIMES_FALL + Duration::from_millis(500),
        "DOWN after {down:?}, checks every 500 ms, fall 2"
    );
    std::thread::sleep(Duration::from_millis(500));
    finish(&stop, loops);
    let stats = h.servers();
    eprintln!(
        "{} requests answered ({before} before the kill), {} failed; HAProxy: {stats:?}",
        tally.ok.load(SeqCst),
        tally.failed.load(SeqCst)
    );
    assert_eq!(
        tally.failed.load(SeqCst),
        0,
        "{:?}",
        tally.failures.lock().unwrap()
    );
    assert!(
        before >= 50 && tally.ok.load(SeqCst) > before,
        "the loop ran across the kill"
    );
}

/// A play through HAProxy from loopback address `from`, with these `X-Forwarded-For` lines.
fn play_from(h: &Haproxy, from: &str, forwarded: &[&str], token: &str) -> (u16, Value) {
    let c = reqwest::blocking::Client::builder()
        .local_address(from.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut r = c
        .post(format!("http://{}/v1/play", h.addr))
        .bearer_auth(token)
        .json(&json!({"title": "t1"}));
    for f in forwarded {
        r = r.header("x-forwarded-for", *f);
    }
    let r = r.send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

#[test]
fn the_client_address_through_haproxy_believes_trusted_hops_only() {
    if skip_without_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.3 is a trusted host in front of HAProxy (a load generator, another proxy);
    // 127.0.0.4 is anybody.
    let cp = replica(dir.path(), "r1", &["--trusted-proxy", "127.0.0.3"]);
    let token = licensed_world(&cp);
    let h = haproxy(dir.path(), &[("r1", &cp)]);

    // The trusted host says who its client is: licensed in NL, steered to a1.
    let (s, ans) = play_from(&h, "127.0.0.3", &["198.51.100.7"], &token);
    assert_eq!(s, 200, "{ans}");
    assert!(ans.to_string().contains("a1.example"), "{ans}");
    // What came left of the trusted host's hop is the client's to invent: not believed.
    let (s, ans) = play_from(&h, "127.0.0.3", &["203.0.113.9, 198.51.100.7"], &token);
    assert_eq!(s, 200, "{ans}");

    // Anybody else sending the same header is seen at its own address (in no zone, so in no
    // country): HAProxy's own line names it, the spoofed line is not believed.
    for spoof in [
        &["198.51.100.7"][..],
        &["198.51.100.7", "198.51.100.8"],
        &[],
    ] {
        let (s, ans) = play_from(&h, "127.0.0.4", spoof, &token);
        assert_eq!(
            (s, ans["code"].as_str()),
            (403, Some("not_licensed")),
            "{spoof:?}: {ans}"
        );
    }
}

/// Lets the PostgreSQL database at `url` take sessions, or refuses them and cuts those it has.
fn sessions_allowed(url: &str, allowed: bool) {
    let name = url.split('?').next().unwrap().rsplit('/').next().unwrap();
    let cut = if allowed {
        String::new()
    } else {
        format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
    };
    let server = test_support::postgres::server_url().unwrap();
    test_support::postgres::with_client(&server, |c| {
        c.batch_execute(&format!(
            "ALTER DATABASE \"{name}\" ALLOW_CONNECTIONS {allowed}; {cut}"
        ))
        .unwrap()
    });
}

#[test]
fn readyz_is_503_while_storage_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = db_of(&dir.path().join("r1"));
    let cp = replica(dir.path(), "r1", &[]);
    // SQLite: another process holds the database's write lock. PostgreSQL: the database
    // refuses sessions and the replica's are cut (a server gone, as far as it can tell).
    // Either way this replica cannot take a lease or a report now.
    let lock = match &db {
        common::Db::Sqlite(path) => {
            let c = rusqlite::Connection::open(path).unwrap();
            c.execute_batch("BEGIN IMMEDIATE").unwrap();
            Some(c)
        }
        common::Db::Postgres(url) => {
            sessions_allowed(url, false);
            None
        }
    };
    let t0 = Instant::now();
    let (mut s, mut body) = readyz(cp.addr);
    while s == 200 && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        (s, body) = readyz(cp.addr);
    }
    assert_eq!((s, body.as_str()), (503, "not ready: storage failing\n"));
    eprintln!(
        "503 {} ms after storage was taken away",
        t0.elapsed().as_millis()
    );
    // The check has a deadline: the probe itself answers at once meanwhile.
    let asked = Instant::now();
    assert_eq!(readyz(cp.addr).0, 503);
    assert!(asked.elapsed() < Duration::from_millis(500));
    assert_eq!(
        readyz(cp.addr).0,
        503,
        "still failing while storage is away"
    );
    match (&db, lock) {
        (_, Some(c)) => c.execute_batch("ROLLBACK").unwrap(),
        (common::Db::Postgres(url), None) => sessions_allowed(url, true),
        _ => unreachable!(),
    }
    wait_ready(cp.addr);
}

#[test]
fn requests_in_flight_finish_after_the_drain_period_within_the_drain_timeout() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let flags = ["--drain-period", "0.5", "--drain-timeout", "3"];
    let mut cp = replica(dir.path(), "r1", &flags);
    let body = br#"{"id": "late", "kind": "isp", "region": "eu"}"#;
    let head = format!(
        "POST /v1/admin/sites HTTP/1.1\r\nHost: cp\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        cp.token,
        body.len()
    );
    // One request half sent when SIGTERM comes, one that will never be whole.
    let mut slow = std::net::TcpStream::connect(cp.addr).unwrap();
    slow.write_all(head.as_bytes()).unwrap();
    slow.write_all(&body[..10]).unwrap();
    let mut stuck = std::net::TcpStream::connect(cp.addr).unwrap();
    stuck.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    sigterm(&cp);
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        std::net::TcpStream::connect(cp.addr).is_err(),
        "the listener is closed once the drain period is over"
    );
    slow.write_all(&body[10..]).unwrap();
    let mut answer = String::new();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    let status = exit_within(&mut cp, Duration::from_secs(10)).expect("exits");
    let stopped = t0.elapsed();
    assert!(status.success(), "{status}");
    assert!(
        stopped >= Duration::from_millis(3400) && stopped < Duration::from_secs(6),
        "exited {stopped:?} after SIGTERM: drain period 0.5 s, then 3 s for the stuck request"
    );
    assert!(test_support::closed_within(
        &mut stuck,
        Duration::from_secs(1)
    ));
}

#[test]
fn plays_split_across_two_replicas_on_one_database_score_as_on_one() {
    let dir = tempfile::tempdir().unwrap();
    // Two processes on one database (with SQLite, one file: WAL works across processes on one
    // host; with OCA_TEST_DB=postgres, one PostgreSQL database).
    let flags = ["--trusted-proxy", "127.0.0.1", "--drain-period", "0"];
    let mut a = start_with(dir.path(), &flags);
    let token = licensed_world(&a);
    let mut b = start_with(dir.path(), &flags);
    let c = reqwest::blocking::Client::new();
    let play = |cp: &Cp| {
        let r = c
            .post(format!("http://{}/v1/play", cp.addr))
            .bearer_auth(&token)
            .header("x-forwarded-for", "198.51.100.7")
            .json(&json!({"title": "t1"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "{:?}", r.text());
    };
    for i in 0..80 {
        play(if i % 8 < 3 { &a } else { &b });
    }
    for cp in [&mut a, &mut b] {
        sigterm(cp);
        let status = exit_within(cp, Duration::from_secs(15)).expect("exits");
        assert!(status.success(), "{status}");
    }
    let score = db_of(dir.path()).real("SELECT score FROM popularity WHERE title = 't1'");
    // 30 plays on one, 50 on the other, seconds apart against a 24-hour half-life.
    assert!((score - 80.0).abs() < 0.05, "t1 scored {score}, 80 plays");
}

/// A request through `h` from the test's own address (127.0.0.1, in the test's zone): its
/// status and how long it took.
fn timed(
    h: &Haproxy,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Duration) {
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let url = format!("http://{}{path}", h.addr);
    let mut r = match method {
        "POST" => c.post(url),
        _ => c.get(url),
    };
    if let Some(b) = body {
        r = r.json(&b);
    }
    let t = Instant::now();
    let s = r.bearer_auth(token).send().unwrap().status().as_u16();
    (s, t.elapsed())
}

#[test]
fn a_hung_replica_gets_reads_and_plays_replayed_elsewhere_but_not_admin_writes() {
    if skip_without_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Both replicas on one SQLite file, so a play is answered alike by either.
    let shared = dir.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let r1 = start_with(&shared, &["--trusted-proxy", PROXY]);
    let player = licensed_world(&r1);
    let (s, z) = r1.admin(
        "POST",
        "/v1/admin/zones",
        Some(json!({"prefix": "127.0.0.0/8", "site": "isp-a", "country": "NL"})),
    );
    assert_eq!(s, 201, "{z}");
    let r2 = start_with(&shared, &["--trusted-proxy", PROXY]);
    wait_ready(r1.addr);
    wait_ready(r2.addr);
    // Answers within 2 s or not at all; checks that never take r1 out, so it keeps being
    // sent its share of requests while it hangs.
    let servers = [("r1", r1.addr), ("r2", r2.addr)];
    let h = Haproxy::start_tweaked(dir.path(), &servers, Some(PROXY.parse().unwrap()), |c| {
        c.timeout_server_secs = 2;
        c.fall = 1000;
    });
    for name in ["r1", "r2"] {
        assert!(h.wait_status(name, "UP", Duration::from_secs(10)).is_some());
    }
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(r1.child.id() as i32, libc::SIGSTOP) };

    // Until one of a kind's requests has met the hung replica (it then takes over 2 s):
    // what that one was answered.
    let token = r1.token.clone();
    let met_r1 = |method: &str, path: &str, body: &dyn Fn(usize) -> Option<Value>, who: &str| {
        for i in 0..6 {
            let (s, took) = timed(&h, method, path, who, body(i));
            if took >= Duration::from_secs(2) {
                eprintln!("{method} {path}: {s} after {} ms", took.as_millis());
                return s;
            }
            assert!((200..300).contains(&s), "{method} {path} from r2: {s}");
        }
        panic!("{method} {path}: six requests and none went to r1");
    };
    assert_eq!(met_r1("GET", "/v1/admin/sites", &|_| None, &token), 200);
    let play = |_| Some(json!({"title": "t1"}));
    assert_eq!(met_r1("POST", "/v1/play", &play, &player), 200);
    let site = |i| Some(json!({"id": format!("late-{i}"), "kind": "isp", "region": "eu"}));
    assert_eq!(
        met_r1("POST", "/v1/admin/sites", &site, &token),
        504,
        "an admin write is not replayed"
    );
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(r1.child.id() as i32, libc::SIGCONT) };
}

#[test]
fn haproxy_terminates_tls_in_front_of_plain_replicas() {
    if skip_without_haproxy() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cp = replica(dir.path(), "r1", &[]);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    test_support::write_self_signed(&cert, &key, &["127.0.0.1".to_string()]).unwrap();
    let pem = dir.path().join("haproxy.pem");
    let both = [std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()].concat();
    std::fs::write(&pem, both).unwrap();
    let h = Haproxy::start_tweaked(
        dir.path(),
        &[("r1", cp.addr)],
        Some(PROXY.parse().unwrap()),
        |c| c.tls_pem = Some(pem.clone()),
    );
    assert!(h.wait_status("r1", "UP", Duration::from_secs(10)).is_some());
    let c = reqwest::blocking::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let r = c
        .get(format!("https://{}/v1/admin/sites", h.addr))
        .bearer_auth(&cp.token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
}
