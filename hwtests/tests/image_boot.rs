//! The appliance image for real: `images/build.sh` builds the disk image from Debian packages,
//! the test writes an appliance configuration (id, credential, control-plane URL, prefixes, BGP
//! neighbours, TLS certificate) onto its OCACONFIG partition, and boots it in QEMU (software
//! emulation, user-mode networking). A control plane on this machine's loopback (10.0.2.2 from
//! inside the VM) registers the appliance; the test waits until oca-daemon answers `/readyz` and
//! fill-agent's health reports arrive (systemd started both, `Type=notify`) with the BGP
//! sessions oca.conf names (no router answers them here), until the appliance has filled
//! the title from the control plane's origin, and then plays it as a player would: a play
//! request, a signed byte range over HTTPS from the VM's oca-daemon, every byte checked, with
//! kernel TLS engaged (Debian's kernel ships `tls.ko`, the image loads it at boot). That boot
//! is BIOS (SeaBIOS, EXTLINUX). Then the upgrade an operator makes: version N+1 of the
//! appliance package (`packaging/build-debs.sh --version`) goes into `updates/` on the config
//! partition, and the same disk boots again, this time with UEFI (Debian's OVMF, GRUB from the
//! EFI system partition): oca-setup installs N+1 before the services start, and the appliance
//! serves the same signed range from the content and the configuration the first boot left.
//! The image's SHA-256 file is checked with `sha256sum -c`.
//!
//! Prints the image size and the boot-to-ready time. Needs root, qemu-system-x86_64, mtools and
//! what `images/build.sh` needs; without them the test says what is missing and passes, unless
//! `OCA_REQUIRE_VM=1` makes that a failure. `OCA_IMAGE=FILE` boots an image built before instead
//! of building one.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_support::proc::Proc;

const CONTENT: &str = "vmplay_1080p.mp4";
const CONTENT_LEN: usize = 8 << 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn missing() -> Vec<String> {
    let mut m: Vec<String> = [
        "qemu-system-x86_64",
        "mcopy",
        "mmdebstrap",
        "sfdisk",
        "mkfs.vfat",
        "mkfs.xfs",
        "extlinux",
        "sha256sum",
        "cargo-deb",
        "dpkg-shlibdeps",
    ]
    .into_iter()
    .filter(|c| !test_support::on_path(c))
    .map(String::from)
    .collect();
    if !Path::new(OVMF).exists() {
        m.push(format!("{OVMF} (Debian's ovmf)"));
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        m.push("root".into());
    }
    m
}

/// UEFI firmware for QEMU: Debian's OVMF, without Secure Boot.
const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// How the VM starts the disk.
#[derive(Clone, Copy, Debug)]
enum Firmware {
    /// QEMU's SeaBIOS: the MBR, EXTLINUX.
    Bios,
    /// OVMF: the EFI system partition's BOOTX64.EFI (GRUB).
    Uefi,
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The image: `OCA_IMAGE`, or one built now by images/build.sh from the debug binaries this
/// test run has built (`OCA_IMAGE_PROFILE=release` for release ones). Decision: debug, because a
/// release build of the three binaries is minutes of compiling on a two-core CI machine for a
/// test of how the image is assembled and boots, which the optimisation level does not change.
fn image(dir: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("OCA_IMAGE") {
        return PathBuf::from(p);
    }
    let out = dir.join("oca-appliance.img");
    let profile = std::env::var("OCA_IMAGE_PROFILE").unwrap_or_else(|_| "dev".into());
    let started = Instant::now();
    let mut build = Command::new(repo().join("images/build.sh"));
    // build.sh runs cargo: without this test's CARGO_PKG_* it rebuilds nothing.
    test_support::without_cargo_test_env(&mut build);
    sh(build.arg("--out").arg(&out).args(["--profile", &profile]));
    eprintln!("image built in {:.0} s", started.elapsed().as_secs_f64());
    // The checksum build.sh writes verifies, as an operator checks a download.
    sh(Command::new("sha256sum")
        .args(["-c", "oca-appliance.img.sha256"])
        .current_dir(dir));
    let loops = sh(Command::new("losetup").arg("-j").arg(&out));
    assert!(
        loops.trim().is_empty(),
        "images/build.sh left loop devices on its image: {loops}"
    );
    out
}

/// Byte offset of partition `n` (1-based) in a disk image.
fn partition_offset(img: &Path, n: usize) -> u64 {
    let table: Value =
        serde_json::from_str(&sh(Command::new("sfdisk").arg("-J").arg(img))).unwrap();
    table["partitiontable"]["partitions"][n - 1]["start"]
        .as_u64()
        .unwrap()
        * 512
}

struct ControlPlane {
    proc: Proc,
    url: String,
    token: String,
    origin: PathBuf,
    /// Trusts the control plane's (self-signed) certificate.
    client: reqwest::blocking::Client,
}

impl ControlPlane {
    fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let c = &self.client;
        let url = format!("{}{path}", self.url);
        let mut r = if method == "POST" {
            c.post(url)
        } else {
            c.get(url)
        }
        .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        (
            status,
            serde_json::from_str(&resp.text().unwrap()).unwrap_or(Value::Null),
        )
    }
}

