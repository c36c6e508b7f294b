//! Fill with real processes on loopback: one control plane with its embedded origin, an ISP site
//! with two appliances whose parent is an IXP site with one, each appliance a real oca-daemon and
//! fill-agent over its own temporary store.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_support::content_bytes;
use test_support::proc::Proc;

fn sha(b: &[u8]) -> String {
    oca_protocol::manifest::hex(&Sha256::digest(b))
}

struct Cp {
    proc: Proc,
    url: String,
    token: String,
    origin: PathBuf,
}

impl Cp {
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let c = reqwest::blocking::Client::new();
        let url = format!("{}{path}", self.url);
        let mut r = match method {
            "POST" => c.post(url),
            "DELETE" => c.delete(url),
            _ => c.get(url),
        }
        .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn metric(&self, name: &str) -> f64 {
        // The control plane's figures are for the admin token only.
        let text = reqwest::blocking::Client::new()
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    /// Adds a title with one content file, its bytes in the embedded origin.
    fn ingest(&self, title: &str, id: &str, body: &[u8]) {
        std::fs::write(self.origin.join(id), body).unwrap();
        let t = json!({"id": title, "name": title, "countries": ["NL"]});
        let (s, r) = self.admin("POST", "/v1/admin/titles", Some(t));
        assert!(
            s == 201 || r["message"].as_str().unwrap_or("").contains("exists"),
            "{r}"
        );
        let c = json!({"id": id, "title": title, "resolution": 1080, "bitrate_kbps": 5000,
            "size": body.len(), "sha256": sha(body), "content_type": "video/mp4", "origin": "embedded"});
        let (s, r) = self.admin("POST", "/v1/admin/content", Some(c));
        assert_eq!(s, 201, "{r}");
    }

    /// Demand makes titles popular (the plays fail: nothing holds them yet, but they count).
    fn demand(&self, titles: &[&str]) {
        self.admin(
            "POST",
            "/v1/admin/zones",
            Some(json!({"prefix": "127.0.0.0/8", "country": "NL"})),
        );
        self.admin(
            "POST",
            "/v1/admin/subscribers",
            Some(json!({"id": "s", "active": true, "max_resolution": 2160, "max_streams": 9})),
        );
        // Plays carry the subscriber's player token.
        let (s, r) = self.admin(
            "POST",
            "/v1/admin/subscribers/s/tokens",
            Some(json!({"ttl_secs": 3600})),
        );
        assert!(s == 200 || s == 201, "{s} {r}");
        let token = r["token"].as_str().unwrap().to_string();
        for t in titles {
            let _ = reqwest::blocking::Client::new()
                .post(format!("{}/v1/play", self.url))
                .bearer_auth(&token)
                .json(&json!({"subscriber": "s", "title": t}))
                .send();
        }
    }

    fn origin_log(&self) -> String {
        self.proc.log()
    }
}

struct Appliance {
    id: String,
    dir: PathBuf,
    daemon: Proc,
    agent: Option<Proc>,
    addr: SocketAddr,
    admin: SocketAddr,
    agent_args: Vec<String>,
}

impl Appliance {
    fn store(&self) -> PathBuf {
        self.dir.join("store")
    }

    fn object(&self, id: &str) -> PathBuf {
        self.store().join("objects").join(&id[..2]).join(id)
    }

    fn holds(&self, id: &str) -> bool {
        self.object(id).exists()
    }

    fn daemon_metric(&self, name: &str) -> f64 {
        let text = reqwest::blocking::get(format!("http://{}/metrics", self.admin))
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    }

    fn start_agent(&mut self, bin: &Path) {
        let mut cmd = Command::new(bin);
        cmd.args(&self.agent_args);
        self.agent = Some(Proc::spawn(cmd));
    }

