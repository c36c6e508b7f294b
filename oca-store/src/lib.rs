//! The appliance's on-disk content store, shared by oca-daemon (reads) and fill-agent (writes).
//!
//! Layout (one filesystem per disk, each mounted at a directory given with `--store DIR`):
//!
//! ```text
//! <disk>/objects/<first two chars of id>/<id>   servable content, immutable
//! <disk>/tmp/                                    fills in progress, renamed into objects/ when whole
//! ```
//!
//! Which disk should hold an id is decided by rendezvous hashing ([`placement`]); a reader looks on
//! the preferred disk first and then on the others, so a file an operator dropped on any disk is
//! servable.

pub mod beneath;
pub mod content_id;
mod direct;
mod dirfd;
pub mod placement;

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

pub use content_id::{ContentId, InvalidId};
pub use direct::{open_direct, DirectFile, FALLBACK_DIO_ALIGN};
use dirfd::{fsync_dir, list_dir, mkdir_at, unlink_at};

/// Name of the directory holding servable content on each disk.
pub const OBJECTS_DIR: &str = "objects";
/// Name of the directory holding fills in progress on each disk.
pub const TMP_DIR: &str = "tmp";

/// Errors opening a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No disk was configured.
    #[error("no store directory configured (give at least one --store DIR)")]
    NoDisks,
    /// The same directory was given twice.
    #[error("store directory {0} is given twice")]
    Duplicate(PathBuf),
    /// A disk directory could not be prepared or opened.
    #[error("store directory {path}")]
    Disk {
        /// The disk directory.
        path: PathBuf,
        /// What failed.
        source: io::Error,
    },
}

/// Errors opening one content file.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No disk holds the id (or what is there is not a regular file).
    #[error("not found")]
    NotFound,
    /// A disk failed to answer (EIO and the like): a disk problem, not a missing file.
    #[error("read error on disk {disk}")]
    Io {
        /// Index of the disk in the store.
        disk: usize,
        /// The error the kernel returned.
        source: io::Error,
    },
}

/// One disk of the store. Every name inside it is resolved beneath its root directory,
/// following no symlink ([`beneath`]).
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    key: String,
    root_fd: OwnedFd,
    objects: OwnedFd,
}

impl Disk {
    /// The directory the disk is mounted at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The key this disk is known by in rendezvous hashing (its directory, as configured).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where `id` lives (or would live) on this disk.
    pub fn object_path(&self, id: ContentId<'_>) -> PathBuf {
        self.root
            .join(OBJECTS_DIR)
            .join(id.shard())
            .join(id.as_str())
    }

    /// Whether the disk's filesystem is one whose reads never block the thread that submits
    /// them asynchronously (local block filesystems: XFS, ext4, btrfs, F2FS, bcachefs, tmpfs).
    /// Others (FUSE, network filesystems) may wait inside an io_uring submission, so their
    /// reads must be handed to the kernel's workers outright.
    pub fn submits_without_blocking(&self) -> bool {
        const LOCAL: [i64; 6] = [
            0x5846_5342, // XFS
            0xEF53,      // ext2/3/4
            0x9123_683E, // btrfs
            0xF2F5_2010, // F2FS
            0xCA45_1A4E, // bcachefs
            0x0102_1994, // tmpfs
        ];
        // SAFETY: statfs is plain data; zeroed is valid and fstatfs fills it.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: an open descriptor and a writable statfs.
        if unsafe { libc::fstatfs(self.objects.as_raw_fd(), &mut st) } != 0 {
            return false;
        }
        LOCAL.contains(&(st.f_type as i64))
    }

