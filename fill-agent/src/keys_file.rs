//! The keys file: the URL-signing keyring from the control plane's health reply, written where
//! oca-daemon reads it, only when it changed, atomically and durably, readable by the service
//! alone.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};
use oca_protocol::health::HealthReply;
use oca_protocol::keys::Keyring;

/// Writes the keyring oca-daemon reads, when it changed: mode 0600, replaced by rename so the
/// daemon never reads half a file.
pub fn write_keys(path: &Path, reply: &HealthReply) -> Result<bool> {
    let ring = Keyring::from_wire(&reply.keys).context("keys in the health reply")?;
    let json = ring.to_json();
    if std::fs::read_to_string(path).is_ok_and(|old| old == json) {
        // Secrets: whoever made the file, it is the service's alone.
        let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777)?;
        if mode != 0o600 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            return Ok(true);
        }
        return Ok(false);
    }
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(json.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    // The rename is durable once the directory is: after a power cut the daemon must find the
    // new keys, not the old ones (or none).
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(true)
}
