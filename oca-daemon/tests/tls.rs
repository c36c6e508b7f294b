//! HTTPS against the real daemon: the same bytes as plain HTTP over TLS 1.3 and 1.2 with each
//! cipher, keep-alive and pipelining, a key update mid-download, certificate reload on SIGHUP,
//! and handshakes that go wrong without touching other connections. On a kernel with the TLS
//! module the records go to the kernel (kTLS); here (and wherever it lacks) rustls does them,
//! and the metrics say which.

mod common;

use rustls::ClientConfig;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::tls::*;
use common::*;

const ID: &str = "80100172_1080p.mp4";

struct Tls {
    _dir: tempfile::TempDir,
    store: std::path::PathBuf,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    body: Vec<u8>,
}

fn setup(size: usize) -> Tls {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir_all(&store).unwrap();
    let body = pattern(11, size);
    put(&store, ID, &body);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    write_cert(&cert, &key);
    Tls {
        store,
        cert,
        key,
        body,
        _dir: dir,
    }
}

impl Tls {
    fn start(&self, engine: &str, extra: &[&str]) -> Server {
        let mut args = vec![
            "--tls-listen",
            "127.0.0.1:0",
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Server::start(engine, &[&self.store], &args)
    }
}

/// Reads one response: status, headers (lower-cased names) and a Content-Length body.
fn read_response(s: &mut impl Read) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed in a head");
        head.push(byte[0]);
    }
    let text = String::from_utf8(head).unwrap();
    let mut lines = text.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let len: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, headers, body)
}

fn get(s: &mut Stream, path: &str, range: Option<&str>) -> (u16, Vec<u8>) {
    let range = range.map_or(String::new(), |r| format!("Range: bytes={r}\r\n"));
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{range}\r\n").unwrap();
    s.flush().unwrap();
    let (st, _, body) = read_response(s);
    (st, body)
}

#[test]
fn https_serves_exactly_the_bytes_of_http_for_every_version_and_cipher() {
    let t = setup(3 << 20);
    let cert = std::fs::read_to_string(&t.cert).unwrap();
    use rustls::crypto::ring::cipher_suite as cs;
    let variants: Vec<(&str, Arc<ClientConfig>)> = vec![
        (
            "tls1.3 aes128",
            client_config(
                &cert,
                &[&rustls::version::TLS13],
                Some(vec![cs::TLS13_AES_128_GCM_SHA256]),
            ),
        ),
        (
            "tls1.3 aes256",
            client_config(
                &cert,
                &[&rustls::version::TLS13],
                Some(vec![cs::TLS13_AES_256_GCM_SHA384]),
            ),
        ),
        (
            "tls1.3 chacha",
            client_config(
                &cert,
                &[&rustls::version::TLS13],
                Some(vec![cs::TLS13_CHACHA20_POLY1305_SHA256]),
            ),
        ),
        (
            "tls1.2 aes",
            client_config(
                &cert,
                &[&rustls::version::TLS12],
                Some(vec![cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]),
            ),
        ),
        (
            "tls1.2 chacha",
            client_config(
                &cert,
                &[&rustls::version::TLS12],
                Some(vec![cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]),
            ),
        ),
    ];
    for engine in ENGINES {
        let s = t.start(engine, &[]);
        let addr = tls_addr(&s);
        for (name, cfg) in &variants {
            let mut c = tls_connect(addr, cfg);
            // Keep-alive: several requests on one connection, whole file and ranges.
            let (st, b) = get(&mut c, &format!("/c/{ID}"), None);
            assert!(st == 200 && b == t.body, "{engine} {name}: whole file");
            let (st, b) = get(&mut c, &format!("/c/{ID}"), Some("1000-2000999"));
            assert!(
                st == 206 && b == t.body[1000..2001000],
                "{engine} {name}: range"
            );
            let (st, b) = get(&mut c, &format!("/c/{ID}/range/5-9"), None);
            assert_eq!(
                (st, &b[..]),
                (206, &t.body[5..10]),
                "{engine} {name}: path range"
            );
            assert_eq!(get(&mut c, "/c/missing.mp4", None).0, 404);
            assert_eq!(
                c.conn.alpn_protocol(),
                Some(&b"http/1.1"[..]),
                "{engine} {name}"
            );
            // Pipelined: two requests in one write, two responses in order.
            write!(
                c,
                "GET /c/{ID} HTTP/1.1\r\nHost: l\r\nRange: bytes=0-9\r\n\r\nGET /c/{ID} HTTP/1.1\r\nHost: l\r\nRange: bytes=10-19\r\n\r\n"
            )
            .unwrap();
            c.flush().unwrap();
            assert_eq!(read_response(&mut c).2, t.body[..10]);
            assert_eq!(read_response(&mut c).2, t.body[10..20]);
        }
        let m = s.metrics();
        let ktls = s.metric("oca_tls_handshakes_total{mode=\"ktls\"}");
        let user = s.metric("oca_tls_handshakes_total{mode=\"userspace\"}");
        assert_eq!(ktls + user, variants.len() as f64, "{engine}: {m}");
        // TLS 1.2 never goes to the kernel; TLS 1.3 does where the kernel has the module.
        assert!(user >= 2.0, "{engine}: {m}");
        let kernel_tls = s.log().contains("kernel_tls=available");
        assert_eq!(ktls > 0.0, kernel_tls, "{engine}: {m}\n{}", s.log());
        assert!(s.metric("oca_tls_sent_bytes_total{mode=\"userspace\"}") > 0.0);
    }
}

