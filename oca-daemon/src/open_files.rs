//! A per-worker cache of open content files, so a popular file is not opened and closed for every
//! range request (nginx's `open_file_cache`, on by default here).
//!
//! Every use re-reads the file's metadata with one `fstat` on the open descriptor, so a file that
//! was truncated or deleted is noticed at once; an entry is also reopened by path after
//! [`REUSE`], which picks up a file replaced by rename even where another hard link keeps the old
//! inode alive.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use oca_store::{ContentId, DirectFile, OpenError, Opened, Store};

/// The O_DIRECT twin of an open file, opened on its first cold read and shared like the file;
/// `None` inside when the filesystem refuses O_DIRECT (that file then stays on the page cache).
#[derive(Debug, Default)]
pub struct Direct(OnceCell<Option<DirectFile>>);

impl Direct {
    /// The direct descriptor of `file`, opening it on first use.
    pub fn get(&self, file: &File) -> Option<&DirectFile> {
        self.0
            .get_or_init(|| match oca_store::open_direct(file) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::debug!(error = %e, "no O_DIRECT for this file; page cache only");
                    None
                }
            })
            .as_ref()
    }
}

/// How long an open descriptor is reused before the path is looked up again.
pub const REUSE: Duration = Duration::from_secs(1);

/// Most files one worker keeps open (each holds a descriptor).
pub const MAX_OPEN: usize = 1024;

/// An open content file with its current metadata.
#[derive(Debug)]
pub struct OpenFile {
    /// The file, shared with the cache.
    pub file: Rc<File>,
    /// Index of the disk it is on.
    pub disk: usize,
    /// Size in bytes, as of this request.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// Inode number (the cold path's popularity key).
    pub ino: u64,
    /// Its O_DIRECT twin.
    pub direct: Rc<Direct>,
}

struct Entry {
    file: Rc<File>,
    disk: usize,
    opened: Instant,
    direct: Rc<Direct>,
}

/// Why [`OpenFiles::open`] gave no file.
#[derive(Debug)]
pub enum NotOpened {
    /// The store said so.
    Failed(OpenError),
    /// Not open yet, and the engine opens files off the worker's thread: the request waits for
    /// [`OpenFiles::adopt`] (or [`OpenFiles::adopt_error`]) and is then answered afresh.
    Deferred,
}

/// One worker's open files.
#[derive(Default)]
pub struct OpenFiles {
    map: HashMap<Box<str>, Entry>,
    /// Outcomes of deferred opens that found nothing, each given to the next request for the id.
    errors: HashMap<Box<str>, OpenError>,
}

