//! Limits and bad input: each gets its status, loses nothing, and never reaches outside the store.

mod common;

use common::*;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

const ID: &str = "title_720p.mp4";

fn req(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

fn status(s: &Server, raw_req: &[u8]) -> Option<u16> {
    raw(s.addr, raw_req).map(|r| r.status)
}

/// Counts IN_OPEN events on a file: proof that the server never opened it.
struct OpenWatch(i32);

impl OpenWatch {
    fn new(path: &std::path::Path) -> OpenWatch {
        // SAFETY: plain syscalls; the path is a valid C string.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            let p = CString::new(path.as_os_str().as_bytes()).unwrap();
            assert!(libc::inotify_add_watch(fd, p.as_ptr(), libc::IN_OPEN) >= 0);
            OpenWatch(fd)
        }
    }

    fn opened(&self) -> bool {
        let mut buf = [0u8; 4096];
        // SAFETY: reading into a live local buffer.
        unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) > 0 }
    }
}

#[test]
fn malformed_and_oversized_requests() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 1000));
    for engine in ENGINES {
        let s = Server::start(
            engine,
            &[dir.path()],
            &["--max-header-bytes", "4096", "--max-uri-bytes", "1024"],
        );
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (b"GARBAGE\r\n\r\n".to_vec(), 400),
            (b"GET\r\n\r\n".to_vec(), 400),
            (b"GET /c/x HTTP/1.1\r\nNoColon\r\n\r\n".to_vec(), 400),
            (b"GET /c/x HTTP/1.1\r\n\r\n".to_vec(), 400), // HTTP/1.1 without Host
            (
                b"GET /c/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
                400,
            ),
            (
                format!(
                    "GET /c/{ID} HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
                    "a".repeat(5000)
                )
                .into_bytes(),
                431,
            ),
            (
                format!("GET /c/{} HTTP/1.1\r\nHost: t\r\n\r\n", "a".repeat(2000)).into_bytes(),
                414,
            ),
            (format!("GET /c/{}", "a".repeat(3000)).into_bytes(), 414), // refused before the line ends
            (b"GET /c/x HTTP/3.0\r\nHost: t\r\n\r\n".to_vec(), 505),
            (
                format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
                    .into_bytes(),
                400,
            ),
            (req("/nothing-here"), 404),
            (req("/c/unknown_id.mp4"), 404),
        ];
        for (raw_req, want) in cases {
            let got = status(&s, &raw_req);
            assert_eq!(
                got,
                Some(want),
                "{engine}: {:?}",
                String::from_utf8_lossy(&raw_req[..raw_req.len().min(60)])
            );
        }
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let r = raw(
                s.addr,
                format!("{method} /c/{ID} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
                    .as_bytes(),
            )
            .unwrap();
            assert_eq!(r.status, 405, "{engine} {method}");
            assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, OPTIONS"));
        }
        // OPTIONS is answered (browsers' CORS preflights: tests/cors.rs).
        let r = raw(
            s.addr,
            format!("OPTIONS /c/{ID} HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(
            (r.status, r.header("allow").as_deref()),
            (204, Some("GET, HEAD, OPTIONS"))
        );
        // HTTP/2 prior knowledge: 505 or a plain close, never a hang.
        let got = status(&s, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(
            matches!(got, Some(505) | None),
            "{engine}: h2 preface gave {got:?}"
        );
        // The server survives all of it.
        assert_eq!(status(&s, &req(&format!("/c/{ID}"))), Some(200), "{engine}");
    }
}

