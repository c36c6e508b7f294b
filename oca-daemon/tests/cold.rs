//! The cold-read path on real block devices: O_DIRECT reads into registered buffers, aligned
//! and trimmed, on XFS over a loop device; the `auto` policy's choices; the bounded buffer pool
//! and per-disk queues under concurrency; and a disk that starts failing (a FUSE filesystem that
//! returns EIO on demand) isolated while the other disk keeps serving.
//!
//! Needs root (loop devices, mounts, FUSE); skips otherwise unless OCA_REQUIRE_VM=1.

mod common;

use common::*;
use oca_protocol::status::{DaemonStatus, DiskStatus, STATUS_PATH};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// The io_uring variants: the cold path belongs to that engine.
const URING: [&str; 3] = ["uring", "uring-splice", "uring-sendfile"];

fn skip() -> bool {
    match loop_skip_reason() {
        None => false,
        Some(reason) => {
            assert!(std::env::var_os("OCA_REQUIRE_VM").is_none(), "{reason}");
            eprintln!("skipped: {reason}");
            true
        }
    }
}

/// Whether FUSE (the failfs test disk) is missing: a skip, or a failure where it is required.
fn no_fuse() -> bool {
    if Path::new("/dev/fuse").exists() {
        return false;
    }
    assert!(std::env::var_os("OCA_REQUIRE_VM").is_none(), "no /dev/fuse");
    eprintln!("skipped: no /dev/fuse");
    true
}

/// Writes a file, makes it durable and drops it from the page cache, so reads reach the disk.
fn put_cold(store: &Path, id: &str, body: &[u8]) {
    let path = put(store, id, body);
    let f = std::fs::File::open(&path).unwrap();
    f.sync_all().unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: fadvise on an open descriptor; only a hint.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn get_range(s: &Server, id: &str, range: &str) -> (u16, Vec<u8>) {
    let r = client()
        .get(s.url(&format!("/c/{id}")))
        .header("Range", format!("bytes={range}"))
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
}

/// The bytes a single range names, or None when unsatisfiable.
fn expect(body: &[u8], range: &str) -> Option<Vec<u8>> {
    let len = body.len() as u64;
    let (a, b) = range.split_once('-').unwrap();
    let (start, end) = match (a, b) {
        ("", n) => (len.saturating_sub(n.parse().unwrap()), len),
        (a, "") => (a.parse().unwrap(), len),
        (a, b) => (a.parse().unwrap(), (b.parse::<u64>().unwrap() + 1).min(len)),
    };
    (start < len).then(|| body[start as usize..end as usize].to_vec())
}

#[test]
fn cold_path_is_byte_exact_on_xfs_with_o_direct() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let sizes = [
        1usize,
        511,
        4095,
        4096,
        4097,
        (1 << 20) - 1,
        (1 << 20) + 1,
        (3 << 20) + 12_345,
    ];
    let files: Vec<(String, Vec<u8>)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("cold{i}_1080p.mp4"), pattern(100 + i as u64, n)))
        .collect();
    for (id, body) in &files {
        put_cold(&disk.mount, id, body);
    }
    // 64 KiB buffers: long parts take many reads, and ranges cross buffer boundaries.
    let extra = ["--cold-path", "always", "--cold-buffer-kib", "64"];
    for engine in URING {
        let s = Server::start(engine, &[&disk.mount], &extra);
        s.wait_log("cold path (O_DIRECT) ready");
        for (id, body) in &files {
            let whole = client().get(s.url(&format!("/c/{id}"))).send().unwrap();
            assert_eq!(whole.status(), 200);
            assert!(
                whole.bytes().unwrap()[..] == body[..],
                "{engine} {id} whole"
            );
            let n = body.len();
            let ranges = [
                "0-0".to_string(),
                format!("{}-", n / 3),
                format!("-{}", (n / 2).max(1)),
                format!("1-{}", n.saturating_sub(2).max(1)),
                format!("{}-{}", n.saturating_sub(1), n + 10),
                "4095-4096".to_string(),
                "511-70000".to_string(),
                format!("{}-{}", 65_535, 65_536 * 3 + 7),
            ];
            for r in &ranges {
                let (status, got) = get_range(&s, id, r);
                match expect(body, r) {
                    Some(want) => {
                        assert_eq!(status, 206, "{engine} {id} {r}");
                        assert!(
                            got == want,
                            "{engine} {id} {r}: {} bytes, want {}",
                            got.len(),
                            want.len()
                        );
                    }
                    None => assert_eq!(status, 416, "{engine} {id} {r}"),
                }
            }
        }
        // Several ranges in one request (multipart), each part read cold.
        let (id, body) = &files[7];
        let r = client()
            .get(s.url(&format!("/c/{id}")))
            .header("Range", "bytes=10-20,4096-8191,1048570-1048590,3000000-")
            .send()
            .unwrap();
        assert_eq!(r.status(), 206);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let parts = multipart_parts(&ct, &r.bytes().unwrap());
        let want = [
            (10, 21),
            (4096, 8192),
            (1_048_570, 1_048_591),
            (3_000_000, body.len()),
        ];
        assert_eq!(parts.len(), want.len());
        for ((_, got), (a, b)) in parts.iter().zip(want) {
            assert!(got[..] == body[a..b], "{engine} part {a}-{b}");
        }
        // Pipelined requests on one connection.
        let mut c = connect(s.addr);
        c.write_all(b"GET /c/cold7_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=100-200099\r\n\r\nGET /c/cold6_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=-300\r\n\r\n").unwrap();
        let a = read_response(&mut c, false).unwrap();
        let b = read_response(&mut c, false).unwrap();
        assert!(a.body[..] == files[7].1[100..200_100]);
        assert!(b.body[..] == files[6].1[files[6].1.len() - 300..]);
        let m = s.metrics();
        assert!(
            metric_of(&m, "oca_body_parts_total{path=\"cold\",reason=\"always\"}") > 50.0,
            "{m}"
        );
        assert_eq!(
            metric_of(
                &m,
                "oca_body_parts_total{path=\"page_cache\",reason=\"off\"}"
            ),
            0.0
        );
        let at = disk.mount.display();
        assert!(
            metric_of(&m, &format!("oca_cold_read_bytes_total{{disk=\"{at}\"}}")) > 10e6,
            "{m}"
        );
        assert!(metric_of(&m, &format!("oca_disk_read_seconds_count{{disk=\"{at}\"}}")) > 50.0);
        assert_eq!(
            metric_of(&m, &format!("oca_disk_failed{{disk=\"{at}\"}}")),
            0.0
        );
        // Long parts read their next buffer while sending the current one.
        assert!(
            metric_of(&m, "oca_cold_reads_ahead_total{used=\"yes\"}") > 20.0,
            "{m}"
        );
    }
}

