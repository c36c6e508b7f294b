//! Files changing under a response, the admin listener, draining on SIGTERM, engine choice.

mod common;

use common::*;
use oca_protocol::status::{DaemonStatus, DiskStatus, STATUS_PATH};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

const BIG: usize = 48 << 20;
/// What the file is truncated to while it is being sent.
const NEW_LEN: usize = 1 << 20;
const ID_SMALL: &str = "small_480p.mp4";

/// Reads a head, then the body until EOF; returns (Content-Length, body).
fn read_to_eof(c: &mut TcpStream, first: usize, between: impl FnOnce()) -> (usize, Vec<u8>) {
    let r = read_response(c, true).unwrap();
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    let mut body = vec![0u8; first];
    c.read_exact(&mut body).unwrap();
    between();
    let mut buf = vec![0u8; 1 << 16];
    while body.len() < len {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading body: {e}"),
        }
    }
    (len, body)
}

#[test]
fn a_file_that_shrinks_or_vanishes_mid_response() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(3, BIG);
        let path = put(dir.path(), "shrinks.mp4", &data);
        put(dir.path(), "vanishes.mp4", &data);
        let s = Server::start(engine, &[dir.path()], &[]);

        let mut c = slow_client(s.addr);
        c.write_all(b"GET /c/shrinks.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (len, body) = read_to_eof(&mut c, 1 << 16, || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(NEW_LEN as u64)
                .unwrap();
        });
        assert_eq!(len, BIG);
        assert!(
            body.len() < len,
            "{engine}: a truncated response must not look whole"
        );
        // Up to the new end, the file's real bytes. Past it, bytes the kernel already held for
        // the socket reference page-cache pages that the truncation zeroed (zero-copy), so only
        // the shortfall, not their content, is promised there (docs/oca-daemon.md).
        let real = body.len().min(NEW_LEN);
        let first_bad = body[..real].iter().zip(&data).position(|(a, b)| a != b);
        assert_eq!(first_bad, None, "{engine}: bytes before the new end differ");
        assert!(s.metric("oca_responses_truncated_total") >= 1.0, "{engine}");

        // Unlinking does not change an open file's bytes: the response completes, all correct.
        let mut c = slow_client(s.addr);
        c.write_all(b"GET /c/vanishes.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let (len, body) = read_to_eof(&mut c, 1 << 16, || {
            std::fs::remove_file(dir.path().join("objects/va/vanishes.mp4")).unwrap();
        });
        assert_eq!(body.len(), len, "{engine}");
        assert!(body == data, "{engine}");
        let r = raw(s.addr, b"GET /c/vanishes.mp4 HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        assert_eq!(r.status, 404, "{engine}: gone for new requests");
    }
}

#[test]
fn admin_listener_reports_and_never_serves_content() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), "a.mp4", &pattern(1, 5000));
    for engine in ENGINES {
        let s = Server::start(engine, &[dir.path()], &[]);
        for _ in 0..3 {
            assert_eq!(
                raw(
                    s.addr,
                    b"GET /c/a.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=0-99\r\n\r\n"
                )
                .unwrap()
                .status,
                206
            );
        }
        assert_eq!(
            raw(s.addr, b"GET /c/none HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap()
                .status,
            404
        );
        // A response is counted just after its last byte is handed to the kernel, which can be
        // a moment after the client has read it.
        let m = s.metrics_when(|m| m.contains("oca_response_seconds_count 4"));
        assert!(m.contains("oca_requests_total{class=\"2xx\"} 3"), "{m}");
        assert!(m.contains("oca_requests_total{class=\"4xx\"} 1"), "{m}");
        let (eng, body) = body_path_of(engine);
        let series = format!("oca_engine{{engine=\"{eng}\",body_path=\"{body}\"}} 1");
        assert!(m.contains(&series), "{m}");
        assert!(m.contains("oca_response_seconds_count 4"), "{m}");
        assert!(m.contains("oca_disk_read_errors_total{disk="), "{m}");
        assert!(s.metric("oca_sent_bytes_total") >= 300.0);
        assert!(s.metric("oca_connections_accepted_total") >= 4.0);
        let get = |p: &str| reqwest::blocking::get(format!("http://{}{p}", s.admin)).unwrap();
        assert_eq!(get("/healthz").status(), 200);
        assert_eq!(get("/readyz").status(), 200);
        assert_eq!(get("/c/a.mp4").status(), 404, "admin never serves content");
        let status: DaemonStatus = serde_json::from_str(&get(STATUS_PATH).text().unwrap()).unwrap();
        assert_eq!(status.requests_total, 4, "{status:?}");
        assert!(status.sent_bytes_total >= 300, "{status:?}");
        let disk = DiskStatus {
            path: dir.path().display().to_string(),
            failed: false,
        };
        assert_eq!(status.disks, vec![disk]);
    }
}

