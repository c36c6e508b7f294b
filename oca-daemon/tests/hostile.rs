//! What a hostile or broken client does to an appliance on the open Internet (issue 13): floods
//! of pipelined requests, connection churn across the io_uring generation wrap, ranges that
//! would amplify, one address taking every connection, and a store whose shard directory is a
//! symlink. Each against the real binary, on every engine.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

const ID: &str = "title_720p.mp4";

/// Reads one response (status and Content-Length body) off a buffered stream.
fn next_response(r: &mut impl BufRead) -> Result<(u16, Vec<u8>), String> {
    next_response_typed(r).map(|(status, _, body)| (status, body))
}

/// [`next_response`], with the response's Content-Type.
fn next_response_typed(r: &mut impl BufRead) -> Result<(u16, String, Vec<u8>), String> {
    let mut line = String::new();
    if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
        return Err("connection closed".into());
    }
    let status: u16 = line
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("status line {line:?}"))?;
    let (mut len, mut ctype) = (0usize, String::new());
    loop {
        line.clear();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err("connection closed in a head".into());
        }
        if line == "\r\n" {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        if k.eq_ignore_ascii_case("content-length") {
            len = v.trim().parse().map_err(|_| format!("length {line:?}"))?;
        } else if k.eq_ignore_ascii_case("content-type") {
            ctype = v.trim().to_string();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok((status, ctype, body))
}

/// Request `i` of a pipelined flood: mostly the shortest request that gets an answer without a
/// signature or a file (a 404, as an attacker would send), every fourth a one-byte range of the
/// file, so the order of the answers is checked byte by byte.
fn flood_request(i: usize, size: usize) -> Vec<u8> {
    if i % 4 == 3 {
        let at = (i * 7919) % size;
        format!("GET /c/{ID}/range/{at}-{at} HTTP/1.1\nHost:a\n\n").into_bytes()
    } else {
        b"GET / HTTP/1.1\nHost:a\n\n".to_vec()
    }
}

/// Checks the answers to [`flood_request`] `from..to`, read off `r`.
pub fn check_flood(
    r: &mut impl BufRead,
    from: usize,
    to: usize,
    body: &[u8],
) -> Result<(), String> {
    for j in from..to {
        let (status, got) = next_response(r).map_err(|e| format!("response {j}: {e}"))?;
        let at = (j * 7919) % body.len();
        let ok = if j % 4 == 3 {
            status == 206 && got == [body[at]]
        } else {
            status == 404
        };
        if !ok {
            return Err(format!("response {j}: {status} {got:?}"));
        }
    }
    Ok(())
}

/// The bytes of requests `from..to` of a flood.
pub fn flood_bytes(from: usize, to: usize, size: usize) -> Vec<u8> {
    (from..to).flat_map(|j| flood_request(j, size)).collect()
}

/// Writes `count` flood requests from one thread, 2,000 at a time, while the answers pile up
/// unread for half a second (so requests pile up behind them too), then reads and checks them
/// all.
fn flood_while_reading(
    mut w: impl Write + Send + 'static,
    r: impl std::io::Read,
    count: usize,
    body: &[u8],
) -> Result<(), String> {
    let size = body.len();
    let writer = std::thread::spawn(move || {
        for from in (0..count).step_by(2_000) {
            w.write_all(&flood_bytes(from, from + 2_000, size))?;
        }
        Ok::<_, std::io::Error>(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let got = check_flood(&mut BufReader::with_capacity(1 << 16, r), 0, count, body);
    let _ = writer.join();
    got
}

#[test]
fn a_hundred_thousand_pipelined_requests_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(5, 100_000);
    put(dir.path(), ID, &body);
    const N: usize = 100_000;
    for engine in ENGINES {
        // The largest head limit lets a megabyte of requests pile up behind answers the client
        // does not read at first; when it does, they are all answered in one go.
        let s = Server::start(engine, &[dir.path()], &["--max-header-bytes", "1048576"]);
        let c = connect(s.addr);
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let started = Instant::now();
        let w = c.try_clone().unwrap();
        let got = flood_while_reading(w, c, N, &body);
        assert!(
            got.is_ok(),
            "{engine}: {got:?}\n{}",
            s.log().lines().rev().take(5).collect::<Vec<_>>().join("\n")
        );
        eprintln!("{engine}: {N} pipelined answers in {:?}", started.elapsed());
        assert_eq!(
            raw(
                s.addr,
                format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()
            )
            .map(|r| r.status),
            Some(200),
            "{engine}: alive"
        );
    }
}

#[test]
fn pipelined_floods_over_tls_are_answered_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(6, 100_000);
    let store = dir.path().join("store");
    put(&store, ID, &body);
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let pem = tls::write_cert(&cert, &key);
    let cfg = tls::client_config(&pem, &[&rustls::version::TLS13], None);
    const N: usize = 40_000;
    for engine in ENGINES {
        let s = Server::start(
            engine,
            &[&store],
            &[
                &["--max-header-bytes", "1048576"][..],
                &tls::flags(&cert, &key),
            ]
            .concat(),
        );
        let (r, w) = tls::tls_split(tls::tls_addr(&s), &cfg);
        let got = flood_while_reading(w, r, N, &body);
        assert!(
            got.is_ok(),
            "{engine}: {got:?}\n{}",
            s.log().lines().rev().take(5).collect::<Vec<_>>().join("\n")
        );
        assert!(!s.log().contains("overflow"), "{engine}");
    }
}

/// Opens `count` connections one after another, each asking for one range and checking every
/// byte, from `threads` threads at once.
fn churn(
    addr: std::net::SocketAddr,
    count: usize,
    threads: usize,
    body: &[u8],
) -> Result<(), String> {
    let body = std::sync::Arc::new(body.to_vec());
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let body = body.clone();
            std::thread::spawn(move || -> Result<(), String> {
                for i in (t..count).step_by(threads) {
                    let first = (i * 4099) % (body.len() - 1000);
                    let last = first + 999;
                    let req = format!(
                        "GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes={first}-{last}\r\nConnection: close\r\n\r\n"
                    );
                    let r = raw(addr, req.as_bytes())
                        .ok_or_else(|| format!("connection {i}: closed without an answer"))?;
                    if r.status != 206 || r.body != body[first..=last] {
                        return Err(format!("connection {i}: {} {} bytes", r.status, r.body.len()));
                    }
                }
                Ok(())
            })
        })
        .collect();
    workers.into_iter().try_for_each(|w| w.join().unwrap())
}

