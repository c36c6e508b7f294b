//! `oca-qualify` on real block devices: loop devices over sparse files, formatted XFS and ext4
//! and mounted as two store disks, inside a network namespace with a veth pair this test
//! creates. A run whose thresholds hold exits 0 with every check in the table and the JSON;
//! broken stores, a missing interface, an unreachable address or an impossible threshold each
//! fail their own check and make the run exit 1; a bad config exits 2.
//!
//! Needs root, losetup, mkfs.xfs, mkfs.ext4, ip and wrk (`.ci/run` installs them). Without them
//! the test says what is missing and passes, unless `OCA_REQUIRE_VM=1` makes that a failure.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn missing() -> Vec<&'static str> {
    let mut m = Vec::new();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        m.push("root");
    }
    for tool in ["losetup", "mkfs.xfs", "mkfs.ext4", "ip", "wrk"] {
        if !test_support::on_path(tool) {
            m.push(tool);
        }
    }
    m
}

/// Skips (or fails under OCA_REQUIRE_VM) when the machine lacks what the test needs.
fn prerequisites() -> bool {
    let m = missing();
    if m.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("OCA_REQUIRE_VM").is_none(),
        "missing for the qualification test: {m:?}"
    );
    eprintln!("skipped: missing {m:?}");
    false
}

/// A loop device over a sparse file, formatted and mounted; undone on drop.
struct LoopDisk {
    dev: String,
    mount: PathBuf,
}

impl LoopDisk {
    fn new(dir: &Path, name: &str, mkfs: &str) -> LoopDisk {
        let img = dir.join(format!("{name}.img"));
        let mount = dir.join(name);
        std::fs::create_dir_all(&mount).unwrap();
        sh(&format!("truncate -s 1G {}", img.display()));
        // direct-io: reads reach the backing file's disk, not only the host's page cache.
        let dev = sh(&format!(
            "losetup --find --show --direct-io=on {}",
            img.display()
        ));
        sh(&format!("{mkfs} {dev}"));
        sh(&format!("mount -o noatime {dev} {}", mount.display()));
        LoopDisk { dev, mount }
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

/// A network namespace with a veth pair q0 (10.77.0.1) – q1 (10.77.0.2), both up; deleted on
/// drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("ocaq{tag}{}", std::process::id());
        sh(&format!("ip netns add {name}"));
        let ns = Netns(name.clone());
        sh(&format!(
            "ip -n {name} link set lo up && ip -n {name} link add q0 type veth peer name q1 && \
             ip -n {name} addr add 10.77.0.1/24 dev q0 && ip -n {name} addr add 10.77.0.2/24 dev q1 && \
             ip -n {name} link set q0 up && ip -n {name} link set q1 up"
        ));
        ns
    }