#[test]
fn sigterm_drains_in_flight_responses_then_exits_zero() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern(5, 8 << 20);
        put(dir.path(), "long.mp4", &data);
        let mut s = Server::start(engine, &[dir.path()], &["--drain-timeout", "20"]);
        let mut idle = connect(s.addr);
        idle.write_all(b"GET /c/long.mp4/range/0-0 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(read_response(&mut idle, false).unwrap().status, 206);
        let mut c = slow_client(s.addr);
        c.write_all(b"GET /c/long.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let admin = s.admin;
        let addr = s.addr;
        let (len, body) = read_to_eof(&mut c, 1 << 16, || {
            s.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_millis(600));
            let ready = reqwest::blocking::get(format!("http://{admin}/readyz"))
                .map(|r| r.status().as_u16());
            assert_eq!(
                ready.as_ref().ok(),
                Some(&503),
                "{engine}: not ready while draining: {ready:?}\n{}",
                s.log()
            );
            assert!(
                TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
                "{engine}: still accepting"
            );
            assert!(
                closed_within(&mut idle, Duration::from_secs(2)),
                "{engine}: idle connection kept open"
            );
        });
        assert_eq!(body.len(), len, "{engine}: in-flight response finished");
        assert!(body == data);
        let st = s
            .wait_exit(Duration::from_secs(10))
            .expect("daemon exits after draining");
        assert!(st.success(), "{engine}: exit status {st:?}");
    }
}

#[test]
fn help_lists_every_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_oca-daemon"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--config",
        "--listen",
        "--admin-listen",
        "--store",
        "--workers",
        "--engine",
        "--max-connections",
        "--max-header-bytes",
        "--max-uri-bytes",
        "--max-ranges",
        "--header-timeout",
        "--keepalive-timeout",
        "--send-timeout",
        "--drain-timeout",
        "--access-log",
        "--demo",
        "--keys",
        "--allow-unsigned",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn bad_configuration_fails_fast_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("oca.toml");
    std::fs::write(
        &cfg,
        "stores = [\"/nonexistent/disk0\"]\nallow_unsigned = true\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_oca-daemon"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A store that is not there may be a disk not mounted yet: 1, so systemd tries again.
    let (code, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("/nonexistent/disk0"), "{err}");
    // What only an edit fixes: 78 (EX_CONFIG), not restarted in a loop.
    std::fs::write(&cfg, "workers = \"two\"\n").unwrap();
    let (code, err) = run(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, Some(78));
    assert!(err.contains("oca.toml") && err.contains("workers"), "{err}");
    let (code, err) = run(&[]);
    assert_eq!(code, Some(78));
    assert!(err.contains("--store"), "{err}");
}

/// Installs a seccomp filter that fails io_uring_setup with EPERM, as container runtimes do.
#[cfg(target_arch = "x86_64")]
fn deny_io_uring() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const NR_IO_URING_SETUP: u32 = 425;
    let stmt = |code: u16, k: u32| libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jeq = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let filter = [
        stmt(ld, 4),
        jeq(AUDIT_ARCH_X86_64, 0, 3),
        stmt(ld, 0),
        jeq(NR_IO_URING_SETUP, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: runs in the forked child before exec; prctl with valid arguments and a filter
    // program that lives across the call.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[test]
fn auto_falls_back_to_epoll_when_io_uring_is_denied() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let data = pattern(9, 100_000);
    put(dir.path(), "x.mp4", &data);
    let mut cmd = daemon_cmd("auto", &[dir.path()], &[]);
    // SAFETY: the closure only makes async-signal-safe syscalls (prctl).
    unsafe { cmd.pre_exec(deny_io_uring) };
    let s = Server::spawn(cmd);
    let log = s.log();
    assert!(
        log.contains("io_uring unavailable, falling back") && log.contains("permission denied"),
        "{log}"
    );
    assert!(s.metrics().contains("oca_engine{engine=\"epoll\""));
    let r = raw(
        s.addr,
        b"GET /c/x.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=5-99999\r\n\r\n",
    )
    .unwrap();
    assert!(r.body[..] == data[5..]);

    // Forcing io_uring where it is denied is a clear startup error.
    let mut cmd = daemon_cmd("uring", &[dir.path()], &[]);
    // SAFETY: as above.
    unsafe { cmd.pre_exec(deny_io_uring) };
    let out = cmd.stderr(std::process::Stdio::piped()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--engine uring") && err.contains("io_uring_setup"),
        "{err}"
    );
}

/// Receives notifications until one contains `want`; returns everything received.
fn notified_until(sock: &std::os::unix::net::UnixDatagram, want: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.iter().any(|m: &String| m.contains(want)) {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e) => panic!("no {want} from the daemon ({e}); got {got:?}"),
        }
    }
    got
}

