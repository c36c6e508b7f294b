//! The fill agent against broken or hostile counterparts, each a small real server on loopback
//! that the test starts: a fake control plane (health replies and manifests as the test says,
//! or accepting and never answering, or TLS with a certificate the agent does not trust) and
//! fill sources that redirect, drip, send too much, resume from the wrong place or encode.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_support::content_bytes;
use test_support::proc::Proc;

const MIB: usize = 1 << 20;

fn sha(b: &[u8]) -> String {
    oca_protocol::manifest::hex(&Sha256::digest(b))
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn agent_bin() -> PathBuf {
    test_support::cargo_bins(false, &[("fill-agent", "fill-agent")])["fill-agent"].clone()
}

/// One HTTP/1.1 request as read off the wire.
struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(r: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut words = line.split_whitespace();
    let (method, path) = (words.next()?.to_string(), words.next()?.to_string());
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

fn head(w: &mut impl Write, status: &str, headers: &[(&str, String)]) -> std::io::Result<()> {
    let mut text = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        text += &format!("{k}: {v}\r\n");
    }
    text += "\r\n";
    w.write_all(text.as_bytes())
}

/// Accepts connections on loopback, each on its own thread, handing every request to
/// `handle` until it returns false or the client goes.
fn serve(handle: impl Fn(Request, &mut TcpStream) -> bool + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let handle = handle.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                while let Some(req) = read_request(&mut reader) {
                    if !handle(req, &mut conn) {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// What the fake control plane answers.
#[derive(Default)]
struct CpState {
    version: u64,
    manifest: Value,
    stall: bool,
    stalled_since: Option<Instant>,
    reports: Vec<Value>,
}

/// A control plane that takes health reports and serves the manifest the test sets.
struct FakeCp {
    url: String,
    state: Arc<Mutex<CpState>>,
}

impl FakeCp {
    fn start() -> FakeCp {
        let state = Arc::new(Mutex::new(CpState::default()));
        let s = state.clone();
        let addr = serve(move |req, conn| {
            let mut st = s.lock();
            if st.stall {
                // Accepted, read, never answered.
                st.stalled_since.get_or_insert_with(Instant::now);
                drop(st);
                std::thread::sleep(Duration::from_secs(3600));
                return false;
            }
            let (status, body) = if req.method == "POST" && req.path.ends_with("/health") {
                let report: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
                let seq = report["inventory"]["seq"].as_u64().unwrap_or(0);
                st.reports.push(report);
                let reply = json!({"keys": [{"id": "k1", "secret": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}],
                    "manifest_version": st.version, "report_interval_secs": 1,
                    "inventory_seq": seq, "send_full_inventory": false});
                ("200 OK", reply.to_string())
            } else if req.path.ends_with("/manifest") && st.version > 0 {
                if req.headers.get("if-none-match") == Some(&format!("\"{}\"", st.version)) {
                    ("304 Not Modified", String::new())
                } else {
                    let mut m = st.manifest.clone();
                    m["version"] = json!(st.version);
                    ("200 OK", m.to_string())
                }
            } else {
                ("404 Not Found", String::new())
            };
            drop(st);
            let headers = [
                ("Content-Type", "application/json".to_string()),
                ("Content-Length", body.len().to_string()),
            ];
            head(conn, status, &headers).is_ok() && conn.write_all(body.as_bytes()).is_ok()
        });
        FakeCp {
            url: format!("http://{addr}"),
            state,
        }
    }

    /// Serves a new manifest version.
    fn set_manifest(&self, entries: Vec<Value>, intended_empty: bool) {
        let mut st = self.state.lock();
        st.version += 1;
        st.manifest = json!({"fill_window": null, "rate_limit_bps": 0, "entries": entries,
            "intended_empty": intended_empty});
    }

    fn stall(&self) {
        self.state.lock().stall = true;
    }

    fn last_report(&self) -> Value {
        let st = self.state.lock();
        st.reports.last().cloned().unwrap_or(Value::Null)
    }
}

/// Fill sources at `/<mode>/<id>`: `good` (ranges honoured, `?bps=N` paces it), `redirect`
/// (to `canary`), `oversize` (one byte too many), `resume0` (a resume answered from byte 0),
/// `short` (half, then the connection closes), `gzip` (claims an encoding), `gated` (503
/// until opened).
struct Sources {
    addr: SocketAddr,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    log: Arc<Mutex<Vec<Request>>>,
    gate: Arc<AtomicBool>,
}

impl Sources {
    fn start() -> Sources {
        let files: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let gate = Arc::new(AtomicBool::new(false));
        let (f, l, g) = (files.clone(), log.clone(), gate.clone());
        let addr = Arc::new(Mutex::new(None::<SocketAddr>));
        let me = addr.clone();
        let bound = serve(move |req, conn| {
            let (path, query) = req.path.split_once('?').unwrap_or((req.path.as_str(), ""));
            let mut parts = path.trim_start_matches('/').splitn(2, '/');
            let (mode, id) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let body = f.lock().get(id).cloned();
            let range = req.headers.get("range").cloned();
            l.lock().push(Request {
                method: req.method.clone(),
                path: req.path.clone(),
                headers: req.headers.clone(),
                body: Vec::new(),
            });
            let Some(body) = body else {
                let _ = head(conn, "404 Not Found", &[("Content-Length", "0".into())]);
                return false;
            };
            let bps = query
                .strip_prefix("bps=")
                .and_then(|b| b.parse::<usize>().ok());
            let n = body.len();
            let close = ("Connection", "close".to_string());
            let _ = match mode {
                "redirect" => {
                    let to = format!("http://{}/canary/{id}", me.lock().unwrap());
                    head(
                        conn,
                        "302 Found",
                        &[("Location", to), ("Content-Length", "0".into()), close],
                    )
                }
                "oversize" => head(
                    conn,
                    "200 OK",
                    &[("Content-Length", (n + 1).to_string()), close],
                )
                .and_then(|_| conn.write_all(&body))
                .and_then(|_| conn.write_all(b"!")),
                "resume0" if range.is_some() => head(
                    conn,
                    "206 Partial Content",
                    &[
                        ("Content-Range", format!("bytes 0-{}/{n}", n - 1)),
                        ("Content-Length", n.to_string()),
                        close,
                    ],
                )
                .and_then(|_| conn.write_all(&body)),
                "short" => head(conn, "200 OK", &[("Content-Length", n.to_string()), close])
                    .and_then(|_| conn.write_all(&body[..n / 2])),
                "gzip" => head(
                    conn,
                    "200 OK",
                    &[
                        ("Content-Encoding", "gzip".into()),
                        ("Content-Length", n.to_string()),
                        close,
                    ],
                )
                .and_then(|_| conn.write_all(&body)),
                "gated" if !g.load(Ordering::SeqCst) => head(
                    conn,
                    "503 Service Unavailable",
                    &[("Content-Length", "0".into()), close],
                ),
                _ => serve_good(conn, &body, range.as_deref(), bps),
            };
            false
        });
        *addr.lock() = Some(bound);
        Sources {
            addr: bound,
            files,
            log,
            gate,
        }
    }

    /// Adds a file of `len` bytes (the test's deterministic bytes for `id`); returns them.
    fn add(&self, id: &str, len: usize) -> Vec<u8> {
        let body = content_bytes(id, len);
        self.files.lock().insert(id.to_string(), body.clone());
        body
    }

    fn url(&self, mode: &str, id: &str) -> String {
        format!("http://{}/{mode}/{id}", self.addr)
    }

    /// A manifest entry for `id` with sources of the given modes (`mode` or `mode?query`), in
    /// order.
    fn entry(&self, id: &str, modes: &[&str]) -> Value {
        let body = self.files.lock()[id].clone();
        let sources: Vec<Value> = modes
            .iter()
            .map(|m| {
                let (mode, query) = m.split_once('?').unwrap_or((m, ""));
                let mut url = self.url(mode, id);
                if !query.is_empty() {
                    url = format!("{url}?{query}");
                }
                json!({"kind": "peer", "oca_id": format!("peer-{mode}"), "url": url})
            })
            .collect();
        json!({"content_id": id, "size": body.len(), "sha256": sha(&body), "sources": sources})
    }

    fn requests(&self, path_prefix: &str) -> Vec<HashMap<String, String>> {
        self.log
            .lock()
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .map(|r| r.headers.clone())
            .collect()
    }
}

/// Serves `body` honouring `Range: bytes=N-`, paced to `bps` bytes per second when given.
fn serve_good(
    conn: &mut TcpStream,
    body: &[u8],
    range: Option<&str>,
    bps: Option<usize>,
) -> std::io::Result<()> {
    let n = body.len();
    let from = range
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|r| r.parse::<usize>().ok());
    let close = ("Connection", "close".to_string());
    let rest = match from {
        Some(f) => {
            head(
                conn,
                "206 Partial Content",
                &[
                    ("Content-Range", format!("bytes {f}-{}/{n}", n - 1)),
                    ("Content-Length", (n - f).to_string()),
                    close,
                ],
            )?;
            &body[f..]
        }
        None => {
            head(conn, "200 OK", &[("Content-Length", n.to_string()), close])?;
            body
        }
    };
    match bps {
        None => conn.write_all(rest),
        Some(bps) => {
            let step = (bps / 10).max(1);
            for chunk in rest.chunks(step) {
                conn.write_all(chunk)?;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok(())
        }
    }
}

/// An appliance's directory: its store, credential and keys file.
struct Appliance {
    dir: tempfile::TempDir,
}

impl Appliance {
    fn new() -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("store/tmp")).unwrap();
        std::fs::write(dir.path().join("credential"), "secret-credential").unwrap();
        Appliance { dir }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn object(&self, id: &str) -> PathBuf {
        self.store().join("objects").join(&id[..2]).join(id)
    }

    fn put(&self, id: &str, body: &[u8]) {
        let p = self.object(id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    fn holds(&self, id: &str, body: &[u8]) -> bool {
        std::fs::read(self.object(id)).is_ok_and(|b| b == body)
    }

    /// The agent's command line, reporting to `cp` and filling at once.
    fn agent(&self, bin: &Path, cp: &str, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(["--control-plane", cp, "--oca-id", "a1", "--site", "isp"])
            .arg("--credential-file")
            .arg(self.dir.path().join("credential"))
            .arg("--store")
            .arg(self.store())
            .arg("--keys")
            .arg(self.dir.path().join("keys.json"))
            .args(["--fill-now", "--stall-timeout", "2"])
            .args(extra);
        cmd
    }
}

/// The agent's `/metrics` at `addr`: the value of `series`, 0 when absent.
fn agent_metric(addr: SocketAddr, series: &str) -> f64 {
    reqwest::blocking::get(format!("http://{addr}/metrics"))
        .and_then(|r| r.text())
        .map_or(0.0, |t| test_support::metric(&t, series))
}

fn metrics_addr() -> SocketAddr {
    format!("127.0.0.1:{}", test_support::free_port())
        .parse()
        .unwrap()
}

#[test]
fn hostile_sources_are_refused_and_the_next_source_fills() {
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    let cases: [(&str, &[&str]); 5] = [
        ("re_1080p.mp4", &["redirect", "good"]),
        ("ov_1080p.mp4", &["oversize", "good"]),
        ("gz_1080p.mp4", &["gzip", "good"]),
        ("rs_1080p.mp4", &["short", "resume0", "good"]),
        ("dr_1080p.mp4", &["good?bps=2000", "good"]),
    ];
    let mut bodies = HashMap::new();
    let mut entries = Vec::new();
    for (id, modes) in cases {
        bodies.insert(id, sources.add(id, MIB));
        entries.push(sources.entry(id, modes));
    }
    cp.set_manifest(entries, false);
    let app = Appliance::new();
    // Left by an earlier run: a part of something no manifest lists.
    std::fs::write(app.store().join("tmp/zz_orphan.mp4.part"), b"junk").unwrap();
    let metrics = metrics_addr();
    let agent = Proc::spawn(app.agent(&bin, &cp.url, &["--metrics-listen", &metrics.to_string()]));
    for (id, _) in cases {
        wait_until(&format!("{id} filled"), Duration::from_secs(40), || {
            app.holds(id, &bodies[id])
        });
    }
    let log = agent.log();
    assert!(
        sources.requests("/canary/").is_empty(),
        "a redirect was followed:\n{log}"
    );
    for h in sources.requests("/") {
        assert_eq!(
            h.get("accept-encoding").map(String::as_str),
            Some("identity"),
            "{h:?}"
        );
    }
    // The part the short source left was kept through the bad resume and resumed from its end.
    let resumed: Vec<_> = sources
        .requests("/good/rs_1080p.mp4")
        .into_iter()
        .filter_map(|h| h.get("range").cloned())
        .collect();
    assert_eq!(resumed, [format!("bytes={}-", MIB / 2)], "{log}");
    for reason in [
        "http_3xx",
        "length_mismatch",
        "content_encoding",
        "content_range",
        "slow",
    ] {
        let n = agent_metric(
            metrics,
            &format!("oca_fill_source_failures_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= 1.0, "{reason}: {n}\n{log}");
    }
    assert_eq!(agent_metric(metrics, "oca_fill_files_total"), 5.0);
    assert!(agent_metric(metrics, "oca_fill_bytes_total") >= (5 * MIB) as f64);
    assert!(
        !app.store().join("tmp/zz_orphan.mp4.part").exists(),
        "the orphaned part was swept:\n{log}"
    );
}

#[test]
fn a_slow_fill_never_holds_back_new_entries() {
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    // Above the minimum rate (4 KiB/s), so never abandoned, but four minutes long.
    let slow = sources.add("sl_1080p.mp4", 4 * MIB);
    let e = sources.entry("sl_1080p.mp4", &["good?bps=16384"]);
    cp.set_manifest(vec![e.clone()], false);
    let app = Appliance::new();
    let agent = Proc::spawn(app.agent(&bin, &cp.url, &["--fill-min-rate-kib", "4"]));
    wait_until("the slow fill started", Duration::from_secs(20), || {
        !sources.requests("/good/sl_1080p.mp4").is_empty()
    });
    let new = sources.add("nw_1080p.mp4", MIB);
    cp.set_manifest(vec![e, sources.entry("nw_1080p.mp4", &["good"])], false);
    wait_until(
        "the new entry filled beside the slow one",
        Duration::from_secs(15),
        || app.holds("nw_1080p.mp4", &new),
    );
    assert!(!app.holds("sl_1080p.mp4", &slow), "{}", agent.log());
    assert_eq!(
        sources.requests("/good/sl_1080p.mp4").len(),
        1,
        "the slow fill went on undisturbed:\n{}",
        agent.log()
    );
}

/// Collects what the agent sends to `NOTIFY_SOCKET`, with the time each arrived.
struct Notify {
    path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    fn bind(dir: &Path) -> Notify {
        let path = dir.join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let got: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let g = got.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                g.lock().push((Instant::now(), msg));
            }
        });
        Notify { path, got }
    }

    fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.got
            .lock()
            .iter()
            .filter(|(t, m)| *t >= from && *t < to && m.contains("WATCHDOG=1"))
            .count()
    }
}

/// The agent under a watchdog of one second, reporting to `cp`.
fn watched_agent(bin: &Path, app: &Appliance, cp: &FakeCp, timeout: &str) -> (Proc, Notify) {
    let notify = Notify::bind(app.dir.path());
    let mut cmd = app.agent(bin, &cp.url, &["--control-plane-timeout", timeout]);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID");
    (Proc::spawn(cmd), notify)
}

#[test]
fn a_stalled_control_plane_costs_a_timeout_and_the_watchdog_follows_the_loop() {
    let bin = agent_bin();
    let sources = Sources::start();

    // A control plane that stops answering: the agent says so, goes on filling from the
    // manifest it has, and its loop (hence the watchdog) keeps turning.
    let cp = FakeCp::start();
    let body = sources.add("gt_1080p.mp4", MIB);
    cp.set_manifest(vec![sources.entry("gt_1080p.mp4", &["gated"])], false);
    let app = Appliance::new();
    let (agent, notify) = watched_agent(&bin, &app, &cp, "1.5");
    agent.wait_log("manifest updated", Duration::from_secs(20));
    cp.stall();
    sources.gate.store(true, Ordering::SeqCst);
    wait_until(
        "filled from the last manifest while the control plane stalls",
        Duration::from_secs(20),
        || app.holds("gt_1080p.mp4", &body),
    );
    agent.wait_log("health report not taken", Duration::from_secs(10));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let pings = notify.pings_between(t0, Instant::now());
    assert!(pings >= 3, "{pings} keep-alives in 5 s:\n{}", agent.log());
    assert!(
        agent.log().contains("no answer within") || agent.log().contains("timed out"),
        "{}",
        agent.log()
    );

    // The keep-alives come from the loop: blocked on a control plane it waits ten minutes for,
    // the agent stops sending them (and systemd would restart it).
    let cp = FakeCp::start();
    cp.set_manifest(vec![], false);
    let app = Appliance::new();
    let (agent, notify) = watched_agent(&bin, &app, &cp, "600");
    wait_until("a few reports", Duration::from_secs(20), || {
        cp.state.lock().reports.len() >= 2
    });
    let before = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        notify.pings_between(before, Instant::now()) >= 2,
        "keep-alives while the loop turns:\n{}",
        agent.log()
    );
    cp.stall();
    wait_until(
        "the agent is stuck on the control plane",
        Duration::from_secs(10),
        || cp.state.lock().stalled_since.is_some(),
    );
    let stuck = cp.state.lock().stalled_since.unwrap() + Duration::from_millis(700);
    std::thread::sleep(Duration::from_secs(5));
    let pings = notify.pings_between(stuck, Instant::now());
    assert_eq!(pings, 0, "keep-alives from a stuck loop:\n{}", agent.log());
}

#[test]
fn an_empty_or_wrong_manifest_evicts_at_most_the_budget_per_cycle() {
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    let app = Appliance::new();
    let ids: Vec<String> = (0..10).map(|i| format!("e{i}_1080p.mp4")).collect();
    let mut entries = Vec::new();
    for id in &ids {
        let body = sources.add(id, MIB);
        app.put(id, &body);
        entries.push(sources.entry(id, &["good"]));
    }
    cp.set_manifest(entries.clone(), false);
    let metrics = metrics_addr();
    let agent = Proc::spawn(app.agent(
        &bin,
        &cp.url,
        &[
            "--metrics-listen",
            &metrics.to_string(),
            "--eviction-budget",
            "0.25",
        ],
    ));
    agent.wait_log("manifest updated", Duration::from_secs(20));
    let held = || ids.iter().filter(|id| app.object(id).exists()).count();

    // Empty, not marked intended: refused, nothing goes, counted once.
    cp.set_manifest(vec![], false);
    wait_until(
        "the empty manifest is refused",
        Duration::from_secs(10),
        || agent_metric(metrics, "oca_fill_manifests_refused_total") == 1.0,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(held(), 10, "{}", agent.log());
    assert_eq!(
        agent_metric(metrics, "oca_fill_manifests_refused_total"),
        1.0
    );

    // A wrong manifest (one file of ten): a quarter of the held bytes per cycle at most.
    cp.set_manifest(vec![entries[0].clone()], false);
    wait_until("nine files evicted", Duration::from_secs(40), || {
        held() == 1
    });
    assert!(app.object(&ids[0]).exists(), "the listed file stays");
    let per_cycle: Vec<u64> = agent
        .log()
        .lines()
        .filter(|l| l.contains("eviction cycle"))
        .map(|l| Proc::field(l, "evicted").parse().unwrap())
        .collect();
    assert_eq!(per_cycle.iter().sum::<u64>(), 9, "{per_cycle:?}");
    assert!(
        per_cycle.iter().all(|&n| n <= 2),
        "at most 2.5 MiB of 10 per cycle: {per_cycle:?}"
    );
    assert!(agent_metric(metrics, "oca_fill_evictions_deferred_total") >= 7.0);

    // Empty on purpose: everything goes, still within the budget.
    cp.set_manifest(vec![], true);
    wait_until("the last file evicted", Duration::from_secs(20), || {
        held() == 0
    });
    assert_eq!(
        agent_metric(metrics, "oca_fill_evictions_planned_total"),
        10.0
    );
    assert_eq!(agent_metric(metrics, "oca_fill_evictions_done_total"), 10.0);
    assert_eq!(
        agent_metric(metrics, "oca_fill_manifests_refused_total"),
        1.0
    );
}

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_disk_that_hit_enospc_fills_again_once_eviction_frees_space() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs as the disk needs root");
        return;
    }
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    let app = Appliance::new();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(app.store())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    let _mounted = Mounted(app.store());
    std::fs::create_dir_all(app.store().join("objects")).unwrap();
    let old = sources.add("ol_1080p.mp4", 20 * MIB);
    app.put("ol_1080p.mp4", &old);
    let new = sources.add("nw_1080p.mp4", 20 * MIB);
    let n = sources.entry("nw_1080p.mp4", &[format!("good?bps={}", 4 * MIB).as_str()]);
    cp.set_manifest(
        vec![sources.entry("ol_1080p.mp4", &["good"]), n.clone()],
        false,
    );
    let agent = Proc::spawn(app.agent(&bin, &cp.url, &["--eviction-budget", "1"]));
    let part = app.store().join("tmp/nw_1080p.mp4.part");
    wait_until("the new file is filling", Duration::from_secs(20), || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() >= 2 * MIB as u64)
    });
    // Someone else takes the rest of the disk.
    let mut junk = std::fs::File::create(app.store().join("junk")).unwrap();
    while junk.write_all(&vec![0u8; MIB]).is_ok() {}
    drop(junk);
    agent.wait_log("No space left on device", Duration::from_secs(20));
    wait_until("the disk is reported full", Duration::from_secs(10), || {
        cp.last_report()["disks"][0]["state"] == "full"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!app.holds("nw_1080p.mp4", &new));
    // The old file leaves the manifest: evicted, the disk has room again, the fill resumes.
    cp.set_manifest(vec![n], false);
    wait_until(
        "the new file filled after the eviction, without a restart",
        Duration::from_secs(40),
        || app.holds("nw_1080p.mp4", &new),
    );
    assert!(!app.object("ol_1080p.mp4").exists());
    assert!(
        agent.log().contains("disk has room again"),
        "{}",
        agent.log()
    );
}