/// QEMU with the serial console collected; killed on drop.
struct Vm {
    child: Child,
    serial: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Vm {
    fn boot(img: &Path, hostfwd: &[(u16, u16)], firmware: Firmware) -> Vm {
        let fwd: String = hostfwd
            .iter()
            .map(|(h, g)| format!(",hostfwd=tcp:127.0.0.1:{h}-:{g}"))
            .collect();
        let mut qemu = Command::new("qemu-system-x86_64");
        if let Firmware::Uefi = firmware {
            qemu.args(["-bios", OVMF]);
        }
        let mut child = qemu
            .args([
                "-m",
                "1024",
                "-smp",
                "2",
                "-cpu",
                "max",
                "-nographic",
                "-no-reboot",
            ])
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio", img.display()))
            .args([
                "-netdev",
                &format!("user,id=n0{fwd}"),
                "-device",
                "virtio-net-pci,netdev=n0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting qemu-system-x86_64");
        let serial = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let s = serial.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    s.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Vm { child, serial }
    }

    fn console(&self) -> String {
        self.serial.lock().unwrap().clone()
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for<T>(what: &str, vm: &Vm, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > end {
            let console = vm.console();
            let tail: String = console
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            panic!("timed out waiting for {what}; console:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn appliance_image_boots_fills_and_serves_a_signed_range_over_ktls() {
    let m = missing();
    if !m.is_empty() {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "missing for the image boot test: {m:?}"
        );
        eprintln!("skipped: missing {m:?}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let built = image(dir.path());
    let apparent = std::fs::metadata(&built).unwrap().len();
    let allocated = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&built).unwrap().blocks() * 512
    };
    let img = dir.path().join("boot.img");
    sh(Command::new("cp")
        .arg("--sparse=always")
        .arg(&built)
        .arg(&img));

    // The control plane over HTTPS, reachable from the VM as 10.0.2.2; its certificate goes
    // on the config partition as the CA the fill agent trusts.
    // The appliance's certificate, made first: the control plane's live prober must trust it,
    // or it finds the appliance unreachable and steering leaves it out.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let appliance_ca = dir.path().join("appliance-ca.pem");
    std::fs::write(&appliance_ca, cert.cert.pem()).unwrap();
    let bins = test_support::cargo_bins(false, &[("control-plane", "control-plane")]);
    let port = test_support::free_port();
    let (cp_cert, cp_key) = (dir.path().join("cp.pem"), dir.path().join("cp.key"));
    let names = ["10.0.2.2", "127.0.0.1", "localhost"].map(String::from);
    test_support::write_self_signed(&cp_cert, &cp_key, &names).unwrap();
    let mut cmd = Command::new(&bins["control-plane"]);
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--db")
        .arg(dir.path().join("cp.db"))
        .arg("--tls-cert")
        .arg(&cp_cert)
        .arg("--tls-key")
        .arg(&cp_key)
        .arg("--probe-ca")
        .arg(&appliance_ca)
        .args([
            "--report-interval",
            "2",
            "--public-url",
            &format!("https://10.0.2.2:{port}"),
        ]);
    let proc = Proc::spawn(cmd);
    proc.wait_log(" listening ", Duration::from_secs(20));
    let cp = ControlPlane {
        proc,
        url: format!("https://127.0.0.1:{port}"),
        client: reqwest::blocking::Client::builder()
            .add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(&cp_cert).unwrap()).unwrap(),
            )
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        token: std::fs::read_to_string(dir.path().join("cp.db.admin-token"))
            .unwrap()
            .trim()
            .to_string(),
        origin: dir.path().join("cp.db.origin"),
    };
    let (tls_port, admin_port) = (test_support::free_port(), test_support::free_port());
    let body = test_support::content_bytes(CONTENT, CONTENT_LEN);
    std::fs::create_dir_all(&cp.origin).unwrap();
    std::fs::write(cp.origin.join(CONTENT), &body).unwrap();
    let sha = {
        use sha2::Digest;
        hex(&sha2::Sha256::digest(&body))
    };
    for (path, v) in [
        (
            "/v1/admin/sites",
            json!({"id": "isp", "kind": "isp", "region": "eu", "allowed_prefixes": ["127.0.0.0/8"]}),
        ),
        (
            "/v1/admin/zones",
            json!({"prefix": "127.0.0.0/8", "country": "NL"}),
        ),
        (
            "/v1/admin/subscribers",
            json!({"id": "s1", "active": true, "max_resolution": 2160, "max_streams": 4}),
        ),
        (
            "/v1/admin/titles",
            json!({"id": "t1", "name": "t1", "countries": ["NL"]}),
        ),
        (
            "/v1/admin/content",
            json!({"id": CONTENT, "title": "t1", "resolution": 1080, "bitrate_kbps": 5000,
            "size": CONTENT_LEN, "sha256": sha, "content_type": "video/mp4", "origin": "embedded"}),
        ),
    ] {
        let (s, r) = cp.admin("POST", path, Some(v));
        assert_eq!(s, 201, "{path}: {r}");
    }
    let reg = json!({"id": "vm1", "site": "isp", "url": format!("https://localhost:{tls_port}"), "capacity_bps": 10_000_000_000u64});
    let (s, r) = cp.admin("POST", "/v1/admin/appliances", Some(reg));
    assert_eq!(s, 201, "{r}");
    let credential = r["credential"].as_str().unwrap().to_string();

    // The appliance's configuration, on its config partition.
    let cfg = dir.path().join("config");
    std::fs::create_dir_all(cfg.join("tls")).unwrap();
    std::fs::write(cfg.join("tls/cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(cfg.join("tls/key.pem"), cert.signing_key.serialize_pem()).unwrap();
    std::fs::copy(&cp_cert, cfg.join("tls/control-plane-ca.pem")).unwrap();
    std::fs::write(
        cfg.join("oca.conf"),
        format!(
            "# written by the image boot test\nOCA_ID=vm1\nOCA_CREDENTIAL={credential}\nOCA_CONTROL_PLANE=https://10.0.2.2:{port}\nOCA_SITE=wrong-site\nOCA_ADMIN_LISTEN=0.0.0.0:9180\n\
             # The ISP's routers (none answers here: the sessions are reported, not up)\n\
             OCA_BGP_LOCAL_AS=64501\nOCA_BGP_ROUTER_ID=10.0.2.15\n\
             OCA_BGP_NEIGHBORS=\"10.0.2.2:64500, [fec0::2]:64500\"\nOCA_BGP_MD5_PASSWORD=s3cret\n"
        ),
    )
    .unwrap();
    let part = format!("{}@@{}", img.display(), partition_offset(&img, 2));
    sh(Command::new("mcopy")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", &part, "-s"])
        .arg(cfg.join("oca.conf"))
        .arg(cfg.join("tls"))
        .arg("::"));

    // Kernel arguments win over oca.conf: the site and prefixes come from the command line.
    append_kernel_args(&img, "oca.site=isp oca.prefixes=127.0.0.0/8");

    let started = Instant::now();
    let vm = Vm::boot(&img, &[(tls_port, 443), (admin_port, 9180)], Firmware::Bios);
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let admin = format!("127.0.0.1:{admin_port}");
    wait_for("oca-daemon /readyz", &vm, Duration::from_secs(400), || {
        let r = http.get(format!("http://{admin}/readyz")).send().ok()?;
        (r.status() == 200).then_some(())
    });
    let daemon_ready = started.elapsed();
    wait_for(
        "fill-agent's health report",
        &vm,
        Duration::from_secs(120),
        || {
            let (_, list) = cp.admin("GET", "/v1/admin/appliances", None);
            list.as_array()?
                .iter()
                .find(|a| a["id"] == "vm1" && a["status"] == "ok")
                .map(|_| ())
        },
    );
    let ready = started.elapsed();
    let console = vm.console();
    assert!(
        console.contains("oca-setup: appliance vm1 (site isp) reporting to"),
        "{console}"
    );
    assert!(console.contains("store OCASTORE0 mounted at /srv/oca/disk0"));
    // The host's own figures for Prometheus (Debian's node exporter, on loopback).
    // systemd's status line, coloured and cut to the console's width.
    assert!(
        console
            .lines()
            .any(|l| l.contains("OK") && l.contains("Started") && l.contains("prometheus-node-ex")),
        "{console}"
    );
    // The daemon's first start succeeds: oca-setup made the store's directories it cannot.
    assert!(
        !console.contains("Read-only file system"),
        "oca-daemon could not prepare its store:\n{console}"
    );
    // oca.conf's BGP keys became the agent's [bgp] table (checked by the agent at boot), and
    // its reports carry both sessions.
    assert!(
        console.contains("BGP as AS64501 (router id 10.0.2.15, dialling out only) with 2 neighbour(s): 10.0.2.2 AS64500, fec0::2 AS64500"),
        "{console}"
    );
    let sessions = wait_for(
        "the BGP sessions in a report",
        &vm,
        Duration::from_secs(30),
        || {
            let (_, v) = cp.admin("GET", "/v1/admin/bgp/sessions?oca_id=vm1", None);
            let s = v.get(0)?["sessions"].as_array()?.clone();
            (s.len() == 2).then_some(s)
        },
    );
    let heard: Vec<(&str, u64)> = sessions
        .iter()
        .map(|s| {
            (
                s["neighbor"].as_str().unwrap(),
                s["peer_as"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(heard, [("10.0.2.2", 64500), ("fec0::2", 64500)]);

    // The appliance fills the title from the origin; then playing it steers to the VM.
    let (s, issued) = cp.admin("POST", "/v1/admin/subscribers/s1/tokens", Some(json!({})));
    assert_eq!(s, 201, "{issued}");
    let player = issued["token"].as_str().unwrap().to_string();
    // The answer and steering's explanation are printed whenever they change: when the title
    // never becomes steerable, the last ones say why (the prober's verdict was found so).
    let last = std::cell::RefCell::new(String::new());
    let play = || -> Option<Value> {
        let r = cp
            .client
            .post(format!("{}/v1/play", cp.url))
            .bearer_auth(&player)
            .json(&json!({"title": "t1"}))
            .send()
            .ok()?;
        let status = r.status();
        let v: Value = r.json().ok()?;
        let steer = format!("/v1/steer?client_ip=127.0.0.1&content_id={CONTENT}&explain=1");
        let seen = format!(
            "play: {status} {v}\nsteering: {}",
            cp.admin("GET", &steer, None).1["explain"]
        );
        if *last.borrow() != seen {
            eprintln!("{seen}");
            last.replace(seen);
        }
        (!v["renditions"][0]["urls"].as_array()?.is_empty()).then_some(v)
    };
    let answer = wait_for(
        "the title filled and steerable",
        &vm,
        Duration::from_secs(180),
        play,
    );
    let filled = started.elapsed();
    let url = answer["renditions"][0]["urls"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.starts_with(&format!("https://localhost:{tls_port}/c/{CONTENT}?")),
        "{url}"
    );
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let https = reqwest::blocking::Client::builder()
        .add_root_certificate(root)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let (first, last) = (1_000_003usize, 6_500_000usize);
    let signed_range = || {
        https
            .get(&url)
            .header("Range", format!("bytes={first}-{last}"))
            .send()
            .unwrap()
    };
    let r = signed_range();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"].to_str().unwrap(),
        format!("bytes {first}-{last}/{CONTENT_LEN}")
    );
    let got = r.bytes().unwrap();
    assert!(got[..] == body[first..=last], "the range's bytes differ");
    // Unsigned: refused.
    let unsigned = https
        .get(format!("https://localhost:{tls_port}/c/{CONTENT}"))
        .send()
        .unwrap();
    assert_eq!(unsigned.status(), 403);
    let metrics = test_support::metrics(&admin).unwrap();
    let ktls = test_support::metric(&metrics, "oca_tls_handshakes_total{mode=\"ktls\"}");
    assert!(ktls >= 1.0, "kernel TLS not engaged:\n{metrics}");
    eprintln!(
        "image: {:.0} MiB disk, {:.0} MiB allocated; boot to oca-daemon ready {:.1} s, to both services active {:.1} s, title filled {:.1} s (QEMU TCG, 2 vCPUs); {} kTLS handshakes",
        apparent as f64 / 1048576.0,
        allocated as f64 / 1048576.0,
        daemon_ready.as_secs_f64(),
        ready.as_secs_f64(),
        filled.as_secs_f64(),
        ktls
    );

    // The same disk on a UEFI machine: the content and configuration the BIOS boot left serve
    // the same signed range.
    assert!(
        vm.console().contains("SeaBIOS"),
        "the first boot was not BIOS"
    );
    drop(vm);
    // Version N+1 of the appliance package on the config partition, as an operator puts it.
    let debs = dir.path().join("debs");
    let mut build = Command::new(repo().join("packaging/build-debs.sh"));
    test_support::without_cargo_test_env(&mut build);
    sh(build
        .args([
            "--profile",
            "dev",
            "--fast",
            "--version",
            "0.1.0-2",
            "--out",
        ])
        .arg(&debs));
    let part = format!("{}@@{}", img.display(), partition_offset(&img, 2));
    let mtools = |cmd: &str, args: &[&std::ffi::OsStr]| {
        sh(Command::new(cmd)
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", &part])
            .args(args))
    };
    mtools("mmd", &["::updates".as_ref()]);
    mtools(
        "mcopy",
        &[
            debs.join("oca-appliance_0.1.0-2_amd64.deb").as_os_str(),
            "::updates/".as_ref(),
        ],
    );
    let started = Instant::now();
    let vm = Vm::boot(&img, &[(tls_port, 443), (admin_port, 9180)], Firmware::Uefi);
    wait_for(
        "oca-daemon /readyz after a UEFI boot",
        &vm,
        Duration::from_secs(400),
        || {
            let r = http.get(format!("http://{admin}/readyz")).send().ok()?;
            (r.status() == 200).then_some(())
        },
    );
    let uefi_ready = started.elapsed();
    let console = vm.console();
    assert!(
        console.contains("BdsDxe") && !console.contains("SeaBIOS"),
        "not a UEFI boot:\n{console}"
    );
    assert!(
        console.contains("Open Connect appliance"),
        "GRUB's menu entry:\n{console}"
    );
    assert!(
        console.contains("oca-setup: installed oca-appliance 0.1.0-2 (was 0.1.0-1)"),
        "the upgrade from the config partition:\n{console}"
    );
    assert!(
        console.contains("oca.site=isp"),
        "the kernel arguments an operator added reach the UEFI boot too:\n{console}"
    );
    let r = signed_range();
    assert_eq!(r.status(), 206);
    assert!(
        r.bytes().unwrap()[..] == body[first..=last],
        "after the UEFI boot"
    );
    eprintln!(
        "UEFI boot (OVMF, TCG) to oca-daemon ready: {:.1} s",
        uefi_ready.as_secs_f64()
    );
    drop(cp.proc);
}

/// Adds kernel arguments to the image's boot entries (EXTLINUX's APPEND line and GRUB's linux
/// line, both on the root filesystem, partition 1), as an operator would.
fn append_kernel_args(img: &Path, args: &str) {
    let mnt = img.with_extension("root");
    std::fs::create_dir_all(&mnt).unwrap();
    let dev = sh(Command::new("losetup")
        .args([
            "--find",
            "--show",
            "--offset",
            &partition_offset(img, 1).to_string(),
        ])
        .arg(img))
    .trim()
    .to_string();
    let mounted = Command::new("mount")
        .arg(&dev)
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    let edit = |cfg: &Path| {
        std::fs::read_to_string(cfg)
            .map(|t| {
                t.replace(
                    "console=ttyS0,115200",
                    &format!("console=ttyS0,115200 {args}"),
                )
            })
            .and_then(|t| std::fs::write(cfg, t))
            .is_ok()
    };
    let cfg = mnt.join("boot/syslinux/syslinux.cfg");
    let grub = mnt.join("boot/grub/grub.cfg");
    let edited = mounted && edit(&cfg) && edit(&grub);
    let _ = Command::new("umount").arg(&mnt).status();
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert!(edited, "could not edit {}", cfg.display());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
