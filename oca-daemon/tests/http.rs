//! HTTP semantics users rely on, against the real binary, for both engines.

mod common;

use common::*;
use std::io::Write;

const ID: &str = "80100172_1080p.mp4";
const SIZE: usize = (1 << 20) + 17;

struct Fixture {
    _dir: tempfile::TempDir,
    body: Vec<u8>,
    servers: Vec<(&'static str, Server)>,
}

fn fixture(extra: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(7, SIZE);
    put(dir.path(), ID, &body);
    put(dir.path(), "empty.bin", b"");
    let servers = ENGINES
        .iter()
        .map(|e| (*e, Server::start(e, &[dir.path()], extra)))
        .collect();
    Fixture {
        _dir: dir,
        body,
        servers,
    }
}

fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> reqwest::blocking::Response {
    let mut req = client().get(s.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().unwrap()
}

fn hdr(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn whole_file_and_head_carry_validators() {
    let f = fixture(&[]);
    for (engine, s) in &f.servers {
        let r = get(s, &format!("/c/{ID}"), &[]);
        assert_eq!(r.status(), 200, "{engine}");
        assert_eq!(hdr(&r, "accept-ranges"), "bytes");
        assert_eq!(hdr(&r, "etag"), format!("\"{ID}\""));
        assert_eq!(hdr(&r, "content-type"), "video/mp4");
        assert!(httpdate::parse_http_date(&hdr(&r, "last-modified")).is_ok());
        assert_eq!(hdr(&r, "content-length"), SIZE.to_string());
        assert!(r.bytes().unwrap() == f.body, "{engine}: body differs");

        let h = client().head(s.url(&format!("/c/{ID}"))).send().unwrap();
        assert_eq!(h.status(), 200);
        assert_eq!(hdr(&h, "content-length"), SIZE.to_string());
        assert!(h.bytes().unwrap().is_empty());

        let e = get(s, "/c/empty.bin", &[]);
        assert_eq!(
            (e.status().as_u16(), hdr(&e, "content-length")),
            (200, "0".into())
        );
    }
}

#[test]
fn single_ranges() {
    let f = fixture(&[]);
    let n = SIZE as u64;
    let cases: [(&str, u64, u64); 5] = [
        ("bytes=0-99", 0, 99),
        ("bytes=1000-", 1000, n - 1),
        ("bytes=-500", n - 500, n - 1),
        ("bytes=1048000-99999999", 1_048_000, n - 1),
        ("bytes=-99999999", 0, n - 1),
    ];
    for (engine, s) in &f.servers {
        for (range, a, b) in cases {
            let r = get(s, &format!("/c/{ID}"), &[("range", range)]);
            assert_eq!(r.status(), 206, "{engine} {range}");
            assert_eq!(
                hdr(&r, "content-range"),
                format!("bytes {a}-{b}/{n}"),
                "{range}"
            );
            assert_eq!(hdr(&r, "content-length"), (b - a + 1).to_string());
            assert!(
                r.bytes().unwrap()[..] == f.body[a as usize..=b as usize],
                "{engine} {range}"
            );
        }
        // HEAD ignores Range (RFC 9110 §14.2): the whole length, no body.
        let h = client()
            .head(s.url(&format!("/c/{ID}")))
            .header("range", "bytes=0-1")
            .send()
            .unwrap();
        assert_eq!(
            (h.status().as_u16(), hdr(&h, "content-length")),
            (200, SIZE.to_string())
        );
    }
}

#[test]
fn multiple_ranges_are_multipart_and_capped() {
    let f = fixture(&["--max-ranges", "4"]);
    for (engine, s) in &f.servers {
        let r = get(
            s,
            &format!("/c/{ID}"),
            &[("range", "bytes=0-9, 500-599,-3,99999999-")],
        );
        assert_eq!(r.status(), 206, "{engine}");
        let ct = hdr(&r, "content-type");
        assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
        let body = r.bytes().unwrap();
        let parts = multipart_parts(&ct, &body);
        let n = SIZE;
        let want = [(0, 9), (500, 599), (n - 3, n - 1)];
        assert_eq!(
            parts.len(),
            want.len(),
            "{engine}: unsatisfiable part is dropped"
        );
        for ((cr, bytes), (a, b)) in parts.iter().zip(want) {
            assert_eq!(cr, &format!("bytes {a}-{b}/{n}"));
            assert!(bytes[..] == f.body[a..=b]);
        }
        let r = get(
            s,
            &format!("/c/{ID}"),
            &[("range", "bytes=0-0,2-2,4-4,6-6,8-8")],
        );
        assert_eq!(r.status(), 416, "{engine}: over the cap");
        assert_eq!(hdr(&r, "content-range"), format!("bytes */{n}"));
    }
}

#[test]
fn unsatisfiable_malformed_and_foreign_units() {
    let f = fixture(&[]);
    for (engine, s) in &f.servers {
        for range in [
            format!("bytes={SIZE}-"),
            "bytes=-0".into(),
            "bytes=9-1".into(),
            "bytes=x".into(),
            "bytes=".into(),
        ] {
            let r = get(s, &format!("/c/{ID}"), &[("range", &range)]);
            assert_eq!(r.status(), 416, "{engine} {range}");
            assert_eq!(hdr(&r, "content-range"), format!("bytes */{SIZE}"));
            assert!(r.bytes().unwrap().len() < 100, "no content in a 416");
        }
        let r = get(s, "/c/empty.bin", &[("range", "bytes=0-")]);
        assert_eq!(
            (r.status().as_u16(), hdr(&r, "content-range")),
            (416, "bytes */0".into())
        );
        let r = get(s, &format!("/c/{ID}"), &[("range", "items=0-5")]);
        assert_eq!(r.status(), 200, "{engine}: unknown unit is ignored");
    }
}

#[test]
fn path_ranges() {
    let f = fixture(&[]);
    for (engine, s) in &f.servers {
        let r = get(s, &format!("/c/{ID}/range/100-199"), &[]);
        assert_eq!(r.status(), 206, "{engine}");
        assert_eq!(hdr(&r, "content-range"), format!("bytes 100-199/{SIZE}"));
        assert!(r.bytes().unwrap()[..] == f.body[100..200]);
        let r = get(s, &format!("/c/{ID}/range/{}-99999999", SIZE - 5), &[]);
        assert!(r.bytes().unwrap()[..] == f.body[SIZE - 5..]);
        assert_eq!(
            get(s, &format!("/c/{ID}/range/{SIZE}-{}", SIZE + 9), &[]).status(),
            416
        );
        assert_eq!(get(s, &format!("/c/{ID}/range/9-1"), &[]).status(), 400);
        assert_eq!(get(s, &format!("/c/{ID}/range/abc"), &[]).status(), 400);
        // The path names the bytes, so a Range header does not change them.
        let r = get(
            s,
            &format!("/c/{ID}/range/0-9"),
            &[("range", "bytes=100-200")],
        );
        assert!(r.bytes().unwrap()[..] == f.body[..10]);
    }
}

#[test]
fn conditional_requests() {
    let f = fixture(&[]);
    let etag = format!("\"{ID}\"");
    for (engine, s) in &f.servers {
        let lm = hdr(
            &get(s, &format!("/c/{ID}"), &[("range", "bytes=0-0")]),
            "last-modified",
        );
        let r = get(s, &format!("/c/{ID}"), &[("if-none-match", &etag)]);
        assert_eq!(r.status(), 304, "{engine}");
        assert_eq!(hdr(&r, "etag"), etag);
        assert_eq!(
            get(s, &format!("/c/{ID}"), &[("if-none-match", "W/\"x\", *")]).status(),
            304
        );
        assert_eq!(
            get(s, &format!("/c/{ID}"), &[("if-none-match", "\"other\"")]).status(),
            200
        );
        assert_eq!(
            get(s, &format!("/c/{ID}"), &[("if-modified-since", &lm)]).status(),
            304
        );
        let range = ("range", "bytes=10-19");
        let r = get(s, &format!("/c/{ID}"), &[range, ("if-range", &etag)]);
        assert_eq!(r.status(), 206, "{engine}: If-Range with our ETag");
        let r = get(s, &format!("/c/{ID}"), &[range, ("if-range", &lm)]);
        assert_eq!(r.status(), 206, "{engine}: If-Range with our date");
        for stale in [
            "\"other\"",
            "W/\"80100172_1080p.mp4\"",
            "Mon, 01 Jan 2001 00:00:00 GMT",
        ] {
            let r = get(s, &format!("/c/{ID}"), &[range, ("if-range", stale)]);
            assert_eq!(
                r.status(),
                200,
                "{engine}: If-Range {stale} must give the whole file"
            );
            assert_eq!(r.bytes().unwrap().len(), SIZE);
        }
    }
}

#[test]
fn keep_alive_pipelining_and_close() {
    let f = fixture(&[]);
    for (engine, s) in &f.servers {
        let mut c = connect(s.addr);
        let one = |range: &str| {
            format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes={range}\r\n\r\n")
        };
        let batch = format!("{}{}{}", one("0-9"), one("100-109"), one("-10"));
        c.write_all(batch.as_bytes()).unwrap();
        for want in [&f.body[0..10], &f.body[100..110], &f.body[SIZE - 10..]] {
            let r = read_response(&mut c, false).unwrap();
            assert_eq!(r.status, 206, "{engine}");
            assert!(r.body == want, "{engine}: pipelined responses in order");
        }
        // Same connection still usable, then Connection: close is honoured.
        c.write_all(
            format!(
                "GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut c, false).unwrap();
        assert_eq!(r.header("connection").as_deref(), Some("close"));
        assert!(
            closed_within(&mut c, std::time::Duration::from_secs(3)),
            "{engine}: closes after Connection: close"
        );
        // HTTP/1.0 closes by default and keeps alive on request.
        let mut c = connect(s.addr);
        c.write_all(format!("GET /c/{ID}/range/0-0 HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_response(&mut c, false).unwrap().status, 206);
        assert!(closed_within(&mut c, std::time::Duration::from_secs(3)));
        let mut c = connect(s.addr);
        c.write_all(
            format!("GET /c/{ID}/range/0-0 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let r = read_response(&mut c, false).unwrap();
        assert_eq!(r.header("connection").as_deref(), Some("keep-alive"));
        c.write_all(format!("GET /c/{ID}/range/1-1 HTTP/1.0\r\n\r\n").as_bytes())
            .unwrap();
        assert_eq!(read_response(&mut c, false).unwrap().body, &f.body[1..2]);
    }
}

#[test]
fn pipelined_requests_queued_behind_a_blocked_response_are_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let big = pattern(8, 24 << 20);
    put(dir.path(), "big.mp4", &big);
    for engine in ENGINES {
        let s = Server::start(engine, &[dir.path()], &["--max-header-bytes", "1024"]);
        let mut c = slow_client(s.addr);
        // A response far larger than the socket buffers, so it blocks until we read, then
        // 30 KiB of pipelined requests: past the head limit, so the io_uring engine (which keeps
        // receiving while it writes) has to pause receiving and resume later.
        c.write_all(b"GET /c/big.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        let n = 400;
        let mut batch = String::new();
        for i in 0..n {
            batch.push_str(&format!(
                "GET /c/big.mp4/range/{i}-{i} HTTP/1.1\r\nHost: t\r\n\r\n"
            ));
        }
        let mut writer = c.try_clone().unwrap();
        let sender = std::thread::spawn(move || writer.write_all(batch.as_bytes()));
        let whole = read_response(&mut c, false).unwrap();
        assert!(whole.body == big, "{engine}: first response");
        for i in 0..n {
            let r = read_response(&mut c, false).unwrap();
            assert_eq!(r.body, &big[i..=i], "{engine}: pipelined response {i}");
        }
        sender.join().unwrap().unwrap();
    }
}

#[test]
fn the_send_timeout_cuts_a_stalled_client_never_one_that_keeps_reading() {
    let dir = tempfile::tempdir().unwrap();
    let big = std::sync::Arc::new(pattern(9, 8 << 20));
    put(dir.path(), "long.mp4", &big);
    for engine in ENGINES {
        let s = Server::start(engine, &[dir.path()], &["--send-timeout", "1"]);
        // About 3 s to read 8 MiB, three send timeouts, with bytes moving all along.
        let mut steady = slow_client(s.addr);
        steady
            .write_all(b"GET /c/long.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let big = big.clone();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            while got.len() < big.len() + 100 {
                match steady.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
                std::thread::sleep(std::time::Duration::from_micros(2500));
                if got.ends_with(&big[big.len() - 64..]) {
                    break;
                }
            }
            let at = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            (got[at..] == big[..], got.len() - at)
        });
        // The stalled one reads its head and a little, then nothing.
        let mut stalled = slow_client(s.addr);
        stalled
            .write_all(b"GET /c/long.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut first = [0u8; 16 << 10];
        std::io::Read::read_exact(&mut stalled, &mut first).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2500));
        assert!(
            closed_within(&mut stalled, std::time::Duration::from_secs(2)),
            "{engine}: a client that stopped reading is closed after the send timeout"
        );
        let (exact, n) = reader.join().unwrap();
        assert!(
            exact,
            "{engine}: the steady reader got {n} body bytes, not the file"
        );
        assert_eq!(
            s.metric("oca_timeouts_total{kind=\"send\"}"),
            1.0,
            "{engine}"
        );
    }
}
