//! The fill agent against broken or hostile counterparts, each a small real server on loopback
//! that the test starts: a fake control plane (health replies and manifests as the test says,
//! or accepting and never answering, or TLS with a certificate the agent does not trust) and
//! fill sources that redirect, drip, send too much, resume from the wrong place or encode.

//!
//! The fakes are in `common/fakes.rs`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fakes::*;
use common::{wait_until, Mounted, MIB};
use test_support::proc::Proc;

#[test]
fn hostile_sources_are_refused_and_the_next_source_fills() {
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    let cases: [(&str, &[&str]); 5] = [
        ("re_1080p.mp4", &["redirect", "good"]),
        ("ov_1080p.mp4", &["oversize", "good"]),
        ("gz_1080p.mp4", &["gzip", "good"]),
        ("rs_1080p.mp4", &["short", "resume0", "good"]),
        ("dr_1080p.mp4", &["good?bps=2000", "good"]),
    ];
    let mut bodies = HashMap::new();
    let mut entries = Vec::new();
    for (id, modes) in cases {
        bodies.insert(id, sources.add(id, MIB));
        entries.push(sources.entry(id, modes));
    }
    cp.set_manifest(entries, false);
    let app = Appliance::new();
    // Left by an earlier run: a part of something no manifest lists.
    std::fs::write(app.store().join("tmp/zz_orphan.mp4.part"), b"junk").unwrap();
    let metrics = metrics_addr();
    let agent = Proc::spawn(app.agent(&bin, &cp.url, &["--metrics-listen", &metrics.to_string()]));
    for (id, _) in cases {
        wait_until(&format!("{id} filled"), Duration::from_secs(40), || {
            app.holds(id, &bodies[id])
        });
    }
    let log = agent.log();
    assert!(
        sources.requests("/canary/").is_empty(),
        "a redirect was followed:\n{log}"
    );
    for h in sources.requests("/") {
        assert_eq!(
            h.get("accept-encoding").map(String::as_str),
            Some("identity"),
            "{h:?}"
        );
    }
    // The part the short source left was kept through the bad resume and resumed from its end.
    let resumed: Vec<_> = sources
        .requests("/good/rs_1080p.mp4")
        .into_iter()
        .filter_map(|h| h.get("range").cloned())
        .collect();
    assert_eq!(resumed, [format!("bytes={}-", MIB / 2)], "{log}");
    for reason in [
        "http_3xx",
        "length_mismatch",
        "content_encoding",
        "content_range",
        "slow",
    ] {
        let n = agent_metric(
            metrics,
            &format!("oca_fill_source_failures_total{{source=\"peer\",reason=\"{reason}\"}}"),
        );
        assert!(n >= 1.0, "{reason}: {n}\n{log}");
    }
    assert_eq!(agent_metric(metrics, "oca_fill_files_total"), 5.0);
    assert!(agent_metric(metrics, "oca_fill_bytes_total{source=\"peer\"}") >= (5 * MIB) as f64);
    // What an operator watches besides: the manifest in force, the last report taken, what is
    // left to fill (as of the agent's next cycle), and each disk's space.
    assert!(agent_metric(metrics, "oca_fill_manifest_version") >= 1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = agent_metric(metrics, "oca_fill_last_report_success_seconds");
    assert!(
        (now - 60.0..=now + 1.0).contains(&last),
        "{last} against {now}"
    );
    wait_until("nothing left to fill", Duration::from_secs(30), || {
        agent_metric(metrics, "oca_fill_files_pending") == 0.0
    });
    let disk = format!("{{disk=\"{}\"}}", app.store().display());
    assert!(agent_metric(metrics, &format!("oca_fill_disk_free_bytes{disk}")) > 0.0);
    assert!(agent_metric(metrics, &format!("oca_fill_disk_used_bytes{disk}")) > 0.0);
    assert!(
        !app.store().join("tmp/zz_orphan.mp4.part").exists(),
        "the orphaned part was swept:\n{log}"
    );
}

#[test]
fn a_slow_fill_never_holds_back_new_entries() {
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    // Above the minimum rate (4 KiB/s), so never abandoned, but four minutes long.
    let slow = sources.add("sl_1080p.mp4", 4 * MIB);
    let e = sources.entry("sl_1080p.mp4", &["good?bps=16384"]);
    cp.set_manifest(vec![e.clone()], false);
    let app = Appliance::new();
    let metrics = metrics_addr();
    let agent = Proc::spawn(app.agent(
        &bin,
        &cp.url,
        &[
            "--fill-min-rate-kib",
            "4",
            "--metrics-listen",
            &metrics.to_string(),
        ],
    ));
    wait_until("the slow fill started", Duration::from_secs(20), || {
        !sources.requests("/good/sl_1080p.mp4").is_empty()
    });
    let new = sources.add("nw_1080p.mp4", MIB);
    cp.set_manifest(vec![e, sources.entry("nw_1080p.mp4", &["good"])], false);
    wait_until(
        "the new entry filled beside the slow one",
        Duration::from_secs(15),
        || app.holds("nw_1080p.mp4", &new),
    );
    assert!(!app.holds("sl_1080p.mp4", &slow), "{}", agent.log());
    assert_eq!(
        sources.requests("/good/sl_1080p.mp4").len(),
        1,
        "the slow fill went on undisturbed:\n{}",
        agent.log()
    );
    // The slow file is what is left to fill, as the next cycle (every report, 1 s) counts it.
    wait_until("one file pending", Duration::from_secs(10), || {
        agent_metric(metrics, "oca_fill_files_pending") == 1.0
    });
}

/// The agent under a watchdog of one second, reporting to `cp`.
fn watched_agent(bin: &Path, app: &Appliance, cp: &FakeCp, timeout: &str) -> (Proc, Notify) {
    let notify = Notify::bind(app.dir.path());
    let mut cmd = app.agent(bin, &cp.url, &["--control-plane-timeout", timeout]);
    cmd.env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID");
    (Proc::spawn(cmd), notify)
}

#[test]
fn a_stalled_control_plane_costs_a_timeout_and_the_watchdog_follows_the_loop() {
    let bin = agent_bin();
    let sources = Sources::start();

    // A control plane that stops answering: the agent says so, goes on filling from the
    // manifest it has, and its loop (hence the watchdog) keeps turning.
    let cp = FakeCp::start();
    let body = sources.add("gt_1080p.mp4", MIB);
    cp.set_manifest(vec![sources.entry("gt_1080p.mp4", &["gated"])], false);
    let app = Appliance::new();
    let (agent, notify) = watched_agent(&bin, &app, &cp, "1.5");
    agent.wait_log("manifest updated", Duration::from_secs(20));
    cp.stall();
    sources.gate.store(true, Ordering::SeqCst);
    wait_until(
        "filled from the last manifest while the control plane stalls",
        Duration::from_secs(20),
        || app.holds("gt_1080p.mp4", &body),
    );
    agent.wait_log("health report not taken", Duration::from_secs(10));
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let pings = notify.pings_between(t0, Instant::now());
    assert!(pings >= 3, "{pings} keep-alives in 5 s:\n{}", agent.log());
    assert!(
        agent.log().contains("no answer within") || agent.log().contains("timed out"),
        "{}",
        agent.log()
    );

    // The keep-alives come from the loop: blocked on a control plane it waits ten minutes for,
    // the agent stops sending them (and systemd would restart it).
    let cp = FakeCp::start();
    cp.set_manifest(vec![], false);
    let app = Appliance::new();
    let (agent, notify) = watched_agent(&bin, &app, &cp, "600");
    wait_until("a few reports", Duration::from_secs(20), || {
        cp.state.lock().reports.len() >= 2
    });
    let before = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        notify.pings_between(before, Instant::now()) >= 2,
        "keep-alives while the loop turns:\n{}",
        agent.log()
    );
    cp.stall();
    wait_until(
        "the agent is stuck on the control plane",
        Duration::from_secs(10),
        || cp.state.lock().stalled_since.is_some(),
    );
    let stuck = cp.state.lock().stalled_since.unwrap() + Duration::from_millis(700);
    std::thread::sleep(Duration::from_secs(5));
    let pings = notify.pings_between(stuck, Instant::now());
    assert_eq!(pings, 0, "keep-alives from a stuck loop:\n{}", agent.log());
}

