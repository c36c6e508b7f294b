//! What the tests of several crates share: building and finding the workspace's binaries,
//! deterministic content, reading a daemon's metrics, child processes with their logs, a
//! self-signed certificate, free ports, a real S3-compatible server (`s3`), a PostgreSQL server
//! with a fresh database per test ([`postgres`]), `failfs`, a FUSE disk whose reads fail or hang
//! on demand, and `haproxy`, HAProxy in front of control-plane replicas.
//! A dev-dependency of every crate's tests; a dependency only of the lab and of `hwtests`
//! (qualification), never of an appliance binary.

#[cfg(feature = "browser")]
pub mod browser;
pub mod failfs;
pub mod haproxy;
pub mod netns;
pub mod postgres;
pub mod proc;
pub mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Deterministic bytes for a content id (xorshift seeded by the id's FNV-1a hash): test and
/// lab files anyone can regenerate to check what they received.
pub fn content_bytes(id: &str, len: usize) -> Vec<u8> {
    let mut x = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An oca-daemon's admin `/metrics` text (plain HTTP, no client library needed in a VM).
pub fn metrics(admin: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// The value of one series (name with labels) in Prometheus text; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Asserts what every service's `/metrics` says about itself: `<prefix>_build_info` with the
/// version, and the process's CPU time, memory, descriptors and start time (sane values: this
/// machine's process was started in the last day and holds descriptors under its limit).
pub fn assert_describes_its_process(text: &str, prefix: &str) {
    let build = format!(
        "{prefix}_build_info{{version=\"{}\",revision=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{build}: {text}");
    let present = |name: &str| {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("{name} "))),
            "{name} missing: {text}"
        );
        metric(text, &format!("{name} "))
    };
    let value = |name: &str| {
        let v = present(name);
        assert!(v > 0.0, "{name} is 0: {text}");
        v
    };
    // A process just started may not have used a clock tick yet.
    assert!(present("process_cpu_seconds_total") >= 0.0);
    assert!(value("process_resident_memory_bytes") >= 1_000_000.0);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    assert!(value("process_open_fds") < value("process_max_fds"));
    let started = value("process_start_time_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 86_400.0..=now + 5.0).contains(&started),
        "start time {started} against now {now}"
    );
}

/// Which of the daemons (by admin address) sent the most bytes over `window`: the one serving
/// a running play.
pub fn busiest(admins: &[String], window: std::time::Duration) -> usize {
    let sent = || -> Vec<f64> {
        admins
            .iter()
            .map(|a| metrics(a).map_or(0.0, |t| metric(&t, "oca_sent_bytes_total ")))
            .collect()
    };
    let before = sent();
    std::thread::sleep(window);
    let after = sent();
    (0..admins.len())
        .max_by(|&a, &b| (after[a] - before[a]).total_cmp(&(after[b] - before[b])))
        .unwrap_or(0)
}