#[test]
fn a_key_update_in_the_middle_of_a_long_download_keeps_every_byte() {
    let t = setup(24 << 20);
    let cert = std::fs::read_to_string(&t.cert).unwrap();
    let cfg = client_config(&cert, &[&rustls::version::TLS13], None);
    for engine in ["uring", "epoll"] {
        let s = t.start(engine, &[]);
        let mut c = tls_connect(tls_addr(&s), &cfg);
        write!(c, "GET /c/{ID} HTTP/1.1\r\nHost: l\r\n\r\n").unwrap();
        c.flush().unwrap();
        let mut got = Vec::with_capacity(t.body.len() + 1024);
        let mut buf = vec![0u8; 64 * 1024];
        let mut updated = false;
        let head_end = loop {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "{engine}: closed after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            if !updated && got.len() > 4 << 20 {
                // Both directions rekey: ours now, the server's when it answers the request.
                c.conn.refresh_traffic_keys().unwrap();
                c.flush().unwrap();
                updated = true;
            }
            if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                if got.len() >= p + 4 + t.body.len() {
                    break p + 4;
                }
            }
        };
        assert!(updated);
        assert!(
            got[head_end..] == t.body[..],
            "{engine}: body differs after the key update"
        );
        // The connection still works both ways under the new keys.
        assert_eq!(
            get(&mut c, &format!("/c/{ID}"), Some("0-9")).1,
            t.body[..10]
        );
    }
}