fn metric_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn auto_keeps_small_hot_and_cached_parts_on_the_page_cache() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let big = pattern(7, 4 << 20);
    for id in [
        "tail_1080p.mp4",
        "popular_1080p.mp4",
        "warm_1080p.mp4",
        "stream_1080p.mp4",
    ] {
        put_cold(&disk.mount, id, &big);
    }
    // "warm" was just read by someone: its pages are cached.
    std::fs::read(disk.mount.join("objects/wa/warm_1080p.mp4")).unwrap();
    let s = Server::start(
        "uring",
        &[&disk.mount],
        &["--cold-path", "auto", "--hot-hits", "3"],
    );
    let reason = |r: &str| {
        let path = if r == "cold" { "cold" } else { "page_cache" };
        metric_of(
            &s.metrics(),
            &format!("oca_body_parts_total{{path=\"{path}\",reason=\"{r}\"}}"),
        )
    };
    assert_eq!(
        get_range(&s, "tail_1080p.mp4", "1048576-2097151").1,
        big[1 << 20..2 << 20]
    );
    assert_eq!(
        reason("cold"),
        1.0,
        "an uncached 1 MiB range of an unpopular file is read cold"
    );
    assert_eq!(get_range(&s, "tail_1080p.mp4", "0-8191").1, big[..8192]);
    assert_eq!(reason("small"), 1.0);
    assert_eq!(
        get_range(&s, "warm_1080p.mp4", "0-1048575").1,
        big[..1 << 20]
    );
    assert_eq!(reason("cached"), 1.0);
    // Many viewers of one title ask for the same region: the first three read it cold, the
    // fourth sends it through the page cache (and so puts it there).
    for _ in 0..4 {
        assert_eq!(
            get_range(&s, "popular_1080p.mp4", "2097152-3145727").1,
            big[2 << 20..3 << 20]
        );
    }
    assert_eq!(reason("hot"), 1.0, "{}", s.metrics());
    // One viewer streaming a title asks for each region once: all of it stays cold.
    for i in 0..4u64 {
        let r = format!("{}-{}", i << 20, ((i + 1) << 20) - 1);
        assert_eq!(
            get_range(&s, "stream_1080p.mp4", &r).1,
            big[(i << 20) as usize..((i + 1) << 20) as usize]
        );
    }
    assert_eq!(reason("hot"), 1.0, "{}", s.metrics());
    assert!(reason("cold") >= 4.0, "{}", s.metrics());
    // Each response on a keep-alive connection is decided on its own.
    let small_before = reason("small");
    let mut c = connect(s.addr);
    c.write_all(b"GET /c/tail_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=3145728-4194303\r\n\r\nGET /c/tail_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=100-199\r\n\r\n").unwrap();
    assert!(read_response(&mut c, false).unwrap().body[..] == big[3 << 20..4 << 20]);
    assert!(read_response(&mut c, false).unwrap().body[..] == big[100..200]);
    assert_eq!(reason("small"), small_before + 1.0, "{}", s.metrics());
}