    fn agent_log(&self) -> String {
        self.agent.as_ref().map_or(String::new(), Proc::log)
    }
}

struct Lab {
    dir: tempfile::TempDir,
    bins: HashMap<String, PathBuf>,
    cp: Cp,
    appliances: Vec<Appliance>,
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A control plane in `dir` (reports every second) with its embedded origin.
fn start_cp(bin: &Path, dir: &Path, extra: &[&str]) -> Cp {
    let port = test_support::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(bin);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.join("cp.db"))
        .args(["--report-interval", "1", "--public-url", &url])
        .args(extra);
    let proc = Proc::spawn(cmd);
    proc.wait_log(" listening ", Duration::from_secs(20));
    let token = std::fs::read_to_string(dir.join("cp.db.admin-token"))
        .unwrap()
        .trim()
        .to_string();
    Cp {
        proc,
        url,
        token,
        origin: dir.join("cp.db.origin"),
    }
}

/// The binaries an appliance lab runs, built by the cargo running the tests.
fn appliance_bins() -> HashMap<String, PathBuf> {
    test_support::cargo_bins(
        false,
        &[
            ("control-plane", "control-plane"),
            ("oca-daemon", "oca-daemon"),
            ("fill-agent", "fill-agent"),
        ],
    )
}

/// Starts the control plane and the three appliances' daemons; agents start with `start_agents`.
fn lab(cp_extra: &[&str], agent_extra: &[&str], before_agents: impl FnOnce(&Lab)) -> Lab {
    let bins = appliance_bins();
    let dir = tempfile::tempdir().unwrap();
    let cp = start_cp(&bins["control-plane"], dir.path(), cp_extra);
    // Reports of prefixes outside a site's allowed set are dropped: loopback covers the agents.
    for site in [
        json!({"id": "ixp", "kind": "ixp", "region": "eu", "allowed_prefixes": ["127.0.0.0/8"]}),
        json!({"id": "isp", "kind": "isp", "region": "eu", "parent": "ixp", "allowed_prefixes": ["127.0.0.0/8"]}),
    ] {
        assert_eq!(cp.admin("POST", "/v1/admin/sites", Some(site)).0, 201);
    }
    let mut appliances = Vec::new();
    for (id, site) in [("x1", "ixp"), ("a1", "isp"), ("a2", "isp")] {
        let adir = dir.path().join(id);
        std::fs::create_dir_all(adir.join("store")).unwrap();
        let mut cmd = Command::new(&bins["oca-daemon"]);
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--workers",
            "1",
        ])
        .arg("--store")
        .arg(adir.join("store"))
        .arg("--keys")
        .arg(adir.join("keys.json"));
        let daemon = Proc::spawn(cmd);
        let line = daemon.wait_log(" listening ", Duration::from_secs(20));
        let (addr, admin) = (
            test_support::addr_field(&line, "addr"),
            test_support::addr_field(&line, "admin"),
        );
        let reg = json!({"id": id, "site": site, "url": format!("http://{addr}"), "capacity_bps": 10_000_000_000u64});
        let (s, r) = cp.admin("POST", "/v1/admin/appliances", Some(reg));
        assert_eq!(s, 201, "{r}");
        std::fs::write(adir.join("credential"), r["credential"].as_str().unwrap()).unwrap();
        let mut agent_args: Vec<String> = vec![
            "--control-plane".into(),
            cp.url.clone(),
            "--oca-id".into(),
            id.into(),
            "--site".into(),
            site.into(),
            "--credential-file".into(),
            adir.join("credential").display().to_string(),
            "--store".into(),
            adir.join("store").display().to_string(),
            "--keys".into(),
            adir.join("keys.json").display().to_string(),
            "--daemon-admin".into(),
            admin.to_string(),
            "--stall-timeout".into(),
            "3".into(),
        ];
        agent_args.extend(agent_extra.iter().map(|s| s.to_string()));
        appliances.push(Appliance {
            id: id.into(),
            dir: adir,
            daemon,
            agent: None,
            addr,
            admin,
            agent_args,
        });
    }
    let mut lab = Lab {
        dir,
        bins,
        cp,
        appliances,
    };
    lab.prime_keys();
    before_agents(&lab);
    let bin = lab.bins["fill-agent"].clone();
    for a in &mut lab.appliances {
        a.start_agent(&bin);
    }
    lab
}

impl Lab {
    /// Gives every daemon the URL keys before the agents start, as an appliance that has run
    /// before has them on disk: one report per appliance (no disks, so nothing is planned yet),
    /// the reply's keys written where the daemon reads them.
    fn prime_keys(&self) {
        for a in &self.appliances {
            let cred = std::fs::read_to_string(a.dir.join("credential")).unwrap();
            let report = json!({"oca_id": a.id, "site": "", "version": "t", "status": "ok",
                "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 1},
                "disks": [], "prefixes": [], "inventory": {"kind": "full", "seq": 0, "content": []}});
            let reply: Value = reqwest::blocking::Client::new()
                .post(format!("{}/v1/appliances/{}/health", self.cp.url, a.id))
                .bearer_auth(cred.trim())
                .json(&report)
                .send()
                .unwrap()
                .json()
                .unwrap();
            let keys = json!({"keys": reply["keys"]});
            // Pretty-printed: the agent's own writing of the file is then visible.
            std::fs::write(
                a.dir.join("keys.json"),
                serde_json::to_string_pretty(&keys).unwrap(),
            )
            .unwrap();
            a.daemon.wait_log("URL keys loaded", Duration::from_secs(5));
        }
    }

    fn app(&self, id: &str) -> &Appliance {
        self.appliances.iter().find(|a| a.id == id).unwrap()
    }

    fn app_mut(&mut self, id: &str) -> &mut Appliance {
        self.appliances.iter_mut().find(|a| a.id == id).unwrap()
    }
}

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

/// Unmounts on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
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
