//! The cold-read path on real block devices: O_DIRECT reads into registered buffers, aligned
//! and trimmed, on XFS over a loop device; the `auto` policy's choices; the bounded buffer pool
//! and per-disk queues under concurrency; and a disk that starts failing (a FUSE filesystem that
//! returns EIO on demand) isolated while the other disk keeps serving.
//!
//! Needs root (loop devices, mounts, FUSE); skips otherwise unless OCA_REQUIRE_VM=1.

mod common;

use common::*;
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
    if skip() {
        return;
    }
    if !Path::new("/dev/fuse").exists() {
        assert!(std::env::var_os("OCA_REQUIRE_VM").is_none(), "no /dev/fuse");
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
    let bad = hwtests::failfs::FailFs::start(&backing, &dir.path().join("bad"));
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
}
