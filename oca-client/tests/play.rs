//! The player against a real control plane and real oca-daemons on loopback: a play verified by
//! SHA-256; the serving appliance killed mid-stream and the play finished elsewhere; a slow link
//! (tc, as root) avoided, then a bitrate drop when only the slow one is left.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use test_support::proc::Proc;
use test_support::{busiest, client_summary, content_bytes, metric, metrics};

fn field(line: &str, name: &str) -> SocketAddr {
    Proc::field(line, name).parse().unwrap()
}

struct Daemon {
    /// Kept so the daemon lives as long as this (dropping kills it).
    _proc: Proc,
    addr: SocketAddr,
    admin: SocketAddr,
}

struct World {
    _dir: tempfile::TempDir,
    _cp: Proc,
    cp_url: String,
    /// The subscriber's player token.
    player: String,
    daemons: Vec<Daemon>,
    client: PathBuf,
    daemon_bin: PathBuf,
}

/// Starts an oca-daemon on `listen` over `store` with the URL keys in `keys`.
fn daemon(bin: &Path, listen: &str, store: &Path, keys: &Path) -> Daemon {
    let mut cmd = Command::new(bin);
    cmd.args([
        "--listen",
        listen,
        "--admin-listen",
        "127.0.0.1:0",
        "--workers",
        "1",
    ])
    .arg("--store")
    .arg(store)
    .arg("--keys")
    .arg(keys);
    let proc = Proc::spawn(cmd);
    let line = proc.wait_log(" listening ", Duration::from_secs(20));
    let (addr, admin) = (field(&line, "addr"), field(&line, "admin"));
    Daemon {
        _proc: proc,
        addr,
        admin,
    }
}

/// A control plane and one appliance per listen address, each holding every file of `files`
/// (id, resolution, bitrate kbps, bytes) of title `t1`, reported to the control plane directly.
fn world(listen: &[&str], files: &[(&str, u32, u32, Vec<u8>)]) -> World {
    let bins = test_support::cargo_bins(
        false,
        &[
            ("control-plane", "control-plane"),
            ("oca-daemon", "oca-daemon"),
            ("oca-client", "oca-client"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cp_url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(&bins["control-plane"]);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.path().join("cp.db"))
        .args(["--report-interval", "30"]);
    let cp = Proc::spawn(cmd);
    cp.wait_log(" listening ", Duration::from_secs(20));
    let token = std::fs::read_to_string(dir.path().join("cp.db.admin-token")).unwrap();
    let admin = |path: &str, body: Value| {
        let r = reqwest::blocking::Client::new()
            .post(format!("{cp_url}{path}"))
            .bearer_auth(token.trim())
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.text().unwrap());
        r.json::<Value>().unwrap()
    };
    admin(
        "/v1/admin/sites",
        json!({"id": "isp", "kind": "isp", "region": "eu"}),
    );
    admin(
        "/v1/admin/zones",
        json!({"prefix": "127.0.0.0/8", "site": "isp", "country": "NL"}),
    );
    admin(
        "/v1/admin/titles",
        json!({"id": "t1", "name": "t1", "countries": ["NL"]}),
    );
    admin(
        "/v1/admin/subscribers",
        json!({"id": "s1", "active": true, "max_resolution": 2160, "max_streams": 50}),
    );
    let player = admin("/v1/admin/subscribers/s1/tokens", json!({}))["token"]
        .as_str()
        .unwrap()
        .to_string();
    for (id, res, kbps, body) in files {
        let sha = oca_protocol::manifest::hex(&Sha256::digest(body));
        admin(
            "/v1/admin/content",
            json!({"id": id, "title": "t1", "resolution": res, "bitrate_kbps": kbps,
            "size": body.len(), "sha256": sha, "content_type": "video/mp4", "origin": "embedded"}),
        );
    }
    let mut daemons = Vec::new();
    for (i, addr) in listen.iter().enumerate() {
        let store = dir.path().join(format!("store{i}"));
        for (id, _, _, body) in files {
            let d = store.join("objects").join(&id[..2]);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(id), body).unwrap();
        }
        let keys = dir.path().join(format!("keys{i}.json"));
        let d = daemon(&bins["oca-daemon"], addr, &store, &keys);
        let a = d.addr;
        let id = format!("oca{i}");
        let reg = admin(
            "/v1/admin/appliances",
            json!({"id": id, "site": "isp", "url": format!("http://{a}"), "capacity_bps": 100_000_000_000u64}),
        );
        let ids: Vec<&str> = files.iter().map(|f| f.0).collect();
        let report = json!({"oca_id": id, "site": "isp", "version": "t", "status": "ok",
            "serving": {"active_connections": 0, "bytes_per_sec": 0, "requests_per_sec": 0, "capacity_bps": 100_000_000_000u64},
            "disks": [{"path": "/", "state": "ok", "capacity_bytes": 1u64 << 40, "used_bytes": 0}],
            "prefixes": [], "inventory": {"kind": "full", "seq": 1, "content": ids}});
        let reply: Value = reqwest::blocking::Client::new()
            .post(format!("{cp_url}/v1/appliances/{id}/health"))
            .bearer_auth(reg["credential"].as_str().unwrap())
            .json(&report)
            .send()
            .unwrap()
            .json()
            .unwrap();
        std::fs::write(&keys, json!({"keys": reply["keys"]}).to_string()).unwrap();
        d._proc.wait_log("URL keys loaded", Duration::from_secs(20));
        daemons.push(d);
    }
    World {
        _dir: dir,
        _cp: cp,
        cp_url,
        player,
        daemons,
        client: bins["oca-client"].clone(),
        daemon_bin: bins["oca-daemon"].clone(),
    }
}

