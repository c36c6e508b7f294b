//! Signed URLs (docs/architecture.md, "Signed URLs"): the keyring from `--keys FILE`, reloaded when the
//! file changes, and the check every content request passes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use oca_protocol::keys::Keyring;
use oca_protocol::signing::{verify_any, Rejection, Scope};

/// How often the keys file is looked at for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Who may fetch content.
pub struct UrlAuth {
    allow_unsigned: bool,
    path: Option<PathBuf>,
    ring: ArcSwapOption<Keyring>,
}

/// How a request was let in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admitted {
    /// A valid signature of this scope.
    Signed(Scope),
    /// Unsigned requests are allowed (lab mode).
    Unsigned,
}

/// The file's identity and version as far as reloading cares.
type Stamp = (u64, u64, i64, i64, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

/// Reads and parses the keyring file the fill agent writes.
pub fn read_keyring(path: &Path) -> anyhow::Result<Keyring> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading URL keys {}", path.display()))?;
    Keyring::from_json(&text).with_context(|| format!("URL keys {}", path.display()))
}

impl UrlAuth {
    /// Checks signatures against the keyring in `path` (read now, then whenever it changes), or
    /// lets every request in when `allow_unsigned`.
    pub fn new(path: Option<PathBuf>, allow_unsigned: bool) -> Arc<UrlAuth> {
        let auth = Arc::new(UrlAuth {
            allow_unsigned,
            path,
            ring: ArcSwapOption::empty(),
        });
        if allow_unsigned {
            tracing::warn!(
                "UNSIGNED REQUESTS ARE ALLOWED (--allow-unsigned): anyone who can reach this \
                 appliance can fetch every file; for labs only, never in production"
            );
        }
        if let Some(path) = &auth.path {
            auth.load(path);
            let watcher = Arc::downgrade(&auth);
            let path = path.clone();
            std::thread::Builder::new()
                .name("url-keys".into())
                .spawn(move || {
                    let mut seen = stamp(&path);
                    while let Some(auth) = watcher.upgrade() {
                        drop(auth);
                        std::thread::sleep(RELOAD_EVERY);
                        let now = stamp(&path);
                        if now != seen {
                            seen = now;
                            if let Some(auth) = watcher.upgrade() {
                                auth.load(&path);
                            }
                        }
                    }
                })
                .expect("spawning a thread");
        }
        auth
    }

    /// Reads the keys file; a missing or bad file keeps the keys in force (if any) and says why.
    fn load(&self, path: &Path) {
        if let Ok(m) = std::fs::metadata(path) {
            if m.mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", m.mode() & 0o777), "URL keys file is readable by others; it should be 0600");
            }
        }
        match read_keyring(path) {
            Ok(ring) => {
                let ids: Vec<&str> = ring.keys().iter().map(|k| k.id()).collect();
                tracing::info!(path = %path.display(), keys = ?ids, "URL keys loaded");
                self.ring.store(Some(Arc::new(ring)));
            }
            // Before the fill agent's first report, or while it rewrites the file.
            Err(_) if !path.exists() => {
                tracing::warn!(path = %path.display(), "URL keys not written yet; signed requests are refused until they are");
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %format!("{e:#}"), "URL keys file rejected; the keys in force stay");
            }
        }
    }

    /// Whether `query` lets the client fetch `content_id` now.
    pub fn check(&self, content_id: &str, query: &str) -> Result<Admitted, Rejection> {
        if self.allow_unsigned {
            return Ok(Admitted::Unsigned);
        }
        let guard = self.ring.load();
        let Some(ring) = guard.as_deref() else {
            return Err(Rejection::UnknownKey);
        };
        let now = oca_service::unix_now();
        verify_any(ring, content_id, query, &[Scope::Play, Scope::Fill], now).map(Admitted::Signed)
    }
}
