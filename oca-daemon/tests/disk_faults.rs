//! Disks that fail: one returning I/O errors (a FUSE filesystem, `failfs`, that returns EIO on
//! demand) is isolated while the other keeps serving; one that hangs costs only its own content.
//!
//! Needs root (loop devices, mounts, FUSE); skips otherwise unless OCA_REQUIRE_VM=1.

mod common;

use common::cold::*;
use common::*;
use oca_protocol::status::{DaemonStatus, DiskStatus, STATUS_PATH};
use std::io::Write;
use std::time::Duration;

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
        // Once failed: the hung disk's files are 404, the good disk still answers.
        let failed_over = || {
            assert_eq!(
                try_range(addr, "hung_1080p.mp4", "0-99", Duration::from_secs(5)).map(|r| r.0),
                Some(404)
            );
            let got = try_range(addr, "good_1080p.mp4", "0-99999", Duration::from_secs(5));
            assert!(
                got.is_some_and(|(st, body)| st == 206 && body[..] == a[..100_000]),
                "{engine}"
            );
        };
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
            failed_over();
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
            failed_over();
        }
    }
}
