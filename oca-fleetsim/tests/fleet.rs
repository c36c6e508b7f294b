//! The simulator against a real control-plane process on loopback with a real SQLite file: a
//! few hundred appliances for 20 s with every check on; and a control plane that does not
//! trust the simulator's X-Forwarded-For, whose answers the checks must refuse.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::proc::Proc;

/// The control plane with the simulator's report interval, its prober off (the simulated
/// appliances' URLs lead nowhere) and, when `trust`, the simulator as a trusted proxy.
fn control_plane(dir: &Path, interval: &str, trust: bool) -> (Proc, String) {
    let bins = test_support::cargo_bins(false, &[("control-plane", "control-plane")]);
    let mut cmd = Command::new(&bins["control-plane"]);
    cmd.args(["--listen", "127.0.0.1:0", "--probe-interval", "0"])
        .args(["--report-interval", interval])
        .arg("--db")
        .arg(dir.join("cp.db"));
    if trust {
        cmd.args(["--trusted-proxy", "127.0.0.1"]);
    }
    let cp = Proc::spawn(cmd);
    let line = cp.wait_log(" listening ", Duration::from_secs(30));
    let url = format!("http://{}", Proc::field(&line, "addr"));
    (cp, url)
}

/// Runs the simulator with `args` (and `--json`), waiting at most `within`; its exit code and
/// summary.
fn fleetsim(dir: &Path, url: &str, args: &[&str], within: Duration) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_oca-fleetsim"))
        .args(["--url", url, "--json", "--quiet", "--token-file"])
        .arg(dir.join("cp.db.admin-token"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("oca-fleetsim still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&stdout);
    let summary = serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|_| {
        panic!(
            "no summary; stdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&stderr)
        )
    });
    (status.code().unwrap_or(-1), summary)
}

/// 300 appliances in 60 sites reporting every 5 s, plays from all over their prefixes, limit
/// subscribers, one round of injected changes: every answer passes, reports keep up, and each
/// change reaches steering within the 2 s bound.
///
/// Without disks: the debug control plane builds a manifest for every report that has one
/// (~30 ms each unoptimised), which would make this a test of how fast a debug build plans.
#[test]
fn a_small_fleet_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let (_cp, url) = control_plane(dir.path(), "5", true);
    let shape: Vec<&str> = "--appliances 300 --sites 60 --regions 4 --prefixes-per-site 50 --files 4000 --interval 5 --bound 2 --no-disks"
        .split_whitespace()
        .collect();
    let load: Vec<&str> = "--duration 20 --play-rate 60 --steer-rate 20 --day 40 --events 1"
        .split_whitespace()
        .collect();
    let args: Vec<&str> = shape.iter().chain(&load).copied().collect();
    let (code, v) = fleetsim(dir.path(), &url, &args, Duration::from_secs(240));
    let failures = &v["failure_examples"];
    assert_eq!(v["verification_failures"], 0, "{failures}");
    assert_eq!(v["errors"], 0, "{}", v["errors_by_kind"]);
    assert_eq!(code, 0, "{}", v["exit"]);
    // The checks ran on real answers: served plays, refusals of limit subscribers.
    let plays = &v["plays"];
    assert!(v["checked"].as_u64().unwrap() > 300, "{plays}");
    assert!(plays["ok"].as_u64().unwrap() > 200, "{plays}");
    assert!(plays["too_many_streams"].as_u64().unwrap() > 0, "{plays}");
    assert!(v["steers_per_sec"].as_f64().unwrap() > 10.0, "{v}");
    // Reports kept up: 60 a second, none later than one interval after its slot.
    let reports = &v["reports"];
    assert_eq!(reports["late"], 0, "{reports}");
    assert!(v["reports_per_sec"].as_f64().unwrap() >= 55.0, "{v}");
    assert!(
        reports["worst_lateness_ms"].as_f64().unwrap() < 5000.0,
        "{reports}"
    );
    // Each injected change reached steering within the bound.
    let props = v["propagation"].as_array().unwrap();
    let kinds: Vec<&str> = props.iter().map(|p| p["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "health_down",
            "health_up",
            "route_withdraw",
            "route_announce"
        ]
    );
    for p in props {
        let d = p["delay_ms"].as_f64().unwrap_or(f64::INFINITY);
        assert!(d < 2000.0, "{p}");
    }
    // A second run finds the fleet built and reuses it (appliance credentials from the state
    // directory): nothing is created twice, and everything still checks out.
    let again: Vec<&str> = "--duration 3 --events 0 --limit-subscribers 0"
        .split_whitespace()
        .collect();
    let args2: Vec<&str> = shape.iter().chain(&again).copied().collect();
    let (code, v) = fleetsim(dir.path(), &url, &args2, Duration::from_secs(240));
    assert_eq!(code, 0, "{v}");
    assert!(v["fleet"]["setup_secs"].as_f64().unwrap() < 20.0, "{v}");
}

/// A control plane that does not trust the simulator's X-Forwarded-For steers every play for
/// 127.0.0.1, which no appliance's route covers: 503 `no_appliance` although the client's own
/// site holds the title. The checks must say so, and the exit code must be 1.
#[test]
fn answers_for_the_wrong_client_fail_the_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (_cp, url) = control_plane(dir.path(), "5", false);
    let args: Vec<&str> = "--appliances 50 --sites 10 --regions 2 --prefixes-per-site 10 --files 400 --interval 5 --duration 6 --play-rate 20 --bound 0.5 --events 0 --limit-subscribers 0 --no-disks"
        .split_whitespace()
        .collect();
    let (code, v) = fleetsim(dir.path(), &url, &args, Duration::from_secs(120));
    assert_eq!(code, 1, "{v}");
    let by_kind = &v["failures_by_kind"];
    assert!(
        by_kind["wrong_no_appliance"].as_u64().unwrap_or(0) > 0,
        "{by_kind}"
    );
    assert!(v["failed_answers"].as_u64().unwrap() > 0, "{v}");
}
