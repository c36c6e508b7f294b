//! The systemd units, sysusers.d and tmpfiles.d files of `systemd/`, installed into a scratch root
//! as a package would install them, checked by systemd's own tools: `systemd-analyze verify`
//! (any complaint fails), `systemd-analyze security` (exposure at most [`MAX_EXPOSURE`]),
//! `systemd-sysusers` (the users exist) and `systemd-tmpfiles` (the directories, owners, modes).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 3] = ["oca-daemon", "fill-agent", "control-plane"];
/// systemd-analyze's scale: 0 (locked down) to 10 (exposed); below 2 is its "OK".
const MAX_EXPOSURE: f64 = 2.0;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("running a systemd tool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A root holding systemd's own units (verify resolves dependencies such as sysinit.target),
/// our binaries, and our files where the image installs them.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in [
        "usr/lib/systemd",
        "usr/bin",
        "etc",
        "usr/lib/sysusers.d",
        "usr/lib/tmpfiles.d",
    ] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    // Debian's units link to /lib/systemd/...: /lib is /usr/lib (merged /usr).
    std::os::unix::fs::symlink("usr/lib", r.join("lib")).unwrap();
    std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
    let (ok, _, err) = run(Command::new("cp")
        .arg("-a")
        .arg("/usr/lib/systemd/system")
        .arg(r.join("usr/lib/systemd/")));
    assert!(ok, "copying systemd's units: {err}");
    let bins = test_support::cargo_bins(
        false,
        &[
            ("oca-daemon", "oca-daemon"),
            ("fill-agent", "fill-agent"),
            ("control-plane", "control-plane"),
        ],
    );
    for (name, path) in &bins {
        std::fs::copy(path, r.join("usr/bin").join(name)).unwrap();
    }
    std::fs::copy("/bin/kill", r.join("usr/bin/kill")).unwrap();
    let src = repo().join("systemd");
    for u in UNITS {
        let f = format!("{u}.service");
        std::fs::copy(src.join(&f), r.join("usr/lib/systemd/system").join(&f)).unwrap();
    }
    // The appliance's (package oca-appliance) and the control plane's (oca-control-plane).
    for name in ["oca", "oca-control"] {
        for kind in ["sysusers", "tmpfiles"] {
            std::fs::copy(
                src.join(format!("{name}.{kind}.conf")),
                r.join(format!("usr/lib/{kind}.d/{name}.conf")),
            )
            .unwrap();
        }
    }
    root
}

fn verify(root: &Path) -> (bool, String) {
    let mut cmd = Command::new("systemd-analyze");
    // --man=no: the units' Documentation= names man pages (oca-daemon(8)) that the packages
    // generate and install, not this machine (hwtests/tests/packages.rs checks them there).
    cmd.args(["verify", "--man=no"])
        .arg(format!("--root={}", root.display()));
    for u in UNITS {
        cmd.arg(format!("{u}.service"));
    }
    let (ok, out, err) = run(&mut cmd);
    (ok, out + &err)
}

fn exposure(root: &Path, unit: &str) -> f64 {
    let (_, out, err) = run(Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(format!("--root={}", root.display()))
        .arg(format!("{unit}.service")));
    let text = out + &err;
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure for {unit}:\n{text}"));
    line.split(": ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn units_verify_and_are_locked_down() {
    if !test_support::on_path("systemd-analyze") {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "systemd-analyze missing (apt-get install systemd)"
        );
        eprintln!("skipped: systemd-analyze missing (apt-get install systemd)");
        return;
    }
    let root = scratch_root();
    let (ok, complaints) = verify(root.path());
    assert!(
        ok && complaints.trim().is_empty(),
        "systemd-analyze verify:\n{complaints}"
    );
    for u in UNITS {
        let e = exposure(root.path(), u);
        eprintln!("{u}.service: systemd-analyze security exposure {e}");
        assert!(
            e <= MAX_EXPOSURE,
            "{u}.service exposure {e} > {MAX_EXPOSURE}"
        );
        let text = std::fs::read_to_string(
            root.path()
                .join(format!("usr/lib/systemd/system/{u}.service")),
        )
        .unwrap();
        for want in [
            "Type=notify",
            "WatchdogSec=",
            "Restart=always",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(text.contains(want), "{u}.service lacks {want}");
        }
    }
    // The check can fail: a misspelt directive is reported.
    let unit = root
        .path()
        .join("usr/lib/systemd/system/oca-daemon.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    std::fs::write(
        &unit,
        text.replace("ProtectSystem=strict", "ProtectSytem=strict"),
    )
    .unwrap();
    let (_, complaints) = verify(root.path());
    assert!(complaints.contains("ProtectSytem"), "{complaints}");
}

#[test]
fn sysusers_and_tmpfiles_create_the_users_and_directories() {
    if !test_support::on_path("systemd-sysusers") || !test_support::on_path("systemd-tmpfiles") {
        assert!(
            std::env::var_os("OCA_REQUIRE_VM").is_none(),
            "systemd tools missing"
        );
        eprintln!("skipped: systemd-sysusers or systemd-tmpfiles missing");
        return;
    }
    let root = scratch_root();
    let r = root.path();
    let (ok, _, err) = run(Command::new("systemd-sysusers").arg(format!("--root={}", r.display())));
    assert!(ok, "systemd-sysusers: {err}");
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let uid = |name: &str| -> u32 {
        let line = passwd
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no user {name} in\n{passwd}"));
        line.split(':').nth(2).unwrap().parse().unwrap()
    };
    let (oca, control) = (uid("oca"), uid("oca-control"));
    assert!(oca < 1000 && control < 1000, "system users");
    let (ok, _, err) = run(Command::new("systemd-tmpfiles")
        .args(["--create"])
        .arg(format!("--root={}", r.display()))
        .args(["oca.conf", "oca-control.conf"]));
    assert!(ok, "systemd-tmpfiles: {err}");
    // SAFETY: geteuid has no preconditions.
    let root_is_us = unsafe { libc::geteuid() } == 0;
    for (dir, owner, mode) in [
        ("var/lib/oca", oca, 0o750),
        ("srv/oca", oca, 0o755),
        ("var/lib/oca-control", control, 0o750),
        ("etc/oca", 0, 0o750),
    ] {
        let m = std::fs::metadata(r.join(dir)).unwrap_or_else(|e| panic!("{dir}: {e}"));
        assert!(m.is_dir(), "{dir}");
        assert_eq!(m.permissions().mode() & 0o7777, mode, "{dir} mode");
        if root_is_us {
            assert_eq!(m.uid(), owner, "{dir} owner");
        }
    }
}

/// logrotate reads the access log's rotation (systemd/oca-daemon.logrotate) without a complaint,
/// and would signal the daemon only, to reopen (`SIGUSR1`; oca-daemon/tests/access_log.rs
/// checks the daemon's side).
#[test]
fn the_access_log_rotation_parses() {
    if test_support::skip_without("logrotate", "logrotate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = repo().join("systemd/oca-daemon.logrotate");
    let (ok, out, err) = run(Command::new("logrotate")
        .arg("--debug")
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg(&conf));
    let said = format!("{out}{err}");
    assert!(ok, "logrotate: {said}");
    assert!(!said.to_lowercase().contains("error"), "{said}");
    assert!(said.contains("/var/log/oca/access.log"), "{said}");
    let text = std::fs::read_to_string(&conf).unwrap();
    assert!(text.contains("--kill-whom=main --signal=USR1 oca-daemon.service"));
}
