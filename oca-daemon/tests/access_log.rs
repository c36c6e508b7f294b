//! The access log against the real daemon: nginx `combined` lines that goaccess reads (Debian's
//! `goaccess`; `.ci/run` installs it), our fields after them, never a signature; reopened on
//! SIGUSR1 after a rotation; sampled without losing errors; and a log that cannot keep up drops
//! and counts lines while every request is still answered. `--access-log journal` is read back
//! from a real journald, started in a mount namespace of the test's own.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use oca_protocol::keys::{Key, Keyring};
use oca_protocol::signing::{signed_query, Scope};

const ID: &str = "80100172_1080p.mp4";

/// The fields of a `combined` line, and what follows it.
#[derive(Debug)]
struct Combined {
    addr: String,
    time: String,
    request: String,
    status: u16,
    body_bytes: u64,
    referer: String,
    user_agent: String,
    ours: String,
}

/// Parses nginx's `combined` format as log pipelines do: `$remote_addr - $remote_user
/// [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent"`.
fn parse_combined(line: &str) -> Option<Combined> {
    let (addr, rest) = line.split_once(' ')?;
    let rest = rest.strip_prefix("- - [")?;
    let (time, rest) = rest.split_once("] \"")?;
    let (request, rest) = rest.split_once("\" ")?;
    let (status, rest) = rest.split_once(' ')?;
    let (body_bytes, rest) = rest.split_once(" \"")?;
    let (referer, rest) = rest.split_once("\" \"")?;
    let (user_agent, ours) = rest.split_once("\" ")?;
    Some(Combined {
        addr: addr.into(),
        time: time.into(),
        request: request.into(),
        status: status.parse().ok()?,
        body_bytes: body_bytes.parse().ok()?,
        referer: referer.into(),
        user_agent: user_agent.into(),
        ours: ours.into(),
    })
}

fn field<'l>(ours: &'l str, name: &str) -> &'l str {
    ours.split(' ')
        .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name} in {ours}"))
}