/// The daemon's memory pinned for io_uring (its registered cold buffers), in KiB.
fn pinned_kib(s: &Server) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPin:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmPin in /proc/<pid>/status")
}

#[test]
fn cold_buffers_are_held_only_while_cold_reads_use_them() {
    // A worker that serves only from the page cache holds no cold buffers: they are mapped and
    // pinned at its first cold read and given back once all have been free for 30 s (they
    // were mapped at start: 10,000 idle connections took 85 MB instead of 21).
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let body = pattern(11, 4 << 20);
    put_cold(&disk.mount, "pin_1080p.mp4", &body);
    let s = Server::start(
        "uring",
        &[&disk.mount],
        &["--cold-path", "always", "--workers", "1"],
    );
    s.wait_log("cold path (O_DIRECT) ready");
    assert_eq!(pinned_kib(&s), 0, "nothing pinned before a cold read");
    assert!(get_range(&s, "pin_1080p.mp4", "0-2097151").1[..] == body[..2 << 20]);
    let pinned = pinned_kib(&s);
    assert!(
        pinned >= 32 << 10,
        "the pool (32 x 1 MiB) is pinned while in use: {pinned} KiB"
    );
    let end = std::time::Instant::now() + Duration::from_secs(40);
    while pinned_kib(&s) != 0 {
        assert!(
            std::time::Instant::now() < end,
            "cold buffers still pinned 40 s after the last cold read"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // And they come back for the next cold read.
    assert!(get_range(&s, "pin_1080p.mp4", "2097152-").1[..] == body[2 << 20..]);
    assert!(pinned_kib(&s) >= 32 << 10);
}

#[test]
fn a_bounded_pool_serves_many_connections_through_one_disk_queue() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let body = std::sync::Arc::new(pattern(9, 16 << 20));
    put_cold(&disk.mount, "many_1080p.mp4", &body);
    let extra = [
        "--cold-path",
        "always",
        "--cold-buffers",
        "2",
        "--cold-queue-depth",
        "1",
        "--cold-buffer-kib",
        "256",
    ];
    let s = std::sync::Arc::new(Server::start("uring", &[&disk.mount], &extra));
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let (s, body) = (s.clone(), body.clone());
            std::thread::spawn(move || {
                for k in 0..6u64 {
                    let start = ((t * 7919 + k * 104_729) * 4099) % (15 << 20);
                    let r = format!("{start}-{}", start + 300_000);
                    let (status, got) = get_range(&s, "many_1080p.mp4", &r);
                    assert_eq!(status, 206);
                    assert!(
                        got[..] == body[start as usize..start as usize + 300_001],
                        "{r}"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let m = s.metrics();
    let at = disk.mount.display();
    assert!(
        metric_of(&m, &format!("oca_cold_queue_waits_total{{disk=\"{at}\"}}")) > 0.0,
        "{m}"
    );
}

#[test]
fn a_disk_returning_io_errors_is_isolated_while_the_other_keeps_serving() {
    if skip() || no_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = LoopDisk::new(dir.path(), "good", "xfs").unwrap();
    let backing = dir.path().join("backing");
    std::fs::create_dir_all(backing.join("objects")).unwrap();
    let a = pattern(21, 6 << 20);
    let b = pattern(22, 6 << 20);
    put_cold(&good.mount, "good_1080p.mp4", &a);
    put(&backing, "bad_1080p.mp4", &b);
    let bad = test_support::failfs::FailFs::start(&backing, &dir.path().join("bad"));
    let s = std::sync::Arc::new(Server::start(
        "uring",
        &[&good.mount, &bad.mount],
        &["--cold-path", "always"],
    ));
    assert!(get_range(&s, "bad_1080p.mp4", "1000-300999").1 == b[1000..301_000]);
    assert!(get_range(&s, "good_1080p.mp4", "1000-300999").1 == a[1000..301_000]);

    // A player streams from the good disk all along.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streamer = {
        let (s, a, stop) = (s.clone(), a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let start = (n * 1_048_573) % (5 << 20);
                let (status, got) = get_range(
                    &s,
                    "good_1080p.mp4",
                    &format!("{start}-{}", start + 999_999),
                );
                assert_eq!(status, 206);
                assert!(
                    got[..] == a[start as usize..start as usize + 1_000_000],
                    "good disk bytes at {start}"
                );
                n += 1;
            }
            n
        })
    };
    bad.fail(true);
    // The read that meets the error: the response is cut short, never padded or passed off whole.
    let r = client()
        .get(s.url("/c/bad_1080p.mp4"))
        .header("Range", "bytes=2000000-2999999")
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let got = r.bytes().map(|b| b.len()).unwrap_or(0);
    assert!(
        status == 503 || got < 1_000_000,
        "status {status}, {got} bytes"
    );
    // From then on the disk is failed: its files are not found (404), the good disk keeps
    // serving.
    let at = bad.mount.display();
    let m = s.metrics_when(|m| metric_of(m, &format!("oca_disk_failed{{disk=\"{at}\"}}")) == 1.0);
    assert!(metric_of(&m, &format!("oca_disk_read_errors_total{{disk=\"{at}\"}}")) >= 1.0);
    assert_eq!(get_range(&s, "bad_1080p.mp4", "0-99").0, 404);
    assert!(s.log().contains("marked failed"), "{}", s.log());
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = streamer.join().unwrap();
    assert!(served >= 3, "the good disk kept serving ({served} ranges)");
    let good_at = good.mount.display();
    assert_eq!(
        metric_of(
            &s.metrics(),
            &format!("oca_disk_failed{{disk=\"{good_at}\"}}")
        ),
        0.0
    );
    // The same, typed, on /status: what the fill agent reads.
    let status: DaemonStatus = reqwest::blocking::get(format!("http://{}{STATUS_PATH}", s.admin))
        .and_then(|r| r.text())
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    let disk = |path: String, failed| DiskStatus { path, failed };
    assert_eq!(
        status.disks,
        vec![disk(good_at.to_string(), false), disk(at.to_string(), true)]
    );
}

/// A network namespace joined to this one by a veth pair (host 10.239.N.1, inside .2), so a
/// client in it is a real remote peer: no loopback shortcut, zero-copy sends for real.
struct Netns {
    name: String,
    host_ip: String,
}

impl Netns {
    fn new() -> Result<Netns, String> {
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n = (std::process::id() * 8 + k) % 250;
        let name = format!("ocazc{}-{k}", std::process::id());
        let (host_if, ns_if) = (format!("zch{n}"), format!("zcn{n}"));
        let (host_ip, ns_ip) = (format!("10.239.{n}.1"), format!("10.239.{n}.2"));
        sh("ip", &["netns", "add", &name])?;
        let ns = Netns { name, host_ip };
        sh(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        )?;
        sh("ip", &["link", "set", &ns_if, "netns", &ns.name])?;
        sh(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", ns.host_ip),
                "dev",
                &host_if,
            ],
        )?;
        sh("ip", &["link", "set", &host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            sh("ip", &all)
        };
        inside(&["addr", "add", &format!("{ns_ip}/24"), "dev", &ns_if])?;
        inside(&["link", "set", &ns_if, "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered the namespace (sockets it makes live there).
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a namespace descriptor we hold; it changes only this thread's
            // network namespace.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0);
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its veth end, and with it the host's.
        let _ = sh("ip", &["netns", "del", &self.name]);
    }
}

/// Reads one response's head and `Content-Length` body a few KiB at a time with pauses, so the
/// server's socket fills and its sends must wait.
fn read_slowly(s: &mut std::net::TcpStream) -> (String, Vec<u8>) {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "EOF in the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let n = s.read(&mut body[at..(at + (16 << 10)).min(len)]).unwrap();
        assert!(n > 0, "EOF after {at} of {len} body bytes");
        at += n;
        std::thread::sleep(Duration::from_micros(500));
    }
    (head, body)
}

#[test]
fn zero_copy_sends_to_slow_remote_clients_are_byte_exact() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let body = std::sync::Arc::new(pattern(11, 6 << 20));
    put_cold(&disk.mount, "zc_1080p.mp4", &body);
    let ns = Netns::new().unwrap();
    let listen = format!("{}:0", ns.host_ip);
    let s = Server::start(
        "uring",
        &[&disk.mount],
        &["--cold-path", "always", "--listen", &listen],
    );
    let addr = s.addr;
    // Four clients with small receive buffers, each asking for three ranges on one keep-alive
    // connection: a byte repeated or skipped in any response shifts the next one too.
    let clients: Vec<_> = (0..4u64)
        .map(|c| {
            let body = body.clone();
            ns.run(move || {
                let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                sock.set_recv_buffer_size(8192).unwrap();
                sock.connect(&addr.into()).unwrap();
                let mut sock: std::net::TcpStream = sock.into();
                sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                for k in 0..3u64 {
                    let start = (c * 1_234_567 + k * 654_321) % (3 << 20) + 17;
                    let end = start + (2 << 20) + 4_099;
                    let req = format!(
                        "GET /c/zc_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes={start}-{end}\r\n\r\n"
                    );
                    sock.write_all(req.as_bytes()).unwrap();
                    let (head, got) = read_slowly(&mut sock);
                    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
                    assert!(
                        got[..] == body[start as usize..=end as usize],
                        "client {c} range {start}-{end}: {} bytes, first difference at {:?}",
                        got.len(),
                        got.iter()
                            .zip(&body[start as usize..])
                            .position(|(a, b)| a != b)
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let m = s.metrics();
    assert!(
        metric_of(&m, "oca_cold_sends_total{send=\"zero_copy\"}") > 0.0,
        "the sends were zero-copy: {m}"
    );
    // The clients were slow enough to fill their sockets: zero-copy sends came back partial,
    // and the rest of those buffers went by copy (a reader not keeping up pins no more of the
    // buffer than its first send queued).
    assert!(
        metric_of(&m, "oca_cold_sends_total{send=\"copy\"}") > 0.0,
        "the clients were slow enough to fill the sockets: {m}"
    );
}

/// A remote client that stops reading holds the only cold buffer: another viewer does not wait
/// for it (cold.wait_timeout sends it through the page cache), and the send timeout ends the
/// stuck one and frees the buffer at once (a reset lets go of zero-copy bytes).
#[test]
fn a_client_that_stops_reading_gives_its_zero_copy_buffer_back_at_the_send_timeout() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let body = std::sync::Arc::new(pattern(12, 8 << 20));
    put_cold(&disk.mount, "stuck_1080p.mp4", &body);
    let ns = Netns::new().unwrap();
    let listen = format!("{}:0", ns.host_ip);
    // One worker with one cold buffer: while the stuck client holds it, nobody else reads cold.
    let extra = [
        "--cold-path",
        "always",
        "--listen",
        &listen,
        "--workers",
        "1",
        "--cold-buffers",
        "1",
        "--send-timeout",
        "2",
    ];
    let s = Server::start("uring", &[&disk.mount], &extra);
    let addr = s.addr;
    // The stuck client: a small window, 64 KiB read, then silence with the connection open (a
    // player paused in the background): the kernel keeps answering the server's window probes.
    let (stuck_tx, stuck_rx) = std::sync::mpsc::channel::<()>();
    let stuck = ns.run(move || {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(8192).unwrap();
        sock.connect(&addr.into()).unwrap();
        let mut sock: std::net::TcpStream = sock.into();
        sock.write_all(b"GET /c/stuck_1080p.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut first = vec![0u8; 64 << 10];
        std::io::Read::read_exact(&mut sock, &mut first).unwrap();
        let _ = stuck_rx.recv();
        drop(sock);
    });
    std::thread::sleep(Duration::from_millis(500));
    // Another viewer, also remote: served once the send timeout has closed the stuck one.
    let started = std::time::Instant::now();
    let other = {
        let body = body.clone();
        ns.run(move || {
            let mut sock = connect(addr);
            sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            sock.write_all(
                b"GET /c/stuck_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=5000000-6000000\r\n\r\n",
            )
            .unwrap();
            let r = read_response(&mut sock, false).unwrap();
            assert_eq!(r.status, 206);
            assert!(r.body[..] == body[5_000_000..=6_000_000]);
        })
    };
    if other.join().is_err() {
        panic!("the second viewer failed; log:\n{}", s.log());
    }
    let waited = started.elapsed();
    // It did not wait for the stuck one's buffer: past cold.wait_timeout (1 s) it went through
    // the page cache.
    assert!(
        waited < Duration::from_secs(3),
        "the second viewer waited {waited:?} for the stuck one's buffer"
    );
    let fell_back = |m: &str| metric_of(m, "oca_cold_fallbacks_total{reason=\"wait_timeout\"}");
    assert_eq!(fell_back(&s.metrics()), 1.0);
    // The send timeout closes the stuck one (reset: its zero-copy bytes are let go of at once)
    // and the buffer is free again: the next viewer reads cold without waiting.
    let m = s.metrics_when(|m| metric_of(m, "oca_timeouts_total{kind=\"send\"}") >= 1.0);
    assert_eq!(
        metric_of(&m, "oca_timeouts_total{kind=\"send\"}"),
        1.0,
        "{m}"
    );
    let third = {
        let body = body.clone();
        ns.run(move || {
            let mut sock = connect(addr);
            sock.write_all(
                b"GET /c/stuck_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=7000000-7999999\r\n\r\n",
            )
            .unwrap();
            let r = read_response(&mut sock, false).unwrap();
            assert!(r.status == 206 && r.body[..] == body[7_000_000..8_000_000]);
        })
    };
    third.join().unwrap();
    assert_eq!(
        fell_back(&s.metrics()),
        1.0,
        "the third viewer got the buffer back"
    );
    stuck_tx.send(()).unwrap();
    stuck.join().unwrap();
}

#[test]
fn clients_that_hang_up_mid_part_give_back_every_buffer() {
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let body = pattern(13, 6 << 20);
    put_cold(&disk.mount, "gone_1080p.mp4", &body);
    // Two 256 KiB buffers for the one worker: a leaked buffer (one held by a read ahead nobody
    // adopts) would soon leave nothing to serve with.
    let extra = [
        "--cold-path",
        "always",
        "--workers",
        "1",
        "--cold-buffers",
        "2",
        "--cold-buffer-kib",
        "256",
    ];
    let s = Server::start("uring", &[&disk.mount], &extra);
    for i in 0..30u64 {
        let mut c = connect(s.addr);
        let start = i * 77_777;
        c.write_all(
            format!("GET /c/gone_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes={start}-\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        let mut some = vec![0u8; 1000 + (i as usize * 7919) % 300_000];
        std::io::Read::read_exact(&mut c, &mut some).unwrap();
        // Gone, with most of the part unsent (and a read ahead perhaps in flight).
    }
    for _ in 0..3 {
        let (status, got) = get_range(&s, "gone_1080p.mp4", "1000-5000999");
        assert_eq!(status, 206);
        assert!(got[..] == body[1000..5_001_000]);
    }
    let m = s.metrics();
    assert!(
        metric_of(&m, "oca_cold_reads_ahead_total{used=\"yes\"}") > 0.0,
        "{m}"
    );
}

/// A reader that takes `step` bytes every `every` until told to stop, then checks what it got.
fn trickle(
    addr: std::net::SocketAddr,
    id: &str,
    range: (usize, usize),
    step: usize,
    every: Duration,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u8>> {
    let mut c = slow_client(addr);
    c.write_all(
        format!(
            "GET /c/{id} HTTP/1.1\r\nHost: t\r\nRange: bytes={}-{}\r\n\r\n",
            range.0, range.1
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = vec![0u8; step];
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(n) = std::io::Read::read(&mut c, &mut buf) {
                got.extend_from_slice(&buf[..n]);
            }
            std::thread::sleep(every);
        }
        got
    })
}

#[test]
fn slow_readers_holding_every_cold_buffer_do_not_stop_other_clients() {
    // Four readers taking 4 KiB every 2 s hold all four buffers of the only worker; another
    // client's 10 MiB range must still come whole within wait_timeout (1 s) plus its transfer:
    // 3 s is the bound documented. Then the slow readers themselves, past their hold (1 MiB at
    // 256 KiB/s: 4 s), go on through the page cache and give their buffers back.
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let body = pattern(21, 32 << 20);
    put_cold(&disk.mount, "slow_1080p.mp4", &body);
    put_cold(&disk.mount, "fast_1080p.mp4", &body[..12 << 20]);
    for engine in URING {
        let s = Server::start(
            engine,
            &[&disk.mount],
            &[
                "--cold-path",
                "always",
                "--cold-buffers",
                "4",
                "--workers",
                "1",
            ],
        );
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slow: Vec<_> = (0..4)
            .map(|i| {
                let range = (i * (8 << 20), i * (8 << 20) + (4 << 20));
                let t = trickle(
                    s.addr,
                    "slow_1080p.mp4",
                    range,
                    4096,
                    Duration::from_secs(2),
                    stop.clone(),
                );
                (range, t)
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let (status, got) = get_range(&s, "fast_1080p.mp4", "1000000-11485759");
        let took = started.elapsed();
        assert_eq!(status, 206, "{engine}");
        assert!(
            got[..] == body[1_000_000..11_485_760],
            "{engine}: byte-exact"
        );
        assert!(
            took < Duration::from_secs(3),
            "{engine}: took {took:?} behind slow readers"
        );
        let m = s.metrics_when(|m| {
            metric_of(m, "oca_cold_fallbacks_total{reason=\"slow_reader\"}") >= 4.0
        });
        assert!(
            metric_of(&m, "oca_cold_fallbacks_total{reason=\"wait_timeout\"}") >= 1.0,
            "{engine}: the fast client waited, then went by the page cache:\n{m}"
        );
        // Past their hold the slow readers fall back one by one (each at its next step).
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while metric_of(
            &s.metrics(),
            "oca_cold_fallbacks_total{reason=\"slow_reader\"}",
        ) < 4.0
        {
            assert!(
                std::time::Instant::now() < end,
                "{engine}: slow readers kept their buffers:\n{}",
                s.metrics()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        // With their buffers back, a new cold response starts at once.
        let started = std::time::Instant::now();
        let (status, got) = get_range(&s, "fast_1080p.mp4", "0-2097151");
        assert!(status == 206 && got[..] == body[..2 << 20], "{engine}");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{engine}: {:?}",
            started.elapsed()
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for ((a, _), t) in slow {
            let got = t.join().unwrap();
            assert!(!got.is_empty(), "{engine}");
            // What each slow reader got is the head and then the start of its range.
            let text_end = got.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
            if let Some(h) = text_end {
                let bytes = &got[h..];
                assert!(
                    bytes == &body[a..a + bytes.len()],
                    "{engine}: slow reader's bytes"
                );
            }
        }
    }
}

/// Asks for a range on a fresh connection and reports how the connection ended: the status and
/// bytes, or None when it closed without a whole answer.
fn try_range(
    addr: std::net::SocketAddr,
    id: &str,
    range: &str,
    within: Duration,
) -> Option<(u16, Vec<u8>)> {
    let mut c = std::net::TcpStream::connect(addr).ok()?;
    c.set_read_timeout(Some(within)).unwrap();
    c.write_all(
        format!(
            "GET /c/{id} HTTP/1.1\r\nHost: t\r\nRange: bytes={range}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .ok()?;
    let mut all = Vec::new();
    let _ = std::io::Read::read_to_end(&mut c, &mut all);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&all[..head_end]).to_string();
    let status = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())?;
    let body = all[head_end..].to_vec();
    (body.len() == len).then_some((status, body))
}

/// Lets a hung failfs answer again when dropped.
struct Release<'a>(&'a test_support::failfs::FailFs);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fail(false);
    }
}

#[test]
fn a_hung_disk_costs_only_its_own_content() {
    // One disk (FUSE) stops answering reads: requests for its files wait, then past
    // disk_timeout (2 s here) the disk is marked hung and failed, their connections end, and its
    // files are 404 (a player moves to another appliance). The other disk serves throughout,
    // from every worker: on io_uring no read, open or sendfile blocks a worker's thread.
    if skip() || no_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let good = LoopDisk::new(dir.path(), "good", "xfs").unwrap();
    let a = pattern(31, 8 << 20);
    let b = pattern(32, 8 << 20);
    put_cold(&good.mount, "good_1080p.mp4", &a);
    for engine in ["uring", "uring-splice", "epoll"] {
        let backing = dir.path().join(format!("backing-{engine}"));
        put(&backing, "hung_1080p.mp4", &b);
        let hung = test_support::failfs::FailFs::start(
            &backing,
            &dir.path().join(format!("hung-{engine}")),
        );
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let pem = tls::write_cert(&cert, &key);
        let s = Server::start(
            engine,
            &[&good.mount, &hung.mount],
            &[&["--disk-timeout", "2"][..], &tls::flags(&cert, &key)].concat(),
        );
        // Whatever happens, the disk answers again before the daemon is stopped: a process
        // with reads stuck in a FUSE filesystem cannot exit until they end.
        let _release = Release(&hung);
        let addr = s.addr;
        assert_eq!(
            try_range(addr, "hung_1080p.mp4", "0-99", Duration::from_secs(5)).map(|r| r.0),
            Some(206)
        );
        hung.hang();
        let started = std::time::Instant::now();
        let waiting: Vec<_> = (0..2)
            .map(|i| {
                std::thread::spawn(move || {
                    let range = format!("{}-{}", (i + 1) << 21, ((i + 1) << 21) + 999_999);
                    (
                        try_range(addr, "hung_1080p.mp4", &range, Duration::from_secs(20)),
                        started.elapsed(),
                    )
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        if engine != "epoll" {
            // Meanwhile the good disk answers at once, however many workers met the hung one.
            for k in 0..40u64 {
                let start = (k * 104_729 * 4099) % (7 << 20);
                let asked = std::time::Instant::now();
                let got = try_range(
                    addr,
                    "good_1080p.mp4",
                    &format!("{start}-{}", start + 99_999),
                    Duration::from_secs(5),
                );
                assert!(
                    got.as_ref().is_some_and(|(st, body)| *st == 206
                        && body[..] == a[start as usize..start as usize + 100_000]),
                    "{engine}: good disk request {k} failed while the other hung ({:?}):\n{}",
                    asked.elapsed(),
                    s.log()
                        .lines()
                        .rev()
                        .take(15)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
                assert!(
                    asked.elapsed() < Duration::from_secs(1),
                    "{engine}: good disk request {k} took {:?}",
                    asked.elapsed()
                );
            }
        }
        if engine != "epoll" {
            // Over HTTPS (rustls here: no kernel TLS on this machine) the file bytes the page
            // cache does not hold are read on the kernel's workers too.
            let cfg = tls::client_config(&pem, &[&rustls::version::TLS13], None);
            let mut c = tls::tls_connect(tls::tls_addr(&s), &cfg);
            let asked = std::time::Instant::now();
            c.write_all(b"GET /c/good_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=7000000-7999999\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut all = Vec::new();
            let _ = std::io::Read::read_to_end(&mut c, &mut all);
            let body_at = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
            assert!(
                all[body_at..] == a[7_000_000..8_000_000],
                "{engine}: HTTPS bytes from the good disk"
            );
            assert!(
                asked.elapsed() < Duration::from_secs(1),
                "{engine}: HTTPS took {:?}",
                asked.elapsed()
            );
        }
        // Within the deadline and a tick or two, the disk is failed.
        let at = hung.mount.display().to_string();
        let failed = format!("oca_disk_failed{{disk=\"{at}\"}}");
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while metric_of(&s.metrics(), &failed) != 1.0 {
            assert!(
                std::time::Instant::now() < end,
                "{engine}: not marked failed:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let marked = started.elapsed();
        assert!(
            marked < Duration::from_millis(3500),
            "{engine}: marked failed after {marked:?}"
        );
        assert!(
            metric_of(
                &s.metrics(),
                &format!("oca_disk_hangs_total{{disk=\"{at}\"}}")
            ) >= 1.0
        );
        if engine != "epoll" {
            // Their clients are let go of: a connection that ends short, never a whole answer.
            for w in waiting {
                let (got, after) = w.join().unwrap();
                assert!(
                    got.is_none(),
                    "{engine}: a hung read answered whole: {:?}\n{}",
                    got.as_ref().map(|(st, body)| (st, body.len())),
                    s.log()
                );
                assert!(
                    after < Duration::from_secs(5),
                    "{engine}: a waiting client held {after:?}"
                );
            }
            assert_eq!(
                try_range(addr, "hung_1080p.mp4", "0-99", Duration::from_secs(5)).map(|r| r.0),
                Some(404)
            );
            let got = try_range(addr, "good_1080p.mp4", "0-99999", Duration::from_secs(5));
            assert!(
                got.is_some_and(|(st, body)| st == 206 && body[..] == a[..100_000]),
                "{engine}"
            );
        }
        // The disk answers again (or is pulled): what waited on it completes and is let go of.
        hung.fail(false);
        let m = s.metrics_when(|m| m.contains("oca_active_connections 0\n"));
        assert!(
            m.contains("oca_active_connections 0\n"),
            "{engine}: connections left:\n{m}"
        );
        if engine == "epoll" {
            // The epoll engine blocks its worker in the read (documented): once the disk
            // answers, that worker serves again, and the disk stays failed.
            assert_eq!(
                try_range(addr, "hung_1080p.mp4", "0-99", Duration::from_secs(5)).map(|r| r.0),
                Some(404)
            );
            let got = try_range(addr, "good_1080p.mp4", "0-99999", Duration::from_secs(5));
            assert!(
                got.is_some_and(|(st, body)| st == 206 && body[..] == a[..100_000]),
                "{engine}"
            );
        }
    }
}