/// The JSON summary an `oca-client --json` run printed last (panics with its output if none).
pub fn client_summary(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("null")).unwrap_or_else(|_| {
        panic!(
            "no summary; stdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The cargo running the tests, as a command without the variables `cargo test` sets for a
/// test ([`without_cargo_test_env`]).
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    without_cargo_test_env(&mut cmd);
    cmd
}

/// Removes from `cmd`'s environment what `cargo test` sets for a test process (`CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, `OUT_DIR`, ...), for commands that run cargo. Build scripts declare
/// some of them as inputs (`rerun-if-env-changed`: ring names its symbols after
/// `CARGO_PKG_*`), so a cargo started with a test's values reran ring's build script and
/// recompiled ring and everything above it (rustls, reqwest, our crates), once for each
/// package whose tests start a cargo: minutes of every CI run.
pub fn without_cargo_test_env(cmd: &mut Command) -> &mut Command {
    const SET_FOR_TESTS: [&str; 9] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
        "OUT_DIR",
    ];
    for (name, _) in std::env::vars_os() {
        let Some(n) = name.to_str() else { continue };
        if n.starts_with("CARGO_PKG_")
            || n.starts_with("CARGO_BIN_EXE_")
            || SET_FOR_TESTS.contains(&n)
        {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// The `cargo build` of [`cargo_bins`] for the workspace at `workspace`, JSON messages on
/// stdout: the one definition of what a test run builds, so whoever else builds the binaries
/// (oca-lab) builds the same units and neither rebuilds the other's.
pub fn cargo_build(workspace: &Path, release: bool, bins: &[(&str, &str)]) -> Command {
    let mut cmd = cargo();
    cmd.current_dir(workspace).args([
        "build",
        "--locked",
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
        for (pkg, bin) in bins {
            cmd.args(["-p", pkg, "--bin", bin]);
        }
    } else {
        cmd.args(["--workspace", "--tests"]);
    }
    cmd
}

/// Builds `(package, binary)` pairs of this workspace with the cargo running the tests, and
/// returns each binary's path by name: tests that start other packages' binaries use it.
///
/// Debug binaries are built as `cargo test --workspace` builds them (`cargo build --workspace
/// --tests`): the same units, so inside a workspace test run this builds nothing. Decision:
/// building just the packages asked for unifies features differently for each set of packages,
/// and the workspace run then recompiled shared dependencies (hyper, axum, reqwest, ...) once per
/// distinct set, about ten times; a run of one package's tests pays one workspace build instead.
pub fn cargo_bins(release: bool, bins: &[(&str, &str)]) -> HashMap<String, PathBuf> {
    let mut cmd = cargo_build(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        release,
        bins,
    );
    let out = cmd.output().expect("running cargo build");
    assert!(out.status.success(), "cargo build failed");
    let mut found = HashMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(exe) = line.split("\"executable\":\"").nth(1) else {
            continue;
        };
        let exe = exe.split('"').next().unwrap_or_default();
        let path = PathBuf::from(exe);
        if let Some(name) = path.file_name() {
            found.insert(name.to_string_lossy().into_owned(), path);
        }
    }
    for (_, bin) in bins {
        assert!(found.contains_key(*bin), "cargo built no {bin}");
    }
    found
}

/// The address after `name=` in a log line (the daemons' "listening addr=... admin=..." line);
/// panics when it is not there, as a test should.
pub fn addr_field(line: &str, name: &str) -> std::net::SocketAddr {
    let at = line
        .find(&format!("{name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        + name.len()
        + 1;
    line[at..]
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name}= is not an address in {line:?}"))
}

/// A TCP port free on loopback just now (for a server told its address up front).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

/// Whether a command is on PATH (tests say what is missing instead of failing obscurely).
pub fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a test that needs `cmd` must skip: it is missing here. Where CI runs
/// (`OCA_REQUIRE_VM`, set by `.ci/run`, which installs `package`) a missing tool fails the test
/// instead, so a broken install is never a silent pass.
pub fn skip_without(cmd: &str, package: &str) -> bool {
    if on_path(cmd) {
        return false;
    }
    assert!(
        std::env::var_os("OCA_REQUIRE_VM").is_none(),
        "{cmd} is not installed (.ci/run installs Debian's {package})"
    );
    eprintln!("skipped: {cmd} is not installed (apt-get install {package})");
    true
}

/// Writes a fresh self-signed certificate for `names` (host names or IP addresses) and its key,
/// both PEM; the certificate is its own CA (give it to clients as the root to trust).
pub fn write_self_signed(
    cert: &std::path::Path,
    key: &std::path::Path,
    names: &[String],
) -> anyhow::Result<()> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())?;
    std::fs::write(cert, ck.cert.pem())?;
    std::fs::write(key, ck.signing_key.serialize_pem())?;
    Ok(())
}

/// Whether the peer closes the connection (EOF or reset) within `within`.
pub fn closed_within(s: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}
