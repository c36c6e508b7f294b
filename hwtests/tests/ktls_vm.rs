//! Kernel TLS for real: this machine's kernel has no CONFIG_TLS, so Debian's stock kernel boots
//! under QEMU (software emulation) with an initramfs holding busybox, oca-daemon and tls-check.
//! Inside, the TLS module is loaded, oca-daemon serves the check files over HTTPS, and tls-check
//! verifies every byte, a key update in the middle of a long download, the daemon's
//! `mode="ktls"` handshakes and `/proc/net/tls_stat`; its verdict comes back on the serial
//! console.
//!
//! Needs `qemu-system-x86_64`, `busybox-static` and the kernel unpacked by
//! `hwtests/fetch-kernel.sh` (`.ci/run` provides all three). Without them the test says what is
//! missing and passes, unless `OCA_REQUIRE_VM=1` (set by `.ci/run`) makes that a failure.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hwtests::vm::{boot, Initramfs, Kernel, DEFAULT_KERNEL_DIR};

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp /sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for a in modprobe depmod insmod poweroff; do ln -sf /bin/busybox /sbin/$a; done
ip link set lo up
depmod
for m in tls gcm ghash_generic ctr chacha20poly1305 aesni_intel; do modprobe $m 2>/dev/null; done
echo "vm: kernel $(uname -r); tls module: $(grep -c '^tls ' /proc/modules)"
/tls-check make-store /store
/oca-daemon --store /store --listen 127.0.0.1:8080 --tls-listen 127.0.0.1:8443 \
  --tls-cert /cert.pem --tls-key /key.pem --admin-listen 127.0.0.1:9180 \
  --allow-unsigned --workers 1 2>/tmp/daemon.log &
/tls-check run 127.0.0.1:8443 /cert.pem 127.0.0.1:9180 > /tmp/verdict
grep -o 'kernel_tls=.*' /tmp/daemon.log | head -1
cat /proc/net/tls_stat
cat /tmp/verdict
echo "vm: done"
poweroff -f
"#;

fn missing_prerequisites(kernel_dir: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    let on_path = test_support::on_path;
    if !on_path("qemu-system-x86_64") {
        missing.push("qemu-system-x86_64 (apt-get install qemu-system-x86)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("/bin/busybox (apt-get install busybox-static)".into());
    }
    if Kernel::find(kernel_dir).is_err() {
        missing.push(format!(
            "Debian's kernel in {} (hwtests/fetch-kernel.sh)",
            kernel_dir.display()
        ));
    }
    missing
}

#[test]
fn ktls_serves_every_byte_in_debians_kernel() {
    let kernel_dir = PathBuf::from(
        std::env::var("OCA_VM_KERNEL_DIR").unwrap_or_else(|_| DEFAULT_KERNEL_DIR.into()),
    );
    let missing = missing_prerequisites(&kernel_dir);
    if !missing.is_empty() {
        let msg = format!("kTLS VM test needs: {}", missing.join("; "));
        if std::env::var_os("OCA_REQUIRE_VM").is_some() {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg} (set OCA_REQUIRE_VM=1 to make this a failure)");
        return;
    }
    let kernel = Kernel::find(&kernel_dir).unwrap();
    let bins = test_support::cargo_bins(
        false,
        &[("oca-daemon", "oca-daemon"), ("hwtests", "tls-check")],
    );
    let (daemon, check) = (bins["oca-daemon"].clone(), bins["tls-check"].clone());
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let mut img = Initramfs::default();
    img.file("init", INIT.as_bytes().to_vec(), 0o755)
        .file("cert.pem", ck.cert.pem().into_bytes(), 0o644)
        .file(
            "key.pem",
            ck.signing_key.serialize_pem().into_bytes(),
            0o600,
        )
        .copy(Path::new("/bin/busybox"), Some("bin/busybox"))
        .unwrap()
        .executable(&daemon, "oca-daemon")
        .unwrap()
        .executable(&check, "tls-check")
        .unwrap();
    let modules = format!("lib/modules/{}", kernel.release);
    for sub in [
        "kernel/net/tls",
        "kernel/crypto",
        "kernel/arch/x86/crypto",
        "kernel/lib/crypto",
    ] {
        img.tree(&kernel.modules.join(sub), &format!("{modules}/{sub}"))
            .unwrap();
    }
    for f in ["modules.order", "modules.builtin"] {
        let p = kernel.modules.join(f);
        if p.exists() {
            img.copy(&p, Some(&format!("{modules}/{f}"))).unwrap();
        }
    }
    let dir = tempfile_dir();
    let initrd = dir.join("initrd.cpio");
    std::fs::write(&initrd, img.cpio()).unwrap();
    let started = Instant::now();
    let console = boot(&kernel, &initrd, "vm: done", Duration::from_secs(600)).unwrap();
    eprintln!("VM run took {:?}", started.elapsed());
    let verdict = console
        .lines()
        .find(|l| l.contains("VERDICT"))
        .unwrap_or_default()
        .to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(verdict.contains("VERDICT PASS"), "{verdict}\n{console}");
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oca-ktls-vm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
