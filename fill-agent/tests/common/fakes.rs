//! The fill agent's counterparts, faked: small real servers on loopback that a test starts and
//! steers (a control plane, fill sources that misbehave on purpose, a TLS control plane with its
//! own certificate), a systemd notify socket, and an appliance's directory to run the agent over.

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
use test_support::content_bytes;

use super::sha;

/// The fill-agent binary, built by the cargo running the tests.
pub fn agent_bin() -> PathBuf {
    test_support::cargo_bins(false, &[("fill-agent", "fill-agent")])["fill-agent"].clone()
}

/// One HTTP/1.1 request as read off the wire.
pub struct Request {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one request off `r`; `None` when the client went or sent garbage.
pub fn read_request(r: &mut impl BufRead) -> Option<Request> {
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

/// Writes a response head with `status` and `headers`.
pub fn head(w: &mut impl Write, status: &str, headers: &[(&str, String)]) -> std::io::Result<()> {
    let mut text = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        text += &format!("{k}: {v}\r\n");
    }
    text += "\r\n";
    w.write_all(text.as_bytes())
}

/// Accepts connections on loopback, each on its own thread, handing every request to
/// `handle` until it returns false or the client goes.
pub fn serve(
    handle: impl Fn(Request, &mut TcpStream) -> bool + Send + Sync + 'static,
) -> SocketAddr {
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
pub struct CpState {
    version: u64,
    manifest: Value,
    stall: bool,
    pub stalled_since: Option<Instant>,
    pub reports: Vec<Value>,
}

/// A control plane that takes health reports and serves the manifest the test sets.
pub struct FakeCp {
    pub url: String,
    pub state: Arc<Mutex<CpState>>,
}

impl FakeCp {
    /// Starts it, with no manifest yet (404 until the test sets one).
    pub fn start() -> FakeCp {
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
    pub fn set_manifest(&self, entries: Vec<Value>, intended_empty: bool) {
        let mut st = self.state.lock();
        st.version += 1;
        st.manifest = json!({"fill_window": null, "rate_limit_bps": 0, "entries": entries,
            "intended_empty": intended_empty});
    }

    /// From now on, accepts and reads requests but never answers them.
    pub fn stall(&self) {
        self.state.lock().stall = true;
    }

    /// The last health report received (`Null` before the first).
    pub fn last_report(&self) -> Value {
        let st = self.state.lock();
        st.reports.last().cloned().unwrap_or(Value::Null)
    }
}

/// Fill sources at `/<mode>/<id>`: `good` (ranges honoured, `?bps=N` paces it), `redirect`
/// (to `canary`), `oversize` (one byte too many), `resume0` (a resume answered from byte 0),
/// `short` (half, then the connection closes), `gzip` (claims an encoding), `gated` (503
/// until opened).
pub struct Sources {
    addr: SocketAddr,
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    log: Arc<Mutex<Vec<Request>>>,
    pub gate: Arc<AtomicBool>,
}

impl Sources {
    /// Starts them, with no files yet.
    pub fn start() -> Sources {
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
    pub fn add(&self, id: &str, len: usize) -> Vec<u8> {
        let body = content_bytes(id, len);
        self.files.lock().insert(id.to_string(), body.clone());
        body
    }

    /// The URL of `id` served in `mode`.
    pub fn url(&self, mode: &str, id: &str) -> String {
        format!("http://{}/{mode}/{id}", self.addr)
    }

    /// A manifest entry for `id` with sources of the given modes (`mode` or `mode?query`), in
    /// order.
    pub fn entry(&self, id: &str, modes: &[&str]) -> Value {
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

    /// The headers of every request so far whose path starts with `path_prefix`.
    pub fn requests(&self, path_prefix: &str) -> Vec<HashMap<String, String>> {
        self.log
            .lock()
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .map(|r| r.headers.clone())
            .collect()
    }
}

/// Serves `body` honouring `Range: bytes=N-`, paced to `bps` bytes per second when given.
pub fn serve_good(
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
pub struct Appliance {
    pub dir: tempfile::TempDir,
}

impl Appliance {
    /// A fresh directory with an empty store and a credential.
    pub fn new() -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("store/objects")).unwrap();
        std::fs::create_dir_all(dir.path().join("store/tmp")).unwrap();
        std::fs::write(dir.path().join("credential"), "secret-credential").unwrap();
        Appliance { dir }
    }

    /// The store directory.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Where the store keeps `id`.
    pub fn object(&self, id: &str) -> PathBuf {
        self.store().join("objects").join(&id[..2]).join(id)
    }

    /// Puts `id` into the store, as if filled earlier.
    pub fn put(&self, id: &str, body: &[u8]) {
        let p = self.object(id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).unwrap();
    }

    /// Whether the store holds `id` with exactly these bytes.
    pub fn holds(&self, id: &str, body: &[u8]) -> bool {
        std::fs::read(self.object(id)).is_ok_and(|b| b == body)
    }

    /// The agent's command line, reporting to `cp` and filling at once.
    pub fn agent(&self, bin: &Path, cp: &str, extra: &[&str]) -> Command {
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
pub fn agent_metric(addr: SocketAddr, series: &str) -> f64 {
    reqwest::blocking::get(format!("http://{addr}/metrics"))
        .and_then(|r| r.text())
        .map_or(0.0, |t| test_support::metric(&t, series))
}

/// A free loopback address for the agent's `/metrics`.
pub fn metrics_addr() -> SocketAddr {
    format!("127.0.0.1:{}", test_support::free_port())
        .parse()
        .unwrap()
}

/// Collects what the agent sends to `NOTIFY_SOCKET`, with the time each arrived.
pub struct Notify {
    pub path: PathBuf,
    got: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Notify {
    /// Binds the socket in `dir` and starts collecting.
    pub fn bind(dir: &Path) -> Notify {
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

    /// The watchdog keep-alives that arrived in `[from, to)`.
    pub fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.got
            .lock()
            .iter()
            .filter(|(t, m)| *t >= from && *t < to && m.contains("WATCHDOG=1"))
            .count()
    }
}

/// A TLS server on loopback with a fresh self-signed certificate (for 127.0.0.1) that records
/// the request line of each request that gets through the handshake, and answers 503.
pub struct TlsCp {
    pub url: String,
    pub cert_pem: String,
    pub seen: Arc<Mutex<Vec<String>>>,
}

impl TlsCp {
    /// Starts it on a free loopback port.
    pub fn start() -> TlsCp {
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
