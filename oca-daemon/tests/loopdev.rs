//! The store on real filesystems on real block devices (loop devices over sparse files): one ext4
//! disk and one XFS disk, files placed by rendezvous hashing, served byte-exact by both engines.

mod common;

use common::*;
use std::path::Path;

#[test]
fn serves_from_ext4_and_xfs_on_loop_devices() {
    if let Some(reason) = loop_skip_reason() {
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
