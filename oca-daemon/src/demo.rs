//! `--demo`: a small deterministic sample store, so the daemon runs with no setup at all.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use oca_store::{ContentId, Store};

/// The sample files: id and size.
pub const FILES: [(&str, u64); 3] = [
    ("demo_480p.mp4", 1 << 20),
    ("demo_1080p.mp4", 8 << 20),
    ("demo_2160p.mp4", 32 << 20),
];

/// Creates (or reuses) the sample store and returns its directory.
pub fn prepare() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("oca-demo-store");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let store = Store::open(&[&dir])?;
    let disk = &store.disks()[0];
    for (id, size) in FILES {
        let path = disk.object_path(ContentId::parse(id)?);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == size) {
            continue;
        }
        let tmp = dir.join(oca_store::TMP_DIR).join(id);
        write_pattern(&tmp, id, size).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::create_dir_all(path.parent().expect("object path has a shard directory"))?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(dir)
}

/// Writes a fresh one-key keyring (0600) next to the sample store, as the fill agent would from
/// the control plane's reply, and returns its path and the key.
pub fn keys() -> Result<(PathBuf, oca_protocol::keys::Key)> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut secret = [0u8; oca_protocol::keys::SECRET_LEN];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("reading the kernel's random source: {e}"))?;
    let key = oca_protocol::keys::Key::new("demo", secret)?;
    let ring = oca_protocol::keys::Keyring::new(vec![key.clone()])?;
    let path = std::env::temp_dir().join("oca-demo-keys.json");
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(ring.to_json().as_bytes())?;
    Ok((path, key))
}

/// Deterministic bytes (xorshift seeded by the id) so every demo store is identical.
fn write_pattern(path: &std::path::Path, id: &str, size: u64) -> std::io::Result<()> {
    let mut x = oca_store::placement::score("demo", id) | 1;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut left = size;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let bytes = x.to_le_bytes();
        let n = left.min(8) as usize;
        f.write_all(&bytes[..n])?;
        left -= n as u64;
    }
    f.into_inner()?.sync_all()
}
