//! Fill with real processes on loopback: one control plane with its embedded origin, an ISP site
//! with two appliances whose parent is an IXP site with one, each appliance a real oca-daemon and
//! fill-agent over its own temporary store.

//!
//! The deployment is built in `common/lab.rs`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::lab::*;
use common::{wait_until, Mounted};
use serde_json::json;
use test_support::content_bytes;
use test_support::proc::Proc;

#[test]
fn origin_then_tier_then_peer_corrupt_sources_resume_after_kill_and_eviction() {
    let c1 = content_bytes("seed1", 3 << 20);
    let c2 = content_bytes("seed2", 2 << 20);
    let big = content_bytes("seed3", 40 << 20);
    // Popular files get two copies in the ISP site; upstream is used only after 60 s, so every
    // ISP copy must come from the IXP appliance or the ISP peer. 160 Mbit/s cap: the big file
    // takes about two seconds, long enough to interrupt.
    let mut lab = lab(
        &[
            "--fill-copies",
            "2",
            "--fill-hot-fraction",
            "1",
            "--fill-escalation",
            "60",
            "--fill-rate-mbps",
            "160",
        ],
        &["--fill-now"],
        |lab| {
            lab.cp.ingest("t1", "c1_1080p.mp4", &c1);
            lab.cp.ingest("t2", "c2_1080p.mp4", &c2);
            lab.cp.demand(&["t1", "t2"]);
            // x1 already holds a rotten copy of c2 (bit rot on the IXP appliance).
            let mut rotten = c2.clone();
            rotten[1000] ^= 0xff;
            let p = lab.app("x1").object("c2_1080p.mp4");
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, rotten).unwrap();
        },
    );

    // c1: the IXP appliance from the origin, then the ISP site from it and from each other.
    for a in ["x1", "a1", "a2"] {
        wait_until(&format!("{a} holds c1"), Duration::from_secs(60), || {
            lab.app(a).holds("c1_1080p.mp4")
        });
        assert_eq!(
            std::fs::read(lab.app(a).object("c1_1080p.mp4")).unwrap(),
            c1,
            "{a}"
        );
    }
    let origin_c1 = lab
        .cp
        .origin_log()
        .matches("origin fill id=c1_1080p.mp4")
        .count();
    assert_eq!(
        origin_c1,
        1,
        "the origin served c1 once:\n{}\nx1:\n{}\na1:\n{}\na2:\n{}",
        lab.cp.origin_log(),
        lab.app("x1").agent_log(),
        lab.app("a1").agent_log(),
        lab.app("a2").agent_log()
    );
    let x1_fill = lab.app("x1").daemon_metric("oca_fill_sent_bytes_total");
    assert!(
        x1_fill >= c1.len() as f64,
        "the ISP site filled c1 from the IXP appliance: {x1_fill}"
    );
    let peer_fills: Vec<String> = ["a1", "a2"]
        .iter()
        .filter(|a| lab.app(a).agent_log().contains("source=Peer"))
        .map(|a| a.to_string())
        .collect();
    let tier_fills = ["a1", "a2"]
        .iter()
        .filter(|a| lab.app(a).agent_log().contains("source=Tier"))
        .count();
    assert!(tier_fills >= 1, "an ISP appliance filled from its tier");
    assert!(
        !peer_fills.is_empty() || tier_fills == 2,
        "the second ISP copy came from the peer or the tier"
    );

    // c2: x1's copy is rotten; the ISP site finds out, never publishes it, and goes on.
    for a in ["a1", "a2"] {
        wait_until(
            &format!("{a} holds a good c2"),
            Duration::from_secs(60),
            || std::fs::read(lab.app(a).object("c2_1080p.mp4")).is_ok_and(|b| b == c2),
        );
    }
    let mismatches: usize = ["a1", "a2"]
        .iter()
        .map(|a| lab.app(a).agent_log().matches("hash_mismatch").count())
        .sum();
    assert!(
        mismatches >= 1,
        "the rotten source was caught:\n{}\nx1:\n{}\na1:\n{}\na2:\n{}",
        lab.cp.origin_log(),
        lab.app("x1").agent_log(),
        lab.app("a1").agent_log(),
        lab.app("a2").agent_log()
    );
    wait_until(
        "the control plane heard of the bad source",
        Duration::from_secs(10),
        || lab.cp.metric("cp_fill_source_errors_total") >= 1.0,
    );

    // A big file, with the agent killed mid-download on x1 and restarted: resumed with Range,
    // and the partial file is never servable.
    lab.cp.ingest("t3", "big_1080p.mp4", &big);
    let part = lab.app("x1").store().join("tmp/big_1080p.mp4.part");
    wait_until(
        "x1 is half way through the big file",
        Duration::from_secs(60),
        || std::fs::metadata(&part).is_ok_and(|m| m.len() > (8 << 20)),
    );
    let x1 = lab.app_mut("x1");
    x1.agent.as_mut().unwrap().child.kill().unwrap(); // SIGKILL
    x1.agent.as_mut().unwrap().child.wait().unwrap();
    let left = std::fs::metadata(&part).unwrap().len();
    assert!(
        left > 0 && left < big.len() as u64,
        "a partial file: {left}"
    );
    let url = format!("http://{}/c/big_1080p.mp4", x1.addr);
    let status = reqwest::blocking::get(&url).unwrap().status().as_u16();
    assert!(
        status == 403 || status == 404,
        "the partial file is not servable: {status}"
    );
    assert!(!x1.holds("big_1080p.mp4"));
    let bin = lab.bins["fill-agent"].clone();
    let started = Instant::now();
    lab.app_mut("x1").start_agent(&bin);
    wait_until("x1 finishes the big file", Duration::from_secs(60), || {
        lab.app("x1").holds("big_1080p.mp4")
    });
    let resumed_in = started.elapsed();
    assert_eq!(
        std::fs::read(lab.app("x1").object("big_1080p.mp4")).unwrap(),
        big
    );
    assert!(
        lab.app("x1").agent_log().contains("resuming with Range"),
        "{}",
        lab.app("x1").agent_log()
    );
    assert!(
        lab.cp
            .origin_log()
            .contains(&format!("range=Some(\"bytes={left}-\")")),
        "{}",
        lab.cp.origin_log()
    );
    // The rate cap held: what was left took at least (left bytes / 20 MB/s), give or take.
    let rest = (big.len() as u64 - left) as f64;
    assert!(
        resumed_in.as_secs_f64() >= rest / 20e6 * 0.7,
        "{rest} bytes in {resumed_in:?} under a 160 Mbit/s cap"
    );

    // Removing a title evicts it everywhere.
    assert_eq!(lab.cp.admin("DELETE", "/v1/admin/titles/t1", None).0, 204);
    for a in ["x1", "a1", "a2"] {
        wait_until(&format!("{a} dropped c1"), Duration::from_secs(30), || {
            !lab.app(a).holds("c1_1080p.mp4")
        });
        assert!(
            lab.app(a).holds("c2_1080p.mp4") || a == "x1",
            "{a} kept what stays"
        );
    }
    for a in &lab.appliances {
        // The agent rewrote the keys file in its own format, 0600, and the daemon reloaded it.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(a.dir.join("keys.json"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{}", a.id);
        assert!(
            a.daemon.log().matches("URL keys loaded").count() >= 2,
            "{}",
            a.daemon.log()
        );
    }
    drop(lab.dir);
}