    /// The disk's `objects/` directory, which content paths ([`content_path`]) are relative to.
    pub fn objects_dir(&self) -> std::os::fd::BorrowedFd<'_> {
        self.objects.as_fd()
    }

    /// Creates `tmp/` when missing (a symlink in its place is refused).
    pub fn ensure_tmp(&self) -> io::Result<()> {
        if mkdir_at(&self.root_fd, &cstring(TMP_DIR))? {
            fsync_dir(&self.root_fd)?;
        }
        self.tmp_dir().map(drop)
    }

    /// Deletes every `tmp/<name>.part` for which `keep(name)` is false (fills abandoned by an
    /// earlier run, or of content no longer wanted); returns the names deleted. Other files in
    /// `tmp/` are left alone.
    pub fn sweep_parts(&self, keep: &dyn Fn(&str) -> bool) -> io::Result<Vec<String>> {
        let tmp = self.tmp_dir()?;
        let mut swept = Vec::new();
        for name in list_dir(&tmp)? {
            let Some(stem) = name.to_str().ok().and_then(|n| n.strip_suffix(".part")) else {
                continue;
            };
            if stem.is_empty() || keep(stem) {
                continue;
            }
            // unlinkat never follows a symlink planted under a .part name, and refuses a
            // directory: only the entry itself goes.
            match unlink_at(&tmp, &name) {
                Ok(()) => swept.push(stem.to_string()),
                Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(swept)
    }

    /// Opens (creating it empty when missing) the part file a fill of `id` writes to,
    /// `tmp/<id>.part`, for reading and appending.
    pub fn open_part(&self, id: ContentId<'_>) -> io::Result<File> {
        let rel = cstring(&format!("{TMP_DIR}/{}", part_name(id)));
        let flags = libc::O_RDWR | libc::O_CREAT | libc::O_APPEND | libc::O_NOCTTY;
        beneath::open(self.root_fd.as_fd(), &rel, flags, 0o644).map(File::from)
    }

    /// Deletes the part file of `id` (absent is fine).
    pub fn remove_part(&self, id: ContentId<'_>) -> io::Result<()> {
        unlink_at(&self.tmp_dir()?, &cstring(&part_name(id)))
    }

    /// Moves the finished part of `id` into `objects/<shard>/<id>` (creating the shard
    /// directory) and makes the rename durable: the shard directory is fsynced, and `objects/`
    /// too when the shard directory is new (else a crash could lose the directory and the file
    /// with it).
    pub fn publish(&self, id: ContentId<'_>) -> io::Result<()> {
        let shard = cstring(id.shard());
        if mkdir_at(&self.objects, &shard)? {
            fsync_dir(&self.objects)?;
        }
        let shard_fd = self.shard_dir(id)?;
        let (from, to) = (cstring(&part_name(id)), cstring(id.as_str()));
        let tmp = self.tmp_dir()?;
        // SAFETY: valid directory descriptors and NUL-terminated names.
        let rc = unsafe {
            libc::renameat(
                tmp.as_raw_fd(),
                from.as_ptr(),
                shard_fd.as_raw_fd(),
                to.as_ptr(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        File::from(shard_fd).sync_all()
    }

    /// Deletes the servable copy of `id` on this disk (absent is fine).
    pub fn remove_object(&self, id: ContentId<'_>) -> io::Result<()> {
        match self.shard_dir(id) {
            Ok(dir) => unlink_at(&dir, &cstring(id.as_str())),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The shard directory of `id`, opened beneath `objects/`.
    fn shard_dir(&self, id: ContentId<'_>) -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        beneath::open(self.objects.as_fd(), &cstring(id.shard()), flags, 0)
    }

    fn tmp_dir(&self) -> io::Result<OwnedFd> {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        beneath::open(self.root_fd.as_fd(), &cstring(TMP_DIR), flags, 0)
    }
}

fn part_name(id: ContentId<'_>) -> String {
    format!("{id}.part")
}

/// Names built from validated ids and constants hold no NUL.
fn cstring(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).expect("store names hold no NUL")
}

/// A content file opened for reading, with the metadata a response needs.
#[derive(Debug)]
pub struct Opened {
    /// The open file.
    pub file: File,
    /// Index of the disk it is on.
    pub disk: usize,
    /// Size in bytes when opened.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
}

/// The set of disks of one appliance.
#[derive(Debug)]
pub struct Store {
    disks: Vec<Disk>,
}

impl Store {
    /// Opens the disks, creating `objects/` and `tmp/` on each when missing.
    pub fn open<P: AsRef<Path>>(roots: &[P]) -> Result<Store, StoreError> {
        if roots.is_empty() {
            return Err(StoreError::NoDisks);
        }
        let mut disks: Vec<Disk> = Vec::with_capacity(roots.len());
        for root in roots {
            let root = root.as_ref().to_path_buf();
            if disks.iter().any(|d| d.root == root) {
                return Err(StoreError::Duplicate(root));
            }
            disks.push(open_disk(root)?);
        }
        Ok(Store { disks })
    }

    /// The disks, in configuration order.
    pub fn disks(&self) -> &[Disk] {
        &self.disks
    }

    /// Disk indices from the one that should hold `id` to the least preferred.
    pub fn placement(&self, id: ContentId<'_>) -> Vec<usize> {
        placement::rank(self.disks.iter().map(|d| d.key.as_str()), id.as_str())
    }

    /// Opens `id` read-only from whichever disk holds it, preferred disk first.
    ///
    /// The file is opened relative to the disk's `objects/` directory with `O_NOFOLLOW`, so a
    /// validated id can name nothing outside the store, and a symlink planted in its place is
    /// refused rather than followed.
    pub fn open_content(&self, id: ContentId<'_>) -> Result<Opened, OpenError> {
        self.open_content_skipping(id, &|_| false)
    }

    /// Disk indices to try for `id`, preferred first, without those for which `skip` holds:
    /// for callers that open asynchronously ([`Disk::objects_dir`], [`content_path`],
    /// [`CONTENT_OPEN_FLAGS`], then [`Store::adopt`] or [`OpenError::from_os`]).
    pub fn candidates(&self, id: ContentId<'_>, skip: &dyn Fn(usize) -> bool) -> Vec<usize> {
        if self.disks.len() == 1 {
            return if skip(0) { Vec::new() } else { vec![0] };
        }
        self.placement(id)
            .into_iter()
            .filter(|&d| !skip(d))
            .collect()
    }

    /// Opens `id` on disk `disk` only.
    pub fn open_on(&self, id: ContentId<'_>, disk: usize) -> Result<Opened, OpenError> {
        let d = self.disks.get(disk).ok_or(OpenError::NotFound)?;
        open_on(d, disk, RelPath::new(id).as_cstr())
    }

    /// Checks a content file opened on disk `disk` and makes it ready to serve.
    pub fn adopt(&self, file: File, disk: usize) -> Result<Opened, OpenError> {
        adopt(file, disk)
    }

    /// Like [`Store::open_content`], but never on a disk for which `skip` holds (a failed
    /// disk): a copy refilled onto another disk is found even where the old one remains.
    pub fn open_content_skipping(
        &self,
        id: ContentId<'_>,
        skip: &dyn Fn(usize) -> bool,
    ) -> Result<Opened, OpenError> {
        let rel = RelPath::new(id);
        if self.disks.len() == 1 {
            if skip(0) {
                return Err(OpenError::NotFound);
            }
            return open_on(&self.disks[0], 0, rel.as_cstr());
        }
        for disk in self.placement(id).into_iter().filter(|&d| !skip(d)) {
            match open_on(&self.disks[disk], disk, rel.as_cstr()) {
                Err(OpenError::NotFound) => continue,
                other => return other,
            }
        }
        Err(OpenError::NotFound)
    }
}

fn open_disk(root: PathBuf) -> Result<Disk, StoreError> {
    let err = |source| StoreError::Disk {
        path: root.clone(),
        source,
    };
    let meta = std::fs::metadata(&root).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    for sub in [OBJECTS_DIR, TMP_DIR] {
        let p = root.join(sub);
        if let Err(e) = std::fs::create_dir(&p) {
            // A read-only disk with objects/ in place still serves; a missing objects/ does not.
            if e.kind() != io::ErrorKind::AlreadyExists && sub == OBJECTS_DIR {
                return Err(err(e));
            }
        }
    }
    // The root is the operator's to choose (it may be a symlink); nothing inside it is.
    let root_fd: OwnedFd = File::open(&root).map_err(err)?.into();
    let flags = libc::O_RDONLY | libc::O_DIRECTORY;
    let objects = beneath::open(root_fd.as_fd(), &cstring(OBJECTS_DIR), flags, 0).map_err(|e| {
        err(if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::other("objects/ is a symlink: every name in a store is resolved inside it")
        } else {
            e
        })
    })?;
    Ok(Disk {
        key: root.to_string_lossy().into_owned(),
        root,
        root_fd,
        objects,
    })
}

/// `<shard>/<id>`, the path of `id` relative to a disk's `objects/`.
pub fn content_path(id: ContentId<'_>) -> std::ffi::CString {
    RelPath::new(id).as_cstr().to_owned()
}

impl OpenError {
    /// The error an open that failed with `errno` on disk `disk` means.
    pub fn from_os(errno: i32, disk: usize) -> OpenError {
        classify(io::Error::from_raw_os_error(errno), disk)
    }
}

/// `<shard>/<id>\0` built on the stack: the hot path opens a file per request.
struct RelPath {
    buf: [u8; 2 + 1 + content_id::MAX_ID_LEN + 1],
    len: usize,
}

impl RelPath {
    fn new(id: ContentId<'_>) -> RelPath {
        let mut buf = [0u8; 2 + 1 + content_id::MAX_ID_LEN + 1];
        let shard = id.shard().as_bytes();
        let name = id.as_str().as_bytes();
        buf[..shard.len()].copy_from_slice(shard);
        buf[shard.len()] = b'/';
        let start = shard.len() + 1;
        buf[start..start + name.len()].copy_from_slice(name);
        RelPath {
            buf,
            len: start + name.len() + 1,
        }
    }

    fn as_cstr(&self) -> &CStr {
        // The id holds no NUL (validated charset) and the buffer ends with one.
        CStr::from_bytes_with_nul(&self.buf[..self.len]).expect("validated id has no NUL")
    }
}

/// Flags content files are opened with. O_NONBLOCK: a FIFO or device node planted in the store
/// must not block the opener in open(2); it is refused once fstat shows it is not a regular
/// file ([`Store::adopt`]).
pub const CONTENT_OPEN_FLAGS: i32 = libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK;

fn open_on(disk: &Disk, index: usize, rel: &CStr) -> Result<Opened, OpenError> {
    // No symlink is followed anywhere in `<shard>/<id>` (a shard directory linked to /etc
    // names nothing).
    let fd = beneath::open(disk.objects.as_fd(), rel, CONTENT_OPEN_FLAGS, 0)
        .map_err(|e| classify(e, index))?;
    adopt(File::from(fd), index)
}

/// Checks a file opened (perhaps asynchronously) with [`CONTENT_OPEN_FLAGS`] beneath a disk's
/// `objects/`, and makes it ready to serve.
fn adopt(file: File, index: usize) -> Result<Opened, OpenError> {
    let fd = file.as_raw_fd();
    let meta = file.metadata().map_err(|e| classify(e, index))?;
    if !meta.is_file() {
        return Err(OpenError::NotFound);
    }
    // Back to blocking: io_uring honours O_NONBLOCK on regular files by failing reads with
    // EAGAIN instead of waiting for the disk.
    // SAFETY: fcntl on a descriptor this function owns; F_SETFL only changes status flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_RDONLY) } < 0 {
        return Err(classify(io::Error::last_os_error(), index));
    }
    use std::os::unix::fs::MetadataExt;
    Ok(Opened {
        file,
        disk: index,
        size: meta.len(),
        mtime: meta.mtime(),
    })
}

/// Errors that mean the disk (or its filesystem) is failing, as opposed to a transient
/// condition or a bug: they mark the disk failed.
pub fn is_media_error(errno: i32) -> bool {
    matches!(
        errno,
        libc::EIO | libc::ENXIO | libc::ENODEV | libc::EUCLEAN | libc::EBADMSG | libc::ENOMEDIUM
    )
}

fn classify(e: io::Error, disk: usize) -> OpenError {
    match e.raw_os_error() {
        // ELOOP: a symlink in the path; EXDEV: a path leaving the disk; ENOTDIR: the shard is
        // not a directory.
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV | libc::ENAMETOOLONG) => {
            OpenError::NotFound
        }
        _ => OpenError::Io { disk, source: e },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn put(root: &Path, id: &str, body: &[u8]) {
        let id = ContentId::parse(id).unwrap();
        let dir = root.join(OBJECTS_DIR).join(id.shard());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(id.as_str()), body).unwrap();
    }

    #[test]
    fn plain_file_on_any_disk_is_found() {
        let d0 = tempfile::tempdir().unwrap();
        let d1 = tempfile::tempdir().unwrap();
        let store = Store::open(&[d0.path(), d1.path()]).unwrap();
        assert!(d0.path().join("tmp").is_dir());
        let id = ContentId::parse("movie_1080p.mp4").unwrap();
        let not_preferred = store.placement(id)[1];
        put(store.disks()[not_preferred].root(), id.as_str(), b"hello");
        let mut got = store.open_content(id).unwrap();
        assert_eq!((got.disk, got.size), (not_preferred, 5));
        let mut s = String::new();
        got.file.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        // SAFETY: F_GETFL on an open descriptor.
        let fl = unsafe { libc::fcntl(got.file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(fl & libc::O_NONBLOCK, 0, "served files are blocking");
        assert!(matches!(
            store.open_content(ContentId::parse("other").unwrap()),
            Err(OpenError::NotFound)
        ));
    }

    #[test]
    fn symlinks_and_directories_are_not_served() {
        let d0 = tempfile::tempdir().unwrap();
        let store = Store::open(&[d0.path()]).unwrap();
        let outside = d0.path().join("secret");
        std::fs::write(&outside, b"secret").unwrap();
        std::fs::create_dir_all(d0.path().join("objects/li")).unwrap();
        std::os::unix::fs::symlink(&outside, d0.path().join("objects/li/link")).unwrap();
        std::fs::create_dir_all(d0.path().join("objects/di/dir")).unwrap();
        // A FIFO would block open(2) forever without O_NONBLOCK: the test would hang.
        std::fs::create_dir_all(d0.path().join("objects/fi")).unwrap();
        let fifo =
            std::ffi::CString::new(d0.path().join("objects/fi/fifo").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        for id in ["link", "dir", "fifo"] {
            let r = store.open_content(ContentId::parse(id).unwrap());
            assert!(matches!(r, Err(OpenError::NotFound)), "{id}");
        }
    }

    #[test]
    fn a_symlinked_shard_directory_names_nothing_for_readers_or_writers() {
        let d0 = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), b"secret").unwrap();
        let store = Store::open(&[d0.path()]).unwrap();
        std::os::unix::fs::symlink(outside.path(), d0.path().join("objects/se")).unwrap();
        let id = ContentId::parse("secret").unwrap();
        assert!(matches!(store.open_content(id), Err(OpenError::NotFound)));
        let disk = &store.disks()[0];
        // A fill of an id whose shard is the symlink: the part is written, publishing refuses.
        use std::io::Write;
        disk.open_part(id).unwrap().write_all(b"new").unwrap();
        let e = disk.publish(id).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(disk.remove_object(id).is_err());
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"secret",
            "nothing outside the store was touched"
        );
        // A tmp/ that is a symlink is refused too.
        std::fs::remove_dir_all(d0.path().join("tmp")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d0.path().join("tmp")).unwrap();
        assert!(disk.open_part(id).is_err());
        assert!(!outside.path().join("secret.part").exists());
    }

    #[test]
    fn fills_publish_and_evict_through_the_store() {
        let d0 = tempfile::tempdir().unwrap();
        let store = Store::open(&[d0.path()]).unwrap();
        let disk = &store.disks()[0];
        let id = ContentId::parse("movie_1080p.mp4").unwrap();
        use std::io::Write;
        disk.open_part(id).unwrap().write_all(b"abc").unwrap();
        disk.open_part(id).unwrap().write_all(b"def").unwrap();
        disk.publish(id).unwrap();
        assert_eq!(std::fs::read(disk.object_path(id)).unwrap(), b"abcdef");
        assert!(!d0.path().join("tmp/movie_1080p.mp4.part").exists());
        disk.remove_object(id).unwrap();
        disk.remove_object(id).unwrap();
        disk.remove_part(id).unwrap();
        assert!(matches!(store.open_content(id), Err(OpenError::NotFound)));
    }

    #[test]
    fn orphaned_parts_are_swept_and_kept_ones_stay() {
        let d0 = tempfile::tempdir().unwrap();
        let store = Store::open(&[d0.path()]).unwrap();
        let disk = &store.disks()[0];
        let tmp = d0.path().join(TMP_DIR);
        for name in ["kept_1080p.mp4.part", "gone_1080p.mp4.part", "not a part"] {
            std::fs::write(tmp.join(name), b"x").unwrap();
        }
        std::fs::create_dir(tmp.join("dir.part")).unwrap();
        let outside = d0.path().join("outside");
        std::fs::write(&outside, b"outside").unwrap();
        std::os::unix::fs::symlink(&outside, tmp.join("link.part")).unwrap();
        let mut swept = disk
            .sweep_parts(&|name: &str| name == "kept_1080p.mp4")
            .unwrap();
        swept.sort();
        assert_eq!(swept, ["gone_1080p.mp4", "link"]);
        assert!(tmp.join("kept_1080p.mp4.part").exists());
        assert!(tmp.join("not a part").exists() && tmp.join("dir.part").is_dir());
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            b"outside",
            "the link's target stays"
        );
    }

    #[test]
    fn bad_configuration_is_a_clear_error() {
        assert!(matches!(
            Store::open::<&Path>(&[]),
            Err(StoreError::NoDisks)
        ));
        let d0 = tempfile::tempdir().unwrap();
        assert!(matches!(
            Store::open(&[d0.path(), d0.path()]),
            Err(StoreError::Duplicate(_))
        ));
        let e = Store::open(&[d0.path().join("missing")]).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }
}