impl OpenFiles {
    /// Opens `id`, reusing a descriptor opened less than [`REUSE`] ago when the file still
    /// exists; never on a disk for which `skip` holds (failed disks).
    pub fn open<'m>(
        &mut self,
        store: &Store,
        id: ContentId<'_>,
        now: Instant,
        skip: &dyn Fn(usize) -> bool,
        defer: bool,
        on_disk: &dyn Fn(usize) -> Option<crate::disk_health::OnDisk<'m>>,
    ) -> Result<OpenFile, NotOpened> {
        if let Some(e) = self.errors.remove(id.as_str()) {
            return Err(NotOpened::Failed(e));
        }
        if let Some(e) = self.map.get(id.as_str()) {
            if now.duration_since(e.opened) < REUSE && !skip(e.disk) {
                if let Some(meta) = e.file.metadata().ok().filter(|m| m.nlink() > 0) {
                    return Ok(OpenFile {
                        file: e.file.clone(),
                        disk: e.disk,
                        size: meta.len(),
                        mtime: meta.mtime(),
                        ino: meta.ino(),
                        direct: e.direct.clone(),
                    });
                }
            }
            self.map.remove(id.as_str());
        }
        if defer {
            return Err(NotOpened::Deferred);
        }
        for disk in store.candidates(id, skip) {
            let opened = {
                let _blocked = on_disk(disk);
                store.open_on(id, disk)
            };
            match opened {
                Err(OpenError::NotFound) => continue,
                Ok(o) => return Ok(self.adopt(id, o, now)),
                Err(e) => return Err(NotOpened::Failed(e)),
            }
        }
        Err(NotOpened::Failed(OpenError::NotFound))
    }

    /// Keeps a file opened for `id` (by a deferred open) and gives it out.
    pub fn adopt(&mut self, id: ContentId<'_>, opened: Opened, now: Instant) -> OpenFile {
        if self.map.len() >= MAX_OPEN {
            self.map.retain(|_, e| now.duration_since(e.opened) < REUSE);
            if self.map.len() >= MAX_OPEN {
                self.map.clear();
            }
        }
        let ino = opened.file.metadata().map_or(0, |m| m.ino());
        let file = Rc::new(opened.file);
        let direct = Rc::new(Direct::default());
        let entry = Entry {
            file: file.clone(),
            disk: opened.disk,
            opened: now,
            direct: direct.clone(),
        };
        self.map.insert(id.as_str().into(), entry);
        OpenFile {
            file,
            disk: opened.disk,
            size: opened.size,
            mtime: opened.mtime,
            ino,
            direct,
        }
    }

    /// Closes the files not opened again within [`REUSE`] (the next request for one opens it
    /// afresh anyway): an idle worker holds no descriptors, as nginx's `open_file_cache
    /// inactive` lets go of them. Called on every tick.
    pub fn expire(&mut self, now: Instant) {
        self.map.retain(|_, e| now.duration_since(e.opened) < REUSE);
        self.errors.clear();
    }

    /// A deferred open of `id` found nothing (or failed): the next request for it is told so.
    pub fn adopt_error(&mut self, id: ContentId<'_>, error: OpenError) {
        if self.errors.len() >= MAX_OPEN {
            self.errors.clear();
        }
        self.errors.insert(id.as_str().into(), error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, Store, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&[dir.path()]).unwrap();
        let p = dir.path().join("objects/ab");
        std::fs::create_dir_all(&p).unwrap();
        let f = p.join("abc");
        std::fs::write(&f, b"0123456789").unwrap();
        (dir, store, f)
    }

    #[test]
    fn reuses_and_sees_truncation_and_deletion_at_once() {
        let (_d, store, path) = setup();
        let id = ContentId::parse("abc").unwrap();
        let mut files = OpenFiles::default();
        let now = Instant::now();
        let a = files
            .open(&store, id, now, &|_| false, false, &|_| None)
            .unwrap();
        let b = files
            .open(&store, id, now, &|_| false, false, &|_| None)
            .unwrap();
        assert!(
            Rc::ptr_eq(&a.file, &b.file),
            "second open reuses the descriptor"
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4)
            .unwrap();
        assert_eq!(
            files
                .open(&store, id, now, &|_| false, false, &|_| None)
                .unwrap()
                .size,
            4,
            "fresh size on every use"
        );
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            files.open(&store, id, now, &|_| false, false, &|_| None),
            Err(NotOpened::Failed(OpenError::NotFound))
        ));
    }

    #[test]
    fn replaced_file_is_picked_up_after_reuse_period() {
        let (d, store, path) = setup();
        let id = ContentId::parse("abc").unwrap();
        // A second hard link keeps the old inode alive (nlink stays > 0) after the rename.
        std::fs::hard_link(&path, d.path().join("keep")).unwrap();
        let mut files = OpenFiles::default();
        let now = Instant::now();
        assert_eq!(
            files
                .open(&store, id, now, &|_| false, false, &|_| None)
                .unwrap()
                .size,
            10
        );
        let tmp = d.path().join("tmp/abc");
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(
            files
                .open(&store, id, now + REUSE, &|_| false, false, &|_| None)
                .unwrap()
                .size,
            3
        );
    }
}
