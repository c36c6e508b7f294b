//! Appliance qualification helpers. [`vm`] boots Debian's kernel under QEMU with a small
//! initramfs, for what this machine's kernel cannot show (kTLS).

pub mod proc;
pub mod vm;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

/// Deterministic bytes for a content id (xorshift seeded by the id's FNV-1a hash): test and
/// lab files anyone can regenerate to check what they received.
pub fn content_bytes(id: &str, len: usize) -> Vec<u8> {
    let mut x = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

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
