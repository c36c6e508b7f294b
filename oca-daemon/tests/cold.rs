//! The cold-read path on real block devices: O_DIRECT reads into registered buffers, aligned
//! and trimmed, on XFS over a loop device; the `auto` policy's choices; the buffer pool held only
//! while cold reads use it; the bounded pool and per-disk queues under concurrency. Slow and
//! vanishing clients are in `cold_clients.rs`, failing and hanging disks in `disk_faults.rs`.
//!
//! Needs root (loop devices, mounts, FUSE); skips otherwise unless OCA_REQUIRE_VM=1.

mod common;

use common::cold::*;
use common::*;
use std::io::Write;
use std::time::Duration;

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
fn connections_that_never_read_cold_never_map_the_cold_buffers() {
    // Each closing connection pumps the cold queues; the pump mapped and pinned the whole pool
    // even with no read waiting, and from 30 s on the idle release unmapped it on every tick and
    // the next close mapped it again: a worker serving only the page cache spent its time in
    // io_uring_register (HTTPS handshakes per second fell 15% after half a minute).
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = LoopDisk::new(dir.path(), "disk0", "xfs").unwrap();
    let body = pattern(12, 64 << 10);
    put_cold(&disk.mount, "hot_1080p.mp4", &body);
    let s = Server::start("uring", &[&disk.mount], &["--workers", "1"]);
    s.wait_log("cold path (O_DIRECT) ready");
    for _ in 0..20 {
        let req = b"GET /c/hot_1080p.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=0-4095\r\nConnection: close\r\n\r\n";
        let r = raw(s.addr, req).expect("an answer");
        assert_eq!(r.status, 206);
        assert!(r.body[..] == body[..4096]);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(pinned_kib(&s), 0, "cold buffers pinned with no cold read");
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