/// A TLS server on loopback with a fresh self-signed certificate (for 127.0.0.1) that records
/// the request line of each request that gets through the handshake, and answers 503.
struct TlsCp {
    url: String,
    cert_pem: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl TlsCp {
    fn start() -> TlsCp {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![ck.cert.der().clone()], key)
        .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let (config, s) = (config.clone(), s.clone());
                std::thread::spawn(move || {
                    let conn = rustls::ServerConnection::new(config).unwrap();
                    let mut r = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                    while let Some(req) = read_request(&mut r) {
                        s.lock().push(format!("{} {}", req.method, req.path));
                        let h = [("Content-Length", "0".to_string())];
                        if head(r.get_mut(), "503 Service Unavailable", &h).is_err() {
                            break;
                        }
                        let _ = r.get_mut().flush();
                    }
                });
            }
        });
        TlsCp {
            url: format!("https://{addr}"),
            cert_pem: ck.cert.pem(),
            seen,
        }
    }
}

#[test]
fn an_untrusted_control_plane_is_refused_with_the_reason_and_plain_http_stays_on_loopback() {
    let bin = agent_bin();
    let cp = TlsCp::start();
    let app = Appliance::new();
    let other = TlsCp::start();
    let other_ca = app.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    let right_ca = app.dir.path().join("ca.pem");
    std::fs::write(&right_ca, &cp.cert_pem).unwrap();

    // The system's trust store, and a CA file of someone else: refused, said why, still running.
    let system = Proc::spawn(app.agent(&bin, &cp.url, &[]));
    let wrong = Proc::spawn(app.agent(
        &bin,
        &cp.url,
        &["--control-plane-ca", other_ca.to_str().unwrap()],
    ));
    for agent in [system, wrong] {
        let line = agent.wait_log("not trusted", Duration::from_secs(20));
        assert!(line.contains(&cp.url), "names the control plane: {line}");
        assert!(
            line.contains("UnknownIssuer") || line.contains("invalid peer certificate"),
            "says why: {line}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let mut agent = agent;
        assert!(agent.child.try_wait().unwrap().is_none(), "keeps going");
    }
    assert!(
        cp.seen.lock().is_empty(),
        "nothing sent past a failed handshake"
    );

    // The right CA file: the handshake passes and the report is sent.
    let trusted = Proc::spawn(app.agent(
        &bin,
        &cp.url,
        &["--control-plane-ca", right_ca.to_str().unwrap()],
    ));
    wait_until("a report over TLS", Duration::from_secs(20), || {
        cp.seen
            .lock()
            .iter()
            .any(|l| l == "POST /v1/appliances/a1/health")
    });
    assert!(!trusted.log().contains("not trusted"), "{}", trusted.log());

    // Plain http off loopback: refused at start, unless the operator accepts it. (0.0.0.0 is
    // not loopback, and a connection to it stays on this host.)
    let plain = format!("http://0.0.0.0:{}", test_support::free_port());
    let mut refused = Proc::spawn(app.agent(&bin, &plain, &[]));
    let line = refused.wait_log("--insecure-http", Duration::from_secs(10));
    assert!(line.contains("not loopback"), "{line}");
    wait_until("the agent exits", Duration::from_secs(10), || {
        refused.child.try_wait().unwrap().is_some()
    });
    assert!(!refused.child.wait().unwrap().success());
    let accepted = Proc::spawn(app.agent(&bin, &plain, &["--insecure-http"]));
    accepted.wait_log("fill agent started", Duration::from_secs(20));
    assert!(
        accepted.log().contains("insecure_http"),
        "{}",
        accepted.log()
    );
}
