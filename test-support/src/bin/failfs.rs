//! failfs: a read-only FUSE passthrough of a directory whose reads can be made to fail, for
//! tests of what a server does when a disk starts returning I/O errors.
//!
//! ```text
//! failfs BACKING_DIR MOUNTPOINT [STATE_FILE]
//!                                   # prints "failfs: mounted" once the mount is up
//! kill -USR1 <pid>                  # from now on every read returns EIO
//! kill -HUP <pid>                   # from now on every read hangs (a disk that stops answering)
//! kill -USR2 <pid>                  # reads work again (hung ones go on)
//! kill -TERM <pid>                  # unmounts and exits (hung reads fail)
//! ```
//! Signals arrive when they arrive: with STATE_FILE, failfs writes there the mode in force
//! (`ok`, `failing`, `hanging`) once every read from then on sees it, so a test can wait for
//! it instead of racing the reads it sends next.
//! Needs root (it mounts /dev/fuse directly).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, LockOwner, MountOption,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};

static FAILING: AtomicBool = AtomicBool::new(false);
static HANGING: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    match sig {
        libc::SIGUSR1 => FAILING.store(true, Relaxed),
        libc::SIGHUP => HANGING.store(true, Relaxed),
        libc::SIGUSR2 => {
            FAILING.store(false, Relaxed);
            HANGING.store(false, Relaxed);
        }
        _ => STOP.store(true, Relaxed),
    }
}

/// Attributes are not cached by the kernel, so a test sees changes at once.
const TTL: Duration = Duration::ZERO;

struct FailFs {
    root: PathBuf,
    /// FUSE inode → path under the backing directory.
    paths: Mutex<HashMap<u64, PathBuf>>,
}

impl FailFs {
    fn ino_of(&self, path: &Path, meta: &std::fs::Metadata) -> u64 {
        if path == self.root {
            return 1;
        }
        // Backing inode numbers, moved clear of the root's number 1.
        let ino = meta.ino() + 2;
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(ino, path.to_path_buf());
        ino
    }

    fn path(&self, ino: INodeNo) -> Option<PathBuf> {
        let ino = u64::from(ino);
        if ino == 1 {
            return Some(self.root.clone());
        }
        self.paths
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ino)
            .cloned()
    }

    fn attr(&self, path: &Path) -> Result<FileAttr, Errno> {
        let m = std::fs::symlink_metadata(path).map_err(|_| Errno::ENOENT)?;
        let kind = if m.is_dir() {
            FileType::Directory
        } else if m.is_file() {
            FileType::RegularFile
        } else {
            return Err(Errno::ENOENT);
        };
        let time = |s: i64| UNIX_EPOCH + Duration::from_secs(s.max(0) as u64);
        Ok(FileAttr {
            ino: INodeNo(self.ino_of(path, &m)),
            size: m.len(),
            blocks: m.blocks(),
            atime: time(m.atime()),
            mtime: time(m.mtime()),
            ctime: time(m.ctime()),
            crtime: time(m.ctime()),
            kind,
            perm: (m.mode() & 0o7777) as u16,
            nlink: m.nlink() as u32,
            uid: m.uid(),
            gid: m.gid(),
            rdev: 0,
            flags: 0,
            blksize: 4096,
        })
    }
}

impl Filesystem for FailFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(dir) = self.path(parent) else {
            return reply.error(Errno::ENOENT);
        };
        match self.attr(&dir.join(name)) {
            Ok(a) => reply.entry(&TTL, &a, fuser::Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).map(|p| self.attr(&p)) {
            Some(Ok(a)) => reply.attr(&TTL, &a),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.path(ino) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let Some(dir) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let Ok(list) = std::fs::read_dir(&dir) else {
            return reply.error(Errno::EIO);
        };
        let mut entries = vec![(u64::from(ino), FileType::Directory, ".".into())];
        entries.push((1, FileType::Directory, "..".into()));
        for e in list.flatten() {
            let path = e.path();
            if let Ok(a) = self.attr(&path) {
                entries.push((u64::from(a.ino), a.kind, e.file_name()));
            }
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // A hung disk: the read answers only once released (or never, as far as the reader
        // can tell). Only this thread waits; the others still answer lookups and attributes,
        // as a kernel answers those from its caches while the device hangs.
        while HANGING.load(Relaxed) && !STOP.load(Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if FAILING.load(Relaxed) || STOP.load(Relaxed) {
            return reply.error(Errno::EIO);
        }
        let Some(path) = self.path(ino) else {
            return reply.error(Errno::ENOENT);
        };
        let mut buf = vec![0u8; size as usize];
        let read = std::fs::File::open(path).and_then(|f| {
            let mut n = 0;
            while n < buf.len() {
                match f.read_at(&mut buf[n..], offset + n as u64)? {
                    0 => break,
                    k => n += k,
                }
            }
            Ok(n)
        });
        match read {
            Ok(n) => reply.data(&buf[..n]),
            Err(_) => reply.error(Errno::EIO),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (backing, mountpoint, state_file) = match &args[..] {
        [b, m] => (b, m, None),
        [b, m, s] => (b, m, Some(PathBuf::from(s))),
        _ => {
            eprintln!("usage: failfs BACKING_DIR MOUNTPOINT [STATE_FILE]");
            std::process::exit(2);
        }
    };
    for sig in [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGHUP,
        libc::SIGTERM,
        libc::SIGINT,
    ] {
        // SAFETY: the handler only stores to atomics, which is async-signal-safe.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let root = match std::fs::canonicalize(backing) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("failfs: {backing}: {e}");
            std::process::exit(1);
        }
    };
    let fs = FailFs {
        root,
        paths: Mutex::new(HashMap::new()),
    };
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![MountOption::FSName("failfs".into()), MountOption::RO];
    // Hung reads each hold a thread (the kernel keeps up to 12 readahead reads in flight per
    // mount, and more that block): enough are left for lookups and attributes, which a kernel
    // answers from its caches while a real device hangs.
    cfg.n_threads = Some(64);
    let session = match fuser::spawn_mount(fs, mountpoint, &cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("failfs: mounting on {mountpoint}: {e}");
            std::process::exit(1);
        }
    };
    println!("failfs: mounted");
    let mut shown = "";
    while !STOP.load(Relaxed) {
        let mode = match (FAILING.load(Relaxed), HANGING.load(Relaxed)) {
            (_, true) => "hanging",
            (true, false) => "failing",
            (false, false) => "ok",
        };
        if let Some(path) = state_file.as_deref().filter(|_| mode != shown) {
            let tmp = path.with_extension("tmp");
            if std::fs::write(&tmp, mode)
                .and_then(|()| std::fs::rename(&tmp, path))
                .is_ok()
            {
                shown = mode;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(session);
}