/// The file's lines once there are at least `n` (the writer flushes every 100 ms).
fn lines_when(path: &Path, n: usize) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || Instant::now() > end {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn keys(dir: &Path) -> (Key, std::path::PathBuf) {
    let key = Key::new("k7", [7; 32]).unwrap();
    let path = dir.join("keys.json");
    std::fs::write(&path, Keyring::new(vec![key.clone()]).unwrap().to_json()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    (key, path)
}

/// A daemon serving `store` that checks signatures with `keys` and logs to `log`.
fn signed_and_logged(
    engine: &str,
    store: &Path,
    keys: &Path,
    log: &Path,
    extra: &[&str],
) -> Server {
    let mut args = vec![
        "--keys",
        keys.to_str().unwrap(),
        "--access-log",
        log.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Server::start(engine, &[store], &args)
}

#[test]
fn lines_are_combined_goaccess_reads_them_and_no_signature_is_written() {
    if test_support::skip_without("goaccess", "goaccess") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(3, 8 << 20);
    put(dir.path(), ID, &body);
    let (key, keys) = keys(dir.path());
    for engine in ["uring", "epoll"] {
        let log = dir.path().join(format!("access-{engine}.log"));
        let s = signed_and_logged(engine, dir.path(), &keys, &log, &[]);
        let query = signed_query(&key, ID, now() + 600, Scope::Play);
        let signature = query.rsplit_once("s=").unwrap().1.to_string();
        let signed = format!("/c/{ID}?{query}");
        let ranged = raw(
            s.addr,
            format!(
                "GET {signed} HTTP/1.1\r\nHost: t\r\nRange: bytes=100-1099\r\n\
                 Referer: https://player.example/watch\r\nUser-Agent: test \"agent\"/1.0\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(ranged.status, 206);
        let head = raw(
            s.addr,
            format!("HEAD {signed} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(head.status, 200);
        let forged = format!("/c/{ID}?e={}&k=k7&s=AAAAforged", now() + 600);
        let refused = raw(
            s.addr,
            format!("GET {forged} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .unwrap();
        assert_eq!(refused.status, 403);
        assert_eq!(
            raw(s.addr, b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap()
                .status,
            404
        );
        assert_eq!(
            raw(s.addr, b"BREW /pot\x01 HTTP/1.1\r\n\r\n")
                .unwrap()
                .status,
            400
        );
        // A client that leaves after the head of a whole 8 MiB file: a line that says so.
        let mut c = connect(s.addr);
        c.write_all(format!("GET {signed} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let mut first = [0u8; 4096];
        let _ = c.read(&mut first).unwrap();
        drop(c);

        let lines = lines_when(&log, 6);
        assert_eq!(lines.len(), 6, "{engine}: {lines:#?}\n{}", s.log());
        let text = lines.join("\n");
        assert!(
            !text.contains(&signature) && !text.contains("AAAAforged"),
            "{engine}: a signature was logged:\n{text}"
        );
        let parsed: Vec<Combined> = lines
            .iter()
            .map(|l| parse_combined(l).unwrap_or_else(|| panic!("not combined: {l}")))
            .collect();
        let by_status = |st: u16| parsed.iter().find(|c| c.status == st).unwrap();
        let r = by_status(206);
        assert_eq!(r.addr, "127.0.0.1");
        assert!(
            r.time.ends_with(" +0000") && r.time.len() == 26,
            "{}",
            r.time
        );
        let expires = field(&query, "e");
        assert_eq!(
            r.request,
            format!(
                "GET /c/{ID}?e={}&k=k7 HTTP/1.1",
                expires.split('&').next().unwrap()
            )
        );
        assert_eq!(r.body_bytes, 1000);
        assert_eq!(r.referer, "https://player.example/watch");
        assert_eq!(r.user_agent, "test \\x22agent\\x22/1.0");
        assert!(
            r.ours.starts_with("range=\"bytes=100-1099\" "),
            "{}",
            r.ours
        );
        assert_eq!(
            field(&r.ours, "sent"),
            (ranged.head.len() + 1000).to_string()
        );
        assert_eq!(field(&r.ours, "path"), "cache");
        assert_eq!(field(&r.ours, "tls"), "off");
        assert_eq!(field(&r.ours, "kid"), "k7");
        assert_eq!(field(&r.ours, "end"), "ok");
        let h = parsed
            .iter()
            .find(|c| c.request.starts_with("HEAD "))
            .unwrap();
        assert_eq!((h.status, h.body_bytes), (200, 0));
        assert_eq!(field(&h.ours, "path"), "mem");
        assert_eq!(field(&by_status(403).ours, "kid"), "k7");
        assert_eq!(by_status(404).request, "GET /nope HTTP/1.1");
        assert_eq!(field(&by_status(404).ours, "kid"), "-");
        assert_eq!(by_status(400).request, "BREW /pot\\x01 HTTP/1.1");
        let cut = parsed
            .iter()
            .find(|c| c.status == 200 && c.request.starts_with("GET "))
            .unwrap();
        assert_eq!(field(&cut.ours, "end"), "aborted", "{engine}: {cut:?}");
        assert!(cut.body_bytes < body.len() as u64, "{engine}: {cut:?}");

        // goaccess reads every line as a valid `combined` request.
        let report = dir.path().join(format!("report-{engine}.json"));
        let out = Command::new("goaccess")
            .arg(&log)
            .args(["--log-format=COMBINED", "--no-global-config", "-o"])
            .arg(&report)
            .output()
            .unwrap();
        assert!(out.status.success(), "goaccess: {out:?}");
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
        let general = &report["general"];
        assert_eq!(general["total_requests"], 6, "{general}");
        assert_eq!(general["valid_requests"], 6, "{general}");
        assert_eq!(general["failed_requests"], 0, "{general}");

        let m = s.metrics_when(|m| m.contains("oca_access_log_lines_total 6"));
        assert!(m.contains("oca_access_log_lines_total 6"), "{m}");
        assert!(
            m.contains("oca_access_log_dropped_total{reason=\"buffer_full\"} 0"),
            "{m}"
        );
    }
}

/// What nginx logs and a shorter path once did not: a head cut off by the header timeout (408)
/// and a connection over the per-client cap (503 at accept) are logged like any other error,
/// the 408 with what the client had sent of its request line, less the signature.
#[test]
fn timeouts_and_refused_connections_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 5000));
    let (key, keys) = keys(dir.path());
    for engine in ["uring", "epoll"] {
        let log = dir.path().join(format!("closing-{engine}.log"));
        let limits = ["--header-timeout", "1", "--max-connections-per-client", "1"];
        let s = signed_and_logged(engine, dir.path(), &keys, &log, &limits);
        let query = signed_query(&key, ID, now() + 600, Scope::Play);
        let signature = query.rsplit_once("s=").unwrap().1.to_string();
        let mut slow = connect(s.addr);
        slow.write_all(format!("GET /c/{ID}?{query} HTTP/1.1\r\nHost: t\r\n").as_bytes())
            .unwrap();
        // The cap is one connection per client, and `slow` holds it once it is accepted.
        s.metrics_when(|m| m.contains("\noca_connections_accepted_total 1\n"));
        // Nothing sent: a refused connection closed with unread input would be reset, and
        // the reset could beat the 503 to the client.
        let mut over = connect(s.addr);
        let refused = read_response(&mut over, false).unwrap();
        assert_eq!(refused.status, 503);
        let timed_out = read_response(&mut slow, false).unwrap();
        assert_eq!(timed_out.status, 408);
        let lines = lines_when(&log, 2);
        assert_eq!(lines.len(), 2, "{engine}: {lines:#?}");
        let parsed: Vec<Combined> = lines
            .iter()
            .map(|l| parse_combined(l).unwrap_or_else(|| panic!("not combined: {l}")))
            .collect();
        let (unavailable, timeout) = (&parsed[0], &parsed[1]);
        assert_eq!(
            (unavailable.status, unavailable.request.as_str()),
            (503, "-"),
            "{engine}: {lines:#?}"
        );
        assert_eq!(timeout.status, 408, "{engine}: {lines:#?}");
        assert_eq!(unavailable.addr, "127.0.0.1");
        assert!(
            timeout.request.starts_with(&format!("GET /c/{ID}?e=")),
            "{engine}: {lines:#?}"
        );
        assert!(!lines[1].contains(&signature), "{engine}: {}", lines[1]);
        assert_eq!(field(&timeout.ours, "kid"), "-");
        assert!(unavailable.body_bytes > 0 && timeout.body_bytes > 0);
    }
}

#[test]
fn sigusr1_reopens_the_file_after_logrotate_renamed_it() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 5000));
    let log = dir.path().join("access.log");
    let s = Server::start(
        "uring",
        &[dir.path()],
        &["--access-log", log.to_str().unwrap()],
    );
    let get = |path: &str| {
        let r = raw(
            s.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.unwrap().status, 200);
    };
    get(&format!("/c/{ID}?before"));
    assert_eq!(lines_when(&log, 1).len(), 1);
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.signal(libc::SIGUSR1);
    s.wait_log("access log reopened");
    get(&format!("/c/{ID}?after"));
    let new = lines_when(&log, 1);
    assert_eq!(new.len(), 1, "{new:?}\n{}", s.log());
    assert!(new[0].contains("?after"), "{new:?}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("?before") && !old.contains("?after"), "{old}");
}

#[test]
fn sampling_logs_one_in_n_successes_and_every_error() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 5000));
    let log = dir.path().join("access.log");
    let s = Server::start(
        "epoll",
        &[dir.path()],
        &[
            "--access-log",
            log.to_str().unwrap(),
            "--access-log-sample",
            "10",
            "--workers",
            "1",
        ],
    );
    let mut c = connect(s.addr);
    for i in 0..40 {
        let path = if i % 8 == 0 {
            "/missing"
        } else {
            "/c/80100172_1080p.mp4"
        };
        c.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let r = read_response(&mut c, false).unwrap();
        assert!(r.status == 200 || r.status == 404);
    }
    // 35 successes: the 10th, 20th and 30th are logged; all 5 errors are.
    let lines = lines_when(&log, 8);
    std::thread::sleep(Duration::from_millis(300));
    let lines_after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.len(), 8, "{lines:#?}");
    assert_eq!(lines_after.lines().count(), 8);
    assert_eq!(lines.iter().filter(|l| l.contains("\" 404 ")).count(), 5);
}

#[test]
fn a_log_that_cannot_keep_up_drops_and_counts_lines_and_never_stalls_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 100));
    // A FIFO whose reader never reads: the writer thread blocks in its first write once the
    // pipe's 64 KiB are full, as it would on a hung disk.
    let fifo = dir.path().join("access.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::File::open(fifo).unwrap())
    };
    let s = Server::start(
        "uring",
        &[dir.path()],
        &["--access-log", fifo.to_str().unwrap(), "--workers", "1"],
    );
    let _held_open = reader.join().unwrap();
    // Lines of about 2.2 KiB (a long User-Agent): 8 MiB of buffer is about 4,000 of them.
    let agent = "a".repeat(2000);
    let req = format!("GET /c/{ID} HTTP/1.1\r\nHost: t\r\nUser-Agent: {agent}\r\n\r\n");
    let started = Instant::now();
    let mut c = connect(s.addr);
    let batch = req.repeat(50);
    for _ in 0..200 {
        c.write_all(batch.as_bytes()).unwrap();
        for _ in 0..50 {
            let r = read_response(&mut c, false).expect("answered");
            assert_eq!(r.status, 200);
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "requests slowed to a crawl behind the log"
        );
    }
    let dropped = s.metric("oca_access_log_dropped_total{reason=\"buffer_full\"}");
    assert!(dropped > 1000.0, "dropped {dropped}\n{}", s.metrics());
    assert_eq!(s.metric("oca_requests_total{class=\"2xx\"}"), 10_000.0);
}