#[test]
fn connections_across_the_io_uring_generation_wraps_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(7, 1 << 20);
    put(dir.path(), ID, &body);
    // 2^24 is where an earlier layout of the tags wrapped; 2^32 is where the counter itself does.
    for first in [(1u64 << 24) - 1000, (1u64 << 32) - 1000] {
        for engine in ["uring", "uring-sendfile"] {
            let mut cmd = daemon_cmd(engine, &[dir.path()], &[]);
            cmd.env("OCA_URING_FIRST_GENERATION", first.to_string());
            let s = Server::spawn(cmd);
            // Two workers share them; each crosses the wrap after its first thousand.
            let got = churn(s.addr, 4_000, 4, &body);
            assert!(got.is_ok(), "{engine} from {first}: {got:?}");
            let m = s.metrics_when(|m| m.contains("oca_active_connections 0\n"));
            assert!(
                m.contains("oca_active_connections 0\n"),
                "{engine} from {first}: connections left open:\n{m}"
            );
            assert!(
                s.metric("oca_connections_accepted_total") >= 4_000.0,
                "{engine} from {first}"
            );
        }
    }
}

#[test]
fn overlapping_ranges_never_send_a_byte_twice() {
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(8, 4 << 20);
    put(dir.path(), ID, &body);
    let sixteen = vec!["0-"; 16].join(",");
    for engine in ENGINES {
        let s = Server::start(engine, &[dir.path()], &[]);
        let sent = || s.metric("oca_sent_bytes_total");
        let before = sent();
        let req = format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes={sixteen}\r\n\r\n");
        let r = raw(s.addr, req.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "{engine}: the whole file, once");
        assert!(r.body == body, "{engine}");
        let on_wire = sent() - before;
        assert!(
            on_wire <= body.len() as f64 + 1024.0,
            "{engine}: {on_wire} bytes sent for a {} byte file",
            body.len()
        );
        // Overlapping and touching ranges become one part; disjoint ones stay parts.
        let req = format!(
            "GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes=100-199,0-99,150-4095\r\n\r\n"
        );
        let r = raw(s.addr, req.as_bytes()).unwrap();
        assert_eq!(r.status, 206, "{engine}");
        assert_eq!(
            r.header("content-range").as_deref(),
            Some("bytes 0-4095/4194304")
        );
        assert!(r.body == body[..4096], "{engine}");
        let req =
            format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes=9000-9009,0-9,5-12\r\n\r\n");
        let r = raw(s.addr, req.as_bytes()).unwrap();
        let parts = multipart_parts(&r.header("content-type").unwrap(), &r.body);
        let ranges: Vec<&str> = parts.iter().map(|(cr, _)| cr.as_str()).collect();
        assert_eq!(
            ranges,
            ["bytes 0-12/4194304", "bytes 9000-9009/4194304"],
            "{engine}: ascending, merged"
        );
        assert!(parts[0].1 == body[..13] && parts[1].1 == body[9000..9010]);
        // A field that may appear once, twice, is a bad request.
        for dup in ["Range: bytes=0-1", "If-Range: \"title_720p.mp4\""] {
            let req = format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\n{dup}\r\n{dup}\r\n\r\n");
            assert_eq!(
                raw(s.addr, req.as_bytes()).map(|r| r.status),
                Some(400),
                "{engine}: {dup} twice"
            );
        }
    }
}

