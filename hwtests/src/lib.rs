//! Appliance qualification helpers. [`vm`] boots Debian's kernel under QEMU with a small
//! initramfs, for what this machine's kernel cannot show (kTLS).

pub mod vm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// Builds `(package, binary)` pairs of this workspace with the cargo running the tests, and
/// returns each binary's path by name: tests that start other packages' binaries use it.
pub fn cargo_bins(release: bool, bins: &[(&str, &str)]) -> HashMap<String, PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args([
            "build",
            "--locked",
            "--message-format=json-render-diagnostics",
        ]);
    if release {
        cmd.arg("--release");
    }
    for (pkg, bin) in bins {
        cmd.args(["-p", pkg, "--bin", bin]);
    }
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
