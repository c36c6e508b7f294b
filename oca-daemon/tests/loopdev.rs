//! The store on real filesystems on real block devices (loop devices over sparse files): one ext4
//! disk and one XFS disk, files placed by rendezvous hashing, served byte-exact by both engines.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A filesystem on a loop device, mounted; unmounted and detached on drop.
struct LoopDisk {
    mount: PathBuf,
    device: String,
}

fn sh(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopDisk {
    fn new(dir: &Path, name: &str, fs: &str) -> Result<LoopDisk, String> {
        let image = dir.join(format!("{name}.img"));
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(512 << 20))
            .map_err(|e| e.to_string())?;
        let device = sh("losetup", &["--find", "--show", image.to_str().unwrap()])?;
        let mount = dir.join(name);
        std::fs::create_dir_all(&mount).unwrap();
        let disk = LoopDisk { mount, device };
        sh(&format!("mkfs.{fs}"), &["-q", &disk.device])?;
        sh("mount", &[&disk.device, disk.mount.to_str().unwrap()])?;
        Ok(disk)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = sh("umount", &[self.mount.to_str().unwrap()]);
        let _ = sh("losetup", &["-d", &self.device]);
    }
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: loop devices and mount need root".into());
    }
    for tool in ["losetup", "mkfs.ext4", "mkfs.xfs", "mount"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map_or(true, |o| !o.status.success())
        {
            return Some(format!(
                "{tool} not installed (apt-get install util-linux e2fsprogs xfsprogs)"
            ));
        }
    }
    None
}

#[test]
fn serves_from_ext4_and_xfs_on_loop_devices() {
    if let Some(reason) = skip_reason() {
        println!("SKIPPED serves_from_ext4_and_xfs_on_loop_devices: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disks = [
        LoopDisk::new(dir.path(), "disk0", "ext4").unwrap(),
        LoopDisk::new(dir.path(), "disk1", "xfs").unwrap(),
    ];
    let stores: Vec<&Path> = disks.iter().map(|d| d.mount.as_path()).collect();
    let store = oca_store::Store::open(&stores).unwrap();
    let mut files = Vec::new();
    let mut per_disk = [0usize; 2];
    for i in 0..12 {
        let id = format!("title{i:03}_1080p.mp4");
        let body = pattern(i, 1_000_000 + i as usize * 77_777);
        let disk = store.placement(oca_store::ContentId::parse(&id).unwrap())[0];
        per_disk[disk] += 1;
        put(&disks[disk].mount, &id, &body);
        files.push((id, body));
    }
    assert!(
        per_disk.iter().all(|&n| n > 0),
        "both disks hold files: {per_disk:?}"
    );
    for engine in ENGINES {
        let s = Server::start(engine, &stores, &[]);
        for (id, body) in &files {
            let n = body.len();
            for (a, b) in [
                (0, n - 1),
                (4095, 8192),
                (n - 1000, n - 1),
                (123_457, 654_321),
            ] {
                let r = client()
                    .get(s.url(&format!("/c/{id}")))
                    .header("range", format!("bytes={a}-{b}"))
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 206, "{engine} {id}");
                assert!(
                    r.bytes().unwrap()[..] == body[a..=b],
                    "{engine} {id} {a}-{b}"
                );
            }
        }
    }
}
