//! A throwaway virtual machine: Debian's stock kernel under `qemu-system-x86_64` (software
//! emulation, no KVM needed) with an initramfs built here from busybox-static, our binaries and
//! the glibc libraries they link. The machine's serial console is its only output.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where `hwtests/fetch-kernel.sh` unpacks Debian's kernel package (override with
/// `OCA_VM_KERNEL_DIR`).
pub const DEFAULT_KERNEL_DIR: &str = "/var/cache/oca-hwtests/kernel";

/// Debian's kernel, unpacked from its .deb (no install, no hooks).
pub struct Kernel {
    /// `boot/vmlinuz-<release>`.
    pub image: PathBuf,
    /// `lib/modules/<release>`.
    pub modules: PathBuf,
    /// The release string, e.g. `6.1.0-56-amd64`.
    pub release: String,
}

impl Kernel {
    /// Finds the unpacked kernel under `dir`.
    pub fn find(dir: &Path) -> Result<Kernel> {
        let boot = dir.join("boot");
        let image = std::fs::read_dir(&boot)
            .with_context(|| format!("{} (run hwtests/fetch-kernel.sh)", boot.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .with_context(|| format!("no vmlinuz in {}", boot.display()))?;
        let release = image
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        let modules = dir.join("lib/modules").join(&release);
        if !modules.is_dir() {
            bail!("no modules for {release} in {}", modules.display());
        }
        Ok(Kernel {
            image,
            modules,
            release,
        })
    }
}

/// An initramfs under construction: path in the image → contents.
#[derive(Default)]
pub struct Initramfs {
    files: BTreeMap<String, (Vec<u8>, u32)>,
}

impl Initramfs {
    /// Adds a file with `mode` (e.g. 0o755).
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> &mut Self {
        self.files
            .insert(path.trim_start_matches('/').to_string(), (data, mode));
        self
    }

    /// Adds a host file at the same path (or `at`), keeping its executable bit.
    pub fn copy(&mut self, host: &Path, at: Option<&str>) -> Result<&mut Self> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        let exec = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(host)?.permissions())
            & 0o111
            != 0;
        let path = at.map_or_else(|| host.to_string_lossy().into_owned(), str::to_string);
        Ok(self.file(&path, data, if exec { 0o755 } else { 0o644 }))
    }

    /// Adds an executable and every shared library `ldd` says it links, at their host paths.
    pub fn executable(&mut self, host: &Path, at: &str) -> Result<&mut Self> {
        self.copy(host, Some(at))?;
        let out = Command::new("ldd")
            .arg(host)
            .output()
            .context("running ldd")?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
            let lib = line
                .split("=>")
                .last()
                .and_then(|r| r.split_whitespace().next())
                .filter(|p| p.starts_with('/'));
            if let Some(lib) = lib {
                let real = std::fs::canonicalize(lib)?;
                let data = std::fs::read(&real)?;
                self.file(lib, data, 0o755);
            }
        }
        Ok(self)
    }

    /// Adds a directory tree from the host under `at`.
    pub fn tree(&mut self, host: &Path, at: &str) -> Result<&mut Self> {
        for entry in std::fs::read_dir(host)? {
            let entry = entry?;
            let name = format!("{at}/{}", entry.file_name().to_string_lossy());
            if entry.file_type()?.is_dir() {
                self.tree(&entry.path(), &name)?;
            } else if entry.file_type()?.is_file() {
                self.copy(&entry.path(), Some(&name))?;
            }
        }
        Ok(self)
    }

    /// The image as an uncompressed `newc` cpio archive (what the kernel unpacks at boot).
    pub fn cpio(&self) -> Vec<u8> {
        let mut dirs = std::collections::BTreeSet::new();
        for path in self.files.keys() {
            let mut p = Path::new(path);
            while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
                dirs.insert(parent.to_string_lossy().into_owned());
                p = parent;
            }
        }
        let mut out = Vec::new();
        let mut ino = 1;
        for d in &dirs {
            cpio_entry(&mut out, ino, d, 0o040_755, &[]);
            ino += 1;
        }
        for (path, (data, mode)) in &self.files {
            cpio_entry(&mut out, ino, path, 0o100_000 | mode, data);
            ino += 1;
        }
        cpio_entry(&mut out, 0, "TRAILER!!!", 0, &[]);
        out
    }
}

fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let pad4 = |out: &mut Vec<u8>| {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    };
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

/// Boots `kernel` with `initrd`, echoing the serial console, until a line contains `until` or
/// `timeout` passes; returns the console output.
pub fn boot(kernel: &Kernel, initrd: &Path, until: &str, timeout: Duration) -> Result<String> {
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine", "q35", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024",
        ])
        .args([
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ])
        .arg("-kernel")
        .arg(&kernel.image)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet loglevel=4"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut console = String::new();
    let mut found = false;
    while let Some(left) = timeout.checked_sub(start.elapsed()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let _ = writeln!(std::io::stderr(), "vm| {line}");
                console.push_str(&line);
                console.push('\n');
                if line.contains(until) {
                    found = true;
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // The guest powers itself off; give it a moment, then make sure.
    let end = Instant::now() + Duration::from_secs(5);
    while child.try_wait()?.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    if !found {
        bail!("no {until:?} on the console within {timeout:?}:\n{console}");
    }
    Ok(console)
}