#[test]
fn outside_the_fill_window_nothing_fills_until_told() {
    // A window that is certainly closed now: one minute, twelve hours away.
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 86_400)
        / 60;
    let start = (now_min + 720) % 1440;
    let window = format!(
        "{:02}:{:02}-{:02}:{:02}",
        start / 60,
        start % 60,
        (start + 1) / 60 % 24,
        (start + 1) % 60
    );
    let mut lab = lab(&["--fill-window", &window], &[], |_| {});
    lab.cp
        .ingest("t1", "c1_1080p.mp4", &content_bytes("seed9", 1 << 20));
    std::thread::sleep(Duration::from_secs(5));
    for a in &lab.appliances {
        assert!(
            !a.holds("c1_1080p.mp4"),
            "{} filled outside the window",
            a.id
        );
        assert!(
            a.agent_log().contains("manifest updated"),
            "{}",
            a.agent_log()
        );
    }
    // --fill-now overrides the window.
    let bin = lab.bins["fill-agent"].clone();
    let x1 = lab.app_mut("x1");
    x1.agent = None;
    x1.agent_args.push("--fill-now".into());
    x1.start_agent(&bin);
    wait_until("x1 fills when told", Duration::from_secs(30), || {
        lab.app("x1").holds("c1_1080p.mp4")
    });
}

