//! The Debian packages for real (docs/packaging.md): `packaging/build-debs.sh` builds version N
//! of `oca-appliance` and `oca-control-plane` from the debug binaries this test run has built,
//! lintian checks them (clean, or each override explained in `packaging/*/debian/`), and they
//! are installed with `dpkg -i` into a fresh Debian root (mmdebstrap, minbase and systemd) in a
//! chroot, where no service may start (`policy-rc.d`, and no systemd running). The test checks
//! the files, the users, that nothing was enabled, and that every service's `--check-config`
//! passes on its installed example once the operator's part (store directories, a credential,
//! a certificate) is there. Then an operator edits `/etc/oca/oca-daemon.toml`, version N+1 (the
//! same code, the version bumped with `--version`; its shipped `oca-daemon.toml` and
//! `fill-agent.toml` changed as a new release's would be) is installed over it with
//! `--force-confold`, and dpkg's conffile rules hold: the edited file is kept and the new one
//! left beside it as `.dpkg-dist`, the unedited one is replaced, every other file is N+1's
//! (`dpkg --verify`, after a binary was tampered with). Last, a purge removes it all.
//!
//! Needs root (chroot), mmdebstrap, dpkg-deb and cargo-deb; lintian for its part. Without them
//! the test says what is missing and passes, unless `OCA_REQUIRE_VM=1` (.ci/run) makes that a
//! failure. The Debian root is made once and kept as a tarball in
//! `/var/cache/oca-images` (`OCA_IMAGE_CACHE`, shared with images/build.sh's package cache).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const N: &str = "0.1.0-1";
const N1: &str = "0.1.0-2";
const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn sh(cmd: &mut Command) -> String {
    let (ok, out) = run(cmd);
    assert!(ok, "{cmd:?}:\n{out}");
    out
}

/// A command run inside the root, non-interactively.
fn chroot(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("chroot");
    c.arg(root)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LC_ALL", "C");
    c
}

fn missing() -> Vec<String> {
    let mut m: Vec<String> = ["mmdebstrap", "dpkg-deb", "cargo-deb", "chroot"]
        .into_iter()
        .filter(|c| !test_support::on_path(c))
        .map(String::from)
        .collect();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        m.push("root".into());
    }
    m
}

/// Builds both packages at `version` into `out` (`packaging/build-debs.sh --profile dev`).
fn build(out: &Path, version: &str) -> Vec<PathBuf> {
    let started = Instant::now();
    let mut b = Command::new(repo().join("packaging/build-debs.sh"));
    // The script runs cargo: without this test's CARGO_* it rebuilds nothing.
    test_support::without_cargo_test_env(&mut b);
    sh(b.args(["--profile", "dev", "--fast", "--version", version])
        .arg("--out")
        .arg(out));
    eprintln!(
        "packages {version} built in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    ["oca-appliance", "oca-control-plane"]
        .iter()
        .map(|p| {
            let f = out.join(format!("{p}_{version}_amd64.deb"));
            assert!(f.is_file(), "{} missing", f.display());
            f
        })
        .collect()
}

/// A release's change to a shipped configuration file: `deb`'s `file` (a conffile) gets `line`
/// appended, repacked with dpkg-deb (conffiles are not in md5sums: nothing else to update).
fn change_conffile(deb: &Path, file: &str, line: &str) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("pkg");
    sh(Command::new("dpkg-deb").arg("-R").arg(deb).arg(&d));
    let conffiles = std::fs::read_to_string(d.join("DEBIAN/conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == file),
        "{file} not a conffile"
    );
    let path = d.join(file.trim_start_matches('/'));
    let text = std::fs::read_to_string(&path).unwrap() + line + "\n";
    std::fs::write(&path, text).unwrap();
    sh(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "-z1", "--build"])
        .arg(&d)
        .arg(deb));
}