/// Stops the journald a test started in its mount namespace.
struct Journald {
    /// A process in the namespace (the daemon).
    ns_pid: u32,
}

impl Journald {
    /// Runs `args` in the namespace.
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .args(["-t", &self.ns_pid.to_string(), "-m", "--"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        let _ = self.run(&["sh", "-c", "kill $(cat /run/oca-test-journald.pid)"]);
    }
}

/// `--access-log journal` against a real journald: Debian's `systemd-journald`, started in a
/// private mount namespace of the daemon's (its own /run and /var/log/journal on tmpfs), so the
/// machine's journal is neither needed nor touched. Root only (mount namespaces).
#[test]
fn lines_reach_journald_under_their_own_identifier() {
    const JOURNALD: &str = "/lib/systemd/systemd-journald";
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new(JOURNALD).exists() || !test_support::on_path("journalctl") {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "needs root and systemd's journald (.ci/run installs systemd)"
        );
        eprintln!("skipped: needs root, {JOURNALD} and journalctl");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    put(dir.path(), ID, &pattern(1, 5000));
    let daemon = daemon_cmd(
        "uring",
        &[dir.path()],
        &["--access-log", "journal", "--workers", "1"],
    );
    let script = format!(
        "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal /var/log/journal \
         && mount -t tmpfs tmpfs /var/log/journal \
         && {{ {JOURNALD} </dev/null >/dev/null 2>&1 & echo $! > /run/oca-test-journald.pid; }} \
         && n=0; while [ ! -S /run/systemd/journal/socket ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done; \
         exec \"$@\""
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "--propagation", "private", "sh", "-c", &script, "sh"])
        .arg(daemon.get_program())
        .args(daemon.get_args())
        .envs(daemon.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let s = Server::spawn(cmd);
    let journald = Journald {
        ns_pid: s.child.id(),
    };
    for i in 0..3 {
        let r = raw(
            s.addr,
            format!("GET /c/{ID}?n={i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        );
        assert_eq!(r.unwrap().status, 200);
    }
    let end = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let out = journald.run(&["journalctl", "-t", "oca-access", "-o", "cat", "--no-pager"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().count() >= 3 || Instant::now() > end {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.lines().count(), 3, "{lines}\n{}", s.log());
    for (i, l) in lines.lines().enumerate() {
        let c = parse_combined(l).unwrap_or_else(|| panic!("not combined: {l}"));
        assert_eq!(c.request, format!("GET /c/{ID}?n={i} HTTP/1.1"));
    }
    let out = journald.run(&["journalctl", "-t", "oca-access", "-o", "json", "-n", "1"]);
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry["PRIORITY"], "6", "{entry}");
}