#[test]
fn traversal_never_opens_anything_outside_the_store() {
    let top = tempfile::tempdir().unwrap();
    let store = top.path().join("store");
    std::fs::create_dir(&store).unwrap();
    put(&store, ID, &pattern(1, 100));
    let secret = top.path().join("secret");
    std::fs::write(&secret, b"TOP-SECRET").unwrap();
    let in_store = store.join("secret");
    std::fs::write(&in_store, b"TOP-SECRET").unwrap();
    std::fs::write(store.join("objects").join("secret"), b"TOP-SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, store.join("objects/li")).unwrap_or(());
    std::fs::create_dir_all(store.join("objects/sy")).unwrap();
    std::os::unix::fs::symlink(&secret, store.join("objects/sy/symlinked")).unwrap();
    // A FIFO where a file should be: open(2) would block a worker until a writer came.
    std::fs::create_dir_all(store.join("objects/fi")).unwrap();
    let fifo = CString::new(store.join("objects/fi/fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let watches = [
        OpenWatch::new(&secret),
        OpenWatch::new(&in_store),
        OpenWatch::new(&store.join("objects/secret")),
    ];
    let targets = [
        "/c/../secret",
        "/c/../../secret",
        "/c/..",
        "/c/...",
        "/c/.",
        "/c/%2e%2e",
        "/c/%2e%2e/secret",
        "/c/%2e%2e%2fsecret",
        "/c/..%2f..%2fsecret",
        "/c/..\\secret",
        "/c/secret%00.mp4",
        "/c/ob/../secret",
        "/c//secret",
        "/c/%2fetc%2fpasswd",
        "/../secret",
        "/c/symlinked",
        "/c/li/range/0-5",
        "/c/secret/range/0-5",
        "/c/.secret",
        "/c/fifo",
    ];
    for engine in ENGINES {
        let s = Server::start(engine, &[&store], &[]);
        for t in targets {
            for method in ["GET", "HEAD"] {
                let r = raw(
                    s.addr,
                    format!("{method} {t} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
                )
                .unwrap();
                assert!(
                    matches!(r.status, 400 | 404),
                    "{engine} {method} {t}: {}",
                    r.status
                );
                assert!(!String::from_utf8_lossy(&r.body).contains("SECRET"));
            }
        }
        // A raw NUL in the target is malformed.
        assert_eq!(
            status(&s, b"GET /c/a\0b HTTP/1.1\r\nHost: t\r\n\r\n"),
            Some(400)
        );
        // "secret" itself is a valid id; it is looked up only under objects/se/, where it is not.
        assert_eq!(status(&s, &req("/c/secret")), Some(404));
    }
    for w in &watches {
        assert!(
            !w.opened(),
            "a file outside the store's object tree was opened"
        );
    }
    // The watch does see opens: the check above can fail.
    std::fs::read(&secret).unwrap();
    assert!(watches[0].opened());
}

#[test]
fn slowloris_and_idle_connections_time_out() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 1000));
    for engine in ENGINES {
        let s = Server::start(
            engine,
            &[dir.path()],
            &["--header-timeout", "1", "--keepalive-timeout", "1"],
        );
        // Slowloris: a header line every 200 ms never completes the head.
        let mut c = connect(s.addr);
        let mut writer = c.try_clone().unwrap();
        let started = Instant::now();
        let trickle = std::thread::spawn(move || {
            let _ = writer.write_all(b"GET /c/title_720p.mp4 HTTP/1.1\r\nHost: t\r\n");
            for i in 0..25 {
                std::thread::sleep(Duration::from_millis(200));
                if writer
                    .write_all(format!("X-{i}: y\r\n").as_bytes())
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(3000),
            "{engine}: cut off after {took:?}"
        );
        assert!(
            String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408 "),
            "{engine}: {:?}",
            String::from_utf8_lossy(&got)
        );
        trickle.join().unwrap();
        // Idle keep-alive: closed after the keep-alive timeout.
        let mut c = connect(s.addr);
        c.write_all(&req(&format!("/c/{ID}"))).unwrap();
        assert_eq!(read_response(&mut c, false).unwrap().status, 200);
        assert!(
            closed_within(&mut c, Duration::from_secs(3)),
            "{engine}: idle connection kept"
        );
        // A connection that never sends a byte is closed too.
        let mut c = connect(s.addr);
        assert!(
            closed_within(&mut c, Duration::from_secs(3)),
            "{engine}: silent connection kept"
        );
        assert!(s.metric("oca_timeouts_total{kind=\"header\"}") >= 1.0);
        assert!(s.metric("oca_timeouts_total{kind=\"idle\"}") >= 1.0);
    }
}

#[test]
fn connection_cap_answers_503_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 1000));
    for engine in ENGINES {
        let s = Server::start(engine, &[dir.path()], &["--max-connections", "2"]);
        let mut held: Vec<_> = (0..2)
            .map(|_| {
                let mut c = connect(s.addr);
                c.write_all(&req(&format!("/c/{ID}"))).unwrap();
                assert_eq!(read_response(&mut c, false).unwrap().status, 200);
                c
            })
            .collect();
        for _ in 0..3 {
            let mut c = connect(s.addr);
            let _ = c.write_all(&req(&format!("/c/{ID}")));
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            let text = String::from_utf8_lossy(&got);
            assert!(
                got.is_empty() || text.starts_with("HTTP/1.1 503 "),
                "{engine}: over the cap got {text:?}"
            );
        }
        for c in &mut held {
            c.write_all(&req(&format!("/c/{ID}"))).unwrap();
            assert_eq!(
                read_response(c, false).unwrap().status,
                200,
                "{engine}: admitted connections keep working"
            );
        }
        assert!(s.metric("oca_connections_rejected_total{reason=\"max_connections\"}") >= 3.0);
        drop(held);
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            status(&s, &req(&format!("/c/{ID}"))),
            Some(200),
            "{engine}: slots come back"
        );
    }
}

#[test]
fn random_garbage_never_takes_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(1, 5000);
    put(dir.path(), ID, &body);
    let valid =
        format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\n\r\n").into_bytes();
    for engine in ENGINES {
        let s = Server::start(engine, &[dir.path()], &["--header-timeout", "1"]);
        for case in 0..150u64 {
            let mut bytes = pattern(case, 1 + (case as usize * 37) % 3000);
            // Half the cases mutate a valid request, so the parser gets past its first bytes.
            if case % 2 == 0 {
                let mut req = valid.clone();
                for (i, b) in bytes.iter().take(4).enumerate() {
                    let at = (*b as usize * (i + 1)) % req.len();
                    req[at] = bytes[(i + 7) % bytes.len()];
                }
                bytes = req;
            }
            let mut c = connect(s.addr);
            let _ = c.write_all(&bytes);
            let _ = c.shutdown(std::net::Shutdown::Write);
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            if !got.is_empty() {
                let text = String::from_utf8_lossy(&got[..got.len().min(12)]).into_owned();
                assert!(
                    text.starts_with("HTTP/1.1 "),
                    "{engine} case {case}: {text:?}"
                );
            }
        }
        let r = raw(s.addr, &valid).unwrap();
        assert_eq!(
            (r.status, &r.body[..]),
            (206, &body[..100]),
            "{engine}: still serving"
        );
        assert_eq!(
            s.metric("oca_connections_dropped_total"),
            0.0,
            "{engine}: no internal errors"
        );
        assert!(!s.log().contains("panicked"), "{engine}: {}", s.log());
    }
}