#[test]
fn a_full_disk_is_a_warning_never_a_crash() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a small tmpfs as a full disk needs root");
        return;
    }
    let mounted: std::cell::RefCell<Option<Mounted>> = std::cell::RefCell::new(None);
    let big = content_bytes("seed5", 6 << 20);
    let mut lab = lab(
        &["--fill-copies", "2", "--fill-hot-fraction", "1"],
        &["--fill-now"],
        |lab| {
            // a2's only disk: 24 MiB, 20 of them taken by something else.
            let store = lab.app("a2").store();
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=24m", "tmpfs"])
                .arg(&store)
                .status()
                .unwrap()
                .success();
            assert!(ok, "mount tmpfs");
            *mounted.borrow_mut() = Some(Mounted(store.clone()));
            std::fs::write(store.join("other-data"), vec![0u8; 20 << 20]).unwrap();
            lab.cp.ingest("t5", "c5_1080p.mp4", &big);
            lab.cp.demand(&["t5"]);
        },
    );
    wait_until("a1 fills", Duration::from_secs(60), || {
        lab.app("a1").holds("c5_1080p.mp4")
    });
    wait_until("a2 reports a warning", Duration::from_secs(20), || {
        let (_, list) = lab.cp.admin("GET", "/v1/admin/appliances", None);
        list.as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == "a2" && a["status"] == "warning")
    });
    std::thread::sleep(Duration::from_secs(3));
    let a2 = lab.app("a2");
    assert!(!a2.holds("c5_1080p.mp4"));
    let log = a2.agent_log();
    assert!(log.contains("no disk has room"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    let still_running = lab
        .app_mut("a2")
        .agent
        .as_mut()
        .unwrap()
        .child
        .try_wait()
        .unwrap()
        .is_none();
    assert!(still_running, "the agent survived the full disk");
    // Nothing half-written is left on the full disk.
    let tmp: Vec<_> = std::fs::read_dir(lab.app("a2").store().join("tmp"))
        .unwrap()
        .collect();
    assert!(tmp.is_empty(), "{tmp:?}");
    drop(lab);
    drop(mounted);
}

/// oca-daemon finds a disk failing (a FUSE disk that starts returning EIO); the agent reports it
/// failed, takes its files out of the inventory, refills what the manifest still wants onto the
/// healthy disk from the origin, and the daemon serves the new copy.
#[test]
fn a_disk_the_daemon_finds_failing_is_reported_and_its_files_refilled_elsewhere() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "needs root and /dev/fuse"
        );
        eprintln!("skipped: needs root and /dev/fuse");
        return;
    }
    let bins = appliance_bins();
    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(
        &bins["control-plane"],
        dir.path(),
        &["--fill-escalation", "0"],
    );
    assert_eq!(
        cp.admin(
            "POST",
            "/v1/admin/sites",
            Some(json!({"id": "isp", "kind": "isp", "region": "eu", "allowed_prefixes": ["127.0.0.0/8"]}))
        )
        .0,
        201
    );
    let body = content_bytes("fd_1080p.mp4", 3 << 20);
    cp.ingest("t1", "fd_1080p.mp4", &body);
    // The appliance already holds the file, on the disk that will fail.
    let good = dir.path().join("good");
    let backing = dir.path().join("backing");
    std::fs::create_dir_all(good.join("objects")).unwrap();
    std::fs::create_dir_all(backing.join("objects/fd")).unwrap();
    std::fs::write(backing.join("objects/fd/fd_1080p.mp4"), &body).unwrap();
    let bad = test_support::failfs::FailFs::start(&backing, &dir.path().join("bad"));
    let keys = dir.path().join("keys.json");
    let mut cmd = Command::new(&bins["oca-daemon"]);
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ])
    .args(["--cold-path", "always", "--allow-unsigned", "--store"])
    .arg(&good)
    .arg("--store")
    .arg(&bad.mount)
    .arg("--keys")
    .arg(&keys);
    let daemon = Proc::spawn(cmd);
    let line = daemon.wait_log(" listening ", Duration::from_secs(20));
    let (addr, admin) = (
        test_support::addr_field(&line, "addr"),
        test_support::addr_field(&line, "admin"),
    );
    let reg = json!({"id": "a1", "site": "isp", "url": format!("http://{addr}"), "capacity_bps": 10_000_000_000u64});
    let (s, r) = cp.admin("POST", "/v1/admin/appliances", Some(reg));
    assert_eq!(s, 201, "{r}");
    let cred = dir.path().join("credential");
    std::fs::write(&cred, r["credential"].as_str().unwrap()).unwrap();
    let mut cmd = Command::new(&bins["fill-agent"]);
    cmd.args([
        "--control-plane",
        &cp.url,
        "--oca-id",
        "a1",
        "--site",
        "isp",
        "--fill-now",
    ])
    .arg("--credential-file")
    .arg(&cred)
    .arg("--store")
    .arg(&good)
    .arg("--store")
    .arg(&bad.mount)
    .arg("--keys")
    .arg(&keys)
    .args(["--daemon-admin", &admin.to_string()]);
    let agent = Proc::spawn(cmd);
    agent.wait_log("manifest updated", Duration::from_secs(20));
    let get = |range: &str| {
        let r = reqwest::blocking::Client::new()
            .get(format!("http://{addr}/c/fd_1080p.mp4"))
            .header("Range", format!("bytes={range}"))
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.bytes().map(|b| b.to_vec()).unwrap_or_default())
    };
    assert!(
        get("1000-1999").1 == body[1000..2000],
        "served from the FUSE disk while healthy"
    );
    assert!(!good.join("objects/fd/fd_1080p.mp4").exists());

    bad.fail(true);
    let (status, got) = get("100000-1100099");
    assert!(
        status != 206 || got.len() < 1_000_100,
        "a failing read is never passed off whole"
    );
    // The agent sees the daemon's verdict, reports the disk failed and refills onto the good disk.
    agent.wait_log("found this disk failing", Duration::from_secs(15));
    agent.wait_log("filled id=fd_1080p.mp4", Duration::from_secs(30));
    assert!(std::fs::read(good.join("objects/fd/fd_1080p.mp4")).unwrap() == body);
    wait_until("the new copy is served", Duration::from_secs(5), || {
        get("100000-1100099") == (206, body[100_000..1_100_100].to_vec())
    });
    let (_, list) = cp.admin("GET", "/v1/admin/appliances", None);
    let a1 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == "a1")
        .unwrap()
        .clone();
    assert_eq!(a1["status"], "warning", "{a1}");
    drop(daemon);
}