#[test]
fn an_empty_or_wrong_manifest_evicts_at_most_the_budget_per_cycle() {
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    let app = Appliance::new();
    let ids: Vec<String> = (0..10).map(|i| format!("e{i}_1080p.mp4")).collect();
    let mut entries = Vec::new();
    for id in &ids {
        let body = sources.add(id, MIB);
        app.put(id, &body);
        entries.push(sources.entry(id, &["good"]));
    }
    cp.set_manifest(entries.clone(), false);
    let metrics = metrics_addr();
    let agent = Proc::spawn(app.agent(
        &bin,
        &cp.url,
        &[
            "--metrics-listen",
            &metrics.to_string(),
            "--eviction-budget",
            "0.25",
        ],
    ));
    agent.wait_log("manifest updated", Duration::from_secs(20));
    let held = || ids.iter().filter(|id| app.object(id).exists()).count();

    // Empty, not marked intended: refused, nothing goes, counted once.
    cp.set_manifest(vec![], false);
    wait_until(
        "the empty manifest is refused",
        Duration::from_secs(10),
        || agent_metric(metrics, "oca_fill_manifests_refused_total") == 1.0,
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(held(), 10, "{}", agent.log());
    assert_eq!(
        agent_metric(metrics, "oca_fill_manifests_refused_total"),
        1.0
    );

    // A wrong manifest (one file of ten): a quarter of the held bytes per cycle at most.
    cp.set_manifest(vec![entries[0].clone()], false);
    wait_until("nine files evicted", Duration::from_secs(40), || {
        held() == 1
    });
    assert!(app.object(&ids[0]).exists(), "the listed file stays");
    let per_cycle: Vec<u64> = agent
        .log()
        .lines()
        .filter(|l| l.contains("eviction cycle"))
        .map(|l| Proc::field(l, "evicted").parse().unwrap())
        .collect();
    assert_eq!(per_cycle.iter().sum::<u64>(), 9, "{per_cycle:?}");
    assert!(
        per_cycle.iter().all(|&n| n <= 2),
        "at most 2.5 MiB of 10 per cycle: {per_cycle:?}"
    );
    assert!(agent_metric(metrics, "oca_fill_evictions_deferred_total") >= 7.0);

    // Empty on purpose: everything goes, still within the budget.
    cp.set_manifest(vec![], true);
    wait_until("the last file evicted", Duration::from_secs(20), || {
        held() == 0
    });
    assert_eq!(
        agent_metric(metrics, "oca_fill_evictions_planned_total"),
        10.0
    );
    assert_eq!(agent_metric(metrics, "oca_fill_evictions_done_total"), 10.0);
    assert_eq!(
        agent_metric(metrics, "oca_fill_manifests_refused_total"),
        1.0
    );
}

#[test]
fn a_disk_that_hit_enospc_fills_again_once_eviction_frees_space() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs as the disk needs root");
        return;
    }
    let bin = agent_bin();
    let sources = Sources::start();
    let cp = FakeCp::start();
    let app = Appliance::new();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(app.store())
        .status()
        .unwrap()
        .success();
    assert!(ok, "mount tmpfs");
    let _mounted = Mounted(app.store());
    std::fs::create_dir_all(app.store().join("objects")).unwrap();
    let old = sources.add("ol_1080p.mp4", 20 * MIB);
    app.put("ol_1080p.mp4", &old);
    let new = sources.add("nw_1080p.mp4", 20 * MIB);
    let n = sources.entry("nw_1080p.mp4", &[format!("good?bps={}", 4 * MIB).as_str()]);
    cp.set_manifest(
        vec![sources.entry("ol_1080p.mp4", &["good"]), n.clone()],
        false,
    );
    let agent = Proc::spawn(app.agent(&bin, &cp.url, &["--eviction-budget", "1"]));
    let part = app.store().join("tmp/nw_1080p.mp4.part");
    wait_until("the new file is filling", Duration::from_secs(20), || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() >= 2 * MIB as u64)
    });
    // Someone else takes the rest of the disk.
    let mut junk = std::fs::File::create(app.store().join("junk")).unwrap();
    while junk.write_all(&vec![0u8; MIB]).is_ok() {}
    drop(junk);
    agent.wait_log("No space left on device", Duration::from_secs(20));
    wait_until("the disk is reported full", Duration::from_secs(10), || {
        cp.last_report()["disks"][0]["state"] == "full"
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!app.holds("nw_1080p.mp4", &new));
    // The old file leaves the manifest: evicted, the disk has room again, the fill resumes.
    cp.set_manifest(vec![n], false);
    wait_until(
        "the new file filled after the eviction, without a restart",
        Duration::from_secs(40),
        || app.holds("nw_1080p.mp4", &new),
    );
    assert!(!app.object("ol_1080p.mp4").exists());
    assert!(
        agent.log().contains("disk has room again"),
        "{}",
        agent.log()
    );
}
#[test]
fn an_untrusted_control_plane_is_refused_with_the_reason_and_plain_http_stays_on_loopback() {
    let bin = agent_bin();
    let cp = TlsCp::start();
    let app = Appliance::new();
    let other = TlsCp::start();
    let other_ca = app.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, &other.cert_pem).unwrap();
    let right_ca = app.dir.path().join("ca.pem");
    std::fs::write(&right_ca, &cp.cert_pem).unwrap();

    // The system's trust store, and a CA file of someone else: refused, said why, still running.
    let system = Proc::spawn(app.agent(&bin, &cp.url, &[]));
    let wrong = Proc::spawn(app.agent(
        &bin,
        &cp.url,
        &["--control-plane-ca", other_ca.to_str().unwrap()],
    ));
    for agent in [system, wrong] {
        let line = agent.wait_log("not trusted", Duration::from_secs(20));
        assert!(line.contains(&cp.url), "names the control plane: {line}");
        assert!(
            line.contains("UnknownIssuer") || line.contains("invalid peer certificate"),
            "says why: {line}"
        );
        std::thread::sleep(Duration::from_millis(500));
        let mut agent = agent;
        assert!(agent.child.try_wait().unwrap().is_none(), "keeps going");
    }
    assert!(
        cp.seen.lock().is_empty(),
        "nothing sent past a failed handshake"
    );

    // The right CA file: the handshake passes and the report is sent.
    let trusted = Proc::spawn(app.agent(
        &bin,
        &cp.url,
        &["--control-plane-ca", right_ca.to_str().unwrap()],
    ));
    wait_until("a report over TLS", Duration::from_secs(20), || {
        cp.seen
            .lock()
            .iter()
            .any(|l| l == "POST /v1/appliances/a1/health")
    });
    assert!(!trusted.log().contains("not trusted"), "{}", trusted.log());

    // Plain http off loopback: refused at start, unless the operator accepts it. (0.0.0.0 is
    // not loopback, and a connection to it stays on this host.)
    let plain = format!("http://0.0.0.0:{}", test_support::free_port());
    let mut refused = Proc::spawn(app.agent(&bin, &plain, &[]));
    let line = refused.wait_log("--insecure-http", Duration::from_secs(10));
    assert!(line.contains("not loopback"), "{line}");
    wait_until("the agent exits", Duration::from_secs(10), || {
        refused.child.try_wait().unwrap().is_some()
    });
    assert!(!refused.child.wait().unwrap().success());
    let accepted = Proc::spawn(app.agent(&bin, &plain, &["--insecure-http"]));
    accepted.wait_log("fill agent started", Duration::from_secs(20));
    assert!(
        accepted.log().contains("insecure_http"),
        "{}",
        accepted.log()
    );
}