#[test]
fn a_symlinked_shard_directory_serves_nothing_from_outside_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside the store").unwrap();
    let store = dir.path().join("store");
    put(&store, ID, &pattern(9, 1000));
    std::os::unix::fs::symlink(outside.path(), store.join("objects/se")).unwrap();
    // And one level down: a shard that is real, holding a symlinked file.
    std::fs::create_dir_all(store.join("objects/pa")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", store.join("objects/pa/passwd")).unwrap();
    for engine in ENGINES {
        let s = Server::start(engine, &[&store], &[]);
        for id in ["secret", "passwd"] {
            let r = raw(
                s.addr,
                format!("GET /c/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
            )
            .unwrap();
            assert_eq!(r.status, 404, "{engine}: {id}");
            assert!(
                !String::from_utf8_lossy(&r.body).contains("outside")
                    && !r.body.starts_with(b"root:"),
                "{engine}: {id}"
            );
        }
        assert_eq!(
            raw(
                s.addr,
                format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()
            )
            .map(|r| r.status),
            Some(200),
            "{engine}: the store itself still serves"
        );
    }
}

/// A connection from `from` (a loopback address) to `to`.
fn connect_from(from: &str, to: std::net::SocketAddr) -> std::net::TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: std::net::SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&local.into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: std::net::TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

#[test]
fn one_client_cannot_take_every_connection() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(10, 1000));
    let get = format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\n\r\n");
    for engine in ENGINES {
        let s = Server::start(
            engine,
            &[dir.path()],
            &["--max-connections-per-client", "4"],
        );
        // 127.0.0.2 takes its four and is refused a fifth; 127.0.0.3 is still served.
        let mut held: Vec<_> = (0..4)
            .map(|_| {
                let mut c = connect_from("127.0.0.2", s.addr);
                c.write_all(get.as_bytes()).unwrap();
                assert_eq!(read_response(&mut c, false).unwrap().status, 200);
                c
            })
            .collect();
        for _ in 0..3 {
            let mut c = connect_from("127.0.0.2", s.addr);
            let _ = c.write_all(get.as_bytes());
            let mut got = Vec::new();
            let _ = std::io::Read::read_to_end(&mut c, &mut got);
            let text = String::from_utf8_lossy(&got);
            assert!(
                got.is_empty() || text.starts_with("HTTP/1.1 503 "),
                "{engine}: over the per-client cap got {text:?}"
            );
        }
        let served = |c: &mut std::net::TcpStream| {
            c.write_all(get.as_bytes()).unwrap();
            read_response(c, false).unwrap().status == 200
        };
        let mut other = connect_from("127.0.0.3", s.addr);
        assert!(served(&mut other), "{engine}: another client is served");
        for c in &mut held {
            assert!(served(c), "{engine}");
        }
        assert_eq!(
            s.metric("oca_connections_rejected_total{reason=\"per_client\"}"),
            3.0,
            "{engine}"
        );
        drop(held);
        drop(other);
        let m = s.metrics_when(|m| m.contains("oca_connected_clients 0\n"));
        assert!(
            m.contains("oca_connected_clients 0\n"),
            "{engine}: places come back:\n{m}"
        );
        assert!(served(&mut connect_from("127.0.0.2", s.addr)), "{engine}");
    }
}