#[test]
fn a_symlinked_shard_directory_is_never_written_through_nor_evicted_through() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("c1_old.mp4"), b"outside the store").unwrap();
    let lab = lab(
        &["--fill-copies", "2", "--fill-hot-fraction", "1"],
        &["--fill-now"],
        |lab| {
            let objects = lab.app("x1").store().join("objects");
            std::os::unix::fs::symlink(outside.path(), objects.join("c1")).unwrap();
            lab.cp
                .ingest("t1", "c1_1080p.mp4", &content_bytes("seed11", 1 << 20));
            lab.cp.demand(&["t1"]);
        },
    );
    wait_until("x1 fills from the origin", Duration::from_secs(30), || {
        lab.app("x1")
            .agent_log()
            .contains("the shard directory is a symlink")
            || outside.path().join("c1_1080p.mp4").exists()
    });
    // Two more report cycles: an inventory that listed c1_old.mp4 would have it evicted.
    std::thread::sleep(Duration::from_secs(3));
    let names: Vec<_> = std::fs::read_dir(outside.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        ["c1_old.mp4"],
        "nothing written into the outside directory"
    );
    assert_eq!(
        std::fs::read(outside.path().join("c1_old.mp4")).unwrap(),
        b"outside the store",
        "nor deleted there"
    );
    assert!(
        !lab.app("x1").agent_log().contains("evicted"),
        "{}",
        lab.app("x1").agent_log()
    );
}
