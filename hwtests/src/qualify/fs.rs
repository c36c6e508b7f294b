//! Filesystem and mount checks of each store: its own filesystem of an allowed type, mounted
//! read-write without strict atime, not shared with another store, and taking O_DIRECT writes
//! and reads back intact (what fills and the cold read path do).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::report::Check;

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// Per-mount and superblock options together.
    pub options: Vec<String>,
    /// What is mounted.
    pub source: String,
}

/// The mount a path lives on (the longest mount point that is a prefix of it).
pub fn mount_of(path: &Path) -> Result<Mount> {
    let path = std::fs::canonicalize(path).with_context(|| format!("{}", path.display()))?;
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut best: Option<Mount> = None;
    for line in text.lines() {
        // id parent major:minor root point options [optional...] - fstype source super-options
        let (left, right) = line.split_once(" - ").context("mountinfo line")?;
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 {
            continue;
        }
        let point = PathBuf::from(unescape(l[4]));
        if !path.starts_with(&point) {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|b| point.as_os_str().len() >= b.point.as_os_str().len())
        {
            let options = l[5]
                .split(',')
                .chain(r[2].split(','))
                .map(String::from)
                .collect();
            best = Some(Mount {
                point,
                fstype: r[0].into(),
                options,
                source: unescape(r[1]),
            });
        }
    }
    best.context("no mount holds it")
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Writes 1 MiB with O_DIRECT under `<store>/tmp/`, fsyncs, reads it back with O_DIRECT and
/// compares; removes the file whatever happens.
pub fn direct_io_round_trip(store: &Path) -> Result<()> {
    const LEN: usize = 1 << 20;
    let dir = store.join("tmp");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("oca-qualify-{}.bin", std::process::id()));
    let result = (|| -> Result<()> {
        let layout = std::alloc::Layout::from_size_align(LEN, 4096)?;
        // SAFETY: non-zero size, power-of-two alignment; freed below.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("out of memory");
        }
        // SAFETY: ptr is valid for LEN bytes and exclusively ours until dealloc.
        let buf = unsafe { std::slice::from_raw_parts_mut(ptr, LEN) };
        let pattern = test_support::content_bytes("oca-qualify", LEN);
        buf.copy_from_slice(&pattern);
        let io = (|| -> Result<()> {
            let mut f = File::options()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .with_context(|| format!("O_DIRECT create {}", path.display()))?;
            f.write_all(buf).context("O_DIRECT write")?;
            f.sync_all().context("fsync")?;
            buf.fill(0);
            let mut f = File::options()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)?;
            f.read_exact(buf).context("O_DIRECT read")?;
            if buf != pattern.as_slice() {
                bail!("bytes read back with O_DIRECT differ from those written");
            }
            Ok(())
        })();
        // SAFETY: allocated above with this layout.
        unsafe { std::alloc::dealloc(ptr, layout) };
        io
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// The filesystem checks of every store.
pub fn checks(stores: &[PathBuf], allowed: &[String]) -> Vec<Check> {
    let mut out = Vec::new();
    let mut devices: HashMap<u64, &Path> = HashMap::new();
    for store in stores {
        let at = store.display();
        let name = |n: &str| format!("fs.{n}[{at}]");
        let mount = match mount_of(store) {
            Ok(m) => m,
            Err(e) => {
                out.push(Check::failed(name("mount"), format!("{e:#}")));
                continue;
            }
        };
        let canonical = std::fs::canonicalize(store).unwrap_or_else(|_| store.clone());
        out.push(Check::verdict(
            name("mount"),
            mount.point == canonical,
            if mount.point == canonical {
                format!("{} mounted here", mount.source)
            } else {
                format!(
                    "not a mount point: it is inside {} (one filesystem per disk)",
                    mount.point.display()
                )
            },
        ));
        out.push(Check::verdict(
            name("type"),
            allowed.contains(&mount.fstype),
            format!("{} (allowed: {})", mount.fstype, allowed.join(", ")),
        ));
        let has = |o: &str| mount.options.iter().any(|x| x == o);
        let rw = has("rw") && !has("ro");
        let atime_ok = has("noatime") || has("relatime");
        out.push(Check::verdict(
            name("options"),
            rw && atime_ok,
            match (rw, atime_ok) {
                (false, _) => "mounted read-only: fills cannot write".into(),
                (_, false) => {
                    "strict atime: every read becomes a metadata write (mount with noatime)".into()
                }
                _ => format!(
                    "rw, {}",
                    if has("noatime") {
                        "noatime"
                    } else {
                        "relatime"
                    }
                ),
            },
        ));
        if let Ok(m) = std::fs::metadata(store) {
            if let Some(other) = devices.insert(m.dev(), store) {
                out.push(Check::failed(
                    name("own_disk"),
                    format!(
                        "same filesystem as {}: a disk failure would take both",
                        other.display()
                    ),
                ));
            }
        }
        out.push(match direct_io_round_trip(store) {
            Ok(()) => Check::verdict(
                name("direct_io"),
                true,
                "1 MiB O_DIRECT write, fsync, read back intact".into(),
            ),
            Err(e) => Check::failed(name("direct_io"), format!("{e:#}")),
        });
    }
    out
}