    /// A TCP listener inside the namespace (bound from a thread that entered it).
    fn listen(&self, addr: &str) -> TcpListener {
        let path = format!("/run/netns/{}", self.0);
        let addr = addr.to_string();
        std::thread::spawn(move || {
            let f = std::fs::File::open(path).unwrap();
            // SAFETY: setns on this thread only, with a namespace file descriptor.
            assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
            TcpListener::bind(addr).unwrap()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn qualify(
    ns: &Netns,
    config: &Path,
    json: &Path,
    extra: &[&str],
) -> (i32, String, serde_json::Value) {
    let bins = test_support::cargo_bins(
        false,
        &[("hwtests", "oca-qualify"), ("oca-daemon", "oca-daemon")],
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(&bins["oca-qualify"])
        .arg("--config")
        .arg(config)
        .arg("--json")
        .arg(json)
        .arg("--daemon")
        .arg(&bins["oca-daemon"])
        .args(extra)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{table}{}", String::from_utf8_lossy(&out.stderr));
    let report = std::fs::read_to_string(json)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), table, report)
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[test]
fn loop_device_stores_qualify() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d0 = LoopDisk::new(dir.path(), "disk0", "mkfs.xfs -q");
    let d1 = LoopDisk::new(dir.path(), "disk1", "mkfs.ext4 -q");
    let ns = Netns::new("a");
    let control_plane = ns.listen("10.77.0.2:7070");
    let config = dir.path().join("qualify.toml");
    std::fs::write(
        &config,
        format!(
            r#"stores = ["{}", "{}"]
[disk]
seconds = 1
min_seq_read_mbps = 20
min_rand_read_iops = 500
[ktls]
# This machine's kernel has no CONFIG_TLS; the round trip still runs (userspace TLS).
required = false
[network]
interfaces = ["q0"]
min_speed_mbps = 10000
reach = ["10.77.0.2:7070"]
[load]
seconds = 3
connections = 8
files_per_store = 2
file_mib = 32
min_gbps = 0.2
max_p99_ms = 2000
"#,
            d0.mount.display(),
            d1.mount.display()
        ),
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let (code, table, report) = qualify(&ns, &config, &json, &[]);
    assert_eq!(code, 0, "{table}");
    assert!(table.contains("QUALIFIED: all"), "{table}");
    assert_eq!(report["passed"], true);
    for store in [&d0.mount, &d1.mount] {
        let at = store.display();
        for name in [
            "fs.mount",
            "fs.type",
            "fs.options",
            "fs.direct_io",
            "disk.device",
        ] {
            assert_eq!(check(&report, &format!("{name}[{at}]"))["status"], "pass");
        }
        for (name, unit) in [("disk.seq_read", "MB/s"), ("disk.rand_read", "IOPS")] {
            let c = check(&report, &format!("{name}[{at}]"));
            assert_eq!(c["status"], "pass");
            assert_eq!(c["unit"], unit);
            assert!(c["value"].as_f64().unwrap() > 0.0);
        }
    }
    assert!(
        check(&report, &format!("disk.device[{}]", d0.mount.display()))["detail"]
            .as_str()
            .unwrap()
            .contains(&d0.dev)
    );
    assert_eq!(check(&report, "net.speed[q0]")["value"], 10000.0);
    assert_eq!(
        check(&report, "net.reach[10.77.0.2:7070]")["status"],
        "pass"
    );
    let rt = check(&report, "ktls.round_trip");
    assert_eq!(rt["status"], "pass");
    assert!(rt["detail"].as_str().unwrap().contains("bytes verified"));
    assert!(check(&report, "load.throughput")["value"].as_f64().unwrap() > 0.2);
    assert_eq!(check(&report, "load.errors")["value"], 0.0);
    // The load run's test files are gone again.
    for store in [&d0.mount, &d1.mount] {
        let left: Vec<_> = std::fs::read_dir(store.join("objects/oc"))
            .map(|d| d.filter_map(|e| e.ok()).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "test files left in {}", store.display());
    }
    drop(control_plane);
}

#[test]
fn every_broken_part_fails_its_own_check() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d0 = LoopDisk::new(dir.path(), "disk0", "mkfs.ext4 -q");
    // A directory inside a disk's filesystem, not a disk of its own; and a store on tmpfs.
    let nested = d0.mount.join("nested");
    std::fs::create_dir_all(&nested).unwrap();
    let tmpfs = dir.path().join("tmpfs");
    std::fs::create_dir_all(&tmpfs).unwrap();
    sh(&format!(
        "mount -t tmpfs -o size=16m tmpfs {}",
        tmpfs.display()
    ));
    let ns = Netns::new("b");
    let config = dir.path().join("qualify.toml");
    std::fs::write(
        &config,
        format!(
            r#"stores = ["{}", "{}", "{}"]
[disk]
seconds = 0.5
min_seq_read_mbps = 1e12
min_rand_read_iops = 1
[network]
interfaces = ["q0", "nosuch0"]
min_speed_mbps = 100000
reach = ["10.77.0.9:9"]
"#,
            d0.mount.display(),
            nested.display(),
            tmpfs.display()
        ),
    )
    .unwrap();
    let json = dir.path().join("report.json");
    let args = ["--only", "fs", "--only", "disk", "--only", "net"];
    let (code, table, report) = qualify(&ns, &config, &json, &args);
    let _ = Command::new("umount").arg(&tmpfs).status();
    assert_eq!(code, 1, "{table}");
    assert!(table.contains("NOT QUALIFIED"), "{table}");
    assert_eq!(report["passed"], false);
    let failed = |name: String, says: &str| {
        let c = check(&report, &name);
        assert_eq!(c["status"], "fail", "{name}: {c}");
        assert!(c["detail"].as_str().unwrap().contains(says), "{name}: {c}");
    };
    let (m0, mn, mt) = (d0.mount.display(), nested.display(), tmpfs.display());
    failed(format!("fs.mount[{mn}]"), "not a mount point");
    failed(format!("fs.own_disk[{mn}]"), "same filesystem as");
    failed(format!("fs.type[{mt}]"), "tmpfs");
    failed(format!("disk.device[{mt}]"), "not a block device");
    assert_eq!(
        check(&report, &format!("disk.seq_read[{m0}]"))["status"],
        "fail"
    );
    assert_eq!(
        check(&report, &format!("disk.rand_read[{m0}]"))["status"],
        "pass"
    );
    failed("net.link[nosuch0]".into(), "no such interface");
    assert_eq!(check(&report, "net.speed[q0]")["status"], "fail");
    failed("net.reach[10.77.0.9:9]".into(), "no TCP connection");
    // Good parts still pass next to the broken ones.
    assert_eq!(check(&report, &format!("fs.mount[{m0}]"))["status"], "pass");
    assert_eq!(check(&report, "net.link[q0]")["status"], "pass");

    // A config it cannot use: exit 2, a message naming the problem, no report.
    std::fs::write(&config, "stores = [\"/x\"]\n[disk]\nsecnds = 1\n").unwrap();
    let json2 = dir.path().join("none.json");
    let (code, _, report) = qualify(&ns, &config, &json2, &[]);
    assert_eq!(code, 2);
    assert!(report.is_null());
}