#[test]
fn bad_handshakes_close_cleanly_are_counted_and_leave_others_alone() {
    let t = setup(16 << 20);
    let cert = std::fs::read_to_string(&t.cert).unwrap();
    let cfg = client_config(&cert, &[&rustls::version::TLS13], None);
    let logs = tempfile::tempdir().unwrap();
    for engine in ["uring", "epoll"] {
        let log = logs.path().join(format!("access-{engine}.log"));
        let s = t.start(
            engine,
            &[
                "--header-timeout",
                "1",
                "--access-log",
                log.to_str().unwrap(),
            ],
        );
        let addr = tls_addr(&s);
        // A long download in progress the whole time.
        let downloader = {
            let cfg = cfg.clone();
            let body = t.body.clone();
            std::thread::spawn(move || {
                let mut c = tls_connect(addr, &cfg);
                for _ in 0..3 {
                    let (st, b) = get(&mut c, &format!("/c/{ID}"), None);
                    assert!(st == 200 && b == body);
                }
            })
        };
        let closed = |mut sock: TcpStream| {
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest);
            rest
        };
        // Garbage instead of a ClientHello.
        let mut g = TcpStream::connect(addr).unwrap();
        g.write_all(&pattern(5, 3000)).unwrap();
        closed(g);
        // An SSL 3.0/TLS 1.0-only ClientHello (legacy version, no supported_versions).
        let mut old = TcpStream::connect(addr).unwrap();
        old.write_all(&tls10_client_hello()).unwrap();
        let alert = closed(old);
        assert!(
            alert.first() == Some(&0x15) || alert.is_empty(),
            "{alert:?}"
        );
        // Plain HTTP to the TLS port: a plain 400, as nginx does.
        let mut p = TcpStream::connect(addr).unwrap();
        p.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let answer = closed(p);
        assert!(
            answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
        // ... and logged as nginx logs it, with the request line it got.
        let end = Instant::now() + Duration::from_secs(5);
        let logged = |text: &str| text.contains("\"GET / HTTP/1.1\" 400 ");
        while !logged(&std::fs::read_to_string(&log).unwrap_or_default()) {
            assert!(
                Instant::now() < end,
                "{engine}: no 400 line in\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        // A handshake that stalls half way: cut off at the header timeout.
        let mut stall = TcpStream::connect(addr).unwrap();
        stall.write_all(&tls10_client_hello()[..20]).unwrap();
        let t0 = Instant::now();
        closed(stall);
        assert!(
            t0.elapsed() < Duration::from_secs(4),
            "stalled handshake kept {:?}",
            t0.elapsed()
        );
        // Connect and leave.
        drop(TcpStream::connect(addr).unwrap());
        downloader
            .join()
            .expect("the download in progress was not disturbed");
        let m = s.metrics_when(|m| m.contains("reason=\"timeout\"} 1"));
        for reason in ["not_tls", "protocol_version", "plain_http", "timeout"] {
            let v = s.metric(&format!(
                "oca_tls_handshake_failures_total{{reason=\"{reason}\"}}"
            ));
            assert!(v >= 1.0, "{engine}: {reason} not counted\n{m}");
        }
        // Still serving new handshakes.
        let mut c = tls_connect(addr, &cfg);
        assert_eq!(get(&mut c, &format!("/c/{ID}"), Some("0-0")).0, 206);
    }
}

/// A TLS 1.0 ClientHello: legacy_version 0x0301, one CBC suite, no supported_versions (only a
/// signature_algorithms extension, without which rustls stops before looking at the version).
fn tls10_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x01];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]);
    body.extend_from_slice(&[0x00, 0x08, 0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x01]);
    let mut hs = vec![0x01, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, 0, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let t = setup(1 << 20);
    let old_cert = std::fs::read_to_string(&t.cert).unwrap();
    let s = t.start("uring", &[]);
    let addr = tls_addr(&s);
    let old_cfg = client_config(&old_cert, &[&rustls::version::TLS13], None);
    let mut kept = tls_connect(addr, &old_cfg);
    assert_eq!(get(&mut kept, &format!("/c/{ID}"), Some("0-9")).0, 206);
    let new_cert = write_cert(&t.cert, &t.key);
    s.signal(libc::SIGHUP);
    let new_cfg = client_config(&new_cert, &[&rustls::version::TLS13], None);
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = tls_connect(addr, &new_cfg);
        let ok = write!(
            c,
            "GET /c/{ID} HTTP/1.1\r\nHost: l\r\nRange: bytes=0-0\r\n\r\n"
        )
        .and_then(|_| c.flush())
        .is_ok();
        if ok && c.read(&mut [0u8; 1]).is_ok_and(|n| n == 1) {
            break;
        }
        assert!(Instant::now() < end, "the new certificate never served");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The connection made under the old certificate carries on.
    let (st, b) = get(&mut kept, &format!("/c/{ID}"), Some("10-19"));
    assert_eq!((st, &b[..]), (206, &t.body[10..20]));
    assert!(s.log().contains("TLS certificate and key reloaded"));
    // A broken pair is refused and the one in force stays.
    std::fs::write(&t.key, "not a key").unwrap();
    s.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(500));
    assert!(s.log().contains("TLS reload failed"), "{}", s.log());
    let mut c = tls_connect(addr, &new_cfg);
    assert_eq!(get(&mut c, &format!("/c/{ID}"), Some("0-0")).0, 206);
}

#[test]
fn tls_settings_come_together_or_not_at_all() {
    let t = setup(10);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oca-daemon"))
        .args([
            "--allow-unsigned",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--tls-listen", "127.0.0.1:0", "--store"])
        .arg(&t.store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // A configuration error: 78 (EX_CONFIG), which systemd does not restart in a loop.
    assert_eq!(out.status.code(), Some(78));
    assert!(err.contains("tls_cert") && err.contains("tls_key"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oca-daemon"))
        .args([
            "--allow-unsigned",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--tls-listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&t.key)
        .arg("--tls-key")
        .arg(&t.key)
        .arg("--store")
        .arg(&t.store)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(err.contains("certificate"), "{err}");
}