#[test]
fn systemd_ready_watchdog_and_stopping() {
    for engine in ENGINES {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), ID_SMALL, &pattern(5, 1000));
        let sock_path = dir.path().join("notify.sock");
        let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut cmd = daemon_cmd(engine, &[dir.path()], &[]);
        cmd.env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "200000");
        let mut s = Server::spawn(cmd);
        let first = notified_until(&sock, "READY=1");
        assert_eq!(first.len(), 1, "{engine}: READY=1 comes first: {first:?}");
        assert!(
            first[0].contains(&format!("STATUS=serving on {}", s.addr)),
            "{first:?}"
        );
        // Ready means serving.
        let body = client()
            .get(s.url(&format!("/c/{ID_SMALL}")))
            .send()
            .unwrap();
        assert_eq!(body.status(), 200);
        // Keep-alives every half interval (100 ms) while the workers tick.
        let since = std::time::Instant::now();
        let mut beats = 0;
        while since.elapsed() < Duration::from_secs(1) {
            beats += notified_until(&sock, "WATCHDOG=1").len();
        }
        assert!(beats >= 6, "{engine}: {beats} watchdog keep-alives in 1 s");
        assert!(s.log().contains("systemd watchdog enabled"));
        s.signal(libc::SIGTERM);
        notified_until(&sock, "STOPPING=1");
        assert!(s.wait_exit(Duration::from_secs(10)).unwrap().success());
    }
}

#[test]
fn without_systemd_nothing_is_sent_and_nothing_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = daemon_cmd("uring", &[dir.path()], &[]);
    // A watchdog asked for, but no socket to talk to: the daemon runs as usual.
    cmd.env_remove("NOTIFY_SOCKET")
        .env("WATCHDOG_USEC", "200000");
    let mut s = Server::spawn(cmd);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!s.log().contains("sd_notify failed"), "{}", s.log());
    s.signal(libc::SIGTERM);
    assert!(s.wait_exit(Duration::from_secs(10)).unwrap().success());
}

/// Messages received within `window`.
fn notified_during(sock: &std::os::unix::net::UnixDatagram, window: Duration) -> Vec<String> {
    let end = std::time::Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while std::time::Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

/// One worker really stuck (stopped alone with ptrace, as a worker blocked in the kernel would
/// be) while the rest of the daemon runs: /healthz fails and the watchdog keep-alives stop, so
/// systemd restarts the daemon; once the worker runs again they resume.
#[test]
fn a_stuck_worker_withholds_the_watchdog() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root (ptrace of the daemon's worker thread)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut cmd = daemon_cmd("uring", &[dir.path()], &[]);
    cmd.env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000");
    let s = Server::spawn(cmd);
    notified_until(&sock, "READY=1");
    let healthz = || {
        client()
            .get(format!("http://{}/healthz", s.admin))
            .send()
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(healthz(), 200);
    let frozen = Frozen::thread(s.child.id(), "oca-worker-1");
    // Stale after 5 s (admin::STALE_WORKER); then no keep-alive for the rest of the window.
    let before = notified_during(&sock, Duration::from_secs(6));
    let stuck = notified_during(&sock, Duration::from_secs(2));
    let health_stuck = healthz();
    drop(frozen);
    assert!(
        before.iter().any(|m| m.contains("WATCHDOG=1")),
        "{before:?}"
    );
    assert!(
        !stuck.iter().any(|m| m.contains("WATCHDOG=1")),
        "keep-alives went on while a worker was stuck: {stuck:?}"
    );
    assert_eq!(health_stuck, 503);
    assert!(s.log().contains("liveness check failed"), "{}", s.log());
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    notified_until(&sock, "WATCHDOG=1");
    assert_eq!(healthz(), 200);
    assert!(
        s.log().contains("watchdog keep-alives resumed"),
        "{}",
        s.log()
    );
}