/// One round of [`requests_that_arrive_while_receiving_is_paused_are_still_answered`]: an
/// answer the client leaves blocked for a moment; then, at once, a burst of pipelined requests
/// larger than a head (the receive pauses) and the client draining the answer (the answer
/// finishes, perhaps before the pause does); then one more request on the same connection.
/// Every byte checked.
fn paused_round(
    addr: std::net::SocketAddr,
    round: u64,
    id: &str,
    body: &[u8],
) -> Result<(), String> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(64 * 1024).unwrap();
    s.connect(&addr.into()).map_err(|e| e.to_string())?;
    let mut c: std::net::TcpStream = s.into();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(format!("GET /c/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(2 + round % 3));
    let burst: Vec<u8> = (0..16)
        .flat_map(|i| format!("GET /c/{id}/range/{i}-{i} HTTP/1.1\r\nHost:a\r\n\r\n").into_bytes())
        .collect();
    c.write_all(&burst).map_err(|e| e.to_string())?;
    let mut r = BufReader::with_capacity(1 << 20, c);
    let check =
        |r: &mut BufReader<std::net::TcpStream>, n: usize, first: usize| -> Result<(), String> {
            for i in first..first + n {
                let (status, b) =
                    next_response(r).map_err(|e| format!("round {round} answer {i}: {e}"))?;
                let want: &[u8] = if i == 0 {
                    body
                } else {
                    &body[(i - 1) % 16..=(i - 1) % 16]
                };
                if status != if i == 0 { 200 } else { 206 } || b != want {
                    return Err(format!(
                        "round {round} answer {i}: {status} with {} wrong bytes",
                        b.len()
                    ));
                }
            }
            Ok(())
        };
    check(&mut r, 17, 0)?;
    r.get_mut()
        .write_all(format!("GET /c/{id}/range/0-0 HTTP/1.1\r\nHost:a\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    check(&mut r, 1, 17)
}

/// A round whose client reads all along on another thread while, somewhere in a long answer,
/// it sends a burst of pipelined requests larger than a head: the answers' splices, the pause
/// and the next answers overlap in every order over the rounds. Every byte checked.
fn drained_round(
    addr: std::net::SocketAddr,
    round: u64,
    id: &str,
    body: &[u8],
) -> Result<(), String> {
    let c = connect(addr);
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut w = c.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(c);
        (0..17)
            .map(|_| next_response(&mut r))
            .collect::<Result<Vec<_>, _>>()
    });
    w.write_all(format!("GET /c/{id} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_micros(100 * (round % 30)));
    let burst: Vec<u8> = (0..16)
        .flat_map(|i| format!("GET /c/{id}/range/{i}-{i} HTTP/1.1\r\nHost:a\r\n\r\n").into_bytes())
        .collect();
    w.write_all(&burst).map_err(|e| e.to_string())?;
    let got = reader
        .join()
        .unwrap()
        .map_err(|e| format!("round {round}: {e}"))?;
    if got[0].0 != 200 || got[0].1 != body {
        return Err(format!(
            "round {round}: {} with {} bytes, not the file's",
            got[0].0,
            got[0].1.len()
        ));
    }
    for (i, (status, b)) in got[1..].iter().enumerate() {
        if (*status, &b[..]) != (206, &body[i..=i]) {
            return Err(format!("round {round}: part {i}: {status} {b:?}"));
        }
    }
    Ok(())
}

#[test]
fn requests_that_arrive_while_receiving_is_paused_are_still_answered() {
    // A response going out while more than a head's worth of pipelined requests arrives pauses
    // the receive (a cancel); the response may finish before the cancel does, and splices are
    // in flight meanwhile. Whatever the order, the connection reads again and answers
    // everything with its own bytes (a pipe given back to the pool mid-splice once sent one
    // client's bytes to another). Eight clients at once on one worker, two files, so
    // completions arrive in batches and every order happens.
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..2u64)
        .map(|i| (format!("paused{i}.mp4"), pattern(12 + i, 6 << 20)))
        .collect();
    for (id, body) in &files {
        put(dir.path(), id, body);
    }
    let files = std::sync::Arc::new(files);
    for engine in ENGINES {
        let s = Server::start(
            engine,
            &[dir.path()],
            &["--max-header-bytes", "256", "--workers", "1"],
        );
        let addr = s.addr;
        let clients: Vec<_> = (0..8u64)
            .map(|t| {
                let files = files.clone();
                std::thread::spawn(move || {
                    let (id, body) = &files[t as usize % 2];
                    (0..15).try_for_each(|round| paused_round(addr, t * 1000 + round, id, body))?;
                    (0..40).try_for_each(|round| drained_round(addr, t * 1000 + round, id, body))
                })
            })
            .collect();
        for c in clients {
            let got = c.join().unwrap();
            assert!(got.is_ok(), "{engine}: {got:?}");
        }
    }
}

/// Reads whatever arrives within `quiet` of the last bytes, appending to `into`.
fn drain_for(c: &mut std::net::TcpStream, quiet: Duration, into: &mut Vec<u8>) {
    c.set_read_timeout(Some(quiet)).unwrap();
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = std::io::Read::read(c, &mut buf) {
        if n == 0 {
            break;
        }
        into.extend_from_slice(&buf[..n]);
    }
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
}

#[test]
fn a_pause_that_ends_after_its_response_still_reads_again() {
    // The order that lost a connection, made certain: the worker is stopped while the client
    // sends a burst of pipelined requests (the receive will pause) and drains the blocked answer
    // (it will finish); the worker wakes to both in one batch, finishes the answer and asks to
    // read before the pause's cancel has completed. The answer must end with a write made on the
    // worker (sendfile, under 256 KiB a part) and be larger than the socket buffers (about
    // 3.8 MB on loopback): sixteen parts of 255 KiB.
    if !can_freeze() {
        eprintln!("skipped: needs root (ptrace of the daemon's worker thread)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(13, 8 << 20);
    put(dir.path(), ID, &body);
    let part = 255 * 1024;
    let ranges: Vec<(usize, usize)> = (0..16)
        .map(|i| (i * 512 * 1024, i * 512 * 1024 + part - 1))
        .collect();
    let header = ranges
        .iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",");
    let s = Server::start(
        "uring",
        &[dir.path()],
        &[
            "--max-header-bytes",
            "512",
            "--workers",
            "1",
            "--cold-path",
            "off",
        ],
    );
    let mut c = connect(s.addr);
    c.write_all(
        format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nRange: bytes={header}\r\n\r\n").as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let mut got = Vec::new();
    {
        let _frozen = Frozen::thread(s.child.id(), "oca-worker-0");
        let burst: Vec<u8> = (0..16)
            .flat_map(|i| {
                format!("GET /c/{ID}/range/{i}-{i} HTTP/1.1\r\nHost:a\r\n\r\n").into_bytes()
            })
            .collect();
        c.write_all(&burst).unwrap();
        drain_for(&mut c, Duration::from_millis(100), &mut got);
    }
    let mut r = BufReader::new(std::io::Read::chain(
        std::io::Cursor::new(got),
        c.try_clone().unwrap(),
    ));
    let (status, ctype, multipart) = next_response_typed(&mut r).unwrap();
    assert_eq!(status, 206);
    let parts = multipart_parts(&ctype, &multipart);
    assert_eq!(parts.len(), 16);
    for ((_, bytes), (a, b)) in parts.iter().zip(&ranges) {
        assert!(bytes[..] == body[*a..=*b]);
    }
    for i in 0..16 {
        let (status, b) = next_response(&mut r).unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!((status, &b[..]), (206, &body[i..=i]));
    }
    c.write_all(format!("GET /c/{ID}/range/5-5 HTTP/1.1\r\nHost:a\r\n\r\n").as_bytes())
        .unwrap();
    let (status, b) = next_response(&mut r).unwrap_or_else(|e| panic!("reads again: {e}"));
    assert_eq!((status, &b[..]), (206, &body[5..6]));
}