/// A fresh Debian root: the cached tarball of one made before, else one mmdebstrap makes now
/// (minbase with systemd, which the packages depend on), kept.
fn debian_root(root: &Path) {
    let cache = PathBuf::from(
        std::env::var_os("OCA_IMAGE_CACHE").unwrap_or_else(|| "/var/cache/oca-images".into()),
    );
    let tarball = cache.join(format!("packages-test-root-{SUITE}.tar"));
    std::fs::create_dir_all(root).unwrap();
    let started = Instant::now();
    if tarball.is_file() {
        sh(Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(root));
        eprintln!(
            "Debian root from {} in {:.0} s",
            tarball.display(),
            started.elapsed().as_secs_f64()
        );
        return;
    }
    // mmdebstrap writes the tarball itself (beside, then renamed: a test killed halfway leaves
    // no half tarball behind), with one apt run: faster than debootstrap's dpkg package by
    // package (images/README.md has the measurement).
    let part = tarball.with_extension("tar.part");
    std::fs::create_dir_all(&cache).unwrap();
    let (ok, log) = run(Command::new("mmdebstrap")
        .args(["--variant=minbase", "--include=systemd", "--format=tar"])
        // /usr merged as debootstrap does it (usrmerge, perl and all, otherwise).
        .arg("--hook-dir=/usr/share/mmdebstrap/hooks/maybe-merged-usr")
        .arg(SUITE)
        .arg(&part)
        .arg(MIRROR));
    assert!(ok, "mmdebstrap:\n{}", tail(&log, 30));
    std::fs::rename(&part, &tarball).unwrap();
    sh(Command::new("tar")
        .arg("-xf")
        .arg(&tarball)
        .arg("-C")
        .arg(root));
    eprintln!(
        "Debian root made by mmdebstrap in {:.0} s (kept as {})",
        started.elapsed().as_secs_f64(),
        tarball.display()
    );
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn read(root: &Path, file: &str) -> String {
    std::fs::read_to_string(root.join(file.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Every service's configuration check on the installed example, run in the root.
fn check_configs(root: &Path) {
    for (bin, conf) in [
        ("oca-daemon", "/etc/oca/oca-daemon.toml"),
        ("fill-agent", "/etc/oca/fill-agent.toml"),
        ("control-plane", "/etc/oca/control-plane.toml"),
    ] {
        let (ok, out) = run(&mut chroot(
            root,
            &[bin, "--config", conf, "--check-config"],
        ));
        assert!(ok, "{bin} --check-config on the installed {conf}:\n{out}");
        assert!(out.contains("configuration ok"), "{bin}: {out}");
        eprintln!("{}", out.trim());
    }
}

fn lintian(debs: &[PathBuf]) {
    if test_support::skip_without("lintian", "lintian") {
        return;
    }
    let started = Instant::now();
    // Clean at every level, informational and pedantic tags included; overrides are shipped
    // in the packages (usr/share/lintian/overrides), each with its reason.
    let (ok, out) = run(Command::new("lintian")
        .args([
            "--pedantic",
            "-I",
            "-E",
            "--fail-on",
            "error,warning,info,pedantic",
        ])
        .args(debs));
    let complaints: Vec<&str> = out
        .lines()
        .filter(|l| !l.contains("running with root privileges"))
        .collect();
    assert!(
        ok && complaints.is_empty(),
        "lintian:\n{}",
        complaints.join("\n")
    );
    eprintln!("lintian: clean ({:.0} s)", started.elapsed().as_secs_f64());
}

#[test]
fn packages_install_upgrade_keep_edited_configs_and_purge() {
    let missing = missing();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "missing: {missing:?} (.ci/run installs them)"
        );
        eprintln!("skipped: missing {missing:?}");
        return;
    }
    let started = Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("oca-packages.")
        .tempdir_in("/var/tmp")
        .unwrap();
    let d = dir.path();
    let n = build(&d.join("n"), N);
    let n1 = build(&d.join("n1"), N1);
    lintian(&n);
    // Version N+1 ships changed configuration files, as a release that adds a key would.
    const CHANGED: &str = "# a key added in 0.1.0-2";
    change_conffile(&n1[0], "/etc/oca/oca-daemon.toml", CHANGED);
    change_conffile(&n1[0], "/etc/oca/fill-agent.toml", CHANGED);

    let root = d.join("root");
    debian_root(&root);
    // What a chroot install of a service package does: nothing starts (invoke-rc.d and
    // deb-systemd-invoke ask policy-rc.d; 101 is "no").
    std::fs::write(root.join("usr/sbin/policy-rc.d"), "#!/bin/sh\nexit 101\n").unwrap();
    sh(Command::new("chmod")
        .arg("755")
        .arg(root.join("usr/sbin/policy-rc.d")));
    for (sub, debs) in [("n", &n), ("n1", &n1)] {
        std::fs::create_dir_all(root.join("tmp").join(sub)).unwrap();
        for deb in debs.iter() {
            std::fs::copy(
                deb,
                root.join("tmp").join(sub).join(deb.file_name().unwrap()),
            )
            .unwrap();
        }
    }
    let names = |sub: &str, debs: &[PathBuf]| -> Vec<String> {
        debs.iter()
            .map(|p| format!("/tmp/{sub}/{}", p.file_name().unwrap().to_string_lossy()))
            .collect()
    };

    // Version N, on a fresh system.
    let mut install = chroot(&root, &["dpkg", "-i"]);
    install.args(names("n", &n));
    let out = sh(&mut install);
    eprintln!("dpkg -i {N}:\n{}", tail(&out, 6));
    for f in [
        "/usr/bin/oca-daemon",
        "/usr/bin/fill-agent",
        "/usr/bin/oca-qualify",
        "/usr/bin/control-plane",
        "/usr/bin/ocactl",
        "/usr/lib/systemd/system/oca-daemon.service",
        "/usr/lib/systemd/system/fill-agent.service",
        "/usr/lib/systemd/system/control-plane.service",
        "/usr/lib/sysusers.d/oca.conf",
        "/usr/lib/sysusers.d/oca-control.conf",
        "/usr/lib/tmpfiles.d/oca.conf",
        "/usr/lib/tmpfiles.d/oca-control.conf",
        "/usr/lib/modules-load.d/oca-tls.conf",
        "/etc/logrotate.d/oca-daemon",
        "/etc/oca/oca-daemon.toml",
        "/etc/oca/fill-agent.toml",
        "/etc/oca/control-plane.toml",
        "/usr/share/man/man8/oca-daemon.8.gz",
        "/usr/share/man/man8/fill-agent.8.gz",
        "/usr/share/man/man8/oca-qualify.8.gz",
        "/usr/share/man/man8/control-plane.8.gz",
        "/usr/share/man/man1/ocactl.1.gz",
        "/usr/share/man/man1/ocactl-site-add.1.gz",
        "/usr/share/bash-completion/completions/oca-daemon",
        "/usr/share/bash-completion/completions/ocactl",
        "/usr/share/zsh/vendor-completions/_fill-agent",
        "/usr/share/fish/vendor_completions.d/ocactl.fish",
        // The units' Documentation= files.
        "/usr/share/doc/oca-appliance/oca-daemon.md",
        "/usr/share/doc/oca-appliance/fill.md",
        "/usr/share/doc/oca-control-plane/control-plane.md",
        "/usr/share/doc/oca-appliance/examples/qualify.toml",
        "/usr/share/doc/oca-appliance/copyright",
    ] {
        assert!(
            root.join(f.trim_start_matches('/')).is_file(),
            "{f} not installed"
        );
    }
    for (unit, doc) in [
        ("oca-daemon", "/usr/share/doc/oca-appliance/oca-daemon.md"),
        ("fill-agent", "/usr/share/doc/oca-appliance/fill.md"),
        (
            "control-plane",
            "/usr/share/doc/oca-control-plane/control-plane.md",
        ),
    ] {
        let u = read(&root, &format!("/usr/lib/systemd/system/{unit}.service"));
        assert!(
            u.contains(&format!("Documentation=man:{unit}(8) file://{doc}")),
            "{unit}.service's Documentation="
        );
    }
    // The postinst ran systemd-sysusers: the services' users exist.
    let passwd = read(&root, "/etc/passwd");
    for user in ["oca", "oca-control"] {
        assert!(
            passwd.lines().any(|l| l.starts_with(&format!("{user}:"))),
            "no user {user}:\n{passwd}"
        );
    }
    // Installed, not enabled: the shipped configuration is an example.
    for unit in ["oca-daemon", "fill-agent", "control-plane"] {
        let link = root.join(format!(
            "etc/systemd/system/multi-user.target.wants/{unit}.service"
        ));
        assert!(
            std::fs::symlink_metadata(&link).is_err(),
            "{unit} enabled on installation"
        );
    }
    let (_, status) = run(&mut chroot(
        &root,
        &["dpkg-query", "-W", "-f", "${Version}\n", "oca-appliance"],
    ));
    assert_eq!(status.trim(), N);
    let version = sh(&mut chroot(&root, &["oca-daemon", "--version"]));
    assert!(version.starts_with("oca-daemon "), "{version}");

    // The operator's part (docs/first-day.md): store directories where the example names them,
    // the appliance's credential, the control plane's certificate and state directory.
    for dir in [
        "srv/oca/disk0",
        "srv/oca/disk1",
        "var/lib/oca-control",
        "etc/oca/tls",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("etc/oca/credential"), "a-credential\n").unwrap();
    test_support::write_self_signed(
        &root.join("etc/oca/tls/control-plane.pem"),
        &root.join("etc/oca/tls/control-plane.key"),
        &["cp.example.net".to_string()],
    )
    .unwrap();
    check_configs(&root);

    // The operator's edit, still a valid configuration.
    let conf = read(&root, "/etc/oca/oca-daemon.toml");
    assert!(
        conf.contains("\nworkers = 0\n"),
        "the example's workers line"
    );
    let edited = conf.replace("\nworkers = 0\n", "\nworkers = 3\n");
    std::fs::write(root.join("etc/oca/oca-daemon.toml"), &edited).unwrap();
    let fill_agent_n = read(&root, "/etc/oca/fill-agent.toml");
    let control_plane_n = read(&root, "/etc/oca/control-plane.toml");
    // A binary damaged since: the upgrade must put N+1's in its place.
    std::fs::write(root.join("usr/bin/oca-qualify"), "#!/bin/sh\nexit 1\n").unwrap();
    let (ok, damaged) = run(&mut chroot(&root, &["dpkg", "--verify", "oca-appliance"]));
    assert!(
        !ok || damaged.contains("usr/bin/oca-qualify"),
        "dpkg --verify misses a changed binary: {damaged}"
    );

    // Version N+1 over it, non-interactively, keeping what the operator changed.
    let mut upgrade = chroot(&root, &["dpkg", "-i", "--force-confold"]);
    upgrade.args(names("n1", &n1));
    let out = sh(&mut upgrade);
    eprintln!("dpkg -i --force-confold {N1}:\n{}", tail(&out, 8));
    for pkg in ["oca-appliance", "oca-control-plane"] {
        let v = sh(&mut chroot(
            &root,
            &["dpkg-query", "-W", "-f", "${Version} ${Status}\n", pkg],
        ));
        assert_eq!(v.trim(), format!("{N1} install ok installed"), "{pkg}");
    }
    // Edited and changed upstream: the operator's file stays, the new one is left beside it.
    assert_eq!(read(&root, "/etc/oca/oca-daemon.toml"), edited);
    let dist = read(&root, "/etc/oca/oca-daemon.toml.dpkg-dist");
    assert!(dist.contains(CHANGED) && dist.contains("\nworkers = 0\n"));
    // Not edited, changed upstream: replaced by the new one.
    let fill_agent = read(&root, "/etc/oca/fill-agent.toml");
    assert_eq!(fill_agent, fill_agent_n.clone() + CHANGED + "\n");
    assert!(!root.join("etc/oca/fill-agent.toml.dpkg-dist").exists());
    assert!(!root.join("etc/oca/fill-agent.toml.dpkg-old").exists());
    // Neither edited nor changed: as it was.
    assert_eq!(read(&root, "/etc/oca/control-plane.toml"), control_plane_n);
    // Every installed file is N+1's (md5sums), the damaged binary included; the one file that
    // differs is the conffile the operator edited (`c`).
    let (_, out) = run(&mut chroot(
        &root,
        &["dpkg", "--verify", "oca-appliance", "oca-control-plane"],
    ));
    let differing: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        differing.len() == 1 && differing[0].ends_with(" c /etc/oca/oca-daemon.toml"),
        "dpkg --verify after the upgrade:\n{out}"
    );
    let (ok, _) = run(&mut chroot(&root, &["oca-qualify", "--version"]));
    assert!(ok, "oca-qualify after the upgrade");
    check_configs(&root);

    // Purge: files, conffiles and the dpkg-dist copy go; the operator's own files stay.
    let out = sh(&mut chroot(
        &root,
        &["dpkg", "--purge", "oca-appliance", "oca-control-plane"],
    ));
    eprintln!("dpkg --purge:\n{}", tail(&out, 4));
    for gone in [
        "usr/bin/oca-daemon",
        "usr/bin/ocactl",
        "etc/oca/oca-daemon.toml",
        "etc/oca/oca-daemon.toml.dpkg-dist",
        "etc/oca/fill-agent.toml",
        "usr/lib/systemd/system/oca-daemon.service",
    ] {
        assert!(!root.join(gone).exists(), "{gone} left after purge");
    }
    assert!(root.join("etc/oca/credential").exists());
    eprintln!(
        "packages: built, linted, installed, upgraded and purged in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