impl World {
    /// Appliance `i`'s store.
    fn store(&self, i: usize) -> PathBuf {
        self._dir.path().join(format!("store{i}"))
    }

    /// Starts appliance `i` again (after it was killed), on the same address.
    fn restart(&mut self, i: usize) {
        let keys = self._dir.path().join(format!("keys{i}.json"));
        let d = daemon(
            &self.daemon_bin,
            &self.daemons[i].addr.to_string(),
            &self.store(i),
            &keys,
        );
        self.daemons[i] = d;
    }

    fn client(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(&self.client);
        cmd.args([
            "--control-plane",
            &self.cp_url,
            "--token",
            &self.player,
            "--title",
            "t1",
            "--json",
        ])
        .args(["--stall-timeout", "2"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "info");
        cmd
    }
}

#[test]
fn a_play_is_verified_and_survives_the_serving_appliance_dying() {
    let body = content_bytes("seed1", 6 << 20);
    let w = world(
        &["127.0.0.1:0", "127.0.0.1:0"],
        &[("t1_1080p.mp4", 1080, 8000, body)],
    );
    // Fast, unpaced: completes, hash checked.
    let out = w.client(&["--speed", "0"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = client_summary(&out);
    assert_eq!(
        (s["verified"].as_bool(), s["resolution"].as_u64()),
        (Some(true), Some(1080)),
        "{s}"
    );
    // Paced (6 MiB at 8 Mbit/s is 6.3 s of video, played 2x): kill whoever serves after a second.
    let mut child = w
        .client(&["--speed", "2", "--buffer", "1", "--chunk", "262144"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let admins: Vec<String> = w.daemons.iter().map(|d| d.admin.to_string()).collect();
    let serving = busiest(&admins, Duration::from_millis(300));
    let mut daemons = w.daemons;
    let victim = daemons.remove(serving);
    let dead = victim.addr.to_string();
    drop(victim); // SIGKILL
    let out = wait_output(&mut child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = client_summary(&out);
    assert_eq!(s["verified"], true, "{s}");
    assert!(s["switches"].as_u64().unwrap() >= 1, "{s}");
    let used: Vec<&str> = s["appliances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(used.contains(&dead.as_str()) && used.len() == 2, "{s}");
}

fn wait_output(child: &mut Child, within: Duration) -> std::process::Output {
    let end = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the client did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    std::process::Output {
        status: child.wait().unwrap(),
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// Shapes traffic from `src` on the loopback device; removed on drop.
struct Shaped;

impl Shaped {
    fn from(src: &str, rate: &str) -> Shaped {
        let tc = |args: &str| {
            let ok = Command::new("tc")
                .args(args.split_whitespace())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "tc {args}");
        };
        // Everything else on lo stays in an unlimited class.
        tc("qdisc add dev lo root handle 1: htb default 10 r2q 100000");
        tc("class add dev lo parent 1: classid 1:10 htb rate 100gbit");
        tc(&format!(
            "class add dev lo parent 1: classid 1:20 htb rate {rate} ceil {rate}"
        ));
        tc(&format!(
            "filter add dev lo parent 1: protocol ip prio 1 u32 match ip src {src}/32 flowid 1:20"
        ));
        Shaped
    }
}

impl Drop for Shaped {
    fn drop(&mut self) {
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .status();
    }
}

#[test]
fn a_slow_link_is_avoided_and_the_bitrate_drops_when_only_it_is_left() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0
        || !Path::new("/usr/sbin/tc").exists() && !Path::new("/sbin/tc").exists()
    {
        eprintln!("SKIPPED: shaping a link needs root and tc");
        return;
    }
    let high = content_bytes("seed2", 24 << 20);
    let low = content_bytes("seed3", 3 << 20);
    // 127.0.0.2 fast, 127.0.0.3 shaped to 20 Mbit/s: too slow for 1080p at 40 Mbit/s.
    let w = world(
        &["127.0.0.2:0", "127.0.0.3:0"],
        &[
            ("t1_1080p.mp4", 1080, 40_000, high),
            ("t1_480p.mp4", 480, 4_000, low),
        ],
    );
    let _shaped = Shaped::from("127.0.0.3", "20mbit");
    let fast = w
        .daemons
        .iter()
        .position(|d| d.addr.ip().to_string() == "127.0.0.2")
        .unwrap();
    let mut child = w
        .client(&[
            "--speed", "1", "--buffer", "1", "--chunk", "524288", "--probe", "262144",
        ])
        .spawn()
        .unwrap();
    // Playing 1080p from the fast appliance; then it goes away.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        metric(
            &metrics(&w.daemons[fast].admin.to_string()).unwrap(),
            "oca_sent_bytes_total "
        ) > 1e6,
        "the fast appliance is serving"
    );
    let mut daemons = w.daemons;
    drop(daemons.remove(fast));
    let out = wait_output(&mut child, Duration::from_secs(90));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = client_summary(&out);
    assert_eq!(
        s["appliances"][0].as_str().unwrap().split(':').next(),
        Some("127.0.0.2"),
        "{s}"
    );
    assert!(s["rendition_drops"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(
        (s["resolution"].as_u64(), s["verified"].as_bool()),
        (Some(480), Some(true)),
        "{s}"
    );
    drop(daemons);
}

#[test]
fn a_rendition_nobody_answers_for_is_not_chosen_over_one_that_plays() {
    // 1080p at a bitrate no link here carries, so the player looks lower; the 480p file is gone
    // from the only appliance (404), so nobody answers for it: 1080p, slow or not, it is.
    let w = world(
        &["127.0.0.1:0"],
        &[
            (
                "t1_1080p.mp4",
                1080,
                50_000_000,
                content_bytes("seed4", 2 << 20),
            ),
            ("t1_480p.mp4", 480, 1_500, content_bytes("seed5", 1 << 20)),
        ],
    );
    std::fs::remove_file(w.store(0).join("objects/t1/t1_480p.mp4")).unwrap();
    let out = w.client(&["--speed", "0"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = client_summary(&out);
    assert_eq!(
        (s["verified"].as_bool(), s["resolution"].as_u64()),
        (Some(true), Some(1080)),
        "{s}"
    );
}

#[test]
fn with_every_appliance_down_the_player_asks_again_and_plays_once_one_is_back() {
    let mut w = world(
        &["127.0.0.1:0"],
        &[("t1_1080p.mp4", 1080, 8000, content_bytes("seed6", 2 << 20))],
    );
    // The only appliance dies; the control plane (30 s reports) still offers it.
    let _ = w.daemons[0]._proc.child.kill();
    let _ = w.daemons[0]._proc.child.wait();
    let mut child = w
        .client(&["--speed", "0", "--give-up", "30"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(child.try_wait().unwrap().is_none(), "the player waits");
    w.restart(0);
    let out = wait_output(&mut child, Duration::from_secs(40));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = client_summary(&out);
    assert_eq!(s["verified"], true, "{s}");
    assert!(s["resteers"].as_u64().unwrap() >= 1, "{s}");
    // Giving up: with nobody back, a short --give-up ends the play with the reason.
    let _ = w.daemons[0]._proc.child.kill();
    let _ = w.daemons[0]._proc.child.wait();
    let started = Instant::now();
    let out = w
        .client(&["--speed", "0", "--give-up", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no offered appliance answered a probe") && err.contains("Connection refused"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}
